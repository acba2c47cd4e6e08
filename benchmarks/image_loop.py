"""`guide train-image` throughput against the guide's hand-written loop, same model, data, batch.

Both read the digits ImageFolder from disk with a DataLoader, batch 32, simple_cnn, Adam,
fp32, and run whole epochs; the tool's side includes its progress, metrics, validation
off and checkpoints. After one warm-up run of each, runs alternate (tool, hand, tool, hand ...) and the median of each
is compared, so a noisy machine affects both alike.

    python benchmarks/image_loop.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torchguide.config import load_config  # noqa: E402
from torchguide.data.sources import write_digits  # noqa: E402
from torchguide.registry import MODELS  # noqa: E402
from torchguide.train import build_run, fit  # noqa: E402


def hand_loop(root: Path, epochs: int) -> float:
    """The guide's loop, written out; returns images per second."""
    torch.manual_seed(0)
    to_tensor = v2.Compose([v2.Grayscale(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    data = datasets.ImageFolder(str(root), transform=to_tensor)
    loader = DataLoader(data, batch_size=32, shuffle=True)
    model = MODELS.build("simple_cnn", num_classes=10, in_channels=1)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


def tool_loop(root: Path, epochs: int, out: Path) -> float:
    raw = {"name": "bench", "data": {"train": {"name": "image_folder", "root": str(root)},
                                     "loader": {"batch_size": 32, "num_workers": 0}},
           "model": {"name": "simple_cnn"}, "train": {"epochs": epochs, "precision": "fp32", "device": "cpu"},
           "output": {"dir": str(out)}}
    config = load_config(None, raw=raw)
    run = build_run(config, out)
    start = time.perf_counter()
    summary = fit(run, Console(file=io.StringIO()))
    elapsed = time.perf_counter() - start
    return summary["epochs"] * len(run.data.splits["train"]) / elapsed


def measure(repeats: int = 3, epochs: int = 2) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        write_digits(Path(tmp) / "digits")
        root = Path(tmp) / "digits" / "train"
        tool_loop(root, 1, Path(tmp) / "warmup")  # first use pays imports and registry loading
        hand_loop(root, 1)
        tool, hand = [], []
        for i in range(repeats):
            tool.append(tool_loop(root, epochs, Path(tmp) / f"run{i}"))
            hand.append(hand_loop(root, epochs))
    return {"tool_images_per_s": statistics.median(tool), "hand_images_per_s": statistics.median(hand),
            "ratio": statistics.median(tool) / statistics.median(hand)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    r = measure(args.repeats)
    print(f"guide {r['tool_images_per_s']:,.0f} images/s, hand loop {r['hand_images_per_s']:,.0f} images/s, "
          f"ratio {r['ratio']:.3f}")
