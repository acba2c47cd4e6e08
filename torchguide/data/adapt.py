"""Datasets of the user's own: any map-style Dataset that keeps the contract, adapted once.

The contract (README, "Your own code"): a `torch.utils.data.Dataset` with `__len__` and
`__getitem__`, a `classes` list of class names, and items `(image, label)` (a PIL image,
or a uint8 / float tensor (C, H, W); floats in [0, 1]) or `(text, label)` (a str), the
label an int in `range(len(classes))`.

`build_dataset` builds a registered dataset and, when it is not one of guide's own,
checks it against the contract (one line naming the dataset and what is wrong when it
does not fit) and wraps it in the samples type the rest of the data layer works with:
`ImageSamples` that read their images from the dataset's items, or `TextSamples` with
its texts. From there, transforms, the validation split, the memory cache, class
handling, eval and `guide check` treat it like the built-in datasets.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset
from torchvision.transforms.v2.functional import pil_to_tensor

from torchguide.data.image import GRAY_MODES, ImageSamples
from torchguide.data.text import TextSamples
from torchguide.errors import DataError, GuideError
from torchguide.registry import DATASETS, one_line

CONTRACT = "items must be (image, int) with a PIL image or a (C, H, W) tensor, or (str, int)"


def build_dataset(name: str, **kwargs: Any) -> ImageSamples | TextSamples:
    """Build registered dataset `name` as samples guide can use; raises DataError when it breaks the contract."""
    return adapt(DATASETS.build(name, **kwargs), DATASETS.entry(name).name)


def adapt(dataset: Any, name: str) -> ImageSamples | TextSamples:
    """guide's own samples unchanged; any other dataset checked against the contract and wrapped.

    Raises:
        DataError: not a map-style dataset, no `classes` list, items of another shape, or
            labels outside `range(len(classes))`.
    """
    if isinstance(dataset, ImageSamples | TextSamples):
        return dataset
    what = f"dataset {name!r} ({type(dataset).__name__})"
    if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise DataError(f"{what} is not a map-style dataset",
                        "give it __len__ and __getitem__ (a torch.utils.data.Dataset), not __iter__ alone")
    classes = class_names(dataset, what)
    if len(dataset) == 0:
        raise DataError(f"{what} is empty")
    first, _ = read_item(dataset, 0, what, len(classes))
    if isinstance(first, str):
        return text_samples(dataset, classes, what, name)
    return image_samples(dataset, classes, first, what)


def class_names(dataset: Any, what: str) -> list[str]:
    """The dataset's `classes` as names; raises DataError when there is no such list of two or more distinct names."""
    classes = getattr(dataset, "classes", None)
    if not isinstance(classes, list | tuple):
        raise DataError(f"{what} has no `classes` list",
                        "set self.classes = ['name of class 0', 'name of class 1', ...] in its __init__")
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise DataError(f"{what} has {len(names)} class(es) in `classes`; a classifier needs two or more")
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{what} names class {twice!r} twice in `classes`", "give each class one name")
    return names


def read_item(dataset: Any, index: int, what: str, num_classes: int) -> tuple[Any, int]:
    """Item `index` as (input, label); raises DataError when reading fails or it breaks the contract."""
    try:
        item = dataset[index]
    except GuideError:
        raise
    except Exception as exc:  # the user's __getitem__ may raise anything
        raise DataError(f"{what}: reading item {index} failed: {type(exc).__name__}: {one_line(exc)}") from exc
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise DataError(f"{what}: item {index} is {describe(item)}; {CONTRACT}")
    x, label = item
    if not isinstance(x, str | Image.Image | torch.Tensor):
        raise DataError(f"{what}: item {index} is ({describe(x)}, {describe(label)}); {CONTRACT}",
                        "convert arrays with torch.from_numpy(a).permute(2, 0, 1)" if hasattr(x, "shape") else None)
    return x, check_label(label, index, what, num_classes)


