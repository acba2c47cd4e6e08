"""Every entry of the model, optimizer, scheduler and loss registries works through guide's own code,
or config validation refuses it with a message.

Image models build from a config, the way training builds them (runtime facts from the data,
by name). Models small enough for two cores take a real training step on tiny inputs; the
large ones are built without initialising their weights and run on the `meta` device, which
checks every shape. `pytest -m slow tests/test_every_entry.py` gives every model a real step.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from torchguide.build import build_model, make_loader_for, resolve_target
from torchguide.config import Config, load_config
from torchguide.data.collate import encode_targets
from torchguide.data.loaders import Data, build_data
from torchguide.errors import ConfigError, GuideError
from torchguide.inspection import inspect_layer
from torchguide.losses import build_loss, loss_meta
from torchguide.optim import build_optimizer, build_scheduler, scheduler_interval
from torchguide.registry import COLLATES, LAYERS, LOSSES, MODELS, OPTIMIZERS, SAMPLERS, SCHEDULERS

# image side per architecture where 32 is too small (alexnet >= 63, inception >= 75, maxvit: multiples
# of 224) or not a multiple of the patch (vit_h_14: 14)
IMAGE_SIZES = {"alexnet": 64, "inception_v3": 75, "maxvit_t": 224, "vit_h_14": 28}
REAL_STEP_PARAMS = 2_000_000  # larger models take their real step under -m slow only
CLASSES = 3


def image_models() -> list[str]:
    return [n for n in MODELS.names() if MODELS.entry(n).meta.get("task") == "image"]


def text_models() -> list[str]:
    return [n for n in MODELS.names() if MODELS.entry(n).meta.get("task") == "text"]


def config_for(model: str, task: str = "image", **sections: object) -> Config:
    dataset = {"image": {"name": "image_folder", "root": "unused"}, "text": {"name": "text_csv", "path": "x"}}
    return Config.model_validate({"name": "sweep", "task": task, "data": {"train": dataset[task]},
                                  "model": {"name": model}, **sections})


@contextlib.contextmanager
def weights_left_uninitialised() -> Iterator[None]:
    """Skip torch.nn.init while building: a large model costs no compute and, untouched, no memory."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def image_data(size: int) -> Data:
    return Data("image", [str(i) for i in range(CLASSES)], in_channels=3, in_features=3 * size * size,
                input_shape=[3, size, size])


def take_step(model: nn.Module, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor) -> None:
    """One training step of guide's kind (cross entropy, adamw); the weights must change."""
    optimizer = build_optimizer("adamw", model.parameters(), lr=1e-3)
    model.train()
    output = model(*inputs)
    assert output.shape == (labels.shape[0], CLASSES)
    loss = nn.functional.cross_entropy(output, labels)
    loss.backward()
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    optimizer.step()
    assert math.isfinite(loss.item())
    assert any(not torch.equal(a, p) for a, p in zip(before, [p for p in model.parameters() if p.requires_grad],
                                                       strict=True))


def built_on_meta(name: str, size: int) -> nn.Module:
    with weights_left_uninitialised(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet/inception: a note on their initialisation
        return build_model(config_for(name), image_data(size)).to("meta").train()


def real_step(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(config_for(name), image_data(size))
    take_step(model, (torch.rand(2, 3, size, size),), torch.tensor([0, 2]))


@pytest.mark.parametrize("name", image_models())
def test_every_image_model_builds_from_a_config_and_trains(name: str) -> None:
    size = IMAGE_SIZES.get(name, 32)
    shapes = built_on_meta(name, size)
    assert shapes(torch.empty(2, 3, size, size, device="meta")).shape == (2, CLASSES)
    if sum(p.numel() for p in shapes.parameters()) <= REAL_STEP_PARAMS:
        real_step(name, size)


@pytest.mark.slow
@pytest.mark.parametrize("name", image_models())
def test_every_image_model_takes_a_real_step(name: str) -> None:
    real_step(name, IMAGE_SIZES.get(name, 32))


@pytest.mark.parametrize("name", text_models())
def test_every_text_model_builds_from_a_config_and_trains(name: str) -> None:
    data = Data("text", [str(i) for i in range(CLASSES)], vocab_size=40)
    torch.manual_seed(0)
    model = build_model(config_for(name, "text"), data)
    tokens = torch.randint(2, 40, (3, 9))
    tokens[1, 5:] = 0  # padded
    take_step(model, (tokens, torch.tensor([9, 5, 9])), torch.tensor([0, 2, 1]))


def test_runtime_facts_reach_builders_by_name_only() -> None:
    seen = {}

    def builder(num_classes: int, **kwargs: object) -> nn.Module:  # asks for no image facts
        seen.update(kwargs, num_classes=num_classes)
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    MODELS.register("facts_probe", builder, task="image")
    build_model(config_for("facts_probe"), image_data(8))
    assert seen == {"num_classes": CLASSES}
    vit = build_model(config_for("vit_b_16"), image_data(32))  # image_size from the data
    assert vit.image_size == 32


# Required arguments per entry, and options that make a first step visible on a tiny model.
OPTIMIZER_KWARGS = {"ranger21": {"num_iterations": 100}, "sara": {"threshold": 1.0}}
STEPS_TO_CHANGE = 12  # adashift waits 10 steps, schedule-free ones warm up


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_trains_a_tiny_model(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    kwargs = OPTIMIZER_KWARGS.get(name, {})
    assert not OPTIMIZERS.check_kwargs(name, {"lr": 0.01, **kwargs}, {"params"}), "validation refuses it"
    optimizer = build_optimizer(name, model.parameters(), lr=0.01, **kwargs)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(STEPS_TO_CHANGE):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)):
            break
    else:
        pytest.fail(f"{name} did not change the weights in {STEPS_TO_CHANGE} steps")
    assert all(torch.isfinite(p).all() for p in model.parameters())


SCHEDULER_KWARGS = {"cosine_annealing_warm_restarts": {"T_0": 2}, "cyclic": {"base_lr": 1e-3},
                    "exponential": {"gamma": 0.5}, "linear_warmup": {"warmup_steps": 2},
                    "multi_step": {"milestones": [1]}, "step": {"step_size": 1}}


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_every_scheduler_schedules_the_learning_rate(name: str) -> None:
    kwargs = SCHEDULER_KWARGS.get(name, {})
    config = config_for("simple_cnn", scheduler={"name": name, **kwargs})  # validation accepts it
    assert not load_problems(config)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = build_scheduler(name, optimizer, total_steps=6, epochs=3, **kwargs)
    if name == "none":
        assert scheduler is None
        return
    lrs = []
    for _ in range(3 if scheduler_interval(name) == "epoch" else 6):
        model(torch.randn(1, 2)).sum().backward()
        optimizer.step()
        scheduler.step(1.0) if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) \
            else scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    if name not in ("reduce_lr_on_plateau", "constant_lr"):
        assert len(set(lrs)) > 1 or lrs[0] != 0.1, f"{name} never changed the learning rate"


