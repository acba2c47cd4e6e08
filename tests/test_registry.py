"""Every entry of every registry is described; the buildable ones build."""

from __future__ import annotations

import ast

import pytest
from torch import nn

from torchguide.errors import ConfigError
from torchguide.layers import CATALOGUE
from torchguide.registry import LAYERS, LOSSES, MODELS, OPTIMIZERS, REGISTRIES, SCHEDULERS, Registry

SHIPPED = ("torch", "torchvision", "torchguide", "pytorch_optimizer")  # not components other tests register


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_entry_is_described_with_its_real_signature(kind: str) -> None:
    registry = REGISTRIES[kind]
    shipped = [name for name in registry.names()
               if getattr(registry.entry(name).obj, "__module__", "").split(".")[0] in SHIPPED]
    assert shipped, kind
    described = {name: registry.describe(name) for name in shipped}
    assert [n for n, info in described.items() if info["signature"] == "(...)"] == []  # the fallback, not a signature
    assert [n for n, info in described.items() if not info["summary"]] == []


def described(registry: Registry, name: str) -> ast.arguments:
    """The parameters of an entry as `guide list` describes them, parsed back as Python."""
    return ast.parse(f"def f{registry.describe(name)['signature']}: pass").body[0].args


def test_a_models_description_gives_its_parameters_and_defaults() -> None:
    params = described(MODELS, "simple_cnn")
    assert [a.arg for a in params.args] == ["num_classes", "in_channels", "width", "dropout"]
    assert [ast.literal_eval(d) for d in params.defaults] == [3, 32, 0.1]  # the last three: num_classes has none
    assert not params.kwonlyargs
    assert MODELS.describe("simple_cnn")["summary"].startswith("A small CNN")


def test_a_keyword_only_builder_is_described_as_such() -> None:
    # torchvision models are built by keyword only: guide passes num_classes and in_channels by name
    params = described(MODELS, "resnet18")
    assert params.args == [] and [a.arg for a in params.kwonlyargs][:3] == ["num_classes", "in_channels", "weights"]
    assert params.kw_defaults[0] is None  # num_classes: required
    assert [ast.literal_eval(d) for d in params.kw_defaults[1:3]] == [3, None]
    params = described(LOSSES, "gaussian_nll")
    assert params.args == [] and params.kwonlyargs[0].arg == "full" and ast.literal_eval(params.kw_defaults[0]) is False
    params = described(OPTIMIZERS, "sgd")  # positional parameters first, then keyword-only ones
    assert [a.arg for a in params.args][:3] == ["params", "lr", "momentum"] and "maximize" in [
        a.arg for a in params.kwonlyargs]


def test_torch_is_enumerated_not_hand_listed() -> None:
    for name in ("adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad", "asgd", "nadam", "radam"):
        assert name in OPTIMIZERS
    for name in ("cross_entropy", "nll", "kl_div", "mse", "bce_with_logits", "huber", "ctc"):
        assert name in LOSSES
    for name in ("conv2d", "lstm", "max_pool2d", "maxpool2d", "MaxPool2d", "multiheadattention",
                 "transformer_encoder_layer", "batchnorm2d"):
        assert name in LAYERS
    assert len(LAYERS.names()) > 100
    assert OPTIMIZERS.entry("lion").meta["source"] == "pytorch-optimizer"
    assert "step" in SCHEDULERS and "cosine" in SCHEDULERS and "onecycle" in SCHEDULERS
    assert "plateau" in SCHEDULERS


def test_ambiguous_normalized_names_stay_exact() -> None:
    # regnet_x_1_6gf and regnet_x_16gf normalize alike: both stay reachable by exact name
    assert MODELS.entry("regnet_x_1_6gf").name == "regnet_x_1_6gf"
    assert MODELS.entry("regnet_x_16gf").name == "regnet_x_16gf"


def test_unknown_name_says_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"did you mean adam"):
        OPTIMIZERS.entry("adamm")


def test_duplicates_are_refused() -> None:
    reg = Registry("things")
    reg.register("a", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("A", lambda: 2)


def test_check_kwargs_reports_unknown_missing_and_supplied() -> None:
    problems = MODELS.check_kwargs("simple_cnn", {"widht": 3, "num_classes": 3}, {"num_classes", "in_channels"})
    assert any("widht" in p and "did you mean 'width'" in p for p in problems)
    assert any(p.startswith("num_classes: set by guide") for p in problems)
    problems = LAYERS.check_kwargs("conv2d", {"in_channels": 3})
    assert any(p.startswith("out_channels: required") for p in problems)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_layers_build(name: str) -> None:
    kwargs, _ = CATALOGUE[name]
    assert isinstance(LAYERS.build(name, **kwargs), nn.Module)


def test_left_out_entries_say_why() -> None:
    with pytest.raises(ConfigError, match="optimizer 'lbfgs' is not available in guide: it needs a closure"):
        OPTIMIZERS.entry("lbfgs")
    with pytest.raises(ConfigError, match="takes a Python function"):
        SCHEDULERS.entry("lambda_lr")
