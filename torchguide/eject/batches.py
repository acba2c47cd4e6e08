"""The ejected script's batches: the collate function, batch mixing and the DataLoaders."""

from __future__ import annotations

from string import Template

from torchguide.eject import blocks
from torchguide.eject.plan import (
    GUIDE_MIXES,
    TARGET_CODE,
    TARGET_WORDS,
    Facts,
    Script,
    collate_name,
    defaults_of,
    kw,
    mix_name,
    sampler_name,
)
from torchguide.registry import BATCH_TRANSFORMS, LOSSES


def write_batches(script: Script, facts: Facts) -> None:
    """The samplers, the collate function (and MixUp/CutMix), make_loader; main()'s loader lines."""
    cfg, imports = facts.config, script.imports
    imports.name("torch.utils.data", "DataLoader")
    imports.name("torch.utils.data", "Sampler")
    sampler = sampler_name(cfg)
    texts = [blocks.CUT]
    if facts.workers:
        texts.append(blocks.SEEDED_BATCH)
    iterate = blocks.SEEDED_ITER if facts.workers else blocks.PLAIN_ITER
    texts.append(Template(blocks.RANDOM_BATCHES).substitute(iter=iterate))
    if sampler == "sorted":
        texts.append(blocks.SORTED_BATCHES)
    if sampler == "length_buckets" or facts.task == "text":
        texts.append(blocks.LENGTH_BUCKETS)
    texts.append(collate_text(script, facts))
    if cfg.data.batch_transforms:
        texts.append(mixes(facts))
        texts.append(blocks.MIX)
    texts.append(blocks.MAKE_LOADER)
    script.section("batches: the sampler and the collate function", *texts)
    script.loader_lines = loader_lines(script, facts, sampler)


def collate_text(script: Script, facts: Facts) -> str:
    """collate(): stack images (or pad token ids), and encode the labels as the loss's target."""
    cfg = facts.config
    loss = LOSSES.entry(cfg.loss.name).name
    target = (f"    target = {TARGET_CODE[facts.target]}  # {loss} compares the output with "
              f"{TARGET_WORDS[facts.target]}")
    if facts.target == "onehot":
        script.imports.module("torch.nn.functional", "F")
    if facts.task == "image":
        mixing = bool(cfg.data.batch_transforms)
        lines = [f"def collate(samples, finish{', mix=None' if mixing else ''}):",
                 '    """A batch from (image, label) samples: images (N, C, H, W) as floats, the loss\'s target, '
                 'and the labels (N,)."""',
                 "    images = finish(torch.stack([image for image, _ in samples]))  # to float (and normalize) once "
                 "per batch",
                 "    labels = torch.tensor([label for _, label in samples], dtype=torch.long)",
                 target]
        if mixing:
            lines += ["    if mix is not None:  # training batches: MixUp or CutMix; the target becomes class "
                      "probabilities", "        images, target = mix(images, labels)"]
        return "\n\n" + "\n".join([*lines, "    return images, target, labels"])
    collate = collate_name(cfg)
    doc = ('    """A batch from (token ids, label) samples: ids padded with 0 to the longest sequence (N, T),\n'
           '    their lengths (N,), the loss\'s target and the labels (N,)."""')
    if collate == "pad_to_length":
        from torchguide.data.collate import pad_to_length

        length = {**defaults_of(pad_to_length), **cfg.data.collate.kwargs}["length"]
        lines = ["def collate(samples):",
                 doc.replace("to the longest sequence", f"(or cut) to {length} tokens"),
                 f"    tokens = torch.zeros(len(samples), {length}, dtype=torch.long)",
                 "    lengths = torch.empty(len(samples), dtype=torch.long)",
                 "    for row, (ids, _) in enumerate(samples):",
                 f"        n = min(len(ids), {length})",
                 "        tokens[row, :n] = ids[:n]",
                 "        lengths[row] = n"]
    else:
        lines = ["def collate(samples):", doc,
                 "    lengths = torch.tensor([len(ids) for ids, _ in samples], dtype=torch.long)",
                 "    tokens = nn.utils.rnn.pad_sequence([ids for ids, _ in samples], batch_first=True, "
                 "padding_value=0)"]
        script.imports.name("torch", "nn")
    lines += ["    labels = torch.tensor([label for _, label in samples], dtype=torch.long)", target,
              "    return tokens, lengths, target, labels"]
    return "\n\n" + "\n".join(lines)


def mixes(facts: Facts) -> str:
    """MIXES: the batch transforms as torchvision's MixUp / CutMix, each with its share p."""
    made = []
    for item in facts.config.data.batch_transforms:
        name = mix_name(item.name)
        kwargs = {**defaults_of(BATCH_TRANSFORMS.get(name)), **item.kwargs}
        kwargs.pop("num_classes", None)
        made.append(f"(v2.{GUIDE_MIXES[name]}({', '.join([*kw(kwargs), 'num_classes=NUM_CLASSES'])}), {item.p!r})")
    return ("\n\n# data.batch_transforms: (transform, its share of the training batches)\n"
            f"MIXES = [{', '.join(made)}]")


def loader_lines(script: Script, facts: Facts, sampler: str) -> list[str]:
    """main()'s samplers and loaders: the configured sampler for training, guide's fixed order for evaluation."""
    cfg = facts.config
    if facts.task == "image":
        script.imports.name("functools", "partial")
    eval_size = "EVAL_BATCH_SIZE" if cfg.data.loader.eval_batch_size else "BATCH_SIZE"
    drop = ", drop_last=True" if cfg.data.loader.drop_last else ""
    lengths = "train_set.lengths" if facts.task == "text" else None
    make = {"random": f"RandomBatches(len(train_set), BATCH_SIZE, SEED{drop})",
            "sequential": f"RandomBatches(len(train_set), BATCH_SIZE, SEED, shuffle=False{drop})",
            "sorted": f"SortedBatches({lengths or '[1] * len(train_set)'}, BATCH_SIZE, SEED{drop})"}
    if sampler == "length_buckets":
        bucket = cfg.data.sampler.kwargs.get("bucket_size")
        make[sampler] = (f"LengthBuckets({lengths or '[1] * len(train_set)'}, BATCH_SIZE, SEED{drop}"
                         + (f", bucket_size={bucket}" if bucket else "") + ")")
    why = {"random": "a new random order every epoch", "sequential": "the same order every epoch",
           "sorted": "sorted by length once", "length_buckets": "batches of similar lengths, new ones every epoch"}
    if facts.task == "image":
        train_collate = "partial(collate, finish=TRAIN_BATCH" + (", mix=mix)" if cfg.data.batch_transforms else ")")
        eval_collate = "partial(collate, finish=EVAL_BATCH)"
        eval_sampler = "RandomBatches(len({0}), {1}, SEED, shuffle=False)"
    else:
        train_collate = eval_collate = "collate"
        eval_sampler = "LengthBuckets({0}.lengths, {1}, SEED, shuffle=False)"
    lines = ["", f"    # the loaders: data.sampler {sampler} ({why[sampler]}) for training; evaluation in a "
             "fixed order",
             f"    train_sampler = {make[sampler]}",
             f"    train_loader = make_loader(train_set, train_sampler, {train_collate})"]
    if cfg.data.valid is not None:
        lines.append(f"    valid_loader = make_loader(valid_set, {eval_sampler.format('valid_set', eval_size)}, "
                     f"{eval_collate})")
    script.test_loader = (f"make_loader(test_set, {eval_sampler.format('test_set', eval_size)}, {eval_collate})"
                          if cfg.data.test is not None else None)
    return lines
