"""`guide lr-find`: the learning-rate range test.

A fresh copy of the config's model trains for up to `steps` batches while the learning
rate grows exponentially from `start_lr` to `end_lr` (each of `optimizer.groups` at its
configured multiple of `optimizer.lr`); the test stops early once the
smoothed loss explodes. The suggestion is the learning rate where the smoothed loss
falls fastest (the steepest descent against log lr).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from torchguide.build import build_run
from torchguide.config import Config
from torchguide.device import unwrap
from torchguide.errors import GuideError
from torchguide.loop import train_step
from torchguide.optim import make_optimizer

SMOOTHING = 0.9  # exponential moving average of the loss


def lr_find(config: Config, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
            diverge: float = 4.0) -> dict[str, Any]:
    if not 0 < start_lr < end_lr:
        raise GuideError(f"--start-lr {start_lr:g} and --end-lr {end_lr:g}: need 0 < start < end")
    if steps < 10:
        raise GuideError(f"--steps {steps}: the test needs at least 10 steps")
    run = build_run(config)
    model = run.model
    optimizer = make_optimizer(unwrap(model), config.optimizer)  # fresh: its groups' lrs untouched by a scheduler
    base = optimizer.defaults["lr"] or 1.0
    scales = [group["lr"] / base for group in optimizer.param_groups]  # each group keeps its ratio to optimizer.lr
    gamma = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    average, best, exploded = 0.0, math.inf, False
    model.train()
    epoch = 0
    while len(lrs) < steps and not exploded:
        run.train_loader.batch_sampler.set_epoch(epoch)
        for batch in run.train_loader:
            lr = start_lr * gamma ** len(lrs)
            for group, scale in zip(optimizer.param_groups, scales, strict=True):
                group["lr"] = lr * scale
            step = train_step(model, batch.to(run.device), run.loss_fn, optimizer, run.scaler, run.precision)
            value = float(step.loss.detach())
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smooth = average / (1 - SMOOTHING ** (len(lrs) + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(value) or (len(lrs) > 10 and smooth > diverge * best):
                exploded = True
                break
            if len(lrs) >= steps:
                break
        epoch += 1
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "suggested": steepest(lrs, smoothed),
            "exploded": exploded, "steps": len(lrs), "start_lr": start_lr, "end_lr": end_lr}


def steepest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest per unit of log lr, before its minimum; None if it
    never falls."""
    finite = [(lr, s) for lr, s in zip(lrs, smoothed, strict=True) if math.isfinite(s)]
    if not finite:  # the very first loss was NaN/inf
        return None
    skip = max(1, len(finite) // 10)  # the first points carry the smoothing's start-up
    lowest = min(range(len(finite)), key=lambda i: finite[i][1])
    points = finite[skip:lowest + 1]  # only the way down: past the minimum the loss is blowing up
    if len(points) < 3:
        return None
    logs = torch.tensor([math.log(lr) for lr, _ in points], dtype=torch.float64)
    values = torch.tensor([s for _, s in points], dtype=torch.float64)
    slopes = torch.gradient(values, spacing=(logs,))[0]
    index = int(torch.argmin(slopes))
    drop = values[: index + 1].max() - values[index]
    if slopes[index] >= 0 or drop < 0.01 * abs(float(values[0])):
        return None
    return float(points[index][0])


def plot_lr_find(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["losses"], color="#cccccc", linewidth=1, label="loss")
    ax.plot(result["lrs"], result["smoothed"], color="#4c72b0", label="smoothed loss")
    if result["suggested"]:
        ax.axvline(result["suggested"], color="#c44e52", linestyle="--",
                   label=f"suggested lr {result['suggested']:.2e}")
    finite = [s for s in result["smoothed"] if math.isfinite(s)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * finite[0]) * 1.1)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
