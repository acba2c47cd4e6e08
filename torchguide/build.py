"""From a config to the parts of a run: data, model, loss, optimizer, scheduler, in that order.

This is the only place a config becomes objects. `build_run` assembles a whole run for
`guide train-*` and `guide lr-find`; `guide check` calls the same steps one at a time so
it can report after each; eval, predict and inspect-model rebuild a model with
`build_model` and its loaders with `make_loader_for`. What the model is told about the
data (classes, channels, vocabulary size, ...) comes from `Data.model_facts`, and
nowhere else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchguide import distributed, tune
from torchguide.config import Config, format_validation
from torchguide.contention import ThreadGovernor
from torchguide.data.loaders import Data, build_data, make_loader, supply
from torchguide.data.text import Vocab
from torchguide.device import (
    AutocastForward,
    pick_device,
    pick_precision,
    prepare_device,
    reuse_freed_memory,
    seed_everything,
    set_threads,
    unwrap,
)
from torchguide.distributed import SINGLE, Dist
from torchguide.ema import ModelEma, ema_note
from torchguide.errors import CheckpointError, ConfigError
from torchguide.loggers import require_tensorboard
from torchguide.loop import Run
from torchguide.losses import build_loss, loss_meta
from torchguide.optim import build_scheduler, groups_note, make_optimizer
from torchguide.params import freeze, trainable_note
from torchguide.preflight import preflight
from torchguide.registry import MODELS


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


def load_data(config: Config, splits: tuple[str, ...] = ("train", "valid"), read_test: bool = True) -> Data:
    """The config's datasets; with `read_test`, also `check_test_split`.

    Raises:
        DataError: missing or unreadable data.
    """
    data = build_data(config, splits)
    if read_test:
        check_test_split(config, data)
    return data


def check_test_split(config: Config, data: Data) -> None:
    """Read the test split now (files, headers, labels), so its problems show before training, not after.

    Raises:
        DataError: the test data is missing, unreadable, or has labels the training data lacks.
    """
    if config.data.test is not None and "test" not in data.splits:
        build_data(config, ("test",), classes=data.classes, vocab=data.vocab, vocab_size=data.vocab_size)


def build_model(config: Config, data: Data, pretrained: bool = True) -> nn.Module:
    """The configured model, sized by the data's facts, with `model.freeze` applied.

    `pretrained=False` leaves `model.weights` out, for a model whose weights come from a
    checkpoint next (nothing is read or downloaded only to be overwritten).
    """
    _, num_outputs = resolve_target(config.loss.name, data.num_classes)
    facts = supply(MODELS, config.model.name, data.model_facts(num_outputs))
    kwargs = {k: v for k, v in config.model.kwargs.items() if pretrained or k != "weights"}
    model = MODELS.build(config.model.name, **{**facts, **kwargs})  # the config's values win
    if config.model.freeze:
        freeze(model, config.model.freeze)
    return model


def build_loss_for(config: Config, data: Data) -> nn.Module:
    """The configured loss, after checking that per-class weights have one value per model output.

    Raises:
        ConfigError: a `loss.weight` / `loss.pos_weight` list of the wrong length.
    """
    _, num_outputs = resolve_target(config.loss.name, data.num_classes)
    for key in ("weight", "pos_weight"):
        values = config.loss.kwargs.get(key)
        if isinstance(values, list) and len(values) != num_outputs:
            names = ", ".join(data.classes[:10]) + (" ..." if data.num_classes > 10 else "")
            per = f"one per class ({names})" if num_outputs == data.num_classes else \
                f"{num_outputs} for {config.loss.name} on {data.num_classes} classes"
            raise ConfigError(f"loss.{key}: {len(values)} value(s), but the data has {data.num_classes} classes",
                              f"give {num_outputs}: {per}")
    return build_loss(config.loss.name, **config.loss.kwargs)


def make_loader_for(config: Config, data: Data, dataset: Dataset, *, train: bool, device: torch.device,
                    dist: Dist = SINGLE) -> DataLoader:
    """A DataLoader for one split, its collate encoding targets as the configured loss wants them."""
    target, _ = resolve_target(config.loss.name, data.num_classes)
    return make_loader(dataset, config, data, train=train, device=device, target=target,
                       rank=dist.rank, world_size=dist.world_size)


def run_steps(config: Config, batches: int) -> int:
    """The optimizer steps of a whole run of `batches` batches an epoch."""
    train = config.train
    return min(math.ceil(batches / train.accumulate) * train.epochs, train.max_steps or 1 << 62)


def build_schedule(config: Config, optimizer: torch.optim.Optimizer, batches: int) -> object:
    """The configured scheduler, told the run's length in optimizer steps."""
    return build_scheduler(config.scheduler.name, optimizer, run_steps(config, batches), config.train.epochs,
                           **config.scheduler.kwargs)


