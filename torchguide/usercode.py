"""The user's own code: the modules and .py files a config's `imports:` names, so their decorators
register components, and the same code again behind a checkpoint.

This is the only way a config runs code. A checkpoint records what was imported, with
the absolute path of each file, so eval, predict, inspect-model and resume import the
same files again, from where they were or from where they moved.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchguide.errors import CheckpointError, ConfigError, GuideError
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


def recorded_imports(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The user code a checkpoint was trained with, `{"import": as written, "path": absolute file or None}`
    each; a checkpoint from before these records has only its config's `imports:` as written."""
    if "imports" in payload:
        return list(payload["imports"])
    return [{"import": t, "path": None} for t in payload.get("config", {}).get("imports", [])]


def import_checkpoint_code(payload: dict[str, Any], imports: Sequence[str] = (), *,
                           skip_missing: bool = False) -> None:
    """Import the code a checkpoint was trained with, so its models, datasets and losses register again.

    A file comes from the absolute path recorded at training time, or, when it moved, from
    `imports` (`--import PATH`): a folder to find it in by name, or a file of the same name.
    Files of `imports` that replace no recorded file (a renamed file, more code) are
    imported too, and take the place of recorded files that are gone. Modules are imported
    by name. With `skip_missing` (resume, where the config's own `imports:` also count),
    files that are gone are left out.

    Raises:
        CheckpointError: a recorded file is gone and nothing takes its place, or the code fails to import.
    """
    places = [Path(p) for p in imports if Path(p).is_dir()]
    files = [Path(p) for p in imports if is_file_import(p) and not Path(p).is_dir()]
    modules = [m for m in imports if not is_file_import(m) and not Path(m).is_dir()]
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"--import {path}: no such file or folder", "give a .py file or the folder it is in")
    targets, gone = [], []
    for entry in recorded_imports(payload):
        written = entry["import"]
        if not is_file_import(written):
            targets.append(written)
            continue
        recorded = Path(entry.get("path") or written)
        found = find_code(recorded, files, places)
        if found is not None:
            targets.append(str(found))
        else:
            gone.append(f"{written} ({recorded})")
    if gone and not files and not skip_missing:
        raise CheckpointError(f"the checkpoint's code is gone from where it was: {', '.join(gone)}",
                              "give its new folder with --import FOLDER, or each file with --import PATH/NAME.py")
    for target in targets + [str(p) for p in files] + modules:
        import_code(target)


def find_code(recorded: Path, files: list[Path], places: list[Path]) -> Path | None:
    """Where a recorded file is now: a file of its name in `files` (taken out of the list), the
    file of its name in one of the folders `places`, or where it was; None when it is nowhere."""
    for path in files:
        if path.name == recorded.name:
            files.remove(path)
            return path
    moved = next((place / recorded.name for place in places if (place / recorded.name).is_file()), None)
    return moved or (recorded if recorded.is_file() else None)


def import_code(target: str) -> None:
    """Import one file or module of a checkpoint's code; a failure is a CheckpointError naming it."""
    try:
        if is_file_import(target):
            import_file(target)
        else:
            importlib.import_module(target)
    except GuideError:
        raise
    except ModuleNotFoundError as exc:
        raise CheckpointError(f"cannot import the checkpoint's code {target!r}: {one_line(exc)}",
                              "it is imported by name: install it, or add its folder to PYTHONPATH") from exc
    except Exception as exc:  # user code may raise anything
        raise CheckpointError(f"cannot import the checkpoint's code {target!r}: {type(exc).__name__}: "
                              f"{one_line(exc)}", "fix the error in that file") from exc
