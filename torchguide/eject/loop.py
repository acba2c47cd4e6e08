"""The training half of an ejected script: the loss, optimizer and scheduler, and the loop the guide
teaches (zero_grad, forward, loss, backward, clip, step), with autocast and accumulation where the
config uses them."""

from __future__ import annotations

import inspect

from torchguide.eject import blocks
from torchguide.eject.plan import OUTPUT_WORDS, TARGET_WORDS, Facts, Script, component, kw
from torchguide.eject.source import literal
from torchguide.optim import scheduler_interval
from torchguide.registry import LOSSES, OPTIMIZERS, SCHEDULERS


def write_training(script: Script, facts: Facts) -> None:
    """main()'s lines for the loss, the optimizer, the scheduler (and the fp16 loss scaler)."""
    lines = [""] + loss_lines(script, facts) + optimizer_lines(script, facts) + scheduler_lines(script, facts)
    if facts.scaled:
        lines.append("    scaler = torch.amp.GradScaler(DEVICE.type, enabled=AUTOCAST == torch.float16)"
                     "  # fp16: scale the loss so small gradients do not round to zero")
    script.section("the loss, the optimizer and the learning-rate schedule")
    script.training_lines = lines


def loss_lines(script: Script, facts: Facts) -> list[str]:
    """The loss: torch's class, guide's source or yours, with guide's defaults (kl_div's batchmean, tensor weights)."""
    cfg = facts.config
    entry = LOSSES.entry(cfg.loss.name)
    kwargs = dict(cfg.loss.kwargs)
    if entry.name == "kl_div":
        kwargs.setdefault("reduction", "batchmean")  # guide's default: the KL divergence's own definition
    args = [f"{k}=torch.tensor({literal(v)}, dtype=torch.float32)" if k in ("weight", "pos_weight")
            and isinstance(v, list) else f"{k}={literal(v)}" for k, v in kwargs.items()]
    maker = component(script, entry.obj, "nn")
    if maker.startswith("nn."):
        script.imports.name("torch", "nn")
    words = f"{OUTPUT_WORDS.get(facts.output_kind, 'the model output')} and {TARGET_WORDS[facts.target]}"
    if inspect.isclass(entry.obj):
        return [f"    loss_fn = {maker}({', '.join(args)}).to(DEVICE)  # loss: {entry.name} takes {words}"]
    script.imports.name("functools", "partial")
    return [f"    loss_fn = partial({', '.join([maker, *args])})  # loss: {entry.name} takes {words}"]


def optimizer_lines(script: Script, facts: Facts) -> list[str]:
    """The optimizer over the trainable parameters, in guide's groups when the config has them."""
    spec = facts.config.optimizer
    entry = OPTIMIZERS.entry(spec.name)
    maker = component(script, entry.obj, "torch.optim")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.kwargs.items()}
    if spec.groups or spec.no_decay_norm_bias:
        script.imports.name("fnmatch", "fnmatchcase")
        script.add(blocks.PARAM_GROUPS)
        groups = [(g.params, {k: tuple(v) if isinstance(v, list) else v for k, v in g.options.items()})
                  for g in spec.groups]
        params = f"param_groups(model, {literal(groups)}" + (", no_decay_norm_bias=True)" if spec.no_decay_norm_bias
                                                              else ")")
        note = "    # the parameters in groups: optimizer.groups" + (", and no weight decay on biases and norm "
                                                                      "weights" if spec.no_decay_norm_bias else "")
        lines = [note]
    else:
        params = "[p for p in model.parameters() if p.requires_grad]" if facts.config.model.freeze else \
            "model.parameters()"
        lines = []
    return [*lines, f"    optimizer = {maker}({', '.join([params, *kw(kwargs)])})  # optimizer.{entry.name}"]


def scheduler_lines(script: Script, facts: Facts) -> list[str]:
    """The scheduler with what guide fills in: the run's total steps, the peak lr, the schedule's length."""
    cfg = facts.config
    entry = SCHEDULERS.entry(cfg.scheduler.name)
    if entry.name == "none":
        return []
    interval = scheduler_interval(entry.name)
    sig = inspect.signature(entry.obj)
    steps = "math.ceil(len(train_loader) / ACCUMULATE)" if cfg.train.accumulate > 1 else "len(train_loader)"
    total = f"{steps} * EPOCHS" if not cfg.train.max_steps else f"min({steps} * EPOCHS, MAX_STEPS)"
    if cfg.train.accumulate > 1:
        script.imports.module("math")
    filled = {"total_steps": "total_steps", "max_lr": max_lr(facts),
              "T_max": "total_steps" if interval == "step" else "EPOCHS",
              "total_iters": "total_steps" if interval == "step" else "EPOCHS"}
    filled = {k: v for k, v in filled.items() if k in sig.parameters and k not in cfg.scheduler.kwargs}
    maker = component(script, entry.obj, "torch.optim.lr_scheduler")
    lines = []
    if "total_steps" in filled.values():
        lines.append(f"    total_steps = {total}  # optimizer steps in the run")
    args = ["optimizer", *(f"{k}={v}" for k, v in filled.items()), *kw(cfg.scheduler.kwargs)]
    when = "after every optimizer step" if interval == "step" else "after every epoch"
    return [*lines, f"    scheduler = {maker}({', '.join(args)})  # scheduler: {entry.name}, stepped {when}"]


