"""Checkpoints: atomic save, safe load, and the random-number state of a run.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint never runs code. It is
written to a temporary file in the same folder, flushed, fsynced and renamed into
place, so a crash or a full disk never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import importlib
import pickle
import random
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchguide.config.user_code import import_file, is_file_import
from torchguide.errors import CheckpointError, GuideError
from torchguide.files import make_folder, special_kind, write_atomic
from torchguide.registry import one_line

FORMAT = "torchguide-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically.

    Raises:
        RunFailed: the disk is full (`no space left on <path>`) or the folder cannot be written;
            the previous checkpoint is intact and no temporary file is left.
    """
    path = Path(path)
    make_folder(path.parent)
    return write_atomic(path, lambda f: torch.save({"format": FORMAT, **payload}, f),
                        hint="the previous checkpoint is intact")


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a torchguide checkpoint safely (weights_only); anything else is a CheckpointError.

    With `mmap`, tensors are mapped from the file, not read: a cheap look at its plain values.
    """
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
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        reason = "it stores Python objects (e.g. a whole pickled model), which are not loaded for safety" \
            if "Unsupported global" in str(exc) else "it is not a checkpoint (corrupt or another kind of file)"
        raise CheckpointError(f"cannot load {path}: {reason}", "use a checkpoint written by guide") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {path}: not a complete checkpoint ({type(exc).__name__})",
                              "the file is truncated or not a checkpoint; use checkpoints/last.pt or best.pt") \
            from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = "a plain state_dict" if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a torchguide checkpoint (it holds {kind})",
                              "train with guide, or load the weights with model.weights in a config")
    check_payload(payload, path)
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

    A file comes from the absolute path recorded at training time, or, when it moved, from
    `imports` (`--import PATH`): a folder to find it in by name, or a file of the same name.
    Files of `imports` that replace no recorded file (a renamed file, more code) are
    imported too, and take the place of recorded files that are gone. Modules are imported
    by name. With `skip_missing` (resume, where the config's own `imports:` also count),
    files that are gone are left out.

    Raises:
        CheckpointError: a recorded file is gone and nothing takes its place, or the code fails to import.
    """
    places = [Path(p) for p in imports if Path(p).is_dir()]
    files = [Path(p) for p in imports if is_file_import(p) and not Path(p).is_dir()]
    modules = [m for m in imports if not is_file_import(m) and not Path(m).is_dir()]
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"--import {path}: no such file or folder", "give a .py file or the folder it is in")
    targets, gone = [], []
    for entry in recorded_imports(payload):
        written = entry["import"]
        if not is_file_import(written):
            targets.append(written)
            continue
        recorded = Path(entry.get("path") or written)
        found = find_code(recorded, files, places)
        if found is not None:
            targets.append(str(found))
        else:
            gone.append(f"{written} ({recorded})")
    if gone and not files and not skip_missing:
        raise CheckpointError(f"the checkpoint's code is gone from where it was: {', '.join(gone)}",
                              "give its new folder with --import FOLDER, or each file with --import PATH/NAME.py")
    for target in targets + [str(p) for p in files] + modules:
        import_code(target)


def find_code(recorded: Path, files: list[Path], places: list[Path]) -> Path | None:
    """Where a recorded file is now: a file of its name in `files` (taken out of the list), the
    file of its name in one of the folders `places`, or where it was; None when it is nowhere."""
    for path in files:
        if path.name == recorded.name:
            files.remove(path)
            return path
    moved = next((place / recorded.name for place in places if (place / recorded.name).is_file()), None)
    return moved or (recorded if recorded.is_file() else None)


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
    if "cuda" in state and torch.cuda.is_available():  # a machine with fewer GPUs restores the ones it has
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


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
    """A copy in CPU memory of every tensor in a nest of dicts, lists and tuples (the training goes on
    changing them); GPU tensors go to pinned memory without a second copy on the GPU."""
    copied = copy_to_cpu(obj)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # the non-blocking copies are complete before the writer thread reads them
    return copied


def copy_to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu":
            return obj.detach().clone()
        pinned = obj.device.type == "cuda"
        return torch.empty_like(obj, device="cpu", pin_memory=pinned).copy_(obj.detach(), non_blocking=pinned)
    if isinstance(obj, dict):
        return {k: copy_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(copy_to_cpu(v) for v in obj)
    return obj
