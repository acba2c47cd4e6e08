"""Image models: the guide's networks, a small CNN, and torchvision's architectures.

Every builder takes `num_classes` (the number of outputs, 1 for a binary loss), and
the image facts it needs (`in_channels`, `in_features` = C*H*W of one image); guide
fills those from the data. The guide's networks are fully connected: they flatten the
image first, explicitly, with `nn.Flatten`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from torchguide.errors import ConfigError
from torchguide.layers import CustomLinear
from torchguide.registry import MODELS, one_line

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


# Arguments of torchvision classes whose default does not suit a classifier trained by guide: auxiliary
# heads make the model return a tuple in train mode; `init_weights=None` warns and then means True.
TORCHVISION_DEFAULTS = {"aux_logits": False, "init_weights": True}
SIZE_ARGUMENTS = ("image_size", "input_size")  # how torchvision classes that need the image size name it


def torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    """A builder for torchvision architecture `arch` whose signature is the arguments it really takes.

    torchvision's own builders take `**kwargs` and forward them to the model class; this one
    names the runtime facts it uses (`num_classes`, `in_channels`, and `image_size` for the
    classes that need it, e.g. ViT and MaxViT) and the class's own options that YAML can
    express, so config validation checks names and types before anything is built.
    """
    import torchvision

    cls = inspect.signature(torchvision.models.get_model_builder(arch)).return_annotation
    options = class_options(cls)
    size_argument = next((a for a in SIZE_ARGUMENTS if a in inspect.signature(cls.__init__).parameters), None)

    def build(num_classes: int, in_channels: int = 3, weights: str | None = None, image_size: Any = None,
              **kwargs: Any) -> nn.Module:
        if in_channels != 3:
            raise ConfigError(f"model.name: {arch} takes 3-channel images, the data has {in_channels}",
                              "add `mode: RGB` to the dataset sections")
        if size_argument:
            kwargs[size_argument] = torchvision_image_size(arch, size_argument, image_size)
        kwargs = {**{k: v for k, v in TORCHVISION_DEFAULTS.items() if k in options}, **kwargs}
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        if weights:
            load_weights(model, weights, arch)
        return model

    params = [inspect.Parameter("num_classes", KEYWORD, annotation=int),
              inspect.Parameter("in_channels", KEYWORD, default=3, annotation=int),
              inspect.Parameter("weights", KEYWORD, default=None, annotation=str | None)]
    if size_argument:
        params.append(inspect.Parameter("image_size", KEYWORD, default=224, annotation=int | tuple[int, int]))
    params += [p.replace(kind=KEYWORD, default=TORCHVISION_DEFAULTS.get(n, p.default)) for n, p in options.items()]
    build.__signature__ = inspect.Signature(params)
    build.__doc__ = (f"torchvision's {arch}: random init, or `weights` by torchvision name (DEFAULT, "
                     "IMAGENET1K_V1, ...) or from a local file.")
    return build


KEYWORD = inspect.Parameter.KEYWORD_ONLY


def class_options(cls: type) -> dict[str, inspect.Parameter]:
    """The optional arguments of a torchvision model class that a config can give (no callables, no layers)."""
    from torchguide.annotations import SKIP, annotations_of, yaml_type

    hints = annotations_of(cls)
    skip = {"self", "num_classes", *SIZE_ARGUMENTS}
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
            if n not in skip and p.default is not inspect.Parameter.empty
            and n in hints and yaml_type(hints[n]) is not SKIP}


def torchvision_image_size(arch: str, argument: str, size: Any) -> Any:
    """The image size in the form the class takes: ViT an int (square images), MaxViT a pair."""
    if argument == "input_size":
        return tuple(size) if isinstance(size, list | tuple) else (size, size)
    if isinstance(size, list | tuple):
        if size[0] != size[1]:
            raise ConfigError(f"model.name: {arch} needs square images, the data's are {size[0]}x{size[1]}",
                              "add `{name: resize, size: [S, S]}` to data.transforms")
        size = size[0]
    return size


def load_weights(model: nn.Module, weights: str, arch: str) -> None:
    """Load `weights` into torchvision's `arch`: a torchvision weights name of that architecture
    (`DEFAULT`, `IMAGENET1K_V1`, `ResNet18_Weights.IMAGENET1K_V1`) or a local state dict file.

    Tensors whose shape differs (a classifier head for another number of classes) keep
    their fresh initialisation, with a warning saying which.

    Raises:
        ConfigError: neither a known name nor a file; weights not in torch's cache and not
            downloadable; a file that is not a state dict or fits no tensor of the model.
    """
    found = find_weights(arch, weights)
    state = pretrained_state(arch, found) if found is not None else read_state(weights)
    load_matching(model, state, str(found or weights))


def weight_names(arch: str) -> dict[str, Any]:
    """torchvision's weights of `arch` by every name they answer to: `DEFAULT`, `IMAGENET1K_V1`,
    `ResNet18_Weights.IMAGENET1K_V1`; empty when torchvision has none."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return {}
    names = {name: member for name, member in enum.__members__.items()}
    return {**names, **{f"{enum.__name__}.{name}": member for name, member in names.items()}}