def max_lr(facts: Facts) -> str:
    """The learning rate a one-cycle schedule peaks at: each group's own, as guide gives them."""
    spec = facts.config.optimizer
    default = inspect.signature(OPTIMIZERS.get(spec.name)).parameters.get("lr")
    lr = spec.kwargs.get("lr", default.default if default is not None else None)
    if any(g.options.get("lr", lr) != lr for g in spec.groups):
        return '[group["lr"] for group in optimizer.param_groups]'
    return literal(lr)


# ------------------------------------------------------------------ the loop

def write_loop(script: Script, facts: Facts) -> None:
    """train_one_epoch() and evaluate() (a section), and main() put together."""
    for module in ("copy", "random"):
        script.imports.module(module)
    script.imports.module("numpy", "np")
    if facts.config.train.grad_clip:
        script.imports.name("torch", "nn")
    script.section("the loop: train one epoch, validate, repeat", train_function(facts), evaluate_function(facts))
    script.main = (setup_lines(facts) + script.data_lines + script.model_lines + script.loader_lines
                   + script.training_lines + epoch_lines(script, facts))


def train_args(facts: Facts, loader: str = "loader") -> list[str]:
    """train_one_epoch()'s arguments: what this config's loop uses."""
    return ["model", loader, "loss_fn", "optimizer", *(["scheduler"] if facts.steps_scheduler else []),
            *(["scaler"] if facts.scaled else []), *(["step"] if facts.config.train.max_steps else [])]


def train_function(facts: Facts) -> str:
    """train_one_epoch(): the guide's loop, a comment per step, with what this config uses."""
    train = facts.config.train
    unpack, move, forward = batch_names(facts)
    grouped = train.accumulate > 1
    counting = bool(train.max_steps)
    returns = "the mean loss and accuracy" + (" and the optimizer steps so far" if counting else "")
    lines = [f"def train_one_epoch({', '.join(train_args(facts))}):",
             f'    """One pass over the training data; returns {returns}."""',
             "    model.train()  # training mode: dropout is on, batch norm uses (and updates) batch statistics",
             "    total_loss, correct, count = 0.0, 0, 0",
             f"    for i, ({unpack}) in enumerate(loader):" if grouped else f"    for {unpack} in loader:",
             *indented(move, "        ", "  # move the batch to the device")]
    if grouped:
        lines += ["        if i % ACCUMULATE == 0:  # a group of ACCUMULATE batches begins; their gradients add up",
                  "            optimizer.zero_grad(set_to_none=True)  # zero the gradients"]
    else:
        lines.append("        optimizer.zero_grad(set_to_none=True)  # zero the gradients of the last step")
    lines += forward_lines(facts, forward, "        ", comments=True)
    if train.on_nan == "skip":
        lines += ["        if not torch.isfinite(loss):  # train.on_nan skip: leave out a batch whose loss is NaN/inf",
                  "            optimizer.zero_grad(set_to_none=True)", "            continue"]
    loss = "loss / ACCUMULATE" if grouped else "loss"
    backward = f"scaler.scale({loss}).backward()" if facts.scaled else \
        f"({loss}).backward()" if grouped else "loss.backward()"
    lines.append(f"        {backward}  # backward" + (": the gradients of the group add up" if grouped else ""))
    indent = "        "
    if grouped:
        lines.append("        if (i + 1) % ACCUMULATE == 0 or i + 1 == len(loader):  # the group's last batch: a step")
        indent += "    "
    lines += [indent + line for line in step_lines(facts)]
    lines += ["        total_loss += loss.item() * len(labels)  # the epoch's running loss and accuracy",
              f"        correct += ({predicted(facts)} == labels).sum().item()",
              "        count += len(labels)"]
    if counting:
        lines += ["        if step == MAX_STEPS:  # train.max_steps", "            break"]
    lines.append("    return total_loss / count, correct / count" + (", step" if counting else ""))
    return "\n\n" + "\n".join(lines)


