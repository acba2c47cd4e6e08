"""What a resumed run must keep, and how a changed config is named."""

from __future__ import annotations

import pytest

from torchguide.checkpoint import first_difference, must_match

# ---------------------------------------------------------------- what a resumed run must keep
SAVED = {"seed": 1, "model": {"name": "simple_cnn", "width": 32},
         "data": {"train": {"name": "image_folder", "root": "a"}, "loader": {"batch_size": 32, "num_workers": 2}}}


def test_must_match_leaves_out_only_the_data_loader() -> None:
    assert must_match(SAVED, "data") == {"train": {"name": "image_folder", "root": "a"}}
    assert must_match(SAVED, "model") == {"name": "simple_cnn", "width": 32}
    assert must_match(SAVED, "seed") == 1
    assert must_match(SAVED, "loss") is None  # a section the config lacks
    assert must_match({"data": None}, "data") is None
    assert SAVED["data"]["loader"] == {"batch_size": 32, "num_workers": 2}  # the config itself is untouched


def test_must_match_ignores_a_changed_loader_but_not_a_changed_dataset() -> None:
    loader = {**SAVED, "data": {**SAVED["data"], "loader": {"batch_size": 64, "num_workers": 0}}}
    root = {**SAVED, "data": {**SAVED["data"], "train": {"name": "image_folder", "root": "b"}}}
    assert must_match(loader, "data") == must_match(SAVED, "data")
    assert must_match(root, "data") != must_match(SAVED, "data")


@pytest.mark.parametrize(("key", "a", "b", "named"), [
    ("model", {"name": "simple_cnn", "width": 32}, {"name": "simple_cnn", "width": 64}, "model.width (32 -> 64)"),
    ("data", {"train": {"root": "a", "size": 1}}, {"train": {"root": "b", "size": 2}},
     "data.train.root ('a' -> 'b')"),  # the first difference, in the saved config's order
    ("model", {"name": "x"}, {"name": "x", "dropout": 0.5}, "model.dropout (None -> 0.5)"),  # only in the new one
    ("model", {"name": "x", "dropout": 0.5}, {"name": "x"}, "model.dropout (0.5 -> None)"),
    ("model", {"sizes": [1, 2]}, {"sizes": [1, 3]}, "model.sizes"),  # a list is named, not printed
    ("data", {"train": {"root": "a"}}, {"train": None}, "data.train"),  # a section removed
    ("model", "simple_cnn", "resnet18", "model ('simple_cnn' -> 'resnet18')"),
])
def test_first_difference_names_the_dotted_path(key: str, a: object, b: object, named: str) -> None:
    assert first_difference(a, b, key) == named
