"""benchmarks/peers.py without running it: the skip note without Lightning, the guide side's configs, the data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import peers
from torchguide.config import load_config
from torchguide.data.image import image_folder

ROOT = Path(__file__).resolve().parent.parent


def test_without_lightning_it_says_how_to_install_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    assert peers.measure(quick=True) == {"skipped": peers.measure()["skipped"]}
    assert "pip install -e '.[bench]'" in peers.measure()["skipped"]
    hide = "import runpy, sys; sys.modules['lightning'] = None; sys.argv = ['peers.py']; " \
           "runpy.run_path('benchmarks/peers.py', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "skipped (pip install -e '.[bench]')" in done.stdout


@pytest.mark.parametrize("task, one_step", [("image", False), ("image", True), ("text", False)])
def test_the_guide_side_runs_the_settings_of_both_sides(tmp_path: Path, task: str, one_step: bool) -> None:
    command, _, path, *overrides = peers.guide_args(task, tmp_path, tmp_path / "runs", 2, one_step)
    config = load_config(ROOT / path, overrides, task=task)
    settings = peers.IMAGE if task == "image" else peers.TEXT
    assert config.data.loader.batch_size == settings["batch"] and config.train.threads == settings["threads"]
    assert config.data.loader.num_workers == settings["workers"] and config.scheduler.name == "none"
    assert config.optimizer.kwargs["lr"] == peers.LR and config.train.precision == "fp32"
    assert config.data.test is None and (config.data.valid is None) == one_step
    assert config.train.max_steps == (1 if one_step else None) and command == f"train-{task}"


def test_digits_of_28_pixels_in_an_image_folder(tmp_path: Path) -> None:
    peers.write_digits28(tmp_path, 30, seed=0)
    ds = image_folder(str(tmp_path))
    assert len(ds) == 30 and ds.mode == "L" and list(ds.sizes) == [(28, 28)]
