"""Image datasets: an ImageFolder tree, the guide's glob dataset, and a CSV of paths.

All three produce an `ImageSamples`: a sorted list of (path, class index) with class
names sorted alphabetically, so indices never depend on file-system order. Images are
opened lazily in `__getitem__`, decoded to uint8 tensors in one mode (L or RGB) so mixed
files work, and optionally kept in memory after their first decode (`data.cache: memory`).
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

from torchguide.data.transforms import Pipeline
from torchguide.errors import DataError
from torchguide.registry import DATASETS

log = logging.getLogger("torchguide")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAY_MODES = {"1", "L", "I", "I;16", "F", "LA"}


class ImageSamples(Dataset):
    """Labelled images; `transform` maps a decoded uint8 (C, H, W) tensor to the model's input.

    `samples` are (key, class index) pairs and `read(key, mode)` gives the image of a key
    as a (C, H, W) tensor: by default keys are file paths, decoded by `load_image`; a
    dataset of the user's own reads its items instead (`torchguide.data.adapt`).
    With a `Pipeline` transform and `cache`, the output of its deterministic first part
    (decode, resize, crop ...) is kept in memory after the first epoch; later epochs run
    only the random part.
    """

    def __init__(self, samples: list[tuple[Any, int]], classes: list[str], mode: str,
                 transform: Callable[[Any], Any] | None = None, cache: bool = False,
                 read: Callable[[Any, str], torch.Tensor] | None = None) -> None:
        self.samples = samples
        self.classes = classes
        self.mode = mode
        self.transform = transform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.read = read or load_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        key, label = self.samples[index]
        tf = self.transform
        if not isinstance(tf, Pipeline):
            image = self.read(key, self.mode)
            return (tf(image) if tf else image), label
        x = self.cache.get(index) if self.cache is not None else None
        if x is None:
            x = tf.fixed(self.read(key, self.mode))
            if self.cache is not None:
                self.cache[index] = x
        return tf.random(x), label

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        """A batch; in a loader worker the batch's own seed drives its random transforms."""
        seed = getattr(indices, "seed", None)
        if seed is not None and self.transform is not None and get_worker_info() is not None:
            torch.manual_seed(seed)
        return [self[i] for i in indices]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def files(self) -> bool:
        """Whether the samples are image files (not the items of a dataset of the user's own)."""
        return self.read is load_image

    def view(self, indices: list[int] | None = None, transform: Callable[[Any], Any] | None = None,
             cache: bool = False) -> ImageSamples:
        """The same images (or a subset) with another transform, e.g. a validation split."""
        samples = self.samples if indices is None else [self.samples[i] for i in indices]
        return ImageSamples(samples, self.classes, self.mode, transform, cache, self.read)

    def relabel(self, classes: list[str]) -> ImageSamples:
        """The same images with class indices into `classes` (a superset of this split's classes)."""
        index = {c: i for i, c in enumerate(classes)}
        samples = [(key, index[self.classes[y]]) for key, y in self.samples]
        return ImageSamples(samples, classes, self.mode, self.transform, read=self.read)


TORCHVISION_DECODES = (".jpg", ".jpeg", ".png")
# torchvision 0.29 marks its decoders deprecated in favour of torchcodec, on every call; the pinned
# version decodes correctly and fastest, so the notice is silenced here rather than shown per image.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def load_image(path: str, mode: str) -> torch.Tensor:
    """Decode an image file to a uint8 (C, H, W) tensor in `mode` (L or RGB).

    JPEG and PNG go through torchvision.io (libjpeg-turbo / libpng straight into a
    tensor, about twice as fast as PIL for photos); other formats, and files it cannot
    read (16-bit, CMYK ...), through PIL.
    """
    if path.lower().endswith(TORCHVISION_DECODES):
        try:
            image = decode_image(read_file(path), mode=ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB)
            if image.dtype == torch.uint8:
                return image
        except RuntimeError:
            pass
    return pil_to_tensor(open_image(path, mode))


