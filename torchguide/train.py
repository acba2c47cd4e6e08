"""The training loop: `fit` runs epochs of `train_one_epoch` and `evaluate`.

It is the guide's loop, read top to bottom in `train_one_epoch`: train mode, move the
batch to the device, forward, loss, backward, (clip), step, zero the gradients. The
features hang off it as plain code: autocast precision, gradient accumulation and
clipping, schedulers, early stopping, checkpoints, metrics and progress. Metrics stay
on the device and are read only when the progress bar redraws, so the loop never
waits on the GPU at every step.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich.console import Console
from torch import nn

from torchguide import distributed
from torchguide.checkpoint import (
    REQUIRED,
    BackgroundWriter,
    check_payload,
    restore_rng,
    rng_state,
    save_checkpoint,
    snapshot,
)
from torchguide.config import Config, format_validation, to_yaml
from torchguide.data.collate import Batch
from torchguide.data.loaders import Data, build_data, make_loader, supply
from torchguide.data.samplers import EpochBatchSampler
from torchguide.data.text import Vocab
from torchguide.device import (
    AutocastForward,
    accumulator_dtype,
    autocast,
    inference,
    matmul_peak,
    pick_device,
    pick_precision,
    prepare_device,
    seed_everything,
    set_threads,
    utilisation,
)
from torchguide.distributed import SINGLE, Dist, all_sum, gather
from torchguide.errors import CheckpointError, ConfigError, RunFailed
from torchguide.files import make_folder, temp_name, write_failure, write_text_atomic
from torchguide.interrupt import Interrupted, StopRequest
from torchguide.losses import build_loss, loss_meta
from torchguide.metrics import confusion, predicted, scores
from torchguide.optim import build_scheduler, groups_note, make_optimizer, scheduler_interval
from torchguide.params import freeze, trainable_note
from torchguide.registry import MODELS, one_line
from torchguide.report import MetricsWriter, TrainProgress, write_json


def resolve_target(loss_name: str, num_classes: int) -> tuple[str, int]:
    """(target encoding, number of model outputs) for a loss and a class count."""
    _, target = loss_meta(loss_name)
    if target in ("binary", "binary_signed"):
        if num_classes == 2:
            return target, 1
        if target == "binary_signed":
            raise ConfigError(f"loss.name: {loss_name} is for two classes, the data has {num_classes}")
        return "onehot", num_classes  # one independent logit per class
    return target or "index", num_classes


def build_model(config: Config, data: Data, num_outputs: int, pretrained: bool = True) -> nn.Module:
    """The configured model, with sizes from the data filled in and `model.freeze` applied.

    `pretrained=False` leaves `model.weights` out, for a model whose weights come from a
    checkpoint next (nothing is read or downloaded only to be overwritten).
    """
    facts = supply(MODELS, config.model.name, data.model_facts(num_outputs))
    kwargs = {k: v for k, v in config.model.kwargs.items() if pretrained or k != "weights"}
    model = MODELS.build(config.model.name, **{**facts, **kwargs})  # the config's values win
    if config.model.freeze:
        freeze(model, config.model.freeze)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel / AutocastForward wrappers."""
    while isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel | AutocastForward):
        model = model.module
    return model


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint so a run continues where it stopped."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps so far
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs without improvement, for early stopping
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: dict[str, Any] = field(default_factory=dict)  # the epoch's sums so far


class Meter:
    """Running loss / accuracy sums of an epoch, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.dtype = accumulator_dtype(device)
        self.loss = torch.tensor(state.get("loss", 0.0), dtype=self.dtype, device=device)
        self.correct = torch.tensor(state.get("correct", 0), dtype=torch.long, device=device)
        self.count = state.get("count", 0)
        self.tokens = state.get("tokens", 0)
        self.padded = state.get("padded", 0)

    def add(self, loss: torch.Tensor, output: torch.Tensor, batch: Batch, output_kind: str | None,
            lengths: torch.Tensor | None) -> None:
        n = batch.labels.shape[0]
        self.loss += loss.detach().to(self.dtype) * n
        self.correct += (predicted(output.detach(), output_kind) == batch.labels).sum()
        self.count += n
        if lengths is not None:  # lengths live on the CPU: no sync
            self.tokens += int(lengths.sum())
            self.padded += int(lengths.max()) * n

    def values(self) -> dict[str, float]:
        return self.summarize(float(self.loss), float(self.correct), self.count, self.tokens, self.padded)

    def reduced(self) -> dict[str, float]:
        """values() over every rank's samples (a collective under DDP)."""
        if not distributed.active():
            return self.values()
        totals = torch.tensor([float(self.loss), float(self.correct), self.count, self.tokens, self.padded],
                              dtype=self.dtype, device=self.loss.device)
        return self.summarize(*all_sum(totals).tolist())

    @staticmethod
    def summarize(loss: float, correct: float, count: float, tokens: float, padded: float) -> dict[str, float]:
        count = max(count, 1)
        return {"loss": loss / count, "acc": correct / count, "padding": 1 - tokens / padded if padded else None}

    def state(self) -> dict[str, Any]:
        return {"loss": float(self.loss), "correct": int(self.correct), "count": self.count,
                "tokens": self.tokens, "padded": self.padded}


