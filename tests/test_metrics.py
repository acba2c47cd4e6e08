"""Scores from a confusion matrix, against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from torchguide.metrics import scores

# rows: true class, columns: predicted class. c is never predicted; d has no samples
# (one b is predicted as d).
MATRIX = torch.tensor([[3, 1, 0, 0],
                       [1, 2, 0, 1],
                       [0, 2, 0, 0],
                       [0, 0, 0, 0]])
CLASSES = ["a", "b", "c", "d"]


def test_per_class_precision_recall_f1_and_support() -> None:
    result = scores(MATRIX, CLASSES)
    # a: 3 right of 4 predicted, 3 of 4 true. b: 2 of 5 predicted, 2 of 4 true, F1 2*.4*.5/.9 = 4/9.
    # c: never predicted, none of its 2 found. d: predicted once (wrongly), no samples.
    want = {"a": (0.75, 0.75, 0.75, 4), "b": (0.4, 0.5, 4 / 9, 4), "c": (0.0, 0.0, 0.0, 2), "d": (0.0, 0.0, 0.0, 0)}
    got = {row["class"]: (row["precision"], row["recall"], row["f1"], row["support"]) for row in result["per_class"]}
    assert list(got) == CLASSES
    for name, (precision, recall, f1, support) in want.items():
        assert got[name] == (pytest.approx(precision), pytest.approx(recall), pytest.approx(f1), support), name


def test_accuracy_and_macro_averages_leave_out_a_class_with_no_samples() -> None:
    result = scores(MATRIX, CLASSES)
    assert result["samples"] == 10
    assert result["accuracy"] == pytest.approx(5 / 10)
    # averaged over a, b and c; d, with no samples, has no recall to speak of and counts in none
    assert result["macro_precision"] == pytest.approx((0.75 + 0.4 + 0.0) / 3)
    assert result["macro_recall"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert result["macro_f1"] == pytest.approx((0.75 + 4 / 9 + 0.0) / 3)
    assert result["classes"] == CLASSES and result["confusion"] == MATRIX.tolist()


def test_an_empty_matrix_scores_zero_not_nan() -> None:
    result = scores(torch.zeros(2, 2, dtype=torch.long), ["x", "y"])
    assert result["samples"] == 0
    values = [result[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")]
    values += [row[k] for row in result["per_class"] for k in ("precision", "recall", "f1")]
    assert values == [0.0] * len(values)  # NaN would compare unequal


def test_a_perfect_classifier_scores_one() -> None:
    result = scores(torch.diag(torch.tensor([5, 2, 7])), ["x", "y", "z"])
    assert result["accuracy"] == 1.0 and result["macro_f1"] == pytest.approx(1.0)
    assert [row["support"] for row in result["per_class"]] == [5, 2, 7]
