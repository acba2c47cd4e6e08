"""Checks of the raw config that need the registries, reported together with the structural ones.

Each `{name: ..., **kwargs}` section is looked up in its registry and its kwargs are
checked against the builder's signature, before anything is built; components made for
the other task (a text dataset under `guide train-image`, ...) are named.
"""

from __future__ import annotations

import difflib
from typing import Any

from torchguide.config.schema import Component, ModelSection, OptimizerSection, ValidSpec
from torchguide.registry import (
    BATCH_TRANSFORMS,
    COLLATES,
    DATASETS,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    SAMPLERS,
    SCHEDULERS,
    TRANSFORMS,
    Registry,
)

DEFAULT_COLLATE = {"image": "default", "text": "pad_to_longest"}


def infer_task(raw: dict[str, Any], task: str | None) -> str | None:
    """The config's task: the command's, the config's `task:`, or that of its training dataset."""
    name = section_at(raw, "data.train.name")
    found = raw.get("task") if isinstance(raw.get("task"), str) else None
    if not found and isinstance(name, str) and name in DATASETS:
        found = DATASETS.entry(name).meta.get("task")
    return task or found


def collate_mismatch(raw: dict[str, Any], task: str | None) -> list[str]:
    """A collate function made for the other kind of data (stacking images for texts of many lengths)."""
    name = section_at(raw, "data.collate.name")
    if not task or not isinstance(name, str) or name not in COLLATES:
        return []
    kind = COLLATES.entry(name).meta.get("task")
    if kind and kind != task:
        return [f"data.collate.name: {name} is for {kind} data, this is {task} data; "
                f"use {DEFAULT_COLLATE[task]} (or remove data.collate)"]
    return []


def task_mismatches(raw: dict[str, Any], task: str) -> list[str]:
    """Components made for the other task (a text dataset under `guide train-image`, ...), as one problem."""
    found, other = [], None
    for path, registry in (("data.train", DATASETS), ("model", MODELS)):
        name = section_at(raw, f"{path}.name")
        if isinstance(name, str) and name in registry:
            kind = registry.entry(name).meta.get("task")
            if kind and kind != task:
                found.append(f"{path}.name: {name} is a {kind} {registry.item}")
                other = kind
    if not found:
        return []
    return [f"{'; '.join(found)}: run this config with `guide train-{other}`"]


COLLATE_SUPPLIED = {"target", "num_classes", "pad_index", "max_len"}
SAMPLER_SUPPLIED = {"lengths", "batch_size", "drop_last", "seed", "rank", "world_size", "shuffle"}
SCHEDULER_FILLED = {"total_steps", "max_lr", "T_max", "total_iters"}


def component_sections() -> list[tuple[str, Registry, set[str], set[str]]]:
    """(path, registry, names the code supplies (refused in YAML), names it fills when absent) per section."""
    from torchguide.data.loaders import MODEL_FACTS  # the facts live with the data that fills them

    return [
        ("data.train", DATASETS, set(), set()),
        ("data.valid", DATASETS, set(), set()),
        ("data.test", DATASETS, set(), set()),
        ("data.collate", COLLATES, COLLATE_SUPPLIED, set()),
        ("data.sampler", SAMPLERS, SAMPLER_SUPPLIED, set()),
        ("model", MODELS, set(MODEL_FACTS), set()),
        ("loss", LOSSES, set(), set()),
        ("optimizer", OPTIMIZERS, {"params"}, set()),
        ("scheduler", SCHEDULERS, {"optimizer"}, SCHEDULER_FILLED),
    ]


