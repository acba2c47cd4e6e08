"""Device and precision choice, threads and seeds.

`pick_device` and `pick_precision` are the only places that decide where and how a
run computes, and each returns the reason for its choice so the CLI can say it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from collections.abc import Iterator

import numpy as np
import torch

from torchguide.errors import ConfigError


def pick_device(requested: str = "auto") -> tuple[torch.device, str]:
    """The device for `train.device`: auto picks cuda, then mps, then cpu; returns (device, why)."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"auto: CUDA GPU {torch.cuda.get_device_name(0)}"
        if torch.backends.mps.is_available():
            return torch.device("mps"), "auto: Apple GPU (MPS)"
        return torch.device("cpu"), f"auto: no GPU found, using the CPU ({os.cpu_count()} cores)"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {requested} asked for, but no CUDA GPU is visible",
                              "use train.device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {requested} does not exist; "
                              f"{torch.cuda.device_count()} GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps asked for, but MPS is not available", "use train.device=auto")
    return device, f"{requested} as configured"


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The compute precision for `train.precision`; returns (fp32|bf16|fp16, why)."""
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA GPU, this run is on {device.type}",
                          "use bf16 or fp32")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU has no bf16", "use fp16 or fp32")
    if requested != "auto":
        return requested, "as configured"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: bf16 autocast (the GPU supports it)"
        return "fp16", "auto: fp16 autocast with loss scaling (no bf16 on this GPU)"
    return "fp32", "auto: fp32 on CPU (set train.precision=bf16 to try autocast)"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(requested: int | str, workers: int, local_world_size: int = 1) -> int:
    """Intra-op threads so that compute threads plus loader workers do not oversubscribe the cores."""
    if requested != "auto":
        threads = int(requested)
    else:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
        threads = max(1, cores // local_world_size - workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and inference mode, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


@functools.cache
def matmul_peak(device_type: str, precision: str = "fp32") -> float:
    """This machine's measured matmul FLOP/s (the best of a few square matmuls), the practical ceiling."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    n = 4096 if device_type == "cuda" else 1024
    a = torch.randn(n, n, device=device_type, dtype=dtype)
    best = 0.0
    for _ in range(4):
        if device_type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ a
        if device_type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best
