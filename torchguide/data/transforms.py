"""Image transforms from config: every `torchvision.transforms.v2` transform by name.

A pipeline is a list of `{name: ..., **kwargs}` (or bare names). guide completes it so it
always ends in a float tensor: it prepends `to_image` when the list does not convert
the PIL image itself, and inserts `to_dtype(float32, scale=True)` before the first
`normalize` (or at the end), so geometric transforms run on uint8 tensors, which is
faster than on PIL images or floats.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from torchguide.layers import snake_case
from torchguide.registry import TRANSFORMS


def register_torchvision_transforms() -> None:
    for cls_name in sorted(dir(v2)):
        cls = getattr(v2, cls_name)
        if isinstance(cls, type) and issubclass(cls, v2.Transform) and cls is not v2.Transform:
            TRANSFORMS.register(snake_case(cls_name), cls, aliases=[cls_name])


register_torchvision_transforms()

CONVERTS_IMAGE = {"toimage", "piltotensor", "totensor"}
CONVERTS_DTYPE = {"todtype", "totensor", "convertimagedtype"}


def key(name: str) -> str:
    return name.lower().replace("_", "")


def build_transform(name: str, **kwargs: Any) -> v2.Transform:
    """Build one transform; a `dtype` given as text (`float32`) becomes a torch dtype."""
    if isinstance(kwargs.get("dtype"), str):
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    return TRANSFORMS.build(name, **kwargs)


def build_pipeline(items: list[Any] | None) -> v2.Compose:
    """A Compose from config items, completed to produce float32 tensors (see module doc)."""
    steps = [(it, {}) if isinstance(it, str) else (it.name, it.kwargs) for it in (items or [])]
    names = [key(n) for n, _ in steps]
    if not CONVERTS_IMAGE & set(names):
        steps.insert(0, ("to_image", {}))
        names.insert(0, "toimage")
    if not CONVERTS_DTYPE & set(names):
        at = names.index("normalize") if "normalize" in names else len(steps)
        steps.insert(at, ("to_dtype", {"dtype": "float32", "scale": True}))
    return v2.Compose([build_transform(n, **kw) for n, kw in steps])
