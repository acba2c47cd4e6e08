"""Write the plain PyTorch script that a config means (`guide eject`).

`eject` loads and checks the config, reads the data once (for what only the data knows:
the class count, an image mode of `auto`, the number of loader workers of `auto`), and
writes one file that trains the same run with torch, torchvision, numpy and pillow.
Everything in it that touches the random stream or the batches (seeding, the split, the
sample that sizes the model, the samplers, the collate function, the loaders' own
generators) follows guide's order exactly, so that with the same seed and data, in one
process, in fp32 on the CPU, its per-epoch losses are guide's.

What has no short plain form is refused (`train.strategy: ddp`, a sampler or collate of
your own, which are guide types) or named in the script's header with the guide command
that gives it (DDP, exact resume, the preflight check, run directories).
"""

from __future__ import annotations

import ast
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from torchguide.build import resolve_target
from torchguide.config import Config, load_config
from torchguide.data.loaders import auto_workers, build_data
from torchguide.eject import blocks
from torchguide.eject.batches import write_batches
from torchguide.eject.data import write_data
from torchguide.eject.layout import tidy
from torchguide.eject.loop import write_loop, write_training
from torchguide.eject.model import write_model
from torchguide.eject.plan import GUIDE_MIXES, Facts, Script, collate_name, mix_name, sampler_name, script_path
from torchguide.eject.source import literal
from torchguide.errors import ConfigError, GuideError
from torchguide.files import special_kind, write_text_atomic
from torchguide.losses import loss_meta
from torchguide.registry import MODELS

GUIDE_SAMPLERS = {"random", "sequential", "sorted", "length_buckets"}
GUIDE_COLLATES = {"default", "pad_to_longest", "pad_to_length"}
ALLOWED_GUIDE_IMPORTS = {"torchguide", "torchguide.registry"}  # what the script's stand-in provides


def eject(path: Path, overrides: list[str], out: Path | None = None, force: bool = False) -> str:
    """The standalone training script of config `path` with `overrides`, as text.

    `out` is where it will be written (checked first, see `check_out`), None for stdout.

    Raises:
        GuideError: `out` cannot be written.
        ConfigError: the config is invalid, or uses what has no plain form (naming it).
        DataError: the data cannot be read.
    """
    if out is not None:
        check_out(out, force)
    config = load_config(path, overrides)
    refuse(config)
    facts = read_facts(config, path, overrides)
    script = Script()
    write_settings(script, facts)
    write_user_code(script, facts)
    write_model(script, facts)
    write_data(script, facts)
    write_batches(script, facts)
    write_training(script, facts)
    write_loop(script, facts)
    return render(script, facts, str(out or "train.py"))


def check_out(out: Path, force: bool = False) -> None:
    """Refuse an --out in a folder that does not exist, a folder or device, or an existing file without `force`."""
    if not out.parent.is_dir():
        raise GuideError(f"--out {out}: the folder {out.parent} does not exist", "create it first")
    kind = special_kind(out)
    if kind:
        raise GuideError(f"--out {out} is {kind}, not a file", "give the path of a .py file to write")
    if out.exists() and not force:
        raise GuideError(f"--out {out} exists", "add --force to overwrite it")


def write_script(text: str, out: Path) -> Path:
    """Write the script to `out` in one piece (a temporary file renamed into place)."""
    return write_text_atomic(out, text)


# ------------------------------------------------------------------ checks and facts

def refuse(config: Config) -> None:
    """What the script cannot reproduce in plain PyTorch, all at once, each naming its config key."""
    problems = []
    if config.train.strategy in ("ddp", "dp"):
        problems.append(f"train.strategy: {config.train.strategy} has no plain single-process form: eject with "
                        "train.strategy=auto (the script trains in one process), or train it with guide")
    if sampler_name(config) not in GUIDE_SAMPLERS:
        problems.append(f"data.sampler.name: {config.data.sampler.name} is a sampler of your own, a torchguide "
                        "EpochBatchSampler, which the script cannot hold: eject with one of guide's samplers")
    if collate_name(config) not in GUIDE_COLLATES:
        problems.append(f"data.collate.name: {config.data.collate.name} is a collate of your own, which returns a "
                        "torchguide Batch the script cannot hold: eject with one of guide's collates")
    if config.train.ema is not None:
        problems.append("train.ema: the script keeps no moving average of the weights: eject without it "
                        "(~train.ema), or train with guide")
    for i, item in enumerate(config.data.batch_transforms):
        if mix_name(item.name) not in GUIDE_MIXES:
            problems.append(f"data.batch_transforms.{i}.name: {item.name} is not one of guide's (mix_up, cut_mix)")
    for i, found in enumerate(config.imported):
        if found["path"]:
            problems += [f"imports[{i}]: {found['import']} imports {name}, which the script cannot provide "
                         "without guide: keep to torchguide.registry there" for name in guide_imports(found["path"])]
    if problems:
        raise ConfigError(problems)


