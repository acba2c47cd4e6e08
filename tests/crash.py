"""Run `guide` in this process and SIGKILL it at a chosen point.

    python tests/crash.py POINT N guide-args...
    torchrun --nproc-per-node 2 tests/crash.py POINT N guide-args...   (CRASH_RANK=1: only rank 1)

POINT is where the N-th event (1-based) kills the process, with no chance to clean up:

- `step`: during the N-th training step, after backward and before the optimizer step;
- `save`: half-way through writing the N-th checkpoint (half the bytes are on disk);
- `valid`: during the N-th validation pass, after its first batch;
- `slow:S`: no kill, but the N-th step sleeps S seconds after printing `slow step` on
  stderr (a long step, for Ctrl-C and SIGTERM tests);
- `none`: no kill (the uninterrupted reference run, in the same kind of process).
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


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, n: int) -> None:
    import torch

    import torchguide.train as train

    count = 0

    def due() -> bool:
        nonlocal count
        count += 1
        return count == n

    if point == "step":
        real_step = train.optimizer_step

        def optimizer_step(run: Any) -> None:
            if due():
                die()
            real_step(run)

        train.optimizer_step = optimizer_step
    elif point == "save":
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
    elif point == "valid":
        real_evaluate = train.evaluate

        def evaluate(model: Any, loader: Any, *args: Any, **kwargs: Any) -> Any:
            if due():
                next(iter(loader))  # one validation batch done
                die()
            return real_evaluate(model, loader, *args, **kwargs)

        train.evaluate = evaluate
    elif point.startswith("slow:"):
        real_step, seconds = train.optimizer_step, float(point.split(":")[1])

        def slow_step(run: Any) -> None:
            if due():
                print("slow step", file=sys.stderr, flush=True)
                time.sleep(seconds)
            real_step(run)

        train.optimizer_step = slow_step
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    point, n, *args = sys.argv[1:]
    if os.environ.get("CRASH_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        arm(point, int(n))  # in a distributed job, CRASH_RANK picks the rank that dies
    from cli.main import app

    sys.argv = ["guide", *args]
    app()
