"""The training loop: `fit` runs epochs of `train_one_epoch` and `evaluate`; `train_step` is one step.

`train_step` is the guide's step, read top to bottom: forward, loss, backward, clip,
step, zero the gradients, with autocast and fp16 loss scaling built in; `guide check`
and `guide lr-find` take the same step. Around it, small helpers add what a long run
needs: gradient accumulation and each rank's weight under DDP (`micro_batch_weight`),
NaN losses and stop requests that all ranks agree on (`Watch`), schedulers, early
stopping, checkpoints, metrics and progress. Metrics stay on the device and are read
only when the progress bar redraws, so the loop never waits on the GPU at every step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.console import Console
from torch import nn

from torchguide.checkpoint import Saver, TrainState, checkpoint_payload
from torchguide.config import Config, to_yaml
from torchguide.contention import ThreadGovernor
from torchguide.data.collate import Batch
from torchguide.data.loaders import Data
from torchguide.data.samplers import EpochBatchSampler
from torchguide.device import accumulator_dtype, autocast, inference, unwrap
from torchguide.distributed import SINGLE, Dist, all_sum
from torchguide.ema import ModelEma, best_as_ema, better_weights
from torchguide.errors import RunFailed
from torchguide.files import make_folder, write_text_atomic
from torchguide.interrupt import Interrupted, StopRequest
from torchguide.loggers import RunLog
from torchguide.metrics import Meter, confusion, predicted, scores, to_probs
from torchguide.optim import scheduler_interval
from torchguide.report import TrainProgress, run_summary, write_json


@dataclass
class Run:
    """A built run (see `build.build_run`) and where it has got to: what `fit` trains."""

    config: Config
    data: Data
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str
    train_loader: Any
    valid_loader: Any | None
    output_kind: str | None  # what the loss wants from the model: logits, log_probs, probs
    dist: Dist = SINGLE  # this process's rank and the job's size under DDP
    run_dir: Path | None = None
    state: TrainState = field(default_factory=TrainState)
    notes: list[str] = field(default_factory=list)  # what was chosen and why, for the run's header
    train_flops: float = 0.0  # training FLOPs per image (per token for text), counted in preflight
    ema: ModelEma | None = None  # the moving average of the weights, with train.ema
    auto: dict[str, Any] = field(default_factory=dict)  # precision, channels_last, compile: value, why, speed-ups
    threads: ThreadGovernor | None = None  # fewer compute threads when the CPU is busy (train.threads: auto)


class Step(NamedTuple):
    loss: torch.Tensor
    output: torch.Tensor
    kept: bool  # False: the loss was refused (NaN/inf) and the gradients dropped
    stepped: bool  # the optimizer stepped (not a micro-batch, and not an fp16 step the scaler skipped)


def train_step(model: nn.Module, batch: Batch, loss_fn: nn.Module, optimizer: torch.optim.Optimizer | None,
               scaler: torch.amp.GradScaler, precision: str, *, weight: float = 1.0, step: bool = True,
               grad_clip: float = 0.0, keep: Callable[[torch.Tensor], bool] = lambda loss: True) -> Step:
    """One training step on a batch already on the device; with `step=False`, a micro-batch whose gradients
    add up to the next step's. `keep(loss)` may refuse a loss after backward (its gradients are dropped)."""
    with gradient_sync(model, step):  # DDP: all-reduce the gradients only when a step uses them
        with autocast(batch.target.device, precision):
            output = model(*batch.inputs)  # forward
            loss = loss_fn(output, batch.target)  # loss
        scaler.scale(loss / weight).backward()  # backward (fp16: scaled, so small gradients survive)
    if not keep(loss):
        optimizer.zero_grad(set_to_none=True)
        return Step(loss, output, kept=False, stepped=False)
    if not step:
        return Step(loss, output, kept=True, stepped=False)
    if grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # clip
    scale = scaler.get_scale() if scaler.is_enabled() else 0.0
    scaler.step(optimizer)  # step (fp16: skipped when the gradients overflowed)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)  # zero the gradients for the next step
    return Step(loss, output, kept=True, stepped=not scaler.is_enabled() or scaler.get_scale() >= scale)


