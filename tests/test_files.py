"""Atomic writes: the whole new file or the previous one, fsynced, and no temporary file left."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

import pytest

import torchguide.files as files
from torchguide.errors import RunFailed
from torchguide.files import sync_folder, write_atomic, write_text_atomic


def test_write_text_atomic_writes_the_text_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    assert write_text_atomic(target, "epoch,loss\n1,0.5\n") == target
    assert target.read_text(encoding="utf-8") == "epoch,loss\n1,0.5\n"
    assert write_text_atomic(target, "naïve → ok\n") == target  # replaces, in UTF-8
    assert target.read_bytes() == "naïve → ok\n".encode()
    assert os.listdir(tmp_path) == ["metrics.csv"]


def test_a_writer_that_raises_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    write_text_atomic(target, "previous")

    def breaks(f: IO[bytes]) -> None:
        f.write(b"half of the new")
        raise ValueError("the writer failed")

    with pytest.raises(ValueError, match="the writer failed"):
        write_atomic(target, breaks)
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.jsonl"
    write_text_atomic(target, "previous\n")

    def fills(f: IO[bytes]) -> None:
        f.write(b"{")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunFailed, match=f"no space left on {target}") as info:
        write_atomic(target, fills, hint="the metrics so far are whole")
    assert "the metrics so far are whole" in info.value.lines()[-1]
    assert isinstance(info.value.__cause__, OSError)
    assert target.read_text() == "previous\n"
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_the_file_and_its_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync, synced = os.fsync, []

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    write_text_atomic(tmp_path / "config.yaml", "name: t\n")
    assert synced == ["file", "folder"]


def test_a_folder_that_cannot_be_fsynced_is_skipped_and_other_errors_raise(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def refuses(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(files.os, "fsync", refuses)
    sync_folder(tmp_path)

    def fails(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", fails)
    with pytest.raises(OSError, match="Input/output error"):
        sync_folder(tmp_path)
