"""What the commands do, end to end: train from a config, evaluate or predict with a checkpoint.

The CLI parses and prints; these functions do the work and return plain data.
"""

from __future__ import annotations

import contextlib
import csv
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from torchguide import distributed
from torchguide.build import build_from_checkpoint, build_loss_for, build_model, build_run, load_data, make_loader_for
from torchguide.checkpoint import load_checkpoint, restore
from torchguide.config import Config, load_config
from torchguide.data.image import load_image, require_image_files
from torchguide.data.loaders import build_data
from torchguide.data.transforms import build_pipeline
from torchguide.device import autocast, gpus_for, inference, pick_device, unwrap
from torchguide.distributed import Dist
from torchguide.errors import CheckpointError, ConfigError, DataError, GuideError, RunFailed
from torchguide.interrupt import Interrupted
from torchguide.loop import Run, evaluate, fit
from torchguide.losses import loss_meta
from torchguide.metrics import to_probs
from torchguide.report import plot_confusion, plot_curves, write_json
from torchguide.rundir import clean_leftovers, find_resume, leftovers_note, new_run_dir, take_lock
from torchguide.usercode import import_checkpoint_code


def processes_wanted(task: str, path: str | Path | None, overrides: list[str], nproc: int | None,
                     resume: str | None = None, raw: dict[str, Any] | None = None) -> int:
    """How many local processes `guide train-*` should start; 1 means: train in this one.

    `--nproc N` asks for N; without it a machine with several GPUs gets one process per
    GPU under train.strategy auto or ddp. Inside a torchrun job the processes exist already.
    The config is checked here first, so a mistake is reported once, not by every rank.
    """
    if distributed.launched():
        if nproc and nproc > 1:
            raise GuideError("--nproc inside a torchrun job", "drop --nproc: torchrun started the processes already")
        return 1
    import_resume_code(resume)
    config = load_config(path, overrides, task=task, raw=raw)
    if nproc:
        if nproc > 1 and config.train.strategy in ("single", "dp"):
            raise ConfigError(f"train.strategy: {config.train.strategy} cannot run in --nproc {nproc} processes",
                              "use train.strategy=auto or ddp")
        if nproc > 1 and gpus_for(config.train.device):  # CUDA processes: one GPU each
            distributed.check_gpu_count(nproc, gpus_for(config.train.device))
        return nproc
    gpus = gpus_for(config.train.device) if config.train.device in ("auto", "cuda") else 0
    return gpus if config.train.strategy in ("auto", "ddp") and gpus > 1 else 1


