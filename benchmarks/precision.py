"""Figure 4, `auto` precision, memory layout and compile against plain fp32.

`train.precision`, `train.channels_last` and `train.compile` default to `auto`: before the
first step, copies of the model try the candidates on the first batch and the fastest is
kept (bf16 only when its loss stays close to fp32's). Each figure sets a run or a step
with everything `auto` against the same with fp32, channels_last=false, compile=false.
Measurements are never taken from the cache of an earlier run: every `auto` job gets an
empty GUIDE_CACHE_DIR, so its time includes its own probing.

- (a) reviews: the BiLSTM of configs/text/reviews.yaml, whole `guide` runs (wall time of
  the process, start-up to test evaluation) of 1 of its 6 epochs, to keep `make bench`
  within its time: fp32 time / auto time, and auto's test accuracy minus fp32's, in points;
- (b) a conv net step: simple_cnn on a batch of 64 RGB 64x64 images, in the setting auto
  decides for a run of 1000 steps / fp32, steps interleaved;
- (c) digits, 5 epochs, whole `guide` runs: auto time / fp32 time - 1, the share of the
  run that auto costs or saves.

The targets depend on the CPU: with native bf16 (AVX-512 BF16 or AMX in /proc/cpuinfo)
auto should pick bf16 and win; without it auto keeps fp32 and may lose only its probing.
Whole runs alternate (fp32, auto, then auto, fp32); each ratio is taken against its pair.

    python benchmarks/precision.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, ratios, summarise, train  # noqa: E402
from torchguide import tune  # noqa: E402
from torchguide.config import load_config  # noqa: E402
from torchguide.data.collate import Batch  # noqa: E402
from torchguide.data.sources import write_digits, write_reviews  # noqa: E402
from torchguide.device import available_cores  # noqa: E402
from torchguide.loop import train_step  # noqa: E402
from torchguide.registry import MODELS  # noqa: E402
from torchguide.usercache import CACHE_ENV  # noqa: E402

PLAIN = ["train.precision=fp32", "train.channels_last=false", "train.compile=false"]
AUTO = ["train.precision=auto", "train.channels_last=auto", "train.compile=auto"]
RUN_STEPS = 1000  # the run (b) decides for: long enough for 6 timed probe steps of each of 4 candidates


def paired_runs(args: list[str], tmp: Path, repeats: int) -> dict[str, list[dict]]:
    """Whole guide jobs, plain and auto in turn; each side's list of {"seconds", "summary"}."""
    jobs: dict[str, list[dict]] = {"plain": [], "auto": []}

    def job(side: str, i: int) -> float:
        out = tmp / f"{side}{i}"
        env = {CACHE_ENV: str(tmp / f"cache-{side}{i}")}  # empty: auto measures, as on a first run
        run_dir, seconds = train([*args, *(PLAIN if side == "plain" else AUTO)], out, env)
        jobs[side].append({"seconds": seconds, "summary": json.loads((run_dir / "summary.json").read_text())})
        return seconds

    interleaved({"plain": lambda i: job("plain", i), "auto": lambda i: job("auto", i)}, repeats, warmup=0)
    return jobs


@contextlib.contextmanager
def fresh_cache(path: Path) -> Iterator[None]:
    """Measurements of this process go to an empty cache: auto measures, as on a first run."""
    os.environ[CACHE_ENV] = str(path)
    try:
        yield
    finally:
        del os.environ[CACHE_ENV]


def choices(summary: dict) -> str:
    auto = summary.get("auto", {})
    return ", ".join(f"{key} {value['value']}" for key, value in auto.items())


