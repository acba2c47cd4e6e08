"""Correct on every device: what runs on a GPU, tested on the CPU with torch.cuda stood in for."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import resource
import threading
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import torchguide.device as device_module
import torchguide.loop as loop_module
import torchguide.metrics as metrics_module
from cli.main import app
from tests.conftest import ROOT, digits_overrides
from tests.test_train import new_run_dir
from torchguide.build import build_run
from torchguide.checkpoint import load_checkpoint, restore_rng, restore_scaler, rng_state, snapshot
from torchguide.config import load_config
from torchguide.device import (
    AutocastForward,
    accumulator_dtype,
    pick_device,
    pick_precision,
    prepare_device,
    unwrap,
)
from torchguide.errors import ConfigError, RunFailed
from torchguide.loop import fit, train_step
from torchguide.metrics import Meter
from torchguide.report import TrainProgress


def digits_config(digits_dir: Path, out: Path, *overrides: str):
    raw = {"name": "d", "data": {"train": {"name": "image_folder", "root": str(digits_dir / "train")},
                                 "valid": {"split": 0.1}},
           "model": {"name": "my_neural_net"}, "output": {"dir": str(out)}, "train": {"device": "cpu"}}
    return load_config(None, list(overrides), raw=raw)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture
def cuda_machine(monkeypatch: pytest.MonkeyPatch):
    """torch.cuda answering as on a machine with GPUs (how many: set `gpus`); records set_device calls."""
    seen: dict[str, list] = {"set_device": [], "device": [], "bf16": []}
    machine = {"gpus": 1, "native_bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: machine["gpus"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: seen["set_device"].append(device))

    @contextlib.contextmanager
    def device(index):
        seen["device"].append(index)
        yield

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        seen["bf16"].append(including_emulation)
        return machine["native_bf16"] or including_emulation

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    return machine, seen


# ---------------------------------------------------------------- device and precision choice

def test_auto_is_pinned_to_the_cpu_in_tests_and_a_bad_pin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    device, why = pick_device("auto")
    assert device.type == "cpu" and "GUIDE_DEVICE=cpu" in why
    monkeypatch.setenv("GUIDE_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="GUIDE_DEVICE=tpu: choose cpu"):
        pick_device("auto")


def test_auto_precision_asks_the_chosen_gpu_for_native_bf16(cuda_machine) -> None:
    machine, seen = cuda_machine
    assert pick_precision("auto", torch.device("cuda", 1))[0] == "bf16"
    machine["native_bf16"] = False  # an older GPU: bf16 only emulated
    assert pick_precision("auto", torch.device("cuda", 1))[0] == "fp16"
    with pytest.raises(ConfigError, match="no native bf16"):
        pick_precision("bf16", torch.device("cuda", 1))
    assert set(seen["device"]) == {1} and set(seen["bf16"]) == {False}


@pytest.fixture
def gpu_bf16(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """pick_precision's probe of a GPU's native bf16 stood in for: set `[True]` or `[False]`; asked of a
    CPU or MPS device, it fails the test."""
    answer: list[bool] = []

    def probe(device: torch.device) -> bool:
        assert device.type == "cuda", f"asked {device} about native bf16"
        return answer[0]

    monkeypatch.setattr(device_module, "gpu_has_bf16", probe)
    return answer


@pytest.mark.parametrize(("requested", "device", "native_bf16", "chosen"), [
    ("auto", "cpu", None, "fp32"),
    ("auto", "mps", None, "fp32"),
    ("auto", "cuda", True, "bf16"),
    ("auto", "cuda:1", False, "fp16"),  # bf16 only emulated: fp16 with loss scaling
    ("bf16", "cpu", None, "bf16"),  # autocast on the CPU, as asked
    ("bf16", "cuda", True, "bf16"),
    ("fp16", "cuda", False, "fp16"),
    ("fp16", "cuda", True, "fp16"),  # as configured, though bf16 is there
    ("fp32", "cuda", True, "fp32"),
    ("fp32", "mps", None, "fp32"),
])
def test_pick_precision(gpu_bf16: list[bool], requested: str, device: str, native_bf16: bool | None,
                        chosen: str) -> None:
    gpu_bf16.append(native_bf16)
    precision, why = pick_precision(requested, torch.device(device))
    assert precision == chosen
    if requested != "auto":
        assert why == "as configured"
    else:
        assert why.startswith("auto: ") and chosen in why


@pytest.mark.parametrize(("requested", "device", "message", "hint"), [
    ("fp16", "cpu", "fp16 needs a CUDA GPU, this run is on cpu", "use bf16 or fp32"),
    ("fp16", "mps", "fp16 needs a CUDA GPU, this run is on mps", "use bf16 or fp32"),
    ("bf16", "cuda:0", "this GPU has no native bf16", "use fp16 or fp32"),
])
def test_pick_precision_refuses_what_the_device_cannot_do(gpu_bf16: list[bool], requested: str, device: str,
                                                          message: str, hint: str) -> None:
    gpu_bf16.append(False)
    with pytest.raises(ConfigError, match=message) as caught:
        pick_precision(requested, torch.device(device))
    assert caught.value.hint == hint


def test_nproc_above_the_gpu_count_is_refused_naming_both(cuda_machine, digits_dir: Path, tmp_path: Path) -> None:
    machine, _ = cuda_machine
    machine["gpus"] = 2
    result = CliRunner().invoke(app, ["train-image", "--config", str(ROOT / "configs/image/digits.yaml"),
                                      *digits_overrides(digits_dir, tmp_path), "train.device=cuda", "--nproc", "3"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "3 processes" in lines[0] and "2 GPU(s)" in lines[0] and "--nproc 2" in lines[0]
    assert not list(tmp_path.glob("*/checkpoints"))


def test_prepare_device_sets_the_gpu_tf32_and_autotuning(cuda_machine, monkeypatch: pytest.MonkeyPatch) -> None:
    _, seen = cuda_machine
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.get_float32_matmul_precision())
    try:
        notes = prepare_device(torch.device("cuda", 1), "image", deterministic=False)
        assert seen["set_device"] == [torch.device("cuda", 1)]
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
        assert any("TF32" in n for n in notes)
        prepare_device(torch.device("cuda", 0), "text", deterministic=False)
        assert not torch.backends.cudnn.benchmark  # text batches change shape: no autotuning
        notes = prepare_device(torch.device("cuda", 0), "image", deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assert any(n.startswith("deterministic:") for n in notes)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
        torch.set_float32_matmul_precision(flags[2])


def test_deterministic_run_on_the_cpu_says_so(digits_dir: Path, tmp_path: Path) -> None:
    try:
        run = build_run(digits_config(digits_dir, tmp_path, "train.deterministic=true", "train.max_steps=2"))
        assert torch.are_deterministic_algorithms_enabled()
        assert any(note.startswith("deterministic:") for note in run.notes)
        fit(run, quiet())
    finally:
        torch.use_deterministic_algorithms(False)


# ---------------------------------------------------------------- MPS: no float64

def test_sums_are_float32_on_mps_and_float64_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert accumulator_dtype(torch.device("mps")) == torch.float32
    assert accumulator_dtype(torch.device("cuda")) == torch.float64
    monkeypatch.setattr(metrics_module, "accumulator_dtype", lambda device: torch.float32)  # the CPU as MPS
    meter = Meter(torch.device("cpu"), {"loss": 1.5, "correct": 2, "count": 3})
    assert meter.loss.dtype == torch.float32
    assert meter.values()["loss"] == pytest.approx(0.5)


def test_evaluate_keeps_no_float64_on_an_mps_like_device(digits_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_module, "accumulator_dtype", lambda device: torch.float32)
    real_zeros = torch.zeros

    def zeros(*args, **kwargs):
        assert kwargs.get("dtype") != torch.float64, "a float64 tensor on the device"
        return real_zeros(*args, **kwargs)

    run = build_run(digits_config(digits_dir, tmp_path))
    monkeypatch.setattr(loop_module.torch, "zeros", zeros)
    result = loop_module.evaluate(run.model, run.valid_loader, run.loss_fn, run.device, run.precision,
                                  run.output_kind, run.data.classes)
    assert result["loss"] > 0


# ---------------------------------------------------------------- DataParallel keeps the autocast dtype

class DtypeProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.layer(x)


def test_a_replica_thread_computes_in_the_runs_dtype() -> None:
    probe = DtypeProbe()
    wrapped = AutocastForward(probe, "cpu", "fp16")
    outputs = []

    def replica() -> None:  # what DataParallel's worker does: autocast on, dtype left to the thread's default
        with torch.autocast("cpu", enabled=True):
            outputs.append(wrapped(torch.randn(3, 4)))

    thread = threading.Thread(target=replica)
    thread.start()
    thread.join()
    assert probe.seen == [(True, torch.float16)]  # not the thread's default (bf16 on the CPU)
    assert outputs[0].dtype == torch.float16
    assert unwrap(nn.DataParallel(wrapped)) is probe


# ---------------------------------------------------------------- fp16 loss scaling

def test_resume_across_a_precision_change_keeps_or_drops_the_scaler() -> None:
    fp16 = torch.amp.GradScaler("cpu", init_scale=1024.0)
    other = torch.amp.GradScaler("cpu", enabled=False)
    saved_fp16 = {"scaler": torch.amp.GradScaler("cpu", init_scale=8.0).state_dict(), "precision": "fp16"}
    assert restore_scaler(fp16, {"scaler": {}, "precision": "fp32"}, "fp16") == [
        "precision fp32 -> fp16 (loss scaling starts afresh)"]
    assert fp16.get_scale() == 1024.0
    assert restore_scaler(other, saved_fp16, "bf16") == ["precision fp16 -> bf16"]
    assert restore_scaler(fp16, saved_fp16, "fp16") == [] and fp16.get_scale() == 8.0
    assert restore_scaler(other, {"scaler": {}}, "bf16") == []  # an older checkpoint: no record, no scaler
    assert restore_scaler(fp16, {"scaler": {}}, "fp16") == ["precision fp32 or bf16 -> fp16 (loss scaling "
                                                            "starts afresh)"]


def test_a_step_skipped_by_the_scaler_is_not_counted(digits_dir: Path, tmp_path: Path) -> None:
    run = build_run(digits_config(digits_dir, tmp_path))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    batch = next(iter(run.train_loader))
    overflow = lambda output, target: run.loss_fn(output, target) * float("inf")  # noqa: E731
    before = [p.detach().clone() for p in run.model.parameters()]
    step = train_step(run.model, batch, overflow, run.optimizer, scaler, "fp16")
    assert step.kept and not step.stepped and scaler.get_scale() == 2.0**9
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters(), strict=True))
    assert all(p.grad is None for p in run.model.parameters())  # the overflowing gradients are gone
    step = train_step(run.model, batch, run.loss_fn, run.optimizer, scaler, "fp16")
    assert step.stepped and not all(torch.equal(a, b) for a, b in zip(before, run.model.parameters(),
                                                                        strict=True))


# ---------------------------------------------------------------- NaN never reaches a checkpoint

def test_a_nan_between_redraws_never_reaches_last_pt(digits_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.checkpoint_every.steps=1")
    run = build_run(cfg, new_run_dir(cfg))
    monkeypatch.setattr(loop_module, "reads_every_loss", lambda on_nan, device: False)  # as on a GPU
    monkeypatch.setattr(TrainProgress, "due", lambda self: False)  # no redraw reads the loss
    real, calls = run.loss_fn, {"n": 0}

    def nan_at_three(output, target):
        calls["n"] += 1
        return real(output, target) * (float("nan") if calls["n"] == 3 else 1.0)

    run.loss_fn = nan_at_three
    with pytest.raises(RunFailed, match="NaN/inf at step 3, .*before saving a checkpoint"):
        fit(run, quiet())
    payload = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    assert payload["state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in payload["model"].values())


# ---------------------------------------------------------------- checkpoints across machines

def test_cuda_rng_states_restore_on_a_machine_with_fewer_gpus(cuda_machine, monkeypatch: pytest.MonkeyPatch) -> None:
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append(index))
    state = {**rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]}
    restore_rng(state)  # saved on two GPUs, restored on one
    assert restored == [0]


def test_snapshot_copies_into_cpu_memory() -> None:
    weights = {"w": torch.randn(3, 3), "nested": [torch.arange(4), 7]}
    copy = snapshot(weights)
    weights["w"].add_(1)
    assert copy["w"].device.type == "cpu" and not torch.equal(copy["w"], weights["w"])
    assert copy["nested"][1] == 7 and torch.equal(copy["nested"][0], torch.arange(4))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_not_mapped_again() -> None:
    assert device_module.reuse_freed_memory()

    def eight_mib() -> None:
        torch.empty(8 << 20, dtype=torch.uint8).fill_(1)  # touched, then freed

    for _ in range(10):  # the heap grows to hold it
        eight_mib()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        eight_mib()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 2048  # mapped afresh: 20 x 2048 pages
