"""Figure 4, CPU precision: a training step of the image CNN, bf16 autocast + channels_last / fp32.

simple_cnn (width 32) on a batch of 64 RGB 32x32 images, SGD; the median step time of
each setting after a warm-up. Whether the CPU computes bf16 natively (AVX-512 BF16 or
AMX) decides what `train.precision: auto` picks on the CPU.

    python benchmarks/precision.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torchguide.device import cpu_has_bf16, pick_precision  # noqa: E402
from torchguide.registry import MODELS  # noqa: E402


def step_time(bf16: bool, channels_last: bool, steps: int = 6) -> float:
    torch.manual_seed(0)
    model = MODELS.build("simple_cnn", num_classes=10, in_channels=3)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure() -> dict[str, float | bool | str]:
    fp32 = step_time(False, False)
    return {"native_bf16": cpu_has_bf16(), "auto": pick_precision("auto", torch.device("cpu"))[0],
            "bf16_channels_last": fp32 / step_time(True, True), "channels_last": fp32 / step_time(False, True),
            "fp32_step_ms": fp32 * 1000}


if __name__ == "__main__":
    r = measure()
    print(f"native bf16: {r['native_bf16']}; fp32 step {r['fp32_step_ms']:.1f} ms; speed-up bf16+channels_last "
          f"x{r['bf16_channels_last']:.2f}, channels_last alone x{r['channels_last']:.2f}; auto picks {r['auto']}")
