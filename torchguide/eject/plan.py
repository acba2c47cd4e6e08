"""What an ejected script is made of: the facts a config and its data decide (`Facts`), the parts
being written (`Script`), and how the script names a component (guide's source, torch's public name,
your file, or an import).
"""

from __future__ import annotations

import inspect
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchguide.config import Config
from torchguide.data.loaders import Data
from torchguide.eject.source import Imports, Sources, literal
from torchguide.errors import GuideError
from torchguide.optim import scheduler_interval
from torchguide.registry import BATCH_TRANSFORMS, COLLATES, SAMPLERS, SCHEDULERS

GUIDE_MIXES = {"mix_up": "MixUp", "cut_mix": "CutMix"}  # guide's batch transforms: torchvision's classes
OUTPUT_WORDS = {"logits": "raw scores (logits)", "log_probs": "log-probabilities (a LogSoftmax last)",
                "probs": "probabilities", "scores": "any scores"}
TARGET_WORDS = {"index": "class indices", "onehot": "one-hot rows", "binary": "one float per sample (0 or 1)",
                "binary_signed": "one float per sample (-1 or 1)"}
TARGET_CODE = {"index": "labels", "onehot": "F.one_hot(labels, NUM_CLASSES).float()",
               "binary": "labels.float().unsqueeze(1)", "binary_signed": "labels.float().mul(2).sub(1).unsqueeze(1)"}


@dataclass
class Facts:
    """What the config and its data decide about the script."""

    config: Config
    args: list[str]  # --config PATH and the overrides, as given
    data: Data
    test: Data | None
    target: str  # how labels become the loss's target (index, onehot, binary, ...)
    outputs: int  # the model's outputs: the class count, or 1 for a binary loss on two classes
    output_kind: str | None
    workers: int
    precision: str  # train.precision: auto, fp32, bf16, fp16

    def command(self, verb: str) -> str:
        """The guide command `verb` (train-image, check, ...) on this config, as a shell line."""
        return shlex.join(["guide", verb, *self.args])

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def scheduler(self) -> str:
        """The scheduler's registered name (`none` for a constant learning rate)."""
        return SCHEDULERS.entry(self.config.scheduler.name).name

    @property
    def steps_scheduler(self) -> bool:
        """Whether the scheduler steps after every optimizer step (else after every epoch, or never)."""
        return self.scheduler != "none" and scheduler_interval(self.scheduler) == "step"

    @property
    def autocast(self) -> bool:
        """Whether the run may compute in bf16/fp16 (then the script carries autocast): auto means it may on a GPU."""
        gpu = self.config.train.device.startswith(("auto", "cuda"))
        return self.precision in ("bf16", "fp16") or (self.precision == "auto" and gpu)

    @property
    def scaled(self) -> bool:
        """Whether the run may scale its loss (fp16, or auto on a GPU without bf16)."""
        return self.precision == "fp16" or (self.precision == "auto" and self.autocast)


@dataclass
class Script:
    """The parts of the script being written, in the order they appear."""

    imports: Imports = field(default_factory=Imports)
    settings: list[str] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)  # (title, blocks)
    main: list[str] = field(default_factory=list)  # lines of main(), indented
    notes: list[str] = field(default_factory=list)  # header: what guide adds
    users: dict[str, str] = field(default_factory=dict)  # module name -> its name in the script
    pending: list[str] = field(default_factory=list)  # text blocks for the next section
    data_lines: list[str] = field(default_factory=list)  # main(): the datasets
    model_lines: list[str] = field(default_factory=list)  # main(): the model
    loader_lines: list[str] = field(default_factory=list)  # main(): samplers and loaders
    training_lines: list[str] = field(default_factory=list)  # main(): loss, optimizer, scheduler
    test_loader: str | None = None  # the expression of the test loader

    def __post_init__(self) -> None:
        self.sources = Sources(self.imports)

    def add(self, *texts: str) -> None:
        """Text blocks for the section being written."""
        self.pending.extend(texts)

    def section(self, title: str, *texts: str) -> None:
        """Close a section: the guide source defined since the last one, the pending blocks and `texts`."""
        parts = [b.strip("\n") for b in (*self.sources.blocks, *self.pending, *texts) if b.strip()]
        self.sources.blocks.clear()
        self.pending.clear()
        if parts:
            self.sections.append((title, parts))


def sampler_name(config: Config) -> str:
    """The config's sampler by its registered name (an alias such as `buckets` resolved)."""
    return SAMPLERS.entry(config.data.sampler.name).name


def collate_name(config: Config) -> str:
    """The config's collate function by its registered name."""
    return COLLATES.entry(config.data.collate.name).name


def mix_name(name: str) -> str:
    """A batch transform by its registered name."""
    return BATCH_TRANSFORMS.entry(name).name


def script_path(path: str | Path) -> str:
    """A path as the script should name it: relative to the working directory when it lies inside it."""
    path = os.path.expanduser(str(path))
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def user_ref(script: Script, obj: Any) -> str:
    """The name of a component of your own in the script (`user_model.TinyCNN`); one defined in a module
    that an imported one imports is reached through its dotted name."""
    module = obj.__module__
    if getattr(sys.modules[module], obj.__name__, None) is not obj:
        raise GuideError(f"{obj!r} is not reachable as {module}.{obj.__name__}; the script cannot name it")
    return f"{script.users.get(module, module)}.{obj.__name__}"


def is_users(script: Script, obj: Any) -> bool:
    """Whether a registry entry is code of your own: from a file or module of `imports:` (or one they import)."""
    module = getattr(obj, "__module__", "") or ""
    return module in script.users or module.split(".")[0] in {name.split(".")[0] for name in script.users}


def component(script: Script, obj: Any, public: str) -> str:
    """How the script names a registry entry: guide's source, `public.Name` for torch's, your code through
    its file, anything else through an import."""
    module = getattr(obj, "__module__", "")
    top = module.split(".")[0]
    if top == "torchguide":
        return script.sources.define(obj)
    if top == "torch":
        return f"{public}.{obj.__name__}"
    if is_users(script, obj):
        return user_ref(script, obj)
    script.imports.name(top if getattr(sys.modules[top], obj.__name__, None) is obj else module, obj.__name__)
    if top not in ("torchvision", "numpy", "PIL"):
        package = top.replace("_", "-")
        script.notes.append(f"needs the {package} package ({obj.__name__}): pip install {package}")
    return obj.__name__


def kw(kwargs: dict[str, Any]) -> list[str]:
    """Keyword arguments as source: `name=value` each."""
    return [f"{k}={literal(v)}" for k, v in kwargs.items()]


def defaults_of(obj: Any) -> dict[str, Any]:
    """The default values of a callable's arguments."""
    return {k: p.default for k, p in inspect.signature(obj).parameters.items() if p.default is not p.empty}
