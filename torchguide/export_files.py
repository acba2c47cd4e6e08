"""What an exported model carries beside it: the summary and the sidecar files (classes, inputs,
preprocessing, vocabulary) that make it usable without guide."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from torchguide.config import Config
from torchguide.data.text import PAD, TOKEN, UNK, Vocab
from torchguide.data.transforms import build_pipeline
from torchguide.losses import loss_meta

if TYPE_CHECKING:
    from torchguide.export import Example, Exported

FORMATS = {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
TOLERANCE = 1e-4  # largest absolute difference allowed, times the largest output magnitude when that is over 1
CHECK_SIZE = 8  # samples in the batch the model is exported and checked with
DEFAULT_LENGTH = 64  # a text model's fixed length when neither data.vocab.max_len nor the data gives one
INPUTS = {"image": ("images",), "text": ("tokens", "lengths")}
DIM_NAMES = {"images": ("batch",), "tokens": ("batch", "length"), "lengths": ("batch",)}
LOADERS = {"torchscript": "torch.jit.load(FILE)", "exported": "torch.export.load(FILE).module()",
           "onnx": "onnxruntime.InferenceSession(FILE)"}


def describe(config: Config, payload: dict[str, Any], fmt: str, out: Path, exported: Exported,
             example: Example, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the command reports: the file, its inputs and output (sizes named where they are free), the
    batch it was checked on and the differences found."""
    task, classes = payload["task"], payload["classes"]
    inputs = [{"name": name, "shape": [DIM_NAMES[name][d] if size is None else size
                                       for d, size in enumerate(shape)], "dtype": str(t.dtype).removeprefix("torch.")}
              for name, shape, t in zip(INPUTS[task], exported.shapes, exported.example, strict=True)]
    kind = loss_meta(config.loss.name)[0] or "scores"
    columns = checks[0]["outputs"][1]
    output = {"name": "scores", "shape": ["batch", columns], "kind": kind,
              "probabilities": probability_rule(kind, columns, classes)}
    notes = list(exported.notes)
    fixed = inputs[0]["shape"][1] if task == "text" else None
    if isinstance(fixed, int):
        notes.append(f"{exported.exporter} fixed the sequence length at {fixed}: pad token ids to {fixed} "
                     f"with 0 ({PAD}) and give the true lengths")
    return {"format": fmt, "out": str(out), "exporter": exported.exporter, "bytes": len(exported.data),
            "task": task, "classes": classes, "inputs": inputs, "output": output, "data": example.source,
            "checks": checks, "tolerance": TOLERANCE, "notes": notes}


def sidecar(summary: dict[str, Any], config: Config, payload: dict[str, Any], out: Path) -> dict[str, Any]:
    """FILE.json: what a program needs to feed the file and read its output, without guide."""
    info = {"file": out.name, "format": summary["format"], "load": LOADERS[summary["format"]].replace("FILE", out.name),
            "torch": torch.__version__.split("+")[0],
            **{k: summary[k] for k in ("task", "classes", "inputs", "output", "notes")}}
    if summary["task"] == "image":
        info["preprocessing"] = image_preprocessing(config, payload["facts"]["in_channels"])
    else:
        info["vocabulary"] = f"{out.name}.vocab.json" if payload.get("vocab") else None
    info["check"] = {"tolerance": TOLERANCE, "batches": summary["checks"], "data": summary["data"]}
    return info


def probability_rule(kind: str, columns: int, classes: list[str]) -> str:
    """How the scores become class probabilities (as `metrics.to_probs` does)."""
    if columns == 1:
        p = "the score" if kind == "probs" else "sigmoid(score)"
        return f"{p} is the probability of {classes[-1]!r}, 1 - it that of {classes[0]!r}"
    return {"log_probs": "exp(scores)", "probs": "the scores as they are"}.get(kind, "softmax over dim 1")


def image_preprocessing(config: Config, in_channels: int) -> dict[str, Any]:
    """The eval transforms as torchvision names them, and the normalisation they end with, if any."""
    from torchvision.transforms import v2

    pipeline = build_pipeline(config.data.transforms.eval)
    steps = [t for part in (pipeline.fixed, pipeline.random, pipeline.batch) if part is not None
             for t in getattr(part, "transforms", [part]) if not isinstance(t, v2.Identity)]
    norm = next((t for t in steps if isinstance(t, v2.Normalize)), None)
    return {"image_mode": "L" if in_channels == 1 else "RGB", "layout": "NCHW float32",
            "eval_transforms": [" ".join(repr(t).split()) for t in steps],
            "scale": "uint8 pixels / 255 (ToDtype float32, scale=True)",
            "normalize": {"mean": list(norm.mean), "std": list(norm.std)} if norm is not None else None}


def vocab_sidecar(config: Config, payload: dict[str, Any], vocab: Vocab) -> dict[str, Any]:
    """FILE.vocab.json: the tokenizer's rule, the vocabulary in id order and the class names."""
    return {"tokenizer": {"tokens": "re.findall(pattern, text.lower())", "pattern": TOKEN.pattern},
            "pad": {"token": PAD, "id": vocab.stoi[PAD]}, "unk": {"token": UNK, "id": vocab.stoi[UNK]},
            "max_len": config.data.vocab.max_len, "empty_text": f"one {UNK}", "classes": payload["classes"],
            "tokens": vocab.itos}
