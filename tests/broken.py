"""Deliberately broken components, each a mistake the guide warns about (`imports: [tests/broken.py]`)."""

from __future__ import annotations

import torch
from torch import nn

from torchguide.data.collate import Batch
from torchguide.registry import COLLATES, MODELS


def mlp(in_features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, num_classes))


@MODELS.register("broken_softmax_net", task="image")
def softmax_net(num_classes: int, in_features: int) -> nn.Module:
    """Ends with Softmax: probabilities, wrong for cross entropy, NLL and KL divergence."""
    return nn.Sequential(mlp(in_features, num_classes), nn.Softmax(dim=1))


@MODELS.register("broken_scaled_net", task="image")
def scaled_net(num_classes: int, in_features: int) -> nn.Module:
    """Outputs a hundred times too large: a confident, wrong start."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp(in_features, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 100 * self.body(x)

    return Scaled()


@MODELS.register("broken_unused_layer_net", task="image")
def unused_layer_net(num_classes: int, in_features: int) -> nn.Module:
    """Has a layer that forward() never calls."""

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp(in_features, num_classes)
            self.extra = nn.Linear(num_classes, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    return Unused()


@MODELS.register("broken_flatless_net", task="image")
def flatless_net(num_classes: int) -> nn.Module:
    """The guide's first network without its flatten, written for 28x28 images."""

    class Flatless(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin1 = nn.Linear(784, 30)
            self.lin2 = nn.Linear(30, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin2(torch.relu(self.lin1(x)))

    return Flatless()


def collate_with(labels_to_target) -> object:
    def collate(samples: list) -> Batch:
        labels = torch.tensor([y for _, y in samples])
        return Batch((torch.stack([x for x, _ in samples]),), labels_to_target(labels), labels)

    return collate


@COLLATES.register("broken_index_labels")
def index_labels() -> object:
    """Class indices whatever the loss wants (wrong for MSE)."""
    return collate_with(lambda labels: labels)


@COLLATES.register("broken_float_labels")
def float_labels() -> object:
    """Labels as floats (wrong for cross entropy)."""
    return collate_with(lambda labels: labels.float())


@COLLATES.register("broken_shifted_labels")
def shifted_labels() -> object:
    """Labels off by five (out of range for ten classes)."""
    return collate_with(lambda labels: labels + 5)
