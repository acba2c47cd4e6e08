"""Checkpoints: atomic save, safe load, and the random-number state of a run.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint never runs code. It is
written to a temporary file in the same folder, flushed, fsynced and renamed into
place, so a crash or a full disk never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchguide.errors import CheckpointError, RunFailed
from torchguide.files import special_kind

FORMAT = "torchguide-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically; raises RunFailed and keeps the old file on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RunFailed(f"could not write checkpoint {path}: {exc.strerror or exc}",
                        "free disk space or fix permissions; the previous checkpoint is intact") from None
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a torchguide checkpoint safely (weights_only); anything else is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path (runs/<name>/checkpoints/)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory", "give a .pt file, e.g. runs/<name>/checkpoints/best.pt")
    kind = special_kind(path)
    if kind:
        raise CheckpointError(f"{path} is {kind}, not a file", "give a .pt file, e.g. runs/<name>/checkpoints/best.pt")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them; the error says it
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = "it stores Python objects (e.g. a whole pickled model), which are not loaded for safety" \
            if "Unsupported global" in str(exc) else "it is not a checkpoint (corrupt or another kind of file)"
        raise CheckpointError(f"cannot load {path}: {reason}", "use a checkpoint written by guide") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {path}: not a complete checkpoint ({type(exc).__name__})",
                              "the file is truncated or not a checkpoint; use checkpoints/last.pt or best.pt") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = "a plain state_dict" if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a torchguide checkpoint (it holds {kind})",
                              "train with guide, or load the weights with model.weights in a config")
    check_payload(payload, path)
    return payload


# what eval, predict and inspect-model read, and the type each must have
REQUIRED = {"task": str, "config": dict, "classes": list, "facts": dict, "model": dict}
FACTS = ("vocab_size", "in_channels", "in_features")


def check_payload(payload: dict[str, Any], path: str | Path,
                  required: dict[str, type] = REQUIRED) -> None:
    """Raise CheckpointError naming the entries a checkpoint lacks (or holds with the wrong type)."""
    missing = [key for key in required if key not in payload]
    wrong = [f"{key} is a {type(payload[key]).__name__}, not a {kind.__name__}"
             for key, kind in required.items() if key in payload and not isinstance(payload[key], kind)]
    if not missing and not wrong and "facts" in required:
        missing = [f"facts.{key}" for key in FACTS if key not in payload["facts"]]
    if missing or wrong:
        what = "; ".join(([f"it lacks {', '.join(missing)}"] if missing else []) + wrong)
        raise CheckpointError(f"cannot use {path}: an incomplete checkpoint ({what})",
                              "use a checkpoint written by guide (runs/<name>/checkpoints/best.pt)")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class BackgroundWriter:
    """Writes checkpoints on a thread, one at a time: the loop hands over a snapshot and trains on.

    A failed write (a full disk ...) is raised in the loop at the next checkpoint or at
    `wait()`; the previous file is intact either way, since each write is atomic.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def submit(self, work: Callable[[], None]) -> None:
        self.wait()
        self.thread = threading.Thread(target=self.run, args=(work,), name="checkpoint-writer", daemon=True)
        self.thread.start()

    def run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the loop's thread by wait()
            self.error = exc

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def snapshot(obj: Any) -> Any:
    """A copy of every tensor in a nest of dicts, lists and tuples (the training goes on changing them)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj
