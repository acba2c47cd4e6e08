"""Component arguments checked against the builder's type annotations, before anything is built.

A config gives components plain YAML values (numbers, strings, booleans, lists,
mappings). `check_value` translates a parameter's annotation into the YAML values it can
take and checks the config's value with pydantic: `width: abc` against `width: int` is a
config error at validation, not a Python error halfway through building. What has no YAML
form (a class, a callable, a dtype) is not checked here; the builder still is.

- `torch.Tensor` takes a number or a (nested) list of numbers (`loss.weight: [1, 2]`);
- `numbers.Number` / `Real` take a number, `Integral` an integer, an Enum a string or int;
- a string is never silently read as a number: `lr: "0.1"` (quoted in YAML) is refused.
"""

from __future__ import annotations

import enum
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

SKIP = object()  # an annotation with no YAML form: the value is not checked

NUMBERS = list[float] | list[list[float]]
ATOMS: dict[Any, Any] = {
    int: int, float: float, str: str, bool: bool, type(None): type(None),
    numbers.Number: float, numbers.Real: float, numbers.Integral: int,
}
SEQUENCES = (list, tuple, Sequence, Iterable, set, frozenset)


def annotations_of(obj: Callable[..., Any]) -> dict[str, Any]:
    """A builder's parameter annotations as objects (string annotations are resolved; failures left out)."""
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an unresolvable name in some annotation: resolve the others one by one
        hints = {}
    found = {}
    namespace = getattr(target, "__globals__", {})
    for name, param in sig.parameters.items():
        ann = hints.get(name, param.annotation)
        if isinstance(ann, str):
            try:
                ann = eval(ann, dict(namespace))  # noqa: S307 (an annotation of registered code)
            except Exception:
                continue
        if ann is not inspect.Parameter.empty:
            found[name] = ann
    return found


def yaml_type(ann: Any) -> Any:
    """The YAML values annotation `ann` accepts, as a type pydantic checks; SKIP when it has no YAML form."""
    if ann is Any or isinstance(ann, typing.TypeVar | typing.ForwardRef):
        return SKIP
    if ann in ATOMS:
        return ATOMS[ann]
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return str | int
    if getattr(ann, "__name__", None) == "Tensor" and getattr(ann, "__module__", "").startswith("torch"):
        return float | NUMBERS
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return ann
    if origin in (typing.Union, types.UnionType):
        members = [yaml_type(a) for a in args]
        return SKIP if any(m is SKIP for m in members) else functools.reduce(lambda a, b: a | b, members)
    if origin is tuple or ann is tuple:
        if not args or args[-1] is Ellipsis:
            item = yaml_type(args[0]) if args else Any
            return SKIP if item is SKIP else tuple[item, ...]
        items = tuple(yaml_type(a) for a in args)
        return SKIP if SKIP in items else tuple[items]
    if origin in SEQUENCES or ann in SEQUENCES:
        item = yaml_type(args[0]) if args else Any
        return SKIP if item is SKIP else list[item]
    if origin in (dict, Mapping) or ann in (dict, Mapping):
        value = yaml_type(args[1]) if len(args) == 2 else Any
        return SKIP if value is SKIP else dict[str, value]
    return SKIP


@functools.lru_cache(maxsize=512)
def adapter(checked: Any) -> TypeAdapter:
    return TypeAdapter(checked)


def check_value(ann: Any, value: Any) -> str | None:
    """What is wrong with YAML `value` for a parameter annotated `ann`, or None when it fits."""
    checked = yaml_type(ann)
    if checked is SKIP:
        return None
    try:
        result = adapter(checked).validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"[{p}]" for p in err["loc"] if isinstance(p, int))
        return f"expected {type_name(ann)}, got {value!r} ({where + ': ' if where else ''}{err['msg'].lower()})"
    except Exception:  # pydantic cannot build a check for this type: leave it to the builder
        return None
    if read_text_as_number(value, result):
        return f"expected {type_name(ann)}, got the text {value!r}: write it without quotes"
    return None


def read_text_as_number(given: Any, result: Any) -> bool:
    """True where validation turned a YAML string into something else (`"0.1"` -> 0.1)."""
    if isinstance(given, str):
        return not isinstance(result, str | enum.Enum)
    if isinstance(given, list | tuple) and isinstance(result, list | tuple) and len(given) == len(result):
        return any(read_text_as_number(g, r) for g, r in zip(given, result, strict=True))
    if isinstance(given, dict) and isinstance(result, dict):
        return any(read_text_as_number(v, result.get(k)) for k, v in given.items())
    return False


def type_name(ann: Any) -> str:
    """A readable name of an annotation: `tuple[float | Tensor, float | Tensor]`, `Sequence[float] | None`."""
    if ann is type(None) or ann is None:
        return "None"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]" if args else base
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))
