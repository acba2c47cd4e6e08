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