@dataclass
class Run:
    """Everything `fit` needs, built from a config by `build_run`."""

    config: Config
    data: Data
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    precision: str
    train_loader: Any
    valid_loader: Any | None
    target: str
    output_kind: str | None
    run_dir: Path | None = None
    state: TrainState = field(default_factory=TrainState)
    notes: list[str] = field(default_factory=list)
    scaler: Any = None
    interval: str = "epoch"  # when the scheduler steps: after every optimizer "step" or each "epoch"
    stop: StopRequest = field(default_factory=StopRequest)  # Ctrl-C / SIGTERM, looked at after each step
    dist: Dist = SINGLE  # this process's rank and the job's size under DDP
    train_flops: float = 0.0  # training FLOPs per image (per token for text), measured on one batch
    writes: BackgroundWriter = field(default_factory=BackgroundWriter)  # checkpoint writes off the loop
    nonfinite: torch.Tensor | None = None  # on the device: set once a loss was NaN/inf; read before each checkpoint


def build_run(config: Config, run_dir: Path | None = None, dist: Dist = SINGLE,
              device: torch.device | None = None) -> Run:
    """Build data, model, loss, optimizer and scheduler for a config; nothing runs yet.

    Under DDP (`dist` from `distributed.setup`, with this rank's `device`) every rank
    builds the same run on its shard of the data, with the model wrapped in DDP.
    """
    if device is None:
        device, device_why = pick_device(config.train.device)
    else:
        device_why = f"rank {dist.rank} of {dist.world_size}"
    precision, precision_why = pick_precision(config.train.precision, device)
    seed_everything(config.seed)  # the same initial weights on every rank
    data = build_data(config, ("train", "valid"))
    check_test_split(config, data)
    policy = prepare_device(device, data.task, config.train.deterministic)
    target, num_outputs = resolve_target(config.loss.name, data.num_classes)
    check_loss_weights(config, data, num_outputs)
    output_kind, _ = loss_meta(config.loss.name)
    model = build_model(config, data, num_outputs).to(device)
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    train_loader = make_loader(data.splits["train"], config, data, train=True, device=device, **shard)
    valid = data.splits.get("valid")
    valid_loader = make_loader(valid, config, data, train=False, device=device, **shard) if valid else None
    threads = set_threads(config.train.threads, train_loader.num_workers, dist.local_world_size)
    loss_fn = build_loss(config.loss.name, **config.loss.kwargs).to(device)
    optimizer = make_optimizer(model, config.optimizer)
    groups = groups_note(optimizer) if len(optimizer.param_groups) > 1 else None  # before a scheduler sets lrs
    steps_per_epoch = math.ceil(len(train_loader) / config.train.accumulate)
    total_steps = min(steps_per_epoch * config.train.epochs, config.train.max_steps or 1 << 62)
    scheduler = build_scheduler(config.scheduler.name, optimizer, total_steps, config.train.epochs,
                                **config.scheduler.kwargs)
    notes = [f"device: {device} ({device_why})", f"precision: {precision} ({precision_why})",
             f"threads: {threads} compute + {train_loader.num_workers} loader worker(s)"
             + (" per process" if dist.enabled else "")]
    notes.extend(policy)
    if config.model.freeze:
        notes.append(trainable_note(model))
    if groups:
        notes.append(groups)
    run = Run(config, data, model, loss_fn, optimizer, scheduler, device, precision, train_loader,
              valid_loader, target, output_kind, run_dir, notes=notes, dist=dist)
    run.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    run.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    run.interval = scheduler_interval(config.scheduler.name)
    preflight(run)
    if dist.enabled:
        seed_everything(config.seed + dist.rank)  # dropout and augmentation differ between ranks
        run.model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                        else None)
        notes.append(f"strategy: DistributedDataParallel over {dist.world_size} processes "
                     f"({'nccl' if device.type == 'cuda' else 'gloo'}), global batch "
                     f"{config.data.loader.batch_size * dist.world_size}")
    elif config.train.strategy == "ddp":
        notes.append("strategy: ddp in one process (start more with --nproc N or torchrun)")
    elif config.train.strategy == "dp" and device.type == "cuda" and torch.cuda.device_count() > 1:
        run.model = nn.DataParallel(AutocastForward(model, device.type, precision) if precision != "fp32"
                                    else model)
        notes.append(f"strategy: DataParallel over {torch.cuda.device_count()} GPUs "
                     "(DistributedDataParallel is faster: train.strategy=ddp)")
    return run


