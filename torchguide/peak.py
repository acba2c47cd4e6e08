"""The machine's matmul peak and a run's utilisation against it.

The peak is the best matmul rate this machine reaches at a precision and thread count:
measured once over a few shapes, then kept in the user's cache (`usercache`), so runs
and later processes reuse it without measuring. A run faster than the peak raises it:
utilisation is never above 100%.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from torchguide import usercache
from torchguide.device import AUTOCAST_DTYPES

CACHE_KIND = "matmul_peak"
REPEATS = 3  # timed calls per shape; the fastest counts
BUDGET_S = 1.0  # a shape whose next call would end past this is not timed again
# (batch..., m, k, n): square matmuls of three sizes, a linear layer over a batch of
# tokens, attention scores per head; on a GPU the same, larger
CPU_SHAPES = ((256, 256, 256), (512, 512, 512), (16, 256, 64, 256), (2048, 256, 1024), (1024, 1024, 1024))
GPU_SHAPES = ((2048, 2048, 2048), (4096, 4096, 4096), (64, 1024, 128, 1024), (16384, 1024, 4096),
              (8192, 8192, 8192))


def peak_key(device: torch.device, precision: str, threads: int) -> str:
    """The cache key of a peak: what a matmul rate depends on (device, its name, threads, torch) and the precision."""
    return f"{usercache.machine_key(device, threads)}; {precision}"


def matmul_peak(device: torch.device, precision: str = "fp32") -> tuple[float, str]:
    """One device's matmul peak in FLOP/s at `precision` and torch's current thread count, and where
    it came from: "cached" (kept by an earlier measurement or run) or "measured" (now, then kept).

    `device` is the run's own device (cuda:1, cpu, ...), measured where the run computes.
    0.0 when nothing could be measured (no shape fitted in the GPU's free memory).
    """
    key = peak_key(device, precision, torch.get_num_threads())
    cached = usercache.lookup(CACHE_KIND, key)
    if isinstance(cached, float | int) and cached > 0:  # anything else: a corrupt entry, measured over
        return float(cached), "cached"
    peak = measure_peak(device, AUTOCAST_DTYPES.get(precision, torch.float32))
    if peak:
        usercache.store(CACHE_KIND, key, peak)
    return peak, "measured"


def measure_peak(device: torch.device, dtype: torch.dtype) -> float:
    """The best FLOP/s of a few matmul shapes on `device`, each timed up to REPEATS times within BUDGET_S."""
    started, best = time.perf_counter(), 0.0
    for shape in GPU_SHAPES if device.type == "cuda" else CPU_SHAPES:
        *batch, m, k, n = shape
        flops = 2 * math.prod(shape)
        try:
            a = torch.randn(*batch, m, k, device=device, dtype=dtype)
            b = torch.randn(*batch, k, n, device=device, dtype=dtype)
        except torch.OutOfMemoryError:  # the run's model and optimizer still hold the GPU's memory
            continue
        for _ in range(REPEATS):
            if best and time.perf_counter() - started + flops / best > BUDGET_S:
                break
            best = max(best, flops / time_matmul(a, b))
    return best


def time_matmul(a: torch.Tensor, b: torch.Tensor) -> float:
    """Seconds one `a @ b` takes, the device synchronised before and after."""
    synchronize(a.device)
    started = time.perf_counter()
    a @ b
    synchronize(a.device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def utilisation(rate: float, flops_per_unit: float, peak_per_device: float, world_size: int
                ) -> tuple[float, float, float | None]:
    """(FLOP/s, peak FLOP/s, utilisation) of a job: `rate` is the job's global samples (or tokens) per
    second, so its FLOP/s are set against the peak of all `world_size` devices together.

    A job faster than the peak is the new peak (utilisation 1.0); with no peak (0.0), no utilisation.
    """
    flops = rate * flops_per_unit
    if not peak_per_device:
        return flops, 0.0, None
    peak = max(peak_per_device * world_size, flops)
    return flops, peak, flops / peak


def run_utilisation(rate: float, flops_per_unit: float, device: torch.device, precision: str,
                    world_size: int) -> dict[str, Any]:
    """summary.json's speed fields of a job on devices like `device`: its FLOP/s, the peak, the
    utilisation, where the peak came from (`peak_source`: measured, cached or raised) and, when this
    job raised it, the peak before (`peak_raised_from_flops_per_s`). A raised peak is kept per device.
    """
    per_device, source = matmul_peak(device, precision)
    flops, peak, used = utilisation(rate, flops_per_unit, per_device, world_size)
    raised_from = None
    if per_device and peak > per_device * world_size:
        usercache.store(CACHE_KIND, peak_key(device, precision, torch.get_num_threads()), peak / world_size)
        source, raised_from = "raised", per_device * world_size
    return {"flops_per_s": flops, "peak_flops_per_s": peak, "utilisation": used,
            "peak_source": source, "peak_raised_from_flops_per_s": raised_from}
