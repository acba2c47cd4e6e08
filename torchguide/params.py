"""Parameters chosen by name: `model.freeze` and the optimizer's parameter groups.

Patterns are shell-style (`fnmatch`, case-sensitive) and match the full names of
`model.named_parameters()`: `conv1.*`, `layer1.*`, `fc.*`, `*.bias`. A pattern that
matches nothing is a ConfigError naming it and some real names, so a typo never
silently trains (or freezes) the wrong thing.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from torchguide.config import ParamGroup
from torchguide.errors import ConfigError


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def name_sample(names: list[str], n: int = 3) -> str:
    """A few names from both ends of a list, for an error message."""
    if len(names) <= 2 * n:
        return ", ".join(names)
    return f"{', '.join(names[:n])}, ..., {', '.join(names[-n:])} ({len(names)} in all)"


def freeze(model: nn.Module, patterns: list[str]) -> None:
    """Set requires_grad=False on the parameters matching any pattern; fix fully frozen BatchNorms.

    A BatchNorm2d whose weight and bias are both frozen becomes torchvision's
    FrozenBatchNorm2d: it normalises with its stored running statistics in training too,
    and they no longer change, so a frozen backbone really stays as loaded.

    Raises:
        ConfigError: a pattern matches no parameter (naming it and some real names).
    """
    names = [n for n, _ in model.named_parameters()]
    problems = [f"model.freeze: {pattern!r} matches no parameter; the names are {name_sample(names)}"
                for pattern in patterns if not any(fnmatchcase(n, pattern) for n in names)]
    if problems:
        raise ConfigError(problems, "use `guide inspect-model --config ...` to see the layer names")
    for name, param in model.named_parameters():
        if matches(name, patterns):
            param.requires_grad_(False)
    fix_frozen_batchnorms(model)


def fix_frozen_batchnorms(model: nn.Module) -> None:
    """Replace each BatchNorm2d with frozen weight and bias by a FrozenBatchNorm2d holding its values."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.BatchNorm2d) and module.affine and module.track_running_stats):
            continue
        if module.weight.requires_grad or module.bias.requires_grad:
            continue
        fixed = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(fixed, key).copy_(getattr(module, key).detach())
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, fixed)


def trainable_note(model: nn.Module) -> str:
    """One line on what training will change: trainable and frozen parameters, fixed BatchNorms."""
    from torchvision.ops import FrozenBatchNorm2d

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    return (f"model.freeze: {trainable:,} of {total:,} parameters train"
            + (f"; {fixed} frozen BatchNorm layer(s) keep their running statistics" if fixed else ""))


def param_groups(model: nn.Module, groups: list[ParamGroup], no_decay_norm_bias: bool = False
                 ) -> list[dict[str, Any]]:
    """The optimizer's parameter groups for a model; frozen parameters are left out.

    The parameters no group takes come first, with the optimizer's own options (so
    `param_groups[0]` is `optimizer.lr`'s group), then one group per `optimizer.groups`
    entry, in order, with its options. With `no_decay_norm_bias`, each of these is split
    in two, the second holding the 1-d parameters (biases, norm weights) with
    weight_decay 0. Empty groups are left out.

    Raises:
        ConfigError: every parameter is frozen; a group's pattern matches no trainable
            parameter; two groups take the same parameter.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("model.freeze: every parameter is frozen, nothing would train",
                          "freeze fewer layers (e.g. leave the classifier head out)")
    owner = assign_groups([n for n, _ in trainable], [n for n, p in model.named_parameters()
                                                      if not p.requires_grad], groups)
    buckets = [({}, [p for n, p in trainable if n not in owner])]
    buckets += [(group.options, [p for n, p in trainable if owner.get(n) == i]) for i, group in enumerate(groups)]
    result = []
    for options, params in buckets:
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}  # betas
        if no_decay_norm_bias:
            result += [{"params": [p for p in params if p.ndim > 1], **options},
                       {"params": [p for p in params if p.ndim <= 1], **options, "weight_decay": 0.0}]
        else:
            result.append({"params": params, **options})
    return [group for group in result if group["params"]]


def assign_groups(names: list[str], frozen: list[str], groups: list[ParamGroup]) -> dict[str, int]:
    """Which `optimizer.groups` entry takes each trainable parameter name; every problem at once."""
    owner: dict[str, int] = {}
    problems = []
    for i, group in enumerate(groups):
        for pattern in group.params:
            hits = [n for n in names if fnmatchcase(n, pattern)]
            if not hits:
                why = ("matches only frozen parameters (model.freeze)" if any(fnmatchcase(n, pattern) for n in frozen)
                       else f"matches no parameter; the trainable names are {name_sample(names)}")
                problems.append(f"optimizer.groups.{i}.params: {pattern!r} {why}")
            taken = [n for n in hits if owner.get(n, i) != i]
            if taken:
                problems.append(f"optimizer.groups.{i}.params: {pattern!r} takes {name_sample(taken, 1)}, already "
                                f"in optimizer.groups.{owner[taken[0]]}; a parameter belongs to one group")
            owner.update({n: i for n in hits if n not in owner})
    if problems:
        raise ConfigError(problems, "see the names with `guide inspect-model --config ...`")
    return owner