def train_from_config(task: str, path: str | Path | None, overrides: list[str], *, resume: str | None = None,
                      console: Console, quiet: bool = False, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and check the config (the file `path`, or the mapping `raw`), build the run, train, then test the
    best checkpoint.

    Under torchrun (or `--nproc`) this runs in every process: DDP on each rank's shard,
    rank 0 writing the run directory and printing.
    """
    import_resume_code(resume)
    config = load_config(path, overrides, task=task, raw=raw)
    dist, device = distributed.setup(config.train.strategy, config.train.device)
    try:
        return train_job(config, task, path, overrides, resume, dist, device, console, quiet or not dist.is_main)
    finally:
        distributed.teardown()


def import_resume_code(resume: str | None) -> None:
    """Import the code a `--resume` checkpoint was trained with, before the config is checked.

    Files that are gone are left to the config's own `imports:`; `--resume auto` finds its
    checkpoint through the config, so the config's `imports:` alone count there.
    """
    if resume and resume != "auto":
        import_checkpoint_code(load_checkpoint(resume, mmap=True), skip_missing=True)


def open_checkpoint(path: str | Path, imports: Sequence[str] = ()) -> dict[str, Any]:
    """Load a checkpoint and import the code it was trained with (`imports`: --import PATH, see
    `import_checkpoint_code`); raises CheckpointError."""
    payload = load_checkpoint(path)
    import_checkpoint_code(payload, imports)
    return payload


def train_job(config: Config, task: str, path: str | Path, overrides: list[str], resume: str | None,
              dist: Dist, device: torch.device | None, console: Console, quiet: bool) -> dict[str, Any]:
    """Train in the run directory this process owns (rank 0 holds its lock) and release it at the end."""
    with contextlib.ExitStack() as stack:
        payload, checkpoint, run_dir = None, None, None
        if resume and dist.is_main:  # rank 0 reads the checkpoint and hands it to the others
            checkpoint, run_dir = find_resume(Path(config.output.dir), config.name, resume)
            if run_dir is not None:
                lock = take_lock(run_dir)  # before the checkpoint is read
                stack.callback(lock.release)
                if lock.took_over() and not quiet:
                    console.print(f"[dim]{lock.took_over()}[/]")
            payload = load_checkpoint(checkpoint)
        if resume:
            checkpoint, payload = distributed.broadcast((checkpoint, payload))
        kept = payload.get("auto") if payload is not None else None  # a resume keeps its measured choices
        run = build_run(config, dist=dist, device=device, kept=kept)  # all checked before the run directory is made
        changes = restore(run, payload) if payload is not None else None
        if dist.is_main:
            if run_dir is None:
                run_dir, lock = new_run_dir(Path(config.output.dir), config.name)
                stack.callback(lock.release)
                if checkpoint is not None:
                    console.print(f"{checkpoint} lies in no run directory: this run goes on in a new one, {run_dir}")
            note = leftovers_note(clean_leftovers(run_dir))
            if note and not quiet:
                console.print(f"[dim]{note}[/]")
        run.run_dir = distributed.broadcast(run_dir)
        return train_in(run, changes, checkpoint, task, path, overrides, console, quiet)


def train_in(run: Run, changes: list[str] | None, checkpoint: Path | None, task: str, path: str | Path,
             overrides: list[str], console: Console, quiet: bool) -> dict[str, Any]:
    """Train a built (and, when resuming, restored) run, draw the curves and test the best checkpoint.

    `changes` are the config changes the resume allowed, None for a fresh run.
    """
    dist, config = run.dist, run.config
    if changes is not None:
        for change in changes:
            if not quiet:
                console.print(f"[dim]resume: {change}[/]")
        if dist.is_main:
            console.print(f"resuming from {checkpoint} (epoch {run.state.epoch + 1}, "
                          f"batch {run.state.batch}, step {run.state.step})")
    if not quiet:
        for note in run.notes:
            console.print(f"[dim]{note}[/]")
        console.print(f"[dim]run directory: {run.run_dir}[/]")
    try:
        summary = fit(run, console, quiet=quiet)
    except Interrupted as exc:
        raise stopped(run, exc, task, path, overrides) from exc
    except RuntimeError as exc:
        if distributed.lost_peer(exc):
            raise RunFailed("another process of the job stopped, so this one cannot go on",
                            "the first failing rank's message says why") from exc
        raise
    if dist.is_main:
        plot_curves(run.state.history, run.run_dir / "curves.png")
    if config.data.test is not None:
        if dist.is_main:  # one process, the whole test set
            summary["test"] = score_best(run)
            write_json(run.run_dir / "summary.json", summary)
        distributed.barrier()
    return summary


def stopped(run: Run, exc: Interrupted, task: str, path: str | Path, overrides: list[str]) -> RunFailed:
    """The one-line report of a run stopped by a signal, with the command that continues it."""
    state = run.state
    nproc = distributed.relaunched_nproc()
    launcher = ["guide"] + (["--nproc", str(nproc)] if nproc else [])
    config = path if path is not None else run.run_dir / "config.yaml"  # a config given as a mapping is there
    command = shlex.join([*launcher, f"train-{task}", "--config", str(config), *overrides,
                          "--resume", str(exc.checkpoint)])
    if distributed.launched() and nproc is None:
        command += " (under the same torchrun launch)"
    return RunFailed(f"stopped by {exc.signal_name} at epoch {state.epoch + 1}, batch {state.batch} "
                     f"(step {state.step}); saved {exc.checkpoint}", f"continue with: {command}")


def score_best(run: Run) -> dict[str, Any]:
    """Loss, accuracy and macro F1 of the best checkpoint on the config's test data."""
    config, model = run.config, unwrap(run.model)
    best = run.run_dir / "checkpoints" / "best.pt"
    if best.exists():
        model.load_state_dict(load_checkpoint(best)["model"])
    test = build_data(config, ("test",), classes=run.data.classes, vocab=run.data.vocab,
                      vocab_size=run.data.vocab_size)
    loader = make_loader_for(config, test, test.splits["test"], train=False, device=run.device)
    result = evaluate(model, loader, run.loss_fn, run.device, run.precision, run.output_kind, run.data.classes)
    return {"loss": result["loss"], "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
            "samples": result["samples"]}


def eval_data(config: Config, payload: dict[str, Any], vocab: Any, split: str, data: str | None) -> Any:
    """The dataset to evaluate: --data, or a split of the checkpoint's config."""
    if split not in ("train", "valid", "test"):
        raise GuideError(f"--split {split!r}: choose train, valid or test")
    if data is None and split == "test" and config.data.test is None:
        raise DataError("the checkpoint's config has no test data", "pass --data PATH or --split valid")
    if data is None and split == "valid" and config.data.valid is None:
        raise DataError("the checkpoint's config has no validation data", "pass --data PATH")
    needs_train = split == "train" or (split == "valid" and data is None and config.data.valid.split)
    splits = ("train", "valid") if needs_train else (split,)
    facts = payload["facts"]
    bundle = build_data(config, splits, classes=payload["classes"], vocab=vocab,
                        vocab_size=facts["vocab_size"], data_path=data)
    return bundle, bundle.splits[split]


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, split: str = "test",
                        predictions: Path | None = None, batch_size: int | None = None,
                        imports: Sequence[str] = (), plot: Path | None = None) -> dict[str, Any]:
    """Metrics of a checkpoint on data, optionally writing per-sample predictions to a CSV and the
    confusion matrix to a PNG (`plot`)."""
    payload = open_checkpoint(path, imports)
    config, model, vocab = build_from_checkpoint(payload)
    if batch_size:
        config.data.loader.eval_batch_size = batch_size
    device, _ = pick_device("auto")
    bundle, dataset = eval_data(config, payload, vocab, split, data)
    loader = make_loader_for(config, bundle, dataset, train=False, device=device)
    loss_fn = build_loss_for(config, bundle).to(device)
    output_kind, _ = loss_meta(config.loss.name)
    result = evaluate(model.to(device), loader, loss_fn, device, "fp32", output_kind, payload["classes"],
                      keep_outputs=predictions is not None)
    result.update(checkpoint=str(path), data=data or f"{split} split")
    if predictions is not None:
        write_predictions(predictions, dataset, result, payload["classes"])
        result["predictions"] = str(predictions)
        result.pop("probs")
        result.pop("indices")
    if plot is not None:
        title = f"{path} on {result['data']}: accuracy {result['accuracy']:.4f}"
        result["plot"] = str(plot_confusion(result, plot, title))
    return result


