"""The CUDA paths on a real GPU; every test here skips itself, with the reason, without one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

from torchguide.build import build_run
from torchguide.checkpoint import load_checkpoint, restore, snapshot
from torchguide.config import load_config
from torchguide.device import pick_device, pick_precision
from torchguide.loop import fit
from torchguide.runner import evaluate_checkpoint, new_run_dir

pytestmark = pytest.mark.cuda


def digits_config(digits_dir: Path, out: Path, *overrides: str):
    raw = {"name": "g", "data": {"train": {"name": "image_folder", "root": str(digits_dir / "train")},
                                 "valid": {"split": 0.1}, "test": {"name": "image_folder",
                                                                   "root": str(digits_dir / "test")}},
           "model": {"name": "simple_cnn"}, "output": {"dir": str(out)}, "train": {"device": "auto"}}
    return load_config(None, list(overrides), raw=raw)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_auto_picks_the_gpu_and_a_native_precision() -> None:
    device, why = pick_device("auto")
    assert device.type == "cuda" and "CUDA GPU" in why
    precision, _ = pick_precision("auto", device)
    assert precision == ("bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16")


def test_fp16_steps_with_loss_scaling_and_clipping(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.precision=fp16", "train.grad_clip=1.0", "train.max_steps=6")
    run = build_run(cfg, new_run_dir(cfg))
    assert run.scaler.is_enabled()
    summary = fit(run, quiet())
    assert summary["device"].startswith("cuda") and summary["precision"] == "fp16"
    assert 0 < summary["steps"] <= 6 and summary["final"]["train_loss"] < 10
    payload = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    assert payload["scaler"] and payload["precision"] == "fp16"
    assert all(v.device.type == "cpu" for v in payload["model"].values())


def test_bf16_trains_in_bf16(digits_dir: Path, tmp_path: Path) -> None:
    if not torch.cuda.get_device_capability()[0] >= 8:
        pytest.skip("this GPU has no native bf16")
    run = build_run(digits_config(digits_dir, tmp_path, "train.precision=bf16", "train.max_steps=4"))
    assert not run.scaler.is_enabled()
    summary = fit(run, quiet())
    assert summary["precision"] == "bf16" and summary["steps"] == 4
    assert summary["utilisation"] is not None and 0 < summary["utilisation"] <= 1


def test_a_checkpoint_moves_between_the_cpu_and_the_gpu(digits_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    common = ("train.precision=fp32", "train.epochs=1", "train.max_steps=8")
    cpu_cfg = digits_config(digits_dir, tmp_path / "cpu", "train.device=cpu", *common)
    cpu_run = build_run(cpu_cfg, new_run_dir(cpu_cfg))
    fit(cpu_run, quiet())
    payload = load_checkpoint(cpu_run.run_dir / "checkpoints" / "last.pt")
    gpu_run = build_run(digits_config(digits_dir, tmp_path / "cpu", "train.device=cuda", *common,
                                      "train.epochs=2", "train.max_steps=12"))
    restore(gpu_run, payload)  # a CPU checkpoint continues on the GPU
    gpu_run.run_dir = cpu_run.run_dir
    fit(gpu_run, quiet())
    last = gpu_run.run_dir / "checkpoints" / "last.pt"
    on_gpu = evaluate_checkpoint(last, split="test")
    monkeypatch.setenv("GUIDE_DEVICE", "cpu")
    on_cpu = evaluate_checkpoint(last, split="test")  # and a GPU checkpoint is evaluated on the CPU
    assert on_cpu["accuracy"] == pytest.approx(on_gpu["accuracy"], abs=2 / on_cpu["samples"])


def test_snapshot_copies_gpu_tensors_into_pinned_memory() -> None:
    weights = {"w": torch.randn(64, 64, device="cuda")}
    copy = snapshot(weights)
    assert copy["w"].device.type == "cpu" and copy["w"].is_pinned()
    torch.testing.assert_close(copy["w"], weights["w"].cpu())