def check_test_split(config: Config, data: Data) -> None:
    """Read the test split now (files, headers, labels, classes), so its problems show before training.

    Raises:
        DataError: the test data is missing, unreadable, or has labels the training data lacks.
    """
    if config.data.test is not None and "test" not in data.splits:
        build_data(config, ("test",), classes=data.classes, vocab=data.vocab, vocab_size=data.vocab_size)


def check_loss_weights(config: Config, data: Data, num_outputs: int) -> None:
    """A per-class `loss.weight` / `loss.pos_weight` list must have one value per model output.

    Raises:
        ConfigError: naming the key, the number of values and the class count.
    """
    for key in ("weight", "pos_weight"):
        values = config.loss.kwargs.get(key)
        if isinstance(values, list) and len(values) != num_outputs:
            names = ", ".join(data.classes[:10]) + (" ..." if data.num_classes > 10 else "")
            per = f"one per class ({names})" if num_outputs == data.num_classes else \
                f"{num_outputs} for {config.loss.name} on {data.num_classes} classes"
            raise ConfigError(f"loss.{key}: {len(values)} value(s), but the data has {data.num_classes} classes",
                              f"give {num_outputs}: {per}")


def preflight(run: Run) -> None:
    """Put two samples through model and loss before the first step; a mismatch is a ConfigError.

    Catches, in the user's terms, what would otherwise fail deep inside torch (or as a
    CUDA device-side assert): too few model outputs for the classes, a wrong output
    shape, targets the loss cannot take. Leaves no trace: the RNG is restored and the
    model runs in eval mode without gradients.
    """
    cfg, dataset = run.config, run.train_loader.dataset
    with torch.random.fork_rng(devices=[]), inference(run.model):
        batch = run.train_loader.collate_fn([dataset[i] for i in range(min(2, len(dataset)))])  # not sharded
        batch = batch.to(run.device)
        try:
            with autocast(run.device, run.precision), count_layer_flops(run.model) as flops:
                output = run.model(*batch.inputs)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            shapes = " and ".join(str(tuple(t.shape)) for t in batch.inputs)
            raise ConfigError(f"model.name: {cfg.model.name} fails on a batch of this data (inputs {shapes}): "
                              f"{one_line(exc)}", size_hint(cfg.model.name, batch.inputs[0])) from exc
        check_output(run, output, batch)
        tokens = int(batch.lengths.sum()) if batch.lengths is not None else 0
        forward = flops[0] + recurrent_flops(run.model) * tokens
        run.train_flops = 3 * forward / max(tokens or batch.labels.shape[0], 1)  # forward + backward ~ 3 forwards
        try:
            run.loss_fn(output, batch.target)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"loss.name: {cfg.loss.name} cannot compare the model's output "
                              f"{tuple(output.shape)} with targets {tuple(batch.target.shape)} "
                              f"{str(batch.target.dtype).removeprefix('torch.')}: {one_line(exc)}") from None


def size_hint(model: str, inputs: torch.Tensor) -> str | None:
    """A fix for images smaller than an architecture is known to take (from its pretrained weights)."""
    least = MODELS.entry(model).meta.get("min_size", 1)
    if inputs.dim() == 4 and min(inputs.shape[-2:]) < least:
        return (f"{model} was made for images of at least {least}x{least}: "
                f"add `{{name: resize, size: {least}}}` to data.transforms.train and eval")
    return None


