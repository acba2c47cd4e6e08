"""DDP on this machine: throughput with 1 and 2 processes at equal global batch, and what DDP itself costs.

Each configuration trains for a few epochs as a real `guide` job; the figures come from the
epoch rows of metrics.jsonl, skipping the first (warm-up) epoch, and set epoch k of one
job against epoch k of the other (value: the median of those ratios; spread: their range):

- scaling: images/s (digits, simple_cnn) and tokens/s (the guide's random sequences,
  BiLSTM) with 2 processes of batch 32 / 1 process of batch 64: the same global batch, so
  the same optimisation, split in two. One process uses every core for its intra-op
  threads; 2 processes split them, so on a 2-core CPU little gain is possible;
- overhead: 2 DDP processes against one process with the same per-process work (batch 32
  and one thread): the time a step spends on gradient all-reduce and rank agreement.

    python benchmarks/ddp.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import epoch_rows, ratios, summarise, train  # noqa: E402
from torchguide.data.sources import write_digits  # noqa: E402

PER_PROCESS = 32


def rates(args: list[str], out: Path, key: str) -> list[float]:
    """The training rate (`key` of the epoch rows) of each epoch after the first of one guide job."""
    run_dir, _ = train(args, out)
    return [r[key] for r in epoch_rows(run_dir) if r["epoch"] > 1]


def jobs(tmp: Path, quick: bool) -> dict[str, tuple[list[str], str]]:
    """Each task's guide command and the rate its epoch rows give."""
    write_digits(tmp / "digits")
    epochs = 2
    return {
        "image": (["train-image", "--config", "configs/image/digits.yaml", f"data.train.root={tmp}/digits/train",
                   "~data.test", f"train.epochs={epochs}"], "samples_per_s"),
        "text": (["train-text", "--config", "configs/text/random_sequences.yaml", f"train.epochs={epochs}",
                  f"data.train.size={256 if quick else 384}"], "tokens_per_s"),
    }


def measure(quick: bool = False, overhead: bool = True) -> dict[str, dict]:
    """Scaling for each task, and with `overhead` what DDP itself costs (one job more a task)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="guide-bench-ddp-") as tmp:
        tmp = Path(tmp)
        for name, (args, key) in jobs(tmp, quick).items():
            one = rates([*args, f"data.loader.batch_size={2 * PER_PROCESS}"], tmp / f"{name}-1", key)
            two = rates([*args, f"data.loader.batch_size={PER_PROCESS}", "--nproc", "2"], tmp / f"{name}-2", key)
            results[name] = {"unit": key.removesuffix("_per_s") + "/s", "one_process": sum(one) / len(one),
                             "two_processes": sum(two) / len(two), "scaling": summarise(ratios(two, one))}
            if overhead:
                one_thread = rates([*args, f"data.loader.batch_size={PER_PROCESS}", "train.threads=1"],
                                   tmp / f"{name}-1t", key)
                results[name]["ddp_step_overhead"] = summarise(ratios([2 * r for r in one_thread], two))
    return results

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 epochs of small jobs: proves it runs")
    for name, r in measure(parser.parse_args().quick).items():
        print(f"{name}: 1 process {r['one_process']:,.0f} {r['unit']}, 2 processes {r['two_processes']:,.0f} "
              f"(x{r['scaling'][0]:.2f} {r['scaling'][1]}); DDP step time / single process at equal work "
              f"{r['ddp_step_overhead'][0]:.2f} {r['ddp_step_overhead'][1]}")
