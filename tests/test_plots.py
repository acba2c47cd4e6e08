"""curves.png (whole epochs, a learning-rate panel) and `guide eval --plot` (the confusion matrix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.test_train import digits_config, new_run_dir, train
from torchguide.report import curves_figure, plot_confusion, plot_curves, pyplot

PNG = b"\x89PNG\r\n\x1a\n"


def history(epochs: int = 3, steps_per_epoch: int = 10, log_every: int = 2) -> list[dict]:
    rows, step = [], 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            if step % log_every == 0:
                rows.append({"kind": "step", "epoch": epoch, "step": step, "train_loss": 1 / step,
                             "lr": 0.1 / step ** 2})
        rows.append({"kind": "epoch", "epoch": epoch, "step": step, "train_loss": 1 / epoch, "train_acc": 0.5,
                     "valid_loss": 1 / epoch, "valid_acc": 0.6, "ema_valid_loss": 0.9 / epoch, "ema_valid_acc": 0.7,
                     "lr": 0.1 / step ** 2})
    return rows


def test_curves_have_whole_epoch_ticks_an_ema_line_and_a_learning_rate_panel(tmp_path: Path) -> None:
    fig = curves_figure(history(), "run")
    try:
        loss, acc, lr = fig.axes[:3]
        for ax in (loss, acc, lr):
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert [line.get_label() for line in loss.get_lines()] == ["train", "valid", "valid (EMA)"]
        assert lr.get_ylabel() == "learning rate" and lr.get_yscale() == "log"  # 0.1/2² .. 0.1/30²: decades
        steps = lr.get_lines()[0]
        assert list(steps.get_xdata())[:2] == [pytest.approx(0.2), pytest.approx(0.4)]  # steps 2, 4 of 10
        assert list(steps.get_ydata())[:2] == [0.025, 0.00625]
    finally:
        pyplot().close(fig)
    assert plot_curves(history(), tmp_path / "curves.png").read_bytes().startswith(PNG)
    assert plot_curves([], tmp_path / "none.png") is None


@pytest.mark.parametrize("n", [3, 70])  # 70: no labels, no counts, still a plot
def test_confusion_plot(tmp_path: Path, n: int) -> None:
    matrix = [[5 if i == j else (1 if j == (i + 1) % n else 0) for j in range(n)] for i in range(n)]
    result = {"classes": [f"class {i}" for i in range(n)], "confusion": matrix}
    path = plot_confusion(result, tmp_path / "plots" / "cm.png", "a title")  # the folder is made
    assert path.read_bytes().startswith(PNG)


def test_eval_plot(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.max_steps=2", "data.loader.batch_size=256")
    run_dir = new_run_dir(cfg)
    train(cfg, run_dir)
    plot = tmp_path / "cm.png"
    args = ["eval", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--split", "valid", "--plot", str(plot)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plot"] == str(plot) and plot.read_bytes().startswith(PNG)
    plot.unlink()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"confusion matrix drawn to {plot}" in result.output and plot.is_file()