def check_label(label: Any, index: int, what: str, num_classes: int) -> int:
    """A label as an int in range(num_classes); raises DataError naming the item otherwise."""
    if isinstance(label, torch.Tensor) and label.dim() == 0 and not label.is_floating_point():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise DataError(f"{what}: item {index} has label {label!r} ({type(label).__name__}); "
                        "labels must be int class indices", "return classes.index(name) for a class name")
    if not 0 <= int(label) < num_classes:
        raise DataError(f"{what}: item {index} has label {int(label)}, outside 0..{num_classes - 1} "
                        f"({num_classes} classes)", "labels index into the dataset's `classes` list")
    return int(label)


def describe(value: Any) -> str:
    """A short description of a value for an error message: its type, and shape for tensors."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def all_labels(dataset: Any, what: str, num_classes: int, kind: type) -> list[int]:
    """Every item's label: from a `targets` list when the dataset has one (torchvision's habit),
    else by reading each item once (its input must be of `kind` like the first)."""
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, list | tuple | torch.Tensor) and len(targets) == len(dataset):
        return [check_label(t, i, what, num_classes) for i, t in enumerate(targets)]
    labels = []
    for i in range(len(dataset)):
        x, label = read_item(dataset, i, what, num_classes)
        if not isinstance(x, kind):
            raise DataError(f"{what}: item {i} is ({describe(x)}, int) but item 0 is {kind.__name__}; {CONTRACT}")
        labels.append(label)
    return labels


def text_samples(dataset: Any, classes: list[str], what: str, name: str) -> TextSamples:
    """A (str, int) dataset as TextSamples, read once: the vocabulary is built from its texts."""
    texts, labels = [], []
    for i in range(len(dataset)):
        text, label = read_item(dataset, i, what, len(classes))
        if not isinstance(text, str):
            raise DataError(f"{what}: item {i} is ({describe(text)}, int) but item 0 is text; {CONTRACT}")
        texts.append(text)
        labels.append(classes[label])
    return TextSamples(labels, texts=texts, source=name, classes=classes)


def image_samples(dataset: Any, classes: list[str], first: Any, what: str) -> ImageSamples:
    """An (image, int) dataset as ImageSamples whose keys are item indices, read through `ItemImages`."""
    image_type = Image.Image if isinstance(first, Image.Image) else torch.Tensor
    labels = all_labels(dataset, what, len(classes), image_type)
    if isinstance(first, Image.Image):
        mode = "L" if first.mode in GRAY_MODES else "RGB"
    else:
        check_tensor(first, 0, what)
        mode = "L" if first.shape[0] == 1 else "RGB"
    return ImageSamples(list(enumerate(labels)), classes, mode, read=ItemImages(dataset, what))


def check_tensor(image: torch.Tensor, index: int, what: str) -> torch.Tensor:
    """An image tensor as the contract has it, (C, H, W) uint8 or float; raises DataError otherwise."""
    if image.dim() != 3:
        raise DataError(f"{what}: item {index} is {describe(image)}; an image tensor is (C, H, W)",
                        "add the channel dimension with x.unsqueeze(0)" if image.dim() == 2 else None)
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise DataError(f"{what}: item {index} is {describe(image)}; image tensors are uint8 or float (in [0, 1])")
    return image


class ItemImages:
    """`read` for ImageSamples over a user's dataset: the image of item `index` as a (C, H, W) tensor."""

    def __init__(self, dataset: Dataset, what: str) -> None:
        self.dataset, self.what = dataset, what

    def __call__(self, index: int, mode: str) -> torch.Tensor:
        try:
            image = self.dataset[index][0]
        except GuideError:
            raise
        except Exception as exc:  # the user's __getitem__ may raise anything
            raise DataError(f"{self.what}: reading item {index} failed: {type(exc).__name__}: "
                            f"{one_line(exc)}") from exc
        if isinstance(image, Image.Image):
            return pil_to_tensor(image if image.mode == mode else image.convert(mode))
        if isinstance(image, torch.Tensor):
            return check_tensor(image, index, self.what)
        raise DataError(f"{self.what}: item {index} is ({describe(image)}, int); {CONTRACT}")
