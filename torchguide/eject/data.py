"""The data half of an ejected script: datasets read in guide's order, the transforms as guide
completes them, the samplers, the collate function and the loaders."""

from __future__ import annotations

from typing import Any

from torchguide.data.transforms import completed_steps
from torchguide.eject import blocks
from torchguide.eject.plan import (
    Facts,
    Script,
    component,
    defaults_of,
    script_path,
    user_ref,
)
from torchguide.eject.source import call, literal
from torchguide.errors import ConfigError
from torchguide.registry import DATASETS, TRANSFORMS

GUIDE_DATASETS = {"image_folder", "image_glob", "image_csv", "text_csv", "token_ids", "random_sequences"}


def write_data(script: Script, facts: Facts) -> None:
    """The datasets of each split, read in guide's order (train, valid, then test)."""
    if facts.task == "image":
        write_image_data(script, facts)
    else:
        write_text_data(script, facts)


def write_image_data(script: Script, facts: Facts) -> None:
    """Image datasets (files or yours), the split, the transforms; main()'s lines that read each split."""
    cfg, imports = facts.config, script.imports
    imports.name("torch.utils.data", "Dataset")
    imports.name("torchvision.transforms", "v2")
    texts = []
    readers = {}
    for split in ("train", "valid", "test"):
        section = getattr(cfg.data, split)
        if section is not None and getattr(section, "name", None):
            readers[split] = image_reader(script, section.name, section.kwargs, split)
    kinds = {kind for kind, _ in readers.values()}
    if kinds & {"image_folder", "image_glob", "image_csv"}:
        imports.module("warnings")
        imports.name("pathlib", "Path")
        imports.name("torchvision.io", "ImageReadMode")
        imports.name("torchvision.io", "decode_image")
        imports.name("PIL", "Image")
        imports.name("torchvision.transforms.v2.functional", "pil_to_tensor")
        texts.append(blocks.IMAGE_FILES + (blocks.SEEDED_ITEMS if facts.workers else ""))
        finder = {"image_folder": blocks.FIND_IMAGE_FOLDER, "image_glob": blocks.FIND_IMAGE_GLOB,
                  "image_csv": blocks.FIND_IMAGE_CSV}
        if "image_csv" in kinds:
            imports.module("csv")
        found = [k for k in ("image_folder", "image_glob", "image_csv") if k in kinds]
        if len(found) > 1:
            raise ConfigError(f"data: {' and '.join(found)} in one config; the script writes out one image reader")
        texts.append(finder[found[0]])
    if "dataset" in kinds:
        imports.name("PIL", "Image")
        imports.name("torchvision.transforms.v2.functional", "pil_to_tensor")
        texts.append(blocks.DATASET_IMAGES + (blocks.SEEDED_ITEMS if facts.workers else ""))
    if facts.workers:
        imports.name("torch.utils.data", "get_worker_info")
    if cfg.data.valid is not None and cfg.data.valid.split:
        texts.append(blocks.STRATIFIED_SPLIT)
    if any(split != "train" for split in readers):
        texts.append(blocks.RELABEL)
    texts.append(transform_constants(script, facts))
    script.section("the data: image datasets and their transforms", *texts)
    script.data_lines = ["    # the data: each split's (image, label) samples, labelled by the training data's classes",
                         *image_split_lines(readers, facts)]


def image_reader(script: Script, name: str, kwargs: dict[str, Any], split: str) -> tuple[str, str]:
    """(kind, the call that gives `(samples, classes)` or your dataset) for one split's dataset."""
    entry = DATASETS.entry(name)
    if entry.name not in GUIDE_DATASETS:
        return "dataset", call(user_ref(script, entry.obj), **kwargs)
    args = {k: v for k, v in {**defaults_of(entry.obj), **kwargs}.items() if k not in ("mode", "verify")}
    for path in ("root", "csv_file"):
        if args.get(path) is not None:
            args[path] = script_path(args[path])
    if entry.name == "image_folder":
        return entry.name, f"find_images({literal(args['root'])})"
    return entry.name, call("find_images", **args)


