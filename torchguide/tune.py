"""`auto` settings chosen by measurement: the precision, the memory layout and torch.compile.

Before the first step, copies of the model train a few steps on the run's first batch in each
candidate setting, interleaved (one step of each in turn, so a change in the machine's load
falls on all of them alike), and the fastest is kept: bf16 only when its losses stay close to
fp32's, and a setting only when it is faster by a clear margin. Compile is tried only when the
run is long enough to pay for the compiling. A result is cached for the same model, input
shape, candidates and machine, so the next run of that model starts without measuring.

GUIDE_TUNE=off (and `train.deterministic`) decide by rule instead, without timing: auto
precision as `device.pick_precision` says, the default memory layout, no compile.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from torchguide import usercache
from torchguide.config import Config
from torchguide.data.collate import Batch
from torchguide.device import cpu_has_bf16, gpu_has_bf16, pick_precision
from torchguide.errors import ConfigError

TUNE_ENV = "GUIDE_TUNE"
PROBE_STEPS = 6  # timed steps of each candidate, after one untimed warm-up step
PROBE_SHARE = 0.03  # measuring may take at most this share of the run's steps
MARGIN = 1.03  # a setting other than the plain one must be at least this much faster
LOSS_TOLERANCE = 0.05  # bf16's mean loss over the probe steps within 5% of fp32's
COMPILE_GUESS_S = 60.0  # compiling a small model (CPU or GPU), before it was ever measured here


@dataclass
class Choice:
    """What one `auto` setting became, and why."""

    value: Any  # fp32 / bf16 / fp16; True or False
    why: str
    speedup: dict[str, float] = field(default_factory=dict)  # candidate -> step speed against the plain setting
    steps: int = 0  # timed steps of each candidate
    cached: bool = False

    def note(self, setting: str, shown: str | None = None) -> str:
        return f"{setting}: {shown or self.value} ({self.why})"


@dataclass(frozen=True)
class Setting:
    precision: str
    channels_last: bool = False
    compiled: bool = False

    def name(self) -> str:
        return self.precision + (" + channels_last" if self.channels_last else "") + (" + compile" if self.compiled
                                                                                        else "")


def measuring(config: Config) -> bool:
    """Whether auto settings are measured here (else decided by rule)."""
    off = os.environ.get(TUNE_ENV, "on").strip().lower() in ("off", "0", "false", "no")
    return not off and not config.train.deterministic


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None."""
    if device.type == "mps":
        return "torch.compile does not support MPS here"
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX") or "", "g++", "clang++",
                                                                     "c++", "cl")):
        return "torch.compile on the CPU needs a C++ compiler (g++ or clang++), and none was found"
    return None


def convolves(model: nn.Module) -> bool:
    """channels_last can matter: the model has 2-d convolutions."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def decide(config: Config, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
           batch: Batch | None, device: torch.device, threads: int, run_steps: int,
           kept: dict[str, Any] | None = None) -> dict[str, Choice]:
    """The precision, channels_last and compile of a run: as configured, measured, or by rule.

    `batch` is a real training batch on the device (None: nothing is measured); `run_steps` the
    run's optimizer steps; `kept` the choices a resumed checkpoint recorded, which a resume keeps
    for the settings still `auto` (so it continues as it began).
    """
    train = config.train
    if train.compile is True and (problem := compile_problem(device)):
        raise ConfigError(f"train.compile: {problem}", "use train.compile=false or auto")
    precision, rule_why = pick_precision(train.precision, device)  # refuses what the device cannot do
    choices = {"precision": Choice(precision, rule_why),
               "channels_last": configured(train.channels_last), "compile": configured(train.compile)}
    auto = {"precision": train.precision == "auto", "channels_last": train.channels_last == "auto",
            "compile": train.compile == "auto"}
    if kept:
        for key, value in kept.items():
            if auto.get(key):
                why = value["why"].removesuffix("; kept from the checkpoint")
                choices[key] = Choice(value["value"], f"{why}; kept from the checkpoint",
                                      value.get("speedup", {}), value.get("steps", 0), value.get("cached", False))
        return choices
    if batch is None or not measuring(config):
        return choices
    precisions = precision_candidates(train.precision, device)
    images = batch.inputs[0].dim() == 4
    layouts = [choices["channels_last"].value]
    if auto["channels_last"] and images and convolves(model):
        layouts = [False, True]
    candidates = [Setting(p, c) for p in precisions for c in layouts]
    if len(candidates) > 1:
        choices.update(measure_settings(model, loss_fn, optimizer, batch, device, threads, candidates, run_steps))
    if auto["compile"]:
        chosen = Setting(choices["precision"].value, choices["channels_last"].value)
        choices["compile"] = decide_compile(model, loss_fn, optimizer, batch, device, threads, chosen, run_steps)
    return choices


def configured(value: bool | str) -> Choice:
    """A yes/no setting before measurement: as configured, or off by rule for auto."""
    return Choice(value is True, "as configured" if value != "auto" else "auto: by rule")


def precision_candidates(requested: str, device: torch.device) -> list[str]:
    """fp32 and the device's fast lower precision, for `auto`; only the configured one otherwise."""
    if requested != "auto":
        return [requested]
    if device.type == "cuda":
        return ["fp32", "bf16" if gpu_has_bf16(device) else "fp16"]
    if device.type == "cpu" and cpu_has_bf16():
        return ["fp32", "bf16"]
    return ["fp32"]  # bf16 would be emulated on this CPU: several times slower, not worth a measurement


