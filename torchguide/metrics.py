"""Classification metrics from a confusion matrix, and model outputs as probabilities."""

from __future__ import annotations

from typing import Any

import torch


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
