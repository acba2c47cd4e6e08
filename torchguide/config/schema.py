"""The config's sections as pydantic models: known keys, types and ranges, unknown keys refused.

`format_validation` turns pydantic's errors into one line per problem, each with its path
(`optimizer.lr: ...`) and, for an unknown key, the keys the section takes.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal

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


class LateKeys(BaseModel):
    """A section whose keys added in later versions (`late`) leave a dumped config while at their default,
    so configs and checkpoints written before those keys existed compare equal to new ones."""

    late: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def drop_late_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in self.late:
            if getattr(self, key) == type(self).model_fields[key].get_default(call_default_factory=True):
                data.pop(key, None)
        return data


class Ema(BaseModel):
    """`train.ema:`: an exponential moving average of the weights, updated after every optimizer step."""

    model_config = Strict
    decay: float = Field(default=0.999, gt=0, lt=1)
    warmup: bool = False  # the decay grows as 1 - step ** (-2/3) up to `decay` (timm's warm-up)


class EarlyStopping(BaseModel):
    model_config = Strict
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class CheckpointEvery(BaseModel):
    model_config = Strict
    steps: int | None = Field(default=None, gt=0)


class Train(LateKeys):
    model_config = Strict
    late = ("ema",)
    epochs: int = Field(default=5, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"  # image models: the NHWC memory layout
    compile: bool | Literal["auto"] = "auto"  # torch.compile the model
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
    ema: Ema | None = None

    @field_validator("ema", mode="before")
    @classmethod
    def ema_switch(cls, ema: Any) -> Any:
        """`train.ema: true` means the default EMA, `false` none."""
        if isinstance(ema, bool):
            return {} if ema else None
        if ema is not None and not isinstance(ema, dict | Ema):
            raise ValueError("give true, or the settings: {decay: 0.999, warmup: false}")
        return ema

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


class Output(LateKeys):
    model_config = Strict
    late = ("tensorboard",)
    dir: str = "runs"
    tensorboard: bool = False  # TensorBoard event files in runs/NAME/tensorboard/

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


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, the form written into runs and checkpoints."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


SHOWN_NAMES = {"DataSection": "Data", "VocabSection": "Vocab"}


def format_validation(exc: ValidationError) -> list[str]:
    """pydantic's errors as one line each, `path: problem`, in order and without repeats."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-after", "union"))]
        loc = [p for p in loc if p not in ("str", "Component", "int", "float", "bool", "literal['auto']",
                                           "literal['epoch']", "CheckpointEvery", "EarlyStopping", "Ema")]
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
