"""Checkpoints: what one holds, atomic save, safe load, and resuming a run from one.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint never runs code. It is
written to a temporary file in the same folder, flushed, fsynced and renamed into
place, so a crash or a full disk never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import threading
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from torchguide.device import unwrap
from torchguide.distributed import gather
from torchguide.errors import CheckpointError
from torchguide.files import make_folder, special_kind, temp_name, write_atomic, write_failure

if TYPE_CHECKING:
    from torchguide.loop import Run

FORMAT = "torchguide-checkpoint/1"


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint so a run continues where it stopped."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps so far
    best: float | None = None
    best_epoch: int = -1
    best_weights: str = "raw"  # whose weights scored best: "raw", or "ema" (train.ema), which best.pt then holds
    bad_epochs: int = 0  # epochs without improvement, for early stopping
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: dict[str, Any] = field(default_factory=dict)  # the epoch's sums so far


def checkpoint_payload(run: Run) -> dict[str, Any]:
    """What eval, predict and resume need: weights, states, config, classes, vocabulary.

    A collective under DDP: every rank's random state and meter are gathered, so every rank calls it.
    """
    data, rng = run.data, rng_state()
    return {
        "task": data.task,
        "config": run.config.model_dump(mode="json"),
        "imports": run.config.imported,  # the user's code, found again by eval, predict and resume
        "classes": data.classes,
        "vocab": data.vocab.itos if data.vocab else None,
        "facts": {"vocab_size": data.vocab_size, "in_channels": data.in_channels,
                  "in_features": data.in_features, "input_shape": data.input_shape},
        "model": unwrap(run.model).state_dict(),
        **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(),
        "precision": run.precision,
        "auto": run.auto,  # a resume keeps these choices
        "state": asdict(run.state),
        "rng": rng,
        "world": {"size": run.dist.world_size, "global_batch": run.config.data.loader.batch_size
                  * run.dist.world_size, "rng": gather(rng), "meters": gather(run.state.meter)},
        "versions": {"torch": str(torch.__version__)},
    }


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


class Saver:
    """A run's checkpoints/ folder: last.pt after every save, best.pt beside it for the best epoch, and
    with `train.keep_last: K` the last K step-N.pt. Files are written on a background thread from a
    snapshot, so the loop trains on; only rank 0 `writes`. best.pt is a second name for last.pt, or,
    with `best_as`, a file of its own holding `best_as(payload)`."""

    def __init__(self, folder: Path | None, keep_last: int | None, writes: bool = True) -> None:
        self.folder, self.keep_last, self.writes = folder, keep_last, writes
        self.writer = BackgroundWriter()

    def save(self, payload: dict[str, Any], step: int, best: bool = False,
             best_as: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Path:
        path = self.folder / "last.pt"
        if not self.writes:
            return path
        payload, keep = snapshot(payload), self.keep_last

        def write() -> None:
            save_checkpoint(path, payload)
            if best and best_as is not None:  # a tensor held under two keys is stored once
                save_checkpoint(path.with_name("best.pt"), best_as(payload))
            elif best:
                keep_copy(path, path.with_name("best.pt"))
            if keep:
                keep_copy(path, path.with_name(f"step-{step:08d}.pt"))
                for old in sorted(path.parent.glob("step-*.pt"))[:-keep]:
                    old.unlink(missing_ok=True)

        self.writer.submit(write)
        return path

    def wait(self) -> None:
        """Return once every write handed over is on disk; raise the error of one that failed."""
        self.writer.wait()

    def last(self) -> Path | None:
        """last.pt once every write in flight is done; None when there is none."""
        if self.folder is None:
            return None
        self.wait()
        path = self.folder / "last.pt"
        return path if path.is_file() else None


def keep_copy(path: Path, copy: Path) -> None:
    """A second name for a finished checkpoint, put in place atomically: a hard link where the file
    system allows (no second write), else a copy. Later writes of `path` rename a new file over it,
    so the copy keeps this state. Raises RunFailed (`no space left on <copy>` ...)."""
    tmp = copy.with_name(f"{temp_name(copy)}link.tmp")
    try:
        try:
            os.link(path, tmp)  # the same inode as the fsynced original: nothing more to flush
        except OSError:
            shutil.copyfile(path, tmp)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, copy)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failure(exc, copy, f"the previous {copy.name} is intact") from exc


# ---------------------------------------------------------------- resume

MUST_MATCH = ("model", "data", "loss", "seed", "task")
RESUME_REQUIRED = {**REQUIRED, "optimizer": dict, "scaler": dict, "state": dict, "rng": dict}
SCHEDULE_LENGTHS = ("total_steps", "T_max", "total_iters")


def restore(run: Run, payload: dict[str, Any]) -> list[str]:
    """Continue `run` from a checkpoint payload: weights, optimizer, scheduler, RNG, position.

    Returns the config changes that are allowed on resume (epochs, lr, logging, ...).

    Raises:
        CheckpointError: the model, data, loss or seed changed (naming the field), the classes or
            vocabulary differ, or the weights do not fit.
    """
    check_payload(payload, "the checkpoint to resume", RESUME_REQUIRED)
    changes = config_changes(payload, run)
    try:
        unwrap(run.model).load_state_dict(payload.get("raw_model", payload["model"]))  # best.pt may hold the EMA
        run.optimizer.load_state_dict(payload["optimizer"])
        if run.ema is not None:  # an EMA turned on at resume starts from the weights trained so far
            run.ema.load_state_dict(payload.get("ema") or unwrap(run.model).state_dict())
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot resume: the checkpoint does not fit this model ({exc})") from exc
    if run.scheduler is not None and payload.get("scheduler") is not None:
        # the schedule's length follows the new config (e.g. more epochs); its position is restored
        lengths = {k: getattr(run.scheduler, k) for k in SCHEDULE_LENGTHS if hasattr(run.scheduler, k)}
        run.scheduler.load_state_dict(payload["scheduler"])
        for key, value in lengths.items():
            if getattr(run.scheduler, key) != value:
                changes.append(f"scheduler {key} {getattr(run.scheduler, key)} -> {value}")
                setattr(run.scheduler, key, value)
    changes.extend(restore_scaler(run.scaler, payload, run.precision))
    run.state = TrainState(**payload["state"])
    world = payload.get("world", {"size": 1, "rng": []})
    same_world = len(world["rng"]) == run.dist.world_size
    restore_rng(world["rng"][run.dist.rank] if same_world else payload["rng"])
    meters = world.get("meters") or [run.state.meter]  # each rank's sums of the epoch so far
    if same_world:
        run.state.meter = meters[run.dist.rank]
    else:  # another number of processes: rank 0 carries all the sums, so their total is unchanged
        run.state.meter = {k: sum(m.get(k, 0) for m in meters) for k in meters[0]} if run.dist.is_main else {}
    return changes


def config_changes(payload: dict[str, Any], run: Run) -> list[str]:
    """The resume-compatibility diff: the allowed changes from the checkpoint's run to this one, as notes.

    Raises:
        CheckpointError: a change that cannot continue the same run.
    """
    saved, now = payload["config"], run.config.model_dump(mode="json")
    for key in MUST_MATCH:
        if must_match(saved, key) != must_match(now, key):
            where = first_difference(must_match(saved, key), must_match(now, key), key)
            raise CheckpointError(f"cannot resume: {where} differs from the checkpoint's config",
                                  "resume with the same value, or start a new run without --resume")
    changes = [f"{first_difference(saved[k], now[k], k)} changed" for k in now
               if k not in MUST_MATCH and saved.get(k) != now[k]]
    if saved["data"]["loader"] != now["data"]["loader"]:
        changes.append(f"{first_difference(saved['data']['loader'], now['data']['loader'], 'data.loader')} changed")
    world = payload.get("world", {"size": 1, "global_batch": saved["data"]["loader"]["batch_size"]})
    global_batch = run.config.data.loader.batch_size * run.dist.world_size
    if payload["state"]["batch"] and world["global_batch"] != global_batch:
        raise CheckpointError(f"cannot resume mid-epoch with another global batch: the checkpoint ran "
                              f"{world['size']} process(es) x batch {world['global_batch'] // world['size']}, "
                              f"this run {run.dist.world_size} x {run.config.data.loader.batch_size}",
                              "keep batch_size x processes the same, or resume from an epoch-end checkpoint")
    if world["size"] != run.dist.world_size:
        changes.append(f"processes {world['size']} -> {run.dist.world_size} (random streams restart per rank)")
    if payload["classes"] != run.data.classes:
        raise CheckpointError("cannot resume: the data's classes differ from the checkpoint's",
                              f"the checkpoint has {', '.join(payload['classes'][:10])}")
    if payload.get("vocab") != (run.data.vocab.itos if run.data.vocab else None):
        raise CheckpointError("cannot resume: the vocabulary built from the training data differs from the "
                              "checkpoint's", "the training file changed; resume with the same data or start anew")
    return changes


def restore_scaler(scaler: torch.amp.GradScaler, payload: dict[str, Any], precision: str) -> list[str]:
    """Load the loss scaler's state when both the checkpoint and this run scale the loss (fp16).

    A precision change on resume is allowed: the scaler then starts afresh, or is left
    out. Returns the change as a note (checkpoints before the `precision` record show it
    by an empty scaler state).
    """
    saved_state = payload.get("scaler") or {}
    saved = payload.get("precision") or ("fp16" if saved_state else "fp32 or bf16")
    if saved_state and scaler.is_enabled():
        scaler.load_state_dict(saved_state)
    if saved != precision and not (saved == "fp32 or bf16" and precision != "fp16"):
        fresh = " (loss scaling starts afresh)" if scaler.is_enabled() else ""
        return [f"precision {saved} -> {precision}{fresh}"]
    return []


def must_match(config: dict[str, Any], key: str) -> Any:
    """The part of a config section that a resumed run must keep (data.loader may change)."""
    if key == "data" and isinstance(config.get("data"), dict):
        return {k: v for k, v in config["data"].items() if k != "loader"}
    return config.get(key)


def first_difference(a: Any, b: Any, path: str) -> str:
    """The dotted path of the first place two config values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}")
    return f"{path} ({a!r} -> {b!r})" if not isinstance(a, dict | list) else path
