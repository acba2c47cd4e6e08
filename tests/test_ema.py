"""The EMA of the weights: the average itself, its validation, best.pt, exact resume, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import torchguide.loop as loop
from tests.conftest import digits_overrides
from tests.test_distributed import job
from tests.test_train import digits_config, new_run_dir, quiet, weights
from torchguide.build import build_from_checkpoint, build_run
from torchguide.checkpoint import load_checkpoint, restore
from torchguide.config.schema import Ema
from torchguide.ema import ModelEma, better_weights
from torchguide.errors import ConfigError
from torchguide.loop import fit

TINY = ("model.name=simple_cnn", "model.width=8", "data.loader.batch_size=256")  # BatchNorm buffers; 6 steps an epoch


def test_the_average_moves_by_one_minus_decay_and_copies_integer_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, Ema(decay=0.75))
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(4, 3))  # BatchNorm's running stats and batch count move
    ema.update(model, step=2)
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(ema.state_dict()[key], 0.75 * start[key] + 0.25 * value)
        else:
            assert torch.equal(ema.state_dict()[key], value)  # num_batches_tracked
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_decay_schedule() -> None:
    plain, warm = ModelEma(nn.Linear(1, 1), Ema(decay=0.99)), ModelEma(nn.Linear(1, 1), Ema(decay=0.99, warmup=True))
    assert plain.decay_at(1) == warm.decay_at(1) == 0.0  # the first update copies the weights
    assert plain.decay_at(2) == 0.99
    assert warm.decay_at(2) == pytest.approx(1 - 2 ** (-2 / 3))  # timm's warm-up
    assert warm.decay_at(10 ** 6) == 0.99


@pytest.mark.parametrize(("row", "key", "larger", "want"), [
    ({"valid_acc": 0.9, "ema_valid_acc": 0.95}, "valid_acc", True, (0.95, "ema")),
    ({"valid_acc": 0.9, "ema_valid_acc": 0.9}, "valid_acc", True, (0.9, "raw")),  # a tie keeps the raw weights
    ({"valid_loss": 0.5, "ema_valid_loss": 0.4}, "valid_loss", False, (0.4, "ema")),
    ({"train_loss": 0.5, "ema_valid_loss": 0.1}, "train_loss", False, (0.5, "raw")),  # no EMA of that metric
    ({"valid_acc": 0.9, "ema_valid_acc": float("nan")}, "valid_acc", True, (0.9, "raw")),
])
def test_better_weights(row: dict, key: str, larger: bool, want: tuple) -> None:
    assert better_weights(row, key, row[key], larger) == want


def test_config_switch() -> None:
    from tests.test_train import digits_config as make

    assert make(Path("d"), Path("o"), "train.ema=true").train.ema == Ema()
    assert make(Path("d"), Path("o"), "train.ema.decay=0.9").train.ema == Ema(decay=0.9)
    assert "ema" not in make(Path("d"), Path("o")).model_dump()["train"]  # old checkpoints' configs compare equal
    with pytest.raises(ConfigError, match=r"train.ema: give true, or the settings: \{decay: 0.999"):
        make(Path("d"), Path("o"), "train.ema=[0.9]")


def test_best_pt_holds_the_ema_when_it_scores_better(digits_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = digits_config(digits_dir, tmp_path, *TINY, "train.max_steps=3", "train.ema.decay=0.5")
    run = build_run(cfg, new_run_dir(cfg))
    real = loop.validate

    def ema_wins(run_: loop.Run, model: nn.Module, watch: loop.Watch) -> dict:
        result = real(run_, model, watch)
        return {**result, "accuracy": 0.99 if model is run_.ema.module else 0.5}

    monkeypatch.setattr(loop, "validate", ema_wins)
    summary = fit(run, quiet())
    row = run.state.history[-1]
    assert (row["valid_acc"], row["ema_valid_acc"]) == (0.5, 0.99) and row["ema_valid_loss"] > 0
    assert summary["best_weights"] == "ema" and summary["final"]["ema_valid_acc"] == 0.99
    best = load_checkpoint(run.run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    for key, value in run.ema.state_dict().items():
        assert torch.equal(best["model"][key], value) and torch.equal(last["ema"][key], value)
    for key, value in weights(run).items():
        assert torch.equal(best["raw_model"][key], value) and torch.equal(last["model"][key], value)
    _, model, _ = build_from_checkpoint(best)  # eval and predict use the EMA
    assert all(torch.equal(v, run.ema.state_dict()[k]) for k, v in model.state_dict().items())
    resumed = build_run(cfg)
    restore(resumed, best)  # best.pt still resumes the trained weights, with their EMA beside them
    assert all(torch.equal(v, weights(run)[k]) for k, v in weights(resumed).items())
    assert all(torch.equal(v, run.ema.state_dict()[k]) for k, v in resumed.ema.state_dict().items())


def test_resume_mid_epoch_is_exact_with_an_ema(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, *TINY, "train.epochs=2", "train.ema={decay: 0.9, warmup: true}",
                        "train.checkpoint_every.steps=4", "train.keep_last=9")
    run_dir = new_run_dir(cfg)
    straight = build_run(cfg, run_dir)
    fit(straight, quiet())
    payload = load_checkpoint(run_dir / "checkpoints" / "step-00000008.pt")
    assert (payload["state"]["epoch"], payload["state"]["batch"]) == (1, 2)  # 6 batches an epoch
    resumed = build_run(cfg)
    restore(resumed, payload)
    fit(resumed, quiet())
    for mine, theirs in ((resumed.model, straight.model), (resumed.ema.module, straight.ema.module)):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), key
    timing = ("time_s", "samples_per_s", "tokens_per_s")
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in run.state.history] for run in (straight, resumed)]
    assert rows[0] == rows[1] and "ema_valid_acc" in rows[0][-1]


def test_two_processes_average_the_same_weights_as_one(digits_dir: Path, tmp_path: Path) -> None:
    def ema_job(nproc: int) -> dict[str, torch.Tensor]:
        out = tmp_path / str(nproc)
        result = job("train-image", "--config", "configs/image/digits.yaml", *digits_overrides(digits_dir, out),
                     "--nproc", str(nproc), f"data.loader.batch_size={32 // nproc}", "~data.transforms.train",
                     "model.name=my_neural_net", "~model.width", "train.max_steps=4", "train.ema.decay=0.5",
                     "--quiet", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["final"]["ema_valid_acc"] is not None
        return torch.load(out / "digits" / "checkpoints" / "last.pt", weights_only=True)["ema"]

    one, two = ema_job(1), ema_job(2)
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=2e-5)
