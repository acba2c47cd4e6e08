"""How the command line draws results: rich tables on the given console (stderr)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from torchguide.report import confusion_table, metrics_table, per_class_table


def show_layer(report: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{report['call']}[/]")
    if report["picked"]:
        console.print(f"[dim]picked arguments: {', '.join(report['picked'])} (pass name=value to change)[/]")
    table = Table(show_header=True, title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        table.add_column(col)
    inp = report["input"]
    table.add_row("input", "x" + (" (picked)" if inp["picked"] else ""), str(inp["shape"]), inp["dtype"])
    for out in report["outputs"]:
        table.add_row("output", out["name"], str(out["shape"]), out["dtype"] or "")
    console.print(table)
    if report["parameters"]:
        params = Table(title=f"trainable parameters: {report['trainable']:,}", title_justify="left")
        for col in ("parameter", "shape", "count"):
            params.add_column(col, justify="right" if col == "count" else "left")
        for p in report["parameters"]:
            params.add_row(p["name"], str(p["shape"]), f"{p['count']:,}")
        console.print(params)
    else:
        console.print("trainable parameters: 0")
    if report["flops"]:
        console.print(f"FLOPs (one forward pass of this input): {report['flops']:,}")
    if report["doc"]:
        console.print(f"[dim]{report['doc']}[/]")


def show_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title=f"run {summary['name']}", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    final = summary["final"]
    rows = [("epochs / steps", f"{summary['epochs']} / {summary['steps']}"),
            ("time", f"{summary['seconds']:.1f} s on {summary['device']} ({summary['precision']})"),
            ("train loss / acc", pair(final.get("train_loss"), final.get("train_acc"))),
            ("valid loss / acc", pair(final.get("valid_loss"), final.get("valid_acc"))),
            (f"best {summary['monitor']}", f"{summary['best']:.4f} (epoch {summary['best_epoch']})"
             if summary["best"] is not None else "-")]
    if summary.get("samples_per_s"):
        rows.append(("throughput", f"{summary['samples_per_s']:,.0f} samples/s"))
    if summary.get("flops_per_s"):
        rows.append(("utilisation", f"{summary['flops_per_s'] / 1e9:,.1f} GFLOP/s = {summary['utilisation']:.0%} of "
                     f"this machine's {summary['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s matmul peak"))
    if summary.get("test"):
        rows.append(("test loss / acc", pair(summary["test"]["loss"], summary["test"]["accuracy"])))
    if summary.get("stopped_early"):
        rows.append(("stopped", "early stopping"))
    if summary.get("run_dir"):
        rows.append(("run directory", summary["run_dir"]))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def pair(a: float | None, b: float | None) -> str:
    return "-" if a is None else f"{a:.4f} / {b:.4f}"


def show_eval(result: dict[str, Any], console: Console) -> None:
    console.print(metrics_table(result, f"evaluation of {result['checkpoint']} on {result['data']}"))
    console.print(per_class_table(result))
    matrix = confusion_table(result)
    if matrix is not None:
        console.print(matrix)
    if result.get("predictions"):
        console.print(f"predictions written to {result['predictions']}")


def show_predictions(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(show_header=True)
    table.add_column("input", overflow="fold", max_width=60)
    table.add_column("prediction")
    table.add_column("probability", justify="right")
    table.add_column("top classes")
    for row in rows:
        top = row["top"]
        table.add_row(row["input"], top[0]["class"], f"{top[0]['probability']:.3f}",
                      ", ".join(f"{t['class']} {t['probability']:.3f}" for t in top[1:]))
    console.print(table)


def show_list(groups: dict[str, list[dict[str, str]]], console: Console,
              counts: dict[str, int] | None = None) -> None:
    if counts is not None:
        table = Table(title="registries (guide list KIND for the entries)", title_justify="left")
        table.add_column("kind")
        table.add_column("entries", justify="right")
        for kind, n in counts.items():
            table.add_row(kind, str(n))
        console.print(table)
        return
    for kind, rows in groups.items():
        table = Table(title=f"{kind} ({len(rows)})", title_justify="left")
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("signature", overflow="fold")
        table.add_column("description", overflow="fold")
        for row in rows:
            table.add_row(row["name"], row["signature"], row["summary"])
        console.print(table)


MARKS = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


def show_check(findings: list[Any], console: Console) -> None:
    from rich.markup import escape

    table = Table(show_header=True, title_justify="left")
    for col in ("", "area", "finding", "fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(MARKS[f.status], f.area, escape(f.text), escape(f.fix or ""))
    console.print(table)
    failed = [f for f in findings if f.status == "fail"]
    warned = [f for f in findings if f.status == "warn"]
    if failed:
        console.print(f"[red]check failed:[/] {escape(failed[0].text)}")
    else:
        console.print(f"[green]check passed[/]{f' with {len(warned)} warning(s)' if warned else ''}: "
                      "ready to train")


def show_model(report: dict[str, Any], title: str, console: Console) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("layer", "type", "output shape", "parameters", "FLOPs"):
        table.add_column(col, justify="right" if col in ("parameters", "FLOPs") else "left")
    for row in report["layers"]:
        calls = f" (x{row['calls']})" if row["calls"] > 1 else ""
        table.add_row(row["name"], row["type"] + calls, str(row["output"]), f"{row['parameters']:,}",
                      f"{row['flops']:,}")
    console.print(table)
    console.print(f"input {report['input']}; parameters {report['parameters']:,} ({report['trainable']:,} "
                  f"trainable), {report['size_mb']:.2f} MB; {report['flops']:,} FLOPs for a batch of "
                  f"{report['batch']} ({report['flops'] // max(report['batch'], 1):,} a sample)")


def show_survey(report: dict[str, Any], console: Console) -> None:
    from rich.markup import escape

    for name, split in report["splits"].items():
        counts = split["classes"]
        shown = ", ".join(f"{c} {n}" for c, n in list(counts.items())[:12]) + (" ..." if len(counts) > 12 else "")
        console.print(f"[bold]{name}[/]: {split['samples']} samples, {len(counts)} classes ({escape(shown)}); "
                      f"imbalance {split['imbalance']:.1f}:1")
        if split["kind"] == "image":
            sizes = ", ".join(f"{s} ({n})" for s, n in split["sizes"].items())
            console.print(f"  sizes: {sizes}{' ...' if split['distinct_sizes'] > 5 else ''}; modes: "
                          + ", ".join(f"{m} ({n})" for m, n in split["modes"].items()))
            unit = split.get("unit", "file")
            for key, what, none in (("unreadable", f"unreadable {unit}(s)", f"no unreadable {unit}s"),
                                    ("duplicates", f"group(s) of identical {unit}s", f"no duplicate {unit}s")):
                items = split[key]
                if items:
                    first = items[0] if key == "unreadable" else " = ".join(items[0])
                    console.print(f"  [yellow]{len(items)} {what}[/], e.g. {escape(str(first))}")
                else:
                    console.print(f"  {none}")
        else:
            n = split["lengths"]
            empty = f"; {split['empty']} empty" if split["empty"] else ""
            console.print(f"  tokens: min {n['min']}, median {n['median']:g}, p95 {n['p95']}, max {n['max']}{empty}")
            pads = ", ".join(f"{k} {v:.1%}" for k, v in split["padding"].items())
            console.print(f"  padding at batch {split['batch_size']}: {pads}")
            console.print(f"  suggested data.vocab.max_len: {split['suggested_max_len']} (covers 95% of texts)"
                          + (f"; now {split['max_len']}" if split["max_len"] else ""))
    console.print(f"[dim]plot: {report['plot']}[/]")
