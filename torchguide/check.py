"""`guide check`: one real batch forward and backward, and a verdict on everything it shows.

The guide's habit, automated: build the config's data, model, loss and optimizer with
the same steps as a run (`torchguide.build`), put one training batch through the
training step (`loop.train_step`), and look at what comes out before any long run.
Every finding is `ok`, `warn` (works, but probably not what you meant) or `fail` (would
fail, or is very likely wrong), with a fix.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from torchguide.build import (
    build_loss_for,
    build_model,
    check_test_split,
    load_data,
    make_loader_for,
    resolve_target,
)
from torchguide.config import Config
from torchguide.device import autocast, pick_device, pick_precision, prepare_device, seed_everything
from torchguide.errors import GuideError
from torchguide.loop import train_step
from torchguide.losses import loss_meta, takes_soft_targets
from torchguide.optim import make_optimizer
from torchguide.preflight import output_problem
from torchguide.registry import one_line


@dataclass
class Finding:
    area: str
    status: str  # ok | warn | fail
    text: str
    fix: str | None = None


class Stop(Exception):
    """Nothing further can be checked."""


def run_check(config: Config) -> list[Finding]:
    """All findings for a config, in the order a run would meet them."""
    findings: list[Finding] = []
    try:
        Checker(config, findings).run()
    except Stop:
        pass
    return findings


class Checker:
    def __init__(self, config: Config, findings: list[Finding]) -> None:
        self.config, self.findings = config, findings

    def add(self, area: str, status: str, text: str, fix: str | None = None) -> None:
        self.findings.append(Finding(area, status, text, fix))

    def fail(self, area: str, text: str, fix: str | None = None) -> None:
        self.add(area, "fail", text, fix)
        raise Stop

    def run(self) -> None:
        cfg = self.config
        self.device, _ = pick_device(cfg.train.device)
        self.precision, _ = pick_precision(cfg.train.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        seed_everything(cfg.seed)
        self.check_data()
        prepare_device(self.device, self.data.task, cfg.train.deterministic)
        self.check_model()
        self.check_loss()
        self.check_step()
        self.check_speed()

    # ---------------------------------------------------------------- data

    def check_data(self) -> None:
        cfg = self.config
        try:
            self.data = load_data(cfg, read_test=False)
        except GuideError as exc:
            self.fail("data", exc.lines()[0], "see `guide data inspect --config ...`")
        try:
            check_test_split(cfg, self.data)
        except GuideError as exc:
            self.fail("data", exc.lines()[0], "the run would stop on it before its first step")
        train = self.data.splits["train"]
        counts = Counter(train.targets)
        smallest, largest = min(counts.values()), max(counts.values())
        valid = self.data.splits.get("valid")
        self.add("data", "ok", f"train {len(train)} samples, valid {len(valid) if valid else 0}; "
                 f"{self.data.num_classes} classes, {smallest}-{largest} training samples each")
        if largest > 10 * smallest:
            self.add("data", "warn", f"classes are imbalanced {largest}:{smallest}",
                     "accuracy will flatter the model: look at macro F1 in `guide eval`")
        self.target, self.outputs = resolve_target(cfg.loss.name, self.data.num_classes)
        self.loader = make_loader_for(cfg, self.data, train, train=True, device=self.device)
        self.loader.batch_sampler.set_epoch(0)
        batches = iter(self.loader)
        self.batch = next(batches)
        started = time.perf_counter()
        next(batches, None)  # the second batch: loading time without the loader's start-up
        self.load_s = time.perf_counter() - started
        shapes = ", ".join(f"{tuple(t.shape)} {dtype(t)}" for t in self.batch.inputs)
        self.add("data", "ok", f"one batch: inputs {shapes}; targets {tuple(self.batch.target.shape)} "
                 f"{dtype(self.batch.target)}")
        self.batch = self.batch.to(self.device)

    # ---------------------------------------------------------------- model and loss

    def check_model(self) -> None:
        cfg = self.config
        self.model = build_model(cfg, self.data).to(self.device)
        self.model.train()
        self.output = self.forward()
        problem = output_problem(cfg, self.target, self.data.num_classes, self.output, self.batch)
        if problem:
            self.fail("model", problem.removeprefix("model.name: "))
        params = sum(p.numel() for p in self.model.parameters())
        self.add("model", "ok", f"{cfg.model.name}: {params:,} parameters; output {tuple(self.output.shape)} "
                 f"for {cfg.loss.name} on {self.data.num_classes} classes")

    @contextlib.contextmanager
    def same_randomness(self, seed: int = 0) -> Iterator[None]:
        """A fixed RNG for the block (dropout ...), so two forward passes differ only by the weights."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def forward(self) -> torch.Tensor:
        """A training-mode forward pass in `same_randomness`, without gradients (a step takes its own)."""
        with self.same_randomness(), torch.no_grad():
            try:
                with autocast(self.device, self.precision):
                    return self.model(*self.batch.inputs)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                shapes = " and ".join(str(tuple(t.shape)) for t in self.batch.inputs)
                self.fail("model", f"{self.config.model.name} fails on a batch (inputs {shapes}): {one_line(exc)}",
                          "see where with `guide inspect-model --config ...`")

    def check_loss(self) -> None:
        cfg = self.config
        name = cfg.loss.name
        wanted, encoding = loss_meta(name)
        self.check_activation(name, wanted)
        self.check_targets(name, encoding or "index")
        try:
            self.loss_fn = build_loss_for(cfg, self.data).to(self.device)
        except GuideError as exc:
            self.fail("loss", exc.lines()[0], exc.hint)
        try:
            self.loss = self.loss_fn(self.output, self.batch.target)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            self.fail("loss", f"{name} fails on the output and targets: {one_line(exc)}")
        value = float(self.loss.detach())
        if not math.isfinite(value):
            self.fail("loss", f"the first loss is {value}", "look for log(0) or a division by zero in the model")
        expected = initial_loss(name, self.outputs)
        if expected is None:
            self.add("loss", "ok", f"first loss {value:.4f}")
        elif value > 3 * expected:
            self.fail("loss", f"first loss {value:.4f}, expected about {expected:.4f} "
                      f"({'ln ' + str(self.outputs) if self.outputs > 1 else 'ln 2'}) at initialisation",
                      "the outputs are far too large at the start: check the last layer's scale and the labels")
        elif value > 1.5 * expected or value < expected / 3:
            self.add("loss", "warn", f"first loss {value:.4f}, expected about {expected:.4f} at initialisation",
                     "check the last layer and the label encoding")
        else:
            self.add("loss", "ok", f"first loss {value:.4f}, expected about {expected:.4f} at initialisation")

    def check_activation(self, name: str, wanted: str | None) -> None:
        seen = observed_kind(self.output)
        if wanted == "log_probs" and seen != "log_probs":
            what = "probabilities (a Softmax last)" if seen == "probs" else "raw scores (no LogSoftmax)"
            self.fail("loss", f"{name} wants log-probabilities, but the model outputs {what}",
                      "end the model with nn.LogSoftmax(dim=1)" + (", or use loss cross_entropy"
                                                                  if name in ("nll", "custom_nll") else ""))
        if wanted == "probs" and seen == "logits":
            self.fail("loss", f"{name} wants probabilities in [0, 1], but the model outputs raw scores",
                      "use bce_with_logits (safer), or end the model with nn.Sigmoid()")
        if wanted == "logits" and seen == "probs" and self.output.shape[-1] > 1:
            self.fail("loss", f"{name} applies log-softmax itself, but the model already outputs probabilities "
                      "(a Softmax last): training will be slow and unstable", "remove the final Softmax")
        if wanted == "logits" and seen == "probs":
            self.add("loss", "warn", f"the outputs all lie in [0, 1]: a Sigmoid last? {name} applies it itself",
                     "remove a final Sigmoid")
        elif wanted == "logits" and seen == "log_probs":
            self.add("loss", "warn", f"the model ends with LogSoftmax; {name} applies log-softmax again "
                     "(harmless, but not what the guide does)", "use loss nll, or drop the LogSoftmax")
        else:
            self.add("loss", "ok", f"{name} wants {wanted or 'any scores'}; the model outputs {seen}")

    def check_targets(self, name: str, encoding: str) -> None:
        target, classes = self.batch.target, self.output.shape[-1]
        if target.dtype.is_floating_point and target.shape == self.output.shape and takes_soft_targets(name):
            self.add("targets", "ok", f"{dtype(target)} {tuple(target.shape)} class probabilities "
                     f"(data.batch_transforms mixed this batch), as {name} takes")
            return
        if encoding == "index":
            if target.dtype.is_floating_point:
                self.fail("targets", f"{name} wants class indices (int64), the targets are {dtype(target)}",
                          "return integer labels from the dataset / collate")
            low, high = int(target.min()), int(target.max())
            if low < 0 or high >= classes:
                self.fail("targets", f"targets run from {low} to {high}, but the model has {classes} outputs "
                          f"(0..{classes - 1})", "labels must be 0..classes-1: check the label mapping")
        elif target.shape != self.output.shape:
            indices = not target.dtype.is_floating_point or target.dim() == 1
            what = f"class indices {tuple(target.shape)}" if indices else f"shape {tuple(target.shape)}"
            self.fail("targets", f"{name} compares outputs {tuple(self.output.shape)} with targets element by "
                      f"element, but the targets are {what}",
                      "one-hot encode the targets (guide's collates do it for this loss: check data.collate)")
        self.add("targets", "ok", f"{dtype(target)} {tuple(target.shape)}, as {name} wants")

    # ---------------------------------------------------------------- backward and one step

    def check_step(self) -> None:
        """One training step, as a run takes it, watching which parameters get a gradient."""
        cfg = self.config
        try:
            self.optimizer = make_optimizer(self.model, cfg.optimizer)
        except GuideError as exc:
            self.optimizer, problem = None, exc
        before = float(self.loss.detach())
        with watch_gradients(self.model) as gradients, self.same_randomness():
            train_step(self.model, self.batch, self.loss_fn, self.optimizer, self.scaler, self.precision,
                       step=self.optimizer is not None)
        self.check_gradients(gradients)
        if self.optimizer is None:
            self.fail("step", "; ".join(getattr(problem, "problems", [problem.message])), problem.hint)
        with torch.no_grad():
            after = float(self.loss_fn(self.forward(), self.batch.target))  # the same batch, after the step
        lr = self.optimizer.param_groups[0]["lr"]
        if after == before:
            self.fail("step", f"one optimizer step left the loss at {before:.4f}",
                      f"check optimizer.lr (now {lr:g}) and that the parameters require grad")
        if after > 1.5 * before:
            self.add("step", "warn", f"one step raised the loss {before:.4f} -> {after:.4f}",
                     f"optimizer.lr {lr:g} may be too high: try `guide lr-find`")
        else:
            self.add("step", "ok", f"one {cfg.optimizer.name} step (lr {lr:g}): loss {before:.4f} -> {after:.4f}")

    def check_gradients(self, gradients: dict[str, bool]) -> None:
        unused = [n for n, p in self.model.named_parameters() if p.requires_grad and n not in gradients]
        zero = [n for n, nonzero in gradients.items() if not nonzero]
        if unused:
            self.fail("gradients", f"no gradient reaches {', '.join(unused[:5])}"
                      + (f" and {len(unused) - 5} more" if len(unused) > 5 else ""),
                      "a layer that forward() never uses, or a detached path (.detach(), .item(), no_grad)")
        if zero:
            self.add("gradients", "warn", f"all-zero gradients for {', '.join(zero[:5])}",
                     "dead ReLUs or a path that is multiplied by zero")
        else:
            trainable = sum(1 for p in self.model.parameters() if p.requires_grad)
            self.add("gradients", "ok", f"all {trainable} trainable tensors get a gradient")

    def check_speed(self, steps: int = 3) -> None:
        started = time.perf_counter()
        for _ in range(steps):
            train_step(self.model, self.batch, self.loss_fn, self.optimizer, self.scaler, self.precision)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            memory = f"{torch.cuda.max_memory_allocated(self.device) / 2**20:,.0f} MB on the GPU"
        else:
            memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB peak process memory"
        per_batch = (time.perf_counter() - started) / steps
        batches = len(self.loader.batch_sampler)
        epoch = batches * (per_batch + self.load_s)
        self.add("speed", "ok", f"{per_batch * 1000:.1f} ms a training step + {self.load_s * 1000:.1f} ms loading "
                 f"a batch; {memory}; an epoch of {batches} batches takes about {epoch:.1f} s")


