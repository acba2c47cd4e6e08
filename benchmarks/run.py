"""`make bench`: every benchmark, printed as ratios against its baseline and saved to results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ddp, image_loop, text_buckets  # noqa: E402


def main() -> None:
    results = []
    image = image_loop.measure()
    results.append({"name": "image loop: guide images/s / hand-written loop", "value": round(image["ratio"], 3),
                    "target": ">= 0.97", "met": image["ratio"] >= 0.97})
    text = text_buckets.measure()
    buckets = text["length_buckets"]
    results.append({"name": "length_buckets epoch time / random batches", "value": round(buckets["ratio"], 3),
                    "target": "<= 0.65", "met": buckets["ratio"] <= 0.65})
    results.append({"name": "length_buckets padding share", "value": round(buckets["padding"], 4),
                    "target": "<= 0.05", "met": buckets["padding"] <= 0.05})
    pack = text["length_buckets+pack"]["seconds"] / buckets["seconds"]
    results.append({"name": "bilstm packed / unpacked epoch time (informational)", "value": round(pack, 3),
                    "target": "pick the faster as default", "met": True})
    for task, r in ddp.measure().items():
        results.append({"name": f"{task}: 2 DDP processes / 1 process, {r['unit']} (2 cores)",
                        "value": round(r["scaling"], 3), "target": "informational", "met": True})
        results.append({"name": f"{task}: DDP step time / one process at equal per-process work",
                        "value": round(r["ddp_step_overhead"], 3), "target": "informational", "met": True})
    width = max(len(r["name"]) for r in results)
    for r in results:
        print(f"{r['name']:{width}s}  {r['value']:>8}  target {r['target']:>10}  {'met' if r['met'] else 'MISSED'}")
    out = Path(__file__).resolve().parent / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