def open_image(path: str, mode: str) -> Image.Image:
    """Decode one image file into `mode`; a broken file is a DataError naming it."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(mode, image.size)
            return image.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}", "remove or replace the file") from None


def check_files(files: list[Path], labels: list[int], classes: list[str], root: Path, mode: str,
                verify: bool) -> ImageSamples:
    """Drop files that are not images (with a warning naming them), pick the mode, check classes."""
    samples, bad, modes = [], [], Counter()
    for path, label in zip(files, labels, strict=True):
        if verify:
            try:
                with Image.open(path) as image:  # reads the header only
                    modes[image.mode] += 1
            except (OSError, UnidentifiedImageError):
                bad.append(path)
                continue
        samples.append((str(path), label))
    if bad:
        names = ", ".join(p.name for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
        log.warning("skipped %d unreadable image file(s) in %s: %s", len(bad), root, names)
    if not samples:
        raise DataError(f"no readable images in {root}", "check the path and the file types")
    counts = Counter(label for _, label in samples)
    empty = [c for i, c in enumerate(classes) if counts[i] == 0]
    if empty:
        raise DataError(f"class folder(s) with no images in {root}: {', '.join(empty)}",
                        "add images or remove the folder")
    if len(classes) < 2:
        raise DataError(f"{root} has only one class ({classes[0]!r})",
                        "a classifier needs at least two class folders")
    if mode == "auto":
        mode = "L" if modes and set(modes) <= GRAY_MODES else "RGB"
    if mode not in ("L", "RGB"):
        raise DataError(f"mode must be L, RGB or auto, got {mode!r}")
    return ImageSamples(samples, classes, mode)


def require_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist", "check data.train.root or run `guide data digits`")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of class folders")
    return root


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def classes_and_files(pairs: list[tuple[Path, str]], root: Path, mode: str, verify: bool,
                      classes: list[str] | None = None) -> ImageSamples:
    """Turn (file, class name) pairs into samples with sorted class indices."""
    skipped = [p for p, _ in pairs if not is_image(p)]
    if skipped:
        log.warning("skipped %d non-image file(s) in %s, e.g. %s", len(skipped), root, skipped[0].name)
    pairs = sorted((p, c) for p, c in pairs if is_image(p))
    classes = classes or sorted({c for _, c in pairs})
    index = {c: i for i, c in enumerate(classes)}
    return check_files([p for p, _ in pairs], [index[c] for _, c in pairs], classes, root, mode, verify)


@DATASETS.register("image_folder", task="image")
def image_folder(root: str, mode: str = "auto", verify: bool = True) -> ImageSamples:
    """Images in `root/<class>/<image>` (torchvision's ImageFolder layout), classes sorted.

    Args:
        mode: `L` (grayscale), `RGB`, or `auto` (L when every image is grayscale).
        verify: open each file's header once to skip files that are not images.
    """
    root = require_dir(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"no class folders in {root}", "expected root/<class>/<image>.png")
    pairs = [(f, d.name) for d in class_dirs for f in d.rglob("*") if not f.is_dir()]
    return classes_and_files(pairs, root, mode, verify, classes=[d.name for d in class_dirs])


@DATASETS.register("image_glob", task="image")
def image_glob(root: str, pattern: str = "*/*", mode: str = "auto", verify: bool = True) -> ImageSamples:
    """The guide's custom dataset done right: files from a glob, class = parent folder name.

    Class indices come from the SORTED class names (the guide's `set` gave a different
    order on every run), and images are opened lazily in `__getitem__`.
    """
    root = require_dir(root)
    files = [f for f in root.glob(pattern) if f.is_file()]
    if not files:
        raise DataError(f"no files match {pattern!r} in {root}", "check data.train.pattern")
    return classes_and_files([(f, f.parent.name) for f in files], root, mode, verify)


@DATASETS.register("image_csv", task="image")
def image_csv(csv_file: str, root: str | None = None, path_column: str = "path",
              label_column: str = "label", mode: str = "auto", verify: bool = True) -> ImageSamples:
    """Images listed in a CSV of `path,label` rows; paths relative to `root` (default: the CSV's folder)."""
    table = Path(csv_file)
    if not table.is_file():
        raise DataError(f"CSV file {table} does not exist", "check data.train.csv_file")
    base = Path(root) if root else table.parent
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{table} has no rows")
    missing = {path_column, label_column} - set(rows[0])
    if missing:
        raise DataError(f"{table} has no column(s) {', '.join(sorted(missing))}; it has {', '.join(rows[0])}",
                        "set path_column / label_column")
    pairs = [(base / r[path_column], r[label_column]) for r in rows]
    lost = [p for p, _ in pairs if not p.exists()]
    if lost:
        raise DataError(f"{len(lost)} file(s) listed in {table} do not exist, e.g. {lost[0]}")
    return classes_and_files(pairs, base, mode, verify)
