"""Figure 7, threads: what guide's thread setting does with loader workers, and on a busy machine.

- workers: with N loader workers, guide sets intra-op threads to cores - N (at least 1)
  so workers and compute do not oversubscribe the cores; against torch's default (one
  thread per core). digits, simple_cnn, batch 32, random augmentation in 2 loader
  workers; images/s of epoch 2 of a real `guide` job each way.
- under load: a digits epoch with guide's defaults while another process keeps every core
  busy with matmuls / the same epoch on the quiet machine. Each side is a whole `guide`
  job (so its choices at start-up see the load), the sides alternate (quiet, loaded,
  loaded, quiet, ...), and the figure is the median of each loaded epoch over its
  neighbouring quiet one. The competing process is started before each loaded job and
  killed after it, whatever happens.

    python benchmarks/threads.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import epoch_rows, interleaved, ratios, summarise, train  # noqa: E402
from torchguide.device import available_cores  # noqa: E402

SPIN = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(1024, 1024)
print("spinning", flush=True)
while True:
    a @ a
"""


@contextlib.contextmanager
def competitor(cores: int) -> Iterator[None]:
    """Another CPU-bound process on every core for the duration of the block, stopped however it ends."""
    process = subprocess.Popen([sys.executable, "-c", SPIN, str(cores)], stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()  # busy from here on
        yield
    finally:
        process.kill()
        process.wait()


def digits_args(tmp: Path, epochs: int) -> list[str]:
    from torchguide.data.sources import write_digits

    if not (tmp / "digits").exists():
        write_digits(tmp / "digits")
    return ["train-image", "--config", "configs/image/digits.yaml", f"data.train.root={tmp}/digits/train",
            "~data.test", f"train.epochs={epochs}"]


def with_workers(tmp: Path, cores: int, quick: bool) -> dict:
    args = [*digits_args(tmp, 2), "data.loader.num_workers=2"]
    tool = [r["samples_per_s"] for r in epoch_rows(train(args, tmp / "auto")[0]) if r["epoch"] > 1]
    default = [r["samples_per_s"] for r in epoch_rows(train([*args, f"train.threads={cores}"], tmp / "default")[0])
               if r["epoch"] > 1]
    value, spread, n = summarise(ratios(tool, default))
    return {"tool": sum(tool) / n, "default": sum(default) / n, "ratio": value, "spread": spread, "repeats": n}


def under_load(tmp: Path, cores: int, quick: bool) -> dict:
    args = [*digits_args(tmp, 1), *(["train.max_steps=5"] if quick else [])]

    def epoch_seconds(out: Path) -> float:
        return epoch_rows(train(args, out)[0])[0]["time_s"]

    def loaded(i: int) -> float:
        with competitor(cores):
            return epoch_seconds(tmp / f"loaded{i}")

    times = interleaved({"quiet": lambda i: epoch_seconds(tmp / f"quiet{i}"), "loaded": loaded},
                        repeats=1 if quick else 2, warmup=0)
    value, spread, n = summarise(ratios(times["loaded"], times["quiet"]))
    return {"quiet_s": sum(times["quiet"]) / n, "loaded_s": sum(times["loaded"]) / n, "ratio": value,
            "spread": spread, "repeats": n}


def measure(quick: bool = False) -> dict:
    cores = available_cores()
    with tempfile.TemporaryDirectory(prefix="guide-bench-threads-") as tmp:
        return {"cores": cores, "workers": with_workers(Path(tmp), cores, quick),
                "load": under_load(Path(tmp), cores, quick)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short jobs, one repeat: proves it runs")
    r = measure(parser.parse_args().quick)
    w, load = r["workers"], r["load"]
    print(f"{r['cores']} cores, 2 workers: guide's threads {w['tool']:,.0f} images/s, torch's default "
          f"{w['default']:,.0f}: x{w['ratio']:.2f} {w['spread']}")
    print(f"under load: epoch {load['loaded_s']:.1f} s / quiet {load['quiet_s']:.1f} s = x{load['ratio']:.2f} "
          f"{load['spread']}")
