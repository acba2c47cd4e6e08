"""`load_config`: read a config, apply overrides, import its user code and validate it all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from torchguide.config.checks import (
    DEFAULT_COLLATE,
    check_components,
    collate_mismatch,
    component_sections,
    infer_task,
    task_mismatches,
)
from torchguide.config.raw import apply_overrides, read_yaml
from torchguide.config.schema import Config, format_validation
from torchguide.config.shipped import find_config
from torchguide.errors import ConfigError
from torchguide.usercode import import_user_code

DEFAULT_COMPONENTS = {"loss": {"name": "cross_entropy"}, "optimizer": {"name": "adam", "lr": 1e-3},
                      "scheduler": {"name": "none"}}


def load_config(path: str | Path | None, overrides: list[str] = (), *,
                task: str | None = None, raw: dict[str, Any] | None = None) -> Config:
    """Load, override and validate a config; raises ConfigError listing every problem.

    Args:
        path: the YAML file (None when `raw` is given); a path that is not on disk may name a
            shipped config (`image/digits`, `configs/image/digits.yaml`, see `config.shipped`).
        overrides: `key=value` / `~key` strings applied in order; `SECTION=NAME` swaps a whole
            component section (`model=embedding_bag`).
        task: the command's task (`image` or `text`); a config for the other task is refused.
    """
    source = str(path) if path else None
    if raw is None:
        path = find_config(path)  # a file on disk, else the shipped config of that name (image/digits)
        raw = read_yaml(path)
    for key, section in DEFAULT_COMPONENTS.items():  # so `optimizer.lr=...` works on a config without one
        raw.setdefault(key, dict(section))
    renamed: dict[str, list[str]] = {}
    raw = apply_overrides(raw, list(overrides), [section for section, *_ in component_sections()], renamed)
    raw.setdefault("name", Path(path).stem if path else "run")
    if isinstance(raw.get("data"), dict) and "collate" not in raw["data"]:
        raw["data"]["collate"] = {"name": DEFAULT_COLLATE.get(infer_task(raw, task), "default")}
    problems: list[str] = []
    config = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems += format_validation(exc)
    imports = raw.get("imports") or []
    import_problems, imported = import_user_code(imports, Path(path).parent if path else None) \
        if isinstance(imports, list) and all(isinstance(i, str) for i in imports) else ([], [])
    problems += import_problems
    if not import_problems:
        problems += [p for p in check_components(raw, task, renamed) if p not in problems]
    if task and raw.get("task") not in (None, task):
        problems.append(f"task: this is a {raw['task']} config; run it with `guide train-{raw['task']}`")
    elif task and task_mismatches(raw, task):
        problems += task_mismatches(raw, task)
    else:
        problems += collate_mismatch(raw, infer_task(raw, task))
    if problems:
        raise ConfigError(problems, source=source)
    if task and not config.task:
        config.task = task
    config._imported = imported
    return config
