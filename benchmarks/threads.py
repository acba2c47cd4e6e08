"""Figure 7, threads: with N loader workers, guide sets intra-op threads to cores - N (at least 1) so
workers and compute do not oversubscribe the cores; against torch's default (one thread per core).

digits, simple_cnn, batch 32, random augmentation in 2 loader workers; the median training
images/s of epochs 2-3 of a real `guide` job each way.

    python benchmarks/threads.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ddp import rate  # noqa: E402


def measure() -> dict[str, float]:
    from torchguide.data.sources import write_digits

    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="guide-bench-threads-"))
    write_digits(tmp / "digits")
    args = ["train-image", "--config", "configs/image/digits.yaml", f"data.train.root={tmp}/digits/train",
            "~data.test", "train.epochs=3", "data.loader.num_workers=2"]
    tool = rate(args, tmp / "auto", "samples_per_s")
    default = rate([*args, f"train.threads={cores}"], tmp / "default", "samples_per_s")
    return {"tool": tool, "default": default, "ratio": tool / default, "cores": cores}


if __name__ == "__main__":
    r = measure()
    print(f"{r['cores']} cores, 2 workers: guide's threads {r['tool']:,.0f} images/s, torch's default "
          f"{r['default']:,.0f}: x{r['ratio']:.2f}")
