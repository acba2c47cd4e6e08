"""Datasets of the user's own: any map-style Dataset that keeps the contract trains; others are refused in one line."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from torchguide.build import make_loader_for
from torchguide.check import run_check
from torchguide.config import load_config
from torchguide.data.loaders import build_data
from torchguide.data.survey import survey_config
from torchguide.errors import DataError
from torchguide.registry import DATASETS


class Items(Dataset):
    """Items made by `make(i)`, labels i % 2; a plain torch Dataset, nothing of guide's."""

    def __init__(self, make: Any, n: int = 12, classes: list[str] | None = None, label: Any = None) -> None:
        self.make, self.n, self.label = make, n, label
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        label = index % 2 if self.label is None else self.label(index)
        return self.make(index), label


def gray(i: int) -> torch.Tensor:
    return torch.full((1, 6, 6), 20 * i, dtype=torch.uint8)


KINDS = {
    "uint8": gray,
    "float": lambda i: torch.rand(3, 6, 6),
    "pil_gray": lambda i: Image.fromarray(np.full((6, 6), 20 * i, dtype=np.uint8), mode="L"),
    "pil_rgb": lambda i: Image.new("RGB", (6, 6), (i, 0, 0)),
    "text": lambda i: ["a fine film", "a dull film"][i % 2] + f" number {i}",
    "ndarray": lambda i: np.zeros((6, 6, 3), dtype=np.uint8),
    "flat": lambda i: torch.zeros(6, 6, dtype=torch.uint8),
    "long": lambda i: torch.zeros(1, 6, 6, dtype=torch.long),
    "mixed": lambda i: gray(i) if i < 5 else "text",
}
LABELS = {"ok": None, "big": lambda i: 2 if i == 3 else i % 2, "float": lambda i: 0.0, "tensor": torch.tensor}


@DATASETS.register("test_user_items")
def user_items(kind: str = "uint8", classes: list[str] | None = ("even", "odd"), labels: str = "ok") -> Dataset:
    """A user's dataset of `kind` items (see KINDS)."""
    return Items(KINDS[kind], classes=list(classes) if classes else None,
                 label=(lambda i: torch.tensor(i % 2)) if labels == "tensor" else LABELS[labels])


class Stream(IterableDataset):
    classes = ["a", "b"]

    def __iter__(self) -> Any:
        yield from ()


DATASETS.register("test_user_stream", lambda: Stream())


def config(task: str = "image", **train: Any) -> Any:
    raw = {"name": "user", "task": task, "data": {"train": {"name": "test_user_items", **train},
                                                  "valid": {"split": 0.25}, "loader": {"batch_size": 4}},
           "model": {"name": "simple_cnn" if task == "image" else "embedding_bag"}}
    return load_config(None, raw=raw)


@pytest.mark.parametrize(("kind", "channels", "mode"), [("uint8", 1, "L"), ("float", 3, "RGB"), ("pil_gray", 1, "L"),
                                                        ("pil_rgb", 3, "RGB")])
def test_image_datasets_of_any_kind_load_in_batches(kind: str, channels: int, mode: str) -> None:
    data = build_data(config(kind=kind), ("train", "valid"))
    assert data.task == "image" and data.classes == ["even", "odd"] and data.in_channels == channels
    assert len(data.splits["train"]) == 8 and len(data.splits["valid"]) == 4
    loader = make_loader_for(config(kind=kind), data, data.splits["train"], train=True, device=torch.device("cpu"))
    loader.batch_sampler.set_epoch(0)
    batch = next(iter(loader))
    assert batch.inputs[0].shape == (4, channels, 6, 6) and batch.inputs[0].dtype == torch.float32
    assert float(batch.inputs[0].max()) <= 1.0 and data.splits["train"].mode == mode


def test_classes_keep_the_datasets_order_and_the_memory_cache_works() -> None:
    cfg = config(classes=["zebra", "ant"])
    cfg.data.cache, cfg.data.valid = "memory", None
    data = build_data(cfg, ("train",))
    train = data.splits["train"]
    assert data.classes == ["zebra", "ant"] and train.targets == [i % 2 for i in range(12)]
    assert int(train[3][0].max()) == 60 and 3 in train.cache  # the item's own pixels, kept after the first read
    assert torch.equal(train[3][0], train[3][0])


def test_a_text_dataset_builds_a_vocabulary_and_keeps_its_class_order() -> None:
    data = build_data(config("text", kind="text", classes=["pos", "neg"]), ("train", "valid"))
    assert data.task == "text" and data.classes == ["pos", "neg"] and "film" in data.vocab.stoi
    train = data.splits["train"]
    assert train.raw_labels[0] in ("pos", "neg") and [train.classes[t] for t in train.targets] == train.raw_labels


def test_guide_check_and_data_inspect_take_a_users_dataset() -> None:
    findings = run_check(config(kind="pil_rgb"))
    assert findings[0].status == "ok" and "train 8 samples, valid 4" in findings[0].text
    assert not [f for f in findings if f.status == "fail"]
    report = survey_config(config(kind="uint8"))["splits"]["train"]
    assert report["samples"] == 12 and report["sizes"] == {"6x6": 12} and report["modes"] == {"L uint8": 12}
    assert report["classes"] == {"even": 6, "odd": 6} and report["unit"] == "item" and not report["duplicates"]


def test_tensor_labels_are_taken_as_ints() -> None:
    targets = build_data(config(labels="tensor"), ("train",)).splits["train"].targets
    assert sorted(set(targets)) == [0, 1] and {type(t) for t in targets} == {int}


@pytest.mark.parametrize(("train", "message"), [
    ({"classes": None}, "has no `classes` list"),
    ({"classes": ["one"]}, "1 class(es)"),
    ({"classes": ["a", "a"]}, "names class 'a' twice"),
    ({"kind": "ndarray"}, "item 0 is (ndarray, int)"),
    ({"kind": "flat"}, "an image tensor is (C, H, W)"),
    ({"kind": "long"}, "image tensors are uint8 or float"),
    ({"kind": "mixed"}, "item 5 is (str, int) but item 0 is Tensor"),
    ({"labels": "big"}, "item 3 has label 2, outside 0..1"),
    ({"labels": "float"}, "labels must be int class indices"),
    ({"name": "test_user_stream"}, "is not a map-style dataset"),
])
def test_datasets_that_break_the_contract_are_refused_in_one_line(train: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError) as info:
        build_data(config(**train), ("train",))
    text = info.value.lines()[0]
    assert message in text and "dataset 'test_user_" in text and "\n" not in text