def find_weights(arch: str, weights: str) -> Any:
    """The torchvision weights `weights` names for `arch`, or None (then it is a file)."""
    names = weight_names(arch)
    return names.get(weights, names.get(weights.upper()))


WEIGHT_FILES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar"}


def weights_problems(arch: str, kwargs: dict[str, Any]) -> list[str]:
    """Validation of `model.weights`: a file that exists or a weights name of `arch`."""
    weights = kwargs.get("weights")
    if weights is None or weights == "":
        return []
    if not isinstance(weights, str):
        return [f"weights: give a weights name (DEFAULT, ...) or a file path, got {weights!r}"]
    if find_weights(arch, weights) is not None or Path(weights).is_file():
        return []
    names = sorted((name for name in weight_names(arch) if "." not in name), key=lambda n: n != "DEFAULT")
    if "/" in weights or "\\" in weights or Path(weights).suffix in WEIGHT_FILES:
        return [f"weights: file {weights} does not exist"]
    return [f"weights: {weights!r} is neither a file nor a weights name of {arch}; "
            + (f"choose {', '.join(names)}" if names else "torchvision has no weights for it")]


def pretrained_state(arch: str, weights: Any) -> dict[str, torch.Tensor]:
    """torchvision's pretrained `weights` of `arch`, from torch.hub's cache (downloaded there first if
    missing), loaded through torchvision's own builder and its fixes for older checkpoints."""
    import torchvision

    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not file.exists():
        download_weights(weights, file)
    try:
        return torchvision.models.get_model(arch, weights=weights, progress=False).state_dict()
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"model.weights: {weights} in {file} does not load ({one_line(exc)})",
                          "delete the file to download it again") from exc


def download_weights(weights: Any, file: Path) -> None:
    """Download `weights` into torch.hub's cache, as torchvision does (hash checked); offline, a
    ConfigError naming the file, the folder to put it in and where to get it."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torch.hub announces downloads on stdout
            weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError, timeouts, a hash mismatch
        raise ConfigError(f"model.weights: {weights} is not in torch's cache and could not be downloaded "
                          f"({one_line(exc)})", f"put {file.name} (from {weights.url}) in {file.parent}") from exc


def read_state(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file (a guide checkpoint's `model` entry too)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"model.weights: {path} does not exist") from exc
    except Exception as exc:
        raise ConfigError(f"model.weights: {path} is not a loadable state dict ({type(exc).__name__})") from exc
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the tensors of `state` whose name and shape fit the model; say which keep their init."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ConfigError(f"model.weights: no tensor of {source} fits this model (names or shapes differ)")
    model.load_state_dict(fitting, strict=False)
    reshaped = [k for k in own if k in state and k not in fitting]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if reshaped:
        log.warning("%s: %s initialised afresh, shape %s here, %s in the weights (a new classifier head); "
                    "the other %d tensors loaded", source, ", ".join(reshaped), tuple(own[reshaped[0]].shape),
                    tuple(state[reshaped[0]].shape), len(fitting))
    if missing:
        log.warning("%s: %d tensor(s) of the model are not in the weights and keep their init, e.g. %s",
                    source, len(missing), missing[0])


def register_torchvision() -> None:
    import torchvision

    for arch in torchvision.models.list_models(module=torchvision.models):
        MODELS.register(arch, torchvision_builder(arch), task="image", source="torchvision",
                        min_size=torchvision_min_size(arch), check=functools.partial(weights_problems, arch))


def torchvision_min_size(arch: str) -> int:
    """The smallest image side `arch` is known to take (from its pretrained weights' metadata), else 1."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return 1
    return min((min(w.meta.get("min_size", (1, 1))) for w in weights), default=1)


register_torchvision()