def section_at(raw: dict[str, Any], path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# `split: null` beside a dataset's name is how a resolved config (a run's config.yaml) writes data.valid
SECTION_TYPES: dict[str, type[Component | ValidSpec]] = {"model": ModelSection, "optimizer": OptimizerSection,
                                                         "data.valid": ValidSpec}


def check_components(raw: dict[str, Any], task: str | None = None,
                     renamed: dict[str, list[str]] | None = None) -> list[str]:
    """Look up every named component of a raw config and check its kwargs against its signature.

    Works on the raw mapping, so these problems are reported together with structural ones.
    `task` is the command's (`image`, `text`), when it has one; `renamed` holds the sections whose
    `.name` an override changed and the keys they kept (see `apply_overrides`).
    """
    found = [(path, registry, section_at(raw, path), supplied, filled)
             for path, registry, supplied, filled in component_sections()]
    transforms = section_at(raw, "data.transforms")
    for stage in ("train", "eval"):
        items = transforms.get(stage) if isinstance(transforms, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            found.append((f"data.transforms.{stage}.{i}", TRANSFORMS,
                          {"name": item} if isinstance(item, str) else item, set(), set()))
    for i, item in enumerate(batch_transform_sections(raw)):
        found.append((f"data.batch_transforms.{i}", BATCH_TRANSFORMS, item, {"num_classes"}, set()))
    problems = []
    for path, registry, section, supplied, filled in found:
        if not isinstance(section, dict) or not isinstance(section.get("name"), str):
            continue
        name = section["name"]
        if name not in registry:
            why = missing_transform(name) if registry is TRANSFORMS else None
            problems.append(f"{path}.name: {why or registry.unknown(name)}")
            continue
        own = set(SECTION_TYPES.get(path, Component).model_fields)  # name, and keys guide handles itself
        kwargs = {k: v for k, v in section.items() if k not in own}
        if path == "loss":
            supplied = loss_supplied(name)
        left = left_behind(registry, name, [k for k in (renamed or {}).get(path, []) if k in kwargs])
        if left:
            problems.append(f"{path}.name={name} leaves {', '.join(left)} that {registry.entry(name).name} "
                            f"does not take: use {path}={name} to swap the whole section")
        for p in registry.check_kwargs(name, kwargs, supplied | filled):
            key = p.split(":", 1)[0]
            if not (key in filled and "set by guide" in p) and key not in left:
                problems.append(f"{path}.{p}")
        check = registry.entry(name).meta.get("check")  # an entry's own check of its values
        problems += [f"{path}.{p}" for p in (check(kwargs) if check else [])]
    problems += optimizer_option_problems(section_at(raw, "optimizer"))
    loss = section_at(raw, "loss.name")
    if isinstance(loss, str) and loss in LOSSES and LOSSES.entry(loss).meta.get("target", "x") is None:
        problems.append(f"loss.name: {LOSSES.entry(loss).name} does not train a classifier; "
                        "use cross_entropy, nll, bce_with_logits, kl_div, mse, ...")
    return problems + batch_transform_problems(raw, task)


def left_behind(registry: Registry, name: str, keys: list[str]) -> list[str]:
    """The `keys` that component `name` does not take as arguments."""
    sig = registry.signature(name)
    if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return []
    named = {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return [k for k in keys if k not in named]


def batch_transform_sections(raw: dict[str, Any]) -> list[Any]:
    """The `data.batch_transforms` entries as mappings without `p` (not an argument of the transform)."""
    items = section_at(raw, "data.batch_transforms")
    return [{"name": it} if isinstance(it, str) else
            {k: v for k, v in it.items() if k != "p"} if isinstance(it, dict) else it
            for it in (items if isinstance(items, list) else [])]


def missing_transform(name: str) -> str | None:
    """Why a torchvision transform that is not registered cannot be used here, with the fix; None if not one."""
    from torchguide.data.transforms import left_out_reason

    if name in BATCH_TRANSFORMS:
        canonical = BATCH_TRANSFORMS.entry(name).name
        return (f"{canonical} mixes whole batches, not single images: move it to data.batch_transforms, "
                f"e.g. `batch_transforms: [{{name: {canonical}, alpha: 0.2, p: 0.5}}]` under data")
    reason = left_out_reason(name)
    return f"{name} {reason}; see `guide list transforms`" if reason else None


def batch_transform_problems(raw: dict[str, Any], task: str | None) -> list[str]:
    """MixUp / CutMix need images and a loss that takes class probabilities."""
    names = [it["name"] for it in batch_transform_sections(raw)
             if isinstance(it, dict) and isinstance(it.get("name"), str) and it["name"] in BATCH_TRANSFORMS]
    if not names:
        return []
    listed = ", ".join(names)
    dataset = section_at(raw, "data.train.name")
    kind = task or raw.get("task") or (DATASETS.entry(dataset).meta.get("task")
                                       if isinstance(dataset, str) and dataset in DATASETS else None)
    if kind == "text":
        return [f"data.batch_transforms: batch transforms ({listed}) mix images, not texts: "
                "remove data.batch_transforms"]
    loss = section_at(raw, "loss.name")
    if isinstance(loss, str) and loss in LOSSES and not LOSSES.entry(loss).meta.get("soft_targets"):
        return [f"loss.name: {LOSSES.entry(loss).name} cannot learn from the class probabilities that "
                f"data.batch_transforms ({listed}) makes: use loss cross_entropy, or remove data.batch_transforms"]
    return []


def optimizer_option_problems(section: Any) -> list[str]:
    """Options in `optimizer.groups` that the optimizer does not take, and `no_decay_norm_bias` for an
    optimizer without weight decay."""
    if not isinstance(section, dict) or not isinstance(section.get("name"), str) or section["name"] not in OPTIMIZERS:
        return []
    name = OPTIMIZERS.entry(section["name"]).name
    sig = OPTIMIZERS.signature(name)
    if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return []
    takes = [n for n in sig.parameters if n != "params"]
    problems = []
    groups = section.get("groups")
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        for key in (group if isinstance(group, dict) else {}):
            if key != "params" and key not in takes:
                close = difflib.get_close_matches(key, takes, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append(f"optimizer.groups.{i}.{key}: not an option of {name}; {hint}"
                                f"it takes {', '.join(takes)}")
    if section.get("no_decay_norm_bias") is True and "weight_decay" not in takes:
        problems.append(f"optimizer.no_decay_norm_bias: {name} has no weight_decay to leave out")
    return problems


def loss_supplied(name: str) -> set[str]:
    """A loss written as a function gets (output, target) at call time, not from YAML."""
    if name not in LOSSES or isinstance(LOSSES.get(name), type):
        return set()
    sig = LOSSES.signature(name)
    return set(list(sig.parameters)[:2]) if sig else set()
