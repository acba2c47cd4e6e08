"""What every figure shares: the figure record, interleaved repeats, the spread, the machine's facts.

A figure is a ratio (or a time) against a baseline measured in the same run. Its two
sides are interleaved, one repeat of each in turn (A B, then B A, ...), so that a
machine getting busier or quieter touches both alike, and each repeat's ratio is taken
against its neighbour on the other side. `value` is the median of those per-repeat
ratios and `spread` is [lowest, highest] of them: the whole range over the repeats,
not a confidence interval. A figure whose spread lies on one side of its target is
resolved; one whose spread straddles the target is not, whatever its median says.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# /proc/cpuinfo flags that decide how fast torch runs on a CPU: vector width, FMA, and native low precision
SPEED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def figure(name: str, value: float | bool, target: str, met: bool, spread: Sequence[float] | None = None,
           repeats: int = 1) -> dict:
    """One row of results.json; `spread` is [low, high] of the per-repeat values (None for one repeat)."""
    return {"name": name, "value": round(value, 4) if isinstance(value, float) else value, "target": target,
            "met": bool(met), "spread": [round(float(v), 4) for v in spread] if spread is not None else None,
            "repeats": repeats}


def interleaved(sides: dict[str, Callable[[int], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call each side once per repeat, in turn, the order reversed every other repeat (A B, B A, ...).

    A side takes the repeat's index and returns what it measured (seconds, a rate). The first
    `warmup` repeats are run and dropped. Returns the kept values of each side, in repeat order.
    """
    names = list(sides)
    kept: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            value = sides[name](i)
            if i >= warmup:
                kept[name].append(value)
    return kept


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Each repeat's value over its neighbour's on the other side."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


def spread(values: Sequence[float]) -> list[float]:
    """[lowest, highest] of the per-repeat values."""
    return [min(values), max(values)]


def summarise(values: Sequence[float]) -> tuple[float, list[float], int]:
    """(median, spread, repeats) of per-repeat values: what `figure` takes after its name."""
    return statistics.median(values), spread(values), len(values)


def cpu_facts() -> tuple[str, list[str]]:
    """The CPU's model name and which of SPEED_FLAGS /proc/cpuinfo reports (none where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    return fields.get("model name", platform.machine()), [f for f in SPEED_FLAGS if f in flags]


def native_bf16(flags: Sequence[str]) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX), which decides the precision targets."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine() -> dict:
    """What results.json records about where it was measured."""
    model, flags = cpu_facts()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "flags": flags, "native_bf16": native_bf16(flags), "cores": cores,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def train(args: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[Path, float]:
    """One `guide` training job in a fresh process, writing under `out`; returns (its run directory, wall seconds)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli.main", *args, f"output.dir={out}", "--quiet"], cwd=ROOT, check=True,
                   env={**os.environ, "NO_COLOR": "1", **(env or {})}, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    (run_dir,) = list(out.iterdir())
    return run_dir, seconds


def epoch_rows(run_dir: Path) -> list[dict]:
    """The epoch rows of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "epoch"]