def gradient_sync(model: nn.Module, stepping: bool) -> contextlib.AbstractContextManager:
    """DDP's no_sync() for micro-batches that do not end an accumulation group."""
    if stepping or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def micro_batch_weight(run: Run, sampler: EpochBatchSampler, index: int, batch: Batch) -> float:
    """What a micro-batch's mean loss is divided by: the accumulation steps, and under DDP this rank's share.

    DDP averages gradients over ranks; weighting each rank's mean loss by its share of the
    global batch makes that average the mean over the global batch, as one process would compute it.
    """
    if not run.dist.enabled:
        return run.config.train.accumulate
    share = batch.labels.shape[0] * run.dist.world_size / sampler.global_sizes()[index]
    return run.config.train.accumulate / share


class Watch:
    """NaN/inf losses and stop requests (Ctrl-C, SIGTERM), decided by all ranks together under DDP.

    One process looks at every loss on the CPU (free there) or with on_nan=skip, and
    otherwise leaves NaN to the progress checks so the GPU never waits. Under DDP the
    ranks must decide together, in one small all-reduce per step, or they would part ways.
    """

    def __init__(self, run: Run, stop: StopRequest) -> None:
        self.on_nan, self.device, self.dist, self.stop = run.config.train.on_nan, run.device, run.dist, stop
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=run.device)  # read before each checkpoint
        self.agreed_stop = False

    def keep(self, loss: torch.Tensor, stepping: bool) -> bool:
        """False when the loss is NaN/inf (on any rank)."""
        check = reads_every_loss(self.on_nan, self.device)
        bad = check and not bool(torch.isfinite(loss))
        if self.dist.enabled and (check or stepping):
            flags = torch.tensor([float(bad), float(stepping and self.stop.requested is not None)],
                                 device=self.device)
            all_sum(flags)  # a collective: every rank, every step
            bad, self.agreed_stop = bool(flags[0] > 0), bool(flags[1] > 0)
        if not bad:
            self.nonfinite |= ~torch.isfinite(loss.detach())  # no sync: read when a checkpoint is saved
        return not bad

    def should_stop(self) -> bool:
        """A stop was requested (agreed by every rank under DDP): stop now, at a step with no gradients pending."""
        return self.agreed_stop or (self.stop.requested is not None and not self.dist.enabled)


def reads_every_loss(on_nan: str, device: torch.device) -> bool:
    """Whether each loss is read as it comes (a sync): always on the CPU, where it is free, and with
    on_nan=skip; elsewhere a NaN is found at the next redraw or checkpoint."""
    return on_nan == "skip" or device.type == "cpu"


