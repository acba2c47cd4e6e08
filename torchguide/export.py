"""`guide export`: a checkpoint's model as a file that runs without guide, checked against the model itself.

Three formats, each loaded back with torch or onnxruntime alone:

- `torchscript` (.pt): `torch.jit.trace` on a real batch; `torch.jit.load(FILE)`.
- `exported` (.pt2): `torch.export.export` + `torch.export.save`; `torch.export.load(FILE).module()`.
- `onnx` (.onnx): `torch.onnx.export`; `onnxruntime.InferenceSession(FILE)`. Models with recurrent
  layers go through torch's TorchScript-based exporter, which writes ONNX's own LSTM/GRU op with
  the batch's sequence lengths; the torch.export-based one (used for everything else) unrolls them
  over one fixed length, slowly.

The model is exported with a real batch from its config's data (random input of the recorded shape
when the data cannot be read) and must give the same outputs, loaded back from the exported bytes,
on that batch and on a smaller, shorter one that shows the batch size (and for text the sequence
length) is free. A file that disagrees beyond `TOLERANCE` is never written. Beside the file go
FILE.json (classes, inputs, output, preprocessing) and, for a text model, FILE.vocab.json.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from torchguide.build import build_from_checkpoint, make_loader_for
from torchguide.config import Config
from torchguide.data.image import ImageSamples
from torchguide.data.loaders import build_data
from torchguide.data.text import TextSamples, Vocab
from torchguide.data.transforms import build_pipeline
from torchguide.errors import DataError, GuideError
from torchguide.export_files import (
    CHECK_SIZE,
    DEFAULT_LENGTH,
    DIM_NAMES,
    FORMATS,
    INPUTS,
    ONNX_PACKAGES,
    TOLERANCE,
    describe,
    sidecar,
    vocab_sidecar,
)
from torchguide.files import write_atomic, write_text_atomic
from torchguide.runner import open_checkpoint


class ExportError(GuideError):
    """This format cannot export this model (or its packages are missing): exit 2, another format may."""


class ExportMismatch(GuideError):
    """The exported file does not compute what the checkpoint's model computes: exit 1, nothing written."""

    exit_code = 1


@dataclass
class Example:
    """The batch the model is exported with, and what a format that fixes a text length pads to."""

    inputs: tuple[torch.Tensor, ...]
    source: str  # where the batch came from, as the command says it
    length: int | None = None  # text: the sequence length a fixed-length export takes


@dataclass
class Exported:
    """An exported model: the file's bytes, the file loaded back, and which input sizes it leaves free."""

    data: bytes
    run: Callable[..., torch.Tensor]
    example: tuple[torch.Tensor, ...]  # the batch it was exported with
    shapes: list[list[int | None]]  # per input, None where the size is free
    exporter: str
    notes: list[str] = field(default_factory=list)


def export_checkpoint(path: str | Path, fmt: str, out: str | Path, *, force: bool = False,
                      imports: Sequence[str] = ()) -> dict[str, Any]:
    """Export the model of checkpoint `path` to `out` in format `fmt`, with its sidecar files, and return
    a summary. `imports`: where the checkpoint's code moved to (see `open_checkpoint`).

    Raises:
        GuideError: an unknown format, `out` in a missing folder, or files in the way without `force`.
        CheckpointError: the checkpoint cannot be loaded.
        ExportError: the format cannot export this model, or its packages are not installed.
        ExportMismatch: the exported file's outputs differ from the model's; nothing is written.
    """
    out = Path(out)
    check_request(fmt, out)
    payload = open_checkpoint(path, imports)
    config, model, vocab = build_from_checkpoint(payload)
    files = sidecar_paths(out, vocab)
    in_the_way = [p for p in (out, *files.values()) if p.exists()]
    if in_the_way and not force:
        raise GuideError(f"{in_the_way[0]} exists", "pass --force to replace it, or choose another --out")
    model.eval()
    example = example_batch(config, payload, vocab)
    exported = EXPORTERS[fmt](model, example, payload["task"])
    checks = check_outputs(model, exported, payload["task"], fmt)
    summary = {"checkpoint": str(path), **describe(config, payload, fmt, out, exported, example, checks)}
    write_text_atomic(files["json"], json.dumps(sidecar(summary, config, payload, out), indent=2) + "\n")
    if "vocab" in files:
        write_text_atomic(files["vocab"], json.dumps(vocab_sidecar(config, payload, vocab)) + "\n")
    write_atomic(out, lambda f: f.write(exported.data))  # last: the model file stands for a complete export
    for written in (out, *files.values()):
        written.chmod(0o666 & ~current_umask())  # write_atomic's files start private; these are to hand on
    summary["files"] = [str(out), *map(str, files.values())]
    return summary


