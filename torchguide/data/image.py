"""Image datasets: an ImageFolder tree, the guide's glob dataset, and a CSV of paths.

All three produce an `ImageSamples`: a sorted list of (path, class index) with class
names sorted alphabetically, so indices never depend on file-system order. Images are
opened lazily in `__getitem__`, decoded to uint8 tensors in one mode (L or RGB) so mixed
files work (16-bit images scaled to 0-255), and optionally kept in memory after their
first decode (`data.cache: memory`).

Links: every file counts once, by its real path. Links to folders are followed, each
folder once, so a link back up never loops; a class folder that is a link to another
folder of the same root is skipped (its images are counted there), and of two paths to
one file the one without a link is kept. With `verify` (the default) each file's header
is read once: files that are not images are skipped, images over `MAX_PIXELS` are
refused, and the sizes seen are kept so a run can refuse sizes that cannot be batched.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

from torchguide.data.headers import HEADER_BYTES, jpeg_header, png_header
from torchguide.data.transforms import Pipeline
from torchguide.errors import DataError
from torchguide.registry import DATASETS

log = logging.getLogger("torchguide")

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's own decompression-bomb budget
WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit (and 32-bit integer) grayscale
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
                 read: Callable[[Any, str], torch.Tensor] | None = None,
                 sizes: dict[tuple[int, int], str] | None = None) -> None:
        self.samples = samples
        self.classes = classes
        self.mode = mode
        self.transform = transform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.read = read or load_image
        self.sizes = sizes  # (width, height) -> one file of that size, from the headers; None: not read

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
    def files(self) -> bool:
        """Whether the samples are image files (not the items of a dataset of the user's own)."""
        return self.read is load_image

    def view(self, indices: list[int] | None = None, transform: Callable[[Any], Any] | None = None,
             cache: bool = False) -> ImageSamples:
        """The same images (or a subset) with another transform, e.g. a validation split."""
        samples = self.samples if indices is None else [self.samples[i] for i in indices]
        return ImageSamples(samples, self.classes, self.mode, transform, cache, self.read, self.sizes)

    def relabel(self, classes: list[str]) -> ImageSamples:
        """The same images with class indices into `classes` (a superset of this split's classes)."""
        index = {c: i for i, c in enumerate(classes)}
        samples = [(key, index[self.classes[y]]) for key, y in self.samples]
        return ImageSamples(samples, classes, self.mode, self.transform, read=self.read, sizes=self.sizes)


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
            if image.dtype == torch.uint16:  # a 16-bit PNG
                return (image.to(torch.int32) >> 8).to(torch.uint8)
        except RuntimeError:
            pass
    return pil_to_tensor(open_image(path, mode))


def open_image(path: str, mode: str) -> Image.Image:
    """Decode one image file into `mode`; a broken or oversized file is a DataError naming it."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(mode, image.size)
            if image.mode in WIDE_MODES:
                return to_8bit(image).convert(mode)
            return image.convert(mode)
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {path} is too large to decode: {exc}", "downscale or remove it") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}", "remove or replace the file") from exc


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image scaled to 0-255 (PIL's `convert("L")` clips it to only 0 and 255)."""
    wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray((wide >> 8).astype(np.uint8), "L")


def read_header(path: str | Path) -> tuple[str, tuple[int, int]] | None:
    """(mode, (width, height)) from an image file's header, None if it is not an image.

    PNG and JPEG headers are read from the file's first bytes (the mode PIL would open the
    image in, without PIL's format detection); other files, and headers not found there,
    through PIL.

    Raises:
        DataError: the image has more than MAX_PIXELS pixels (decoding it could exhaust memory).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return None
    header = png_header(head) or jpeg_header(head)
    if header is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by name
                with Image.open(path) as image:
                    header = image.mode, image.size
        except Image.DecompressionBombError:
            header = None, None
        except (OSError, UnidentifiedImageError, ValueError):
            return None
    size = header[1]
    if size is None or size[0] * size[1] > MAX_PIXELS:
        what = f" ({size[0]}x{size[1]})" if size else ""
        raise DataError(f"image {path} has more than {MAX_PIXELS:,} pixels{what}, too many to decode safely",
                        "downscale it or remove it")
    return header


def require_image_files(paths: list[str]) -> None:
    """Refuse, before decoding anything, paths that are not image files or whose images are too large."""
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"image {path} does not exist" if not Path(path).exists() else
                            f"{path} is not an image file", "give paths of image files")
        if read_header(path) is None:
            raise DataError(f"cannot read image {path}", "give paths of image files")


def check_files(files: list[str], labels: list[int], classes: list[str], root: Path, mode: str,
                verify: bool) -> ImageSamples:
    """Drop files that are not images (with a warning naming them), pick the mode, check classes."""
    samples, bad, modes, sizes = [], [], Counter(), {}
    for path, label in zip(files, labels, strict=True):
        if verify:
            header = read_header(path)  # the header only
            if header is None:
                bad.append(path)
                continue
            modes[header[0]] += 1
            sizes.setdefault(header[1], path)
        samples.append((path, label))
    if bad:
        names = ", ".join(os.path.basename(p) for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
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
        raise DataError(f"mode must be L, RGB or auto, got {mode!r}", key="mode")
    return ImageSamples(samples, classes, mode, sizes=sizes if verify else None)


def require_dir(root: str | Path) -> Path:
    """`root` (with `~` expanded) when it is a folder; else a DataError about argument `root`."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist", "check the path, or run `guide data digits`",
                        key="root")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of class folders", key="root")
    return root


