"""Image transforms from config: the `torchvision.transforms.v2` transforms that fit a classifier, by name.

A pipeline is a list of `{name: ..., **kwargs}` (or bare names). guide completes it so it
always ends in a float tensor: it prepends `to_image` when the list does not convert
the image itself, and inserts `to_dtype(float32, scale=True)` before the first
`normalize` (or at the end), so geometric transforms run on uint8 tensors, which is
faster than on PIL images or floats; the final `to_dtype` and `normalize` run once per
batch (see `Pipeline`).

Which transforms are offered: every v2 transform that maps one image tensor to one
image tensor with arguments a YAML file can hold (numbers, strings, lists). The rest are
left out, each with its reason in `LEFT_OUT` (shown when a config names one):

- bounding boxes and key points (detection): they need boxes or points in the sample,
  or do nothing to an image;
- video: they need a time axis;
- several images per sample (`five_crop`, `ten_crop`): a classifier takes one;
- arguments that are Python objects (other transforms, a function, a tensor);
- a PIL image as output: the pipeline works on tensors;
- `mix_up` and `cut_mix` mix a whole batch: they live in `data.batch_transforms`
  (see `torchguide.data.batch_transforms`).

The tests run every registered transform on uint8 RGB and grayscale images through
`build_pipeline`, so a torchvision upgrade that adds one that does not fit shows there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from torchguide.layers import snake_case
from torchguide.registry import TRANSFORMS, normalize

BOXES = "works on bounding boxes or key points (detection), not on a class label"
OBJECTS = "takes Python objects as arguments, which a config cannot hold"
BATCH = "mixes whole batches (data.batch_transforms)"

# v2 transforms a classifier cannot use, and why (see the module docstring)
LEFT_OUT = {
    "ClampBoundingBoxes": BOXES, "ClampKeyPoints": BOXES, "ConvertBoundingBoxFormat": BOXES,
    "RandomIoUCrop": BOXES, "SanitizeBoundingBoxes": BOXES, "SanitizeKeyPoints": BOXES,
    "SetClampingMode": BOXES,
    "UniformTemporalSubsample": "works on videos (a time axis), not on single images",
    "FiveCrop": "returns five images per sample, where a classifier takes one",
    "TenCrop": "returns ten images per sample, where a classifier takes one",
    "Compose": f"{OBJECTS} (list the steps instead)", "RandomApply": f"{OBJECTS} (other transforms)",
    "RandomChoice": f"{OBJECTS} (other transforms)", "RandomOrder": f"{OBJECTS} (other transforms)",
    "Lambda": f"{OBJECTS} (a function)", "LinearTransformation": f"{OBJECTS} (a whitening matrix tensor)",
    "ToPILImage": "returns a PIL image, where the pipeline works on tensors",
    "MixUp": BATCH, "CutMix": BATCH,
}


def register_torchvision_transforms() -> None:
    """Register every v2 transform a classifier can use as `random_crop`, `color_jitter`, ..."""
    for cls_name in sorted(dir(v2)):
        cls = getattr(v2, cls_name)
        if isinstance(cls, type) and issubclass(cls, v2.Transform) and cls is not v2.Transform \
                and cls_name not in LEFT_OUT:
            TRANSFORMS.register(snake_case(cls_name), cls, aliases=[cls_name])


register_torchvision_transforms()

CONVERTS_IMAGE = {"toimage", "piltotensor", "totensor"}
# not `to_tensor`: it scales PIL images only, and guide decodes images to uint8 tensors
CONVERTS_DTYPE = {"todtype", "convertimagedtype"}


def key(name: str) -> str:
    return name.lower().replace("_", "")


def left_out_reason(name: str) -> str | None:
    """Why v2 transform `name` (any spelling) is not offered, or None if it is not one left out."""
    return next((why for cls_name, why in LEFT_OUT.items() if normalize(cls_name) == normalize(name)), None)


def build_transform(name: str, **kwargs: Any) -> v2.Transform:
    """Build one transform; a `dtype` given as text (`float32`) becomes a torch dtype."""
    if isinstance(kwargs.get("dtype"), str):
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    return TRANSFORMS.build(name, **kwargs)


RANDOM = {"colorjitter", "autoaugment", "randaugment", "trivialaugmentwide", "augmix", "elastictransform",
          "gaussiannoise", "jpeg"}
BATCH_STEPS = {"todtype", "normalize"}


@dataclass
class Pipeline:
    """A sample's transforms in three parts, so each runs where it is cheapest.

    `fixed`: the deterministic steps up to the first random one, on uint8 tensors (their
    output can be cached); `random`: the rest of the per-sample steps; `batch`: the
    trailing `to_dtype` / `normalize`, run once on a stacked uint8 batch instead of on
    every image.
    """

    fixed: v2.Transform
    random: v2.Transform
    batch: v2.Transform | None

    def sample(self, image: Any) -> Any:
        return self.random(self.fixed(image))

    def __call__(self, image: Any) -> torch.Tensor:
        """One image all the way to a float tensor (prediction, tests)."""
        x = self.sample(image)
        return self.batch(x.unsqueeze(0))[0] if self.batch is not None else x

    def finish(self, batch: torch.Tensor) -> torch.Tensor:
        return self.batch(batch) if self.batch is not None else batch


def is_random(name: str) -> bool:
    return name.startswith("random") or name in RANDOM


def completed_steps(items: list[Any] | None) -> tuple[list[tuple[str, dict[str, Any]]], list[str], int]:
    """The transforms of a config completed to produce float32 tensors (see module doc): the steps as
    (name, kwargs), their registry keys, and where the tail that runs on whole batches begins."""
    steps = [(it, {}) if isinstance(it, str) else (it.name, it.kwargs) for it in (items or [])]
    names = [key(n) for n, _ in steps]
    if not CONVERTS_IMAGE & set(names):
        steps.insert(0, ("to_image", {}))
        names.insert(0, "toimage")
    if not CONVERTS_DTYPE & set(names):
        at = names.index("normalize") if "normalize" in names else len(steps)
        steps.insert(at, ("to_dtype", {"dtype": "float32", "scale": True}))
        names.insert(at, "todtype")
    tail = len(steps)
    while tail > 0 and names[tail - 1] in BATCH_STEPS:
        tail -= 1
    return steps, names, tail


def build_pipeline(items: list[Any] | None) -> Pipeline:
    """The transforms of a config, completed to produce float32 tensors (see module doc), in parts."""
    steps, names, tail = completed_steps(items)
    first_random = next((i for i, n in enumerate(names[:tail]) if is_random(n)), tail)
    built = [build_transform(n, **kw) for n, kw in steps]
    return Pipeline(compose(built[:first_random]), compose(built[first_random:tail]),
                    compose(built[tail:]) if tail < len(steps) else None)


def compose(transforms: list[v2.Transform]) -> v2.Transform:
    return v2.Compose(transforms) if transforms else v2.Identity()