def step_lines(facts: Facts) -> list[str]:
    """Clip, step, and what follows a step: the count and the per-step schedule (not for a step fp16 skipped)."""
    train = facts.config.train
    lines = []
    if train.grad_clip:
        if facts.scaled:
            lines.append("scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones")
        lines.append("nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)  # clip the gradients' norm")
    after = (["step += 1"] if train.max_steps else []) + (
        [f"scheduler.step()  # {facts.scheduler}: the learning rate of the next step"] if facts.steps_scheduler else [])
    if not facts.scaled:
        return [*lines, "optimizer.step()  # step: each parameter moves against its gradient", *after]
    lines += [*(["scale = scaler.get_scale()"] if after else []),
              "scaler.step(optimizer)  # step: each parameter moves against its gradient",
              "scaler.update()  # fp16: a smaller scale after overflowing gradients, a larger one later"]
    if after:
        lines += ["if scaler.get_scale() >= scale:  # a step was taken (fp16 skips one whose gradients overflowed)",
                  *(f"    {line}" for line in after)]
    return lines


def forward_lines(facts: Facts, forward: str, indent: str, comments: bool = False) -> list[str]:
    """Forward and loss, under autocast where the run may use it."""
    lines = [f"output = {forward}" + ("  # forward" if comments else ""),
             "loss = loss_fn(output, target)" + ("  # loss" if comments else "")]
    if not facts.autocast:
        return [indent + line for line in lines]
    if facts.precision in ("bf16", "fp16"):
        opening = "with torch.autocast(DEVICE.type, dtype=AUTOCAST):  # lower precision where it is safe"
    else:
        opening = "with torch.autocast(DEVICE.type, dtype=AUTOCAST, enabled=AUTOCAST is not None):" + \
            ("  # bf16/fp16 where it is safe" if comments else "")
    return [indent + opening, *(f"{indent}    {line}" for line in lines)]


def evaluate_function(facts: Facts) -> str:
    """evaluate(): the mean loss and accuracy over a loader, as guide validates."""
    unpack, move, forward = batch_names(facts)
    lines = ["def evaluate(model, loader, loss_fn):",
             '    """The mean loss and accuracy over a loader, in eval mode, without gradients."""',
             "    model.eval()  # eval mode: no dropout, batch norm uses its running statistics",
             "    total_loss, correct, count = 0.0, 0, 0",
             "    with torch.inference_mode():  # no gradients: faster, and less memory",
             f"        for {unpack} in loader:", *indented(move, "            "),
             *forward_lines(facts, forward, "            "),
             "            total_loss += loss.item() * len(labels)",
             f"            correct += ({predicted(facts)} == labels).sum().item()",
             "            count += len(labels)",
             "    return total_loss / count, correct / count"]
    return "\n\n" + "\n".join(lines)


def batch_names(facts: Facts) -> tuple[str, str, str]:
    """(the batch's unpacking, moving it to the device, the forward call) for the task."""
    if facts.task == "image":
        return ("images, target, labels", "images, target, labels = images.to(DEVICE), target.to(DEVICE), "
                "labels.to(DEVICE)", "model(images)")
    return ("tokens, lengths, target, labels", "tokens, lengths = tokens.to(DEVICE), lengths.to(DEVICE)\n"
            "target, labels = target.to(DEVICE), labels.to(DEVICE)", "model(tokens, lengths)")


def indented(code: str, indent: str, comment: str = "") -> list[str]:
    """Lines of `code` at `indent`, the comment after the first."""
    lines = [indent + line for line in code.split("\n")]
    lines[0] += comment
    return lines


def predicted(facts: Facts) -> str:
    """The predicted classes: one output is a binary logit (or probability), more are scores per class."""
    if facts.outputs == 1:
        return f"(output.squeeze(1) > {0.5 if facts.output_kind == 'probs' else 0.0}).long()"
    return "output.argmax(dim=1)"


