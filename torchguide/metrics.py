"""Classification metrics: running sums of an epoch, scores from a confusion matrix, outputs as probabilities."""

from __future__ import annotations

from typing import Any

import torch

from torchguide import distributed
from torchguide.data.collate import Batch
from torchguide.device import accumulator_dtype


def to_probs(output: torch.Tensor, output_kind: str | None) -> torch.Tensor:
    """(N, C) class probabilities from a model output of the kind the loss expects.

    A single column (one logit or probability for a binary loss) becomes two columns.
    """
    output = output.float()
    if output.shape[1] == 1:
        p1 = output if output_kind == "probs" else torch.sigmoid(output)
        return torch.cat([1 - p1, p1], dim=1)
    if output_kind == "log_probs":
        return output.exp()
    if output_kind == "probs":
        return output
    return output.softmax(dim=1)


def predicted(output: torch.Tensor, output_kind: str | None) -> torch.Tensor:
    """Predicted class indices; a single output column is a binary logit (or probability)."""
    if output.shape[1] == 1:
        return (output.squeeze(1) > (0.5 if output_kind == "probs" else 0.0)).long()
    return output.argmax(dim=1)


def confusion(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows true class, columns predicted class."""
    flat = labels * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(matrix: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and their macro averages."""
    m = matrix.double()
    tp = m.diag()
    support = m.sum(1)
    precision = tp / m.sum(0).clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = support > 0
    total = int(m.sum())
    return {
        "samples": total,
        "accuracy": float(tp.sum() / max(total, 1)),
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": [{"class": c, "precision": float(precision[i]), "recall": float(recall[i]),
                       "f1": float(f1[i]), "support": int(support[i])} for i, c in enumerate(classes)],
        "classes": classes,
        "confusion": matrix.tolist(),
    }


class Meter:
    """Running loss / accuracy sums of an epoch, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.dtype = accumulator_dtype(device)
        self.loss = torch.tensor(state.get("loss", 0.0), dtype=self.dtype, device=device)
        self.correct = torch.tensor(state.get("correct", 0), dtype=torch.long, device=device)
        self.count = state.get("count", 0)
        self.tokens = state.get("tokens", 0)
        self.padded = state.get("padded", 0)

    def add(self, loss: torch.Tensor, output: torch.Tensor, batch: Batch, output_kind: str | None,
            lengths: torch.Tensor | None) -> None:
        n = batch.labels.shape[0]
        self.loss += loss.detach().to(self.dtype) * n
        self.correct += (predicted(output.detach(), output_kind) == batch.labels).sum()
        self.count += n
        if lengths is not None:  # lengths live on the CPU: no sync
            self.tokens += int(lengths.sum())
            self.padded += int(lengths.max()) * n

    def values(self) -> dict[str, float]:
        return self.summarize(float(self.loss), float(self.correct), self.count, self.tokens, self.padded)

    def reduced(self) -> dict[str, float]:
        """values() over every rank's samples (a collective under DDP)."""
        if not distributed.active():
            return self.values()
        totals = torch.tensor([float(self.loss), float(self.correct), self.count, self.tokens, self.padded],
                              dtype=self.dtype, device=self.loss.device)
        return self.summarize(*distributed.all_sum(totals).tolist())

    @staticmethod
    def summarize(loss: float, correct: float, count: float, tokens: float, padded: float) -> dict[str, float]:
        count = max(count, 1)
        return {"loss": loss / count, "acc": correct / count, "padding": 1 - tokens / padded if padded else None}

    def state(self) -> dict[str, Any]:
        return {"loss": float(self.loss), "correct": int(self.correct), "count": self.count,
                "tokens": self.tokens, "padded": self.padded}

