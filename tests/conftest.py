"""Shared fixtures: small real data written once per session, and a CLI runner."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
os.environ["GUIDE_TUNE"] = "off"  # also for session and module fixtures, which start before pin_device: auto by rule


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` skip themselves, with the reason, on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none is visible)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def pin_device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
               tmp_path_factory: pytest.TempPathFactory) -> None:
    """`train.device: auto` means the CPU in every test but those marked `cuda`, in this process and
    the ones it starts, so a GPU machine runs the same CPU tests plus the CUDA ones.

    The other `auto` settings decide by rule, not by timing (GUIDE_TUNE=off), so two runs in a
    test make the same choices on a busy machine; the tests of the measured choices unset it.
    Measurements are cached in a folder of the test session's, never the user's.
    """
    monkeypatch.setenv("GUIDE_TUNE", "off")
    monkeypatch.setenv("GUIDE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    if request.node.get_closest_marker("cuda"):
        monkeypatch.delenv("GUIDE_DEVICE", raising=False)
    else:
        monkeypatch.setenv("GUIDE_DEVICE", "cpu")


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as an ImageFolder tree (train/ and test/)."""
    from torchguide.data.sources import write_digits

    out = tmp_path_factory.mktemp("digits")
    write_digits(out)
    return out


@pytest.fixture(scope="session")
def reviews_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small slice of the bundled reviews: 240 train, 60 valid, 60 test rows."""
    from torchguide.data.sources import write_reviews

    full = tmp_path_factory.mktemp("reviews_full")
    write_reviews(full)
    out = tmp_path_factory.mktemp("reviews")
    for split, n in (("train", 240), ("valid", 60), ("test", 60)):
        with (full / f"{split}.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        rows = rows[: n // 2] + rows[-n // 2:]  # both labels (files are sorted by label)
        with (out / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return out


def digits_overrides(digits_dir: Path, out: Path) -> list[str]:
    return [f"data.train.root={digits_dir / 'train'}", f"data.test.root={digits_dir / 'test'}",
            f"output.dir={out}"]


def reviews_overrides(reviews_dir: Path, out: Path) -> list[str]:
    return [f"data.{s}.path={reviews_dir / f'{s}.csv'}" for s in ("train", "valid", "test")] + [
        f"output.dir={out}"]


ROOT = Path(__file__).resolve().parent.parent
