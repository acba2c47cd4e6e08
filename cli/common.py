"""What every `guide` command shares: its consoles, the error guard, the usual options, JSON output.

What a command exists to print (a listing, a report) goes to stdout, so it pipes; progress,
warnings and errors go to stderr. Nothing here imports torch, so `guide --help` stays quick.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file, or a shipped config by name: "
                                          "image/digits (`guide config list`).")]
Overrides = Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045 (typer needs Optional)
    help="Overrides: key=value (optimizer.lr=3e-4), SECTION=NAME to swap a component (model=embedding_bag), "
    "or ~key to remove.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (an error object "
                                      "on failure).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the Python traceback on errors.")]


def make_console(stderr: bool = True) -> Console:
    """The console of progress, warnings and errors (stderr), or of what a command exists to print (stdout).

    Lines are never wrapped by rich (the terminal wraps them), so a line piped to grep is whole.
    """
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class ConsoleHandler(logging.Handler):
    """Library warnings (skipped files, ...) as `warning: ...` lines on stderr."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False)


INJECTED = ("console", "stdout")  # what the guard passes a command, not options
BUG_HINT = "run again with --debug for the traceback"


def guarded_command(command: Callable[..., None]) -> Callable[..., None]:
    """Make `command` a guarded CLI command: it gets its consoles, library warnings print on stderr, and
    the project's errors become one line and an exit code (a traceback only with --debug or GUIDE_DEBUG).

    A command that prints takes keyword-only `console` (stderr: progress, notes) and `stdout`
    (what the command exists to print), which the guard passes in; Typer sees the command's
    other parameters only. With `--json` (a parameter named `as_json`), a failure also
    prints one JSON object on stdout, `{"error": ..., "hint": ..., "exit_code": ...}`.
    """
    signature = inspect.signature(command, eval_str=True)  # Typer reads these annotations as they are
    shown = signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in INJECTED])

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> None:
        console = make_console()
        given = shown.bind(*args, **kwargs).arguments
        debug = bool(given.get("debug")) or bool(os.environ.get("GUIDE_DEBUG"))
        as_json = bool(given.get("as_json"))
        if "console" in signature.parameters:
            kwargs["console"] = console
        if "stdout" in signature.parameters:
            kwargs["stdout"] = make_console(stderr=False)
        log = logging.getLogger("torchguide")
        handler = ConsoleHandler(console)
        log.addHandler(handler)
        try:
            command(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            console.print("[red]interrupted[/]")
            if as_json:
                emit_error({"error": "interrupted", "hint": None, "exit_code": 1})
            raise typer.Exit(1) from None  # the exit carries no cause: the line above is the report
        except Exception as exc:
            code = report_error(exc, console, debug)
            if as_json:
                emit_error(error_object(exc, code))
            raise typer.Exit(code) from None
        finally:
            log.removeHandler(handler)

    guarded.__signature__ = shown  # type: ignore[attr-defined]
    return guarded


def report_error(exc: Exception, console: Console, debug: bool) -> int:
    """Print an error as the user sees it; returns the exit code (the GuideError's own, 1 for a bug)."""
    from torchguide.errors import GuideError

    if debug:
        console.print_exception()
    if isinstance(exc, GuideError):
        first, *rest = exc.lines()
        console.print(f"[red]error:[/] {escape(rank_prefix() + first)}")
        for line in rest:
            console.print(escape(line))
        return exc.exit_code
    console.print(f"[red]internal error:[/] {escape(rank_prefix() + type(exc).__name__)}: {escape(str(exc))}"
                  f" ({BUG_HINT})")
    return 1


def error_object(exc: Exception, exit_code: int) -> dict[str, Any]:
    """A failure as --json prints it: the message, the hint (or null), the exit code, and the further
    lines of an error that has several (each problem of a config)."""
    from torchguide.errors import GuideError

    if not isinstance(exc, GuideError):
        return {"error": f"internal error: {rank_prefix()}{type(exc).__name__}: {exc}", "hint": BUG_HINT,
                "exit_code": exit_code}
    found = {"error": rank_prefix() + exc.message, "hint": exc.hint, "exit_code": exit_code}
    details = [line.strip() for line in exc.lines()[1:]]
    return {**found, "details": details} if details else found


def emit_error(found: dict[str, Any]) -> None:
    """The JSON error object on stdout, from the one process that speaks for the command: in a job
    started by `guide --nproc`, the launcher reports a rank's failure; under an outside torchrun, rank 0."""
    if "RANK" in os.environ:
        from torchguide.distributed import relaunched_nproc

        if relaunched_nproc() is not None or os.environ["RANK"] != "0":
            return
    emit_json(found)


def rank_prefix() -> str:
    """`[rank N] ` in a process of a distributed job, so its errors say where they come from."""
    return f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()
