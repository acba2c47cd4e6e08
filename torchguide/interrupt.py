"""Ctrl-C and SIGTERM during training: stop at the next safe point, keep the run.

The first signal only sets a flag; the loop looks at it after each optimizer step and
during validation, writes `last.pt` and stops with a hint on how to resume. A second
signal does not wait: it raises KeyboardInterrupt at once (checkpoint writes are
atomic, so even that leaves the previous `last.pt` whole).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any


class Interrupted(Exception):
    """Raised inside the loop at a safe point after a stop was requested."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.checkpoint: Path | None = None  # set once last.pt is written


class StopRequest:
    """Install SIGINT/SIGTERM handlers for a block; `requested` names the first signal seen."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, notify: Callable[[str], Any] | None = None) -> None:
        self.requested: str | None = None
        self.notify = notify
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if self.notify:
            self.notify(f"{self.requested}: stopping after this step and saving last.pt "
                        "(press Ctrl-C again to quit at once)")

    def check(self) -> None:
        """Raise Interrupted when a stop was requested; call it where stopping is safe."""
        if self.requested is not None:
            raise Interrupted(self.requested)


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: Ctrl-C is the main process's to handle, not the workers'."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