def load_problems(config: Config) -> list[str]:
    raw = config.model_dump(mode="json")
    try:
        load_config(None, raw=raw)
    except ConfigError as exc:
        return [p for p in exc.problems if not p.startswith("data")]
    return []


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_takes_what_the_loop_gives_or_is_refused(name: str) -> None:
    output_kind, target = loss_meta(name)
    raw = {"name": "sweep", "data": {"train": {"name": "image_folder", "root": "unused"}},
           "model": {"name": "simple_cnn"}, "loss": {"name": name}}
    if target is None and LOSSES.entry(name).meta.get("target", "x") is None:
        with pytest.raises(ConfigError) as refused:
            load_config(None, raw=raw)
        assert any(p.startswith("loss.name: ") and "does not train a classifier" in p
                   for p in refused.value.problems)
        return
    for classes in (2, 4):
        if target == "binary_signed" and classes > 2:
            with pytest.raises(ConfigError, match="two classes"):
                resolve_target(name, classes)
            continue
        encoding, outputs = resolve_target(name, classes)
        labels = torch.arange(6) % classes
        scores = torch.randn(6, outputs, requires_grad=True)
        output = {"log_probs": scores.log_softmax(1), "probs": scores.softmax(1) if outputs > 1
                  else scores.sigmoid()}.get(output_kind, scores)
        loss = build_loss(name)(output, encode_targets(labels, encoding, classes))
        loss.backward()
        assert loss.dim() == 0 and math.isfinite(loss.item()) and scores.grad is not None, (name, classes)



@pytest.mark.parametrize("name", LAYERS.names())
def test_every_layer_is_inspected_or_asks_for_its_arguments(name: str) -> None:
    """`guide inspect-layer NAME` either shows the layer on a picked input or says, in one line, what to give."""
    try:
        report = inspect_layer(name)
    except GuideError as exc:
        assert "\n" not in exc.message and exc.message, name
        return
    assert report["outputs"], name


@pytest.mark.parametrize("sampler", SAMPLERS.names())
@pytest.mark.parametrize("collate", COLLATES.names())
def test_every_collate_and_sampler_feed_a_training_epoch(collate: str, sampler: str, digits_dir: Path) -> None:
    """Each collate function with each sampler, through make_loader: every sample once per epoch."""
    task = COLLATES.entry(collate).meta["task"]
    dataset = {"text": {"name": "random_sequences", "size": 10, "min_len": 2, "max_len": 9, "vocab_size": 20},
               "image": {"name": "image_glob", "root": str(digits_dir / "test"), "pattern": "[01]/00*.png"}}[task]
    kwargs = {"pad_to_length": {"length": 6}}.get(collate, {})
    config = load_config(None, raw={"name": "sweep", "data": {"train": dataset, "collate": {"name": collate, **kwargs},
                                                              "sampler": {"name": sampler},
                                                              "loader": {"batch_size": 4}},
                                    "model": {"name": "bilstm" if task == "text" else "simple_cnn"}}, task=task)
    data = build_data(config, ("train",))
    loader = make_loader_for(config, data, data.splits["train"], train=True, device=torch.device("cpu"))
    seen = []
    for batch in loader:
        if task == "text":
            tokens, lengths = batch.inputs
            assert tokens.shape[1] == (6 if collate == "pad_to_length" else int(lengths.max()))
        seen += batch.labels.tolist()
    assert len(seen) == len(data.splits["train"]) > 0


@pytest.mark.parametrize("task, collate", [("text", "default"), ("image", "pad_to_longest")])
def test_a_collate_for_the_other_kind_of_data_is_refused(task: str, collate: str) -> None:
    raw = {"name": "x", "data": {"train": {"name": "text_csv" if task == "text" else "image_folder",
                                           **({"path": "x.csv"} if task == "text" else {"root": "x"})},
                                 "collate": {"name": collate}}, "model": {"name": "bilstm"}}
    with pytest.raises(ConfigError, match=f"data.collate.name: {collate} is for .* data, this is {task} data"):
        load_config(None, raw=raw)


def test_text_configs_pad_by_default() -> None:
    raw = {"name": "x", "data": {"train": {"name": "text_csv", "path": "x.csv"}}, "model": {"name": "bilstm"}}
    assert load_config(None, raw=raw).data.collate.name == "pad_to_longest"
