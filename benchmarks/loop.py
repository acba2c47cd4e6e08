"""Figure 1, loop overhead: `guide` epoch time / the guide's hand-written loop.

Both sides get identical objects from one config (model at the same initial weights,
loader, loss, optimizer, seed); the hand side runs the guide's loop on them and nothing
else, the tool side runs `fit` with everything on: progress bars (drawn to a terminal
console), metrics, checkpoints (written on a background thread, whose CPU time counts).
Runs alternate after a warm-up of each, and the medians are compared; the epoch losses
must agree to 5 decimals. Time is the process's CPU time (all threads): on a shared
machine wall time between identical runs varies by 5-10%, CPU time far less.

    python benchmarks/loop.py
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torchguide.build import build_run  # noqa: E402
from torchguide.config import load_config  # noqa: E402
from torchguide.data.sources import write_digits  # noqa: E402
from torchguide.loop import fit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def config(task: str, data: Path, out: Path, epochs: int):
    common = [f"output.dir={out}", f"train.epochs={epochs}", "train.precision=fp32", "train.device=cpu",
              "data.loader.num_workers=0"]
    if task == "image":
        return load_config(ROOT / "configs/image/digits.yaml", [*common, f"data.train.root={data}", "~data.valid",
                                                                "~data.test", "~data.transforms.train",
                                                                "scheduler.name=none"])
    return load_config(ROOT / "configs/text/random_sequences.yaml", [*common, "data.train.size=512"])


def hand(run, epochs: int) -> tuple[float, list[float]]:
    """The guide's loop: forward, loss, backward, step, zero the gradients."""
    model, loss_fn, optimizer, loader = run.model, run.loss_fn, run.optimizer, run.train_loader
    losses = []
    started = time.process_time()
    for epoch in range(epochs):
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
        losses.append(float(total) / count)
    return time.process_time() - started, losses


def tool(run) -> tuple[float, list[float], dict]:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)  # progress bars drawn, as on a terminal
    started = time.process_time()
    summary = fit(run, console)
    elapsed = time.process_time() - started
    return elapsed, [r["train_loss"] for r in run.state.history if r["kind"] == "epoch"], summary


def measure(task: str, repeats: int = 3, epochs: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_digits(tmp / "digits")
        data = tmp / "digits" / "train"
        torch.set_num_threads(2)
        tool(build_run(config(task, data, tmp / "warm", 1), tmp / "warm" / "run"))
        hand(build_run(config(task, data, tmp / "warm", 1)), 1)
        tool_s, hand_s, same, summary = [], [], True, {}
        for i in range(repeats):
            seconds, tool_losses, summary = tool(build_run(config(task, data, tmp, epochs), tmp / f"run{i}"))
            tool_s.append(seconds)
            seconds, hand_losses = hand(build_run(config(task, data, tmp, epochs)), epochs)
            hand_s.append(seconds)
            same &= all(round(a, 5) == round(b, 5) for a, b in zip(tool_losses, hand_losses, strict=True))
    return {"ratio": statistics.median(tool_s) / statistics.median(hand_s), "losses_equal": same,
            "tool_s": statistics.median(tool_s), "hand_s": statistics.median(hand_s),
            "utilisation": summary.get("utilisation"), "flops_per_s": summary.get("flops_per_s")}


if __name__ == "__main__":
    for task in ("image", "text"):
        r = measure(task)
        print(f"{task}: guide {r['tool_s']:.2f} s / hand loop {r['hand_s']:.2f} s = {r['ratio']:.3f}; "
              f"losses equal to 5 decimals: {r['losses_equal']}")
