"""TensorBoard event files: the same scalars as metrics.jsonl, the config as hyper-parameters, each step
once after a resume; and a clear error when the package is missing."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides
from tests.test_train import digits_config, new_run_dir, quiet
from torchguide.build import build_run
from torchguide.checkpoint import load_checkpoint, restore
from torchguide.config import load_config
from torchguide.errors import ConfigError
from torchguide.loggers import flat_config, require_tensorboard
from torchguide.loop import fit

RUN = ("data.loader.batch_size=256", "train.epochs=2", "train.log_every=2", "output.tensorboard=true",
       "train.checkpoint_every.steps=4", "train.keep_last=9")  # 6 steps an epoch


def events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's event files: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard should hold it: every number of every row at the row's step."""
    want: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("kind", "epoch", "step") and isinstance(value, int | float):
                want.setdefault(f"{row['kind']}/{key}", []).append((row["step"], value))
    return want


def assert_events_match_metrics(run_dir: Path) -> None:
    got, want = events(run_dir), expected(run_dir)
    assert sorted(got) == sorted(want)
    for tag, points in want.items():
        assert [step for step, _ in got[tag]] == [step for step, _ in points], tag  # each step once, in order
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32


def test_events_hold_the_metrics_and_the_config_and_a_resume_rewrites_them(digits_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    cfg = digits_config(digits_dir, tmp_path, *RUN, "train.ema.decay=0.9")
    run_dir = new_run_dir(cfg)
    fit(build_run(cfg, run_dir), quiet())
    assert_events_match_metrics(run_dir)
    assert {"step/train_loss", "step/lr", "epoch/valid_acc", "epoch/ema_valid_acc", "epoch/lr"} <= set(events(run_dir))
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == cfg.optimizer.kwargs["lr"]
    assert hparams["model.name"].string_value == "my_neural_net"

    # as if the run had died after step 4 (its events written up to step 12): resume from there
    resumed = build_run(cfg, run_dir)
    restore(resumed, load_checkpoint(run_dir / "checkpoints" / "step-00000004.pt"))
    fit(resumed, quiet())
    assert_events_match_metrics(run_dir)  # steps 5-12 once each, not twice
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert Counter(step for step, _ in events(run_dir)["epoch/valid_acc"]) == {6: 1, 12: 1}


def test_a_missing_tensorboard_is_one_clear_error(digits_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    cfg = digits_config(digits_dir, tmp_path, "output.tensorboard=true")
    with pytest.raises(ConfigError) as info:
        require_tensorboard(cfg)
    assert info.value.lines() == ["config error: output.tensorboard: the tensorboard package is not installed: "
                                  "pip install tensorboard (or set output.tensorboard=false)"]
    result = CliRunner().invoke(app, ["train-image", "--config", str(ROOT / "configs/image/digits.yaml"),
                                      *digits_overrides(digits_dir, tmp_path / "runs"), "output.tensorboard=true"])
    assert result.exit_code == 2, result.output
    assert "pip install tensorboard" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_flat_config() -> None:
    cfg = load_config(ROOT / "configs/image/digits.yaml", ["train.grad_clip=1.0"])
    flat = flat_config(cfg)
    assert flat["optimizer.lr"] == 3e-3 and flat["train.grad_clip"] == 1.0 and flat["name"] == "digits"
    assert json.loads(flat["data.transforms.train"])[0]["name"] == "random_affine"  # lists as JSON text
    assert flat["data.loader.batch_size"] == 32 and "train.max_steps" not in flat  # None is left out
    assert all(isinstance(v, int | float | str | bool) for v in flat.values())  # what TensorBoard takes
