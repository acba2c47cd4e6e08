"""`guide check`'s helpers: the loss to expect at initialisation, and what kind of outputs a model gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchguide.check import initial_loss, observed_kind

BINARY = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


# the loss a classifier gets from uniform predictions, computed by torch's own losses
@pytest.mark.parametrize(("name", "outputs", "uniform"), [
    ("cross_entropy", 10, float(nn.CrossEntropyLoss()(torch.zeros(4, 10), torch.tensor([0, 3, 7, 9])))),
    ("nll", 3, float(nn.NLLLoss()(torch.zeros(4, 3).log_softmax(1), torch.tensor([0, 1, 2, 2])))),
    ("custom_nll", 5, float(nn.NLLLoss()(torch.zeros(2, 5).log_softmax(1), torch.tensor([4, 0])))),
    ("bce_with_logits", 1, float(nn.BCEWithLogitsLoss()(torch.zeros(4, 1), BINARY))),
    ("bce", 1, float(nn.BCELoss()(torch.full((4, 1), 0.5), BINARY))),
    ("bce_with_logits", 4, float(nn.BCEWithLogitsLoss()(torch.zeros(2, 4), torch.eye(4)[[1, 2]]))),  # one-hot
])
def test_initial_loss_is_the_loss_of_uniform_predictions(name: str, outputs: int, uniform: float) -> None:
    assert initial_loss(name, outputs) == pytest.approx(uniform, rel=1e-6)


@pytest.mark.parametrize("name", ["mse", "l1", "huber", "kl_div", "soft_margin"])
def test_losses_without_a_known_start_expect_nothing(name: str) -> None:
    assert initial_loss(name, 3) is None


SCORES = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0]])


@pytest.mark.parametrize(("output", "kind"), [
    (SCORES.log_softmax(1), "log_probs"),
    (SCORES.softmax(1), "probs"),
    (SCORES, "logits"),
    (torch.tensor([[0.2, 0.2, 0.2]]), "logits"),  # in [0, 1] but rows do not sum to one
    (torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), "probs"),  # one-hot rows are probabilities
    (torch.tensor([[-0.5, -0.9]]), "logits"),  # all below zero, but their exp() sum to 1.013, not 1
    (torch.tensor([[0.3], [0.9]]), "probs"),  # one column: a sigmoid's output
    (torch.tensor([[0.3], [1.7]]), "logits"),
    (torch.tensor([0.0, 1.0, 0.5]), "probs"),  # one dimension
    (torch.tensor([-0.1, 0.5]), "logits"),
])
def test_observed_kind(output: torch.Tensor, kind: str) -> None:
    assert observed_kind(output) == kind
