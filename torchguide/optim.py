"""Optimizers and learning-rate schedulers, registered by name.

Every optimizer in `torch.optim` (`adam`, `adamw`, `sgd`, `rmsprop`, `adadelta`, ...)
and every optimizer of the pytorch-optimizer library (`lion`, `adan`, `ranger`, ...)
is reachable by name, except those in NOT_REGISTERED, which cannot train through a plain
backward-then-step loop (a closure, sparse gradients, 2-D weights only, ...); asked for, they
are refused with the reason. Schedulers are torch's `torch.optim.lr_scheduler` classes
(`step`, `cosine_annealing` alias `cosine`, `one_cycle`, `reduce_lr_on_plateau` alias
`plateau`, ...) plus `linear_warmup` and `none`. Each scheduler says whether it steps
per batch or per epoch (`interval`).

`make_optimizer` gives the optimizer the model's trainable parameters in the groups of
`optimizer.groups` and `optimizer.no_decay_norm_bias` (see `torchguide.params`); every
scheduler then scales each group's own learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from torchguide.config import OptimizerSection
from torchguide.layers import snake_case
from torchguide.params import param_groups
from torchguide.registry import OPTIMIZERS, SCHEDULERS

PER_STEP = {"OneCycleLR", "CyclicLR"}

# Optimizers that cannot train a classifier through a plain backward-then-step loop, left out of the registry.
NOT_REGISTERED = {
    "lbfgs": "needs a closure that re-evaluates the loss", "alig": "needs a closure",
    "bsam": "needs a closure", "sparseadam": "needs sparse gradients",
    "muon": "takes only 2-D weight matrices (no biases or norms)",
    "spectralsphere": "takes only 2-D weight matrices", "adago": "needs parameter groups marked for Muon",
    "adamuon": "needs parameter groups marked for Muon", "distributedmuon": "needs parameter groups marked for Muon",
    "muonclip": "needs parameter groups marked for Muon", "normuon": "needs parameter groups marked for Muon",
    "adahessian": "needs a second-order backward (create_graph)", "sophiah": "needs a second-order backward",
    "adalomo": "takes the model, not its parameters", "lomo": "takes the model, not its parameters",
    "adammini": "takes the model, not its parameters", "demo": "needs the einops package",
    "magma": "wraps another optimizer object",
}
# Schedulers whose required arguments are Python callables or other schedulers: no YAML form.
NOT_REGISTERED_SCHEDULERS = {
    "LambdaLR": "takes a Python function", "MultiplicativeLR": "takes a Python function",
    "ChainedScheduler": "takes other scheduler objects", "SequentialLR": "takes other scheduler objects",
}


def register_torch_optimizers() -> None:
    for cls_name in sorted(dir(torch.optim)):
        cls = getattr(torch.optim, cls_name)
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer \
                and cls_name.lower() not in NOT_REGISTERED:
            OPTIMIZERS.register(cls_name.lower(), cls, source="torch.optim")


def register_pytorch_optimizer() -> None:
    """Register the pytorch-optimizer library's optimizers that torch does not have."""
    import pytorch_optimizer

    for name in sorted(pytorch_optimizer.get_supported_optimizers()):
        if name in OPTIMIZERS or name in NOT_REGISTERED:
            continue
        try:
            cls = pytorch_optimizer.load_optimizer(name)
        except Exception:  # an optimizer that needs an extra package (bitsandbytes, ...)
            continue
        OPTIMIZERS.register(name, cls, source="pytorch-optimizer")


def register_torch_schedulers() -> None:
    base = lr_scheduler.LRScheduler
    for cls_name in sorted(dir(lr_scheduler)):
        cls = getattr(lr_scheduler, cls_name)
        if not isinstance(cls, type) or cls_name.startswith("_") or cls is base:
            continue
        if cls_name in NOT_REGISTERED_SCHEDULERS:
            for name in (cls_name, cls_name.removesuffix("LR")):
                SCHEDULERS.leave_out(name, NOT_REGISTERED_SCHEDULERS[cls_name])
            continue
        if not (issubclass(cls, base) or cls is lr_scheduler.ReduceLROnPlateau):
            continue
        name = snake_case(cls_name.removesuffix("LR")) if cls_name.endswith("LR") else snake_case(cls_name)
        aliases = {"CosineAnnealingLR": ["cosine"], "ReduceLROnPlateau": ["plateau"]}.get(cls_name, [])
        SCHEDULERS.register(name, cls, aliases=[cls_name, *aliases],
                            interval="step" if cls_name in PER_STEP else "epoch")


register_torch_optimizers()
register_pytorch_optimizer()
for _name, _reason in NOT_REGISTERED.items():
    OPTIMIZERS.leave_out(_name, _reason)
register_torch_schedulers()


@SCHEDULERS.register("none", interval="epoch")
def no_schedule(optimizer: torch.optim.Optimizer) -> None:
    """A constant learning rate: no scheduler."""
    return None


@SCHEDULERS.register("linear_warmup", aliases=["warmup"], interval="step")
def linear_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, then: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps` batches, then `cosine` decay or `constant`."""
    if then not in ("cosine", "constant"):
        raise ValueError(f"then must be 'cosine' or 'constant', got {then!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if then == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_scheduler.LambdaLR(optimizer, factor)


def scheduler_interval(name: str) -> str:
    """'step' when scheduler `name` steps after every optimizer step, else 'epoch'."""
    return SCHEDULERS.entry(name).meta.get("interval", "epoch")


def scheduler_defaults(name: str, lr: float | list[float], total_steps: int, epochs: int) -> dict[str, Any]:
    """Arguments guide fills in for scheduler `name` when the config leaves them out (`lr`: one per
    parameter group where they differ, so a one-cycle peak keeps each group's own rate)."""
    sig = SCHEDULERS.signature(name)
    params = sig.parameters if sig else {}
    interval = scheduler_interval(name)
    known = {"total_steps": total_steps, "max_lr": lr,
             "T_max": total_steps if interval == "step" else epochs,
             "total_iters": total_steps if interval == "step" else epochs}
    return {k: v for k, v in known.items() if k in params}


def build_optimizer(name: str, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params`; YAML lists (betas) become tuples."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return OPTIMIZERS.build(name, params, **kwargs)


def make_optimizer(model: nn.Module, spec: OptimizerSection) -> torch.optim.Optimizer:
    """The configured optimizer over the model's trainable parameters, in the configured groups."""
    groups = param_groups(model, spec.groups, spec.no_decay_norm_bias)
    return build_optimizer(spec.name, groups, **spec.kwargs)


def groups_note(optimizer: torch.optim.Optimizer) -> str:
    """One line on the parameter groups: tensors, learning rate and weight decay of each."""
    parts = [f"{len(g['params'])} tensors" + "".join(f" {key} {g[key]:g}" for key in ("lr", "weight_decay") if key in g)
             for g in optimizer.param_groups]
    return f"optimizer groups: {'; '.join(parts)}"


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, epochs: int,
                    **kwargs: Any) -> Any:
    """Build scheduler `name`, filling `total_steps`, `max_lr`, `T_max` when not given."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    lr = lrs[0] if len(set(lrs)) == 1 else lrs
    filled = {**scheduler_defaults(name, lr, total_steps, epochs), **kwargs}
    return SCHEDULERS.build(name, optimizer, **filled)