def guide_imports(path: str) -> list[str]:
    """The torchguide modules a user's file imports beyond the registry (the script stands in for that one)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "torchguide"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torchguide":
            found += [node.module] if node.module != "torchguide" else \
                [f"torchguide.{a.name}" for a in node.names]
    return sorted({name for name in found if name not in ALLOWED_GUIDE_IMPORTS})


def read_facts(config: Config, path: Path, overrides: list[str]) -> Facts:
    """Read the data as a run would (train and valid, then test) and what it decides."""
    data = build_data(config, ("train", "valid"))
    test = None
    if config.data.test is not None:
        test = build_data(config, ("test",), classes=data.classes, vocab=data.vocab, vocab_size=data.vocab_size)
    target, outputs = resolve_target(config.loss.name, data.num_classes)
    output_kind, _ = loss_meta(config.loss.name)
    train = data.splits["train"]
    if config.data.loader.num_workers == "auto":
        workers = 0 if config.data.cache == "memory" else auto_workers(train, data.task)
    else:
        workers = config.data.loader.num_workers
    if data.task == "image" and MODELS.entry(config.model.name).meta.get("source") == "torchvision" \
            and data.in_channels != 3:
        raise ConfigError(f"model.name: {config.model.name} takes 3-channel images, the data has "
                          f"{data.in_channels}", "add `mode: RGB` to the dataset sections")
    args = ["--config", str(path), *overrides]
    return Facts(config, args, data, test, target, outputs, output_kind, workers, config.train.precision)


# ------------------------------------------------------------------ settings and your own code

def write_settings(script: Script, facts: Facts) -> None:
    """The constants at the top: the config's numbers, the device and the precision."""
    cfg, train = facts.config, facts.config.train
    script.imports.module("torch")
    lines = [f"SEED = {cfg.seed}  # seed", f"EPOCHS = {train.epochs}  # train.epochs",
             f"BATCH_SIZE = {cfg.data.loader.batch_size}  # data.loader.batch_size"]
    if cfg.data.loader.eval_batch_size:
        lines.append(f"EVAL_BATCH_SIZE = {cfg.data.loader.eval_batch_size}  # data.loader.eval_batch_size")
    if train.max_steps:
        lines.append(f"MAX_STEPS = {train.max_steps}  # train.max_steps: the run ends after this many steps")
    if train.accumulate > 1:
        lines.append(f"ACCUMULATE = {train.accumulate}  # train.accumulate: batches whose gradients add up to a step")
    if train.grad_clip:
        lines.append(f"GRAD_CLIP = {train.grad_clip}  # train.grad_clip: the largest gradient norm")
    if facts.task == "text":
        lines.append(f"MAX_LEN = {cfg.data.vocab.max_len}  # data.vocab.max_len: tokens kept of each text")
    if facts.target == "onehot" or cfg.data.batch_transforms:
        lines.append(f"NUM_CLASSES = {facts.data.num_classes}  # the classes of the training data")
    why = (f"{cfg.data.loader.num_workers}" if cfg.data.loader.num_workers != "auto" else
           f"auto: {len(facts.data.splits['train'])} {'texts' if facts.task == 'text' else 'images'} load "
           + ("faster in this process" if facts.workers == 0 else f"in {facts.workers} worker processes"))
    lines.append(f"NUM_WORKERS = {facts.workers}  # data.loader.num_workers {why}")
    lines += device_lines(facts)
    script.settings = lines


def device_lines(facts: Facts) -> list[str]:
    """DEVICE and, where the run may use it, AUTOCAST: guide's choices for train.device and train.precision."""
    train = facts.config.train
    if train.device == "auto":
        lines = ["# train.device auto: a GPU when there is one",
                 'DEVICE = torch.device("cuda" if torch.cuda.is_available() else "mps" if '
                 'torch.backends.mps.is_available() else "cpu")']
    else:
        lines = [f"DEVICE = torch.device({literal(train.device)})  # train.device"]
    if not facts.autocast:
        return lines
    if facts.precision in ("bf16", "fp16"):
        dtype = "bfloat16" if facts.precision == "bf16" else "float16"
        return [*lines, f"AUTOCAST = torch.{dtype}  # train.precision {facts.precision}: autocast"]
    choose = "torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16"
    if train.device.startswith("cuda"):
        return [*lines, "# train.precision auto: bf16 autocast where the GPU computes bf16 natively, else fp16 "
                "with loss scaling", f"AUTOCAST = {choose}"]
    return [*lines, "# train.precision auto: on a GPU, bf16 autocast where it computes bf16 natively, else fp16",
            "# with loss scaling; fp32 elsewhere", "AUTOCAST = None", 'if DEVICE.type == "cuda":',
            f"    AUTOCAST = {choose}"]