@contextlib.contextmanager
def count_layer_flops(model: nn.Module) -> Iterator[list[int]]:
    """Forward FLOPs of the linear and convolution layers (the bulk of a classifier) during the block,
    by forward hooks; the count is in the yielded list's one item once the block ends.

    (torch's FlopCounterMode counts every op, but its first use imports torch._dynamo,
    over a second of start-up; `guide inspect-model` uses it.)
    """
    total = [0]

    def count(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += 2 * module.in_features * output.numel()
        else:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += 2 * per_output * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    try:
        yield total
    finally:
        for h in hooks:
            h.remove()


def recurrent_flops(model: nn.Module) -> int:
    """Forward FLOPs per token of the LSTM / GRU / RNN layers (FlopCounterMode leaves them out)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
            directions = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                inputs = m.input_size if layer == 0 else m.hidden_size * directions
                total += directions * 2 * gates * m.hidden_size * (inputs + m.hidden_size)
    return total


def check_output(run: Run, output: Any, batch: Batch) -> None:
    problem = output_problem(run.config, run.target, run.data.num_classes, output, batch)
    if problem:
        raise ConfigError(problem)


def output_problem(config: Config, target: str, classes: int, output: Any, batch: Batch) -> str | None:
    """What is wrong with a model's output for the loss: one row per sample, a score per class."""
    name, n = config.model.name, batch.labels.shape[0]
    if not isinstance(output, torch.Tensor):
        return f"model.name: {name} returns {type(output).__name__}; a classifier must return one tensor of scores"
    wanted = (n, classes) if target in ("index", "onehot") else tuple(batch.target.shape)
    if output.dim() != len(wanted) or output.shape[0] != n:
        return (f"model.name: {name} outputs shape {tuple(output.shape)} for {n} samples; "
                f"{config.loss.name} wants {wanted}")
    if output.shape[1:] != wanted[1:]:
        fix = "remove model.num_classes (guide sets it from the data)" if "num_classes" in \
            config.model.kwargs else "make the model's last layer output one score per class"
        return (f"model.name: {name} outputs {output.shape[1]} score(s) per sample, but "
                f"{config.loss.name} on {classes} classes wants {wanted[1]}: {fix}")
    return None


# ------------------------------------------------------------------ the loop

def train_one_epoch(run: Run, progress: TrainProgress) -> dict[str, float]:
    """One pass over the training data; returns the epoch's train loss and accuracy."""
    cfg, model, state = run.config.train, run.model, run.state
    sampler: EpochBatchSampler = run.train_loader.batch_sampler
    sampler.set_epoch(state.epoch, start=state.batch)
    meter = Meter(run.device, state.meter)
    progress.start_epoch(state.epoch, len(sampler) + state.batch, state.batch)
    non_blocking = run.train_loader.pin_memory
    last_batch = len(sampler.batches())
    model.train()
    started, seen, tokens = time.perf_counter(), 0, 0
    for batch in run.train_loader:
        index = state.batch  # this batch's place in the epoch
        state.batch += 1
        stepping = state.batch % cfg.accumulate == 0 or state.batch == last_batch
        lengths = batch.lengths
        batch = batch.to(run.device, non_blocking=non_blocking)  # move the batch to the device
        with gradient_sync(model, stepping):  # DDP: all-reduce gradients only on the last micro-batch
            with autocast(run.device, run.precision):
                output = model(*batch.inputs)  # forward
                loss = run.loss_fn(output, batch.target)  # loss
            bad, stop = agree(run, loss, stepping)
            if bad:
                if cfg.on_nan == "skip":
                    run.optimizer.zero_grad(set_to_none=True)
                    continue
                raise diverged(run, f"batch {state.batch} of epoch {state.epoch + 1}")
            run.nonfinite |= ~torch.isfinite(loss.detach())  # no sync: read when a checkpoint is saved
            scale = cfg.accumulate if not run.dist.enabled else cfg.accumulate / share(run, sampler, index, batch)
            run.scaler.scale(loss / scale).backward()  # backward: gradients add up over micro-batches
        meter.add(loss, output, batch, run.output_kind, lengths)
        seen += batch.labels.shape[0]
        tokens += int(lengths.sum()) if lengths is not None else 0
        if stepping:
            steps = state.step
            optimizer_step(run)
            if state.step > steps:  # not an fp16 step the scaler skipped (overflowing gradients)
                after_step(run, meter)
            if stop or (run.stop.requested and not run.dist.enabled):  # a safe point: no gradients pending
                state.meter = meter.state()
                raise Interrupted(run.stop.requested or "a signal to another rank")
        if progress.due():  # rank 0 shows its own running values; epoch rows are over all ranks
            values = meter.values()
            check_values(run, values["loss"])
            elapsed = time.perf_counter() - started
            rate = (tokens or seen) / elapsed
            progress.update(state.batch, {**values, "rate": rate, "flops": rate * run.train_flops})
        if cfg.max_steps and state.step >= cfg.max_steps:
            break
    state.meter = meter.state()
    values = meter.reduced()
    check_values(run, values["loss"])
    elapsed = max(time.perf_counter() - started, 1e-9) / run.dist.world_size  # rates count every rank's samples
    return {"train_loss": values["loss"], "train_acc": values["acc"], "padding": values["padding"],
            "samples_per_s": seen / elapsed, "tokens_per_s": tokens / elapsed if tokens else None}


def gradient_sync(model: nn.Module, stepping: bool) -> contextlib.AbstractContextManager:
    """DDP's no_sync() for micro-batches that do not end an accumulation group."""
    if stepping or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def share(run: Run, sampler: EpochBatchSampler, index: int, batch: Batch) -> float:
    """This rank's share of the global batch, times the world size (1.0 when shards are equal).

    DDP averages gradients over ranks; weighting each rank's mean loss by its share makes
    that average the mean over the global batch, as one process would compute it.
    """
    return batch.labels.shape[0] * run.dist.world_size / sampler.global_sizes()[index]


def agree(run: Run, loss: torch.Tensor, stepping: bool) -> tuple[bool, bool]:
    """(the loss is not finite, a stop was requested), agreed by all ranks under DDP.

    One process looks at every loss on the CPU (free there) or with on_nan=skip, and
    otherwise leaves NaN to the progress checks so the GPU never waits. Under DDP the
    ranks must decide together, in one small all-reduce per step, or they would part ways.
    """
    cfg = run.config.train
    check = cfg.on_nan == "skip" or run.device.type == "cpu"
    bad = check and not bool(torch.isfinite(loss))
    if not run.dist.enabled:
        return bad, False  # a single process looks at run.stop itself, after the step
    if not (check or stepping):
        return False, False
    flags = torch.tensor([float(bad), float(stepping and run.stop.requested is not None)], device=run.device)
    all_sum(flags)
    return bool(flags[0] > 0), bool(flags[1] > 0)


def optimizer_step(run: Run) -> None:
    """Clip, step, zero the gradients, count the step, and step a per-batch scheduler.

    With fp16 loss scaling, the scaler skips a step whose gradients overflowed and halves
    its scale: such a step is not counted and does not advance the schedule. (Reading the
    scale waits for the GPU; the scaler's own step waits for it at every step anyway.)
    """
    scaling = run.scaler.is_enabled()
    scale = run.scaler.get_scale() if scaling else 0.0
    if run.config.train.grad_clip:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.grad_clip)
    run.scaler.step(run.optimizer)  # step
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)  # zero the gradients for the next batch
    if scaling and run.scaler.get_scale() < scale:  # skipped: inf/NaN gradients
        return
    run.state.step += 1
    if run.scheduler is not None and run.interval == "step":
        run.scheduler.step()


