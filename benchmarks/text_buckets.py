"""Figure 2, tight batches: the BiLSTM on the guide's random sequences, one sampler against another.

Sequences of length 50-300 over 10,000 tokens, batch 64 (the guide's setup), but 4 buckets
of `length_buckets` long (its bucket is 50 batches: 3,200 sequences), so buckets sort
within themselves and not the whole data at once. For each sampler (random,
length_buckets, the guide's sort-once `sorted`) and for length_buckets with packed
sequences:

- the padding share of a whole epoch (padded tokens / all tokens in the batches), counted
  from the lengths;
- the epoch time, estimated from training steps on a uniform sample of the epoch's
  batches (the same number from every sampler; epochs have equally many batches, so the
  ratio of mean step times is the ratio of epoch times). A step is collate, forward,
  loss, backward and an Adam step.

The samplers interleave, one sample of batches each in turn, and each repeat's time is
divided by its neighbouring random-batches time (benchmarks/common.py). Packed against
unpacked sequences (both exact) is the packed time over the length_buckets time.

    python benchmarks/text_buckets.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, ratios, summarise  # noqa: E402
from torchguide.data.collate import pad_to_longest  # noqa: E402
from torchguide.data.samplers import length_buckets, random, sorted_batches  # noqa: E402
from torchguide.data.text import random_sequences  # noqa: E402
from torchguide.registry import MODELS  # noqa: E402

BATCH = 64
BUCKETS = 4
SAMPLERS = {"random": random, "length_buckets": length_buckets, "sorted": sorted_batches}


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / padded


class Trainer:
    """A BiLSTM, its optimizer and one sampler's epoch: trains on a sample of that epoch's batches."""

    def __init__(self, data, sampler, pack: bool = False) -> None:
        torch.manual_seed(0)
        self.data, self.sampler = data, sampler
        self.model = MODELS.build("bilstm", vocab_size=10000, num_classes=1, pack=pack)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.collate = pad_to_longest(target="binary")

    def seconds_per_step(self, repeat: int, steps: int) -> float:
        batches = self.sampler.batches()
        picked = torch.randperm(len(batches), generator=torch.Generator().manual_seed(repeat))[:steps].tolist()
        started = time.perf_counter()
        for k in picked:
            batch = self.collate([(self.data.ids[i], self.data.targets[i]) for i in batches[k]])
            self.optimizer.zero_grad()
            self.loss_fn(self.model(*batch.inputs), batch.target).backward()
            self.optimizer.step()
        return (time.perf_counter() - started) / steps


def measure(repeats: int = 3, steps: int = 6) -> dict[str, dict[str, float]]:
    data = random_sequences(size=BATCH * 50 * BUCKETS, min_len=50, max_len=300, vocab_size=10000)
    data.targets = [int(x) for x in data.raw_labels]
    lengths = [len(x) for x in data.ids]
    samplers = {name: make(lengths, batch_size=BATCH, seed=0) for name, make in SAMPLERS.items()}
    assert samplers["length_buckets"].bucket_size * BUCKETS == len(lengths)
    trainers = {name: Trainer(data, sampler) for name, sampler in samplers.items()}
    trainers["length_buckets+pack"] = Trainer(data, samplers["length_buckets"], pack=True)
    times = interleaved({name: lambda r, t=t: t.seconds_per_step(r, steps) for name, t in trainers.items()},
                        repeats)
    results = {}
    for name, t in times.items():
        base = "length_buckets" if name.endswith("+pack") else "random"
        value, spread, n = summarise(ratios(t, times[base]))
        results[name] = {"ratio": value, "spread": spread, "repeats": n, "against": base,
                         "step_s": sum(t) / n,
                         "padding": padding_share(samplers[name.split("+")[0]].batches(), lengths)}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one repeat of 2 steps: proves it runs")
    args = parser.parse_args()
    for name, r in measure(*((1, 2) if args.quick else (3, 6))).items():
        print(f"{name:20s} step {r['step_s']:.3f} s  / {r['against']}: {r['ratio']:.3f} "
              f"[{r['spread'][0]:.3f}, {r['spread'][1]:.3f}]  padding {r['padding']:.1%}")