@contextlib.contextmanager
def watch_gradients(model: torch.nn.Module) -> Iterator[dict[str, bool]]:
    """During the block, note each parameter that receives a gradient, and whether any of it is non-zero.

    The hooks run as backward accumulates each gradient, so what they see is what the
    optimizer steps with, however the step zeroes the gradients afterwards.
    """
    seen: dict[str, bool] = {}

    def hook(name: str) -> Callable[[torch.Tensor], None]:
        def note(param: torch.Tensor) -> None:
            seen[name] = seen.get(name, False) or bool(param.grad.any())
        return note

    handles = [p.register_post_accumulate_grad_hook(hook(n)) for n, p in model.named_parameters() if p.requires_grad]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- helpers

def observed_kind(output: torch.Tensor) -> str:
    """What the model's outputs look like: log_probs, probs or logits."""
    x = output.detach().float()
    if x.dim() == 2 and x.shape[1] > 1:
        rows_exp = x.exp().sum(dim=1)
        if (x <= 1e-5).all() and torch.allclose(rows_exp, torch.ones_like(rows_exp), atol=1e-3):
            return "log_probs"
        rows = x.sum(dim=1)
        if (x >= 0).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-3):
            return "probs"
        return "logits"
    return "probs" if ((x >= 0) & (x <= 1)).all() else "logits"


def initial_loss(name: str, outputs: int) -> float | None:
    """The loss a freshly initialised classifier should start near (uniform predictions)."""
    if name in ("cross_entropy", "nll", "custom_nll"):
        return math.log(outputs)
    if name in ("bce", "bce_with_logits"):
        return math.log(2)
    return None


def dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def as_dicts(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]
