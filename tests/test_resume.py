"""Exact resume: runs killed with SIGKILL, or stopped by signals, end bit-identical to uninterrupted ones.

Every run here is a real `guide` process (tests/crash.py) killed at a chosen point: during
a training step, half-way through a checkpoint write, during validation, or from outside
while it waits at such a point (the test sees its marker line, then signals: nothing
depends on timing). Each is resumed with `--resume auto` until it finishes, and must end
with the same weights, optimizer state and metrics rows as a run never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, digits_overrides, reviews_overrides

CRASH = ROOT / "tests" / "crash.py"
TIMING = ("time_s", "samples_per_s", "tokens_per_s")  # the only fields allowed to differ between runs


class Guide:
    """A `guide` process run through tests/crash.py; stderr goes to a file (killed loader workers
    may outlive their parent for a moment, and must not hold a pipe open)."""

    def __init__(self, point: str, n: int, args: list[str]) -> None:
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"guide-{os.getpid()}-{time.monotonic_ns()}.log"
        env = {**os.environ, "NO_COLOR": "1"}
        with self.log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, str(CRASH), point, str(n), *args], cwd=ROOT, env=env,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def finish(self, timeout: float = 180) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        err = self.log.read_text()
        self.log.unlink(missing_ok=True)
        return code, err

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert self.proc.poll() is None, f"exited before {text!r}: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
            time.sleep(0.02)


def guide(point: str, n: int, args: list[str]) -> Guide:
    return Guide(point, n, args)


def finish(run: Guide, timeout: float = 180) -> tuple[int, str]:
    return run.finish(timeout)


def image_args(digits_dir: Path, out: Path) -> list[str]:
    """Digits with random augmentation in 2 loader workers and a per-step one-cycle schedule."""
    return ["train-image", "--config", "configs/image/digits.yaml", *digits_overrides(digits_dir, out),
            "train.epochs=2", "data.loader.batch_size=128", "data.loader.num_workers=2",
            "train.checkpoint_every.steps=4", "train.log_every=3", "train.keep_last=2", "--quiet"]


def text_args(reviews_dir: Path, out: Path) -> list[str]:
    """The reviews BiLSTM (dropout, length buckets, per-step warm-up) on a small slice."""
    return ["train-text", "--config", "configs/text/reviews.yaml", *reviews_overrides(reviews_dir, out),
            "train.epochs=2", "data.loader.batch_size=32", "model.hidden=16", "model.embed_dim=16",
            "train.checkpoint_every.steps=3", "train.log_every=2", "--quiet"]


def outcome(out: Path) -> tuple[dict, list[dict]]:
    """(last.pt, metrics rows without timings) of the single run under `out`."""
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return payload, [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_run(resumed: Path, reference: Path) -> None:
    got, rows = outcome(resumed)
    want, want_rows = outcome(reference)
    assert got["state"]["step"] == want["state"]["step"] > 0
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), f"weights differ: {key}"
    for a, b in zip(got["optimizer"]["state"].values(), want["optimizer"]["state"].values(), strict=True):
        for key in b:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), f"optimizer state differs: {key}"
    assert rows == want_rows  # same rows: none duplicated, none missing


def chain(args: list[str], kills: list[tuple[str, int]]) -> list[str]:
    """Run, get killed at each point in turn, resume; returns each killed process's stderr."""
    errs = []
    for i, (point, n) in enumerate(kills):
        code, err = finish(guide(point, n, args + (["--resume", "auto"] if i else [])))
        assert code == -signal.SIGKILL, f"kill {point} {n} did not happen (exit {code}): {err}"
        errs.append(err)
    code, err = finish(guide("none", 0, args + ["--resume", "auto"]))
    assert code == 0, err
    return errs