def setup_lines(facts: Facts) -> list[str]:
    """main()'s first lines: seeds, threads, and guide's GPU settings."""
    train = facts.config.train
    lines = ["    # seeds: python, numpy and torch, so that the run repeats",
             "    random.seed(SEED)", "    np.random.seed(SEED % 2**32)", "    torch.manual_seed(SEED)"]
    if train.threads == "auto":
        lines += ['    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()',
                  "    torch.set_num_threads(max(1, cores - NUM_WORKERS))  # compute threads: a core each, less the "
                  "loader workers'"]
    else:
        lines.append(f"    torch.set_num_threads({train.threads})  # train.threads")
    if train.deterministic:
        lines += ['    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")',
                  "    torch.use_deterministic_algorithms(True, warn_only=True)  # train.deterministic"]
    if train.device.startswith(("auto", "cuda")):
        benchmark = facts.task == "image" and not train.deterministic
        lines += ['    if DEVICE.type == "cuda":  # as guide sets up a GPU: TF32 for fp32 matmuls and convolutions'
                  + (", cuDNN autotuning for fixed image shapes" if benchmark else ""),
                  *(["        torch.cuda.set_device(DEVICE)"] if ":" in train.device else []),
                  '        torch.set_float32_matmul_precision("high")',
                  "        torch.backends.cudnn.allow_tf32 = True",
                  *(["        torch.backends.cudnn.benchmark = True"] if benchmark else []),
                  *(["        torch.backends.cudnn.deterministic = True"] if train.deterministic else [])]
    return [*lines, ""]


def epoch_lines(script: Script, facts: Facts) -> list[str]:
    """The epochs in main(): train, validate, schedule, keep the best weights, stop early; then save and test."""
    train = facts.config.train
    monitor, larger = monitor_of(facts)
    early = train.early_stopping
    lines = ["", "    # the loop: train an epoch, validate, and keep the weights of the best epoch",
             "    best, best_epoch, best_state" + (", bad_epochs = None, 0, None, 0" if early else " = None, 0, None"),
             *(["    step = 0"] if train.max_steps else []),
             "    for epoch in range(EPOCHS):", "        train_sampler.set_epoch(epoch)  # this epoch's batch order",
             f"        train_loss, train_acc{', step' if train.max_steps else ''} = "
             f"train_one_epoch({', '.join(train_args(facts, 'train_loader'))})",
             '        lr = optimizer.param_groups[0]["lr"]']
    report = 'print(f"epoch {epoch + 1}/{EPOCHS}  train loss {train_loss:.6f}  acc {train_acc:.4f}  "'
    if facts.config.data.valid is not None:
        lines += ["        valid_loss, valid_acc = evaluate(model, valid_loader, loss_fn)", f"        {report}",
                  '              f"valid loss {valid_loss:.6f}  acc {valid_acc:.4f}  lr {lr:.2e}")']
    else:
        lines += [f"        {report}", '              f"lr {lr:.2e}")']
    if facts.scheduler != "none" and not facts.steps_scheduler:
        value = monitor if facts.scheduler == "reduce_lr_on_plateau" else ""
        lines.append(f"        scheduler.step({value})  # the learning rate of the next epoch")
    delta = early.min_delta if early else 0.0
    better = f"{monitor} {'>' if larger else '<'} best" + (f" {'+' if larger else '-'} {delta!r}" if delta else "")
    keep = f"best, best_epoch, best_state{', bad_epochs' if early else ''} = {monitor}, epoch + 1, " \
        f"copy.deepcopy(model.state_dict()){', 0' if early else ''}"
    lines += [f"        if best is None or {better}:  # train.monitor {monitor}: a better epoch", f"            {keep}"]
    if early:
        lines += ["        else:", "            bad_epochs += 1",
                  f"        if bad_epochs >= {early.patience}:  # train.early_stopping: {early.patience} epoch(s) "
                  "without a better one", "            break"]
    if train.max_steps:
        lines += ["        if step >= MAX_STEPS:", "            break"]
    return lines + end_lines(script, facts, monitor)


def monitor_of(facts: Facts) -> tuple[str, bool]:
    """The monitored metric (a training one when there is no validation) and whether larger is better."""
    monitor = facts.config.train.monitor
    if facts.config.data.valid is None and monitor.startswith("valid"):
        monitor = "train_acc" if monitor.endswith("acc") else "train_loss"
    return monitor, monitor.endswith("acc")


def end_lines(script: Script, facts: Facts, monitor: str) -> list[str]:
    """Save the best epoch's weights, then test them when the config has test data."""
    weights = f"{facts.config.name}.pt"
    lines = ["", f"    torch.save(best_state, {literal(weights)})  # the best epoch's weights: "
             "model.load_state_dict(torch.load(...))",
             f'    print(f"best {monitor} {{best:.4f}} at epoch {{best_epoch}}; its weights are in {weights}")']
    if script.test_loader:
        lines += ["    # the test: the best epoch's weights on the test data",
                  f"    test_loader = {script.test_loader}",
                  "    model.load_state_dict(best_state)",
                  "    test_loss, test_acc = evaluate(model, test_loader, loss_fn)",
                  '    print(f"test loss {test_loss:.6f}  acc {test_acc:.4f}")']
    return lines
