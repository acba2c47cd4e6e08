"""Writing files so that a crash or a full disk never leaves half of one behind.

Every file a run or `guide data` writes goes to a temporary name beside its target,
`.<name>.<pid>.<random>.tmp`, and is renamed over the target once it is complete. The
process id in the name tells whose it is: a temporary file whose writer is gone is an
orphan of a killed process, and `remove_orphans` deletes it (and nothing else).

Configs and checkpoints a user names are read only when they are regular files: opening
a named pipe blocks until someone writes to it, and a device such as /dev/zero never ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from torchguide.errors import RunFailed

# .<target>.<pid>.<token>.tmp; files of earlier versions have no pid: .<target>.<token>.tmp
TMP_NAME = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>\d+)\.)?(?P<token>[a-z0-9_]+)\.tmp$")
FULL = (errno.ENOSPC, errno.EDQUOT)
# why a folder cannot be fsynced here (not opened for reading, not supported): the rename stands regardless
NO_FOLDER_SYNC = (errno.EACCES, errno.EPERM, errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP)
TORCH_WRITE_FAILED = ("unexpected pos", "failed writing", "file write failed", "No space left")
KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def temp_name(target: Path) -> str:
    """The prefix of a temporary file for `target`: hidden, beside it, naming this process."""
    return f".{target.name}.{os.getpid()}."


@contextlib.contextmanager
def open_temp(target: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A new temporary file beside `target`, open for writing; removed if the block fails."""
    fd, tmp = tempfile.mkstemp(prefix=temp_name(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, Path(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(target: Path, write: Callable[[IO[bytes]], None], *,
                 hint: str = "the previous file is intact") -> Path:
    """Write `target` through `write(file)`, so that a crash, a power cut or a full disk leaves
    either the previous file or the whole new one: the data goes to a temporary file in the same
    folder, which is flushed, fsynced and renamed over `target`; then the folder is fsynced.

    Raises:
        RunFailed: the disk is full (`no space left on <target>`) or the file cannot be written;
            the previous `target`, if any, is as it was and no temporary file is left.
    """
    target = Path(target)
    try:
        with open_temp(target) as (f, tmp):
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        sync_folder(target.parent)
    except OSError as exc:
        raise write_failure(exc, target, hint) from exc
    except RuntimeError as exc:  # torch.save's way of saying that a write failed
        if not any(s in str(exc) for s in TORCH_WRITE_FAILED):
            raise
        raise write_failure(exc, target, hint) from exc
    return target


def write_text_atomic(target: Path, text: str, *, hint: str = "the previous file is intact") -> Path:
    """`write_atomic` for a text file (UTF-8)."""
    data = text.encode("utf-8")
    return write_atomic(target, lambda f: f.write(data), hint=hint)


def make_folder(folder: Path) -> Path:
    """`mkdir -p`; raises RunFailed (`no space left on <folder>` ...) when it cannot be made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failure(exc, folder, "nothing was written there") from exc
    return folder


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the renames in it survive a power cut; skipped where that cannot be done
    (Windows opens no folder, some file systems refuse to fsync one)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in NO_FOLDER_SYNC:
            raise


def disk_full(exc: BaseException) -> bool:
    """Whether a failed write ran out of space (or quota), looking through the exception's causes:
    torch.save reports a full disk as a RuntimeError raised while handling the OSError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL:
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def write_failure(exc: OSError | RuntimeError, target: Path, hint: str) -> RunFailed:
    """The one-line error of a failed write of `target`: `no space left on <target>` for a full disk."""
    if disk_full(exc):
        return RunFailed(f"no space left on {target}", f"free disk space and run again; {hint}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
    return RunFailed(f"could not write {target}: {reason}", f"fix the folder's permissions or the disk; {hint}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def orphans(folder: Path, owned: bool = False) -> list[Path]:
    """Temporary files and folders of ours in `folder` whose writer is gone.

    With `owned` (the caller holds the folder's run lock, so nobody else writes there), every
    temporary name of ours counts, including those of earlier versions without a pid.
    """
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = TMP_NAME.match(path.name)
        if match is None:
            continue
        pid = match["pid"]
        if owned or (pid is not None and int(pid) != os.getpid() and not process_alive(int(pid))):
            found.append(path)
    return found


def remove_orphans(folder: Path, owned: bool = False) -> list[Path]:
    """Delete what `orphans` finds; returns what was deleted (a file that is gone already is skipped)."""
    removed = []
    for path in orphans(folder, owned):
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def replace_folder(target: Path, hint: str) -> Iterator[Path]:
    """A temporary folder beside `target` to fill in the block; at its end the folder takes
    `target`'s place in one rename (an earlier `target` is removed after), so nothing partial is
    ever seen under `target`'s name. Orphans of killed writers beside it are removed first.

    Raises:
        RunFailed: the disk filled up (`no space left on <target>`) or a file could not be
            written; `target` is as it was and the temporary folder is gone.
    """
    make_folder(target.parent)
    remove_orphans(target.parent)
    tmp = make_temp_folder(target)
    try:
        yield tmp
        swap_in(tmp, target)
    except OSError as exc:
        raise write_failure(exc, target, hint) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_temp_folder(target: Path) -> Path:
    """A new empty folder beside `target` under a temporary name (with the usual permissions,
    unlike tempfile.mkdtemp's 0700)."""
    while True:
        path = target.with_name(f"{temp_name(target)}{secrets.token_hex(4)}.tmp")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise write_failure(exc, target, "nothing was written") from exc
        return path


def swap_in(folder: Path, target: Path) -> None:
    """Rename `folder` to `target`; an existing `target` folder is renamed aside first, then removed."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(folder, target)
        return
    old = target.with_name(f"{temp_name(target)}old.tmp")
    os.replace(target, old)
    try:
        os.replace(folder, target)
    except OSError:
        os.replace(old, target)  # put the earlier folder back
        raise
    shutil.rmtree(old, ignore_errors=True)


def special_kind(path: str | Path) -> str | None:
    """What `path` is when it exists but is not a regular file (links followed); None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in KINDS if test(mode)), "not a regular file")