def image_split_lines(readers: dict[str, tuple[str, str]], facts: Facts) -> list[str]:
    """main()'s lines that read each split into `train_set`, `valid_set` (and `test_set`)."""
    cfg = facts.config
    lines = []
    for split, (kind, reader) in readers.items():
        prefix = "" if split == "train" else f"{split}_"
        holder = f"{prefix}dataset" if kind == "dataset" else None
        mode = mode_of(facts, split)
        transform = "TRAIN_TRANSFORM" if split == "train" else "EVAL_TRANSFORM"
        if holder:
            lines += [f"    {holder} = {reader}  # data.{split}",
                      f"    {prefix}samples, {prefix}classes = dataset_samples({holder}), "
                      f"[str(c) for c in {holder}.classes]"]
        else:
            lines.append(f"    {prefix}samples, {prefix}classes = {reader}  # data.{split}")

        def make(samples: str, tf: str, holder: str | None = holder, mode: str = mode) -> str:
            if holder:
                return f"DatasetImages({holder}, {samples}, {literal(mode)}, {tf})"
            return f"ImageFiles({samples}, {literal(mode)}, {tf})"

        if split == "train":
            if cfg.data.valid is not None and cfg.data.valid.split:
                lines += [f"    # data.valid.split: {cfg.data.valid.split:g} of each class held out for validation",
                          f"    train_part, valid_part = stratified_split([label for _, label in samples], "
                          f"{cfg.data.valid.split!r}, SEED)",
                          f"    train_set = {make('[samples[i] for i in train_part]', transform)}",
                          f"    valid_set = {make('[samples[i] for i in valid_part]', 'EVAL_TRANSFORM')}"]
            else:
                lines.append(f"    train_set = {make('samples', transform)}")
        else:
            relabelled = f"relabel({prefix}samples, {prefix}classes, classes)"
            lines.append(f"    {split}_set = {make(relabelled, transform)}  # labelled by the training classes")
    return lines


def mode_of(facts: Facts, split: str) -> str:
    """The image mode guide decided for a split (L or RGB; `auto` looked at the files)."""
    data = facts.test if split == "test" else facts.data
    samples = data.splits.get(split) if data else None
    if samples is None:
        samples = facts.data.splits["train"]
    return samples.mode


def transform_constants(script: Script, facts: Facts) -> str:
    """TRAIN_TRANSFORM, EVAL_TRANSFORM and the per-batch part, completed as guide completes them."""
    cfg = facts.config
    train_steps, train_batch = pipeline(script, cfg.data.transforms.train)
    eval_steps, eval_batch = pipeline(script, cfg.data.transforms.eval)
    lines = ["# data.transforms: per image on uint8 tensors (to_image first where the list does not convert the image",
             "# itself); the trailing to-float (to_dtype, added when missing) and normalize run once per batch",
             f"TRAIN_TRANSFORM = {train_steps}", f"EVAL_TRANSFORM = {eval_steps}"]
    if train_batch == eval_batch:
        lines.append(f"TRAIN_BATCH = EVAL_BATCH = {train_batch}")
    else:
        lines += [f"TRAIN_BATCH = {train_batch}", f"EVAL_BATCH = {eval_batch}"]
    return "\n".join(lines)


def pipeline(script: Script, items: list[Any] | None) -> tuple[str, str]:
    """(per-image Compose, per-batch Compose) source for a transform list, completed like build_pipeline."""
    steps, _, tail = completed_steps(items)
    calls = [transform_call(script, name, kwargs) for name, kwargs in steps]
    per_image = f"v2.Compose([{', '.join(calls[:tail])}])" if tail else "v2.Identity()"
    per_batch = f"v2.Compose([{', '.join(calls[tail:])}])" if tail < len(calls) else "v2.Identity()"
    return per_image, per_batch


def transform_call(script: Script, name: str, kwargs: dict[str, Any]) -> str:
    """One transform's constructor call: torchvision's v2 class, or yours (a `dtype` named as text becomes torch's)."""
    obj = TRANSFORMS.get(name)
    maker = f"v2.{obj.__name__}" if obj.__module__.startswith("torchvision.transforms.v2") else \
        component(script, obj, "v2")
    args = [f"{k}=torch.{v}" if k == "dtype" and isinstance(v, str) else f"{k}={literal(v)}"
            for k, v in kwargs.items()]
    return f"{maker}({', '.join(args)})"


def write_text_data(script: Script, facts: Facts) -> None:
    """Text readers, guide's tokenizer and vocabulary (its source), the split; main()'s lines for each split."""
    from torchguide.data.text import Vocab, sort_labels

    cfg, imports = facts.config, script.imports
    imports.name("torch.utils.data", "Dataset")
    texts = []
    readers = {}
    for split in ("train", "valid", "test"):
        section = getattr(cfg.data, split)
        if section is not None and getattr(section, "name", None):
            readers[split] = text_reader(script, section.name, section.kwargs, split)
    kinds = {kind for kind, _, _ in readers.values()}
    if "text_csv" in kinds:
        imports.module("csv")
        imports.module("json")
        texts.append(blocks.READ_TEXTS)
    if "token_ids" in kinds:
        imports.module("json")
        imports.module("numpy", "np")
        texts.append(blocks.READ_TOKEN_IDS)
    if "random_sequences" in kinds:
        texts.append(blocks.RANDOM_SEQUENCES)
    has_texts = readers["train"][2]
    if has_texts:
        script.sources.define(Vocab)
    script.sources.define(sort_labels)
    texts.append(blocks.TEXTS)
    if has_texts:
        texts.append(blocks.ENCODE)
    if cfg.data.valid is not None and cfg.data.valid.split:
        texts.append(blocks.STRATIFIED_SPLIT)
    script.section("the data: texts as token ids", *texts)
    script.data_lines = text_split_lines(readers, facts)


