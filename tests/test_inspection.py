"""guide inspect-layer: the guide's examples, every catalogue layer, and explained errors."""

from __future__ import annotations

import pytest

from torchguide.errors import ConfigError, GuideError
from torchguide.inspection import inspect_layer, parse_shape
from torchguide.layers import CATALOGUE


def test_guide_conv2d_example() -> None:
    report = inspect_layer("conv2d", {"in_channels": 3, "out_channels": 64, "kernel_size": 3, "stride": 1,
                                      "padding": 1}, (100, 3, 24, 24))
    assert report["outputs"][0]["shape"] == [100, 64, 24, 24]
    assert report["call"] == "nn.Conv2d(in_channels=3, out_channels=64, kernel_size=3, stride=1, padding=1)"
    assert report["trainable"] == 64 * 3 * 3 * 3 + 64
    assert {p["name"]: p["shape"] for p in report["parameters"]} == {"weight": [64, 3, 3, 3], "bias": [64]}
    assert report["flops"] == 2 * 100 * 64 * 24 * 24 * 27
    assert report["doc"].startswith("Applies a 2D convolution")


def test_guide_linear_example() -> None:
    report = inspect_layer("linear", {"in_features": 784, "out_features": 10}, (100, 784))
    assert report["outputs"][0]["shape"] == [100, 10]
    assert report["trainable"] == 7850


def test_lstm_names_all_outputs() -> None:
    report = inspect_layer("LSTM")
    assert [o["name"] for o in report["outputs"]] == ["output", "h_n", "c_n"]
    assert report["outputs"][0]["shape"] == [8, 20, 64]
    assert report["outputs"][1]["shape"] == [1, 8, 64]


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_catalogue_layer_runs_bare(name: str) -> None:
    report = inspect_layer(name)
    assert report["picked"] == list(CATALOGUE[name][0])
    assert report["input"]["shape"] == list(CATALOGUE[name][1])
    assert all(o["shape"] for o in report["outputs"] if o["dtype"])


def test_missing_required_argument_is_filled_and_said() -> None:
    report = inspect_layer("conv2d", {"out_channels": 8})
    assert report["picked"] == ["in_channels", "kernel_size"]
    assert report["outputs"][0]["shape"][1] == 8


def test_wrong_input_shape_is_explained() -> None:
    with pytest.raises(GuideError, match=r"conv2d expects \(N, C=3, H, W\) or \(C=3, H, W\); got 2 dims"):
        inspect_layer("conv2d", {"in_channels": 3, "out_channels": 4, "kernel_size": 3}, (100, 784))
    with pytest.raises(GuideError, match=r"linear expects \(\*, 784\)"):
        inspect_layer("linear", {"in_features": 784, "out_features": 10}, (100, 3, 28, 28))


def test_unknown_layer_and_bad_argument() -> None:
    with pytest.raises(ConfigError, match="did you mean conv2d"):
        inspect_layer("conv2", {})
    with pytest.raises(ConfigError, match="kernal_size: not an argument of conv2d; did you mean 'kernel_size'"):
        inspect_layer("conv2d", {"in_channels": 3, "out_channels": 4, "kernal_size": 3})


def test_parse_shape() -> None:
    assert parse_shape("100,3,24,24") == (100, 3, 24, 24)
    assert parse_shape("[8, 16]") == (8, 16)
    assert parse_shape("100x784") == (100, 784)
    for bad in ("8,-1", "2,x", "x"):
        with pytest.raises(GuideError, match="positive sizes"):
            parse_shape(bad)
