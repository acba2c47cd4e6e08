"""Every registered image transform runs in a pipeline; MixUp and CutMix mix training batches."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from torchguide.build import make_loader_for
from torchguide.config import BatchTransform, Component, load_config
from torchguide.data.batch_transforms import build_batch_mixer
from torchguide.data.collate import Batch
from torchguide.data.loaders import build_data
from torchguide.data.transforms import LEFT_OUT, build_pipeline, left_out_reason
from torchguide.registry import BATCH_TRANSFORMS, TRANSFORMS

# sensible arguments for the transforms that require some (for a 32x32 image)
KWARGS = {
    "center_crop": {"size": 24},
    "gaussian_blur": {"kernel_size": 3},
    "jpeg": {"quality": 50},
    "normalize": {"mean": [0.5], "std": [0.5]},
    "pad": {"padding": 2},
    "random_adjust_sharpness": {"sharpness_factor": 2.0},
    "random_affine": {"degrees": 10},
    "random_crop": {"size": 24},
    "random_posterize": {"bits": 4},
    "random_resize": {"min_size": 24, "max_size": 40},
    "random_resized_crop": {"size": 24},
    "random_rotation": {"degrees": 10},
    "random_shortest_size": {"min_size": 24},
    "random_solarize": {"threshold": 128},
    "resize": {"size": 24},
    "scale_jitter": {"target_size": [32, 32]},
    "to_dtype": {"dtype": "float32", "scale": True},
}
# output size varies from image to image: a classifier follows these with a fixed-size step
VARIABLE_SIZE = {"random_resize", "random_shortest_size", "scale_jitter", "random_zoom_out"}


def required(name: str) -> set[str]:
    params = TRANSFORMS.signature(name).parameters.values()
    return {p.name for p in params if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def test_the_table_gives_every_required_argument() -> None:
    missing = {n: sorted(required(n) - set(KWARGS.get(n, {}))) for n in TRANSFORMS.names()}
    assert {n: m for n, m in missing.items() if m} == {}
    assert set(KWARGS) | VARIABLE_SIZE <= set(TRANSFORMS.names())  # no stale rows


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_every_transform_makes_a_float_batch(name: str, channels: int) -> None:
    steps = [Component(name=name, **KWARGS.get(name, {}))]
    if name in VARIABLE_SIZE:
        steps.append(Component(name="resize", size=[20, 20]))
    pipeline = build_pipeline(steps)
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (channels, 32, 32), dtype=torch.uint8) for _ in range(3)]
    batch = pipeline.finish(torch.stack([pipeline.sample(x) for x in images]))
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.float32
    assert batch.dim() == 4 and batch.shape[0] == 3 and batch.shape[1] in (1, 3)


def test_left_out_transforms_are_not_registered_and_say_why() -> None:
    for cls_name in LEFT_OUT:
        assert cls_name not in TRANSFORMS
    assert "detection" in left_out_reason("sanitize_bounding_boxes")
    assert "videos" in left_out_reason("UniformTemporalSubsample")
    assert left_out_reason("random_crop") is None


def mixed(name: str, p: float, labels: torch.Tensor) -> tuple[Batch, Batch]:
    images = torch.rand(len(labels), 3, 16, 16)
    batch = Batch((images,), labels, labels)
    mixer = build_batch_mixer([BatchTransform(name=name, p=p, alpha=1.0)], num_classes=4)
    return batch, mixer(batch)


@pytest.mark.parametrize("name", BATCH_TRANSFORMS.names())
def test_a_mixed_batch_has_soft_targets_and_its_labels(name: str) -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    batch, out = mixed(name, 1.0, labels)
    assert out.target.shape == (6, 4) and out.target.dtype == torch.float32
    torch.testing.assert_close(out.target.sum(1), torch.ones(6))
    assert torch.equal(out.labels, labels) and not torch.equal(out.inputs[0], batch.inputs[0])
    assert (out.target[torch.arange(6), labels] > 0).all()  # each keeps a share of its own class
    batch, same = mixed(name, 0.0, labels)
    assert same is batch


def test_only_training_batches_are_mixed(digits_dir: Path) -> None:
    cfg = load_config(None, ["data.batch_transforms=[{name: cut_mix, p: 1.0}]"], raw={
        "data": {"train": {"name": "image_folder", "root": str(digits_dir / "test")}, "valid": {"split": 0.2},
                 "loader": {"batch_size": 8, "num_workers": 0}}, "model": {"name": "simple_cnn"}})
    data = build_data(cfg, ("train", "valid"))
    train = make_loader_for(cfg, data, data.splits["train"], train=True, device=torch.device("cpu"))
    train.batch_sampler.set_epoch(0)
    batch = next(iter(train))
    assert batch.target.shape == (8, 10) and batch.labels.shape == (8,) and batch.labels.dtype == torch.long
    torch.testing.assert_close(batch.target.sum(1), torch.ones(8))
    assert torch.equal(batch.labels, torch.tensor([data.splits["train"].samples[i][1]
                                                   for i in train.batch_sampler.batches()[0]]))
    valid = make_loader_for(cfg, data, data.splits["valid"], train=False, device=torch.device("cpu"))
    assert next(iter(valid)).target.dtype == torch.long
