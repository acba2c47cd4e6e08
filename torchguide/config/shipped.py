"""The configs that ship inside the package, `torchguide/configs/<task>/<name>.yaml`: find, list, copy.

A checkout also has them at `configs/` (a link into the package), the paths the docs and each
config's first line use. An installed package has no such folder, so `--config image/digits`,
`image/digits.yaml` or the documented `configs/image/digits.yaml` that is not a file on disk
names the shipped config (`find_config`).
"""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

from torchguide.config.raw import read_config_text, read_yaml
from torchguide.errors import ConfigError, GuideError
from torchguide.files import make_folder, write_text_atomic

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"
RUN_LINE = re.compile(r"^# guide train-\w+ --config \S+")  # the command each shipped config starts with


def shipped_names() -> list[str]:
    """The shipped configs as `<task>/<name>`, sorted."""
    return sorted(p.relative_to(SHIPPED_DIR).with_suffix("").as_posix() for p in SHIPPED_DIR.glob("*/*.yaml"))


def shipped_path(name: str) -> Path | None:
    """The shipped config `name` names (`image/digits`, `image/digits.yaml`, `configs/image/digits.yaml`),
    or None."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if parts[:1] == ("configs",):
        parts = parts[1:]
    if len(parts) != 2 or any(p in (".", "..") for p in parts):
        return None
    task, stem = parts
    stem = stem.removesuffix(".yaml")
    return SHIPPED_DIR / task / f"{stem}.yaml" if f"{task}/{stem}" in shipped_names() else None


def find_config(path: str | Path) -> Path:
    """The config file `path` means: itself when something is there (read_config_text says if it is no
    file), else the shipped config it names.

    Raises:
        ConfigError: neither exists; lists the shipped configs.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return path
    found = shipped_path(str(path))
    if found is None:
        names = shipped_names()
        close = difflib.get_close_matches(str(path).removeprefix("configs/").removesuffix(".yaml"), names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"config file {path} does not exist, and no shipped config has that name",
                          f"{hint}check the path, or start from a shipped one: {', '.join(names)}")
    return found


def shipped_configs() -> list[dict[str, Any]]:
    """Each shipped config: `name` (`image/digits`), `task`, `model` (its model's name) and `path`."""
    rows = []
    for name in shipped_names():
        path = SHIPPED_DIR / f"{name}.yaml"
        raw = read_yaml(path)
        model = raw.get("model")
        rows.append({"name": name, "task": raw.get("task") or name.split("/")[0],
                     "model": model.get("name") if isinstance(model, dict) else None, "path": str(path)})
    return rows


def copy_config(name: str, dest: str | Path, force: bool = False) -> dict[str, str]:
    """Copy shipped config `name` to `dest` (a file, or a folder to put it in), to edit.

    The copy's first line, the command that runs it, names the copy.

    Returns:
        `name` (`image/digits`), `path` (the file written) and `command` (the one that runs it).

    Raises:
        GuideError: `name` is no shipped config, or `dest` exists and `force` is not set.
        RunFailed: the file cannot be written (a full disk, ...).
    """
    source = shipped_path(name)
    if source is None:
        raise GuideError(f"no shipped config is named {name!r}", f"choose one of {', '.join(shipped_names())}")
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if (dest.exists() or dest.is_symlink()) and not force:
        raise GuideError(f"{dest} exists", "choose another name, or add --force to overwrite it")
    command = f"guide train-{source.parent.name} --config {shlex.quote(str(dest))}"
    text = RUN_LINE.sub(lambda _: f"# {command}", read_config_text(source), count=1)
    make_folder(dest.parent)
    write_text_atomic(dest, text)
    return {"name": source.relative_to(SHIPPED_DIR).with_suffix("").as_posix(), "path": str(dest),
            "command": command}
