"""A loss of your own: cross entropy with label smoothing.

It is called as `loss(output, target)`. The registration says what it wants, so
validation and `guide check` can refuse a model or collate that does not fit:
`output="logits"` (raw scores, no softmax last) and `target="index"` (int64 class indices).
"""

import torch
import torch.nn.functional as F
from torch import nn

from torchguide.registry import LOSSES


@LOSSES.register("smooth_cross_entropy", output="logits", target="index")
class SmoothCrossEntropy(nn.Module):
    """Cross entropy against targets smoothed towards the uniform distribution by `smoothing`."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.smoothing)
