"""The `guide` command line: parse options, call torchguide, print.

What a command exists to print goes to stdout (`--json`: one JSON document), progress and
errors to stderr. Failures the user can fix print one line and exit 2 (1 when a run fails);
`--debug` shows the traceback.
torch is imported inside the commands only, so `guide --help` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.exceptions import TyperException

from cli.common import ConfigOpt, DebugOpt, JsonOpt, Overrides, emit_json, escape, guarded_command, make_console
from cli.complete import complete_kind, complete_layer, complete_name
from cli.data import data_app
from cli.eject import eject_cmd
from cli.export import export_cmd
from cli.train import eval_cmd, predict_cmd, train_image, train_text
from torchguide import __version__


class GuideGroup(TyperGroup):
    """Usage errors (a missing option, a value out of range) print one `error:` line, like all others, and
    with --json the JSON error object on stdout too; help shows flags without a value placeholder."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, standalone_mode: bool = True,
             **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(args, *rest, standalone_mode=False, **kwargs)
        try:
            code = super().main(args, *rest, standalone_mode=False, **kwargs)
        except TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `guide`: the help (already printed)
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f"see `{ctx.command_path} --help`" if ctx is not None else None
            message = exc.format_message().rstrip(".")
            message = message[:1].lower() + message[1:]
            code = getattr(exc, "exit_code", 2)
            make_console().print(f"[red]error:[/] {escape(message)}" + (f" ({escape(hint)})" if hint else ""))
            if "--json" in (sys.argv[1:] if args is None else args):
                emit_json({"error": message, "hint": hint, "exit_code": code})
            sys.exit(code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def get_params(self, ctx: typer.Context) -> list[TyperOption | TyperArgument]:
        return bare_flags(super().get_params(ctx))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | TyperGroup | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            bare_flags_below(command, ctx)
        return command


def bare_flags(params: list[TyperOption | TyperArgument]) -> list[TyperOption | TyperArgument]:
    """Typer's rich help gives every option a type, so a flag read `--json <bool>` as if it took a
    value: an empty metavar leaves a flag's type blank."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def bare_flags_below(command: TyperCommand | TyperGroup, ctx: typer.Context) -> None:
    """bare_flags for a command (its --help included) and, for a group, every command in it."""
    bare_flags(command.get_params(ctx))
    for sub in getattr(command, "commands", {}).values():
        bare_flags_below(sub, ctx)


app = typer.Typer(name="guide", help="Train PyTorch image and text classifiers from YAML configs, "
                  "and learn layers and shapes as you go.", no_args_is_help=True, cls=GuideGroup,
                  rich_markup_mode="rich", pretty_exceptions_enable=False)
config_app = typer.Typer(help="Show or validate a config; list or copy the shipped ones.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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
@guarded_command
def inspect_layer_cmd(
    name: Annotated[str, typer.Argument(help="Layer name: conv2d, linear, lstm, ... (`guide list layers`).",
                                        autocompletion=complete_layer)],
    args: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045
        help="Constructor arguments as key=value.", show_default=False)] = None,
    input_shape: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--input-shape", "-i", help="Input shape, e.g. 100,3,24,24.")] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False, *, stdout: Console,
) -> None:
    """Build a torch layer by name, feed it random input, and explain the shapes."""
    from cli.show import show_layer
    from torchguide.inspection import inspect_layer, parse_shape

    shape = parse_shape(input_shape) if input_shape else None
    report = inspect_layer(name, parse_kwargs(args or []), shape)
    if as_json:
        emit_json(report)
    else:
        show_layer(report, stdout)


# ------------------------------------------------------------------ training (cli/train.py)

app.command("train-image")(train_image)
app.command("train-text")(train_text)


# ------------------------------------------------------------------ check / inspect-model / lr-find

@app.command("check")
@guarded_command
def check_cmd(config: ConfigOpt, overrides: Overrides = None, as_json: JsonOpt = False,
              debug: DebugOpt = False, *, stdout: Console) -> None:
    """Build everything from a config, put one real batch forward and backward, and say what looks wrong."""
    from cli.show import show_check
    from torchguide.check import as_dicts, run_check
    from torchguide.config import load_config

    findings = run_check(load_config(config, overrides or []))
    failed = any(f.status == "fail" for f in findings)
    if as_json:
        emit_json({"passed": not failed, "findings": as_dicts(findings)})
    else:
        show_check(findings, stdout)
    if failed:
        raise typer.Exit(1)


@app.command("inspect-model")
@guarded_command
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
    as_json: JsonOpt = False, debug: DebugOpt = False, *, stdout: Console,
) -> None:
    """Every layer of a model: output shape, parameters and FLOPs from one forward pass."""
    from cli.show import show_model
    from torchguide.inspection import inspect_model, parse_shape
    from torchguide.runner import model_and_inputs

    shape = parse_shape(input_shape) if input_shape else None
    model, inputs, title = model_and_inputs(config, overrides or [], checkpoint, shape, imports or [])
    report = inspect_model(model, inputs)
    if as_json:
        emit_json(report)
    else:
        show_model(report, title, stdout)


@app.command("lr-find")
@guarded_command
def lr_find_cmd(
    config: ConfigOpt, overrides: Overrides = None,
    start_lr: Annotated[float, typer.Option("--start-lr", help="Learning rate of the first step.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Learning rate of the last step.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", min=10, help="Steps at most (the test stops when the loss "
                                       "explodes).")] = 200,
    plot: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--plot", help="PNG of loss against lr (default: NAME-lr-find.png in the config's output.dir).")] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False, *, stdout: Console,
) -> None:
    """The learning-rate range test: a plot of loss against lr and the lr to use."""
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
    stdout.print(f"{result['steps']} steps from lr {start_lr:.0e}: {end}; plot: {escape(str(path))}")
    if result["suggested"] is None:
        stdout.print("[yellow]no learning rate in this range lowered the loss[/]: widen --end-lr, "
                     "or run `guide check` on this config")
    else:
        lr = f"{result['suggested']:.2e}"
        stdout.print(f"suggested lr [bold]{lr}[/] (steepest fall of the smoothed loss): "
                     f"add optimizer.lr={lr}")


# ------------------------------------------------------------------ eval / predict (cli/train.py)

app.command("eval")(eval_cmd)
app.command("predict")(predict_cmd)
app.command("export")(export_cmd)
app.command("eject")(eject_cmd)


# ------------------------------------------------------------------ list / config / data

@app.command("list")
@guarded_command
def list_cmd(
    kind: Annotated[Optional[str], typer.Argument(  # noqa: UP045
        help="What to list: models, datasets, transforms, batch_transforms, collates, samplers, losses, optimizers, "
        "schedulers, layers.", autocompletion=complete_kind, show_default=False)] = None,
    pattern: Annotated[Optional[str], typer.Argument(  # noqa: UP045
        metavar="filter", help="Only the names that contain this, in any case and ignoring _ and - "
        "(`guide list optimizers adam`).", autocompletion=complete_name, show_default=False)] = None,
    as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console, stdout: Console,
) -> None:
    """What the registries hold, with signatures and one-line descriptions."""
    from cli.show import show_list
    from torchguide.errors import GuideError
    from torchguide.registry import REGISTRIES, normalize

    if kind is None:
        counts = {k: len(r.names()) for k, r in REGISTRIES.items()}
        if as_json:
            emit_json(counts)
        else:
            show_list({k: [] for k in counts}, stdout, counts)
        return
    if kind not in REGISTRIES:
        raise GuideError(f"unknown kind {kind!r}", f"choose from {', '.join(REGISTRIES)}")
    names = [n for n in REGISTRIES[kind].names() if normalize(pattern or "") in normalize(n)]
    rows = [REGISTRIES[kind].describe(n) for n in names]
    if as_json:
        emit_json(rows)
    elif rows:
        show_list({kind: rows}, stdout)
    else:
        console.print(f"no {kind} match {escape(repr(pattern))}: see `guide list {kind}`")


@config_app.command("show")
@guarded_command
def config_show(config: ConfigOpt, overrides: Overrides = None, as_json: JsonOpt = False,
                debug: DebugOpt = False) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML."""
    from torchguide.config import load_config, to_yaml

    cfg = load_config(config, overrides or [])
    if as_json:
        emit_json(cfg.model_dump(mode="json"))
    else:
        sys.stdout.write(to_yaml(cfg))


@config_app.command("validate")
@guarded_command
def config_validate(config: ConfigOpt, overrides: Overrides = None, as_json: JsonOpt = False,
                    debug: DebugOpt = False, *, stdout: Console) -> None:
    """Check a config; exit 0 when it is valid, 2 with every problem listed when not."""
    from torchguide.config import load_config

    cfg = load_config(config, overrides or [])
    if as_json:
        emit_json({"valid": True, "name": cfg.name})
    else:
        stdout.print(f"[green]ok[/] {escape(str(config))}: valid ({escape(cfg.model.name)}, "
                     f"{escape(cfg.loss.name)}, {escape(cfg.optimizer.name)})")


@config_app.command("list")
@guarded_command
def config_list(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """The shipped configs, one a line: name (for --config), task and model."""
    from torchguide.config.shipped import shipped_configs

    rows = shipped_configs()
    if as_json:
        emit_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    sys.stdout.write("".join(f"{r['name']:<{width}}  {r['task']:<5}  {r['model']}\n" for r in rows))


@config_app.command("copy")
@guarded_command
def config_copy(
    name: Annotated[str, typer.Argument(help="A shipped config (`guide config list`), e.g. image/digits.")],
    dest: Annotated[Path, typer.Argument(help="The file to write, or a folder to put it in.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the file if it exists.")] = False,
    as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console,
) -> None:
    """Copy a shipped config to edit: guide config copy image/digits my.yaml."""
    from torchguide.config.shipped import copy_config

    copied = copy_config(name, dest, force)
    if as_json:
        emit_json(copied)
    else:
        console.print(f"copied {copied['name']} to {escape(copied['path'])}: edit it, then run "
                      f"{escape(copied['command'])}")


app.add_typer(data_app, name="data")


if __name__ == "__main__":  # `python -m cli.main`: how torch.distributed.run starts each rank
    app()
