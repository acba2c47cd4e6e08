"""`guide data inspect`: what a dataset holds before a model sees it.

Classes and their balance; for images, sizes, modes, duplicate and unreadable files;
for text, token lengths, the padding each sampler would leave at the configured batch
size, and a `max_len` to suggest. Works on a config's splits or on a folder / file.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from torchguide.config import Config
from torchguide.data.adapt import build_dataset
from torchguide.data.image import ImageSamples, image_folder
from torchguide.data.samplers import length_buckets, random, sorted_batches
from torchguide.data.text import TextSamples, text_csv, tokenize
from torchguide.errors import DataError
from torchguide.registry import DATASETS

SAMPLERS = {"random": random, "length_buckets": length_buckets, "sorted": sorted_batches}


def survey_path(path: str | Path, batch_size: int = 32) -> dict[str, Any]:
    """A folder of class folders (images) or a CSV / TSV / JSONL file (text)."""
    path = Path(path)
    if path.is_dir():
        return {"source": str(path), "splits": {"data": survey_images(image_folder(str(path), verify=False))}}
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl"):
        return {"source": str(path), "splits": {"data": survey_text(text_csv(str(path)), batch_size, None)}}
    if not path.exists():
        raise DataError(f"{path} does not exist", "give a folder of class folders or a .csv/.tsv/.jsonl file")
    raise DataError(f"{path} is neither a folder nor a .csv/.tsv/.jsonl file")


def survey_config(config: Config) -> dict[str, Any]:
    """Every split the config names with a dataset of its own."""
    splits = {}
    for split in ("train", "valid", "test"):
        section = getattr(config.data, split)
        if section is None or getattr(section, "name", None) is None:
            continue
        kwargs = dict(section.kwargs)
        signature = DATASETS.signature(section.name)
        if signature is not None and "verify" in signature.parameters:
            kwargs["verify"] = False  # keep unreadable files in, to list them
        dataset = build_dataset(section.name, **kwargs)
        if isinstance(dataset, ImageSamples):
            splits[split] = survey_images(dataset)
        else:
            splits[split] = survey_text(dataset, config.data.loader.batch_size, config.data.vocab.max_len)
    return {"source": config.name, "splits": splits}


def class_counts(labels: list[str]) -> dict[str, Any]:
    counts = dict(sorted(Counter(labels).items()))
    values = list(counts.values())
    return {"classes": counts, "imbalance": max(values) / max(min(values), 1) if values else None}


def survey_images(dataset: ImageSamples) -> dict[str, Any]:
    """Classes, sizes and modes of image files (headers only), unreadable and identical files."""
    if not dataset.files:
        return survey_items(dataset)
    sizes, modes, unreadable, digests = Counter(), Counter(), [], {}
    for path, _ in dataset.samples:
        try:
            with Image.open(path) as image:
                sizes[f"{image.width}x{image.height}"] += 1
                modes[image.mode] += 1
                image.verify()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            unreadable.append(path)
            continue
        digests.setdefault(hashlib.md5(Path(path).read_bytes()).hexdigest(), []).append(path)
    duplicates = [paths for paths in digests.values() if len(paths) > 1]
    return {"kind": "image", "samples": len(dataset),
            **class_counts([dataset.classes[label] for _, label in dataset.samples]),
            "sizes": dict(sizes.most_common(5)), "distinct_sizes": len(sizes), "modes": dict(modes),
            "unreadable": unreadable, "duplicates": duplicates, "unit": "file"}


def survey_items(dataset: ImageSamples) -> dict[str, Any]:
    """The same for a dataset of the user's own: every item read once, identical images by their pixels."""
    sizes, modes, unreadable, digests = Counter(), Counter(), [], {}
    for key, _ in dataset.samples:
        try:
            image = dataset.read(key, dataset.mode)
        except DataError:
            unreadable.append(f"item {key}")
            continue
        _, height, width = image.shape
        sizes[f"{width}x{height}"] += 1
        modes[tensor_mode(image)] += 1
        digests.setdefault(hashlib.md5(image.contiguous().numpy().tobytes()).hexdigest(), []).append(f"item {key}")
    return {"kind": "image", "samples": len(dataset),
            **class_counts([dataset.classes[label] for _, label in dataset.samples]),
            "sizes": dict(sizes.most_common(5)), "distinct_sizes": len(sizes), "modes": dict(modes),
            "unreadable": unreadable, "duplicates": [keys for keys in digests.values() if len(keys) > 1],
            "unit": "item"}


def tensor_mode(image: Any) -> str:
    """An image tensor's kind in the words of PIL modes: `L uint8`, `RGB float32`, `4 channels uint8`."""
    channels = {1: "L", 3: "RGB"}.get(image.shape[0], f"{image.shape[0]} channels")
    return f"{channels} {str(image.dtype).removeprefix('torch.')}"


def survey_text(dataset: TextSamples, batch_size: int, max_len: int | None) -> dict[str, Any]:
    if dataset.texts is not None:
        lengths = [len(tokenize(t)) for t in dataset.texts]
    else:
        lengths = [len(x) for x in dataset.ids]
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    capped = [min(n, max_len) if max_len else n for n in lengths]
    padding = {name: padding_share(make(capped, batch_size=batch_size, seed=0), capped)
               for name, make in SAMPLERS.items()}
    empty = sum(1 for n in lengths if n == 0)
    return {"kind": "text", "samples": len(dataset), **class_counts(dataset.raw_labels),
            "lengths": {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]},
            "padding": padding, "batch_size": batch_size, "max_len": max_len, "empty": empty,
            "suggested_max_len": -(-p95 // 8) * 8, "length_values": lengths}


def padding_share(sampler: Any, lengths: list[int]) -> float:
    sampler.set_epoch(0)
    real = padded = 0
    for batch in sampler.batches():
        longest = max(max(lengths[i] for i in batch), 1)
        real += sum(lengths[i] for i in batch)
        padded += longest * len(batch)
    return 1 - real / padded if padded else 0.0


def plot_survey(report: dict[str, Any], path: Path) -> Path:
    """Class counts (images) or token lengths (text) of each split, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = report["splits"]
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.5), squeeze=False)
    for ax, (name, split) in zip(axes[0], splits.items(), strict=True):
        if split["kind"] == "text":
            ax.hist(split["length_values"], bins=40, color="#4c72b0")
            ax.axvline(split["suggested_max_len"], color="#c44e52", linestyle="--",
                       label=f"suggested max_len {split['suggested_max_len']}")
            ax.set_xlabel("tokens")
            ax.legend()
        else:
            classes = split["classes"]
            ax.bar(range(len(classes)), list(classes.values()), color="#4c72b0")
            ax.set_xticks(range(len(classes)), list(classes), rotation=90 if len(classes) > 12 else 0)
            ax.set_xlabel("class")
        ax.set_title(f"{name}: {split['samples']} samples")
        ax.set_ylabel("count")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
