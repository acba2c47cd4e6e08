"""Image models: the guide's networks, a small CNN, and torchvision's architectures.

Every builder takes `num_classes` (the number of outputs, 1 for a binary loss), and
the image facts it needs (`in_channels`, `in_features` = C*H*W of one image); guide
fills those from the data. The guide's networks are fully connected: they flatten the
image first, explicitly, with `nn.Flatten`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from torchguide.errors import ConfigError
from torchguide.layers import CustomLinear
from torchguide.registry import MODELS

log = logging.getLogger("torchguide")


@MODELS.register("my_neural_net", task="image")
class MyNeuralNet(nn.Module):
    """The guide's first network: flatten, Linear(in_features, 30), ReLU, Linear(30, classes)."""

    def __init__(self, num_classes: int, in_features: int, hidden: int = 30) -> None:
        super().__init__()
        self.flatten = nn.Flatten()  # (N, C, H, W) -> (N, C*H*W): the guide fed 784 pixels
        self.lin1 = nn.Linear(in_features, hidden)
        self.lin2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(self.flatten(x))))


@MODELS.register("my_crazy_neural_net", task="image")
class MyCrazyNeuralNet(nn.Module):
    """The guide's 'crazy' network: a skip connection back to the input and a reused layer.

    lin1 maps the image to `hidden`, lin2 maps back to the input size and is added to the
    input (the skip), lin1 is applied a second time (shared weights), lin3 classifies.
    """

    def __init__(self, num_classes: int, in_features: int, hidden: int = 30) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.lin1 = nn.Linear(in_features, hidden)
        self.lin2 = nn.Linear(hidden, in_features)
        self.lin3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        h = F.relu(self.lin1(x))
        x = x + F.relu(self.lin2(h))  # skip connection: the input plus what lin2 adds
        h = F.relu(self.lin1(x))  # lin1 again, with the same weights
        return self.lin3(h)


@MODELS.register("my_custom_neural_net", task="image")
class MyCustomNeuralNet(nn.Module):
    """The guide's network built on its own linear layer (`custom_linear`, nn.Parameter weights)."""

    def __init__(self, num_classes: int, in_features: int, hidden: int = 30) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.lin1 = CustomLinear(in_features, hidden)
        self.lin2 = CustomLinear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(self.flatten(x))))


@MODELS.register("my_classification_net", task="image")
class MyClassificationNet(nn.Module):
    """The guide's network for NLLLoss: Linear layers then LogSoftmax, so it outputs log-probabilities."""

    def __init__(self, num_classes: int, in_features: int, hidden: int | None = 30) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        else:
            layers += [nn.Linear(in_features, num_classes)]
        self.net = nn.Sequential(*layers, nn.LogSoftmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


@MODELS.register("simple_cnn", task="image")
class SimpleCNN(nn.Module):
    """A small CNN for small images: three conv blocks, pooling between, global average pool.

    Works for any image size of at least 4x4 (8x8 digits, 28x28, 32x32, ...).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, width), conv_block(width, width), nn.MaxPool2d(2),
            conv_block(width, 2 * width), nn.MaxPool2d(2),
            conv_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def torchvision_builder(arch: str):
    def build(num_classes: int, in_channels: int = 3, weights: str | None = None, **kwargs: object) -> nn.Module:
        import torchvision

        if in_channels != 3:
            raise ConfigError(f"model.name: {arch} takes 3-channel images, the data has {in_channels}",
                              "add `mode: RGB` to the dataset section")
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        if weights:
            load_weights(model, weights)
        return model

    build.__doc__ = f"torchvision's {arch}, random init or weights from a local file (nothing is downloaded)."
    return build


def load_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict, skipping tensors whose shape differs (a new classifier head)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"model.weights: {path} does not exist") from None
    except Exception as exc:
        raise ConfigError(f"model.weights: {path} is not a loadable state dict ({type(exc).__name__})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    model.load_state_dict(fitting, strict=False)
    if skipped:
        log.warning("weights %s: %d tensor(s) not loaded (new shape or missing), e.g. %s",
                    path, len(skipped), skipped[0])


def register_torchvision() -> None:
    import torchvision

    for arch in torchvision.models.list_models(module=torchvision.models):
        MODELS.register(arch, torchvision_builder(arch), task="image", source="torchvision")


register_torchvision()
