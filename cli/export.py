"""`guide export`: a checkpoint's model as TorchScript, a torch.export program or ONNX; cli/main.py registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cli.common import DebugOpt, JsonOpt, emit_json, escape, guarded_command
from cli.train import CheckpointOpt, ImportOpt


@guarded_command
def export_cmd(
    checkpoint: CheckpointOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="torchscript (.pt), exported (torch.export, .pt2) "
                                     "or onnx (.onnx; pip install onnx onnxscript onnxruntime).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write; FILE.json (and FILE.vocab.json "
                                      "for text) go beside it.")],
    force: Annotated[bool, typer.Option("--force", help="Replace files that exist.")] = False,
    imports: ImportOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console,
) -> None:
    """Export a checkpoint's model, checked to give the model's outputs on a real batch."""
    from torchguide.export import export_checkpoint

    with console.status(f"exporting {checkpoint} ({fmt})"):
        summary = export_checkpoint(checkpoint, fmt, out, force=force, imports=imports or [])
    if as_json:
        emit_json(summary)
    else:
        show_export(summary, console)


def show_export(summary: dict[str, Any], console: Console) -> None:
    size = summary["bytes"]
    size_text = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
    console.print(escape(f"exported {summary['checkpoint']} to {summary['out']} ({summary['format']}, "
                         f"{summary['exporter']}, {size_text})"))
    shapes = ", ".join(f"{i['name']} ({', '.join(map(str, i['shape']))}) {i['dtype']}" for i in summary["inputs"])
    output = summary["output"]
    console.print(escape(f"inputs {shapes} -> {output['name']} ({', '.join(map(str, output['shape']))}), "
                         f"probabilities: {output['probabilities']}"))
    console.print(escape(f"checked with {summary['data']}"))
    first, *more = summary["checks"]
    also = "".join(f", and on a batch of {'x'.join(map(str, c['shape']))} ({c['max_abs_diff']:.1e})" for c in more)
    console.print(f"[green]outputs match[/] the checkpoint's model on a batch of {first['batch']} "
                  f"(max abs difference {first['max_abs_diff']:.1e}){also}")
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(escape(f"wrote {', '.join(summary['files'])}"))
