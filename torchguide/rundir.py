"""Run directories: each belongs to one run, and one process at a time writes it.

- A new run takes `<output.dir>/<name>`, or `<name>-2`, `-3` ... when that is taken: a new
  folder is made (mkdir is atomic, so two runs started together never share one).
- `--resume auto` looks at the runs called exactly `<name>` (`<name>` and its numbered
  siblings whose config.yaml says `name: <name>`), never at `<name>-long`.
- A checkpoint resumes into its run directory only when it lies in one
  (`<dir>/checkpoints/x.pt` beside the run's config.yaml or metrics); any other
  checkpoint starts a new run directory.
- `run.lock` in the directory names the process that writes it (PID, host, since when).
  It is a POSIX lock, so the system releases it when its process ends, however it ends;
  the file of a killed process is taken over by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from torchguide.errors import CheckpointError, ConfigError, GuideError, RunDirError
from torchguide.files import disk_full, remove_orphans, write_failure

LOCK = "run.lock"
BUSY = (errno.EACCES, errno.EAGAIN)


@dataclass
class RunLock:
    """This process's hold on a run directory; `release()` it when the run ends."""

    folder: Path
    fd: int
    previous: dict[str, Any] = field(default_factory=dict)  # the lock file's content before: a gone process

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and let go of the lock."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.folder / LOCK).st_ino == os.fstat(self.fd).st_ino:
                (self.folder / LOCK).unlink()
        os.close(self.fd)
        self.fd = -1

    def took_over(self) -> str | None:
        """A note when the lock was taken from a process that is gone, else None."""
        if not self.previous.get("pid"):
            return None
        return f"{self.folder}: took over the lock of process {self.previous['pid']} " \
               f"(started {self.previous.get('since', '?')}), which is gone"


