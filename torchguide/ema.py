"""An exponential moving average (EMA) of a model's weights, as timm's ModelEmaV3 keeps it.

After every optimizer step each floating-point parameter and buffer of the average moves
a little towards the model's: `ema += (1 - decay) * (model - ema)`; integer buffers
(BatchNorm's batch count) are copied. The average often scores better than the weights
it follows, late in a run and with noisy steps. It lives on the model's device, in eval
mode, outside autograd; under DDP every rank keeps its own copy of the same average.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from torchguide.config.schema import Ema, Train

WARMUP_POWER = 2 / 3  # timm's choice for runs of a few thousand steps


class ModelEma:
    """The EMA of `model`'s parameters and buffers; `update(model, step)` after optimizer step `step` (1-based)."""

    def __init__(self, model: nn.Module, config: Ema) -> None:
        self.decay, self.warmup = config.decay, config.warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay of the update after step `step`: the first update copies the weights; with warm-up
        the decay then grows as 1 - step ** (-2/3) until it reaches `decay`."""
        if step <= 1:
            return 0.0
        return min(self.decay, 1 - step ** -WARMUP_POWER) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model` (the unwrapped model being trained)."""
        averaged, current = [], []
        pairs = [*zip(self.module.parameters(), model.parameters(), strict=True),
                 *zip(self.module.buffers(), model.buffers(), strict=True)]
        for mine, theirs in pairs:
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, 1 - self.decay_at(step))

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


def ema_note(train: Train, batches: int) -> str:
    """What the run's header says about its EMA (`train.ema`, `batches` an epoch): how long it averages
    over, and a hint when that is most of the run, so the average would still lean on the first weights."""
    ema, steps = train.ema, max(math.ceil(batches / train.accumulate), 1)
    span = 1 / (1 - ema.decay)  # the average's time constant, in steps
    note = f"ema: decay {ema.decay:g}, an average over about {span:,.0f} steps ({span / steps:.1f} epochs)"
    if ema.warmup:
        return note + " after a warm-up"
    if span * 2 > steps * train.epochs:
        note += (f"; the first weights weigh on it for most of this {train.epochs}-epoch run: set "
                 "train.ema.warmup=true or a lower decay")
    return note


def better_weights(row: dict[str, Any], key: str, value: float | None, larger: bool) -> tuple[float | None, str]:
    """An epoch's monitored `value` (of metric `key`) and whose weights scored it: "raw", or "ema" when the
    EMA was scored on the same data (`ema_` + key) and did strictly better."""
    ema = row.get(f"ema_{key}")
    if ema is None or value is None or not (ema > value if larger else ema < value):
        return value, "raw"
    return ema, "ema"


def best_as_ema(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload whose `model` is its EMA weights, for best.pt when the EMA scored best: eval, predict and
    export read `model`; the trained weights stay as `raw_model`, so a run still resumes from it."""
    return {**payload, "model": payload["ema"], "raw_model": payload["model"], "weights": "ema"}
