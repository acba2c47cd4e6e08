"""YAML configs: load, apply `key=value` overrides, validate everything at once.

A config is checked in two passes, and every problem of both is reported together,
each with its path (`optimizer.lr: ...`):

1. structure: known keys, types, ranges (pydantic models below, unknown keys refused);
2. components: each `{name: ..., **kwargs}` section is looked up in its registry and
   its kwargs are checked against the builder's signature, before anything is built.

Configs are read with a `yaml.SafeLoader` (no Python objects); the only way a config runs code is `imports:`,
which imports the named modules or files so their decorators register components.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from torchguide.errors import ConfigError, GuideError
from torchguide.files import special_kind
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
    one_line,
)

Strict = ConfigDict(extra="forbid")


class Component(BaseModel):
    """A `{name: ..., **kwargs}` section: a registry entry and its arguments."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        """The builder's arguments: every key but `name` and the section's own declared keys."""
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave declared keys at their default out of a dumped config, so resolved configs and
        checkpoints written before a key existed compare equal to new ones."""
        data = handler(self)
        for key, field in type(self).model_fields.items():
            if key != "name" and getattr(self, key) == field.get_default(call_default_factory=True):
                data.pop(key, None)
        return data


def as_patterns(value: Any) -> Any:
    """A single pattern `'fc.*'` as the one-item list `['fc.*']`."""
    return [value] if isinstance(value, str) else value


class ModelSection(Component):
    """`model:`: the builder's name and arguments, plus `freeze`, which guide applies itself."""

    freeze: list[str] | None = Field(default=None, min_length=1)

    @field_validator("freeze", mode="before")
    @classmethod
    def one_or_many(cls, value: Any) -> Any:
        return as_patterns(value)


class ParamGroup(BaseModel):
    """One entry of `optimizer.groups`: parameter-name patterns and the optimizer options for them."""

    model_config = ConfigDict(extra="allow")
    params: list[str] = Field(min_length=1)

    @field_validator("params", mode="before")
    @classmethod
    def one_or_many(cls, value: Any) -> Any:
        return as_patterns(value)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerSection(Component):
    """`optimizer:`: the optimizer's name and arguments, plus parameter groups, which guide builds."""

    groups: list[ParamGroup] = []
    no_decay_norm_bias: bool = False