def check_values(run: Run, loss: float) -> None:
    if not math.isfinite(loss):
        raise diverged(run, f"epoch {run.state.epoch + 1} (by batch {run.state.batch})")


def diverged(run: Run, where: str) -> RunFailed:
    """The error of a NaN/inf loss: what to change, and the checkpoint to go on from, if there is one."""
    lr = run.optimizer.param_groups[0]["lr"]
    fixes = [f"lower optimizer.lr (now {lr:g})", "set train.grad_clip"]
    if run.precision != "fp32":
        fixes.append(f"use train.precision=fp32 (now {run.precision})")
    hint = ", ".join(fixes[:-1]) + f" or {fixes[-1]}"
    kept = last_checkpoint(run)
    if kept is not None:
        hint += f"; the last good checkpoint is kept: {kept}"
    return RunFailed(f"the loss became NaN/inf at step {run.state.step}, {where}", hint)


def last_checkpoint(run: Run) -> Path | None:
    """checkpoints/last.pt of the run once every write in flight is done; None when there is none."""
    if run.run_dir is None:
        return None
    run.writes.wait()
    path = run.run_dir / "checkpoints" / "last.pt"
    return path if path.is_file() else None


def after_step(run: Run, meter: Meter) -> None:
    """Per-step bookkeeping: a metrics row every `log_every` steps, a checkpoint every N steps."""
    cfg, state = run.config.train, run.state
    if state.step % cfg.log_every == 0:
        log_step(run, meter)
    every = cfg.checkpoint_every
    if run.run_dir and every != "epoch" and every.steps and state.step % every.steps == 0:
        state.meter = meter.state()
        save_run_checkpoint(run)


def log_step(run: Run, meter: Meter) -> None:
    run.state.history.append({"kind": "step", "epoch": run.state.epoch + 1, "step": run.state.step,
                              "train_loss": meter.values()["loss"],
                              "lr": run.optimizer.param_groups[0]["lr"]})


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
        from torchguide.metrics import to_probs

        result["probs"] = to_probs(torch.cat(outputs), output_kind) if outputs else torch.empty(0)
        result["indices"] = [i for b in loader.batch_sampler.batches() for i in b]
    return result


def monitor_value(run: Run, row: dict[str, Any]) -> tuple[float | None, bool]:
    """The monitored metric of an epoch row and whether larger is better."""
    key = run.config.train.monitor
    if row.get(key) is None:
        key = "train_acc" if key.endswith("acc") else "train_loss"
    return row.get(key), key.endswith("acc")


