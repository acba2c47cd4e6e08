"""Threads on a busy CPU: the governor drops to fewer threads when that is faster, and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchguide.contention import WINDOW, ThreadGovernor

from .test_train import digits_config


class Machine:
    """A fake CPU of `cores` cores, `busy` of them taken by another process: a step's wall and CPU time
    for a thread count, as torch's threads behave (all of them wait for the slowest)."""

    def __init__(self, cores: int = 2, busy: int = 0) -> None:
        self.cores, self.busy, self.threads = cores, busy, cores
        self.wall = self.cpu_s = 0.0
        self.counts: list[int] = []

    def set_threads(self, n: int) -> None:
        self.threads = n
        self.counts.append(n)

    def step(self) -> None:
        work = 1.0 / self.threads  # a second of work shared by the threads
        if self.busy and self.threads + self.busy > self.cores:
            wall, share = work * 10, 0.5  # threads wait for the one that lost its core
        else:
            wall, share = work, 1.0
        self.wall += wall
        self.cpu_s += wall * self.threads * share

    def governor(self) -> ThreadGovernor:
        messages: list[str] = []
        governor = ThreadGovernor(self.cores, messages.append, clock=lambda: self.wall, cpu=lambda: self.cpu_s,
                                  set_threads=self.set_threads)
        governor.messages = messages
        return governor


def run(machine: Machine, governor: ThreadGovernor, epoch: int, steps: int) -> None:
    for _ in range(steps):
        machine.step()
        governor.tick(epoch)


def test_a_quiet_machine_keeps_its_threads() -> None:
    machine = Machine()
    governor = machine.governor()
    run(machine, governor, 0, 50)
    assert machine.counts == [] and governor.summary() == {"start": 2, "end": 2, "changes": []}


def test_busy_cores_drop_to_one_thread_and_free_cores_bring_two_back() -> None:
    machine = Machine(busy=1)
    governor = machine.governor()
    run(machine, governor, 0, 3 * WINDOW)
    assert machine.threads == 1 and governor.current == 1 and machine.counts == [1]  # 10x faster: no A B A
    [message] = governor.messages
    assert message.startswith("threads: 2 -> 1: this process got 50% of 2 cores' time (other work is running)")
    tried = len(machine.counts)
    run(machine, governor, 1, 3 * WINDOW)  # still busy: the trial of 2 threads is abandoned after its first step
    assert machine.threads == 1 and len(governor.messages) == 1 and machine.counts[tried:] == [2, 1]
    run(machine, governor, 2, 3 * WINDOW)  # the next retry waits twice as long: none in epoch 2
    assert machine.counts[tried:] == [2, 1]
    machine.busy = 0
    run(machine, governor, 3, 3 * WINDOW)
    assert machine.threads == 2 and governor.messages[-1].startswith("threads: 1 -> 2: the cores are free again")
    assert governor.summary()["end"] == 2


def test_low_share_without_a_gain_goes_back() -> None:
    """A process that gets little CPU for another reason (waiting on data) keeps its threads when fewer are
    not faster."""
    machine = Machine()
    governor = machine.governor()
    governor.cpu = lambda: machine.cpu_s * 0.3  # most of each step spent waiting
    run(machine, governor, 0, 3 * WINDOW)
    assert machine.counts == [1, 2] and machine.threads == 2 and governor.messages == []


@pytest.mark.parametrize("overrides", [("train.threads=2",), ("train.deterministic=true",), ()])
def test_only_auto_threads_that_are_measured(digits_dir: Path, tmp_path: Path, overrides: tuple[str, ...],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = digits_config(digits_dir, tmp_path, *overrides)
    assert ThreadGovernor.for_run(cfg, torch.device("cpu"), 2) is None  # GUIDE_TUNE=off in the suite too
    monkeypatch.delenv("GUIDE_TUNE")
    assert (ThreadGovernor.for_run(cfg, torch.device("cpu"), 2) is None) == bool(overrides)
    assert ThreadGovernor.for_run(cfg, torch.device("cpu"), 1) is None


def test_steps_that_speed_up_as_the_run_warms_do_not_decide() -> None:
    """The first window's steps are slow for another reason (caches filling): the trial's faster steps are
    set against the window after it too, which is as fast, so the threads stay."""
    machine = Machine()
    governor = machine.governor()
    governor.cpu = lambda: machine.cpu_s * 0.5
    slow = iter([0.0, 1.0, 1.0])  # the steps of the first window (after the uncounted first step) are slow
    step = machine.step

    def warming() -> None:
        step()
        machine.wall += next(slow, 0.0)
    machine.step = warming
    run(machine, governor, 0, 4 * WINDOW)
    assert machine.counts == [1, 2] and governor.messages == []
