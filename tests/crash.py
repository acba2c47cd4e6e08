"""Run `guide` in this process and stop it at a chosen point.

    python tests/crash.py POINT N guide-args...
    torchrun --nproc-per-node 2 tests/crash.py POINT N guide-args...   (CRASH_RANK=1: only rank 1)

POINT is where the N-th event (1-based, counted in this process) acts. A bare place kills
the process there with SIGKILL, with no chance to clean up:

- `step`: during the N-th training step, after backward and before the optimizer step;
- `save`: half-way through writing the N-th checkpoint (half the bytes are on disk);
- `valid`: during the N-th validation pass, after its first batch;
- `after-save`: once the N-th checkpoint is wholly written and in place.

`hold:PLACE` (PLACE one of step, after-save, valid) prints a marker line on stderr there
instead (`held at step N`, `held after save N`, `held in validation N`) and waits until a
SIGINT or SIGTERM has been handled by the run, then goes on; a SIGKILL ends it where it
stands. `block:step` prints `blocked at step N` and never goes on: only a signal handler
that raises (the second Ctrl-C) or a kill ends it. A test waits for the marker, then
signals: where the signal lands never depends on timing.

`none`: nothing happens (the uninterrupted reference run, in the same kind of process).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

# where the loop's functions live: evaluate and save are patched here
import torchguide.loop as loop_module  # noqa: E402

PLACES = {"step": "at step", "save": None, "after-save": "after save", "valid": "in validation"}
POINTS = {*PLACES, "hold:step", "hold:after-save", "hold:valid", "block:step"}
HANDLED = (signal.SIGINT, signal.SIGTERM)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hold(marker: str) -> None:
    """Print `marker` on stderr, then wait until a SIGINT or SIGTERM has been handled."""
    handled: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}

    def note(signum: int, frame: Any) -> None:
        handled.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)  # the run's own handler: a stop request, or the second Ctrl-C
        else:  # no handler of the run's: the signal does what it would have done
            signal.signal(signum, handler)
            signal.raise_signal(signum)

    for sig in HANDLED:  # before the marker: a signal sent on seeing it is never missed
        signal.signal(sig, note)
    try:
        print(marker, file=sys.stderr, flush=True)
        while not handled:
            time.sleep(0.05)  # a poll: the signal, not the time, ends the wait
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def block(marker: str) -> None:
    """Print `marker` on stderr and never return: only an exception from a signal handler, or a kill, ends it."""
    print(marker, file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


def arm(point: str, n: int) -> None:
    if point not in POINTS:
        raise SystemExit(f"unknown point {point!r}: choose none, {', '.join(sorted(POINTS))}")
    mode, _, place = point.rpartition(":")
    count = 0

    def due() -> bool:
        nonlocal count
        count += 1
        return count == n

    def act() -> None:
        where = f"{PLACES[place]} {n}"
        if mode == "hold":
            hold(f"held {where}")
        elif mode == "block":
            block(f"blocked {where}")
        else:
            die()

    if place == "step":  # every optimizer step of train_step goes through the scaler, enabled or not
        real_step = torch.amp.GradScaler.step

        def scaler_step(scaler: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            if due():
                act()
            return real_step(scaler, optimizer, *args, **kwargs)

        torch.amp.GradScaler.step = scaler_step
    elif place == "after-save":
        real_save_run = loop_module.save

        def save_run(run: Any, watch: Any, saver: Any, *args: Any, **kwargs: Any) -> Any:
            path = real_save_run(run, watch, saver, *args, **kwargs)
            if due():
                saver.wait()  # the checkpoint is written on a background thread: all of it on disk
                act()
            return path

        loop_module.save = save_run
    elif place == "valid":
        real_evaluate = loop_module.evaluate

        def evaluate(model: Any, loader: Any, *args: Any, **kwargs: Any) -> Any:
            if due():
                next(iter(loader))  # one validation batch done
                act()
            return real_evaluate(model, loader, *args, **kwargs)

        loop_module.evaluate = evaluate
    elif place == "save":
        real_save = torch.save

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if not due():
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            die()

        torch.save = save


if __name__ == "__main__":
    point, n, *args = sys.argv[1:]
    if point != "none" and os.environ.get("CRASH_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        arm(point, int(n))  # in a distributed job, CRASH_RANK picks the rank that stops
    from cli.main import app

    sys.argv = ["guide", *args]
    app()
