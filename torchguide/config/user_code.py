"""`imports:`: the modules and .py files a config imports, so their decorators register components.

This is the only way a config runs code. Checkpoints record what was imported, so eval,
predict and resume import the same files again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torchguide.errors import ConfigError, GuideError
from torchguide.registry import one_line


def is_file_import(target: str) -> bool:
    """Whether an `imports:` entry names a .py file (else a module, imported by name)."""
    return target.endswith(".py") or "/" in target


def import_user_code(imports: list[str], base: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Import the modules and .py files listed in `imports:`.

    Returns the problems by path, and each entry as `{"import": as written, "path": the
    absolute file imported, or None for a module}`: what a checkpoint records to import again.
    """
    problems, found = [], []
    for i, target in enumerate(imports):
        try:
            path = import_file(target, base) if is_file_import(target) else None
            if path is None:
                importlib.import_module(target)
            found.append({"import": target, "path": str(path) if path else None})
        except GuideError as exc:
            problems.append(f"imports[{i}]: {exc.message}")
        except Exception as exc:  # user code may raise anything; report it, do not crash
            problems.append(f"imports[{i}]: cannot import {target!r}: {type(exc).__name__}: {one_line(exc)}")
    return problems, found


def locate_file(target: str, base: Path | None) -> Path | None:
    """The absolute path of an imported file: next to the config first, then from the working directory."""
    candidates = ([base / target] if base else []) + [Path(target)]
    return next((p.resolve() for p in candidates if p.is_file()), None)


def import_file(target: str, base: Path | None = None) -> Path:
    """Import a .py file as a module; returns its absolute path, raises ConfigError when it is not there.

    The module is named after the file's content, so the same code imported again (from
    the config, then from a checkpoint, or from a copy elsewhere) runs, and registers, once.
    """
    path = locate_file(target, base)
    if path is None:
        where = "next to the config and in ." if base else "in ."
        raise ConfigError(f"file {target!r} not found (looked {where})")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    name = f"guide_user_{path.stem}_{digest}"
    if name in sys.modules:
        return path
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return path
