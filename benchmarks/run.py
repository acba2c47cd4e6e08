"""`make bench`: every speed figure against its baseline, printed as a table and saved to results.json.

Each figure is a ratio (or a time) measured side by side in this run, the two sides
interleaved, so a noisy machine affects both alike. results.json holds the machine's
facts (CPU model and the flags that matter for speed, cores, torch version, date) and one
{"name", "value", "target", "met", "spread", "repeats"} object per figure: `value` is the
median over the repeats, `spread` the [lowest, highest] per-repeat value
(benchmarks/common.py). The peer figures against PyTorch Lightning (benchmarks/peers.py,
about 4 minutes, with the `bench` extra) go to peers.json in the same form.

    python benchmarks/run.py [--quick]    # --quick: a smoke run with few repeats, into results-quick.json
    python benchmarks/run.py --peers      # `make bench-peers`: guide against Lightning, into peers.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ddp, loop, pipeline, precision, startup, text_buckets, threads  # noqa: E402
from benchmarks.common import figure, machine  # noqa: E402


def loop_figures(quick: bool) -> list[dict]:
    rows = []
    for task, repeats in (("image", 8), ("text", 5)):  # image epochs are short: more of them
        r = loop.measure(task, 3 if quick else repeats)
        rows.append(figure(f"1. {task} loop: guide epoch CPU time / the guide's hand-written loop", r["ratio"],
                           "<= 1.03, losses equal to 5 decimals", r["ratio"] <= 1.03 and r["losses_equal"],
                           r["spread"], r["repeats"]))
        if task == "image":
            used = r["utilisation"]
            rows.append(figure("6. utilisation: training FLOP/s / measured matmul peak (digits CNN)", used or 0.0,
                               "reported", used is not None))
    return rows


def bucket_figures(quick: bool) -> list[dict]:
    r = text_buckets.measure(*((1, 2) if quick else (3, 6)))
    rows = []
    for name, target in (("length_buckets", 0.65), ("sorted", 0.65)):
        s = r[name]
        rows.append(figure(f"2. {name} epoch time / random batches (BiLSTM, 4 buckets of data)", s["ratio"],
                           f"<= {target}", s["ratio"] <= target, s["spread"], s["repeats"]))
    for name, target in (("random", None), ("length_buckets", 0.05), ("sorted", None)):
        share = r[name]["padding"]
        rows.append(figure(f"2. padding share, {name}", share, f"<= {target}" if target else "informational",
                           target is None or share <= target))
    pack = r["length_buckets+pack"]
    rows.append(figure("BiLSTM packed / unpacked sequences, length_buckets step time (unpacked is the default)",
                       pack["ratio"], "informational", True, pack["spread"], pack["repeats"]))
    return rows


def pipeline_figures(quick: bool) -> list[dict]:
    p = pipeline.measure(1 if quick else 3)
    return [figure("3. image input pipeline: guide images/s / ImageFolder + PIL (500x375 JPEGs)", p["ratio"],
                   ">= 1.5", p["ratio"] >= 1.5, p["spread"], p["repeats"]),
            figure("3. data.cache: memory, later epochs / first epoch images/s", p["cache_ratio"], ">= 5",
                   p["cache_ratio"] >= 5, p["cache_spread"], p["cache_repeats"])]


def precision_figures(quick: bool, native: bool) -> list[dict]:
    r = precision.measure(quick)
    a, b, c = r["reviews"], r["conv_step"], r["digits"]
    where = "native bf16" if native else "no native bf16"
    if native:
        a_target, a_met = f">= 1.15 ({where})", a["speedup"] >= 1.15
    else:
        a_target, a_met = f"auto keeps fp32, >= 0.97 ({where})", a["precision"] == "fp32" and a["speedup"] >= 0.97
    return [
        figure(f"4a. reviews BiLSTM whole run: fp32 time / all auto (auto: {a['choices']})", a["speedup"],
               a_target, a_met, a["spread"], a["repeats"]),
        figure("4a. reviews test accuracy: auto - fp32, points", a["accuracy_points"], "within 0.5",
               abs(a["accuracy_points"]) <= 0.5, a["accuracy_spread"], a["repeats"]),
        figure(f"4b. conv step, 64x64 RGB: fp32 / the setting auto picks ({b['choices']})", b["speedup"],
               f">= 2 ({where})" if native else f"informational ({where})", b["speedup"] >= 2 or not native,
               b["spread"], b["repeats"]),
        figure(f"4c. digits 5 epochs: auto time / fp32 time - 1 (auto: {c['choices']})", c["cost"], "<= 0.03",
               c["cost"] <= 0.03, c["spread"], c["repeats"]),
    ]


def startup_figures(quick: bool) -> list[dict]:
    s = startup.measure(2)
    return [figure("5. guide --help seconds", s["help_s"], "< 0.3", s["help_s"] < 0.3, s["help_spread"],
                   s["repeats"]),
            figure("5. guide inspect-layer conv2d / python -c 'import torch'", s["inspect_layer_ratio"],
                   "as close to 1 as torch allows", True, s["inspect_layer_spread"], s["repeats"]),
            figure("5. guide list / python -c 'import torch'", s["list_ratio"], "as close to 1 as torch allows", True,
                   s["list_spread"], s["repeats"])]


def thread_figures(quick: bool) -> list[dict]:
    t = threads.measure(quick)
    w, load = t["workers"], t["load"]
    return [figure("7. threads with 2 loader workers: guide's setting / torch's default, images/s", w["ratio"],
                   ">= 1.0", w["ratio"] >= 1.0, w["spread"], w["repeats"]),
            figure(f"7. digits epoch under a CPU-bound competitor on all {t['cores']} cores / quiet", load["ratio"],
                   "<= 2.5", load["ratio"] <= 2.5, load["spread"], load["repeats"])]


def ddp_figures(quick: bool) -> list[dict]:
    rows = []
    for task, r in ddp.measure(quick, overhead=False).items():  # the overhead: python benchmarks/ddp.py
        scaling = r["scaling"]
        rows.append(figure(f"{task}: 2 DDP processes / 1 process at equal global batch, {r['unit']}", scaling[0],
                           "informational", True, scaling[1], scaling[2]))
    return rows


def peer_figures(quick: bool) -> tuple[list[dict], str | None]:
    """The figures against PyTorch Lightning, or why there are none.

    benchmarks/peers.py's `measure(quick)` returns {"figures": [...]} (rows made by
    common.figure), or a dict of such rows by name.
    """
    if importlib.util.find_spec("benchmarks.peers") is None:
        return [], "peers skipped: benchmarks/peers.py is not there"
    if importlib.util.find_spec("lightning") is None and importlib.util.find_spec("pytorch_lightning") is None:
        return [], "peers skipped: Lightning is not installed (pip install -e '.[bench]')"
    from benchmarks import peers

    result = peers.measure(quick=quick)
    return list(result.get("figures", result.values())), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: proves every figure runs")
    parser.add_argument("--peers", action="store_true",
                        help="the figures against PyTorch Lightning instead (the bench extra), into peers.json")
    args = parser.parse_args()
    quick, facts = args.quick, machine()
    started, figures, took, skipped = time.perf_counter(), [], [], None
    parts = {"loop": loop_figures, "buckets": bucket_figures, "pipeline": pipeline_figures,
             "precision": lambda q: precision_figures(q, facts["native_bf16"]), "startup": startup_figures,
             "threads": thread_figures, "ddp": ddp_figures}
    for name, part in ({} if args.peers else parts).items():
        part_started = time.perf_counter()
        figures += part(quick)
        took.append(f"{name} {time.perf_counter() - part_started:.0f}")
        print(f"{name}: {time.perf_counter() - part_started:.0f} s", file=sys.stderr, flush=True)
    if args.peers:
        figures, skipped = peer_figures(quick)
        took.append(f"peers {time.perf_counter() - started:.0f}")
    if figures:
        show(facts, figures)
    if skipped:
        print(skipped)
    print(f"{time.perf_counter() - started:.0f} s in all ({', '.join(took)})"
          + ("; --quick: too few repeats to resolve anything" if quick else ""))
    name = ("peers" if args.peers else "results") + ("-quick" if quick else "")  # quick: not figures
    if figures:
        (Path(__file__).resolve().parent / f"{name}.json").write_text(
            json.dumps({"machine": facts, "figures": figures}, indent=2) + "\n")


def show(facts: dict, figures: list[dict]) -> None:
    print(f"{facts['cpu']}, {facts['cores']} cores, flags {' '.join(facts['flags']) or 'unknown'}; "
          f"torch {facts['torch']}; {facts['date']}")
    width = max(len(f["name"]) for f in figures)
    for f in figures:
        spread = f"[{f['spread'][0]}, {f['spread'][1]}]" if f["spread"] else ""
        print(f"{f['name']:{width}s}  {f['value']!s:>8}  {spread:>18}  x{f['repeats']:<3d} target {f['target']:>34}  "
              f"{'met' if f['met'] else 'MISSED'}")


if __name__ == "__main__":
    main()
