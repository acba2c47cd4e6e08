"""Live progress: the bars a terminal shows while a run trains."""

from __future__ import annotations

import io

from rich.console import Console

from torchguide.report import TrainProgress

ROW = {"epoch": 1, "train_loss": 0.25, "train_acc": 0.9, "valid_loss": None, "valid_acc": None, "lr": 0.1,
       "time_s": 1.0}


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)


def test_the_batch_bar_ends_at_the_epochs_last_batch_before_its_row() -> None:
    console = terminal()
    with TrainProgress(console, epochs=1) as progress:
        progress.start_epoch(0, 161)
        progress.update(146, {"loss": 0.5, "acc": 0.8})  # the last redraw, some batches before the end
        progress.reached(161)
        before = len(console.file.getvalue())
        progress.end_epoch(ROW)
        ended = console.file.getvalue()[before:]
    assert "146/161" in console.file.getvalue()[:before] and "161/161" not in console.file.getvalue()[:before]
    assert ended.index("161/161") < ended.index("val loss")  # drawn at its end, then the epoch's row


def test_the_bars_stop_where_the_run_stopped() -> None:
    console = terminal()
    with TrainProgress(console, epochs=2) as progress:
        progress.start_epoch(0, 161)
        progress.update(40, {"loss": 0.5, "acc": 0.8})
        progress.reached(57)  # stopped mid-epoch, between two redraws
        before = len(console.file.getvalue())
    assert "57/161" in console.file.getvalue()[before:]


def test_without_a_terminal_no_bar_is_drawn() -> None:
    console = Console(file=io.StringIO())
    with TrainProgress(console, epochs=1) as progress:
        progress.start_epoch(0, 161)
        progress.reached(161)
        progress.end_epoch(ROW)
    assert "161" not in console.file.getvalue() and "0.2500" in console.file.getvalue()
