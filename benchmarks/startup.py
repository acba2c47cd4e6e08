"""Figure 5, start-up: `guide --help` (no torch import) and the commands that need torch, against
`python -c "import torch"` in the same run. Medians of several fresh processes.

    python benchmarks/startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = [sys.executable, "-m", "cli.main"]


def seconds(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure() -> dict[str, float]:
    seconds([sys.executable, "-c", "import torch"], 1)  # warm the file cache
    torch_s = seconds([sys.executable, "-c", "import torch"])
    return {"help_s": seconds([*GUIDE, "--help"]), "import_torch_s": torch_s,
            "inspect_layer_ratio": seconds([*GUIDE, "inspect-layer", "conv2d"]) / torch_s,
            "list_ratio": seconds([*GUIDE, "list"]) / torch_s}


if __name__ == "__main__":
    r = measure()
    print(f"guide --help {r['help_s']:.2f} s; import torch {r['import_torch_s']:.2f} s; inspect-layer conv2d "
          f"x{r['inspect_layer_ratio']:.2f} of it, list x{r['list_ratio']:.2f}")
