"""Collate functions: turn a list of (input, label) samples into one `Batch`.

Registered entries are factories: guide calls them with what only the run knows (how
the loss wants its targets, the number of classes, the padding index) and gets the
`collate_fn` for the DataLoader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from torchguide.registry import COLLATES


class Batch(NamedTuple):
    """A batch: `model(*inputs)` gives the output, `loss(output, target)` the loss.

    `labels` are the class indices (for metrics, whatever the target encoding), and
    `lengths` the true sequence lengths for text (None for images).
    """

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(tuple(move(t) for t in self.inputs), move(self.target), move(self.labels),
                     None if self.lengths is None else move(self.lengths))


def encode_targets(labels: torch.Tensor, target: str, num_classes: int) -> torch.Tensor:
    """Class indices in the form the loss wants (see `torchguide.losses`)."""
    if target == "index":
        return labels
    if target == "onehot":
        return F.one_hot(labels, num_classes).float()
    if target == "binary":
        return labels.float().unsqueeze(1)
    if target == "binary_signed":
        return labels.float().mul(2).sub(1).unsqueeze(1)
    raise ValueError(f"unknown target encoding {target!r}")


@COLLATES.register("default", task="image")
def default(target: str = "index", num_classes: int = 2) -> Callable[[list[Any]], Batch]:
    """Stack same-shaped inputs (images) and encode the labels for the loss."""

    def collate(samples: list[tuple[torch.Tensor, int]]) -> Batch:
        inputs = torch.stack([x for x, _ in samples])
        labels = torch.tensor([y for _, y in samples], dtype=torch.long)
        return Batch((inputs,), encode_targets(labels, target, num_classes), labels)

    return collate


@COLLATES.register("pad_to_longest", aliases=["collate_text"], task="text")
def pad_to_longest(target: str = "index", num_classes: int = 2, pad_index: int = 0,
                   max_len: int | None = None) -> Callable[[list[Any]], Batch]:
    """The guide's `collate_text`: pad each batch to its longest sequence, return lengths too.

    Inputs are `(tokens, lengths)`: tokens (N, T) int64 padded with `pad_index`, lengths
    (N,) int64. Sequences longer than `max_len` are truncated.
    """

    def collate(samples: list[tuple[torch.Tensor, int]]) -> Batch:
        seqs = [x[:max_len] if max_len else x for x, _ in samples]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        tokens = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_index)
        labels = torch.tensor([y for _, y in samples], dtype=torch.long)
        return Batch((tokens, lengths), encode_targets(labels, target, num_classes), labels, lengths)

    return collate


@COLLATES.register("pad_to_length", task="text")
def pad_to_length(length: int, target: str = "index", num_classes: int = 2, pad_index: int = 0,
                  max_len: int | None = None) -> Callable[[list[Any]], Batch]:
    """Pad (or truncate) every sequence to the same `length`, whatever the batch holds."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")

    def collate(samples: list[tuple[torch.Tensor, int]]) -> Batch:
        tokens = torch.full((len(samples), length), pad_index, dtype=torch.long)
        lengths = torch.empty(len(samples), dtype=torch.long)
        for row, (x, _) in enumerate(samples):
            n = min(len(x), length)
            tokens[row, :n] = x[:n]
            lengths[row] = n
        labels = torch.tensor([y for _, y in samples], dtype=torch.long)
        return Batch((tokens, lengths), encode_targets(labels, target, num_classes), labels, lengths)

    return collate
