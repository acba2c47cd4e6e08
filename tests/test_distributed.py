"""DDP on the CPU with gloo: sharded samplers, 1 vs 2 processes, checkpoints across world sizes, failures.

The multi-process tests run real jobs: `guide ... --nproc 2` (torch.distributed.run started
by guide) and an external `python -m torch.distributed.run` (torchrun) around tests/crash.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides, reviews_overrides
from tests.test_resume import assert_same_run, text_args
from torchguide import distributed
from torchguide.data.samplers import length_buckets, random, sequential, sorted_batches

LENGTHS = [int(x) for x in torch.randint(5, 300, (1003,), generator=torch.Generator().manual_seed(0))]


# ---------------------------------------------------------------- samplers

@pytest.mark.parametrize("make", [random, length_buckets, sorted_batches, sequential])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_cover_every_sample_once_and_match_one_process(make, world: int) -> None:
    single = make(LENGTHS, batch_size=16 * world, seed=3)
    single.set_epoch(2)
    shards = []
    for rank in range(world):
        sampler = make(LENGTHS, batch_size=16, seed=3, rank=rank, world_size=world)
        sampler.set_epoch(2)
        shards.append(sampler.batches())
        assert sampler.global_sizes() == [len(b) for b in single.batches()]
    assert len({len(s) for s in shards}) == 1  # the same number of batches on every rank: no rank waits
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(len(LENGTHS)))
    for k, batch in enumerate(single.batches()):  # N ranks at batch b = one process at batch N*b
        assert [i for shard in shards for i in shard[k]] == batch
        assert all(shard[k] for shard in shards)


def test_bucket_shards_stay_tight() -> None:
    for rank in range(2):
        sampler = length_buckets(LENGTHS, batch_size=16, seed=1, rank=rank, world_size=2)
        sampler.set_epoch(0)
        padded = sum(max(LENGTHS[i] for i in b) * len(b) for b in sampler.batches())
        assert 1 - sum(LENGTHS[i] for b in sampler.batches() for i in b) / padded < 0.05


# ---------------------------------------------------------------- real jobs

def job(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})}, timeout=timeout)


def epoch_rows(out: Path) -> list[dict]:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "epoch"]


def image_job(digits_dir: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    """The guide's first network (no batch norm, no dropout) at a global batch of 32."""
    return job("train-image", "--config", "configs/image/digits.yaml", *digits_overrides(digits_dir, out),
               "--nproc", str(nproc), f"data.loader.batch_size={32 // nproc}", "~data.transforms.train",
               "model.name=my_neural_net", "~model.width", "train.epochs=2", "--json")


def test_two_processes_match_one_at_the_same_global_batch(digits_dir: Path, tmp_path: Path) -> None:
    one, two = image_job(digits_dir, tmp_path / "one", 1), image_job(digits_dir, tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "DistributedDataParallel over 2 processes (gloo), global batch 32" in two.stderr
    assert len(two.stdout.splitlines()) == 1  # rank 0 alone prints the summary
    a = torch.load(next((tmp_path / "one").iterdir()) / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(next((tmp_path / "two").iterdir()) / "checkpoints" / "last.pt", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=2e-5)
    for r1, r2 in zip(epoch_rows(tmp_path / "one"), epoch_rows(tmp_path / "two"), strict=True):
        assert r1["valid_acc"] == r2["valid_acc"]  # every validation sample counted once
        assert r1["valid_loss"] == pytest.approx(r2["valid_loss"], rel=1e-5)
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-5)
    assert json.loads(one.stdout)["test"]["accuracy"] == json.loads(two.stdout)["test"]["accuracy"]

    # the DDP checkpoint evaluates in one process, on the whole validation split
    last = next((tmp_path / "two").iterdir()) / "checkpoints" / "last.pt"
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(last), "--split", "valid", "--json"])
    assert result.exit_code == 0, result.output
    metrics, final = json.loads(result.stdout), epoch_rows(tmp_path / "two")[-1]
    assert metrics["samples"] == 143 and metrics["accuracy"] == final["valid_acc"]
    assert metrics["loss"] == pytest.approx(final["valid_loss"], rel=1e-5)


def test_a_killed_rank_ends_the_job_and_the_run_resumes_exactly_in_two(reviews_dir: Path, tmp_path: Path) -> None:
    half = "data.loader.batch_size=16"  # x 2 processes: 8 steps an epoch, a checkpoint every 3
    reference = job(*text_args(reviews_dir, tmp_path / "reference"), half, "--nproc", "2")
    assert reference.returncode == 0, reference.stderr
    args = [*text_args(reviews_dir, tmp_path / "killed"), half]
    killed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             "tests/crash.py", "step", "5", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "NO_COLOR": "1", "CRASH_RANK": "1"}, timeout=240)
    assert killed.returncode != 0  # the job ends (within the timeout): nobody waits for the dead rank
    assert f"exitcode  : -{signal.SIGKILL}" in killed.stderr  # torchrun names the rank that died
    assert killed.stderr.count("Traceback") <= 1  # torchrun's own report; the surviving rank prints no traceback
    resumed = job(*args, "--nproc", "2", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "batch 3" in resumed.stderr  # mid-epoch, from step 3
    assert_same_run(tmp_path / "killed", tmp_path / "reference")


def test_a_rank_failing_on_bad_data_is_one_clear_error(reviews_dir: Path, tmp_path: Path) -> None:
    result = job(*reviews_overrides_for(reviews_dir, tmp_path), f"data.valid.path={tmp_path / 'gone.csv'}",
                 "--nproc", "2")
    assert result.returncode == 2
    assert "gone.csv does not exist" in result.stderr and "[rank " in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: rank ")
    assert "Traceback" not in result.stderr


def reviews_overrides_for(reviews_dir: Path, out: Path) -> list[str]:
    return ["train-text", "--config", "configs/text/reviews.yaml", *reviews_overrides(reviews_dir, out),
            "train.max_steps=2", "--quiet"]


def test_relaunch_starts_torchrun_and_its_ranks_read_the_process_count(monkeypatch) -> None:
    monkeypatch.setenv(distributed.NPROC_ENV, "")  # restored after the test, like OMP_NUM_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert distributed.relaunched_nproc() is None
    started = []
    monkeypatch.setattr("torch.distributed.run.run", started.append)
    distributed.relaunch(3, ["train-text", "--config", "x.yaml", "--quiet"])
    assert distributed.relaunched_nproc() == 3
    (args,) = started
    assert (args.nproc_per_node, args.module, args.training_script) == ("3", True, "cli.main")
    assert args.training_script_args == ["train-text", "--config", "x.yaml", "--quiet"]


def test_bad_config_is_reported_once_before_any_process_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train-image", "--config", "configs/image/digits.yaml", "--nproc", "2",
                                      "train.epochs=0"])
    assert result.exit_code == 2 and result.stderr.count("error:") == 1 and "train.epochs" in result.stderr
    result = CliRunner().invoke(app, ["train-image", "--config", "configs/image/digits.yaml", "--nproc", "2",
                                      "train.strategy=dp"])
    assert result.exit_code == 2 and "train.strategy: dp cannot run in --nproc 2 processes" in result.stderr
