"""Every entry of every registry is described; the buildable ones build."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchguide.errors import ConfigError
from torchguide.layers import CATALOGUE
from torchguide.losses import build_loss
from torchguide.optim import build_optimizer, build_scheduler
from torchguide.registry import LAYERS, LOSSES, MODELS, OPTIMIZERS, REGISTRIES, SCHEDULERS, Registry


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_entry_is_described(kind: str) -> None:
    registry = REGISTRIES[kind]
    assert registry.names(), kind
    for name in registry.names():
        info = registry.describe(name)
        assert info["name"] == name
        assert info["signature"].startswith("(")


def test_torch_is_enumerated_not_hand_listed() -> None:
    for name in ("adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad", "lbfgs"):
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


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if LOSSES.entry(n).meta.get("target")])
def test_classification_losses_build_and_run(name: str) -> None:
    from torchguide.data.collate import encode_targets
    from torchguide.metrics import to_probs

    loss = build_loss(name)
    output_kind, target = LOSSES.entry(name).meta["output"], LOSSES.entry(name).meta["target"]
    labels = torch.tensor([0, 1, 1, 0])
    classes = 2 if target.startswith("binary") else 3
    raw = torch.randn(4, 1 if target.startswith("binary") else classes, requires_grad=True)
    out = {"log_probs": raw.log_softmax(1) if classes > 1 else raw, "probs": torch.sigmoid(raw)
           if target.startswith("binary") else raw.softmax(1)}.get(output_kind, raw)
    value = loss(out, encode_targets(labels, target, classes))
    value.backward()
    assert torch.isfinite(value) and raw.grad is not None
    assert to_probs(out.detach(), output_kind).shape == (4, 2 if target.startswith("binary") else classes)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_is_described_or_steps(name: str) -> None:
    entry = OPTIMIZERS.entry(name)
    if entry.meta.get("source") != "torch.optim" or name in ("sparseadam", "lbfgs", "muon"):
        assert OPTIMIZERS.describe(name)["signature"]
        return
    model = nn.Linear(4, 2)
    opt = build_optimizer(name, model.parameters(), lr=0.01)
    before = model.weight.detach().clone()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("name", ["step", "cosine", "one_cycle", "plateau", "linear_warmup", "none",
                                  "exponential", "multi_step"])
def test_schedulers_build_with_filled_arguments(name: str) -> None:
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    kwargs = {"step": {"step_size": 2}, "exponential": {"gamma": 0.9}, "multi_step": {"milestones": [1]},
              "linear_warmup": {"warmup_steps": 2}}.get(name, {})
    sched = build_scheduler(name, opt, total_steps=10, epochs=2, **kwargs)
    assert sched is None if name == "none" else hasattr(sched, "step")