def train_one_epoch(run: Run, progress: TrainProgress, watch: Watch, saver: Saver, log: RunLog) -> dict[str, float]:
    """One pass over the training data (from where a resumed epoch stopped); returns its train metrics."""
    cfg, state = run.config.train, run.state
    sampler: EpochBatchSampler = run.train_loader.batch_sampler
    sampler.set_epoch(state.epoch, start=state.batch)
    last_batch = len(sampler.batches())
    meter = Meter(run.device, state.meter)
    progress.start_epoch(state.epoch, len(sampler) + state.batch, state.batch)
    run.model.train()
    started, seen, tokens = time.perf_counter(), 0, 0
    for batch in run.train_loader:
        index, state.batch = state.batch, state.batch + 1
        stepping = state.batch % cfg.accumulate == 0 or state.batch == last_batch
        lengths = batch.lengths  # on the CPU: counting tokens never waits for the device
        batch = batch.to(run.device, non_blocking=run.train_loader.pin_memory)  # move the batch to the device
        result = train_step(run.model, batch, run.loss_fn, run.optimizer, run.scaler, run.precision,
                            weight=micro_batch_weight(run, sampler, index, batch), step=stepping,
                            grad_clip=cfg.grad_clip, keep=functools.partial(watch.keep, stepping=stepping))
        if not result.kept:
            if cfg.on_nan == "skip":
                continue
            raise diverged(run, saver, f"batch {state.batch} of epoch {state.epoch + 1}")
        meter.add(result.loss, result.output, batch, run.output_kind, lengths)
        seen += batch.labels.shape[0]
        tokens += int(lengths.sum()) if lengths is not None else 0
        if result.stepped:
            after_step(run, meter, watch, saver, log)
        if stepping and watch.should_stop():
            state.meter = meter.state()
            raise Interrupted(watch.stop.requested or "a signal to another rank")
        if progress.due():  # rank 0 shows its own running values; epoch rows are over all ranks
            values = meter.values()
            check_loss(run, saver, values["loss"])
            rate = (tokens or seen) / (time.perf_counter() - started)
            progress.update(state.batch, {**values, "rate": rate, "flops": rate * run.train_flops})
        if cfg.max_steps and state.step >= cfg.max_steps:
            break
    progress.reached(state.batch)  # the bar ends where the epoch did, not at its last redraw
    state.meter = meter.state()
    values = meter.reduced()  # a collective under DDP
    check_loss(run, saver, values["loss"])
    elapsed = max(time.perf_counter() - started, 1e-9) / run.dist.world_size  # rates count every rank's samples
    return {"train_loss": values["loss"], "train_acc": values["acc"], "padding": values["padding"],
            "samples_per_s": seen / elapsed, "tokens_per_s": tokens / elapsed if tokens else None}


def after_step(run: Run, meter: Meter, watch: Watch, saver: Saver, log: RunLog) -> None:
    """Per-step bookkeeping: count the step, move the EMA, step a per-step scheduler, log every
    `log_every` steps, and save a checkpoint every `checkpoint_every` steps."""
    cfg, state = run.config.train, run.state
    state.step += 1
    if run.threads is not None:
        run.threads.tick(state.epoch)
    if run.ema is not None:
        run.ema.update(unwrap(run.model), state.step)
    if run.scheduler is not None and scheduler_interval(run.config.scheduler.name) == "step":
        run.scheduler.step()
    if state.step % cfg.log_every == 0:
        log.add({"kind": "step", "epoch": state.epoch + 1, "step": state.step,
                 "train_loss": meter.values()["loss"], "lr": run.optimizer.param_groups[0]["lr"]})
    every = cfg.checkpoint_every
    if run.run_dir and every != "epoch" and every.steps and state.step % every.steps == 0:
        state.meter = meter.state()
        save(run, watch, saver)


def check_loss(run: Run, saver: Saver, loss: float) -> None:
    if not math.isfinite(loss):
        raise diverged(run, saver, f"epoch {run.state.epoch + 1} (by batch {run.state.batch})")


def diverged(run: Run, saver: Saver | None, where: str) -> RunFailed:
    """The error of a NaN/inf loss: what to change, and the checkpoint to go on from, if there is one."""
    lr = run.optimizer.param_groups[0]["lr"]
    fixes = [f"lower optimizer.lr (now {lr:g})", "set train.grad_clip"]
    if run.precision != "fp32":
        fixes.append(f"use train.precision=fp32 (now {run.precision})")
    hint = ", ".join(fixes[:-1]) + f" or {fixes[-1]}"
    kept = saver.last() if saver is not None else None
    if kept is not None:
        hint += f"; the last good checkpoint is kept: {kept}"
    return RunFailed(f"the loss became NaN/inf at step {run.state.step}, {where}", hint)


