"""Compute threads on a busy CPU: fewer threads when the run does not get the cores it was given.

torch's intra-op threads meet after every parallel operation, so when another process takes
one of their cores, the others wait for the thread that lost it: on 2 cores shared with one
busy process, 2 threads ran an epoch 11-14x slower than on a quiet machine, while 1 thread
held its speed. The governor watches each epoch's first steps. When the process got clearly
less CPU time than its threads x wall time, it runs a window of steps with fewer threads,
then one more with the count it had (A B A), and keeps the fewer threads when their steps
were faster than both (a trial twice as fast decides at once); once reduced, it tries the
full count again after 1, 2, 4 ... epochs and returns to it when the cores are free.

Only for `train.threads: auto` on the CPU, and not when auto decides by rule (GUIDE_TUNE=off,
`train.deterministic`): a thread count changes the order of floating-point sums.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from torchguide.config import Config
from torchguide.tune import measuring

WINDOW = 8  # steps measured at a time
LOW_SHARE = 0.65  # the process got less CPU than this share of threads x wall time: try fewer threads
# (quiet, a run loading its data in the main process got ~0.78 of 2 threads; beside a busy process, 0.26-0.5)
GAIN = 1.1  # another thread count is kept when its steps are at least this much faster
ENOUGH_S = 0.5  # a window also ends after 2 steps that took this long (a busy machine's slow steps)
ABANDON = 3.0  # a trial step this many times slower than the current ones ends the trial at once
CLEAR = 2.0  # a trial this many times faster than the window before it needs no window after it


class ThreadGovernor:
    """Called after every optimizer step with the epoch; changes torch's thread count when that is faster."""

    def __init__(self, threads: int, say: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.perf_counter, cpu: Callable[[], float] = time.process_time,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        self.full = self.current = threads
        self.say, self.clock, self.cpu, self.set_threads = say, clock, cpu, set_threads
        self.changes: list[str] = []
        self.epoch, self.steps, self.phase = -1, 0, "idle"
        self.mark = (0.0, 0.0)
        self.step_s, self.share = 0.0, 1.0  # a step's seconds at the current count, and the CPU it got
        self.trial_s = 0.0  # a step's seconds at the count on trial
        self.trying = threads  # the thread count being measured
        self.retry_at, self.wait = 0, 1  # reduced: the epoch of the next retry of the full count, and the wait

    @classmethod
    def for_run(cls, config: Config, device: torch.device, threads: int) -> ThreadGovernor | None:
        if config.train.threads != "auto" or device.type != "cpu" or threads < 2 or not measuring(config):
            return None
        return cls(threads)

    def tick(self, epoch: int) -> None:
        if epoch != self.epoch:  # a new epoch: watch again (reduced: only when a retry of the full count is due)
            idle = self.current < self.full and epoch < self.retry_at
            self.epoch, self.phase, self.steps = epoch, "idle" if idle else "warm", 0
        self.steps += 1
        if self.phase == "warm":  # the epoch's first step pays for starting its loader: not counted
            self.begin("watch", self.current)
        elif self.phase in ("watch", "trial", "confirm"):
            wall = self.clock() - self.mark[0]
            if self.phase == "trial" and wall > ABANDON * self.step_s * self.steps:  # clearly slower: stop now
                self.settle(0.0)
            elif self.steps >= WINDOW or (self.steps >= 2 and wall >= ENOUGH_S):
                {"watch": self.watched, "trial": self.tried, "confirm": self.settle}[self.phase](wall / self.steps)

    def begin(self, phase: str, threads: int) -> None:
        if phase != "watch":
            self.set_threads(threads)
        self.phase, self.steps, self.mark = phase, 0, (self.clock(), self.cpu())

    def watched(self, step_s: float) -> None:
        """A window at the current count: reduced, try the full count again; at full, try fewer when the
        process got too little CPU time."""
        self.share = (self.cpu() - self.mark[1]) / (step_s * self.steps * self.current) if step_s > 0 else 1.0
        self.step_s = step_s
        if self.current < self.full:
            self.trying = self.full
        elif self.share < LOW_SHARE:
            self.trying = max(1, min(self.full - 1, round(self.full * self.share)))
        else:
            self.phase = "idle"
            return
        self.begin("trial", self.trying)

    def tried(self, step_s: float) -> None:
        """The trial's window is done: measure the current count once more, so a machine that got quieter or
        busier during the trial (or steps that sped up as the run warmed) cannot decide alone (A B A). A trial
        CLEAR times faster decides at once: a window more of slow steps would cost more than it could tell."""
        self.trial_s = step_s
        if self.step_s >= CLEAR * step_s:
            self.settle(self.step_s)
        else:
            self.begin("confirm", self.current)

    def settle(self, step_s: float) -> None:
        """Keep the trial's thread count when its steps were faster than the current count's before and
        after it; else stay (the trial was ended early when `step_s` is 0)."""
        before = self.current
        gain = min(self.step_s, step_s) / self.trial_s if step_s and self.trial_s else 0.0
        if gain >= GAIN:
            if self.phase == "confirm":  # back at the current count for the window after the trial
                self.set_threads(self.trying)
            self.current, self.wait = self.trying, 1
            self.report(f"threads: {before} -> {self.trying}: " + (
                f"this process got {self.share:.0%} of {before} cores' time (other work is running); "
                if self.trying < before else "the cores are free again; ") + f"steps are {gain:.1f}x faster")
        else:
            if not step_s:
                self.set_threads(before)
            if before < self.full:  # the cores are still busy: wait twice as many epochs before the next retry
                self.wait *= 2
                self.retry_at = self.epoch + self.wait
        self.phase = "idle"

    def report(self, message: str) -> None:
        self.changes.append(message)
        if self.say is not None:
            self.say(message)

    def summary(self) -> dict[str, Any]:
        return {"start": self.full, "end": self.current, "changes": self.changes}