class ValidSpec(BaseModel):
    """Validation data: a dataset of its own (`name: ...`) or a share of train (`split: 0.1`)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    split: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def one_of(self) -> ValidSpec:
        if (self.name is None) == (self.split is None):
            raise ValueError("give either `split: 0.1` or a dataset `name: ...`, not both or neither")
        if self.split is not None and self.model_extra:
            raise ValueError(f"`split` takes no other keys, got {', '.join(self.model_extra)}")
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BatchTransform(Component):
    """A `data.batch_transforms` entry: a batch transform, its arguments and `p`, its share of the batches."""

    p: float = Field(default=1.0, ge=0, le=1)


class Transforms(BaseModel):
    model_config = Strict
    train: list[str | Component] | None = None
    eval: list[str | Component] | None = None


class Loader(BaseModel):
    model_config = Strict
    batch_size: int = Field(default=64, gt=0)
    eval_batch_size: int | None = Field(default=None, gt=0)
    num_workers: int | Literal["auto"] = "auto"
    pin_memory: bool | Literal["auto"] = "auto"
    drop_last: bool = False

    @model_validator(mode="after")
    def workers(self) -> Loader:
        if isinstance(self.num_workers, int) and self.num_workers < 0:
            raise ValueError("num_workers must be >= 0 or 'auto'")
        return self


class VocabSection(BaseModel):
    """`data.vocab:`: how the vocabulary of a text dataset is built from its training split."""

    model_config = Strict
    min_freq: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=None, gt=2)
    max_len: int | None = Field(default=None, gt=0)


class DataSection(BaseModel):
    """`data:`: the datasets of each split and how they are transformed, batched and loaded."""

    model_config = Strict
    train: Component
    valid: ValidSpec | None = None
    test: Component | None = None
    transforms: Transforms = Transforms()
    batch_transforms: list[BatchTransform] = []
    loader: Loader = Loader()
    collate: Component = Component(name="default")
    sampler: Component = Component(name="random")
    vocab: VocabSection = VocabSection()
    cache: Literal["none", "memory"] = "none"

    @field_validator("batch_transforms", mode="before")
    @classmethod
    def bare_names(cls, items: Any) -> Any:
        return [{"name": it} if isinstance(it, str) else it for it in items] if isinstance(items, list) else items

    @field_validator("batch_transforms")
    @classmethod
    def one_mix_per_batch(cls, items: list[BatchTransform]) -> list[BatchTransform]:
        total = sum(it.p for it in items)
        if total > 1 + 1e-9:
            raise ValueError(f"the p values add up to {total:g}; at most one entry mixes a batch, so they must add "
                             "up to at most 1 (e.g. p: 0.5 each for two)")
        return items


class EarlyStopping(BaseModel):
    model_config = Strict
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class CheckpointEvery(BaseModel):
    model_config = Strict
    steps: int | None = Field(default=None, gt=0)


class Train(BaseModel):
    model_config = Strict
    epochs: int = Field(default=5, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    strategy: Literal["auto", "single", "dp", "ddp"] = "auto"
    grad_clip: float | None = Field(default=None, gt=0)
    accumulate: int = Field(default=1, ge=1)
    monitor: Literal["valid_acc", "valid_loss", "train_loss", "train_acc"] = "valid_acc"
    early_stopping: EarlyStopping | None = None
    log_every: int = Field(default=50, gt=0)
    checkpoint_every: CheckpointEvery | Literal["epoch"] = "epoch"
    keep_last: int = Field(default=0, ge=0)
    on_nan: Literal["stop", "skip"] = "stop"
    threads: int | Literal["auto"] = "auto"
    deterministic: bool = False  # bit-identical repeats on one machine, at some speed

    @field_validator("threads")
    @classmethod
    def positive_threads(cls, threads: int | str) -> int | str:
        if isinstance(threads, int) and threads < 1:
            raise ValueError("give a number of threads >= 1, or auto")
        return threads

    @field_validator("device")
    @classmethod
    def device_name(cls, device: str) -> str:
        base, _, index = device.partition(":")
        if base not in ("auto", "cpu", "cuda", "mps") or (index and not (base == "cuda" and index.isdigit())):
            raise ValueError("choose auto, cpu, cuda, cuda:N or mps")
        return device


class Output(BaseModel):
    model_config = Strict
    dir: str = "runs"

    @field_validator("dir")
    @classmethod
    def expand_home(cls, folder: str) -> str:
        """`~/runs` means the home folder, as in a shell (not a folder named `~`)."""
        return os.path.expanduser(folder)


class Config(BaseModel):
    model_config = Strict
    name: str = Field(min_length=1)
    task: Literal["image", "text"] | None = None
    seed: int = 0
    imports: list[str] = []
    data: DataSection
    model: ModelSection
    loss: Component = Component(name="cross_entropy")
    optimizer: OptimizerSection = OptimizerSection(name="adam", lr=1e-3)
    scheduler: Component = Component(name="none")
    train: Train = Train()
    output: Output = Output()
    _imported: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def imported(self) -> list[dict[str, Any]]:
        """`imports:` as found when the config was loaded: `{"import": as written, "path": absolute
        file or None for a module}` each; checkpoints record it so eval, predict and resume import it again."""
        return self._imported

    @field_validator("name")
    @classmethod
    def run_name(cls, name: str) -> str:
        if not re.fullmatch(r"[\w-][\w.-]*", name):
            raise ValueError("use letters, digits, '.', '_' and '-' only, not starting with '.': "
                             "it names the run's folder inside output.dir")
        return name


# ---------------------------------------------------------------- loading


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

DEFAULT_COMPONENTS = {"loss": {"name": "cross_entropy"}, "optimizer": {"name": "adam", "lr": 1e-3},
                      "scheduler": {"name": "none"}}

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
                          "check the path") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", source=str(path)) from None


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
        raise ConfigError(f"YAML syntax error{where}: {problem}", source=str(path)) from None
    if raw is None:
        raise ConfigError("the file is empty: start from a shipped config in configs/", source=str(path))
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


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` and `~key` overrides to a raw config mapping (in place)."""
    for text in overrides:
        parts, value, delete = parse_override(text)
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


