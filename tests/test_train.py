"""The loop: accumulation, clipping, early stopping, determinism, checkpoints, resume."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console

from torchguide import rundir
from torchguide.build import build_run, resolve_target
from torchguide.checkpoint import check_payload, load_checkpoint, restore
from torchguide.config import load_config
from torchguide.errors import CheckpointError, ConfigError, DataError, RunFailed
from torchguide.loop import fit
from torchguide.metrics import Meter


def digits_config(digits_dir: Path, out: Path, *overrides: str):
    raw = {"name": "t", "data": {"train": {"name": "image_folder", "root": str(digits_dir / "train")},
                                 "valid": {"split": 0.1}},
           "model": {"name": "my_neural_net"}, "output": {"dir": str(out)}, "train": {"device": "cpu"}}
    return load_config(None, list(overrides), raw=raw)


def new_run_dir(config) -> Path:
    """A new run directory, as `guide train-*` makes it (the lock let go: nothing else runs here)."""
    path, lock = rundir.new_run_dir(Path(config.output.dir), config.name)
    lock.release()
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def train(config, run_dir: Path | None = None):
    run = build_run(config, run_dir)
    summary = fit(run, quiet())
    return run, summary


def weights(run) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def test_accumulation_equals_a_larger_batch(digits_dir: Path, tmp_path: Path) -> None:
    common = ("train.epochs=1", "train.max_steps=5", "optimizer.name=sgd", "optimizer.lr=0.1",
              )
    big, _ = train(digits_config(digits_dir, tmp_path, *common, "data.loader.batch_size=32"))
    small, _ = train(digits_config(digits_dir, tmp_path, *common, "data.loader.batch_size=8",
                                   "train.accumulate=4"))
    for key, value in weights(big).items():
        torch.testing.assert_close(weights(small)[key], value, atol=1e-5, rtol=1e-4)
    assert small.state.step == big.state.step == 5


def test_grad_clip_bounds_the_update(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.max_steps=1", "optimizer.name=sgd", "optimizer.lr=1.0",
                        "train.grad_clip=0.01")
    run = build_run(cfg)
    before = torch.cat([p.detach().flatten().clone() for p in run.model.parameters()])
    fit(run, quiet())
    after = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    assert (after - before).norm() == pytest.approx(0.01, rel=1e-3)  # lr 1 x clipped norm 0.01


def test_early_stopping(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.epochs=20", "optimizer.lr=1e-9", "train.monitor=valid_loss",
                        "train.early_stopping.patience=1", "train.early_stopping.min_delta=0.1")
    run, summary = train(cfg)
    assert summary["stopped_early"] and summary["epochs"] == 2


def test_same_seed_same_metrics_bit_for_bit(digits_dir: Path, tmp_path: Path) -> None:
    a, sa = train(digits_config(digits_dir, tmp_path, "train.epochs=2", "model.name=simple_cnn"))
    b, sb = train(digits_config(digits_dir, tmp_path, "train.epochs=2", "model.name=simple_cnn"))
    assert sa["final"] == sb["final"]
    assert all(torch.equal(weights(a)[k], v) for k, v in weights(b).items())
    c, sc = train(digits_config(digits_dir, tmp_path, "train.epochs=2", "model.name=simple_cnn", "seed=1"))
    assert sc["final"] != sa["final"]


def test_run_directory_and_checkpoint_round_trip(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.epochs=2", "train.log_every=10")
    run_dir = new_run_dir(cfg)
    run, summary = train(cfg, run_dir)
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert payload["classes"] == [str(i) for i in range(10)] and payload["state"]["epoch"] == 2
    for key, value in payload["model"].items():
        assert torch.equal(value, run.model.state_dict()[key])
    assert new_run_dir(cfg).name == "t-2"  # an earlier run is never overwritten


def test_resume_continues_to_the_same_weights(digits_dir: Path, tmp_path: Path) -> None:
    straight, _ = train(digits_config(digits_dir, tmp_path, "train.epochs=3", "model.name=simple_cnn"))
    cfg = digits_config(digits_dir, tmp_path / "b", "train.epochs=2", "model.name=simple_cnn")
    run_dir = new_run_dir(cfg)
    train(cfg, run_dir)
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    resumed = build_run(digits_config(digits_dir, tmp_path / "b", "train.epochs=3", "model.name=simple_cnn"),
                        run_dir)
    changes = restore(resumed, payload)
    assert changes == ["train.epochs (2 -> 3) changed"]
    fit(resumed, quiet())
    assert resumed.state.epoch == 3
    for key, value in weights(straight).items():
        assert torch.equal(weights(resumed)[key], value), key
    epochs = [r["epoch"] for r in resumed.state.history if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3]



@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_is_exact_with_mixup_and_cutmix(digits_dir: Path, tmp_path: Path, workers: int) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.epochs=2", "data.loader.batch_size=128",
                        f"data.loader.num_workers={workers}",
                        "data.transforms.train=[{name: random_rotation, degrees: 10}]",
                        "data.batch_transforms=[{name: mix_up, alpha: 0.4, p: 0.4}, {name: cut_mix, p: 0.4}]",
                        "train.checkpoint_every.steps=4", "train.keep_last=9")
    run_dir = new_run_dir(cfg)
    straight, _ = train(cfg, run_dir)
    payload = load_checkpoint(run_dir / "checkpoints" / "step-00000016.pt")
    assert (payload["state"]["epoch"], payload["state"]["batch"]) == (1, 5)  # 11 batches an epoch
    resumed = build_run(cfg)
    restore(resumed, payload)
    fit(resumed, quiet())
    for key, value in weights(straight).items():
        assert torch.equal(weights(resumed)[key], value), key
    timing = ("time_s", "samples_per_s", "tokens_per_s")
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in run.state.history] for run in (straight, resumed)]
    assert rows[0] == rows[1]


TRANSFER = ("model.name=simple_cnn", "model.width=8", "model.freeze=[features.0.*]", "optimizer.name=adamw",
            "optimizer.groups=[{params: head.*, lr: 1.0e-2}]", "optimizer.no_decay_norm_bias=true",
            "scheduler.name=step", "scheduler.step_size=1", "data.loader.batch_size=128")  # length-independent


def test_frozen_layers_stay_and_grouped_resume_is_exact(digits_dir: Path, tmp_path: Path) -> None:
    straight, _ = train(digits_config(digits_dir, tmp_path, "train.epochs=2", *TRANSFER))
    start = build_run(digits_config(digits_dir, tmp_path, "train.epochs=2", *TRANSFER)).model.state_dict()
    for key in ("features.0.0.weight", "features.0.1.running_mean"):  # frozen conv and its BatchNorm
        assert torch.equal(weights(straight)[key], start[key])
    assert [len(g["params"]) for g in straight.optimizer.param_groups] == [3, 6, 1, 1]
    cfg = digits_config(digits_dir, tmp_path / "b", "train.epochs=1", *TRANSFER)
    run_dir = new_run_dir(cfg)
    train(cfg, run_dir)
    resumed = build_run(digits_config(digits_dir, tmp_path / "b", "train.epochs=2", *TRANSFER), run_dir)
    restore(resumed, load_checkpoint(run_dir / "checkpoints" / "last.pt"))
    fit(resumed, quiet())
    for key, value in weights(straight).items():
        assert torch.equal(weights(resumed)[key], value), key


def test_resume_refuses_a_different_model(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.max_steps=1")
    run_dir = new_run_dir(cfg)
    train(cfg, run_dir)
    other = build_run(digits_config(digits_dir, tmp_path, "model.hidden=12"))
    with pytest.raises(CheckpointError, match=r"model.hidden \(None -> 12\) differs"):
        restore(other, load_checkpoint(run_dir / "checkpoints" / "last.pt"))


def test_divergence_stops_with_a_hint(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "optimizer.lr=1e30", "optimizer.name=sgd")
    with pytest.raises(RunFailed, match="NaN/inf at step") as info:
        train(cfg)
    assert "lower optimizer.lr (now 1e+30)" in info.value.lines()[0]


def test_on_nan_skip_keeps_going(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.max_steps=3", "train.on_nan=skip")
    run = build_run(cfg)
    real = run.loss_fn
    calls = {"n": 0}

    def flaky(output, target):
        calls["n"] += 1
        return real(output, target) * (float("nan") if calls["n"] == 2 else 1.0)

    run.loss_fn = flaky
    fit(run, quiet())
    assert run.state.step == 3 and calls["n"] >= 4


def test_bf16_autocast_trains_on_cpu(digits_dir: Path, tmp_path: Path) -> None:
    run, summary = train(digits_config(digits_dir, tmp_path, "train.max_steps=3", "train.precision=bf16",
                                       "model.name=simple_cnn"))
    assert summary["precision"] == "bf16" and summary["steps"] == 3


def test_a_failed_checkpoint_write_keeps_the_previous_one(digits_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import torchguide.files as files

    cfg = digits_config(digits_dir, tmp_path, "train.checkpoint_every.steps=1", "train.max_steps=5")
    run = build_run(cfg, new_run_dir(cfg))
    real_fsync, calls = files.os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}"):  # the temporary file of a checkpoint
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(RunFailed, match="no space left on .*last.pt") as info:
        fit(run, quiet())
    assert "the previous checkpoint is intact" in info.value.lines()[0]
    checkpoints = run.run_dir / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["state"]["step"] == 2
    assert not list(checkpoints.glob(".*.tmp"))


def test_divergence_keeps_the_last_good_checkpoint(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path, "train.checkpoint_every.steps=1")
    run = build_run(cfg, new_run_dir(cfg))
    real, calls = run.loss_fn, {"n": 0}

    def explodes(output, target):
        calls["n"] += 1
        return real(output, target) * (float("inf") if calls["n"] == 4 else 1.0)

    run.loss_fn = explodes
    with pytest.raises(RunFailed, match="NaN/inf at step 3, batch 4 of epoch 1") as info:
        fit(run, quiet())
    assert f"the last good checkpoint is kept: {run.run_dir / 'checkpoints' / 'last.pt'}" in info.value.lines()[0]
    assert "fp32" not in info.value.lines()[0]  # the run is fp32 already
    payload = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    assert payload["state"]["step"] == 3
    assert all(torch.isfinite(v).all() for v in payload["model"].values())


def test_divergence_before_any_checkpoint_promises_none(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_config(digits_dir, tmp_path)
    run = build_run(cfg, new_run_dir(cfg))
    run.loss_fn = lambda output, target: output.sum() * float("nan")
    with pytest.raises(RunFailed, match="NaN/inf at step 0, batch 1 of epoch 1") as info:
        fit(run, quiet())
    assert "checkpoint" not in info.value.lines()[0]
    assert not (run.run_dir / "checkpoints" / "last.pt").exists()


def test_resume_refuses_a_changed_vocabulary(reviews_dir: Path, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import ROOT, reviews_overrides

    train_csv = tmp_path / "train.csv"
    shutil.copy(reviews_dir / "train.csv", train_csv)
    overrides = [*reviews_overrides(reviews_dir, tmp_path), f"data.train.path={train_csv}", "train.max_steps=1"]
    cfg = load_config(ROOT / "configs/text/reviews.yaml", overrides, task="text")
    run, _ = train(cfg, new_run_dir(cfg))
    with train_csv.open("a") as f:
        f.write("zebra zebra quagga,fresh\nzebra quagga quagga,rotten\n")
    changed = build_run(load_config(ROOT / "configs/text/reviews.yaml", overrides, task="text"))
    with pytest.raises(CheckpointError, match="vocabulary .* differs"):
        restore(changed, load_checkpoint(run.run_dir / "checkpoints" / "last.pt"))


# ---------------------------------------------------------------- targets and running metrics

@pytest.mark.parametrize(("loss", "classes", "target", "outputs"), [
    ("cross_entropy", 10, "index", 10),
    ("nll", 2, "index", 2),  # two classes, two log-probabilities
    ("mse", 3, "onehot", 3),
    ("bce_with_logits", 2, "binary", 1),  # two classes: one logit
    ("bce", 2, "binary", 1),
    ("bce_with_logits", 5, "onehot", 5),  # more: one independent logit per class
    ("soft_margin", 2, "binary_signed", 1),
    ("ctc", 4, "index", 4),  # no encoding registered: class indices
])
def test_resolve_target(loss: str, classes: int, target: str, outputs: int) -> None:
    assert resolve_target(loss, classes) == (target, outputs)


def test_a_two_class_loss_is_refused_for_more_classes() -> None:
    with pytest.raises(ConfigError, match="soft_margin is for two classes, the data has 3"):
        resolve_target("soft_margin", 3)


def test_meter_summarize_turns_sums_into_means() -> None:
    # 4 samples with a summed loss of 6.0, 3 right; 30 real tokens in 40 padded places
    assert Meter.summarize(6.0, 3, 4, 30, 40) == {"loss": 1.5, "acc": 0.75, "padding": 0.25}
    assert Meter.summarize(6.0, 3, 4, 0, 0)["padding"] is None  # not a text run
    assert Meter.summarize(0.0, 0, 0, 0, 0) == {"loss": 0.0, "acc": 0.0, "padding": None}  # no samples yet


# ---------------------------------------------------------------- checked before the first step

def test_the_test_split_is_checked_before_training(digits_dir: Path, tmp_path: Path) -> None:
    missing = digits_config(digits_dir, tmp_path, f"data.test={{name: image_folder, root: {tmp_path / 'gone'}}}")
    with pytest.raises(DataError, match="^data.test.root: image folder"):
        build_run(missing)
    for label in ("3", "zebra"):
        (tmp_path / "zebra" / label).mkdir(parents=True)
        for source in sorted((digits_dir / "test" / "3").iterdir())[:2]:
            (tmp_path / "zebra" / label / source.name).write_bytes(source.read_bytes())
    unknown = digits_config(digits_dir, tmp_path, f"data.test={{name: image_folder, root: {tmp_path / 'zebra'}}}")
    with pytest.raises(DataError, match="does not know: zebra"):
        build_run(unknown)


@pytest.mark.parametrize(("weights", "message"), [
    ([1.0, 2.0, 3.0], "loss.weight: 3 value\\(s\\), but the data has 10 classes"),
    ([1.0] * 11, "loss.weight: 11 value"),
])
def test_loss_weights_must_match_the_classes(digits_dir: Path, tmp_path: Path, weights: list[float],
                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_run(digits_config(digits_dir, tmp_path, f"loss.weight={weights}"))


def test_checkpoints_missing_entries_are_named() -> None:
    whole = {"task": "image", "config": {}, "classes": ["a"], "model": {},
             "facts": {"vocab_size": None, "in_channels": 1, "in_features": 4}}
    check_payload(whole, "x.pt")
    cases = [({k: v for k, v in whole.items() if k != "facts"}, r"\(it lacks facts\)"),
             ({"format": "torchguide-checkpoint/1"}, "it lacks task, config, classes, facts, model"),
             ({**whole, "config": "digits"}, r"\(config is a str, not a dict\)"),
             ({**whole, "facts": {"in_channels": 1}}, "it lacks facts.vocab_size, facts.in_features")]
    for payload, message in cases:
        with pytest.raises(CheckpointError, match=message):
            check_payload(payload, "x.pt")


def test_only_regular_files_load_as_checkpoints(tmp_path: Path) -> None:
    import os

    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.pt")
        with pytest.raises(CheckpointError, match="named pipe"):
            load_checkpoint(tmp_path / "pipe.pt")  # refused without opening it, so it cannot block
    with pytest.raises(CheckpointError, match="character device"):
        load_checkpoint(os.devnull)


def test_a_foreign_pickle_is_refused_without_torchs_warning(tmp_path: Path) -> None:
    import pickle
    import warnings

    (tmp_path / "p.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would raise here instead of the CheckpointError
        with pytest.raises(CheckpointError, match="not a checkpoint"):
            load_checkpoint(tmp_path / "p.pt")
