"""From a config to datasets and DataLoaders: the data half of a run.

`build_data` loads the named datasets, carves the validation split, fixes the class
list (and, for text, the vocabulary, from the training split only) and reports what
the model needs to know (classes, channels, features, vocabulary size). `make_loader`
wraps one split in a DataLoader with the configured collate and sampler (and, for
training, the batch transforms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from torchguide.config import Config
from torchguide.data.adapt import build_dataset
from torchguide.data.batch_transforms import MixBatches, build_batch_mixer
from torchguide.data.image import ImageSamples
from torchguide.data.samplers import EpochBatchSampler
from torchguide.data.text import TextSamples, Vocab, sort_labels
from torchguide.data.transforms import build_pipeline
from torchguide.errors import ConfigError, DataError
from torchguide.interrupt import ignore_interrupts_in_worker
from torchguide.losses import loss_meta
from torchguide.registry import COLLATES, SAMPLERS, Registry

SPLITS = ("train", "valid", "test")


MODEL_FACTS = ("num_classes", "in_channels", "in_features", "image_size", "vocab_size", "pad_index")
"""The runtime facts a model builder may take, by name in its signature, filled by `Data.model_facts`."""


@dataclass
class Data:
    """The datasets of a run and the facts about them that the model and loss need."""

    task: str
    classes: list[str]
    splits: dict[str, Dataset] = field(default_factory=dict)
    vocab: Vocab | None = None
    vocab_size: int | None = None
    in_channels: int | None = None
    in_features: int | None = None
    input_shape: list[int] | None = None  # one image after its transforms, (C, H, W)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int | tuple[int, int] | None:
        """H for square images, else (H, W); None for text."""
        if not self.input_shape or len(self.input_shape) < 3:
            return None
        height, width = self.input_shape[-2:]
        return height if height == width else (height, width)

    def model_facts(self, num_outputs: int) -> dict[str, Any]:
        """Every fact of MODEL_FACTS known for this data (`num_classes` is the number of model outputs)."""
        facts = {"num_classes": num_outputs, "in_channels": self.in_channels, "in_features": self.in_features,
                 "image_size": self.image_size, "vocab_size": self.vocab_size,
                 "pad_index": 0 if self.task == "text" else None}
        return {k: v for k, v in facts.items() if v is not None}


def supply(registry: Registry, name: str, runtime: dict[str, Any]) -> dict[str, Any]:
    """The runtime values that entry `name` names in its signature.

    Only named parameters get them: a builder that takes `**kwargs` (and forwards them to
    a torch class) is not handed facts it did not ask for.
    """
    sig = registry.signature(name)
    if sig is None:
        return {}
    named = {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in runtime.items() if k in named}


def stratified_split(targets: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (train, valid) keeping class shares, reproducibly under `seed`.

    Raises:
        ConfigError: the split would leave a class without training samples.
    """
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    emptied = [label for label, idx in by_class.items() if len(idx) > 1 and round(len(idx) * fraction) >= len(idx)]
    if emptied:
        least = min(len(by_class[label]) for label in emptied)
        raise ConfigError(f"data.valid.split: {fraction} of a class of {least} samples leaves it no training "
                          f"sample ({len(emptied)} class(es) so)", f"use a split below {(least - 0.5) / least:.2f}")
    train, valid = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        order = torch.randperm(len(idx), generator=generator).tolist()
        n_valid = round(len(idx) * fraction) if len(idx) > 1 else 0
        valid += [idx[j] for j in order[:n_valid]]
        train += [idx[j] for j in order[n_valid:]]
    if not valid:
        raise DataError(f"valid split {fraction} of {len(targets)} samples is empty", "raise data.valid.split")
    return sorted(train), sorted(valid)


