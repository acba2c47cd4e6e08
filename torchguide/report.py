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

from torchguide.files import make_folder, write_atomic, write_text_atomic
from torchguide.peak import run_utilisation

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
    """One epoch as a table row, and under it, with train.ema, a row `ema` with the EMA's validation
    loss and accuracy; fixed widths so rows printed one by one line up."""
    table = Table(show_header=header, box=None, padding=(0, 1), pad_edge=False)
    cols = [c for c in EPOCH_COLUMNS if c[0] in row and (c[0] != "padding" or row[c[0]] is not None)]
    for _, title, _, width in cols:
        table.add_column(title, justify="right", width=width, no_wrap=True)
    table.add_row(*(fmt(row[key], pattern) for key, _, pattern, _ in cols))
    if row.get("ema_valid_loss") is not None:
        table.add_row(*("ema" if key == "epoch" else fmt(row[f"ema_{key}"], pattern) if key.startswith("valid_")
                        else "" for key, _, pattern, _ in cols), style="dim")
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
    """curves.png of a run (see `curves_figure`); None when there is no epoch."""
    fig = curves_figure(history, path.parent.name)
    return save_figure(fig, path, "the checkpoints and metrics are whole") if fig is not None else None


def curves_figure(history: list[dict[str, Any]], title: str) -> Any:
    """Loss and accuracy per epoch (train, valid, and the EMA's valid) and the learning rate, as a
    matplotlib figure; None when there is no epoch."""
    rows = [r for r in history if r.get("kind") == "epoch"]
    if not rows:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(15, 4))
    fig.subplots_adjust(**CURVES_MARGINS)  # fixed: tight_layout draws the figure once more to measure it
    axes = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in rows]
    for ax, metric in zip(axes, ("loss", "acc"), strict=False):
        for split, label in (("train", "train"), ("valid", "valid"), ("ema_valid", "valid (EMA)")):
            values = [r.get(f"{split}_{metric}") for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.legend()
    plot_lr(axes[2], history, rows)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not 1.2, 1.4, ...
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


CURVES_MARGINS = {"left": 0.05, "right": 0.99, "bottom": 0.13, "top": 0.88, "wspace": 0.25}


def plot_lr(ax: Any, history: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """The learning rate against epochs done: the step rows (every `log_every` steps) at their place in
    their epoch, and each epoch's rate as a dot at its end; a log scale when it spans decades."""
    ends = {r["epoch"]: r["step"] for r in rows}  # the optimizer step at which each epoch ended
    steps = [r for r in history if r.get("kind") == "step" and r["epoch"] in ends]
    x = [r["epoch"] - 1 + (r["step"] - ends.get(r["epoch"] - 1, 0))
         / max(ends[r["epoch"]] - ends.get(r["epoch"] - 1, 0), 1) for r in steps]
    if steps:
        ax.plot(x, [r["lr"] for r in steps], color="#4c72b0", label="steps")
    ax.plot(list(ends), [r["lr"] for r in rows], "o", color="#4c72b0", label="epochs")
    ax.set_xlim(left=0)
    rates = [r["lr"] for r in steps + rows if r["lr"] > 0]
    if rates and max(rates) / min(rates) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.legend()


def plot_confusion(result: dict[str, Any], path: Path, title: str) -> Path:
    """The confusion matrix of an evaluation as a PNG: rows are true classes, columns predicted; each cell
    holds its count and is shaded by its share of the row (the diagonal: each class's recall)."""
    classes, matrix = result["classes"], result["confusion"]
    n = len(classes)
    totals = [max(sum(row), 1) for row in matrix]
    shares = [[v / total for v in row] for row, total in zip(matrix, totals, strict=True)]
    side = min(max(4 + 0.45 * n, 5), 24)
    fig = new_figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 60:  # more classes: the shading alone
        names = [c[:12] for c in classes]
        ax.set_xticks(range(n), names, rotation=45 if n > 10 or max(map(len, names)) > 3 else 0, ha="right")
        ax.set_yticks(range(n), names)
    if n <= 30:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8 if n > 15 else 10,
                            color="white" if shares[i][j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, "the evaluation itself is unaffected")


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure outside pyplot: drawn to files only, freed with its last reference, and without
    importing pyplot and its backends (which took longer than drawing a run's curves)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: Path, hint: str) -> Path:
    """Write `fig` to `path` as a PNG (making its folder), atomically; a failed write is one RunFailed with
    `hint`."""
    make_folder(path.parent)
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), hint=hint)


def run_summary(run: Run, seconds: float, stopped_early: bool, unit: str) -> dict[str, Any]:
    """summary.json of a trained run: its final and best metrics, speed and how much of the device it used."""
    epochs = [r for r in run.state.history if r.get("kind") == "epoch"]
    last = epochs[-1] if epochs else {}
    rate = last.get("tokens_per_s") or last.get("samples_per_s") or 0.0  # global: every rank's samples
    return {
        "name": run.config.name, "run_dir": str(run.run_dir) if run.run_dir else None,
        **run_utilisation(rate, run.train_flops, run.device, run.precision, run.dist.world_size),
        "epochs": len(epochs), "steps": run.state.step, "seconds": round(seconds, 2),
        "device": str(run.device), "precision": run.precision, "auto": run.auto,
        "best_epoch": run.state.best_epoch, "best": run.state.best, "monitor": run.config.train.monitor,
        "stopped_early": stopped_early,
        "final": {k: last.get(k) for k in ("train_loss", "train_acc", "valid_loss", "valid_acc")
                  + (("ema_valid_loss", "ema_valid_acc") if run.ema is not None else ())},
        "samples_per_s": last.get("samples_per_s"), "unit": unit,
        **({"best_weights": run.state.best_weights} if run.ema is not None else {}),
        **({"threads": run.threads.summary()} if run.threads is not None else {}),
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
