"""examples/custom end to end through the CLI, from working directories other than the config's folder.

Training runs in a process of its own; eval, predict, inspect-model and resume then run in
this one, which has not imported the example's code: the checkpoint brings it back.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT
from torchguide.checkpoint import load_checkpoint, save_checkpoint
from torchguide.registry import MODELS

EXAMPLE = ROOT / "examples" / "custom"


def train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`guide train-image ARGS` run from `cwd` in a new process; fails the test unless it exits 0."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's code
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-m", "cli.main", "train-image", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def guide(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """`guide ARGS` run from `cwd` in this process; fails the test unless it exits 0."""
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_the_custom_example_trains_evaluates_predicts_and_resumes_from_other_folders(
        tmp_path: Path, digits_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    config = EXAMPLE / "config.yaml"
    assert config.read_text().startswith("# guide train-image --config examples/custom/config.yaml")
    summary = json.loads(train(work, "--config", str(config), "train.epochs=1", "train.max_steps=2", "--json",
                               "-q").stdout)
    assert summary["steps"] == 2 and summary["test"]["samples"] == 359
    checkpoints = work / "runs" / "custom-digits" / "checkpoints"
    best = str(checkpoints / "best.pt")

    assert "tiny_cnn" not in MODELS  # this process has not seen the example's code yet
    metrics = json.loads(guide(elsewhere, monkeypatch, "eval", "--checkpoint", best, "--predictions", "p.csv",
                               "--json").stdout)
    assert metrics["samples"] == 359 and len(metrics["per_class"]) == 10
    rows = list(csv.DictReader((elsewhere / "p.csv").open()))
    assert len(rows) == 359 and rows[0]["input"].isdigit()  # a dataset's item is named by its index
    image = str(sorted((digits_dir / "test" / "3").glob("*.png"))[0])
    top = json.loads(guide(elsewhere, monkeypatch, "predict", "--checkpoint", best, image, "--json").stdout)[0]["top"]
    assert len(top) == 3 and {t["class"] for t in top} <= {str(d) for d in range(10)}
    assert "Conv2d" in guide(elsewhere, monkeypatch, "inspect-model", "--checkpoint", best, "--json").stdout
    resumed = guide(elsewhere, monkeypatch, "train-image", "--config", str(config), "train.epochs=2",
                    "train.max_steps=3", "--resume", str(checkpoints / "last.pt"), "--json", "-q")
    assert json.loads(resumed.stdout)["steps"] == 3

    moved = move_model_file(tmp_path, checkpoints / "best.pt")
    failed = CliRunner().invoke(app, ["predict", "--checkpoint", str(moved), image])
    assert failed.exit_code == 2 and "gone from where it was: ./model.py" in failed.stderr
    again = guide(elsewhere, monkeypatch, "predict", "--checkpoint", str(moved), image,
                  "--import", str(tmp_path / "new" / "model.py"), "--json")
    assert json.loads(again.stdout)[0]["top"][0]["class"] == top[0]["class"]


def move_model_file(tmp_path: Path, checkpoint: Path) -> Path:
    """A copy of `checkpoint` whose model file has moved: its recorded path is gone, the file is in new/."""
    payload = load_checkpoint(checkpoint)
    entry = next(e for e in payload["imports"] if e["import"] == "./model.py")
    assert Path(entry["path"]) == (EXAMPLE / "model.py").resolve()
    entry["path"] = str(tmp_path / "old" / "model.py")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "model.py").write_text((EXAMPLE / "model.py").read_text())
    payload.pop("format")
    assert isinstance(payload["model"], dict) and all(isinstance(t, torch.Tensor) for t in payload["model"].values())
    return save_checkpoint(tmp_path / "moved.pt", payload)
