"""The raw config mapping: read from a YAML file, then changed by `key=value` and `~key` overrides.

Configs are read with a `yaml.SafeLoader` (no Python objects) that also refuses aliases
and keys given twice; command-line values are parsed as YAML by the same loader.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from torchguide.errors import ConfigError
from torchguide.files import special_kind

MAX_CONFIG_BYTES = 1 << 20  # a config is a few dozen lines; anything this large is the wrong file


class YamlRefused(ValueError):
    """YAML that parses but that a config must not use: aliases, a key given twice."""

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


class YamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader that reads `3e-4` as a float (YAML 1.2), and refuses aliases and duplicate keys.

    Aliases (`*name`) have no use in a config and let a kilobyte of YAML expand to
    gigabytes (the "billion laughs"); a key given twice would silently keep its last value.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YamlRefused(f"YAML aliases (*{event.anchor}) are not accepted in a config: write the value "
                              "out where it is used", event.start_mark.line + 1)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                if key in seen:
                    raise YamlRefused(f"key {key!r} appears twice in the same section: keep one "
                                      "(YAML would silently use the last)", key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text: str) -> Any:
    """A command-line value parsed as YAML (`3e-4` -> 0.0003, `[1, 2]` -> list); bad YAML stays text."""
    try:
        return yaml.load(text, Loader=YamlLoader) if text.strip() else None
    except yaml.YAMLError:
        return text
    except YamlRefused as exc:
        raise ConfigError(f"value {text!r}: {exc}") from exc


def read_config_text(path: Path) -> str:
    """The text of a config file: a regular file of at most MAX_CONFIG_BYTES, in UTF-8.

    Raises:
        ConfigError: the path is missing, a directory, a pipe or device, too large, or not UTF-8.
    """
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist: check the path")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: give a .yaml file, e.g. configs/image/digits.yaml")
    kind = special_kind(path)
    if kind:
        raise ConfigError(f"{path} is {kind}, not a file: give a .yaml file, e.g. configs/image/digits.yaml")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MB; a config is a few dozen lines",
                          "check the path")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", source=str(path)) from exc


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; any problem is a one-line ConfigError."""
    path = Path(path)
    text = read_config_text(path)
    try:
        raw = yaml.load(text, Loader=YamlLoader)
    except YamlRefused as exc:
        raise ConfigError(str(exc), source=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"YAML syntax error{where}: {problem}", source=str(path)) from exc
    if raw is None:
        raise ConfigError("the file is empty: start from a shipped config (`guide config list`, "
                          "`guide config copy image/digits FILE`)", source=str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"the top level must be a mapping of sections, got {type(raw).__name__}",
                          source=str(path))
    return raw


def parse_override(text: str) -> tuple[list[str], Any, bool]:
    """`a.b=3` -> (['a', 'b'], 3, False); `~a.b` -> (['a', 'b'], None, True)."""
    if text.startswith("~"):
        key, value, delete = text[1:], None, True
    elif "=" in text:
        key, raw = text.split("=", 1)
        delete, value = False, parse_value(raw)
    else:
        raise ConfigError(f"override {text!r}: write key=value (e.g. optimizer.lr=3e-4) or ~key to remove")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part in {key!r}")
    return parts, value, delete


def apply_overrides(raw: dict[str, Any], overrides: list[str], components: Collection[str] = (),
                    renamed: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Apply `key=value` and `~key` overrides to a raw config mapping (in place).

    Args:
        components: the paths of the `{name: ..., **kwargs}` sections (`model`, `data.collate`, ...).
            `SECTION=NAME` for one of them swaps the whole section for `{name: NAME}`: that component
            with its defaults, nothing of the old one kept (like a config group in Hydra); later
            overrides set its arguments (`model=embedding_bag model.dim=32`).
        renamed: filled with the sections whose component `SECTION.name=NAME` changed while keeping
            the old one's arguments: path -> the keys kept, less those later overrides set again.
            Validation names the ones the new component does not take and suggests the swap.
    """
    for text in overrides:
        parts, value, delete = parse_override(text)
        key = ".".join(parts)
        if key in components and isinstance(value, str):
            value = {"name": value}
        if renamed is not None:
            note_rename(raw, parts, delete, components, renamed)
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            nxt = child(node, part, text)
            if nxt is None:
                if delete:
                    break
                nxt = {}
                set_child(node, part, nxt, text)
            if not isinstance(nxt, dict | list):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = nxt
        else:
            if delete:
                if isinstance(node, dict) and parts[-1] in node:
                    del node[parts[-1]]
                else:
                    raise ConfigError(f"override {text!r}: there is no {'.'.join(parts)} to remove")
            else:
                set_child(node, parts[-1], value, text)
    return raw


def note_rename(raw: dict[str, Any], parts: list[str], delete: bool, components: Collection[str],
                renamed: dict[str, list[str]]) -> None:
    """Keep `renamed` up to date before the override `parts` is applied (see apply_overrides)."""
    key = ".".join(parts)
    for path in list(renamed):
        if path == key or path.startswith(key + "."):  # the section (or one above it) is replaced
            del renamed[path]
        elif key.startswith(path + ".") and len(parts) == path.count(".") + 2:  # one of its keys set again
            renamed[path] = [k for k in renamed[path] if k != parts[-1]]
    section = parts[:-1]
    if not delete and parts[-1] == "name" and ".".join(section) in components:
        node: Any = raw
        for part in section:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and len(node) > 1:
            renamed[".".join(section)] = [k for k in node if k != "name"]


def child(node: Any, part: str, text: str) -> Any:
    if isinstance(node, list):
        return node[list_index(node, part, text)]
    return node.get(part)


def set_child(node: Any, part: str, value: Any, text: str) -> None:
    if isinstance(node, list):
        node[list_index(node, part, text)] = value
    else:
        node[part] = value


def list_index(node: list[Any], part: str, text: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"override {text!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)