def load_split(config: Config, split: str, path: str | None = None) -> ImageSamples | TextSamples | None:
    """The dataset of one split from the config (or from `path` for eval); None if absent.

    Raises DataError when it cannot be read or (a dataset of the user's own) breaks the contract.
    """
    section = getattr(config.data, split)
    if section is None or getattr(section, "name", None) is None:
        if path is None:
            return None
        section = config.data.train
    kwargs = dict(section.kwargs)
    if path is not None:
        key = next((k for k in ("root", "path", "csv_file") if k in kwargs), None)
        if key is None:
            raise DataError(f"dataset {section.name!r} does not read from a path; --data cannot replace it")
        kwargs[key] = path
    try:
        return build_dataset(section.name, **kwargs)
    except DataError as exc:
        where = "--data" if path is not None else f"data.{split}" + (f".{exc.key}" if exc.key else "")
        raise DataError(f"{where}: {exc.message}", exc.hint) from exc


def build_data(config: Config, splits: tuple[str, ...] = SPLITS, *, classes: list[str] | None = None,
               vocab: Vocab | None = None, vocab_size: int | None = None, data_path: str | None = None,
               ) -> Data:
    """Load the requested splits; `classes`/`vocab` come from a checkpoint for eval.

    Raises DataError when the data cannot be read or its labels do not fit `classes`.
    """
    raw = {s: load_split(config, s, data_path if s in splits and s != "train" else None)
           for s in splits if s != "valid" or config.data.valid is not None}
    raw = {s: d for s, d in raw.items() if d is not None}
    split = config.data.valid.split if config.data.valid is not None else None
    if split and "train" in raw:
        if len(raw["train"]) < 2:
            raise DataError("the training data has fewer than two samples")
        targets = raw["train"].targets if isinstance(raw["train"], ImageSamples) else raw["train"].raw_labels
        keys = {t: i for i, t in enumerate(sorted(set(targets)))}
        train_idx, valid_idx = stratified_split([keys[t] for t in targets], split, config.seed)
        raw["valid"] = subset(raw["train"], valid_idx)
        raw["train"] = subset(raw["train"], train_idx)
    first = next(iter(raw.values()), None)
    if first is None:
        raise DataError(f"the config has no {' or '.join(splits)} data", "add data.test or pass --data")
    task = "image" if isinstance(first, ImageSamples) else "text"
    if config.task and task != config.task:
        raise ConfigError(f"data.train.name: {config.data.train.name} is a {task} dataset, "
                          f"but this is a {config.task} run")
    if task == "image":
        return image_data(config, raw, classes)
    return text_data(config, raw, classes, vocab, vocab_size)


def subset(dataset: Any, indices: list[int]) -> Any:
    return dataset.view(indices) if isinstance(dataset, ImageSamples) else dataset.subset(indices)


def image_data(config: Config, raw: dict[str, ImageSamples], classes: list[str] | None) -> Data:
    classes = classes or raw["train"].classes
    train_tf = build_pipeline(config.data.transforms.train)
    eval_tf = build_pipeline(config.data.transforms.eval)
    if config.data.collate.name == "default":  # it stacks images, so they must come out the same size
        check_sizes([ds for name, ds in raw.items() if name == "train"], config.data.transforms.train, "train")
        check_sizes([ds for name, ds in raw.items() if name != "train"], config.data.transforms.eval, "eval")
    splits = {}
    for name, ds in raw.items():
        if ds.classes != classes:
            ds = remap_classes(ds, classes, name)
        splits[name] = ds.view(transform=train_tf if name == "train" else eval_tf,
                               cache=config.data.cache == "memory")
    sample = next(iter(splits.values()))[0][0]
    return Data("image", classes, splits, in_channels=int(sample.shape[0]), in_features=int(sample.numel()),
                input_shape=list(sample.shape))


def remap_classes(ds: ImageSamples, classes: list[str], split: str) -> ImageSamples:
    """Re-index a split whose class folders are a subset of the known classes."""
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise DataError(f"{split} data has classes the model does not know: {', '.join(unknown[:5])}",
                        f"expected classes among {', '.join(classes)}")
    return ds.relabel(classes)


