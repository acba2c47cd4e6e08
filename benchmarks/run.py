"""`make bench`: every speed figure against its baseline, printed as a table and saved to results.json.

Each figure is a ratio (or a time) measured side by side in this run, so a noisy machine
affects both sides alike. results.json holds one {"name", "value", "target", "met"}
object per figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ddp, loop, pipeline, precision, startup, text_buckets, threads  # noqa: E402


def figure(name: str, value: float | bool, target: str, met: bool) -> dict:
    return {"name": name, "value": round(value, 4) if isinstance(value, float) else value, "target": target,
            "met": bool(met)}


def main() -> None:
    started = time.perf_counter()
    results = []
    for task in ("image", "text"):
        r = loop.measure(task, repeats=9 if task == "image" else 5)  # image epochs are short: more repeats
        results.append(figure(f"1. {task} loop: guide epoch time / the guide's hand-written loop", r["ratio"],
                              "<= 1.03, losses equal to 5 decimals", r["ratio"] <= 1.03 and r["losses_equal"]))
        if task == "image":
            image_utilisation = r["utilisation"]
    text = text_buckets.measure(repeats=2)
    buckets = text["length_buckets"]
    results.append(figure("2. length_buckets epoch time / random batches (BiLSTM)", buckets["ratio"], "<= 0.65",
                          buckets["ratio"] <= 0.65))
    results.append(figure("2. length_buckets padding share", buckets["padding"], "<= 0.05",
                          buckets["padding"] <= 0.05))
    p = pipeline.measure()
    results.append(figure("3. image input pipeline: guide images/s / ImageFolder + PIL (500x375 JPEGs)",
                          p["ratio"], ">= 1.5", p["ratio"] >= 1.5))
    results.append(figure("3. data.cache: memory, later epochs / first epoch images/s", p["cache_ratio"], ">= 5",
                          p["cache_ratio"] >= 5))
    c = precision.measure()
    results.append(figure(f"4. CPU step: bf16 autocast + channels_last / fp32 (native bf16: {c['native_bf16']}; "
                          f"precision auto picks {c['auto']})", c["bf16_channels_last"], ">= 1.8",
                          c["bf16_channels_last"] >= 1.8))
    results.append(figure("4. CPU step: channels_last alone / fp32 (informational)", c["channels_last"],
                          "informational", True))
    s = startup.measure()
    results.append(figure("5. guide --help seconds", s["help_s"], "< 0.3", s["help_s"] < 0.3))
    results.append(figure("5. guide inspect-layer conv2d / python -c 'import torch'", s["inspect_layer_ratio"],
                          "as close to 1 as torch allows", True))
    results.append(figure("5. guide list / python -c 'import torch'", s["list_ratio"],
                          "as close to 1 as torch allows", True))
    results.append(figure("6. utilisation: training FLOP/s / measured matmul peak (digits CNN; in progress and "
                          "summary)", image_utilisation or 0.0, "reported", image_utilisation is not None))
    t = threads.measure()
    results.append(figure("7. threads with 2 loader workers: guide's setting / torch's default, images/s",
                          t["ratio"], ">= 1.0", t["ratio"] >= 1.0))
    for task, r in ddp.measure().items():
        results.append(figure(f"{task}: 2 DDP processes / 1 process, {r['unit']} (2 cores)", r["scaling"],
                              "informational", True))
        results.append(figure(f"{task}: DDP step time / one process at equal per-process work",
                              r["ddp_step_overhead"], "informational", True))
    width = max(len(r["name"]) for r in results)
    for r in results:
        print(f"{r['name']:{width}s}  {r['value']!s:>8}  target {r['target']:>30}  {'met' if r['met'] else 'MISSED'}")
    print(f"({time.perf_counter() - started:.0f} s)")
    out = Path(__file__).resolve().parent / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
