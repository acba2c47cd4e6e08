"""A run directory belongs to one run: real processes on one run, names alike, stray checkpoints,
read-only folders, full disks and the leftovers of killed processes.

The lock cases run real `guide` processes (tests/crash.py holds one mid-step until it is
killed). The full-disk cases fill a small tmpfs at a chosen write (they need root to mount
it and skip without); one case fakes torch.save's full-disk error and runs everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides
from tests.test_bad_inputs import snapshot
from tests.test_resume import finish
from tests.test_resume import guide as crashing

runner = CliRunner()
DIGITS = "configs/image/digits.yaml"
TINY = ["train.epochs=1", "train.max_steps=2", "data.loader.num_workers=0", "~data.test"]
MORE = ["train.epochs=2", "train.max_steps=4"]  # a resumed run that trains, saves and writes metrics again


def args(digits_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["train-image", "--config", DIGITS, *digits_overrides(digits_dir, out), f"name={name}", *TINY, *extra]


def guide(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"}, timeout=timeout)


def error_line(stderr: str) -> str:
    """The one `error:` line, which must be the last line."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


# ---------------------------------------------------------------- one process per run

def test_a_second_process_is_refused_and_a_killed_ones_lock_is_taken_over(digits_dir: Path, tmp_path: Path) -> None:
    first = guide(*args(digits_dir, tmp_path, "exp", "--quiet"))
    assert first.returncode == 0, first.stderr
    holder = crashing("hold:step", 1, args(digits_dir, tmp_path, "exp", *MORE, "--resume", "auto", "--quiet"))
    try:
        holder.wait_for("held at step 1")  # it holds the run, in its first step, until it is killed
        lock = json.loads((tmp_path / "exp" / "run.lock").read_text())
        assert lock["pid"] == holder.proc.pid and lock["host"] and lock["since"]
        before = snapshot(tmp_path)
        second = guide(*args(digits_dir, tmp_path, "exp", *MORE, "--resume", "auto", "--quiet"))
        assert second.returncode == 2, second.stderr
        line = error_line(second.stderr)
        assert f"{tmp_path / 'exp'} is in use by process {holder.proc.pid} (since {lock['since']})" in line
        assert snapshot(tmp_path) == before
    finally:
        holder.proc.kill()
    code, _ = finish(holder)
    assert code == -signal.SIGKILL
    assert json.loads((tmp_path / "exp" / "run.lock").read_text())["pid"] == holder.proc.pid  # stale now
    third = guide(*args(digits_dir, tmp_path, "exp", *MORE, "--resume", "auto"))
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of process {holder.proc.pid}" in third.stderr
    assert torch.load(tmp_path / "exp" / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] == 4
    assert not (tmp_path / "exp" / "run.lock").exists()  # released on exit
    assert not temporary_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_resume_auto_takes_only_runs_of_the_exact_name(digits_dir: Path, tmp_path: Path) -> None:
    for name in ("exp-long", "exp-2"):  # exp-2 is a run of its own, named so in its config
        done = guide(*args(digits_dir, tmp_path, name, "--quiet"))
        assert done.returncode == 0, done.stderr
    others = snapshot(tmp_path)
    refused = guide(*args(digits_dir, tmp_path, "exp", "--resume", "auto", "--quiet"))
    assert refused.returncode == 2
    assert f"no run named exp in {tmp_path}" in error_line(refused.stderr)
    assert snapshot(tmp_path) == others
    for _ in range(2):
        done = guide(*args(digits_dir, tmp_path, "exp", "--quiet"))
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "exp-2", "exp-3", "exp-long"]
    resumed = guide(*args(digits_dir, tmp_path, "exp", *MORE, "--resume", "auto", "--quiet"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {tmp_path / 'exp-3' / 'checkpoints' / 'last.pt'}" in resumed.stderr  # the newest of exp
    assert {k: v for k, v in snapshot(tmp_path).items() if k.startswith(("exp-long", "exp-2"))} == others


def test_a_checkpoint_outside_a_run_directory_starts_a_new_one(digits_dir: Path, tmp_path: Path) -> None:
    out, mine = tmp_path / "runs", tmp_path / "mine"
    done = guide(*args(digits_dir, out, "exp", "--quiet"))
    assert done.returncode == 0, done.stderr
    for kept in ("models/ck.pt", "checkpoints/ck.pt"):  # beside no config.yaml or metrics of a run
        (mine / kept).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "exp" / "checkpoints" / "last.pt", mine / kept)
    (mine / "config.yaml").write_text("my own config\n")
    (mine / "summary.json").write_text('{"mine": true}\n')
    before, run = snapshot(mine), snapshot(out / "exp")
    for n, kept in ((2, "models/ck.pt"), (3, "checkpoints/ck.pt")):
        resumed = guide(*args(digits_dir, out, "exp", *MORE, "--resume", str(mine / kept), "--quiet"))
        assert resumed.returncode == 0, resumed.stderr
        assert f"{mine / kept} lies in no run directory: this run goes on in a new one, {out / f'exp-{n}'}" \
            in resumed.stderr
        assert (out / f"exp-{n}" / "checkpoints" / "last.pt").is_file()
    assert snapshot(mine) == before and snapshot(out / "exp") == run


def test_leftovers_of_a_run_killed_in_its_first_checkpoint_go_when_the_next_starts(digits_dir: Path,
                                                                                   tmp_path: Path) -> None:
    code, err = finish(crashing("save", 1, args(digits_dir, tmp_path, "exp", "--quiet")))
    assert code == -signal.SIGKILL, err
    (orphan,) = temporary_files(tmp_path)
    assert orphan.parent == tmp_path / "exp" / "checkpoints" and orphan.name.startswith(".last.pt.")
    done = guide(*args(digits_dir, tmp_path, "exp"))
    assert done.returncode == 0, done.stderr
    assert "removed 1 temporary file(s) left by killed runs" in done.stderr
    assert not temporary_files(tmp_path)
    assert (tmp_path / "exp-2" / "checkpoints" / "last.pt").is_file()


def test_resume_into_a_read_only_run_folder(digits_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = guide(*args(digits_dir, out, "exp", "--quiet"))
    assert done.returncode == 0, done.stderr
    view = tmp_path / "view"
    view.mkdir()
    with read_only_view(out, view):
        before = snapshot(out)
        refused = guide(*args(digits_dir, view, "exp", *MORE, "--resume", "auto", "--quiet"))
        assert refused.returncode == 2
        assert f"cannot write to the run directory {view / 'exp'} (Read-only file system)" in error_line(
            refused.stderr)
        assert snapshot(out) == before


@contextlib.contextmanager
def read_only_view(folder: Path, view: Path) -> Iterator[None]:
    """`folder` seen read-only at `view` (a read-only bind mount); skips the test without mount rights."""
    if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode:
        pytest.skip("no permission to mount (root is needed for a read-only folder)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode:
            pytest.skip("no permission to remount read-only")
        yield
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


# ---------------------------------------------------------------- full disks

class Disk:
    """A small tmpfs that a test fills up at the moment it chooses."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    def fill(self) -> None:
        """Take every free byte, so the next write fails with ENOSPC."""
        with self.ballast.open("ab", buffering=0) as f:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    path = tmp_path / "disk"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("no permission to mount a tmpfs (root is needed for a small full disk)")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def fill_before(monkeypatch: pytest.MonkeyPatch, disk: Disk, owner: object, name: str, call: int = 1) -> None:
    """Fill the disk just before the `call`-th call of `owner.name`."""
    real, calls = getattr(owner, name), [0]

    def filled(*a: object, **k: object) -> object:
        calls[0] += 1
        if calls[0] == call:
            disk.fill()
        return real(*a, **k)

    monkeypatch.setattr(owner, name, filled)


def run_full(digits_dir: Path, disk: Disk, arm: Callable[[], None], check: Callable[[Path], dict[str, str]],
             fragment: str) -> None:
    """Train, `arm` the filling, resume: exit 1, one `no space left on` line naming `fragment`, the
    files `check` picks byte-identical, no temporary file left."""
    out = disk.path / "runs"
    done = runner.invoke(app, args(digits_dir, out, "exp", "--quiet"))
    assert done.exit_code == 0, done.output
    before = check(out / "exp")
    arm()
    result = runner.invoke(app, args(digits_dir, out, "exp", *MORE, "--resume", "auto", "--quiet"))
    assert result.exit_code == 1, result.output
    assert f"no space left on {out / 'exp' / fragment}" in error_line(result.stderr)
    assert "Traceback" not in result.output
    disk.free()
    assert check(out / "exp") == before
    assert not temporary_files(disk.path) and not (out / "exp" / "run.lock").exists()


def checkpoints(run_dir: Path) -> dict[str, str]:
    return snapshot(run_dir / "checkpoints")


def metrics(run_dir: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(run_dir).items() if k.startswith("metrics") or k.startswith("checkpoints")}


def test_full_disk_while_saving_a_checkpoint(digits_dir: Path, disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchguide.checkpoint as checkpoint

    run_full(digits_dir, disk, lambda: fill_before(monkeypatch, disk, checkpoint, "save_checkpoint"), checkpoints,
             "checkpoints/last.pt")


def test_full_disk_while_writing_metrics(digits_dir: Path, disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchguide.report import MetricsWriter

    arm = lambda: fill_before(monkeypatch, disk, MetricsWriter, "rewrite", call=2)  # noqa: E731 (1: as it starts)
    run_full(digits_dir, disk, arm, metrics, "metrics.jsonl")


def test_full_disk_while_drawing_curves(digits_dir: Path, disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchguide.runner as runner_module

    run_full(digits_dir, disk, lambda: fill_before(monkeypatch, disk, runner_module, "plot_curves"),
             lambda d: {"curves.png": snapshot(d)["curves.png"]}, "curves.png")


@pytest.mark.parametrize("source", ["reviews", "digits"])
def test_full_disk_while_writing_demo_data(source: str, disk: Disk) -> None:
    out = disk.path / "data" / source
    done = runner.invoke(app, ["data", source, "--out", str(out)])
    assert done.exit_code == 0, done.output
    before = snapshot(out)
    disk.fill()
    result = runner.invoke(app, ["data", source, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"no space left on {out}" in error_line(result.stderr)
    disk.free()
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [source]  # no temporary folder beside it


def test_torch_save_reporting_a_full_disk_as_runtime_error(digits_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save turns the OSError of a full disk into a RuntimeError; the run still says what happened."""
    done = runner.invoke(app, args(digits_dir, tmp_path, "exp", "--quiet"))
    assert done.exit_code == 0, done.output
    before = checkpoints(tmp_path / "exp")
    real = torch.save

    def full(obj: object, f: object, *a: object, **k: object) -> None:
        real(obj, f, *a, **k)  # some bytes reach the temporary file first
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:  # raised while handling it, as torch does
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904

    monkeypatch.setattr(torch, "save", full)
    result = runner.invoke(app, args(digits_dir, tmp_path, "exp", *MORE, "--resume", "auto", "--quiet"))
    assert result.exit_code == 1, result.output
    assert f"no space left on {tmp_path / 'exp' / 'checkpoints' / 'last.pt'}" in error_line(result.stderr)
    assert checkpoints(tmp_path / "exp") == before and not temporary_files(tmp_path)


def test_full_disk_before_the_run_takes_its_lock(digits_dir: Path, disk: Disk) -> None:
    out = disk.path / "runs"
    done = runner.invoke(app, args(digits_dir, out, "exp", "--quiet"))
    assert done.exit_code == 0, done.output
    before = snapshot(out)
    disk.fill()
    result = runner.invoke(app, args(digits_dir, out, "exp", *MORE, "--resume", "auto", "--quiet"))
    assert result.exit_code == 1, result.output
    assert f"no space left on {out / 'exp' / 'run.lock'}" in error_line(result.stderr)
    disk.free()
    assert snapshot(out) == before  # no lock file left behind either