def save(run: Run, watch: Watch, saver: Saver, best: bool = False) -> Path:
    """Write last.pt (and best.pt); every rank calls it, since it holds two collectives, rank 0 writes.

    Weights trained on a NaN/inf loss are never saved: the divergence error is raised
    instead, so the last good checkpoint stays.
    """
    if bool(all_sum(watch.nonfinite.to(torch.float32)) > 0):  # a collective: one sync per checkpoint
        raise diverged(run, saver, f"epoch {run.state.epoch + 1} (found before saving a checkpoint)")
    payload = checkpoint_payload(run)  # a collective: gathers every rank's random state and meter
    as_best = best_as_ema if best and run.state.best_weights == "ema" else None  # best.pt: the EMA scored best
    return saver.save(payload, run.state.step, best=best, best_as=as_best)


def evaluate(model: nn.Module, loader: Any, loss_fn: nn.Module, device: torch.device, precision: str,
             output_kind: str | None, classes: list[str], keep_outputs: bool = False,
             stop: StopRequest | None = None, reduce: bool = False) -> dict[str, Any]:
    """Loss, accuracy, per-class scores and the confusion matrix over a whole loader.

    With `keep_outputs`, also returns `probs` (N, C) and `indices` (dataset order of rows).
    A requested `stop` abandons the pass (raises Interrupted) between batches. With
    `reduce` (DDP, each rank holding a shard) the sums are added over all ranks, so every
    validation sample counts exactly once.
    """
    matrix = torch.zeros(len(classes), len(classes), dtype=torch.long, device=device)
    accumulate = accumulator_dtype(device)
    loss_sum = torch.zeros((), dtype=accumulate, device=device)
    outputs, count = [], 0
    with inference(model):
        for batch in loader:
            if stop is not None:
                stop.check()
            batch = batch.to(device, non_blocking=loader.pin_memory)
            with autocast(device, precision):
                output = model(*batch.inputs)
                loss = loss_fn(output, batch.target)
            n = batch.labels.shape[0]
            loss_sum += loss.to(accumulate) * n
            count += n
            matrix += confusion(batch.labels, predicted(output, output_kind), len(classes))
            if keep_outputs:
                outputs.append(output.float().cpu())
    if reduce:
        all_sum(matrix)
        totals = all_sum(torch.stack([loss_sum, torch.tensor(float(count), dtype=accumulate, device=device)]))
        loss_sum, count = totals[0], int(totals[1])
    result = {"loss": float(loss_sum) / max(count, 1), **scores(matrix.cpu(), classes)}
    if keep_outputs:
        result["probs"] = to_probs(torch.cat(outputs), output_kind) if outputs else torch.empty(0)
        result["indices"] = [i for b in loader.batch_sampler.batches() for i in b]
    return result


def run_epoch(run: Run, progress: TrainProgress, watch: Watch, saver: Saver, log: RunLog) -> dict[str, Any]:
    """Train one epoch, validate (the EMA too), step a per-epoch scheduler; returns the epoch's metrics row."""
    state = run.state
    epoch_started = time.perf_counter()
    train = train_one_epoch(run, progress, watch, saver, log)
    row = {"kind": "epoch", "epoch": state.epoch + 1, "step": state.step, **train,
           "valid_loss": None, "valid_acc": None, "lr": run.optimizer.param_groups[0]["lr"]}
    if run.valid_loader is not None:
        valid = validate(run, unwrap(run.model), watch)
        row.update(valid_loss=valid["loss"], valid_acc=valid["accuracy"])
        if run.ema is not None:
            ema = validate(run, run.ema.module, watch)
            row.update(ema_valid_loss=ema["loss"], ema_valid_acc=ema["accuracy"])
    row["time_s"] = time.perf_counter() - epoch_started
    if run.scheduler is not None and scheduler_interval(run.config.scheduler.name) == "epoch":
        if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            run.scheduler.step(monitor_value(run.config, row)[0])
        else:
            run.scheduler.step()
    return row


