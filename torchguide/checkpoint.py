"""Checkpoints: atomic save, safe load, and the random-number state of a run.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint never runs code. It is
written to a temporary file in the same folder, flushed, fsynced and renamed into
place, so a crash or a full disk never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import importlib
import os
import pickle
import random
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchguide.config import import_file, is_file_import
from torchguide.errors import CheckpointError, GuideError, RunFailed
from torchguide.registry import one_line

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


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a torchguide checkpoint safely (weights_only); anything else is a CheckpointError.

    With `mmap`, tensors are mapped from the file, not read: a cheap look at its plain values.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path (runs/<name>/checkpoints/)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory", "give a .pt file, e.g. runs/<name>/checkpoints/best.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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
    return payload


def recorded_imports(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The user code a checkpoint was trained with, `{"import": as written, "path": absolute file or None}`
    each; a checkpoint from before these records has only its config's `imports:` as written."""
    if "imports" in payload:
        return list(payload["imports"])
    return [{"import": t, "path": None} for t in payload.get("config", {}).get("imports", [])]


def import_checkpoint_code(payload: dict[str, Any], imports: Sequence[str] = (), *,
                           skip_missing: bool = False) -> None:
    """Import the code a checkpoint was trained with, so its models, datasets and losses register again.

    A file comes from the absolute path recorded at training time, or from an entry of
    `imports` (`--import PATH`) with the same file name: the file's new place. Entries of
    `imports` that replace no recorded file (a renamed file, more code) are imported too,
    and take the place of recorded files that are gone. Modules are imported by name.
    With `skip_missing` (resume, where the config's own `imports:` also count), files
    that are gone are left out.

    Raises:
        CheckpointError: a recorded file is gone and nothing takes its place, or the code fails to import.
    """
    given = [Path(p) for p in imports if is_file_import(p)]
    for path in given:
        if not path.is_file():
            raise CheckpointError(f"--import {path}: no such file", "give the path of a .py file")
    targets, gone = [], []
    for entry in recorded_imports(payload):
        written = entry["import"]
        if not is_file_import(written):
            targets.append(written)
            continue
        recorded = Path(entry.get("path") or written)
        replacement = next((p for p in given if p.name == recorded.name), None)
        if replacement is not None:
            given.remove(replacement)
            targets.append(str(replacement))
        elif recorded.is_file():
            targets.append(str(recorded))
        else:
            gone.append((written, recorded))
    if gone and not given and not skip_missing:
        written, recorded = gone[0]
        raise CheckpointError(f"the checkpoint's code {written} is not at {recorded} any more",
                              f"give its new place with --import PATH/{recorded.name}")
    targets += [str(p) for p in given] + [m for m in imports if not is_file_import(m)]
    for target in targets:
        import_code(target)


def import_code(target: str) -> None:
    """Import one file or module of a checkpoint's code; a failure is a CheckpointError naming it."""
    try:
        if is_file_import(target):
            import_file(target)
        else:
            importlib.import_module(target)
    except GuideError:
        raise
    except ModuleNotFoundError as exc:
        raise CheckpointError(f"cannot import the checkpoint's code {target!r}: {one_line(exc)}",
                              "it is imported by name: install it, or add its folder to PYTHONPATH") from exc
    except Exception as exc:  # user code may raise anything
        raise CheckpointError(f"cannot import the checkpoint's code {target!r}: {type(exc).__name__}: "
                              f"{one_line(exc)}", "fix the error in that file") from exc


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