@pytest.fixture(scope="module")
def text_reference(reviews_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text-reference")
    code, err = finish(guide("none", 0, text_args(reviews_dir, out)))
    assert code == 0, err
    return out


def test_image_run_killed_during_step_checkpoint_write_and_validation(digits_dir: Path, tmp_path: Path) -> None:
    reference = guide("none", 0, image_args(digits_dir, tmp_path / "reference"))  # runs alongside the chain
    args = image_args(digits_dir, tmp_path / "killed")
    # step 6: mid-epoch, after the step-4 checkpoint; save 2: the epoch-1 last.pt, half written;
    # valid 2: the epoch-2 validation of the third process
    code, err = finish(guide("step", 6, args))
    assert code == -signal.SIGKILL, err
    code, err = finish(guide("save", 2, args + ["--resume", "auto"]))
    assert code == -signal.SIGKILL, err
    checkpoints = next((tmp_path / "killed").iterdir()) / "checkpoints"
    assert list(checkpoints.glob(".last.pt.*.tmp")), "the half-written checkpoint should be a temporary file"
    assert torch.load(checkpoints / "last.pt", weights_only=True)["state"]["step"] == 8  # the previous one, whole
    code, err = finish(guide("valid", 2, args + ["--resume", "auto"]))
    assert code == -signal.SIGKILL, err
    code, err = finish(guide("none", 0, args + ["--resume", "auto"]))
    assert code == 0, err
    assert finish(reference)[0] == 0
    assert_same_run(tmp_path / "killed", tmp_path / "reference")
    assert not list(checkpoints.glob(".*.tmp"))  # the leftover is cleaned up on resume
    assert sorted(p.name for p in checkpoints.glob("step-*.pt")) == ["step-00000020.pt", "step-00000022.pt"]


def test_text_run_killed_at_each_point(text_reference: Path, reviews_dir: Path, tmp_path: Path) -> None:
    args = text_args(reviews_dir, tmp_path)
    chain(args, [("step", 5), ("valid", 1), ("save", 3), ("step", 4)])
    assert_same_run(tmp_path, text_reference)


def test_text_run_killed_from_outside_at_any_moment(text_reference: Path, reviews_dir: Path, tmp_path: Path) -> None:
    # 8 steps an epoch, a checkpoint every 3 steps and at each epoch's end. Killed right after the
    # step-6 checkpoint; in epoch 1's validation (resumes from step 6 again); during step 9, before
    # its checkpoint (resumes from the epoch-end one)
    args = text_args(reviews_dir, tmp_path)
    for i, (point, n, marker, kept) in enumerate((("hold:after-save", 2, "held after save 2", 6),
                                                  ("hold:valid", 1, "held in validation 1", 6),
                                                  ("hold:step", 3, "held at step 3", 8))):
        run = guide(point, n, args + (["--resume", "auto"] if i else []))
        run.wait_for(marker)
        run.proc.kill()
        code, err = finish(run)
        assert code == -signal.SIGKILL, err
        last = next(tmp_path.iterdir()) / "checkpoints" / "last.pt"
        assert torch.load(last, weights_only=True)["state"]["step"] == kept
    code, err = finish(guide("none", 0, args + ["--resume", "auto"]))
    assert code == 0, err
    assert_same_run(tmp_path, text_reference)


def test_sigterm_finishes_the_step_saves_and_says_how_to_resume(text_reference: Path, reviews_dir: Path,
                                                                tmp_path: Path) -> None:
    args = text_args(reviews_dir, tmp_path)
    run = guide("hold:step", 5, args)
    run.wait_for("held at step 5")  # after backward, before the optimizer step
    run.proc.send_signal(signal.SIGTERM)
    code, err = finish(run)
    assert code == 1, err
    assert "Traceback" not in err
    message = next(line for line in err.splitlines() if line.startswith("error:"))
    assert "stopped by SIGTERM" in message and "(step 5)" in message and "--resume" in message
    payload = torch.load(next(tmp_path.iterdir()) / "checkpoints" / "last.pt", weights_only=True)
    assert payload["state"]["step"] == 5  # the step in flight was finished, then saved
    command = message.split("continue with: ", 1)[1].split()
    assert command[:2] == ["guide", "train-text"]
    code, err = finish(guide("none", 0, command[1:]))
    assert code == 0, err
    assert_same_run(tmp_path, text_reference)


def test_second_ctrl_c_quits_at_once(reviews_dir: Path, tmp_path: Path) -> None:
    run = guide("block:step", 2, text_args(reviews_dir, tmp_path))  # step 2 never ends by itself
    run.wait_for("blocked at step 2")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("press Ctrl-C again")
    run.proc.send_signal(signal.SIGINT)
    code, err = finish(run, timeout=120)  # the timeout only guards against a hang
    assert code == 1, err
    assert "interrupted" in err and "Traceback" not in err
