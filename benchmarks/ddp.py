"""DDP on this machine: throughput with 1 and 2 processes, and what DDP itself costs.

Each configuration trains for a few epochs as a real `guide` job; the figures come from the
epoch rows of metrics.jsonl, skipping the first (warm-up) epoch:

- scaling: images/s (digits, simple_cnn, batch 32 per process) and tokens/s (the guide's
  random sequences, BiLSTM, batch 64 per process) with 2 processes / 1 process. One
  process uses every core for its intra-op threads; 2 processes split them, so on a
  2-core CPU little gain is possible;
- overhead: 2 DDP processes against one process with the same per-process work (the same
  batch and one thread): the time a step spends on gradient all-reduce and rank agreement.

    python benchmarks/ddp.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rate(args: list[str], out: Path, key: str) -> float:
    """Median training rate (`key` of the epoch rows) after the first epoch of one guide job."""
    subprocess.run([sys.executable, "-m", "cli.main", *args, f"output.dir={out}", "--quiet"], cwd=ROOT, check=True,
                   env={**os.environ, "NO_COLOR": "1"})
    (run_dir,) = list(out.iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r[key] for r in rows if r["kind"] == "epoch" and r["epoch"] > 1)


def measure() -> dict[str, dict[str, float]]:
    from torchguide.data.sources import write_digits

    tmp = Path(tempfile.mkdtemp(prefix="guide-bench-ddp-"))
    write_digits(tmp / "digits")
    jobs = {
        "image": (["train-image", "--config", "configs/image/digits.yaml", f"data.train.root={tmp}/digits/train",
                   "~data.test", "train.epochs=4", "data.loader.batch_size=32"], "samples_per_s"),
        "text": (["train-text", "--config", "configs/text/random_sequences.yaml", "train.epochs=3",
                  "data.train.size=768"], "tokens_per_s"),
    }
    results = {}
    for name, (args, key) in jobs.items():
        one = rate(args, tmp / f"{name}-1", key)
        one_thread = rate([*args, "train.threads=1"], tmp / f"{name}-1t", key)
        two = rate([*args, "--nproc", "2"], tmp / f"{name}-2", key)
        results[name] = {"unit": key.removesuffix("_per_s") + "/s", "one_process": one, "two_processes": two,
                         "scaling": two / one, "ddp_step_overhead": (2 * one_thread) / two}
    return results


if __name__ == "__main__":
    for name, r in measure().items():
        print(f"{name}: 1 process {r['one_process']:,.0f} {r['unit']}, 2 processes {r['two_processes']:,.0f} "
              f"(x{r['scaling']:.2f}); DDP step time / single process at equal work {r['ddp_step_overhead']:.2f}")
