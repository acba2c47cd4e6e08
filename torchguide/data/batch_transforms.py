"""Batch transforms: MixUp and CutMix on whole training batches, with soft targets.

`data.batch_transforms` lists them, each `{name: ..., p: ..., **kwargs}`::

    batch_transforms:
      - {name: mix_up, alpha: 0.2, p: 0.5}
      - {name: cut_mix, alpha: 1.0, p: 0.5}

Each training batch is mixed by at most one of them: by entry i with probability p_i
(the p's add up to at most 1; otherwise the batch stays as it is), the way torchvision's
classification recipe picks between MixUp and CutMix. The number of classes comes from
the data. A mixed batch keeps its class indices in `labels` (accuracy is counted on
them) and carries class probabilities in `target` (for the loss), so only a loss
registered with `soft_targets` (cross_entropy) can train on it. Validation, evaluation
and prediction batches are never mixed; text batches cannot be.

The choice and the mixing draw from torch's random stream where the batch is collated:
in a loader worker that stream is seeded per batch (see `SeededBatch`), in the main
process it is the one checkpoints save, so a resumed run mixes exactly as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from torchguide.data.collate import Batch
from torchguide.registry import BATCH_TRANSFORMS


@BATCH_TRANSFORMS.register("mix_up", aliases=["MixUp"])
def mix_up(num_classes: int, alpha: float = 1.0) -> v2.MixUp:
    """MixUp: each image blended with another of the batch by a Beta(alpha, alpha) weight, its label alike."""
    return v2.MixUp(alpha=alpha, num_classes=num_classes)


@BATCH_TRANSFORMS.register("cut_mix", aliases=["CutMix"])
def cut_mix(num_classes: int, alpha: float = 1.0) -> v2.CutMix:
    """CutMix: a box of each image replaced by the same box of another, labels weighted by its area."""
    return v2.CutMix(alpha=alpha, num_classes=num_classes)


class MixBatches:
    """Mix a collated image Batch with at most one of `choices`, (transform, probability) pairs."""

    def __init__(self, choices: list[tuple[Any, float]]) -> None:
        self.choices = choices

    def __call__(self, batch: Batch) -> Batch:
        draw = float(torch.rand(()))  # one draw per batch, whatever the outcome, so the stream stays aligned
        for transform, p in self.choices:
            if draw < p:
                images, target = transform(batch.inputs[0], batch.labels)
                return batch._replace(inputs=(images, *batch.inputs[1:]), target=target)
            draw -= p
        return batch


def build_batch_mixer(items: list[Any], num_classes: int) -> MixBatches | None:
    """The configured batch transforms (`data.batch_transforms` entries) as one mixer; None when there are none."""
    if not items:
        return None
    return MixBatches([(BATCH_TRANSFORMS.build(it.name, num_classes=num_classes, **it.kwargs), it.p)
                       for it in items])