def take_lock(folder: Path) -> RunLock:
    """Hold `folder`'s run lock until `release()`; a lock whose process is gone is taken over.

    Raises:
        RunDirError: another process holds it (the message names it), or the folder cannot
            be written (read-only, no permission).
        RunFailed: the disk is full.
    """
    path = folder / LOCK
    for _ in range(10):  # another process may remove the file between our open and our lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise unwritable(folder, exc) from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = read_holder(fd)
            os.close(fd)
            if exc.errno in BUSY:
                raise busy(folder, holder) from exc
            raise unwritable(folder, exc) from exc
        if same_file(fd, path):
            previous = read_holder(fd)
            try:
                write_holder(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    path.unlink()  # ours to remove: we hold its lock
                os.close(fd)
                raise unwritable(folder, exc) from exc
            return RunLock(folder, fd, previous)
        os.close(fd)
    raise RunDirError(f"cannot take the lock of {folder}: its {LOCK} keeps changing",
                      "another process is starting on it; try again")


def same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the one named `path` (not removed or replaced)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def read_holder(fd: int) -> dict[str, Any]:
    """The lock file's content: pid, host, since; {} when empty or unreadable."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def write_holder(fd: int) -> None:
    """Write this process's pid, host and start time into the lock file."""
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    data = (json.dumps(holder) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def busy(folder: Path, holder: dict[str, Any]) -> RunDirError:
    """The error of a run directory that another process holds."""
    if holder.get("pid"):
        host = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
        who = f"process {holder['pid']}{host} (since {holder.get('since', '?')})"
    else:
        who = "another process (starting)"
    return RunDirError(f"{folder} is in use by {who}",
                       "one process writes a run directory at a time: wait for it to end, or stop it")


def is_busy(exc: RunDirError) -> bool:
    """Whether `take_lock` failed because another process holds the lock."""
    return isinstance(exc.__cause__, OSError) and exc.__cause__.errno in BUSY


def unwritable(folder: Path, exc: OSError) -> GuideError:
    """The error of a run directory that cannot be written: a full disk, or a read-only folder."""
    if disk_full(exc):
        return write_failure(exc, folder / LOCK, "nothing was changed")
    return RunDirError(f"cannot write to the run directory {folder} ({exc.strerror or exc})",
                       "make it writable, or copy the run to a writable folder and resume from there")


def held_by_other(folder: Path) -> bool:
    """Whether a live process holds `folder`'s lock (looked at without creating a lock file).
    A folder whose lock cannot even be opened for writing counts as held: leave it alone."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing lets go of the probe's lock
    return False


# ---------------------------------------------------------------- new runs

def new_run_dir(output_dir: Path, name: str) -> tuple[Path, RunLock]:
    """Make and lock `<output_dir>/<name>`, or `<name>-2`, `-3` ... when it is taken.

    An existing folder is taken only when it is empty (or holds the lock of a run killed
    before it wrote anything); an earlier run is never written into.

    Raises:
        RunDirError: `<output_dir>/<name>` is a file.
        ConfigError: output.dir cannot be made or written.
    """
    base = output_dir / name
    if base.exists() and not base.is_dir():
        raise RunDirError(f"{base} is a file, not a run directory",
                          "move the file away, or choose another name with name=...")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output.dir: cannot write to {output_dir} ({exc.strerror or exc})",
                          "choose a writable folder with output.dir=...") from exc
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{name}-{n}")
        lock = claim(path)
        if lock is not None:
            return path, lock
        n += 1


def claim(path: Path) -> RunLock | None:
    """Lock `path` as a new run's directory when it is free (new, or empty but for a stale lock)."""
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir() or any(p.name != LOCK for p in path.iterdir()):
            return None
    except OSError as exc:
        raise ConfigError(f"output.dir: cannot write to {path} ({exc.strerror or exc})",
                          "choose a writable folder with output.dir=...") from exc
    try:
        lock = take_lock(path)
    except RunDirError as exc:
        if is_busy(exc):
            return None  # another run started on it this very moment
        raise ConfigError(f"output.dir: {exc.message}", "choose a writable folder with output.dir=...") from exc
    if any(p.name != LOCK for p in path.iterdir()):  # filled between our look and our lock
        lock.release()
        return None
    return lock


# ---------------------------------------------------------------- resuming

def find_resume(output_dir: Path, name: str, resume: str) -> tuple[Path, Path | None]:
    """(the checkpoint for --resume, its run directory or None when it lies in none).

    `auto` is the newest `checkpoints/last.pt` of the runs called exactly `name` in `output_dir`.

    Raises:
        CheckpointError: `auto` finds no run of that name.
    """
    if resume != "auto":
        checkpoint = Path(resume)
        return checkpoint, run_dir_of(checkpoint)
    candidates = [d / "checkpoints" / "last.pt" for d in runs_named(output_dir, name)]
    candidates = [c for c in candidates if c.is_file()]
    if not candidates:
        raise CheckpointError(f"--resume auto: no run named {name} in {output_dir} "
                              f"(no {output_dir / name}/checkpoints/last.pt)",
                              "train first, or give the checkpoint path")
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    return newest, newest.parent.parent


def runs_named(output_dir: Path, name: str) -> list[Path]:
    """The run directories of runs called `name`: `<name>`, and `<name>-N` whose config says `name`."""
    numbered = re.compile(rf"^{re.escape(name)}-[1-9][0-9]*$")
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        if path.name == name or (numbered.match(path.name) and run_name(path) == name):
            if path.is_dir():
                found.append(path)
    return found


def run_name(run_dir: Path) -> str | None:
    """The `name:` in a run directory's config.yaml; None when it has no readable one."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint lies in (`<dir>/checkpoints/x.pt` beside the run's metrics.jsonl
    or its config.yaml, with the run's name); None for a checkpoint kept anywhere else."""
    folder = checkpoint.parent if checkpoint.parent.name else Path(os.path.abspath(checkpoint)).parent
    if folder.name != "checkpoints":
        return None
    run_dir = folder.parent
    return run_dir if (run_dir / "metrics.jsonl").is_file() or run_name(run_dir) else None


# ---------------------------------------------------------------- leftovers

def clean_leftovers(run_dir: Path) -> list[Path]:
    """Remove temporary files left by killed processes: every one in `run_dir` (whose lock the
    caller holds) and those of gone processes in the run directories beside it that no live
    process holds. Returns what was removed."""
    removed = remove_orphans(run_dir, owned=True) + remove_orphans(run_dir / "checkpoints", owned=True)
    for other in run_dir.parent.iterdir():
        if other == run_dir or not other.is_dir() or not (other / "checkpoints").is_dir():
            continue
        if not held_by_other(other):
            removed += remove_orphans(other) + remove_orphans(other / "checkpoints")
    return removed


def leftovers_note(removed: list[Path]) -> str | None:
    """One line about the temporary files `clean_leftovers` removed, or None."""
    if not removed:
        return None
    return f"removed {len(removed)} temporary file(s) left by killed runs (in {removed[0].parent}" \
           f"{' and others' if len({p.parent for p in removed}) > 1 else ''})"
