"""Figure 5, start-up: `guide --help` (no torch import) and the commands that need torch, against
`python -c "import torch"` in the same run. Fresh processes, one of each command in turn
(benchmarks/common.py); each ratio is against the neighbouring `import torch`.

    python benchmarks/startup.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, interleaved, ratios, summarise  # noqa: E402

GUIDE = [sys.executable, "-m", "cli.main"]
COMMANDS = {"torch": [sys.executable, "-c", "import torch"], "help": [*GUIDE, "--help"],
            "inspect_layer": [*GUIDE, "inspect-layer", "conv2d"], "list": [*GUIDE, "list"]}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(repeats: int = 5) -> dict:
    times = interleaved({name: lambda i, c=command: seconds(c) for name, command in COMMANDS.items()}, repeats)
    help_s, help_spread, n = summarise(times["help"])  # the first round, dropped, warmed the file cache
    result = {"help_s": help_s, "help_spread": help_spread, "repeats": n,
              "import_torch_s": summarise(times["torch"])[0]}
    for name in ("inspect_layer", "list"):
        result[f"{name}_ratio"], result[f"{name}_spread"], _ = summarise(ratios(times[name], times["torch"]))
    return result


if __name__ == "__main__":
    r = measure(2 if "--quick" in sys.argv else 5)
    print(f"guide --help {r['help_s']:.2f} s {r['help_spread']}; import torch {r['import_torch_s']:.2f} s; "
          f"inspect-layer conv2d x{r['inspect_layer_ratio']:.2f} of it, list x{r['list_ratio']:.2f}")