def check_request(fmt: str, out: Path) -> None:
    """Refuse what needs no checkpoint to see: an unknown format, a missing folder, missing ONNX packages."""
    if fmt not in FORMATS:
        raise GuideError(f"unknown format {fmt!r}", f"choose {', '.join(FORMATS)}")
    if out.is_dir():
        raise GuideError(f"--out {out} is a folder", f"give a file name, e.g. {out / ('model' + FORMATS[fmt])}")
    if not out.parent.is_dir():
        raise GuideError(f"--out {out}: the folder {out.parent} does not exist", "create it first")
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None] if fmt == "onnx" else []
    if missing:
        raise ExportError(f"--format onnx needs {', '.join(missing)}",
                          f"pip install {' '.join(ONNX_PACKAGES)} (the [onnx] extra of torchguide)")


def sidecar_paths(out: Path, vocab: Vocab | None) -> dict[str, Path]:
    """FILE.json, and FILE.vocab.json for a model that reads text."""
    paths = {"json": out.with_name(out.name + ".json")}
    if vocab is not None:
        paths["vocab"] = out.with_name(out.name + ".vocab.json")
    return paths


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ the example batch

def example_batch(config: Config, payload: dict[str, Any], vocab: Vocab | None) -> Example:
    """Up to CHECK_SIZE samples of the checkpoint's data (its test split, else its training split), with the
    eval transforms; random input shaped like the training data when the data cannot be read."""
    split = "test" if config.data.test is not None else "train"
    facts = payload["facts"]
    try:
        data = build_data(config, (split,), classes=payload["classes"], vocab=vocab,
                          vocab_size=facts["vocab_size"])
    except DataError as exc:
        return random_batch(config, payload, f"the config's data cannot be read here ({exc.message})")
    dataset = data.splits[split]
    count = min(CHECK_SIZE, len(dataset))
    picked = spread(dataset, count)
    config.data.loader.eval_batch_size, config.data.loader.num_workers = count, 0
    batch = next(iter(make_loader_for(config, data, picked, train=False, device=torch.device("cpu"))))
    section = getattr(config.data, split)
    where = next((str(v) for k, v in section.kwargs.items() if k in ("root", "path")), section.name)
    source = f"{count} samples of the {split} data ({where})"
    if payload["task"] == "image":
        return Example(batch.inputs, source)
    return Example(batch.inputs, source, config.data.vocab.max_len or max(dataset.lengths))


