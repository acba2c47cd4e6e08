"""benchmarks/gpu_check.py on a machine without a GPU: it imports, parses, writes results, and says why it stops."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check


def test_arguments_and_the_results_file(tmp_path: Path) -> None:
    args = gpu_check.parse_args(["--out", str(tmp_path / "r.json"), "--skip-speed"])
    assert args.out == tmp_path / "r.json" and args.skip_speed and args.keep is None
    checks = [gpu_check.check("bf16", True, 0.9), gpu_check.check("nan", False, {"exit": 0})]
    path = gpu_check.write_results(args.out, "Fake GPU", {"torch": "2", "cuda": "12"}, checks)
    document = json.loads(path.read_text())
    assert document["device"] == "Fake GPU" and document["torch"] == "2" and document["cuda"] == "12"
    assert document["checks"][1] == {"name": "nan", "passed": False, "value": {"exit": 0}}
    assert document["passed"] is False


def test_the_last_json_line_is_the_summary() -> None:
    done = subprocess.CompletedProcess([], 0, stdout='progress\n{"device": "cuda:0"}\n', stderr="")
    assert gpu_check.summary_of(done) == {"device": "cuda:0"}
    assert gpu_check.summary_of(subprocess.CompletedProcess([], 1, stdout="", stderr="boom")) == {}
    assert gpu_check.failure(subprocess.CompletedProcess([], 1, stdout="", stderr="x\nboom")) == "exit 1: boom"


def test_without_a_gpu_it_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.json")]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_the_synthetic_data_fits_the_dataset_contract() -> None:
    data = gpu_check.SyntheticImages(size=5, image_size=8, num_classes=3)
    image, label = data[4]
    assert len(data) == 5 and image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert 0 <= label < 3 and len(data.classes) == 3
