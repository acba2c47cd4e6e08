"""How the command line draws results: rich tables on a terminal, plain lines elsewhere.

What comes from code, docstrings or data (type names, class names, paths) is escaped or given as
Text, so rich reads no markup in it: `Union[int, float]` stays whole.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from torchguide.report import confusion_table, metrics_table, per_class_table


def print_table(table: Table, console: Console, rows_only: bool = False) -> None:
    """A table as rich draws it on a terminal. Elsewhere (a pipe, a file) one line a row, the cells apart
    by a tab and never wrapped, so grep, cut and sort read it: the title and the header first, unless
    `rows_only` (a listing, one entry a line)."""
    if console.is_terminal:
        console.print(table)
        return
    lines = []
    if table.title and not rows_only:
        lines.append(plain(table.title))
    if table.show_header and not rows_only:
        lines.append("\t".join(plain(column.header) for column in table.columns))
    for row in zip(*(column.cells for column in table.columns), strict=True):
        lines.append("\t".join(plain(cell) for cell in row))
    console.file.write("".join(line + "\n" for line in lines))  # as they are: rich would expand the tabs


def plain(cell: RenderableType) -> str:
    """A cell's text without its styles, on one line."""
    if isinstance(cell, str):
        cell = Text.from_markup(cell)
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return " ".join(text.split("\n")).replace("\t", " ")


def show_layer(report: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{escape(report['call'])}[/]")
    if report["picked"]:
        console.print(f"[dim]picked arguments: {escape(', '.join(report['picked']))} (pass name=value to change)[/]")
    table = Table(show_header=True, title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        table.add_column(col)
    inp = report["input"]
    table.add_row("input", "x" + (" (picked)" if inp["picked"] else ""), Text(str(inp["shape"])), Text(inp["dtype"]))
    for out in report["outputs"]:
        table.add_row("output", Text(out["name"]), Text(str(out["shape"])), Text(out["dtype"] or ""))
    print_table(table, console)
    if report["parameters"]:
        params = Table(title=f"trainable parameters: {report['trainable']:,}", title_justify="left")
        for col in ("parameter", "shape", "count"):
            params.add_column(col, justify="right" if col == "count" else "left")
        for p in report["parameters"]:
            params.add_row(Text(p["name"]), Text(str(p["shape"])), f"{p['count']:,}")
        print_table(params, console)
    else:
        console.print("trainable parameters: 0")
    if report["flops"]:
        console.print(f"FLOPs (one forward pass of this input): {report['flops']:,}")
    if report["doc"]:
        console.print(f"[dim]{escape(report['doc'])}[/]")


def show_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title=f"run {escape(summary['name'])}", show_header=False, title_justify="left")
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
    if summary.get("flops_per_s") and summary.get("utilisation") is not None:
        rows.append(("utilisation", utilisation_line(summary)))
    if summary.get("test"):
        rows.append(("test loss / acc", pair(summary["test"]["loss"], summary["test"]["accuracy"])))
    if summary.get("stopped_early"):
        rows.append(("stopped", "early stopping"))
    if summary.get("run_dir"):
        rows.append(("run directory", summary["run_dir"]))
    for key, value in rows:
        table.add_row(key, Text(value))
    print_table(table, console)


def utilisation_line(summary: dict[str, Any]) -> str:
    """The run's GFLOP/s against the machine's peak, and the peak before, when the run raised it."""
    line = f"{summary['flops_per_s'] / 1e9:,.1f} GFLOP/s = {summary['utilisation']:.0%} of this machine's " \
           f"{gigas(summary['peak_flops_per_s'])} GFLOP/s"
    if summary.get("peak_source") == "raised":
        return f"{line} peak (raised by this run from {gigas(summary['peak_raised_from_flops_per_s'])})"
    return f"{line} matmul peak"


def gigas(flops_per_s: float) -> str:
    """FLOP/s in billions: whole numbers from 10 up, one decimal below (an emulated bf16 CPU: 0.7)."""
    return f"{flops_per_s / 1e9:,.0f}" if flops_per_s >= 10e9 else f"{flops_per_s / 1e9:.1f}"


def pair(a: float | None, b: float | None) -> str:
    return "-" if a is None else f"{a:.4f} / {b:.4f}"


def show_eval(result: dict[str, Any], console: Console) -> None:
    print_table(metrics_table(result, f"evaluation of {escape(result['checkpoint'])} on {escape(result['data'])}"),
                console)
    print_table(per_class_table(result), console)
    matrix = confusion_table(result)
    if matrix is not None:
        print_table(matrix, console)
    if result.get("predictions"):
        console.print(f"predictions written to {escape(result['predictions'])}")


def show_predictions(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(show_header=True)
    table.add_column("input", overflow="fold", max_width=60)
    table.add_column("prediction")
    table.add_column("probability", justify="right")
    table.add_column("top classes")
    for row in rows:
        top = row["top"]
        table.add_row(Text(row["input"]), Text(top[0]["class"]), f"{top[0]['probability']:.3f}",
                      Text(", ".join(f"{t['class']} {t['probability']:.3f}" for t in top[1:])))
    print_table(table, console)


def show_list(groups: dict[str, list[dict[str, str]]], console: Console,
              counts: dict[str, int] | None = None) -> None:
    if counts is not None:
        table = Table(title="registries (guide list KIND for the entries)", title_justify="left")
        table.add_column("kind")
        table.add_column("entries", justify="right")
        for kind, n in counts.items():
            table.add_row(kind, str(n))
        print_table(table, console, rows_only=True)
        return
    for kind, rows in groups.items():
        table = Table(title=f"{kind} ({len(rows)})", title_justify="left")
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("signature", overflow="fold")
        table.add_column("description", overflow="fold")
        for row in rows:
            table.add_row(Text(row["name"]), Text(row["signature"]), Text(row["summary"]))
        print_table(table, console, rows_only=True)


MARKS = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


def show_check(findings: list[Any], console: Console) -> None:
    table = Table(show_header=True, title_justify="left")
    for col in ("", "area", "finding", "fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(MARKS[f.status], Text(f.area), Text(f.text), Text(f.fix or ""))
    print_table(table, console)
    failed = [f for f in findings if f.status == "fail"]
    warned = [f for f in findings if f.status == "warn"]
    if failed:
        console.print(f"[red]check failed:[/] {escape(failed[0].text)}")
    else:
        console.print(f"[green]check passed[/]{f' with {len(warned)} warning(s)' if warned else ''}: "
                      "ready to train")


def show_model(report: dict[str, Any], title: str, console: Console) -> None:
    table = Table(title=escape(title), title_justify="left")
    for col in ("layer", "type", "output shape", "parameters", "FLOPs"):
        table.add_column(col, justify="right" if col in ("parameters", "FLOPs") else "left")
    for row in report["layers"]:
        calls = f" (x{row['calls']})" if row["calls"] > 1 else ""
        table.add_row(Text(row["name"]), Text(row["type"] + calls), Text(str(row["output"])),
                      f"{row['parameters']:,}", f"{row['flops']:,}")
    print_table(table, console)
    console.print(f"input {escape(str(report['input']))}; parameters {report['parameters']:,} ({report['trainable']:,} "
                  f"trainable), {report['size_mb']:.2f} MB; {report['flops']:,} FLOPs for a batch of "
                  f"{report['batch']} ({report['flops'] // max(report['batch'], 1):,} a sample)")


def show_survey(report: dict[str, Any], console: Console) -> None:
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
    if report.get("plot"):
        console.print(f"[dim]plot: {escape(report['plot'])}[/]")
