"""`guide eject`: the plain PyTorch script a config means; cli/main.py registers it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli.common import ConfigOpt, DebugOpt, JsonOpt, Overrides, emit_json, escape, guarded_command


@guarded_command
def eject_cmd(
    config: ConfigOpt, overrides: Overrides = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--out", "-o", help="The script to write (default: print it on stdout).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console,
) -> None:
    """Write the plain PyTorch script that trains this config, to read and keep: guide eject -c F --out train.py."""
    from torchguide.eject.script import eject, write_script

    text = eject(config, overrides or [], out, force)
    lines = text.count("\n")
    if out is not None:
        write_script(text, out)
    if as_json:
        emit_json({"out": str(out) if out else None, "lines": lines, **({} if out else {"script": text})})
    elif out is None:
        sys.stdout.write(text)
    else:
        console.print(f"wrote {escape(str(out))} ({lines} lines): run it with python {escape(str(out))}")