def spread(dataset: ImageSamples | TextSamples, count: int) -> ImageSamples | TextSamples:
    """`count` samples evenly spaced through `dataset` (so over its classes), with its transforms."""
    indices = [i * len(dataset) // count for i in range(count)]
    if isinstance(dataset, ImageSamples):
        return dataset.view(indices, transform=dataset.transform)
    picked = dataset.subset(indices)
    picked.targets = [dataset.targets[i] for i in indices]  # subset() copies the labels, not their indices
    return picked


def random_batch(config: Config, payload: dict[str, Any], why: str) -> Example:
    """CHECK_SIZE random samples: images of the recorded shape through the eval pipeline's batch steps
    (to float, normalize), or token ids with lengths up to data.vocab.max_len."""
    facts, generator = payload["facts"], torch.Generator().manual_seed(0)
    if payload["task"] == "image":
        shape = facts.get("input_shape")
        if not shape:
            raise ExportError("this checkpoint records no input shape and its data cannot be read",
                              "run the export where the config's data paths exist")
        pixels = torch.randint(0, 256, (CHECK_SIZE, *shape), dtype=torch.uint8, generator=generator)
        images = build_pipeline(config.data.transforms.eval).finish(pixels)
        return Example((images.float(),), f"random input of the recorded shape {tuple(shape)}: {why}")
    length = config.data.vocab.max_len or DEFAULT_LENGTH
    lengths = torch.randint(1, length + 1, (CHECK_SIZE,), generator=generator)
    lengths[0] = length
    tokens = torch.randint(2, facts["vocab_size"], (CHECK_SIZE, length), generator=generator)
    tokens.masked_fill_(torch.arange(length)[None, :] >= lengths[:, None], 0)
    return Example((tokens, lengths), f"random token ids: {why}", length)


def padded_to(inputs: tuple[torch.Tensor, ...], length: int | None) -> tuple[torch.Tensor, ...]:
    """Text inputs padded to `length`: the models ignore padding, so the outputs do not change."""
    if length is None or len(inputs) != 2 or inputs[0].shape[1] >= length:
        return inputs
    tokens, lengths = inputs
    return F.pad(tokens, (0, length - tokens.shape[1]), value=0), lengths


# ------------------------------------------------------------------ the three formats

@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters' warnings and progress prints off: trace and deprecation notices would bury the
    report, and the outputs are checked against the model afterwards anyway."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        yield


def export_torchscript(model: nn.Module, example: Example, task: str) -> Exported:
    """`torch.jit.trace` on the example batch; the second check shows whether the trace generalises."""
    with quiet_exporter():
        traced = torch.jit.trace(model, example.inputs, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    shapes = [[None, None], [None]] if task == "text" else [[None, *example.inputs[0].shape[1:]]]
    return Exported(buffer.getvalue(), loaded, example.inputs, shapes, "torch.jit.trace")


def torch_export(model: nn.Module, example: Example, task: str, fmt: str) -> torch.export.ExportedProgram:
    """`torch.export.export` with the batch size (and a text model's length) left to the exporter to keep free."""
    auto = torch.export.Dim.AUTO
    dims = ({0: auto, 1: auto}, {0: auto}) if task == "text" else ({0: auto},)
    try:
        with quiet_exporter():
            return torch.export.export(model, padded_to(example.inputs, example.length), dynamic_shapes=dims)
    except Exception as exc:  # the exporter fails in many ways (unsupported ops, guards, type errors)
        others = ["torchscript"] + (["onnx"] if recurrent(model) and fmt != "onnx" else [])
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExportError(f"torch.export cannot export this model ({reason})",
                          f"--format {' or '.join(others)} works without torch.export") from exc


def export_program(model: nn.Module, example: Example, task: str) -> Exported:
    """A .pt2 file: torch.export.export, saved and loaded back with torch.export."""
    program = torch_export(model, example, task, "exported")
    buffer = io.BytesIO()
    with quiet_exporter():
        torch.export.save(program, buffer)
        loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    shapes, notes = program_shapes(program)
    return Exported(buffer.getvalue(), loaded, padded_to(example.inputs, example.length), shapes,
                    "torch.export.export", notes)


def program_shapes(program: torch.export.ExportedProgram) -> tuple[list[list[int | None]], list[str]]:
    """The user inputs' sizes in an exported program (None where symbolic), and notes on symbolic sizes
    with a lower bound above 2 (torch.export keeps 0 and 1 out of every free size)."""
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    shapes, notes = [], []
    for i, name in enumerate(program.graph_signature.user_inputs):
        shape = nodes[name].meta["val"].shape
        shapes.append([int(d) if is_concrete_int(d) else None for d in shape])  # a SymInt may hold a constant
        for d, size in enumerate(shape):
            bound = program.range_constraints.get(size.node.expr) if isinstance(size, torch.SymInt) else None
            if bound is not None and int(bound.lower) > 2:
                notes.append(f"input {i} dim {d} takes {int(bound.lower)} or more")
    return shapes, notes


def recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def export_onnx(model: nn.Module, example: Example, task: str) -> Exported:
    """An .onnx file, loaded back in onnxruntime. Recurrent models go through the TorchScript-based
    exporter (ONNX's LSTM op takes each sequence's length); the rest through torch.export."""
    names = INPUTS[task]
    if recurrent(model):
        axes = {n: dict(enumerate(DIM_NAMES[n])) for n in names} | {"scores": {0: "batch"}}
        buffer = io.BytesIO()
        with quiet_exporter():
            torch.onnx.export(model, example.inputs, buffer, dynamo=False, input_names=list(names),
                              output_names=["scores"], dynamic_axes=axes)
        data, inputs, exporter = buffer.getvalue(), example.inputs, "torch.onnx.export (TorchScript-based)"
    else:
        program = torch_export(model, example, task, "onnx")
        with quiet_exporter():
            onnx_program = torch.onnx.export(program, padded_to(example.inputs, example.length), dynamo=True,
                                             input_names=list(names), output_names=["scores"])
        data, inputs = onnx_program.model_proto.SerializeToString(), padded_to(example.inputs, example.length)
        exporter = "torch.onnx.export (torch.export-based)"
    return onnx_exported(data, inputs, exporter)


EXPORTERS: dict[str, Callable[[nn.Module, Example, str], Exported]] = {
    "torchscript": export_torchscript, "exported": export_program, "onnx": export_onnx}


def onnx_exported(data: bytes, inputs: tuple[torch.Tensor, ...], exporter: str) -> Exported:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimiser's notes are not the user's concern
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, dict(zip(feeds, (t.numpy() for t in tensors), strict=True)))[0])

    shapes = [[d if isinstance(d, int) else None for d in i.shape] for i in session.get_inputs()]
    return Exported(data, run, inputs, shapes, exporter)


