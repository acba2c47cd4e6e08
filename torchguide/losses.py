"""Losses: every torch loss by snake_case name, plus the guide's custom ones.

Each loss is registered with what it wants from the model and the data:

- `output`: what the model's output must be: `logits`, `log_probs` (a LogSoftmax
  last), `probs` (a Softmax/Sigmoid last) or `scores` (any real values).
- `target`: how class labels are encoded for it: `index` (int64 class indices),
  `onehot` (float rows), `binary` (one float per sample, with one model output when
  there are two classes), or None for losses that do not train a classifier.
- `soft_targets`: True when the loss also takes class probabilities (N, C) as the target,
  which MixUp and CutMix make (`data.batch_transforms`); a loss without it is refused
  with them at validation.
"""

from __future__ import annotations

import torch
from torch import nn

from torchguide.layers import snake_case
from torchguide.registry import LOSSES

# output kind and target encoding of torch's classification-capable losses
TORCH_LOSSES = {
    "CrossEntropyLoss": ("logits", "index"),
    "NLLLoss": ("log_probs", "index"),
    "MultiMarginLoss": ("scores", "index"),
    "KLDivLoss": ("log_probs", "onehot"),
    "MSELoss": ("scores", "onehot"),
    "L1Loss": ("scores", "onehot"),
    "SmoothL1Loss": ("scores", "onehot"),
    "HuberLoss": ("scores", "onehot"),
    "BCEWithLogitsLoss": ("logits", "binary"),
    "BCELoss": ("probs", "binary"),
    "SoftMarginLoss": ("scores", "binary_signed"),
    "MultiLabelSoftMarginLoss": ("logits", "onehot"),
}
# the losses that take class probabilities where they take class indices
SOFT_TARGETS = {"CrossEntropyLoss"}


def register_torch_losses() -> None:
    """Register every loss class in `torch.nn` as `cross_entropy`, `nll`, `kl_div`, ..."""
    for cls_name in sorted(dir(nn)):
        cls = getattr(nn, cls_name)
        if isinstance(cls, type) and issubclass(cls, nn.modules.loss._Loss) and cls_name.endswith("Loss"):
            output, target = TORCH_LOSSES.get(cls_name, (None, None))
            LOSSES.register(snake_case(cls_name[: -len("Loss")]), cls, aliases=[cls_name],
                            output=output, target=target, soft_targets=cls_name in SOFT_TARGETS)


register_torch_losses()


@LOSSES.register("custom_mse", aliases=["customMseLoss"], output="scores", target="onehot")
class CustomMSELoss(nn.Module):
    """The guide's hand-written mean squared error: mean((output - target)^2)."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((output - target) ** 2)


@LOSSES.register("custom_nll", aliases=["CustomNLLLoss"], output="log_probs", target="index")
class CustomNLLLoss(nn.Module):
    """The guide's hand-written NLL: picks -log p(target) from LogSoftmax output with `gather`."""

    def forward(self, log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        picked = log_probs.gather(1, target.unsqueeze(1))  # (N, 1): log p of the true class
        return -picked.mean()


TENSOR_ARGS = ("weight", "pos_weight")


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Build loss `name`; list values of `weight`/`pos_weight` become float tensors.

    kl_div defaults to `reduction: batchmean`, the one that matches the KL definition
    (torch's default 'mean' also divides by the number of classes).
    """
    if LOSSES.entry(name).name == "kl_div":
        kwargs.setdefault("reduction", "batchmean")
    for key in TENSOR_ARGS:
        if isinstance(kwargs.get(key), list):
            kwargs[key] = torch.tensor(kwargs[key], dtype=torch.float32)
    loss = LOSSES.get(name)
    if not isinstance(loss, type):  # a loss written as a function of (output, target)
        return FunctionLoss(loss, kwargs)
    return LOSSES.build(name, **kwargs)


class FunctionLoss(nn.Module):
    """A loss function `f(output, target, **kwargs)` as a module."""

    def __init__(self, fn: object, kwargs: dict[str, object]) -> None:
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(output, target, **self.kwargs)


def loss_meta(name: str) -> tuple[str | None, str | None]:
    """(output kind, target encoding) of loss `name`."""
    meta = LOSSES.entry(name).meta
    return meta.get("output"), meta.get("target")


def takes_soft_targets(name: str) -> bool:
    """Whether loss `name` is registered as taking class probabilities (MixUp / CutMix targets)."""
    return bool(LOSSES.entry(name).meta.get("soft_targets"))
