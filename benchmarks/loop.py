"""Figure 1, loop overhead: `guide` epoch time / the guide's hand-written loop.

Both sides get identical objects from one config (model at the same initial weights,
loader, loss, optimizer, seed); the hand side runs the guide's loop on them and nothing
else, the tool side runs `fit` with everything on: progress bars (drawn to a terminal
console), metrics files, a checkpoint every epoch (written on a background thread, whose
CPU time counts) and summary.json. `fit` is called once per epoch with `train.epochs`
raised by one, as a resumed run would be, so the tool side also pays for opening and
closing its run files every epoch: more than one `fit` over all epochs would. Threads
are pinned to the cores, as `auto` sets them without loader workers: auto's governor
(torchguide/contention.py) sets the thread count of the whole process, the hand side's too.

The epochs interleave in one process (tool, hand, then hand, tool, ...), and each tool
epoch is divided by its neighbouring hand epoch; the figure is the median of those
ratios, with their range (benchmarks/common.py). The epoch losses must agree to 5
decimals, so dropout is off on both sides: they share the process's random numbers, and
a draw on one side would change the other's. Time is the process's CPU time (all
threads): on a shared machine wall time between identical epochs varies by 5-10%, CPU
time far less.

    python benchmarks/loop.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, interleaved, ratios, summarise  # noqa: E402
from torchguide.build import build_run  # noqa: E402
from torchguide.config import load_config  # noqa: E402
from torchguide.data.sources import write_digits  # noqa: E402
from torchguide.device import available_cores  # noqa: E402
from torchguide.loop import Run, fit  # noqa: E402


def config(task: str, data: Path, out: Path):
    common = [f"output.dir={out}", "train.epochs=1", "train.device=cpu", "train.precision=fp32",
              "train.channels_last=false", "train.compile=false", "data.loader.num_workers=0", "model.dropout=0.0",
              f"train.threads={available_cores()}"]  # what auto picks, without the governor (see above)
    if task == "image":
        return load_config(ROOT / "configs/image/digits.yaml", [*common, f"data.train.root={data}", "~data.valid",
                                                                "~data.test", "~data.transforms.train",
                                                                "scheduler.name=none"])
    return load_config(ROOT / "configs/text/random_sequences.yaml", [*common, "data.train.size=512"])


class Side:
    """One side's run and its epoch losses."""

    def __init__(self, run: Run) -> None:
        self.run, self.losses = run, []

    def epoch(self, index: int, body: Callable[[Run, int], float]) -> float:
        """CPU seconds of one epoch of `body(run, index)`."""
        started = time.process_time()
        self.losses.append(body(self.run, index))
        return time.process_time() - started


def hand_epoch(run: Run, epoch: int) -> float:
    """The guide's loop: forward, loss, backward, step, zero the gradients; returns the epoch's mean loss."""
    model, loss_fn, optimizer, loader = run.model, run.loss_fn, run.optimizer, run.train_loader
    loader.batch_sampler.set_epoch(epoch)
    model.train()
    total, count = torch.zeros((), dtype=torch.float64), 0
    for batch in loader:
        output = model(*batch.inputs)
        loss = loss_fn(output, batch.target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach().double() * len(batch.labels)
        count += len(batch.labels)
    return float(total) / count


def tool_epoch(console: Console, summaries: list[dict]) -> Callable[[Run, int], float]:
    """`fit` for one epoch more (its summary kept in `summaries`); the body returns the epoch's mean loss."""

    def body(run: Run, epoch: int) -> float:
        run.config.train.epochs = epoch + 1  # one more epoch, as `guide train ... --resume` would add
        summaries.append(fit(run, console))
        return next(r["train_loss"] for r in reversed(run.state.history) if r["kind"] == "epoch")
    return body


def measure(task: str, repeats: int = 8) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_digits(tmp / "digits")
        data = tmp / "digits" / "train"
        tool = Side(build_run(config(task, data, tmp), tmp / "run"))
        hand = Side(build_run(config(task, data, tmp)))
        console = Console(file=io.StringIO(), force_terminal=True, width=120)  # bars drawn, as on a terminal
        summaries: list[dict] = []
        times = interleaved({"tool": lambda i: tool.epoch(i, tool_epoch(console, summaries)),
                             "hand": lambda i: hand.epoch(i, hand_epoch)}, repeats)
    same = all(round(a, 5) == round(b, 5) for a, b in zip(tool.losses, hand.losses, strict=True))
    value, spread, n = summarise(ratios(times["tool"], times["hand"]))
    return {"ratio": value, "spread": spread, "repeats": n, "losses_equal": same,
            "tool_s": sum(times["tool"]) / n, "hand_s": sum(times["hand"]) / n,
            "utilisation": summaries[-1].get("utilisation"), "flops_per_s": summaries[-1].get("flops_per_s")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 epochs a side: proves it runs, resolves nothing")
    args = parser.parse_args()
    for task in ("image", "text"):
        r = measure(task, 3 if args.quick else 8)
        print(f"{task}: guide {r['tool_s']:.3f} s / hand loop {r['hand_s']:.3f} s per epoch: median ratio "
              f"{r['ratio']:.3f} [{r['spread'][0]:.3f}, {r['spread'][1]:.3f}] over {r['repeats']} epochs; "
              f"losses equal to 5 decimals: {r['losses_equal']}")