def end_of_epoch(run: Run, row: dict[str, Any]) -> bool:
    """Track the best epoch; returns True when early stopping says stop."""
    state, early = run.state, run.config.train.early_stopping
    value, larger = monitor_value(run, row)
    min_delta = early.min_delta if early else 0.0
    better = state.best is None or (value > state.best + min_delta if larger else value < state.best - min_delta)
    if better:
        state.best, state.best_epoch, state.bad_epochs = value, row["epoch"], 0
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
    writer = MetricsWriter(run.run_dir) if saves and run.dist.is_main else None
    if writer:
        make_folder(run.run_dir / "checkpoints")
        write_text_atomic(run.run_dir / "config.yaml", to_yaml(run.config))
        writer.rewrite(state.history)
    unit = "tokens" if run.data.task == "text" else "images"
    quiet = quiet or not run.dist.is_main
    started, stopped_early = time.perf_counter(), False
    with StopRequest(notify=console.print if run.dist.is_main else None) as run.stop, \
            TrainProgress(console, cfg.epochs, unit=unit, quiet=quiet) as progress:
        try:
            while state.epoch < cfg.epochs:
                row = run_epoch(run, progress)
                stop = end_of_epoch(run, row)
                state.history.append(row)
                state.epoch, state.batch, state.meter = state.epoch + 1, 0, {}
                if saves:
                    if writer:
                        writer.rewrite(state.history)
                    save_run_checkpoint(run, best=state.best_epoch == row["epoch"])
                progress.end_epoch(row)
                if stop:
                    stopped_early = True
                    break
                if cfg.max_steps and state.step >= cfg.max_steps:
                    break
        except Interrupted as exc:
            if saves:
                if writer:
                    writer.rewrite(state.history)
                exc.checkpoint = save_run_checkpoint(run)
                run.writes.wait()
            raise
        finally:
            run.writes.wait()  # every checkpoint on disk before fit returns or fails
    summary = make_summary(run, time.perf_counter() - started, stopped_early, unit)
    if writer:
        write_json(run.run_dir / "summary.json", summary)
    return summary


def run_epoch(run: Run, progress: TrainProgress) -> dict[str, Any]:
    """Train one epoch, validate, step a per-epoch scheduler; returns the epoch's metrics row."""
    state = run.state
    epoch_started = time.perf_counter()
    train = train_one_epoch(run, progress)
    row = {"kind": "epoch", "epoch": state.epoch + 1, "step": state.step, **train,
           "valid_loss": None, "valid_acc": None, "lr": run.optimizer.param_groups[0]["lr"]}
    if run.valid_loader is not None:
        valid = evaluate(unwrap(run.model), run.valid_loader, run.loss_fn, run.device, run.precision,
                         run.output_kind, run.data.classes, reduce=run.dist.enabled,
                         stop=None if run.dist.enabled else run.stop)  # ranks stop together, at a step
        row.update(valid_loss=valid["loss"], valid_acc=valid["accuracy"])
    row["time_s"] = time.perf_counter() - epoch_started
    if run.scheduler is not None and run.interval == "epoch":
        step_epoch_scheduler(run, row)
    return row


def step_epoch_scheduler(run: Run, row: dict[str, Any]) -> None:
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        value, _ = monitor_value(run, row)
        run.scheduler.step(value)
    else:
        run.scheduler.step()


def make_summary(run: Run, seconds: float, stopped_early: bool, unit: str) -> dict[str, Any]:
    epochs = [r for r in run.state.history if r.get("kind") == "epoch"]
    last = epochs[-1] if epochs else {}
    rate = last.get("tokens_per_s") or last.get("samples_per_s") or 0.0  # global: every rank's samples
    flops, peak, used = utilisation(rate, run.train_flops, matmul_peak(str(run.device), run.precision),
                                    run.dist.world_size)
    return {
        "name": run.config.name, "run_dir": str(run.run_dir) if run.run_dir else None,
        "flops_per_s": flops, "peak_flops_per_s": peak, "utilisation": used,
        "epochs": len(epochs), "steps": run.state.step, "seconds": round(seconds, 2),
        "device": str(run.device), "precision": run.precision,
        "best_epoch": run.state.best_epoch, "best": run.state.best, "monitor": run.config.train.monitor,
        "stopped_early": stopped_early,
        "final": {k: last.get(k) for k in ("train_loss", "train_acc", "valid_loss", "valid_acc")},
        "samples_per_s": last.get("samples_per_s"), "unit": unit,
    }


