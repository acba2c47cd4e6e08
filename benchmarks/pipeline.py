"""Figure 3, image input pipeline: the tool's data path / torchvision ImageFolder with PIL transforms.

A folder of generated photo-size JPEGs (500x375), the classic evaluation transforms
(Resize 256, CenterCrop 224, then to float and normalised), batch 32, one process each:

- baseline: torchvision.datasets.ImageFolder + PIL transforms (Resize, CenterCrop,
  ToTensor, Normalize per image) in a DataLoader;
- tool: guide's image_folder + the same transforms from config: torchvision.io decode to
  uint8, resize and crop on uint8 tensors, to-float and normalize once per batch.

Also `data.cache: memory`: the decoded, resized and cropped images stay in memory, so
later epochs only stack and normalise: epochs 2-4, each against the first, which decodes.
The two loaders alternate, an epoch each in turn (benchmarks/common.py).

    python benchmarks/pipeline.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, ratios, summarise  # noqa: E402
from torchguide.build import make_loader_for  # noqa: E402
from torchguide.config import load_config  # noqa: E402
from torchguide.data.loaders import build_data  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_photos(root: Path, per_class: int = 120) -> None:
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ramp = np.linspace(0, 255, 500)[None, :, None] * rng.random((375, 1, 3))
            pixels = (ramp + rng.normal(0, 20, (375, 500, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i:04d}.jpg", quality=90)


def epoch(loader) -> float:
    started, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch[1]) if isinstance(batch, list | tuple) and len(batch) == 2 else len(batch.labels)
    return seen / (time.perf_counter() - started)


def baseline(root: Path) -> DataLoader:
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    return DataLoader(datasets.ImageFolder(str(root), transform=tf), batch_size=32, shuffle=True, num_workers=0)


def tool(root: Path, cache: bool = False):
    config = load_config(None, raw={
        "name": "bench", "model": {"name": "simple_cnn"},
        "data": {"train": {"name": "image_folder", "root": str(root)}, "cache": "memory" if cache else "none",
                 "loader": {"batch_size": 32, "num_workers": 0},
                 "transforms": {"train": [{"name": "resize", "size": 256}, {"name": "center_crop", "size": 224},
                                          {"name": "normalize", "mean": MEAN, "std": STD}]}}})
    data = build_data(config, ("train",))
    loader = make_loader_for(config, data, data.splits["train"], train=True, device=torch.device("cpu"))
    return loader


def tool_epoch(loader, epoch_index: int = 0) -> float:
    loader.batch_sampler.set_epoch(epoch_index)
    return epoch(loader)


def measure(repeats: int = 3) -> dict:
    torch.set_num_threads(1)  # the per-image work of one loader process
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root)
        check = next(iter(tool(root)))
        reference = next(iter(baseline(root)))
        assert check.inputs[0].shape == reference[0].shape and check.inputs[0].dtype == reference[0].dtype
        rates = interleaved({"tool": lambda i: tool_epoch(tool(root)), "baseline": lambda i: epoch(baseline(root))},
                            repeats)
        torch.set_num_threads(2)  # a cached dataset loads in the training process, with its threads
        cached = tool(root, cache=True)
        first = tool_epoch(cached, 0)
        later = [tool_epoch(cached, e) for e in range(1, 4)]
    value, spread, n = summarise(ratios(rates["tool"], rates["baseline"]))
    cache_value, cache_spread, cache_n = summarise([rate / first for rate in later])
    return {"tool_images_per_s": sum(rates["tool"]) / n, "baseline_images_per_s": sum(rates["baseline"]) / n,
            "ratio": value, "spread": spread, "repeats": n, "cache_first": first, "cache_ratio": cache_value,
            "cache_spread": cache_spread, "cache_repeats": cache_n}


if __name__ == "__main__":
    r = measure(1 if "--quick" in sys.argv else 3)
    print(f"tool {r['tool_images_per_s']:,.0f} images/s, ImageFolder+PIL {r['baseline_images_per_s']:,.0f} "
          f"images/s: x{r['ratio']:.2f}; cache: later epochs x{r['cache_ratio']:.1f} the first")
