"""Device and precision choice, threads and seeds.

`pick_device` and `pick_precision` are the only places that decide where and how a
run computes, and each returns the reason for its choice so the CLI can say it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from torchguide.errors import ConfigError

PIN_ENV = "GUIDE_DEVICE"  # what `auto` means on this machine, e.g. cpu (the test suite pins itself so)


def pick_device(requested: str = "auto") -> tuple[torch.device, str]:
    """The device for `train.device`: auto picks cuda, then mps, then cpu; returns (device, why).

    With GUIDE_DEVICE set (cpu, cuda, cuda:N or mps), `auto` means that device instead.
    """
    pinned = os.environ.get(PIN_ENV, "auto").strip() or "auto"
    if requested == "auto" and pinned != "auto":
        if pinned.partition(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"{PIN_ENV}={pinned}: choose cpu, cuda, cuda:N or mps", f"unset {PIN_ENV}")
        device, _ = pick_device(pinned)
        return device, f"auto: {PIN_ENV}={pinned}"
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"auto: CUDA GPU {torch.cuda.get_device_name(0)}"
        if torch.backends.mps.is_available():
            return torch.device("mps"), "auto: Apple GPU (MPS)"
        return torch.device("cpu"), f"auto: no GPU found, using the CPU ({available_cores()} cores)"
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


def gpus_for(requested: str) -> int:
    """How many CUDA GPUs a run with `train.device: requested` would use processes on (0: not CUDA)."""
    if requested == "auto":
        pinned = os.environ.get(PIN_ENV, "auto").strip() or "auto"
        if pinned != "auto" and not pinned.startswith("cuda"):
            return 0
    elif not requested.startswith("cuda"):
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_has_bf16(device: torch.device) -> bool:
    """True when this GPU computes bf16 natively (compute capability 8.0 and up).

    Older GPUs emulate bf16 through fp32, slower than fp16 with loss scaling; the
    question goes to the run's own GPU, not to the current one.
    """
    with torch.cuda.device(device.index if device.index is not None else torch.cuda.current_device()):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype of running sums kept on a device: float64, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


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
    if requested == "bf16" and device.type == "cuda" and not gpu_has_bf16(device):
        raise ConfigError("train.precision: this GPU has no native bf16 (it would be emulated, slowly)",
                          "use fp16 or fp32")
    if requested != "auto":
        return requested, "as configured"
    if device.type == "cuda":
        if gpu_has_bf16(device):
            return "bf16", "auto: bf16 autocast (the GPU computes bf16 natively)"
        return "fp16", "auto: fp16 autocast with loss scaling (no bf16 on this GPU)"
    if device.type == "cpu" and not cpu_has_bf16():
        return "fp32", "auto: fp32 (this CPU has no native bf16, no AVX-512 BF16 or AMX: bf16 would be emulated)"
    if device.type == "cpu":
        return "fp32", "auto: fp32 by rule (a measured run times bf16 against it)"
    return "fp32", f"auto: fp32 on {device.type.upper()}"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


class AutocastForward(torch.nn.Module):
    """Runs the wrapped module's forward under autocast with a fixed dtype, in whichever thread calls it.

    Autocast's dtype is per thread: DataParallel's replica threads re-enter autocast
    without a dtype and would compute in fp16 on a bf16 run. Wrapped inside
    DataParallel, every replica carries the run's dtype with it.
    """

    def __init__(self, module: torch.nn.Module, device_type: str, precision: str) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.precision = precision

    def forward(self, *args: object, **kwargs: object) -> object:
        with autocast(torch.device(self.device_type), self.precision):
            return self.module(*args, **kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DataParallel / DistributedDataParallel / AutocastForward wrappers."""
    while isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel | AutocastForward):
        model = model.module
    return model


def prepare_device(device: torch.device, task: str, deterministic: bool) -> list[str]:
    """Set the process-wide compute policy for a run on `device`; returns notes that state it.

    CUDA: make `device` the current GPU (so kernels, allocations and the matmul peak land
    on it), TF32 for fp32 matmuls and convolutions (10 mantissa bits, as PyTorch's
    "high" matmul precision), cuDNN autotuning for fixed-shape image batches. With
    `deterministic`, torch's deterministic algorithms, cuBLAS's fixed workspace and no
    autotuning, so a run repeats bit for bit on the same machine.
    """
    # warn_only: an op with no deterministic kernel (e.g. adaptive pooling's backward on CUDA) warns, not fails
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    notes = []
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts, before any matmul
        notes.append("deterministic: deterministic algorithms (an op without one warns), cuDNN autotuning off")
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = task == "image" and not deterministic  # text batches vary in length
        torch.backends.cudnn.deterministic = deterministic
        notes.append("fp32 matmuls and convolutions use TF32 on the GPU"
                     + ("; cuDNN autotuning on (fixed image shapes)" if torch.backends.cudnn.benchmark else ""))
    return notes


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (Linux), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(requested: int | str, workers: int, local_world_size: int = 1) -> int:
    """Intra-op threads so that compute threads plus loader workers do not oversubscribe the cores."""
    if requested != "auto":
        threads = int(requested)
    else:
        threads = max(1, available_cores() // local_world_size - workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
REUSED_BLOCK = 32 << 20  # glibc's largest mmap threshold on 64-bit


def reuse_freed_memory() -> bool:
    """Have glibc's malloc serve blocks of up to 32 MiB from its heap, and keep up to 64 MiB free there.

    A training step allocates and frees the same large buffers (activations, gradients) every
    step. glibc maps blocks over its mmap threshold (128 KiB, raised only after such a block is
    freed, which a run may or may not do before training) fresh from the OS and unmaps them when
    freed: a CPU step then costs a thousand page faults and their system time. Fixed thresholds
    make every run reuse its memory. Returns False where malloc is not glibc's (nothing changes).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not Linux, or a C library without mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, REUSED_BLOCK)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * REUSED_BLOCK))


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