def measure_settings(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch,
                     device: torch.device, threads: int, candidates: list[Setting], run_steps: int
                     ) -> dict[str, Choice]:
    """Time the candidates (or find them in the cache) and keep the fastest acceptable one."""
    steps = probe_steps(len(candidates), run_steps)
    key = cache_key("settings", model, optimizer, batch, device, threads, candidates)
    found = usercache.lookup("tune", key)
    cached = found is not None
    if found is None and steps < 3:  # fewer timed steps would not resolve a difference
        short = f"auto: a run of {run_steps} steps is too short to measure the alternatives"
        return {key: Choice(value, short) for key, value, options in (
            ("precision", candidates[0].precision, {c.precision for c in candidates}),
            ("channels_last", False, {c.channels_last for c in candidates})) if len(options) > 1}
    if found is None:
        try:
            times, losses = probe(model, loss_fn, optimizer, batch, device, candidates, steps)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            full = f"auto: {len(candidates)} copies of the model do not fit in the device's memory to be measured"
            return {key: Choice(value, full) for key, value in (("precision", candidates[0].precision),
                                                                ("channels_last", False))}
        found = {"times": {c.name(): t for c, t in times.items()}, "steps": steps,
                 "close": {c.name(): loss_close(losses[candidates[0]], losses[c]) for c in candidates}}
        usercache.store("tune", key, found)
    base = candidates[0]
    speed = {c.name(): found["times"][base.name()] / found["times"][c.name()] for c in candidates}
    usable = [c for c in candidates if found["close"][c.name()]]
    best = max(usable, key=lambda c: speed[c.name()])
    if speed[best.name()] < MARGIN:
        best = base
    n, saved = found["steps"], ", cached" if cached else ""
    speedup = {name: round(value, 3) for name, value in speed.items()}

    def versus(one: Setting, other: Setting) -> float:
        return speed[one.name()] / speed[other.name()]

    choices = {}
    precisions = list(dict.fromkeys(c.precision for c in candidates))
    if len(precisions) > 1:
        low, plain = (Setting(p, best.channels_last) for p in (precisions[-1], "fp32"))
        if not found["close"][low.name()]:
            why = f"auto: {low.precision}'s loss strayed from fp32's over {n} steps"
        elif best.precision == low.precision:
            why = f"auto: {versus(low, plain):.2f}x faster than fp32 over {n} steps"
        else:
            why = f"auto: {low.precision} ran at {versus(low, plain):.2f}x fp32's speed over {n} steps"
        choices["precision"] = Choice(best.precision, why + saved, speedup, n, cached)
    if len({c.channels_last for c in candidates}) > 1:
        ratio = versus(Setting(best.precision, True), Setting(best.precision, False))
        why = (f"auto: {ratio:.2f}x faster than contiguous over {n} steps" if best.channels_last
               else f"auto: channels_last ran at {ratio:.2f}x contiguous's speed over {n} steps")
        choices["channels_last"] = Choice(best.channels_last, why + saved, speedup, n, cached)
    return choices


def decide_compile(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                   batch: Batch, device: torch.device, threads: int, chosen: Setting, run_steps: int) -> Choice:
    """Compile when the run is long enough that the faster steps pay back the compiling."""
    if problem := compile_problem(device):
        return Choice(False, f"auto: {problem}")
    if batch.lengths is not None:
        return Choice(False, "auto: text batches vary in length, and each new length would compile again")
    key = cache_key("compile", model, optimizer, batch, device, threads, [chosen])
    found = usercache.lookup("tune", key)
    cached = found is not None
    if found is None:
        step_s = probe(model, loss_fn, optimizer, batch, device, [chosen], 2)[0][chosen]  # to size the run
        run_s, guess = step_s * run_steps, COMPILE_GUESS_S
        if guess > PROBE_SHARE * run_s:  # a compile that does not pay would cost more than measuring may
            return Choice(False, f"auto: the run's ~{run_s:.0f} s of steps are too few to risk a compile "
                          f"(~{guess:.0f} s, over {PROBE_SHARE:.0%} of the run)")
        times, _ = probe(model, loss_fn, optimizer, batch, device, [chosen, Setting(**{**asdict(chosen),
                                                                                       "compiled": True})], 3)
        eager, compiled = times.values()
        found = {"eager_s": eager, "compiled_s": compiled["step"], "compile_s": compiled["first"]}
        usercache.store("tune", key, found)
    speed = found["eager_s"] / found["compiled_s"]
    saved = (found["eager_s"] - found["compiled_s"]) * run_steps
    told, tail = f"{speed:.2f}x faster steps, {found['compile_s']:.0f} s to compile", ", cached" if cached else ""
    if saved > found["compile_s"]:
        why = f"auto: {told}: saves ~{saved - found['compile_s']:.0f} s over {run_steps} steps{tail}"
        return Choice(True, why, {"compile": round(speed, 3)}, 3, cached)
    why = f"auto: {told}: not paid back over {run_steps} steps{tail}"
    return Choice(False, why, {"compile": round(speed, 3)}, 3, cached)