def write_user_code(script: Script, facts: Facts) -> None:
    """The stand-in registry and the import of each file (or module) of `imports:`."""
    imported = facts.config.imported
    if not imported:
        return
    loads = []
    for found in imported:
        if found["path"]:
            name = user_name(Path(found["path"]).stem, script.users.values())
            script.users[module_of_file(found["path"])] = name
            loads.append(f"{name} = load_file({literal(script_path(found['path']))})  # imports: {found['import']}")
        else:
            loads.append(f"import {found['import']}  # noqa: E402 (after the stand-in registry)")
            script.users[found["import"]] = found["import"]
    if any(found["path"] for found in imported):
        for module in ("importlib.util", "sys", "types"):
            script.imports.module(module)
        script.imports.name("pathlib", "Path")
    script.section("your own code (imports:)", blocks.USER_CODE, "\n".join(loads))


def user_name(stem: str, taken: Any) -> str:
    """The script's name for a module of your own: `user_<file name>`, unique."""
    name = f"user_{stem}" if stem.isidentifier() else "user_code"
    while name in taken:
        name += "_"
    return name


def module_of_file(path: str) -> str:
    """The module name guide imported a file under (see torchguide.config.import_file)."""
    return next(name for name, module in list(sys.modules.items())
                if getattr(module, "__file__", None) and os.path.realpath(module.__file__) == os.path.realpath(path))

# ------------------------------------------------------------------ the file

RULE = "# " + "-" * 66


def render(script: Script, facts: Facts, name: str) -> str:
    """The whole file: header, imports, settings, the sections, main()."""
    script.imports.module("os")
    script.imports.name("__future__", "annotations")
    parts = ["\n".join(script.settings)]
    for title, texts in script.sections:
        body = "\n\n\n".join(texts)
        parts.append(f"{RULE[:118 - len(title)]} {title}\n\n{body}" if title else body)
    parts.append("def main():\n" + "\n".join(script.main))
    parts.append('if __name__ == "__main__":\n    main()')
    code = "\n\n\n".join(p.strip("\n") for p in parts)
    return f"{header(script, facts, name)}\n\n" + "\n".join(script.imports.lines()) + f"\n\n{tidy(code)}\n"


def header(script: Script, facts: Facts, name: str) -> str:
    """The docstring: what the script is, how to run it, and what guide adds that it leaves out."""
    cfg = facts.config
    command, check = facts.command(f"train-{facts.task}"), facts.command("check")
    notes = [("several processes or GPUs (DistributedDataParallel):", f"{command} --nproc 2"),
             ("an exact resume, mid-epoch too (checkpoints keep the random and sampler state):",
              f"{command} --resume auto"),
             ("the check before the first step (two samples through the model and the loss), and more:", check),
             ("progress bars, metrics.jsonl and .csv, curves.png, last.pt and best.pt:", command)]
    if cfg.data.cache == "memory":
        notes.append(("data.cache: memory keeps decoded images between epochs; here every epoch decodes them "
                      "(the same numbers)", ""))
    lines = [f'"""{cfg.name}: the plain PyTorch of `{command}`.', "",
             "Written by `guide eject`: the model, the Dataset, the transforms, the DataLoader with its sampler and",
             "collate function, the loss, the optimizer and scheduler, and the train/validate loop, in one file",
             "that needs only torch, torchvision, numpy and pillow. Run it from the folder guide ran in (the data",
             "paths are relative to it):", "", f"    python {name}", "",
             "With the same seed and data, in one process, in fp32 on the CPU, every epoch's train and validation",
             "losses match guide's to 4 decimals.", "",
             "What guide adds that has no short plain form, and the command that gives it:",
             *(textwrap.fill(what, 100, initial_indent="- ", subsequent_indent="  ")
               + (f"\n      {how}" if how else "") for what, how in notes)]
    if script.notes:
        lines += ["", "Besides torch and torchvision this script " + "; ".join(sorted(set(script.notes))) + "."]
    return "\n".join(lines) + '\n"""'
