"""One small Registry type and the registries of the project.

A component registers where it is defined::

    @MODELS.register("simple_cnn")
    def simple_cnn(num_classes: int, in_channels: int = 3) -> nn.Module: ...

Names are matched case-insensitively and ignoring `_` and `-`, so `MaxPool2d`,
`maxpool2d` and `max_pool2d` are the same entry. A registry imports the modules
that fill it the first time it is asked for anything, which keeps `import
torchguide` (and `guide --help`) free of torch.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torchguide.errors import ConfigError, GuideError


def normalize(name: str) -> str:
    """The lookup key of a name: lower case, without `_`, `-` and spaces."""
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


@dataclass
class Entry:
    name: str
    obj: Callable[..., Any]
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Named components of one kind, built by name with checked kwargs."""

    def __init__(self, kind: str, modules: Iterable[str] = ()) -> None:
        self.kind = kind
        self.item = kind[:-2] if kind.endswith("sses") else kind.removesuffix("s")  # losses -> loss
        self._modules = list(modules)
        self._loaded = False
        self._entries: dict[str, Entry] = {}  # by lower-case name
        self._keys: dict[str, str | None] = {}  # normalized name or alias -> entry (None: ambiguous)
        self._left_out: dict[str, str] = {}  # normalized name -> why it is not registered

    def register(
        self, name: str, obj: Callable[..., Any] | None = None, *, summary: str | None = None,
        aliases: Iterable[str] = (), **meta: Any,
    ) -> Any:
        """Register `obj` under `name`; used bare or as a decorator. Duplicates are refused."""

        def add(target: Callable[..., Any]) -> Callable[..., Any]:
            exact = name.lower()
            if exact in self._entries:
                raise ValueError(f"{self.kind}: {name!r} is already registered")
            self._entries[exact] = Entry(name, target, summary or first_line(target), meta)
            for alias in (name, *aliases):
                key = normalize(alias)
                self._keys[key] = exact if self._keys.get(key, exact) == exact else None
            return target

        return add if obj is None else add(obj)

    def leave_out(self, name: str, reason: str) -> None:
        """Record that `name` exists elsewhere (in torch, ...) but is not registered, and why."""
        self._left_out[normalize(name)] = reason

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def entry(self, name: str) -> Entry:
        """The entry for `name`; raises ConfigError with the closest names when unknown."""
        found = self.find(name)
        if found is None:
            raise ConfigError(self.unknown(name))
        return found

    def find(self, name: str) -> Entry | None:
        """Exact (case-insensitive) name first, then the name without `_`/`-` if that is unambiguous."""
        self._load()
        exact = str(name).lower()
        if exact in self._entries:
            return self._entries[exact]
        key = self._keys.get(normalize(str(name)))
        return self._entries[key] if key else None

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).obj

    def names(self) -> list[str]:
        self._load()
        return sorted(e.name for e in self._entries.values())

    def unknown(self, name: str) -> str:
        """The message for an unknown name: a 'did you mean' and where to see the list."""
        if normalize(str(name)) in self._left_out:
            return (f"{self.item} {name!r} is not available in guide: it {self._left_out[normalize(str(name))]}; "
                    f"see `guide list {self.kind}`")
        names = self.names()
        by_key = {normalize(n): n for n in names}
        close = difflib.get_close_matches(normalize(str(name)), list(by_key), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(by_key[c] for c in close)}?" if close else ""
        if len(names) <= 12:
            listing = f"choose from {', '.join(names)}"
        else:
            listing = f"see `guide list {self.kind}` ({len(names)} names)"
        return f"unknown {self.item} {name!r}; " + (
            f"{hint} " if hint else ""
        ) + listing

    def signature(self, name: str) -> inspect.Signature | None:
        try:
            return inspect.signature(self.get(name))
        except (TypeError, ValueError):
            return None

    def check_kwargs(self, name: str, kwargs: dict[str, Any], supplied: Iterable[str] = ()) -> list[str]:
        """Problems with `kwargs` for entry `name`, given the names the code supplies itself.

        Reports unknown arguments (with a 'did you mean'), required arguments that are
        neither given nor supplied, and arguments the code sets (they must not be in YAML).
        """
        sig = self.signature(name)
        if sig is None:
            return []
        supplied = set(supplied)
        params = sig.parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = [n for n, p in params.items()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        problems = []
        for key in kwargs:
            if key in supplied and key in named:
                problems.append(f"{key}: set by guide from the data, remove it from the config")
            elif key not in named and not takes_any:
                close = difflib.get_close_matches(key, named, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append(
                    f"{key}: not an argument of {self.entry(name).name}; {hint}"
                    f"it takes {', '.join(n for n in named if n not in supplied) or 'no arguments'}"
                )
        for n in named:
            p = params[n]
            if p.default is inspect.Parameter.empty and n not in kwargs and n not in supplied:
                problems.append(f"{n}: required by {self.entry(name).name}, add `{n}: ...`")
        return problems + self.check_types(name, {k: v for k, v in kwargs.items() if k in named})

    def check_types(self, name: str, kwargs: dict[str, Any]) -> list[str]:
        """Problems with the types of `kwargs` against entry `name`'s annotations (see annotations.py)."""
        from torchguide.annotations import annotations_of, check_value

        hints = annotations_of(self.get(name))
        problems = []
        for key, value in kwargs.items():
            problem = check_value(hints[key], value) if key in hints else None
            if problem:
                problems.append(f"{key}: {problem}")
        return problems

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build entry `name`; an argument torch rejects becomes a GuideError naming it."""
        entry = self.entry(name)
        try:
            return entry.obj(*args, **kwargs)
        except GuideError:
            raise
        except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
            raise ConfigError(f"cannot build {self.item} {entry.name!r}: {one_line(exc)}") from exc

    def describe(self, name: str) -> dict[str, str]:
        """Name, signature and one-line summary, for `guide list`."""
        entry = self.entry(name)
        sig = self.signature(name)
        return {"name": entry.name, "signature": str(sig) if sig else "(...)", "summary": entry.summary}


def first_line(obj: Any) -> str:
    """The first sentence of an object's docstring, or ''."""
    doc = inspect.getdoc(obj) or ""
    para = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    end = para.find(". ")
    return (para[: end + 1] if end != -1 else para)[:160]


def one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


MODELS = Registry("models", ["torchguide.models.image", "torchguide.models.text"])
DATASETS = Registry("datasets", ["torchguide.data.image", "torchguide.data.text"])
TRANSFORMS = Registry("transforms", ["torchguide.data.transforms"])
BATCH_TRANSFORMS = Registry("batch_transforms", ["torchguide.data.batch_transforms"])
COLLATES = Registry("collates", ["torchguide.data.collate"])
SAMPLERS = Registry("samplers", ["torchguide.data.samplers"])
LOSSES = Registry("losses", ["torchguide.losses"])
OPTIMIZERS = Registry("optimizers", ["torchguide.optim"])
SCHEDULERS = Registry("schedulers", ["torchguide.optim"])
LAYERS = Registry("layers", ["torchguide.layers"])

REGISTRIES = {r.kind: r for r in (
    MODELS, DATASETS, TRANSFORMS, BATCH_TRANSFORMS, COLLATES, SAMPLERS, LOSSES, OPTIMIZERS, SCHEDULERS, LAYERS
)}
