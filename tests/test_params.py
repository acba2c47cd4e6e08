"""Parameters chosen by name: freezing (BatchNorm included) and the optimizer's parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from torchguide.config import ParamGroup
from torchguide.errors import ConfigError
from torchguide.params import freeze, param_groups


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def test_freeze_by_pattern_and_a_frozen_batchnorm_keeps_its_statistics() -> None:
    model = small_net()
    model[1].running_mean.fill_(0.5)
    freeze(model, ["0.*", "1.*"])
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["5.weight", "5.bias"]
    assert isinstance(model[1], FrozenBatchNorm2d)  # normalises with its stored statistics, in training too
    model.train()
    model(torch.randn(8, 3, 6, 6)).sum().backward()
    assert torch.equal(model[1].running_mean, torch.full((4,), 0.5))
    assert model[0].weight.grad is None and model[5].weight.grad is not None


def test_freeze_takes_one_pattern_and_leaves_a_half_frozen_batchnorm_alone() -> None:
    model = small_net()
    freeze(model, ["1.weight"])
    assert isinstance(model[1], nn.BatchNorm2d) and not model[1].weight.requires_grad


def test_a_freeze_pattern_matching_nothing_names_it_and_real_names() -> None:
    with pytest.raises(ConfigError) as info:
        freeze(small_net(), ["layer1.*", "0.*"])
    assert info.value.problems == ["model.freeze: 'layer1.*' matches no parameter; the names are "
                                   "0.weight, 0.bias, 1.weight, 1.bias, 5.weight, 5.bias"]


def test_groups_take_their_parameters_with_their_options_the_rest_come_first() -> None:
    model = small_net()
    groups = param_groups(model, [ParamGroup(params="5.*", lr=0.1, betas=[0.8, 0.9])])
    assert [len(g["params"]) for g in groups] == [4, 2]
    assert groups[0].keys() == {"params"} and groups[1]["lr"] == 0.1 and groups[1]["betas"] == (0.8, 0.9)
    assert groups[1]["params"][0] is model[5].weight


def test_no_decay_norm_bias_splits_off_the_1d_parameters() -> None:
    model = small_net()
    groups = param_groups(model, [ParamGroup(params=["5.*"], lr=0.1)], no_decay_norm_bias=True)
    shapes = [[tuple(p.shape) for p in g["params"]] for g in groups]
    assert shapes == [[(4, 3, 3, 3)], [(4,), (4,), (4,)], [(2, 4)], [(2,)]]
    assert [g.get("weight_decay") for g in groups] == [None, 0.0, None, 0.0]
    assert [g.get("lr") for g in groups] == [None, None, 0.1, 0.1]


def test_frozen_parameters_are_left_out() -> None:
    model = small_net()
    freeze(model, ["0.*"])
    assert sum(len(g["params"]) for g in param_groups(model, [])) == 4
    with pytest.raises(ConfigError, match="'0.weight' matches only frozen parameters"):
        param_groups(model, [ParamGroup(params="0.weight", lr=1.0)])
    freeze(model, ["*"])
    with pytest.raises(ConfigError, match="every parameter is frozen"):
        param_groups(model, [])


def test_group_problems_are_reported_together_with_their_keys() -> None:
    groups = [ParamGroup(params="5.*", lr=0.1), ParamGroup(params=["*.bias", "head.*"], lr=0.2)]
    with pytest.raises(ConfigError) as info:
        param_groups(small_net(), groups)
    assert info.value.problems == [
        "optimizer.groups.1.params: '*.bias' takes 5.bias, already in optimizer.groups.0; "
        "a parameter belongs to one group",
        "optimizer.groups.1.params: 'head.*' matches no parameter; the trainable names are "
        "0.weight, 0.bias, 1.weight, 1.bias, 5.weight, 5.bias",
    ]
