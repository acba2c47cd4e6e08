"""The matmul peak: measured once, cached per machine, precision and thread count, raised by faster runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import torchguide.peak as peak_module
from cli.show import utilisation_line
from torchguide import usercache
from torchguide.peak import CACHE_KIND, matmul_peak, peak_key, run_utilisation, utilisation

CPU = torch.device("cpu")


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[float]:
    """An empty cache of this test's own, and every matmul timed at 1 ms: the list records each timing."""
    monkeypatch.setenv(usercache.CACHE_ENV, str(tmp_path / "cache"))
    calls: list[float] = []

    def one_millisecond(a: torch.Tensor, b: torch.Tensor) -> float:
        calls.append(1e-3)
        return 1e-3

    monkeypatch.setattr(peak_module, "time_matmul", one_millisecond)
    return calls


def test_the_peak_is_measured_once_then_read_from_the_cache(timings: list[float]) -> None:
    peak, source = matmul_peak(CPU, "fp32")
    assert source == "measured" and timings
    assert peak == pytest.approx(max(2 * math.prod(s) for s in peak_module.CPU_SHAPES) / 1e-3)  # the biggest shape's
    measured = len(timings)
    assert matmul_peak(CPU, "fp32") == (peak, "cached")
    assert len(timings) == measured  # no matmul timed the second time
    assert usercache.lookup(CACHE_KIND, peak_key(CPU, "fp32", torch.get_num_threads())) == peak


def test_precision_and_threads_have_peaks_of_their_own(timings: list[float]) -> None:
    assert peak_key(CPU, "fp32", 2) != peak_key(CPU, "bf16", 2)
    assert peak_key(CPU, "fp32", 2) != peak_key(CPU, "fp32", 1)
    matmul_peak(CPU, "fp32")
    measured = len(timings)
    assert matmul_peak(CPU, "bf16")[1] == "measured" and len(timings) > measured
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert matmul_peak(CPU, "fp32")[1] == "measured"
    finally:
        torch.set_num_threads(threads)
    assert matmul_peak(CPU, "fp32")[1] == "cached"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"%s": "fast"}'])
def test_a_corrupt_cache_is_measured_over(timings: list[float], content: str) -> None:
    key = peak_key(CPU, "fp32", torch.get_num_threads())
    folder = usercache.cache_dir()
    folder.mkdir(parents=True)
    (folder / f"{CACHE_KIND}.json").write_text(content.replace("%s", key))
    peak, source = matmul_peak(CPU, "fp32")
    assert source == "measured" and peak > 0
    assert matmul_peak(CPU, "fp32") == (peak, "cached")


def test_a_run_faster_than_the_peak_raises_it(timings: list[float]) -> None:
    usercache.store(CACHE_KIND, peak_key(CPU, "fp32", torch.get_num_threads()), 1e9)
    fields = run_utilisation(rate=1000.0, flops_per_unit=3e6, device=CPU, precision="fp32", world_size=1)
    assert fields == {"flops_per_s": 3e9, "peak_flops_per_s": 3e9, "utilisation": 1.0,
                      "peak_source": "raised", "peak_raised_from_flops_per_s": 1e9}
    assert not timings
    assert matmul_peak(CPU, "fp32") == (3e9, "cached")  # the next run is measured against the raised peak
    slower = run_utilisation(rate=500.0, flops_per_unit=3e6, device=CPU, precision="fp32", world_size=1)
    assert slower["utilisation"] == pytest.approx(0.5) and slower["peak_source"] == "cached"
    assert slower["peak_raised_from_flops_per_s"] is None


def test_a_job_raises_the_peak_of_each_of_its_devices(timings: list[float]) -> None:
    usercache.store(CACHE_KIND, peak_key(CPU, "fp32", torch.get_num_threads()), 1e9)
    fields = run_utilisation(rate=1000.0, flops_per_unit=4e6, device=CPU, precision="fp32", world_size=2)
    assert fields["utilisation"] == 1.0 and fields["peak_raised_from_flops_per_s"] == 2e9
    assert matmul_peak(CPU, "fp32") == (2e9, "cached")


def test_utilisation_sets_global_flops_against_every_device() -> None:
    flops, peak, used = utilisation(rate=4000.0, flops_per_unit=1e6, peak_per_device=1e10, world_size=4)
    assert flops == 4e9  # the rate is global already: not multiplied again
    assert peak == 4e10 and used == pytest.approx(0.1)
    assert utilisation(1000.0, 1e6, 1e10, 1) == (1e9, 1e10, pytest.approx(0.1))
    assert utilisation(1.0, 1.0, 0.0, 2)[2] is None


@pytest.mark.parametrize("rate", [0.0, 1.0, 1e3, 1e6, 1e12])
def test_utilisation_is_never_above_one(rate: float) -> None:
    flops, peak, used = utilisation(rate, 1e6, peak_per_device=5e9, world_size=2)
    assert used is not None and 0.0 <= used <= 1.0
    assert peak >= 1e10 and peak >= flops


def test_the_summary_line_says_when_the_run_raised_the_peak() -> None:
    summary = {"flops_per_s": 61e9, "peak_flops_per_s": 61e9, "utilisation": 1.0, "peak_source": "raised",
               "peak_raised_from_flops_per_s": 48e9}
    assert utilisation_line(summary) == \
        "61.0 GFLOP/s = 100% of this machine's 61 GFLOP/s peak (raised by this run from 48)"
    summary.update(flops_per_s=3.9e9, peak_flops_per_s=93e9, utilisation=3.9 / 93, peak_source="cached",
                   peak_raised_from_flops_per_s=None)
    assert utilisation_line(summary) == "3.9 GFLOP/s = 4% of this machine's 93 GFLOP/s matmul peak"
    summary.update(flops_per_s=0.3e9, peak_flops_per_s=0.7e9, utilisation=0.3 / 0.7)
    assert utilisation_line(summary) == "0.3 GFLOP/s = 43% of this machine's 0.7 GFLOP/s matmul peak"