def write_predictions(path: Path, dataset: Any, result: dict[str, Any], classes: list[str]) -> None:
    probs, indices = result["probs"], result["indices"]
    confidence, pred = probs.max(dim=1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "true", "predicted", "confidence"])
            for row, i in enumerate(indices):
                writer.writerow([sample_name(dataset, i), classes[dataset.targets[i]],
                                 classes[int(pred[row])], f"{float(confidence[row]):.4f}"])
    except OSError as exc:
        raise DataError(f"cannot write predictions to {path}: {exc.strerror or exc}") from exc


def sample_name(dataset: Any, i: int) -> str:
    if hasattr(dataset, "samples"):
        return dataset.samples[i][0]
    if dataset.texts is not None:
        return dataset.texts[i]
    return " ".join(map(str, dataset.ids[i].tolist()))


def predict(path: str | Path, items: list[str], top_k: int = 3, imports: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for image files or texts."""
    if not items:
        raise DataError("nothing to predict", "give image files or texts, or --file FILE")
    payload = open_checkpoint(path, imports)
    config, model, vocab = build_from_checkpoint(payload)
    classes = payload["classes"]
    if payload["task"] == "image":
        mode = "L" if payload["facts"]["in_channels"] == 1 else "RGB"
        transform = build_pipeline(config.data.transforms.eval)
        require_image_files(items)  # headers only: missing, unreadable and oversized files refused first
        inputs = (transform.finish(torch.stack([transform.sample(load_image(item, mode)) for item in items])),)
    else:
        from torchguide.data.collate import pad_to_longest

        if vocab is None:
            raise CheckpointError("this text model was trained on token ids, not texts; it cannot read text")
        seqs = [(torch.tensor(vocab.encode(t, config.data.vocab.max_len)), 0) for t in items]
        inputs = pad_to_longest()(seqs).inputs
    with inference(model), autocast(torch.device("cpu"), "fp32"):
        probs = to_probs(model(*inputs), loss_meta(config.loss.name)[0])
    k = min(top_k, len(classes))
    values, indices = probs.topk(k, dim=1)
    return [{"input": item, "top": [{"class": classes[int(j)], "probability": float(v)}
                                    for v, j in zip(values[row], indices[row], strict=True)]}
            for row, item in enumerate(items)]


def model_and_inputs(config_path: str | Path | None, overrides: list[str], checkpoint: str | Path | None,
                     input_shape: tuple[int, ...] | None, imports: Sequence[str] = (),
                     ) -> tuple[Any, tuple[torch.Tensor, ...], str]:
    """A model and a batch for `guide inspect-model`: one real batch of the config's data, or, for a
    checkpoint, a random batch shaped like its training data (or `input_shape`)."""
    if (config_path is None) == (checkpoint is None):
        raise GuideError("give --config or --checkpoint (one of them)")
    if checkpoint is not None:
        payload = open_checkpoint(checkpoint, imports)
        _, model, _ = build_from_checkpoint(payload)
        facts = payload["facts"]
        if payload["task"] == "text":
            length = input_shape[-1] if input_shape else 32
            tokens = torch.randint(2, facts["vocab_size"], (1, length))
            return model, (tokens, torch.tensor([length])), f"{checkpoint} with random tokens"
        shape = input_shape or ((1, *facts["input_shape"]) if facts.get("input_shape") else None)
        if shape is None:
            raise GuideError("this checkpoint does not record its input size", "pass --input-shape N,C,H,W")
        return model, (torch.randn(shape),), f"{checkpoint} with random input"
    config = load_config(config_path, overrides)
    data = load_data(config, ("train",), read_test=False)
    model = build_model(config, data)
    if input_shape:
        return model, (torch.randn(input_shape),), f"{config.model.name} with random input"
    loader = make_loader_for(config, data, data.splits["train"], train=False, device=torch.device("cpu"))
    loader.batch_sampler.set_epoch(0, start=len(loader.batch_sampler) // 2)  # a batch of typical length
    batch = next(iter(loader))
    return model, batch.inputs, f"{config.model.name} on one batch of {config.data.train.name}"
