"""The commands that train a model and use it: train-image, train-text, eval, predict.

cli/main.py registers them on the `guide` app, in the order its help lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli.common import DebugOpt, JsonOpt, Overrides, QuietOpt, emit_json, escape, guarded_command

ResumeOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--resume", help="Checkpoint to continue from, or `auto` for the newest last.pt of this run.")]
NprocOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--nproc", min=1, help="Train in N processes on this machine (DDP, started through torch.distributed.run).")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by guide (best.pt).")]
TrainConfigOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--config", "-c", help="YAML config file, or a shipped config by name: image/digits (`guide config list`).")]
DataOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--data", help="Train on this data with a config chosen from it (printed first), instead of --config.")]
TextColOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--text", help="With --data: the column that holds the texts (default: detected).")]
LabelColOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--label", help="With --data: the column that holds the labels (default: detected).")]
ImportOpt = Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
    "--import", help="Where the .py files the checkpoint's config imported are now, if they moved: their folder, "
    "or a file (repeatable); also more code to import, a file or a module.", show_default=False)]


def train(task: str, config: Path | None, overrides: list[str] | None, resume: str | None, nproc: int | None,
          as_json: bool, quiet: bool, debug: bool, console: Console,
          data: tuple[str | None, ...] = (None, None, None)) -> None:
    from cli.show import show_summary
    from torchguide import distributed
    from torchguide.runner import processes_wanted, train_from_config

    overrides = overrides or []
    source, raw = config_source(task, config, *data, overrides, show=not quiet and not distributed.launched(),
                                console=console)
    nproc = processes_wanted(task, config, [] if raw else overrides, nproc, resume, raw=raw)
    if nproc > 1:  # this process becomes the launcher; each rank runs the same command
        flags = [f for f, on in (("--json", as_json), ("--quiet", quiet), ("--debug", debug)) if on]
        distributed.relaunch(nproc, [f"train-{task}", *source, *overrides,
                                     *(["--resume", resume] if resume else []), *flags])
        return
    summary = train_from_config(task, config, [] if raw else overrides, resume=resume, console=console, quiet=quiet,
                                raw=raw)
    if distributed.launched() and not distributed.env_dist().is_main:
        return
    if as_json:
        emit_json(summary)
    elif not quiet:
        show_summary(summary, console)


def config_source(task: str, config: Path | None, data: str | None, text: str | None, label: str | None,
                  overrides: list[str], *, show: bool, console: Console) -> tuple[list[str], dict | None]:
    """The options that name the config again (for the processes of --nproc), and, for --data, the config chosen
    from the data with the overrides applied (printed, with the reason for each choice, when `show`)."""
    from torchguide.errors import GuideError

    if data is None:
        if config is None:
            raise GuideError("missing option '--config'", "give --config FILE, or --data PATH to train with a config "
                             "chosen from the data")
        if text or label:
            raise GuideError("--text and --label name the columns of --data", "give --data PATH too")
        return ["--config", str(config)], None
    if config is not None:
        raise GuideError("--data and --config together: --data chooses the whole config from the data",
                         "drop --config; or drop --data and set the config's data paths with overrides "
                         "(data.train.root=... or data.train.path=...)")
    from torchguide.recipe import choose_recipe

    recipe = choose_recipe(task, data, text, label).with_overrides(overrides)
    if show:
        console.print(recipe.to_yaml(), end="", markup=False, highlight=False)
    columns = [x for option, value in (("--text", text), ("--label", label)) if value for x in (option, value)]
    return ["--data", data, *columns], recipe.raw


@guarded_command
def train_image(config: TrainConfigOpt = None, overrides: Overrides = None, data: DataOpt = None,
                resume: ResumeOpt = None, nproc: NprocOpt = None,
                as_json: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False, *,
                console: Console) -> None:
    """Train an image classifier: guide train-image --config configs/image/digits.yaml, or --data DIR."""
    train("image", config, overrides, resume, nproc, as_json, quiet, debug, console, (data, None, None))


@guarded_command
def train_text(config: TrainConfigOpt = None, overrides: Overrides = None, data: DataOpt = None,
               text: TextColOpt = None, label: LabelColOpt = None, resume: ResumeOpt = None, nproc: NprocOpt = None,
               as_json: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False, *,
               console: Console) -> None:
    """Train a text classifier: guide train-text --config configs/text/reviews.yaml, or --data FILE."""
    train("text", config, overrides, resume, nproc, as_json, quiet, debug, console, (data, text, label))


@guarded_command
def eval_cmd(
    checkpoint: CheckpointOpt,
    data: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--data", help="Data to evaluate (a folder or file like the training data).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of the config: test or valid.")] = "test",
    predictions: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--predictions", help="Write one row per sample to this CSV.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--batch-size", min=1, help="Samples per batch (default: data.loader.eval_batch_size of the checkpoint's "
        "config, else its batch_size).")] = None,
    plot: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--plot", help="Draw the confusion matrix to this PNG file.")] = None,
    imports: ImportOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console,
    stdout: Console,
) -> None:
    """Loss, accuracy, per-class scores and the confusion matrix of a checkpoint on data."""
    from cli.show import show_eval
    from torchguide.runner import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data=data, split=split, predictions=predictions,
                                 batch_size=batch_size, imports=imports or [], plot=plot)
    if as_json:
        emit_json({k: v for k, v in result.items() if k not in ("probs", "indices")})
    else:
        show_eval(result, stdout)
        if result.get("plot"):
            console.print(f"confusion matrix drawn to {escape(str(result['plot']))}")


@guarded_command
def predict_cmd(
    checkpoint: CheckpointOpt,
    inputs: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045
        help="Image files, or texts for a text model.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--file", help="Read inputs from this file, one per line.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per input.")] = 3,
    imports: ImportOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False, *, stdout: Console,
) -> None:
    """Top-k classes with probabilities for images or texts."""
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
        show_predictions(rows, stdout)
