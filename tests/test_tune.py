"""`auto` precision, memory layout and compile: measured on copies, cached, kept on resume, by rule when told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchguide import tune, usercache
from torchguide.config import load_config
from torchguide.data.collate import Batch
from torchguide.errors import ConfigError
from torchguide.registry import MODELS

from .test_train import digits_config, new_run_dir, train


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """auto measures (the suite decides by rule otherwise), with a cache of this test's own."""
    monkeypatch.delenv("GUIDE_TUNE")
    monkeypatch.setenv("GUIDE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cnn_parts(channels: int = 3) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, Batch]:
    torch.manual_seed(0)
    model = MODELS.build("simple_cnn", num_classes=4, in_channels=channels)
    labels = torch.randint(0, 4, (8,))
    batch = Batch((torch.randn(8, channels, 16, 16),), labels, labels)
    return model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=1e-3), batch


def config(*overrides: str):
    raw = {"data": {"train": {"name": "image_folder", "root": "x"}}, "model": {"name": "simple_cnn"},
           "train": {"device": "cpu"}}
    return load_config(None, list(overrides), raw=raw)


def decide(*overrides: str, run_steps: int = 100_000, **kw):
    model, loss_fn, optimizer, batch = cnn_parts()
    return tune.decide(config(*overrides), model, loss_fn, optimizer, batch, torch.device("cpu"), 1, run_steps,
                       **kw)


def fake_probe(times: dict[str, float], bf16_loss: float = 1.0):
    """A probe that reports the given step times (by setting name) without training."""
    calls = []

    def probe(model, loss_fn, optimizer, batch, device, candidates, steps):
        calls.append([c.name() for c in candidates])
        return ({c: times[c.name()] for c in candidates},
                {c: [bf16_loss if c.precision == "bf16" else 1.0] * steps for c in candidates})
    return probe, calls


def test_rule_when_measuring_is_off() -> None:
    choices = decide()  # the suite runs with GUIDE_TUNE=off
    assert (choices["precision"].value, choices["channels_last"].value, choices["compile"].value) == \
        ("fp32", False, False)
    assert choices["channels_last"].why == "auto: by rule" and choices["precision"].speedup == {}


def test_deterministic_runs_decide_by_rule(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "probe", lambda *a, **k: pytest.fail("measured a deterministic run"))
    assert decide("train.deterministic=true", "train.compile=false")["channels_last"].why == "auto: by rule"


def test_real_probe_times_both_layouts_and_leaves_the_run_untouched(measured: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "cpu_has_bf16", lambda: False)
    model, loss_fn, optimizer, batch = cnn_parts()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    choices = tune.decide(config("train.compile=false"), model, loss_fn, optimizer, batch, torch.device("cpu"), 1,
                          100_000)
    assert set(choices["channels_last"].speedup) == {"fp32", "fp32 + channels_last"}
    assert choices["channels_last"].steps == tune.PROBE_STEPS and choices["precision"].value == "fp32"
    assert choices["channels_last"].why.startswith("auto: ") and "over 6 steps" in choices["channels_last"].why
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert optimizer.state == {} and torch.equal(torch.get_rng_state(), rng)
    assert model.features[0][0].weight.is_contiguous()  # the run's own model is not converted by measuring


