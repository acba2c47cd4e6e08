"""What a run shows and writes: live progress, epoch tables, metric files, plots.

Functions that print take a rich `Console`, so tests can print into a string. Progress
redraws a few times a second at most; when the console is not a terminal (a file, a
pipe, NO_COLOR or --quiet) it prints plain lines instead of bars.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from torchguide.device import matmul_peak, utilisation
from torchguide.files import write_atomic, write_text_atomic

if TYPE_CHECKING:
    from torchguide.loop import Run

REFRESH_S = 0.5  # bars: at most 2 redraws a second (each redraw costs a few ms of CPU)
PLAIN_EVERY_S = 10.0  # plain lines: at most one every 10 s


class TrainProgress:
    """Epoch and batch bars (or plain lines) for one run.

    Bars redraw a few times a second, so the last redraw of an epoch is some batches before its end:
    `reached` says where the epoch truly ended, and the bars are drawn there before its table row
    and when they stop.
    """

    def __init__(self, console: Console, epochs: int, unit: str = "samples", quiet: bool = False) -> None:
        self.console, self.epochs, self.unit, self.quiet = console, epochs, unit, quiet
        self.bars = console.is_terminal and not console.no_color and not quiet
        self.progress: Progress | None = None
        self.last = 0.0
        self.header_printed = False
        self.epoch, self.batches, self.done = 0, 0, 0

    def __enter__(self) -> TrainProgress:
        if self.bars:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=self.console, auto_refresh=False, transient=True)
            self.progress.start()
            self.epoch_task = self.progress.add_task("epochs", total=self.epochs, stats="")
            self.batch_task = self.progress.add_task("batches", total=1, stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.draw_end()
            self.progress.stop()

    def start_epoch(self, epoch: int, batches: int, done: int = 0) -> None:
        self.epoch, self.batches, self.done = epoch, batches, done
        if self.progress:
            self.progress.update(self.epoch_task, completed=epoch)
            self.progress.reset(self.batch_task, total=batches, completed=done,
                                description=f"epoch {epoch + 1}/{self.epochs}", stats="")
            self.progress.refresh()

    def due(self) -> bool:
        """True when it is time to redraw; callers read (and sync) metrics only then."""
        now = time.monotonic()
        if now - self.last >= (REFRESH_S if self.bars else PLAIN_EVERY_S):
            self.last = now
            return True
        return False

    def update(self, done: int, stats: dict[str, float]) -> None:
        self.done = done
        text = format_stats(stats, self.unit)
        if self.progress:
            self.progress.update(self.batch_task, completed=done, stats=text)
            self.progress.refresh()
        elif not self.quiet:
            self.console.print(f"epoch {self.epoch + 1}/{self.epochs} batch {done}/{self.batches} {text}",
                               highlight=False)

    def reached(self, done: int) -> None:
        """The epoch's batches ended at `done` (its last redraw may be some batches back)."""
        self.done = done

    def draw_end(self) -> None:
        """The batch bar at the count the epoch reached, redrawn now."""
        if self.progress:
            self.progress.update(self.batch_task, completed=self.done)
            self.progress.refresh()

    def end_epoch(self, row: dict[str, Any]) -> None:
        if self.progress:
            self.progress.update(self.epoch_task, completed=row["epoch"])
            self.draw_end()
        if not self.quiet:
            self.console.print(epoch_table(row, header=not self.header_printed))
            self.header_printed = True


def format_stats(stats: dict[str, float], unit: str) -> str:
    parts = [f"loss {stats['loss']:.4f}", f"acc {stats['acc']:.3f}"]
    if stats.get("rate"):
        parts.append(f"{stats['rate']:,.0f} {unit}/s")
    if stats.get("flops"):
        parts.append(f"{stats['flops'] / 1e9:,.1f} GFLOP/s")
    if stats.get("padding") is not None:
        parts.append(f"pad {stats['padding']:.0%}")
    return "  ".join(parts)