# ---------------------------------------------------------------- validation

def load_config(path: str | Path | None, overrides: list[str] = (), *,
                task: str | None = None, raw: dict[str, Any] | None = None) -> Config:
    """Load, override and validate a config; raises ConfigError listing every problem.

    Args:
        path: the YAML file (None when `raw` is given).
        overrides: `key=value` / `~key` strings applied in order.
        task: the command's task (`image` or `text`); a config for the other task is refused.
    """
    source = str(path) if path else None
    if raw is None:
        raw = read_yaml(path)
    for key, section in DEFAULT_COMPONENTS.items():  # so `optimizer.lr=...` works on a config without one
        raw.setdefault(key, dict(section))
    raw = apply_overrides(raw, list(overrides))
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
        problems += [p for p in check_components(raw, task) if p not in problems]
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


SHOWN_NAMES = {"DataSection": "Data", "VocabSection": "Vocab"}


def format_validation(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-after", "union"))]
        loc = [p for p in loc if p not in ("str", "Component", "int", "float", "bool", "literal['auto']",
                                           "literal['epoch']", "CheckpointEvery", "EarlyStopping")]
        path = ".".join(loc) or "(top)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = ".".join(loc[:-1])
            fields = section_fields(loc[:-1])
            msg = "unknown key" + (f"; {parent or 'the top level'} takes {', '.join(fields)}" if fields else "")
        elif kind == "missing":
            msg = "required, add it"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if kind == "model_type":  # pydantic names the class; keep the names users have always seen
                name = err["ctx"]["class_name"]
                msg = msg.replace(name, SHOWN_NAMES.get(name, name))
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {err['input']!r})"
        problems.append(f"{path}: {msg}")
    return sorted(set(problems), key=problems.index)


def section_fields(loc: list[str]) -> list[str]:
    """The keys a config section takes, for an 'unknown key' message."""
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
    return list(getattr(model, "model_fields", {}))


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


def check_components(raw: dict[str, Any], task: str | None = None) -> list[str]:
    """Look up every named component of a raw config and check its kwargs against its signature.

    Works on the raw mapping, so these problems are reported together with structural ones.
    `task` is the command's (`image`, `text`), when it has one.
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
        for p in registry.check_kwargs(name, kwargs, supplied | filled):
            if not (p.split(":", 1)[0] in filled and "set by guide" in p):
                problems.append(f"{path}.{p}")
        check = registry.entry(name).meta.get("check")  # an entry's own check of its values
        problems += [f"{path}.{p}" for p in (check(kwargs) if check else [])]
    problems += optimizer_option_problems(section_at(raw, "optimizer"))
    loss = section_at(raw, "loss.name")
    if isinstance(loss, str) and loss in LOSSES and LOSSES.entry(loss).meta.get("target", "x") is None:
        problems.append(f"loss.name: {LOSSES.entry(loss).name} does not train a classifier; "
                        "use cross_entropy, nll, bce_with_logits, kl_div, mse, ...")
    return problems + batch_transform_problems(raw, task)


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


SECTION_TYPES: dict[str, type[Component]] = {"model": ModelSection, "optimizer": OptimizerSection}


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


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, the form written into runs and checkpoints."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
