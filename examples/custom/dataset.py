"""A dataset of your own: a plain map-style torch Dataset, nothing of guide's in it but the name.

scikit-learn's 8x8 handwritten digits, held in memory. Items are `(image, label)`: a
uint8 tensor (1, 8, 8) (a PIL image or a float tensor in [0, 1] would do too) and an int
index into `classes`. `targets` (the labels in item order) is optional: with it, guide
reads the labels without going through every item.
"""

import torch
from torch.utils.data import Dataset

from torchguide.registry import DATASETS


@DATASETS.register("sklearn_digits", task="image")
class SklearnDigits(Dataset):
    """scikit-learn's digits as (uint8 (1, 8, 8) tensor, digit) items; `split` train or test (a fixed 80/20)."""

    def __init__(self, split: str = "train", test_fraction: float = 0.2) -> None:
        from sklearn.datasets import load_digits  # here, not at the top: predict and inspect-model never need it

        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, got {split!r}")
        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # 0..16 -> 0..255
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        n_test = round(len(images) * test_fraction)
        keep = order[:n_test] if split == "test" else order[n_test:]
        self.images = images[keep]
        self.targets = [int(digits.target[i]) for i in keep]
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]