def walk_files(folder: Path, root: Path, visited: set[str]) -> list[tuple[str, str]]:
    """(path, real path) of every file under `folder` (inside `root`), following links to folders.

    Each folder is entered once (by its real path, added to `visited`), and never one that
    holds the root, so links that point back up never loop.
    """
    found, stack, real_root = [], [folder], Path(os.path.realpath(root))
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in visited or real_root.is_relative_to(real):
            continue
        visited.add(real)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir():
                        stack.append(Path(entry.path))
                    elif entry.is_file():
                        where = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real, entry.name)
                        found.append((entry.path, where))
        except OSError as exc:
            raise DataError(f"cannot read folder {current}: {exc.strerror or exc}") from exc
    return found


def unique_files(pairs: list[tuple[str, str, str]], root: Path) -> list[tuple[str, str]]:
    """(file, class) with each real file once: of two paths to one file, the one without a link wins.

    `pairs` holds (path, real path, class name).
    """
    ordered = sorted(pairs, key=lambda p: (p[1] != os.path.abspath(p[0]), p[0]))
    kept, seen = [], set()
    for path, real, name in ordered:
        if real not in seen:
            seen.add(real)
            kept.append((path, name))
    if len(kept) < len(pairs):
        log.warning("%d file(s) in %s are reached twice through links; each is counted once",
                    len(pairs) - len(kept), root)
    return kept


def class_folders(root: Path) -> list[Path]:
    """The class folders of `root`; a link to another folder of the root is skipped with a warning."""
    real_root = Path(os.path.realpath(root))
    folders, links = [], []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if folder.is_symlink() and Path(os.path.realpath(folder)).is_relative_to(real_root):
            links.append(folder.name)
            continue
        folders.append(folder)
    if links:
        log.warning("skipped class folder(s) %s in %s: links to folders of the same root, whose images "
                    "are counted there", ", ".join(links), root)
    return folders


def is_image(path: str | Path) -> bool:
    """Whether a file's name is an image's: an image extension, not hidden (callers pass files only)."""
    name = os.path.basename(path)
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def path_order(pair: tuple[str, str]) -> tuple[str, str]:
    """Sort (path, class) pairs as pathlib sorts paths, part by part (`a/b/c` before `a/b-c`): the separator
    made the smallest character."""
    return pair[0].replace(os.sep, "\0"), pair[1]


def classes_and_files(pairs: list[tuple[str, str]], root: Path, mode: str, verify: bool,
                      classes: list[str] | None = None) -> ImageSamples:
    """Turn (file, class name) pairs into samples with sorted class indices."""
    skipped = [p for p, _ in pairs if not is_image(p)]  # pairs of unique files (see unique_files)
    if skipped:
        log.warning("skipped %d non-image file(s) in %s, e.g. %s", len(skipped), root, os.path.basename(skipped[0]))
    pairs = sorted(((p, c) for p, c in pairs if is_image(p)), key=path_order)
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
    class_dirs = class_folders(root)
    if not class_dirs:
        raise DataError(f"no class folders in {root}", "expected root/<class>/<image>.png", key="root")
    visited: set[str] = set()
    found = [(path, real, d.name) for d in class_dirs for path, real in walk_files(d, root, visited)]
    return classes_and_files(unique_files(found, root), root, mode, verify, classes=[d.name for d in class_dirs])


@DATASETS.register("image_glob", task="image")
def image_glob(root: str, pattern: str = "*/*", mode: str = "auto", verify: bool = True) -> ImageSamples:
    """The guide's custom dataset done right: files from a glob, class = parent folder name.

    Class indices come from the SORTED class names (the guide's `set` gave a different
    order on every run), and images are opened lazily in `__getitem__`.
    """
    root = require_dir(root)
    files = [f for f in root.glob(pattern) if f.is_file()]
    if not files:
        raise DataError(f"no files match {pattern!r} in {root}", "check the pattern", key="pattern")
    found = [(str(f), os.path.realpath(f), f.parent.name) for f in files]
    return classes_and_files(unique_files(found, root), root, mode, verify)


@DATASETS.register("image_csv", task="image")
def image_csv(csv_file: str, root: str | None = None, path_column: str = "path",
              label_column: str = "label", mode: str = "auto", verify: bool = True) -> ImageSamples:
    """Images listed in a CSV of `path,label` rows; paths relative to `root` (default: the CSV's folder)."""
    from torchguide.data.text import read_table  # the one CSV reader (BOM, short rows, long fields)

    table = Path(csv_file).expanduser()
    if not table.is_file():
        raise DataError(f"CSV file {table} does not exist" if not table.exists() else f"{table} is not a file",
                        "check the path", key="csv_file")
    base = Path(root).expanduser() if root else table.parent
    rows = read_table(table, (path_column, label_column), "set path_column / label_column")
    labels = [str(r[label_column]).strip() for _, r in rows]
    if "" in labels:
        raise DataError(f"{table}, line {rows[labels.index('')][0]}: empty {label_column}",
                        "give every row a label", key="csv_file")
    pairs = [(base / str(r[path_column]), lab) for (_, r), lab in zip(rows, labels, strict=True)]
    lost = [p for p, _ in pairs if not p.exists()]
    if lost:
        raise DataError(f"{len(lost)} file(s) listed in {table} do not exist, e.g. {lost[0]}", key="csv_file")
    found = [(str(p), os.path.realpath(p), lab) for p, lab in pairs]
    return classes_and_files(unique_files(found, base), base, mode, verify)
