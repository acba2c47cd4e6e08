"""Two samples through model and loss before the first step, so a mismatch is a ConfigError in the
user's terms rather than a failure deep inside torch (or a CUDA device-side assert).

The same pass counts the model's FLOPs, from which the run reports its throughput.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from torchguide.config import Config
from torchguide.data.collate import Batch
from torchguide.device import autocast, inference
from torchguide.errors import ConfigError
from torchguide.registry import MODELS, one_line


def preflight(config: Config, model: nn.Module, loss_fn: nn.Module, loader: DataLoader, device: torch.device,
              precision: str, target: str, num_classes: int) -> float:
    """Check the model's output and the loss on a batch of two training samples; returns the training
    FLOPs per sample (per token for text), forward and backward.

    Leaves no trace: the RNG is restored and the model runs in eval mode without gradients.

    Raises:
        ConfigError: the model fails on the batch, its output does not fit the loss, or the loss fails.
    """
    dataset = loader.dataset
    with torch.random.fork_rng(devices=[]), inference(model):
        batch = loader.collate_fn([dataset[i] for i in range(min(2, len(dataset)))]).to(device)  # not sharded
        try:
            with autocast(device, precision), count_layer_flops(model) as flops:
                output = model(*batch.inputs)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            shapes = " and ".join(str(tuple(t.shape)) for t in batch.inputs)
            raise ConfigError(f"model.name: {config.model.name} fails on a batch of this data (inputs {shapes}): "
                              f"{one_line(exc)}", size_hint(config.model.name, batch.inputs[0])) from exc
        problem = output_problem(config, target, num_classes, output, batch)
        if problem:
            raise ConfigError(problem)
        try:
            loss_fn(output, batch.target)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"loss.name: {config.loss.name} cannot compare the model's output "
                              f"{tuple(output.shape)} with targets {tuple(batch.target.shape)} "
                              f"{str(batch.target.dtype).removeprefix('torch.')}: {one_line(exc)}") from exc
    tokens = int(batch.lengths.sum()) if batch.lengths is not None else 0
    forward = flops[0] + recurrent_flops(model) * tokens
    return 3 * forward / max(tokens or batch.labels.shape[0], 1)  # forward + backward ~ 3 forwards


def output_problem(config: Config, target: str, classes: int, output: Any, batch: Batch) -> str | None:
    """What is wrong with a model's output for the loss: one row per sample, a score per class."""
    name, n = config.model.name, batch.labels.shape[0]
    if not isinstance(output, torch.Tensor):
        return f"model.name: {name} returns {type(output).__name__}; a classifier must return one tensor of scores"
    wanted = (n, classes) if target in ("index", "onehot") else tuple(batch.target.shape)
    if output.dim() != len(wanted) or output.shape[0] != n:
        return (f"model.name: {name} outputs shape {tuple(output.shape)} for {n} samples; "
                f"{config.loss.name} wants {wanted}")
    if output.shape[1:] != wanted[1:]:
        fix = "remove model.num_classes (guide sets it from the data)" if "num_classes" in \
            config.model.kwargs else "make the model's last layer output one score per class"
        return (f"model.name: {name} outputs {output.shape[1]} score(s) per sample, but "
                f"{config.loss.name} on {classes} classes wants {wanted[1]}: {fix}")
    return None


def size_hint(model: str, inputs: torch.Tensor) -> str | None:
    """A fix for images smaller than an architecture is known to take (from its pretrained weights)."""
    least = MODELS.entry(model).meta.get("min_size", 1)
    if inputs.dim() == 4 and min(inputs.shape[-2:]) < least:
        return (f"{model} was made for images of at least {least}x{least}: "
                f"add `{{name: resize, size: {least}}}` to data.transforms.train and eval")
    return None


@contextlib.contextmanager
def count_layer_flops(model: nn.Module) -> Iterator[list[int]]:
    """Forward FLOPs of the linear and convolution layers (the bulk of a classifier) during the block,
    by forward hooks; the count is in the yielded list's one item once the block ends.

    (torch's FlopCounterMode counts every op, but its first use imports torch._dynamo,
    over a second of start-up; `guide inspect-model` uses it.)
    """
    total = [0]

    def count(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += 2 * module.in_features * output.numel()
        else:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += 2 * per_output * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    try:
        yield total
    finally:
        for h in hooks:
            h.remove()


def recurrent_flops(model: nn.Module) -> int:
    """Forward FLOPs per token of the LSTM / GRU / RNN layers (FlopCounterMode leaves them out)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
            directions = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                inputs = m.input_size if layer == 0 else m.hidden_size * directions
                total += directions * 2 * gates * m.hidden_size * (inputs + m.hidden_size)
    return total