def validate(run: Run, model: nn.Module, watch: Watch) -> dict[str, Any]:
    """`evaluate` on the validation data; under DDP over every rank's shard, and the ranks stop together, at a step."""
    return evaluate(model, run.valid_loader, run.loss_fn, run.device, run.precision, run.output_kind,
                    run.data.classes, reduce=run.dist.enabled, stop=None if run.dist.enabled else watch.stop)


def monitor_value(config: Config, row: dict[str, Any]) -> tuple[float | None, bool]:
    """The monitored metric of an epoch row and whether larger is better."""
    key = config.train.monitor
    if row.get(key) is None:
        key = "train_acc" if key.endswith("acc") else "train_loss"
    return row.get(key), key.endswith("acc")


def end_of_epoch(config: Config, state: TrainState, row: dict[str, Any]) -> bool:
    """Track the best epoch (of the raw or the EMA weights); returns True when early stopping says stop."""
    early = config.train.early_stopping
    value, larger = monitor_value(config, row)
    value, weights = better_weights(row, config.train.monitor, value, larger)
    min_delta = early.min_delta if early else 0.0
    better = state.best is None or (value > state.best + min_delta if larger else value < state.best - min_delta)
    if better:
        state.best, state.best_epoch, state.best_weights, state.bad_epochs = value, row["epoch"], weights, 0
    else:
        state.bad_epochs += 1
    return bool(early and state.bad_epochs >= early.patience)


def fit(run: Run, console: Console, quiet: bool = False) -> dict[str, Any]:
    """Train for the configured epochs (or steps); returns the run's summary.

    Writes the run directory as it goes when `run.run_dir` is set: config.yaml,
    metrics.jsonl/csv, checkpoints/last.pt and best.pt, and summary.json (the runner
    draws curves.png afterwards, outside the timed loop).
    Ctrl-C or SIGTERM stops at the next safe point: last.pt is written and Interrupted
    (with its `checkpoint`) propagates.
    """
    cfg, state = run.config.train, run.state
    saves = run.run_dir is not None  # every rank takes part in a checkpoint; rank 0 writes the files
    log = RunLog(run)
    if log.files:
        make_folder(run.run_dir / "checkpoints")
        write_text_atomic(run.run_dir / "config.yaml", to_yaml(run.config))
        log.write()
    saver = Saver(run.run_dir / "checkpoints" if saves else None, cfg.keep_last, writes=run.dist.is_main)
    quiet = quiet or not run.dist.is_main
    started, stopped_early = time.perf_counter(), False
    with contextlib.closing(log), StopRequest(notify=console.print if run.dist.is_main else None) as stop, \
            TrainProgress(console, cfg.epochs, unit=unit_of(run), quiet=quiet) as progress:
        watch = Watch(run, stop)
        if run.threads is not None and not quiet:
            run.threads.say = progress.console.print
        try:
            while state.epoch < cfg.epochs:
                row = run_epoch(run, progress, watch, saver, log)
                stop_now = end_of_epoch(run.config, state, row)
                log.add(row)
                state.epoch, state.batch, state.meter = state.epoch + 1, 0, {}
                if saves:
                    log.write()
                    save(run, watch, saver, best=state.best_epoch == row["epoch"])
                progress.end_epoch(row)
                if stop_now:
                    stopped_early = True
                    break
                if cfg.max_steps and state.step >= cfg.max_steps:
                    break
        except Interrupted as exc:
            if saves:
                log.write()
                exc.checkpoint = save(run, watch, saver)
                saver.wait()
            raise
        finally:
            saver.wait()  # every checkpoint on disk before fit returns or fails
    summary = run_summary(run, time.perf_counter() - started, stopped_early, unit_of(run))
    if log.files:
        write_json(run.run_dir / "summary.json", summary)
    return summary


def unit_of(run: Run) -> str:
    return "tokens" if run.data.task == "text" else "images"