def test_second_run_of_the_same_model_reads_the_cache(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe, calls = fake_probe({"fp32": 1.0, "fp32 + channels_last": 0.5})
    monkeypatch.setattr(tune, "probe", probe)
    first = decide("train.compile=false")
    assert first["channels_last"].value is True and not first["channels_last"].cached
    assert first["channels_last"].why == "auto: 2.00x faster than contiguous over 6 steps"
    again = decide("train.compile=false")
    assert len(calls) == 1 and again["channels_last"].cached and again["channels_last"].value is True
    assert again["channels_last"].why.endswith(", cached")
    [stored] = json.loads((measured / "tune.json").read_text()).values()
    assert stored["times"] == {"fp32": 1.0, "fp32 + channels_last": 0.5}
    decide("train.compile=false", "train.threads=2")  # another model input would be another entry: so is ...
    model, loss_fn, optimizer, batch = cnn_parts(channels=1)  # ... another input shape
    tune.decide(config("train.compile=false"), model, loss_fn, optimizer, batch, torch.device("cpu"), 1, 100_000)
    assert len(calls) == 2


def test_a_small_gain_keeps_the_plain_setting(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "probe", fake_probe({"fp32": 1.0, "fp32 + channels_last": 0.99})[0])
    choice = decide("train.compile=false")["channels_last"]
    assert choice.value is False and choice.why == "auto: channels_last ran at 1.01x contiguous's speed over 6 steps"


@pytest.mark.parametrize(("bf16_loss", "expected"), [(1.01, "bf16"), (1.5, "fp32")])
def test_bf16_only_where_its_loss_follows_fp32(measured: Path, monkeypatch: pytest.MonkeyPatch, bf16_loss: float,
                                                expected: str) -> None:
    monkeypatch.setattr(tune, "cpu_has_bf16", lambda: True)
    probe, calls = fake_probe({"fp32": 1.0, "fp32 + channels_last": 0.9, "bf16": 0.5,
                               "bf16 + channels_last": 0.4}, bf16_loss)
    monkeypatch.setattr(tune, "probe", probe)
    choices = decide("train.compile=false")
    assert calls == [["fp32", "fp32 + channels_last", "bf16", "bf16 + channels_last"]]
    assert choices["precision"].value == expected
    if expected == "bf16":
        assert choices["channels_last"].value  # bf16 + channels_last against fp32 + channels_last:
        assert choices["precision"].why == "auto: 2.25x faster than fp32 over 6 steps"
    else:
        assert "bf16's loss strayed from fp32's" in choices["precision"].why


def test_no_bf16_candidate_on_a_cpu_without_it(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "cpu_has_bf16", lambda: False)
    probe, calls = fake_probe({"fp32": 1.0, "fp32 + channels_last": 1.0})
    monkeypatch.setattr(tune, "probe", probe)
    decide("train.compile=false")
    assert calls == [["fp32", "fp32 + channels_last"]]


def test_a_short_run_is_not_measured(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "probe", lambda *a, **k: pytest.fail("measured a 50-step run"))
    choice = decide("train.compile=false", run_steps=50)["channels_last"]
    assert choice.value is False and choice.why == "auto: a run of 50 steps is too short to measure the alternatives"


def test_compile_waits_for_a_run_long_enough_to_pay_it_back(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "probe", lambda model, loss_fn, opt, batch, device, candidates, steps:
                        ({c: 0.01 for c in candidates}, {c: [1.0] * steps for c in candidates}))
    choice = decide("train.channels_last=false", run_steps=1000)["compile"]
    assert choice.value is False and "too few to risk a compile (~60 s, over 3% of the run)" in choice.why


def test_compile_measured_kept_when_it_pays(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(model, loss_fn, optimizer, batch, device, candidates, steps):
        times = {c: {"first": 30.0, "step": 0.5} if c.compiled else 1.0 for c in candidates}
        return times, {c: [1.0] * steps for c in candidates}
    monkeypatch.setattr(tune, "probe", probe)
    long_run = decide("train.channels_last=false", run_steps=3000)["compile"]
    assert long_run.value is True and "2.00x faster steps, 30 s to compile: saves ~1470 s" in long_run.why
    short = decide("train.channels_last=false", run_steps=50)["compile"]  # cached: only the arithmetic differs
    assert short.value is False and short.cached and "not paid back over 50 steps, cached" in short.why


def test_compile_needs_a_compiler_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="train.compile: torch.compile on the CPU needs a C\\+\\+ compiler"):
        decide("train.compile=true")
    monkeypatch.delenv("GUIDE_TUNE")
    assert "needs a C++ compiler" in decide("train.channels_last=false")["compile"].why


def test_text_is_not_compiled_by_auto(measured: Path) -> None:
    model, loss_fn, optimizer, _ = cnn_parts()
    batch = Batch((torch.zeros(2, 5, dtype=torch.long),), torch.zeros(2), torch.zeros(2), torch.tensor([5, 3]))
    choice = tune.decide_compile(model, loss_fn, optimizer, batch, torch.device("cpu"), 1,
                                 tune.Setting("fp32"), 100_000)
    assert choice.value is False and "vary in length" in choice.why


def test_a_run_states_its_choices_and_a_resume_keeps_them(digits_dir: Path, tmp_path: Path,
                                                           measured: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "model.name=simple_cnn", "train.epochs=1", "train.max_steps=2",
                        "train.compile=false")
    run_dir = new_run_dir(cfg)
    run, summary = train(cfg, run_dir)
    assert any(n.startswith("precision: fp32 (auto: ") for n in run.notes)
    assert any(n.startswith("memory layout: ") for n in run.notes)
    assert "compile: off (as configured)" in run.notes
    assert summary["auto"]["precision"]["value"] == "fp32" and summary["auto"]["compile"]["why"] == "as configured"
    payload = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert payload["auto"] == summary["auto"]
    payload["auto"]["channels_last"] = {**payload["auto"]["channels_last"], "value": True, "why": "auto: measured"}
    from torchguide.build import build_run
    resumed = build_run(cfg, kept=payload["auto"])
    assert resumed.auto["channels_last"]["value"] is True
    assert resumed.auto["channels_last"]["why"] == "auto: measured; kept from the checkpoint"
    assert resumed.model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_cache_survives_a_broken_file(measured: Path) -> None:
    measured.mkdir(parents=True)
    (measured / "tune.json").write_text("{not json")
    assert usercache.lookup("tune", "x") is None
    assert usercache.store("tune", "x", {"a": 1}) and usercache.lookup("tune", "x") == {"a": 1}


@pytest.mark.slow
def test_compile_true_trains_and_saves_plain_keys(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "model.name=simple_cnn", "train.epochs=1", "train.max_steps=3",
                        "train.compile=true", "~data.valid")
    run_dir = new_run_dir(cfg)
    run, _ = train(cfg, run_dir)
    payload = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert not any(k.startswith("_orig_mod") for k in payload["model"]) and "compile: on (as configured)" in run.notes


def test_copies_that_do_not_fit_fall_back_to_the_rule(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(*args: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(tune, "probe", probe)
    monkeypatch.setattr(tune.torch.cuda, "empty_cache", lambda: None)
    choice = decide("train.compile=false")["channels_last"]
    assert choice.value is False and "do not fit in the device's memory" in choice.why