# ------------------------------------------------------------------ checkpoints

def checkpoint_payload(run: Run) -> dict[str, Any]:
    """What eval, predict and resume need: weights, states, config, classes, vocabulary."""
    data, rng = run.data, rng_state()
    return {
        "task": data.task,
        "config": run.config.model_dump(mode="json"),
        "imports": run.config.imported,  # the user's code, found again by eval, predict and resume
        "classes": data.classes,
        "vocab": data.vocab.itos if data.vocab else None,
        "facts": {"vocab_size": data.vocab_size, "in_channels": data.in_channels,
                  "in_features": data.in_features, "input_shape": data.input_shape},
        "model": unwrap(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(),
        "precision": run.precision,
        "state": asdict(run.state),
        "rng": rng,
        "world": {"size": run.dist.world_size, "global_batch": run.config.data.loader.batch_size
                  * run.dist.world_size, "rng": gather(rng), "meters": gather(run.state.meter)},
        "versions": {"torch": str(torch.__version__)},
    }


def save_run_checkpoint(run: Run, best: bool = False) -> Path:
    """checkpoints/last.pt (and best.pt, the same state, when `best`); with `train.keep_last: K`
    also step-N.pt, K of them. Written on a background thread from a snapshot.

    Under DDP every rank calls this (their RNG states are gathered) and rank 0 writes.
    """
    path = run.run_dir / "checkpoints" / "last.pt"
    refuse_nonfinite(run)
    payload = checkpoint_payload(run)
    if not run.dist.is_main:
        return path
    payload = snapshot(payload)
    keep, step = run.config.train.keep_last, run.state.step

    def write() -> None:
        save_checkpoint(path, payload)
        if best:
            keep_copy(path, path.with_name("best.pt"))
        if keep:
            keep_copy(path, path.with_name(f"step-{step:08d}.pt"))
            for old in sorted(path.parent.glob("step-*.pt"))[:-keep]:
                old.unlink(missing_ok=True)

    run.writes.submit(write)
    return path


def refuse_nonfinite(run: Run) -> None:
    """Raise the divergence error instead of saving weights trained on a NaN/inf loss.

    On a GPU the loss is read only when progress redraws; this reads the run's flag (one
    sync per checkpoint), agreed by all ranks, so the last good checkpoint is never overwritten.
    """
    if run.nonfinite is None:
        return
    bad = all_sum(run.nonfinite.to(torch.float32))  # a fresh tensor: every rank takes part under DDP
    if bool(bad > 0):
        raise diverged(run, f"epoch {run.state.epoch + 1} (found before saving a checkpoint)")


def keep_copy(path: Path, copy: Path) -> None:
    """A second name for a finished checkpoint, put in place atomically: a hard link where the file
    system allows (no second write), else a copy. Later writes of `path` rename a new file over it,
    so the copy keeps this state. Raises RunFailed (`no space left on <copy>` ...)."""
    tmp = copy.with_name(f"{temp_name(copy)}link.tmp")
    try:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, copy)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failure(exc, copy, f"the previous {copy.name} is intact") from exc


MUST_MATCH = ("model", "data", "loss", "seed", "task")
RESUME_REQUIRED = {**REQUIRED, "optimizer": dict, "scaler": dict, "state": dict, "rng": dict}
SCHEDULE_LENGTHS = ("total_steps", "T_max", "total_iters")