SIZE_FIXING = {"centercrop", "randomcrop", "randomresizedcrop", "resizedcrop"}


def fixes_size(items: list[Any] | None, sizes: list[tuple[int, int]]) -> bool:
    """Whether a transform list makes images of `sizes` one size: a crop to a size, or a resize to
    (H, W) (a resize to one number keeps the aspect ratio, so it is enough only when they all share one)."""
    aspects = {w * 10**6 // h for w, h in sizes}
    for item in items or []:
        name, kwargs = (item, {}) if isinstance(item, str) else (item.name, item.kwargs)
        name = name.lower().replace("_", "")
        if name in SIZE_FIXING:
            return True
        if name == "resize":
            size = kwargs.get("size")
            if isinstance(size, list | tuple) and len(size) == 2 or isinstance(size, int) and len(aspects) == 1:
                return True
    return False


def check_sizes(datasets: list[ImageSamples], items: list[Any] | None, stage: str) -> None:
    """Refuse images of several sizes that no transform of `stage` brings to one size (they cannot be
    stacked into a batch); the sizes come from the headers read when the files were verified."""
    sizes: dict[tuple[int, int], str] = {}
    for ds in datasets:
        for size, path in (ds.sizes or {}).items():
            sizes.setdefault(size, path)
    if len(sizes) < 2 or fixes_size(items, list(sizes)):
        return
    (w1, h1), (w2, h2) = list(sizes)[:2]
    example = f"{sizes[(w1, h1)]} is {w1}x{h1}, {sizes[(w2, h2)]} is {w2}x{h2}"
    more = f" ({len(sizes)} sizes in all)" if len(sizes) > 2 else ""
    raise ConfigError(f"data.transforms.{stage}: the images differ in size ({example}{more}) and no transform "
                      "makes them one size, so they cannot be stacked into batches",
                      f"add `{{name: resize, size: [{h1}, {w1}]}}` (or a center_crop) to data.transforms.{stage}")


def text_data(config: Config, raw: dict[str, TextSamples], classes: list[str] | None,
              vocab: Vocab | None, vocab_size: int | None) -> Data:
    has_text = next(iter(raw.values())).texts is not None
    if classes is None:
        classes = raw["train"].classes or sort_labels(raw["train"].raw_labels)
        if len(classes) < 2:
            raise DataError(f"the training data has one label ({classes[0]!r}); a classifier needs two or more")
    if has_text and vocab is None:
        vocab = Vocab.build(raw["train"].texts, config.data.vocab.min_freq, config.data.vocab.max_size)
    splits = {name: encode_split(ds, name, vocab, classes, config.data.vocab.max_len) for name, ds in raw.items()}
    if vocab is not None:
        vocab_size = len(vocab)
    elif vocab_size is None:
        vocab_size = 1 + max(int(x.max()) for ds in splits.values() for x in ds.ids)
    else:  # ids the trained embedding does not have become <unk>
        for ds in splits.values():
            ds.ids = [x.masked_fill(x >= vocab_size, 1) for x in ds.ids]
    return Data("text", classes, splits, vocab=vocab, vocab_size=vocab_size)


def encode_split(ds: TextSamples, split: str, vocab: Vocab | None, classes: list[str],
                 max_len: int | None) -> TextSamples:
    """One split's token ids and class indices; a label outside `classes` is a DataError naming the split."""
    try:
        return ds.encode(vocab, classes, max_len)
    except DataError as exc:
        raise DataError(f"data.{split}: {exc.message}", exc.hint) from exc


def auto_workers(dataset: Dataset, task: str) -> int:
    """DataLoader workers for `num_workers: auto`.

    Text (token ids in memory) and small image sets load faster in the main process than
    through worker processes; larger image sets decode in up to 4 workers, leaving one
    core for the model.
    """
    cores = os.cpu_count() or 1
    if task == "text" or len(dataset) < 5000 or cores < 2:
        return 0
    return max(1, min(4, cores - 1))


class FinishBatch:
    """A collate_fn that runs the pipeline's per-batch steps (to float, normalize) on the stacked images,
    then, for training, the batch transforms (MixUp, CutMix)."""

    def __init__(self, collate: Any, finish: Any, mix: MixBatches | None = None) -> None:
        self.collate, self.finish, self.mix = collate, finish, mix

    def __call__(self, samples: list[Any]) -> Any:
        batch = self.collate(samples)
        if self.finish is not None:
            batch = batch._replace(inputs=(self.finish(batch.inputs[0]), *batch.inputs[1:]))
        return self.mix(batch) if self.mix is not None else batch


def make_mixer(config: Config, data: Data) -> MixBatches | None:
    """The training batches' MixUp / CutMix; ConfigError on text data (validation refuses it earlier)."""
    items = config.data.batch_transforms
    if items and data.task != "image":
        raise ConfigError(f"data.batch_transforms: batch transforms ({', '.join(it.name for it in items)}) "
                          "mix images, not texts: remove data.batch_transforms")
    return build_batch_mixer(items, data.num_classes)


def make_loader(dataset: Dataset, config: Config, data: Data, *, train: bool, device: torch.device,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader for one split with the configured collate and (for training) sampler."""
    loader = config.data.loader
    _, target = loss_meta(config.loss.name)
    collate_name = config.data.collate.name
    runtime = {"target": target or "index", "num_classes": data.num_classes, "pad_index": 0,
               "max_len": config.data.vocab.max_len}
    collate_fn = COLLATES.build(collate_name, **{**supply(COLLATES, collate_name, runtime),
                                                 **config.data.collate.kwargs})  # the config's values win
    lengths = dataset.lengths if isinstance(dataset, TextSamples) else [1] * len(dataset)
    batch_size = loader.batch_size if train else (loader.eval_batch_size or loader.batch_size)
    common = {"lengths": lengths, "batch_size": batch_size, "seed": config.seed, "rank": rank,
              "world_size": world_size}
    if train:
        name, kwargs = config.data.sampler.name, config.data.sampler.kwargs
        taken = sorted(set(kwargs) & {*common, "drop_last", "shuffle"})
        if taken:
            raise ConfigError(f"data.sampler.{taken[0]}: set by guide (batch size and drop_last live in "
                              "data.loader, the seed at the top level); remove it here")
        sampler = SAMPLERS.build(name, **kwargs, drop_last=loader.drop_last, shuffle=True, **common)
    else:  # evaluation: every sample once, length-sorted in buckets for text (tight, in a fixed order)
        name = "length_buckets" if isinstance(dataset, TextSamples) else "sequential"
        sampler = SAMPLERS.build(name, shuffle=False, **common)
    if not isinstance(sampler, EpochBatchSampler):
        raise ConfigError(f"data.sampler.name: {name} must return a torchguide EpochBatchSampler")
    if len(sampler) == 0:
        raise DataError(f"no batches: {len(dataset)} samples with batch_size {batch_size} and drop_last",
                        "lower data.loader.batch_size or set drop_last: false")
    cached = getattr(dataset, "cache", None) is not None
    if loader.num_workers == "auto":  # a memory cache lives in the process that fills it: keep it in this one
        workers = 0 if cached else auto_workers(dataset, data.task)
    else:
        workers = loader.num_workers
    finish = getattr(dataset.transform, "batch", None) if isinstance(dataset, ImageSamples) else None
    mix = make_mixer(config, data) if train else None
    if finish is not None or mix is not None:
        collate_fn = FinishBatch(collate_fn, finish, mix)
    pin = device.type == "cuda" if loader.pin_memory == "auto" else loader.pin_memory
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers,
                      pin_memory=pin, persistent_workers=workers > 0,
                      worker_init_fn=ignore_interrupts_in_worker if workers else None,
                      generator=torch.Generator().manual_seed(config.seed))
