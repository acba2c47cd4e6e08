"""Source code for an ejected script: guide's own classes and functions as written, and imports.

`Sources.define(obj)` takes the source of a class or function of torchguide with
`inspect.getsource` (its registry decorator left out) and, first, everything of torchguide
it uses (a helper function, the guide's linear layer, a regular expression), so the
script holds the library's own code rather than a copy that could drift from it. The
modules and outside names it uses become import lines.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import re
import sys
import textwrap
import types
from typing import Any

from torchguide.errors import GuideError

PLAIN_VALUES = (bool, int, float, str, type(None))


def literal(value: Any) -> str:
    """A YAML-like value (numbers, strings, lists, dicts) as Python source, strings in double quotes."""
    if isinstance(value, str):
        text = repr(value)
        if text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1].replace("\\'", "'") + '"'
        return text
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, PLAIN_VALUES):
        return repr(value)
    raise GuideError(f"cannot write {value!r} ({type(value).__name__}) into a script")


def call(function: str, *args: str, **kwargs: Any) -> str:
    """`function(arg, ..., key=literal, ...)` as source; `args` are source already."""
    return f"{function}({', '.join([*args, *(f'{k}={literal(v)}' for k, v in kwargs.items())])})"


class Imports:
    """The import statements of a script, grouped and sorted as isort would."""

    def __init__(self) -> None:
        self.modules: set[tuple[str, str | None]] = set()  # import module [as alias]
        self.names: dict[str, set[str]] = {}  # from module import name [as alias]

    def module(self, module: str, alias: str | None = None) -> str:
        """Import `module` (as `alias`); returns the name it has in the script."""
        parent, _, last = module.rpartition(".")
        if alias == last and parent:  # `from torch import nn` reads better than `import torch.nn as nn`
            return self.name(parent, last)
        self.modules.add((module, None if alias == module else alias))
        return alias or module

    def name(self, module: str, name: str, alias: str | None = None) -> str:
        self.names.setdefault(module, set()).add(name if alias in (None, name) else f"{name} as {alias}")
        return alias or name

    def lines(self) -> list[str]:
        """The statements: `from __future__` first, then the standard library, then the rest, a blank line between."""
        groups: dict[int, list[tuple[str, str]]] = {0: [], 1: [], 2: []}
        for module, alias in self.modules:
            groups[group(module)].append((module, f"import {module}" + (f" as {alias}" if alias else "")))
        for module, names in self.names.items():
            listed = ", ".join(sorted(names, key=lambda n: (not n[:1].isupper(), n.lower())))
            groups[group(module)].append((module, f"from {module} import {listed}"))
        out: list[str] = []
        for number in sorted(groups):
            statements = [text for _, text in sorted(groups[number], key=lambda m: (m[1].startswith("from"), m[0]))]
            if statements:
                out += ([""] if out else []) + statements
        return out


def group(module: str) -> int:
    top = module.split(".")[0]
    if top == "__future__":
        return 0
    return 1 if top in sys.stdlib_module_names else 2


class Sources:
    """Definitions (guide's source, in dependency order) and the imports they need."""

    def __init__(self, imports: Imports) -> None:
        self.imports = imports
        self.blocks: list[str] = []
        self.defined: dict[str, Any] = {}  # name in the script -> the object it holds

    def define(self, obj: Any) -> str:
        """Write out class or function `obj` of torchguide (and what it uses); returns its name in the script."""
        name = obj.__name__
        if self.defined.get(name) is obj:
            return name
        if name in self.defined:
            raise GuideError(f"two different objects are called {name} ({obj.__module__} and "
                             f"{self.defined[name].__module__}); the script cannot define both")
        self.defined[name] = obj
        node, text = parse(obj)
        scope = vars(sys.modules[obj.__module__])
        for used in global_names(node):
            if used in scope:
                self.need(used, scope[used], obj)
        self.blocks.append(text)
        return name

    def need(self, name: str, value: Any, user: Any) -> None:
        """Make global `name` (holding `value`, used by `user`) exist in the script."""
        if isinstance(value, types.ModuleType):
            self.imports.module(value.__name__, name)
        elif is_guide_code(value):
            self.define(value)
        elif inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value) or \
                type(value).__module__ == "typing":
            module = public_module(value)
            self.imports.name(module, getattr(value, "__name__", name), name)
        elif isinstance(value, re.Pattern):
            self.imports.module("re")
            flags = value.flags & ~re.UNICODE
            self.constant(name, value, f"re.compile({pattern_literal(value.pattern)}"
                          + (f", {flags}" if flags else "") + ")")
        elif isinstance(value, (*PLAIN_VALUES, list, tuple, dict)):
            self.constant(name, value, literal(value))
        else:
            raise GuideError(f"{user.__name__} uses {name} ({type(value).__name__}), which guide cannot write "
                             "into a script")

    def constant(self, name: str, value: Any, source: str) -> None:
        if name not in self.defined:
            self.defined[name] = value
            self.blocks.append(f"{name} = {source}")


def is_guide_code(value: Any) -> bool:
    return (inspect.isclass(value) or inspect.isfunction(value)) and \
        getattr(value, "__module__", "").split(".")[0] == "torchguide"


def public_module(value: Any) -> str:
    """The shortest module path that exports `value` (`torch.nn.utils.rnn`, `collections.abc`)."""
    module = getattr(value, "__module__", None) or "builtins"
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        candidate = sys.modules.get(".".join(parts[:end]))
        if candidate is not None and getattr(candidate, getattr(value, "__name__", ""), None) is value:
            return ".".join(parts[:end])
    return module


def parse(obj: Any) -> tuple[ast.AST, str]:
    """The definition of `obj` as an AST node and as text, without its decorators."""
    try:
        text = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as exc:
        raise GuideError(f"the source of {obj.__module__}.{obj.__name__} is not available") from exc
    node = ast.parse(text).body[0]
    node.decorator_list = []
    lines = text.splitlines()[node.lineno - 1:]  # the `def` / `class` line on: decorators dropped
    return node, "\n".join(lines)


def global_names(node: ast.AST) -> list[str]:
    """Names a definition reads that it does not bind itself, in order of first use."""
    bound = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
    bound |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef | ast.ClassDef) and n is not node}
    loads = sorted((n for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)),
                   key=lambda n: (n.lineno, n.col_offset))
    return list(dict.fromkeys(n.id for n in loads if n.id not in bound and not hasattr(builtins, n.id)))


def pattern_literal(pattern: str) -> str:
    """A regular expression as a raw string literal where it can be one."""
    for quote in ('"', "'"):
        if quote not in pattern and not pattern.endswith("\\"):
            return f"r{quote}{pattern}{quote}"
    return repr(pattern)