def restore(run: Run, payload: dict[str, Any]) -> list[str]:
    """Continue `run` from a checkpoint payload: weights, optimizer, scheduler, RNG, position.

    Returns the config changes that are allowed on resume (epochs, lr, logging, ...);
    a change to the model, data, loss or seed is a CheckpointError naming the field.
    """
    check_payload(payload, "the checkpoint to resume", RESUME_REQUIRED)
    saved = payload["config"]
    now = run.config.model_dump(mode="json")
    for key in MUST_MATCH:
        if must_match(saved, key) != must_match(now, key):
            field = first_difference(must_match(saved, key), must_match(now, key), key)
            raise CheckpointError(f"cannot resume: {field} differs from the checkpoint's config",
                                  "resume with the same value, or start a new run without --resume")
    changes = [f"{first_difference(saved[k], now[k], k)} changed" for k in now
               if k not in MUST_MATCH and saved.get(k) != now[k]]
    if saved["data"]["loader"] != now["data"]["loader"]:
        changes.append(f"{first_difference(saved['data']['loader'], now['data']['loader'], 'data.loader')} changed")
    world = payload.get("world", {"size": 1, "global_batch": saved["data"]["loader"]["batch_size"], "rng": []})
    global_batch = run.config.data.loader.batch_size * run.dist.world_size
    if payload["state"]["batch"] and world["global_batch"] != global_batch:
        raise CheckpointError(f"cannot resume mid-epoch with another global batch: the checkpoint ran "
                              f"{world['size']} process(es) x batch {world['global_batch'] // world['size']}, "
                              f"this run {run.dist.world_size} x {run.config.data.loader.batch_size}",
                              "keep batch_size x processes the same, or resume from an epoch-end checkpoint")
    if world["size"] != run.dist.world_size:
        changes.append(f"processes {world['size']} -> {run.dist.world_size} (random streams restart per rank)")
    if payload["classes"] != run.data.classes:
        raise CheckpointError("cannot resume: the data's classes differ from the checkpoint's",
                              f"the checkpoint has {', '.join(payload['classes'][:10])}")
    if payload.get("vocab") != (run.data.vocab.itos if run.data.vocab else None):
        raise CheckpointError("cannot resume: the vocabulary built from the training data differs from the "
                              "checkpoint's", "the training file changed; resume with the same data or start anew")
    try:
        unwrap(run.model).load_state_dict(payload["model"])
        run.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot resume: the checkpoint does not fit this model ({exc})") from None
    if run.scheduler is not None and payload.get("scheduler") is not None:
        # the schedule's length follows the new config (e.g. more epochs); its position is restored
        lengths = {k: getattr(run.scheduler, k) for k in SCHEDULE_LENGTHS if hasattr(run.scheduler, k)}
        run.scheduler.load_state_dict(payload["scheduler"])
        for key, value in lengths.items():
            if getattr(run.scheduler, key) != value:
                changes.append(f"scheduler {key} {getattr(run.scheduler, key)} -> {value}")
                setattr(run.scheduler, key, value)
    changes.extend(restore_scaler(run.scaler, payload, run.precision))
    run.state = TrainState(**payload["state"])
    same_world = len(world["rng"]) == run.dist.world_size
    restore_rng(world["rng"][run.dist.rank] if same_world else payload["rng"])
    meters = world.get("meters") or [run.state.meter]  # each rank's sums of the epoch so far
    if same_world:
        run.state.meter = meters[run.dist.rank]
    else:  # another number of processes: rank 0 carries all the sums, so their total is unchanged
        run.state.meter = {k: sum(m.get(k, 0) for m in meters) for k in meters[0]} if run.dist.is_main else {}
    return changes


def restore_scaler(scaler: torch.amp.GradScaler, payload: dict[str, Any], precision: str) -> list[str]:
    """Load the loss scaler's state when both the checkpoint and this run scale the loss (fp16).

    A precision change on resume is allowed: the scaler then starts afresh, or is left
    out. Returns the change as a note (checkpoints before the `precision` record show it
    by an empty scaler state).
    """
    saved_state = payload.get("scaler") or {}
    saved = payload.get("precision") or ("fp16" if saved_state else "fp32 or bf16")
    if saved_state and scaler.is_enabled():
        scaler.load_state_dict(saved_state)
    if saved != precision and not (saved == "fp32 or bf16" and precision != "fp16"):
        fresh = " (loss scaling starts afresh)" if scaler.is_enabled() else ""
        return [f"precision {saved} -> {precision}{fresh}"]
    return []


def must_match(config: dict[str, Any], key: str) -> Any:
    """The part of a config section that a resumed run must keep (data.loader may change)."""
    if key == "data" and isinstance(config.get("data"), dict):
        return {k: v for k, v in config["data"].items() if k != "loader"}
    return config.get(key)


def first_difference(a: Any, b: Any, path: str) -> str:
    """The dotted path of the first place two config values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}")
    return f"{path} ({a!r} -> {b!r})" if not isinstance(a, dict | list) else path


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[Config, nn.Module, Vocab | None]:
    """Rebuild the trained model of a checkpoint (on the CPU) with its config and vocabulary."""
    try:
        config = Config.model_validate(payload["config"])
    except ValidationError as exc:
        problems = "; ".join(format_validation(exc)[:3])
        raise CheckpointError(f"the checkpoint's config is not a valid config: {problems}",
                              "use a checkpoint written by guide") from exc
    facts = payload["facts"]
    data = Data(payload["task"], payload["classes"], vocab_size=facts["vocab_size"],
                in_channels=facts["in_channels"], in_features=facts["in_features"],
                input_shape=facts.get("input_shape"))
    _, num_outputs = resolve_target(config.loss.name, len(payload["classes"]))
    model = build_model(config, data, num_outputs, pretrained=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's weights do not fit its model: {exc}") from None
    vocab = Vocab(payload["vocab"]) if payload.get("vocab") else None
    return config, model, vocab