# key, title, format, width: fixed widths so rows printed one at a time line up
EPOCH_COLUMNS = [("epoch", "epoch", "{:d}", 6), ("train_loss", "loss", "{:.4f}", 8),
                 ("train_acc", "acc", "{:.4f}", 7), ("valid_loss", "val loss", "{:.4f}", 9),
                 ("valid_acc", "val acc", "{:.4f}", 8), ("lr", "lr", "{:.1e}", 8),
                 ("padding", "pad", "{:.1%}", 6), ("samples_per_s", "samples/s", "{:,.0f}", 10),
                 ("time_s", "time", "{:.1f}s", 7)]


def fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


def epoch_table(row: dict[str, Any], header: bool) -> Table:
    """One epoch as a table row; fixed widths so rows printed one by one line up."""
    table = Table(show_header=header, box=None, padding=(0, 1), pad_edge=False)
    cols = [c for c in EPOCH_COLUMNS if c[0] in row and (c[0] != "padding" or row[c[0]] is not None)]
    for _, title, _, width in cols:
        table.add_column(title, justify="right", width=width, no_wrap=True)
    table.add_row(*(fmt(row[key], pattern) for key, _, pattern, _ in cols))
    return table


class MetricsWriter:
    """metrics.jsonl (every row) and metrics.csv (epoch rows), rewritten from history on resume."""

    def __init__(self, run_dir: Path) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in history))
        self.write_csv(history)

    def write_csv(self, history: list[dict[str, Any]]) -> None:
        rows = [r for r in history if r.get("kind") == "epoch"]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.csv, text.getvalue())


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss and accuracy per epoch (train and valid) as a PNG; None when there is no epoch."""
    rows = [r for r in history if r.get("kind") == "epoch"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for split in ("train", "valid"):
            values = [r.get(f"{split}_{metric}") for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(path.parent.name)
    fig.tight_layout()
    try:
        return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100),
                            hint="the checkpoints and metrics are whole")
    finally:
        plt.close(fig)



def run_summary(run: Run, seconds: float, stopped_early: bool, unit: str) -> dict[str, Any]:
    """summary.json of a trained run: its final and best metrics, speed and how much of the device it used."""
    epochs = [r for r in run.state.history if r.get("kind") == "epoch"]
    last = epochs[-1] if epochs else {}
    rate = last.get("tokens_per_s") or last.get("samples_per_s") or 0.0  # global: every rank's samples
    flops, peak, used = utilisation(rate, run.train_flops, matmul_peak(str(run.device), run.precision),
                                    run.dist.world_size)
    return {
        "name": run.config.name, "run_dir": str(run.run_dir) if run.run_dir else None,
        "flops_per_s": flops, "peak_flops_per_s": peak, "utilisation": used,
        "epochs": len(epochs), "steps": run.state.step, "seconds": round(seconds, 2),
        "device": str(run.device), "precision": run.precision,
        "best_epoch": run.state.best_epoch, "best": run.state.best, "monitor": run.config.train.monitor,
        "stopped_early": stopped_early,
        "final": {k: last.get(k) for k in ("train_loss", "train_acc", "valid_loss", "valid_acc")},
        "samples_per_s": last.get("samples_per_s"), "unit": unit,
    }


def metrics_table(result: dict[str, Any], title: str) -> Table:
    """Loss, accuracy and macro scores of an evaluation."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key in ("samples", "loss", "accuracy", "macro_precision", "macro_recall", "macro_f1"):
        if key in result:
            table.add_row(key.replace("_", " "), fmt(result[key], "{:d}" if key == "samples" else "{:.4f}"))
    return table


def per_class_table(result: dict[str, Any]) -> Table:
    table = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result["per_class"]:
        table.add_row(Text(row["class"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    return table


def confusion_table(result: dict[str, Any], max_classes: int = 20) -> Table | None:
    """Rows are true classes, columns predicted; None when there are too many classes to show."""
    classes, matrix = result["classes"], result["confusion"]
    if len(classes) > max_classes:
        return None
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("", style="bold")
    for c in classes:
        table.add_column(Text(c[:8]), justify="right")  # class names are data: Text, never markup
    for i, c in enumerate(classes):
        cells = [f"[green]{v}[/]" if i == j and v else (str(v) if v else "[dim]0[/]")
                 for j, v in enumerate(matrix[i])]
        table.add_row(Text(c[:12]), *cells)
    return table


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
