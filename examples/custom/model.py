"""A model of your own: a small CNN that works on images of any size.

guide passes `num_classes` and, because the signature asks for it, `in_channels` (both
from the data); `width` comes from the config (`model: {name: tiny_cnn, width: 32}`).
"""

from torch import nn

from torchguide.registry import MODELS


@MODELS.register("tiny_cnn")
class TinyCNN(nn.Module):
    """Two 3x3 convolutions, global average pooling and a linear layer: one score per class."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))  # logits: cross-entropy-style losses apply softmax
