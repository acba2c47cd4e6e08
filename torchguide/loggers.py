"""Where a run's metric rows go: its history (saved in every checkpoint), metrics.jsonl and metrics.csv,
and, with `output.tensorboard: true`, TensorBoard event files.

`RunLog` takes each row as the loop makes it. Only rank 0 of a run with a directory
writes files; every other process keeps the history alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torchguide.config import Config
from torchguide.errors import ConfigError
from torchguide.files import make_folder, write_failure
from torchguide.report import MetricsWriter

if TYPE_CHECKING:
    from torchguide.loop import Run

NOT_SCALARS = ("kind", "epoch", "step")  # a row's place, not a measurement
FLUSH_S = 10  # TensorBoard shows new steps within this many seconds


def require_tensorboard(config: Config) -> None:
    """Raise ConfigError, before anything is built or written, when the config asks for TensorBoard
    and the package is not installed."""
    if config.output.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("output.tensorboard: the tensorboard package is not installed",
                          "pip install tensorboard (or set output.tensorboard=false)")


class RunLog:
    """The run's metric rows: `add` one as it is made, `write` the files at epoch ends and stops."""

    def __init__(self, run: Run) -> None:
        self.history = run.state.history
        writes = run.run_dir is not None and run.dist.is_main
        self.files = MetricsWriter(run.run_dir) if writes else None
        self.tensorboard = TensorBoard(run) if writes and run.config.output.tensorboard else None

    def add(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.tensorboard:
            self.tensorboard.add(row)

    def write(self) -> None:
        """metrics.jsonl and metrics.csv rewritten from the history; TensorBoard's queue flushed."""
        if self.files:
            self.files.rewrite(self.history)
        if self.tensorboard:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()


class TensorBoard:
    """runs/NAME/tensorboard/: every number of every metrics row as a scalar at the row's optimizer step,
    tagged by the row's kind and key as metrics.jsonl names them (`step/train_loss`, `step/lr`,
    `epoch/valid_acc`, ...), the flattened config as hyper-parameters, and charts that put train and
    valid curves together (TensorBoard's Custom Scalars tab).

    The event files are written anew from the run's history when it starts or resumes (the old
    ones are removed), so a resumed run shows every step once, exactly as metrics.jsonl does,
    whatever the process before it had written when it stopped.
    """

    def __init__(self, run: Run) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.folder = run.run_dir / "tensorboard"
        metrics = epoch_tags(run.valid_loader is not None, run.ema is not None)
        with self.writing():
            make_folder(self.folder)
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
            self.writer = SummaryWriter(str(self.folder), flush_secs=FLUSH_S)
            for summary in hparams(flat_config(run.config), dict.fromkeys(metrics, 0.0)):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_custom_scalars({"guide": {
                "loss": ["Multiline", [t for t in metrics if t.endswith("loss")]],
                "accuracy": ["Multiline", [t for t in metrics if t.endswith("acc")]]}})
        for row in run.state.history:
            self.add(row)
        self.flush()

    def add(self, row: dict[str, Any]) -> None:
        with self.writing():
            for key, value in row.items():
                if key not in NOT_SCALARS and isinstance(value, int | float) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def flush(self) -> None:
        with self.writing():
            self.writer.flush()

    def close(self) -> None:
        with self.writing():
            self.writer.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A full disk or a folder that cannot be written (raised here, or by the writer's own thread at
        the next write) becomes one clear RunFailed."""
        try:
            yield
        except OSError as exc:
            raise write_failure(exc, self.folder, "the checkpoints and metrics files are whole") from exc


def epoch_tags(valid: bool, ema: bool) -> list[str]:
    """The epoch scalars that measure the run (the hyper-parameter table's metrics)."""
    splits = ["train"] + (["valid"] if valid else []) + (["ema_valid"] if valid and ema else [])
    return [f"epoch/{split}_{metric}" for metric in ("loss", "acc") for split in splits]


def flat_config(config: Config) -> dict[str, Any]:
    """The resolved config as `section.key: value` pairs, lists as JSON text (TensorBoard takes numbers,
    strings and booleans)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else key)
        elif value is not None:
            flat[path] = json.dumps(value) if isinstance(value, list) else value

    walk(config.model_dump(mode="json"), "")
    return flat