def probe_steps(candidates: int, run_steps: int) -> int:
    """Timed steps per candidate within the measuring budget: PROBE_STEPS, fewer for a short run."""
    budget = math.floor(PROBE_SHARE * run_steps / candidates) - 1
    return max(0, min(PROBE_STEPS, budget))


def probe(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch,
          device: torch.device, candidates: list[Setting], steps: int
          ) -> tuple[dict[Setting, Any], dict[Setting, list[float]]]:
    """Train a copy of model and optimizer per candidate for 1 + `steps` steps, interleaved; returns the
    median seconds of a timed step (for a compiled candidate: {"first": compile step, "step": median})
    and each candidate's losses. The run's own model, optimizer and random state are untouched."""
    from torchguide.loop import train_step

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        copies = {c: prepared(model, optimizer, c) for c in candidates}
        seconds: dict[Setting, list[float]] = {c: [] for c in candidates}
        losses: dict[Setting, list[float]] = {c: [] for c in candidates}
        for _ in range(1 + steps):
            for setting, (net, opt, scaler) in copies.items():
                started = time.perf_counter()
                step = train_step(net, batch, loss_fn, opt, scaler, setting.precision)
                losses[setting].append(float(step.loss.detach()))  # waits for the device
                seconds[setting].append(time.perf_counter() - started)
    times = {c: statistics.median(s[1:]) for c, s in seconds.items()}
    for c, s in seconds.items():
        if c.compiled:
            times[c] = {"first": s[0], "step": times[c]}
    return times, losses


def prepared(model: nn.Module, optimizer: torch.optim.Optimizer, setting: Setting
             ) -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """A copy of model and optimizer (the copy's optimizer steps the copy's weights) in a setting."""
    net, opt = copy.deepcopy((model, optimizer))
    apply(net, setting.channels_last, setting.compiled)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    return net.train(), opt, torch.amp.GradScaler(device.type, enabled=setting.precision == "fp16")


def apply(model: nn.Module, channels_last: bool, compiled: bool, dynamic: bool | None = None) -> nn.Module:
    """Put a model in a memory layout and compile it, in place (its state_dict keys do not change)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compiled:
        model.compile(dynamic=dynamic)
    return model


def loss_close(reference: list[float], other: list[float]) -> bool:
    """Whether a lower precision's losses follow fp32's: the means of the steps within LOSS_TOLERANCE."""
    ref, mean = statistics.fmean(reference), statistics.fmean(other)
    return math.isfinite(mean) and abs(mean - ref) <= LOSS_TOLERANCE * abs(ref) + 1e-4


def cache_key(kind: str, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device,
              threads: int, candidates: list[Setting]) -> str:
    """What a measurement depends on: the model's architecture, the optimizer, the input shape, the
    candidates and the machine."""
    shapes = [list(t.shape) for t in batch.inputs]
    what = (f"{kind} {type(model).__qualname__} {repr(model)} {type(optimizer).__qualname__} {shapes} "
            f"{[c.name() for c in candidates]}")
    return f"{usercache.machine_key(device, threads)} {hashlib.sha1(what.encode()).hexdigest()[:16]}"


def summary(choices: dict[str, Choice]) -> dict[str, Any]:
    """The choices as JSON (summary.json, the checkpoint)."""
    return {key: asdict(choice) for key, choice in choices.items()}


def notes(choices: dict[str, Choice], show_layout: bool) -> list[str]:
    """The run header's lines for the choices."""
    lines = [choices["precision"].note("precision")]
    if show_layout or choices["channels_last"].value:
        lines.append(choices["channels_last"].note("memory layout", "channels_last" if choices["channels_last"].value
                                                   else "contiguous"))
    lines.append(choices["compile"].note("compile", "on" if choices["compile"].value else "off"))
    return lines


def first_batch(loader: Any, device: torch.device) -> Batch:
    """The run's first training batch on the device, drawn without touching the run's random state."""
    import random

    import numpy as np

    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        indices = next(iter(loader.batch_sampler))
        batch = loader.collate_fn([loader.dataset[i] for i in indices])
    random.setstate(states[0])
    np.random.set_state(states[1])
    return batch.to(device)