def text_reader(script: Script, name: str, kwargs: dict[str, Any], split: str) -> tuple[str, str, bool]:
    """(kind, the call that gives (texts or ids, labels) or your dataset, whether it gives texts)."""
    entry = DATASETS.entry(name)
    args = dict(kwargs)
    if "path" in args:
        args["path"] = script_path(args["path"])
    if entry.name == "text_csv":
        columns = {k: v for k, v in args.items() if k != "path" and v != defaults_of(entry.obj).get(k)}
        return entry.name, call("read_texts", literal(args["path"]), **columns), True
    if entry.name == "token_ids":
        return entry.name, call("read_token_ids", literal(args["path"])), False
    if entry.name == "random_sequences":
        return entry.name, call("random_sequences", **{**defaults_of(entry.obj), **args}), False
    if entry.obj.__module__.startswith("torchguide"):
        raise ConfigError(f"data.{split}.name: {entry.name} is not a text dataset")
    return "dataset", call(user_ref(script, entry.obj), **kwargs), True


def text_split_lines(readers: dict[str, tuple[str, str, bool]], facts: Facts) -> list[str]:
    """main()'s lines that read each split, take the classes and the vocabulary from training, and encode."""
    cfg = facts.config
    vocab = cfg.data.vocab
    has_texts = readers["train"][2]
    lines = ["    # the data: texts (or token ids) and their labels, read as strings"]
    for split, (kind, reader, gives_texts) in readers.items():
        inputs = f"{split}_texts" if gives_texts else f"{split}_ids"
        if kind == "dataset":
            items = f"{split}_items"
            lines += [f"    {items} = {reader}  # data.{split}",
                      f"    {split}_names = [str(c) for c in {items}.classes]",
                      f"    {inputs} = [{items}[i][0] for i in range(len({items}))]",
                      f"    {split}_labels = [{split}_names[int({items}[i][1])] for i in range(len({items}))]"]
        else:
            lines.append(f"    {inputs}, {split}_labels = {reader}  # data.{split}")
        if split == "train":
            classes = "train_names" if kind == "dataset" else "sort_labels(train_labels)"
            lines.append(f"    classes = {classes}  # the class names; a label's index in this list is its class")
            if cfg.data.valid is not None and cfg.data.valid.split:
                valid = f"valid_{inputs.removeprefix('train_')}"
                lines += [f"    # data.valid.split: {cfg.data.valid.split:g} of each class held out for validation",
                          "    train_part, valid_part = stratified_split(train_labels, "
                          f"{cfg.data.valid.split!r}, SEED)",
                          f"    {valid}, valid_labels = [{inputs}[i] for i in valid_part], "
                          "[train_labels[i] for i in valid_part]",
                          f"    {inputs}, train_labels = [{inputs}[i] for i in train_part], "
                          "[train_labels[i] for i in train_part]"]
    splits = ["train", *(["valid"] if cfg.data.valid is not None else []), *(["test"] if "test" in readers else [])]
    if has_texts:
        lines += [f"    # the vocabulary of the training texts (data.vocab: tokens seen at least {vocab.min_freq} "
                  "time(s)), most frequent first",
                  f"    vocab = Vocab.build(train_texts, min_freq={vocab.min_freq}, max_size={vocab.max_size})",
                  "    vocab_size = len(vocab)"]
        for split in splits:
            lines.append(f"    {split}_set = encode({split}_texts, {split}_labels, vocab, classes)")
    else:
        for split in splits:
            lines.append(f"    {split}_set = Texts([x[:MAX_LEN] for x in {split}_ids], "
                         f"[classes.index(label) for label in {split}_labels])")
            if split == "valid" or (split == "train" and cfg.data.valid is None):
                known = "train_set.ids + valid_set.ids" if cfg.data.valid is not None else "train_set.ids"
                lines.append(f"    vocab_size = 1 + max(int(x.max()) for x in {known})  # the largest token id + 1")
            if split == "test":
                lines.append("    test_set.ids = [x.masked_fill(x >= vocab_size, 1) for x in test_set.ids]"
                             "  # ids the model has no embedding for")
    return lines


# ------------------------------------------------------------------ batches: samplers, collate, loaders
