"""The lr-find suggestion: the steepest fall of a smoothed loss curve, on synthetic curves."""

from __future__ import annotations

import math

import pytest

from torchguide.lr_find import steepest

EXPONENTS = [-6 + i / 10 for i in range(61)]  # log10 lr from -6 to 0, evenly spaced
LRS = [10**e for e in EXPONENTS]
STEEPEST = EXPONENTS.index(-3.0)  # index 30: lr 1e-3


def curve(x: float) -> float:
    """Falls like 2 - tanh(2 (x + 3)), fastest at log10 lr = -3, to a minimum at -1; then it blows up."""
    if x <= -1:
        return 2 - math.tanh(2 * (x + 3))
    return 2 - math.tanh(4) + 5 * (x + 1) ** 2


def test_the_suggestion_is_where_the_loss_falls_fastest() -> None:
    smoothed = [curve(x) for x in EXPONENTS]
    assert steepest(LRS, smoothed) == LRS[STEEPEST]
    assert LRS[STEEPEST] == pytest.approx(1e-3)


def test_a_fall_after_the_minimum_does_not_count() -> None:
    smoothed = [curve(x) for x in EXPONENTS]
    lowest = min(smoothed)
    smoothed[56] = lowest + 0.1  # a fall steeper than any before, on the way up: the loss is blowing up there
    assert smoothed.index(lowest) == 50
    assert steepest(LRS, smoothed) == LRS[STEEPEST]


@pytest.mark.parametrize("smoothed", [
    [1.0 + i / 100 for i in range(61)],  # rises from the start
    [1.0] * 61,  # flat
    [1.0 - i * 1e-6 for i in range(61)],  # falls, but by far less than 1% of the loss
], ids=["rising", "flat", "negligible fall"])
def test_a_curve_that_never_falls_has_no_suggestion(smoothed: list[float]) -> None:
    assert steepest(LRS, smoothed) is None


def test_nan_and_inf_points_are_ignored() -> None:
    smoothed = [curve(x) for x in EXPONENTS]
    smoothed[0] = math.nan  # taken as the lowest point, it would leave no way down at all
    smoothed[20] = math.nan
    smoothed[-1] = math.inf  # the exploded last step
    assert steepest(LRS, smoothed) == LRS[STEEPEST]


def test_too_few_finite_points_have_no_suggestion() -> None:
    assert steepest(LRS[:4], [math.nan, 3.0, 2.0, math.inf]) is None


def test_no_finite_point_has_no_suggestion() -> None:
    assert steepest([1e-7], [math.nan]) is None
