"""Tight batches: the BiLSTM on the guide's random sequences, one epoch per sampler.

1024 sequences of length 50-300 over 10,000 tokens, batch 64 (the guide's setup). For each
sampler (random, length_buckets, the guide's sorted) it measures the padding share and
the epoch time, alternating samplers across repeats, and prints ratios against random.
It also times packed against unpacked sequences for the BiLSTM (both exact).

    python benchmarks/text_buckets.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torchguide.data.collate import pad_to_longest  # noqa: E402
from torchguide.data.samplers import length_buckets, random, sorted_batches  # noqa: E402
from torchguide.data.text import random_sequences  # noqa: E402
from torchguide.registry import MODELS  # noqa: E402

SAMPLERS = {"random": random, "length_buckets": length_buckets, "sorted": sorted_batches}


def epoch(data, sampler, pack: bool = False) -> tuple[float, float]:
    """One training epoch; returns (seconds, padding share)."""
    torch.manual_seed(0)
    model = MODELS.build("bilstm", vocab_size=10000, num_classes=1, pack=pack)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    collate = pad_to_longest(target="binary")
    real = padded = 0
    start = time.perf_counter()
    for indices in sampler:
        batch = collate([(data.ids[i], data.targets[i]) for i in indices])
        tokens, lengths = batch.inputs
        real, padded = real + int(lengths.sum()), padded + tokens.numel()
        optimizer.zero_grad()
        loss_fn(model(tokens, lengths), batch.target).backward()
        optimizer.step()
    return time.perf_counter() - start, 1 - real / padded


def measure(repeats: int = 3) -> dict[str, dict[str, float]]:
    data = random_sequences(size=1024, min_len=50, max_len=300, vocab_size=10000)
    data.targets = [int(x) for x in data.raw_labels]
    lengths = [len(x) for x in data.ids]
    times: dict[str, list[float]] = {name: [] for name in [*SAMPLERS, "length_buckets+pack"]}
    padding = {}
    for r in range(repeats):
        for name, make in SAMPLERS.items():
            sampler = make(lengths, batch_size=64, seed=0)
            sampler.set_epoch(r)
            seconds, padding[name] = epoch(data, sampler)
            times[name].append(seconds)
        sampler = length_buckets(lengths, batch_size=64, seed=0)
        sampler.set_epoch(r)
        times["length_buckets+pack"].append(epoch(data, sampler, pack=True)[0])
    base = statistics.median(times["random"])
    return {name: {"seconds": statistics.median(t), "ratio": statistics.median(t) / base,
                   "padding": padding.get(name.split("+")[0])} for name, t in times.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, r in measure(args.repeats).items():
        print(f"{name:22s} epoch {r['seconds']:6.2f}s  ratio to random {r['ratio']:.3f}  padding {r['padding']:.1%}")