def reviews(tmp: Path, repeats: int, quick: bool) -> dict:
    write_reviews(tmp / "reviews")
    data = [f"data.{split}.path={tmp}/reviews/{split}.csv" for split in ("train", "valid", "test")]
    args = ["train-text", "--config", "configs/text/reviews.yaml", *data, "train.epochs=1"]
    jobs = paired_runs(args, tmp / "reviews-runs", repeats)
    seconds = {side: [j["seconds"] for j in runs] for side, runs in jobs.items()}
    accuracy = {side: [j["summary"]["test"]["accuracy"] for j in runs] for side, runs in jobs.items()}
    value, spread, n = summarise(ratios(seconds["plain"], seconds["auto"]))
    points = summarise([100 * (a - p) for a, p in zip(accuracy["auto"], accuracy["plain"], strict=True)])
    return {"speedup": value, "spread": spread, "repeats": n, "accuracy_points": points[0],
            "accuracy_spread": points[1], "choices": choices(jobs["auto"][-1]["summary"]),
            "precision": jobs["auto"][-1]["summary"]["auto"]["precision"]["value"]}


def digits(tmp: Path, repeats: int, quick: bool) -> dict:
    write_digits(tmp / "digits")
    args = ["train-image", "--config", "configs/image/digits.yaml", f"data.train.root={tmp}/digits/train",
            f"data.test.root={tmp}/digits/test", f"train.epochs={2 if quick else 5}"]
    jobs = paired_runs(args, tmp / "digits-runs", repeats)
    seconds = {side: [j["seconds"] for j in runs] for side, runs in jobs.items()}
    value, spread, n = summarise([r - 1 for r in ratios(seconds["auto"], seconds["plain"])])
    return {"cost": value, "spread": spread, "repeats": n, "choices": choices(jobs["auto"][-1]["summary"])}


def conv_step(tmp: Path, repeats: int, steps: int = 5) -> dict:
    """simple_cnn on 64 RGB 64x64 images: a step in the setting auto decides / a plain fp32 step."""
    torch.manual_seed(0)
    model = MODELS.build("simple_cnn", num_classes=10, in_channels=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.randint(0, 10, (64,))
    batch = Batch((torch.randn(64, 3, 64, 64),), labels, labels)
    config = load_config(None, raw={"name": "bench", "model": {"name": "simple_cnn"},
                                    "data": {"train": {"name": "image_folder", "root": str(tmp)}},
                                    "train": {"precision": "auto", "channels_last": "auto", "compile": "auto"}})
    picked = tune.decide(config, model, loss_fn, optimizer, batch, torch.device("cpu"), available_cores(), RUN_STEPS)
    chosen = tune.Setting(picked["precision"].value, picked["channels_last"].value, picked["compile"].value)
    copies = {name: tune.prepared(model, optimizer, setting)
              for name, setting in (("plain", tune.Setting("fp32")), ("auto", chosen))}
    precision = {"plain": "fp32", "auto": chosen.precision}

    def seconds(name: str) -> float:
        net, opt, scaler = copies[name]
        started = time.perf_counter()
        for _ in range(steps):
            train_step(net, batch, loss_fn, opt, scaler, precision[name])
        return (time.perf_counter() - started) / steps

    times = interleaved({name: lambda i, name=name: seconds(name) for name in copies}, repeats)
    value, spread, n = summarise(ratios(times["plain"], times["auto"]))
    return {"speedup": value, "spread": spread, "repeats": n, "choices": chosen.name(),
            "plain_step_ms": 1000 * sum(times["plain"]) / n}


def measure(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="guide-bench-precision-") as tmp:
        tmp = Path(tmp)
        with fresh_cache(tmp / "cache-conv"):
            step = conv_step(tmp, 2 if quick else 6)
        return {"reviews": reviews(tmp, 1, quick), "conv_step": step, "digits": digits(tmp, 1 if quick else 2, quick)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one short run a side: proves it runs")
    r = measure(parser.parse_args().quick)
    a, b, c = r["reviews"], r["conv_step"], r["digits"]
    print(f"(a) reviews, whole run: fp32 / auto time x{a['speedup']:.2f} {a['spread']}, test accuracy "
          f"{a['accuracy_points']:+.2f} points; auto chose {a['choices']}")
    print(f"(b) conv step: fp32 {b['plain_step_ms']:.1f} ms, / auto ({b['choices']}) x{b['speedup']:.2f} "
          f"{b['spread']}")
    print(f"(c) digits 5 epochs: auto costs {c['cost']:+.1%} {c['spread']} of the fp32 run; auto chose "
          f"{c['choices']}")