# ------------------------------------------------------------------ checking and describing

def check_outputs(model: nn.Module, exported: Exported, task: str, fmt: str) -> list[dict[str, Any]]:
    """The largest difference between model and exported file on the export batch and on a smaller one
    (shorter, for text, where the length is free).

    Raises:
        ExportMismatch: a difference above TOLERANCE, or the file refuses the smaller batch.
    """
    checks = [compare(model, exported, exported.example, fmt)]
    smaller = smaller_batch(exported, task)
    if smaller is not None:
        checks.append(compare(model, exported, smaller, fmt))
    return checks


def compare(model: nn.Module, exported: Exported, inputs: tuple[torch.Tensor, ...], fmt: str) -> dict[str, Any]:
    shape = "x".join(map(str, inputs[0].shape))
    with torch.no_grad():
        expected = model(*inputs)
        try:
            got = exported.run(*inputs)
        except Exception as exc:  # each runtime (TorchScript, torch.export guards, onnxruntime) has its own errors
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ExportMismatch(f"the {fmt} file fails on a batch of {shape} ({reason})",
                                 "it does not take every batch size or length; try another --format") from exc
    if got.shape != expected.shape:
        raise ExportMismatch(f"the {fmt} file gives outputs of shape {tuple(got.shape)} on a batch of {shape}, "
                             f"the model {tuple(expected.shape)}", "try another --format")
    diff = float((got.float() - expected.float()).abs().max())
    allowed = TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= allowed:  # NaN fails too
        raise ExportMismatch(f"the {fmt} file's outputs differ from the checkpoint's model by up to {diff:.2e} "
                             f"on a batch of {shape} (tolerance {allowed:.1e}); nothing was written",
                             "try another --format")
    return {"batch": int(inputs[0].shape[0]), "shape": list(inputs[0].shape), "outputs": list(expected.shape),
            "max_abs_diff": diff}


def smaller_batch(exported: Exported, task: str) -> tuple[torch.Tensor, ...] | None:
    """The shortest few samples of the export batch, cut to at most two thirds of its length where the file
    leaves the length free (longer texts truncated); None when the file fixes every size or the batch is one
    sample."""
    inputs, shapes = exported.example, exported.shapes
    count = min(3, inputs[0].shape[0] - 1)
    if count < 1 or all(d is not None for shape in shapes for d in shape):
        return None
    if task == "image":
        return (inputs[0][:count],) if shapes[0][0] is None else None
    tokens, lengths = inputs
    rows = lengths.argsort(stable=True)[:count].sort().values if shapes[0][0] is None else torch.arange(len(lengths))
    tokens, lengths = tokens[rows], lengths[rows]
    if shapes[0][1] is None:
        width = max(1, min(int(lengths.max()), tokens.shape[1] * 2 // 3))
        tokens, lengths = tokens[:, :width], lengths.clamp(max=width)
    return tokens, lengths