def build_run(config: Config, run_dir: Path | None = None, dist: Dist = SINGLE,
              device: torch.device | None = None, kept: dict[str, Any] | None = None) -> Run:
    """Data, model, loss, optimizer and scheduler for a config, checked on two samples; nothing trains yet.

    Under DDP (`dist` from `distributed.setup`, with this rank's `device`) every rank
    builds the same run on its shard of the data, with the model wrapped in DDP. The `auto`
    precision, memory layout and compile are measured here (`tune`; by rank 0 for all), or
    taken from `kept`, the choices of the checkpoint a run resumes from.
    """
    require_tensorboard(config)  # the loggers asked for can start: checked before any work
    if device is None:
        device, device_why = pick_device(config.train.device)
    else:
        device_why = f"rank {dist.rank} of {dist.world_size}"
    precision, _ = pick_precision(config.train.precision, device)  # what the device cannot do fails here
    seed_everything(config.seed)  # the same initial weights on every rank
    data = load_data(config)
    policy = prepare_device(device, data.task, config.train.deterministic)
    model = build_model(config, data).to(device)
    train_loader = make_loader_for(config, data, data.splits["train"], train=True, device=device, dist=dist)
    valid = data.splits.get("valid")
    valid_loader = make_loader_for(config, data, valid, train=False, device=device, dist=dist) if valid else None
    threads = set_threads(config.train.threads, train_loader.num_workers, dist.local_world_size)
    reuse_freed_memory()  # steps reuse the memory of the ones before instead of asking the OS again
    loss_fn = build_loss_for(config, data).to(device)
    optimizer = make_optimizer(model, config.optimizer)
    groups = groups_note(optimizer) if len(optimizer.param_groups) > 1 else None  # before a scheduler sets lrs
    scheduler = build_schedule(config, optimizer, len(train_loader))
    target, _ = resolve_target(config.loss.name, data.num_classes)
    train_flops = preflight(config, model, loss_fn, train_loader, device, precision, target, data.num_classes)
    batch = tune.first_batch(train_loader, device) if dist.is_main and tune.measuring(config) and not kept else None
    auto = distributed.broadcast(tune.decide(config, model, loss_fn, optimizer, batch, device, threads,
                                             run_steps(config, len(train_loader)), kept))
    precision = auto["precision"].value
    tune.apply(model, auto["channels_last"].value, compiled=False)
    notes = [f"device: {device} ({device_why})", *tune.notes(auto, data.task == "image" and tune.convolves(model)),
             f"threads: {threads} compute + {train_loader.num_workers} loader worker(s)"
             + (" per process" if dist.enabled else ""), *policy]
    if config.model.freeze:
        notes.append(trainable_note(model))
    if groups:
        notes.append(groups)
    if dist.enabled:
        seed_everything(config.seed + dist.rank)  # dropout and augmentation differ between ranks
    model, strategy = wrap_model(model, config, dist, device, precision)
    if strategy:
        notes.append(strategy)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = ModelEma(unwrap(model), config.train.ema) if config.train.ema is not None else None
    if ema is not None:
        notes.append(ema_note(config.train, len(train_loader)))
    tune.apply(unwrap(model), False, compiled=auto["compile"].value, dynamic=True if data.task == "text" else None)
    return Run(config, data, model, loss_fn, optimizer, scheduler, scaler, device, precision, train_loader,
               valid_loader, loss_meta(config.loss.name)[0], dist=dist, run_dir=run_dir, notes=notes,
               train_flops=train_flops, ema=ema, auto=tune.summary(auto),
               threads=ThreadGovernor.for_run(config, device, threads))


def wrap_model(model: nn.Module, config: Config, dist: Dist, device: torch.device,
               precision: str) -> tuple[nn.Module, str | None]:
    """The model in DistributedDataParallel (a job of several processes) or DataParallel (train.strategy dp
    on several GPUs), with a note that says which; unchanged in one process on one device."""
    if dist.enabled:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                  else None)
        return ddp, (f"strategy: DistributedDataParallel over {dist.world_size} processes "
                     f"({'nccl' if device.type == 'cuda' else 'gloo'}), global batch "
                     f"{config.data.loader.batch_size * dist.world_size}")
    if config.train.strategy == "ddp":
        return model, "strategy: ddp in one process (start more with --nproc N or torchrun)"
    if config.train.strategy == "dp" and device.type == "cuda" and torch.cuda.device_count() > 1:
        inner = AutocastForward(model, device.type, precision) if precision != "fp32" else model
        return nn.DataParallel(inner), (f"strategy: DataParallel over {torch.cuda.device_count()} GPUs "
                                        "(DistributedDataParallel is faster: train.strategy=ddp)")
    return model, None


def build_from_checkpoint(payload: dict[str, Any]) -> tuple[Config, nn.Module, Vocab | None]:
    """The trained model of a checkpoint (on the CPU), with its config and vocabulary.

    Raises:
        CheckpointError: the checkpoint's config is not valid, or its weights do not fit its model.
    """
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
    model = build_model(config, data, pretrained=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's weights do not fit its model: {exc}") from exc
    vocab = Vocab(payload["vocab"]) if payload.get("vocab") else None
    return config, model, vocab
