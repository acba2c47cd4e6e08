"""Parameter groups with every optimizer and scheduler, and in lr-find."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_every_entry import OPTIMIZER_KWARGS
from torchguide.config import OptimizerSection
from torchguide.optim import build_optimizer, build_scheduler, make_optimizer
from torchguide.registry import OPTIMIZERS


def steps(optimizer_name: str, params) -> torch.optim.Optimizer:
    """An optimizer over a small linear layer after one step."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = build_optimizer(optimizer_name, params(model), lr=0.01, **OPTIMIZER_KWARGS.get(optimizer_name, {}))
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    return opt


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_groups_work_with_every_optimizer(name: str) -> None:
    opt = steps(name, lambda m: [{"params": [m.weight]}, {"params": [m.bias], "lr": 0.5}])
    assert opt.param_groups[1]["lr"] == 0.5  # some optimizers have no lr of their own


def two_groups(lr: float = 1e-3) -> torch.optim.Optimizer:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    spec = OptimizerSection.model_validate({"name": "adamw", "lr": lr, "groups": [{"params": "1.*", "lr": 10 * lr}]})
    return make_optimizer(model, spec)


@pytest.mark.parametrize("name, kwargs", [("one_cycle", {}), ("cosine", {}), ("linear_warmup", {"warmup_steps": 3}),
                                          ("step", {"step_size": 2})])
def test_every_group_is_scheduled_from_its_own_lr(name: str, kwargs: dict) -> None:
    opt = two_groups()
    sched = build_scheduler(name, opt, total_steps=10, epochs=10, **kwargs)
    seen = []
    for _ in range(8):
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs[1] == pytest.approx(10 * lrs[0])
        seen.append(lrs[1])
        opt.step()
        sched.step()
    assert max(seen) <= 1e-2 * (1 + 1e-9) and len(set(seen)) > 1


def test_resume_restores_every_group() -> None:
    opt = two_groups()
    sched = build_scheduler("one_cycle", opt, total_steps=10, epochs=1)
    for _ in range(3):
        opt.step()
        sched.step()
    again = two_groups()
    again_sched = build_scheduler("one_cycle", again, total_steps=10, epochs=1)
    again.load_state_dict(opt.state_dict())
    again_sched.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in opt.param_groups]


def test_lr_find_keeps_each_groups_ratio(digits_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_train import digits_config
    from torchguide import lr_find as module

    built = []
    monkeypatch.setattr(module, "make_optimizer", lambda model, spec: built.append(make_optimizer(model, spec))
                        or built[-1])
    config = digits_config(digits_dir, digits_dir, "model.name=simple_cnn", "optimizer.lr=1e-3",
                           "optimizer.groups=[{params: head.*, lr: 1.0e-2}]")
    result = module.lr_find(config, steps=10)
    lrs = [g["lr"] for g in built[0].param_groups]
    assert lrs[0] == pytest.approx(result["lrs"][-1]) and lrs[1] == pytest.approx(10 * lrs[0])
