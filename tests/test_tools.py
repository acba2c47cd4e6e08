"""The explaining commands: `guide check`, `inspect-model`, `data inspect` and `lr-find`.

Every diagnosis has a deliberately broken config (components from tests/broken.py) that
must be caught, and every shipped config must pass the check.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides, reviews_overrides

runner = CliRunner()
BROKEN = f"imports=[{ROOT / 'tests' / 'broken.py'}]"
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def config_args(config: str, digits_dir: Path, reviews_dir: Path, tmp_path: Path) -> list[str]:
    path = ROOT / "configs" / config
    if config.startswith("image"):
        return ["--config", path, *digits_overrides(digits_dir, tmp_path)]
    if "reviews" in config:
        return ["--config", path, *reviews_overrides(reviews_dir, tmp_path)]
    return ["--config", path, f"output.dir={tmp_path}", "data.train.size=256"]


SHIPPED = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("config", SHIPPED)
def test_check_passes_every_shipped_config(config: str, digits_dir: Path, reviews_dir: Path, tmp_path: Path) -> None:
    result = invoke("check", *config_args(config, digits_dir, reviews_dir, tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and not [f for f in report["findings"] if f["status"] == "fail"]
    areas = {f["area"] for f in report["findings"]}
    assert {"data", "model", "loss", "targets", "gradients", "step", "speed"} <= areas


BROKEN_CASES = [
    ("nll fed raw logits", "image/digits_nll.yaml", ["model.name=my_neural_net"], "loss",
     "nll wants log-probabilities, but the model outputs raw scores"),
    ("nll fed probabilities", "image/digits_nll.yaml", [BROKEN, "model.name=broken_softmax_net"], "loss",
     "outputs probabilities (a Softmax last)"),
    ("cross entropy fed probabilities", "image/digits.yaml", [BROKEN, "model.name=broken_softmax_net",
                                                              "~model.width"], "loss",
     "already outputs probabilities"),
    ("kl_div fed probabilities", "image/digits_kl_div.yaml", [BROKEN, "model.name=broken_softmax_net"], "loss",
     "kl_div wants log-probabilities, but the model outputs probabilities"),
    ("bce fed logits", "text/random_sequences.yaml", ["loss.name=bce"], "loss", "bce wants probabilities in [0, 1]"),
    ("mse on class indices", "image/digits_mse.yaml", [BROKEN, "data.collate.name=broken_index_labels"], "targets",
     "the targets are class indices"),
    ("float targets for cross entropy", "image/digits.yaml", [BROKEN, "data.collate.name=broken_float_labels"],
     "targets", "wants class indices (int64), the targets are float32"),
    ("targets out of range", "image/digits.yaml", [BROKEN, "data.collate.name=broken_shifted_labels"], "targets",
     "targets run from 5 to 14, but the model has 10 outputs"),
    ("first loss far off", "image/digits.yaml", [BROKEN, "model.name=broken_scaled_net", "~model.width"], "loss",
     "expected about 2.3026 (ln 10)"),
    ("unused layer", "image/digits.yaml", [BROKEN, "model.name=broken_unused_layer_net", "~model.width"],
     "gradients", "no gradient reaches extra.weight, extra.bias"),
    ("step changes nothing", "image/digits.yaml", ["optimizer.lr=0"], "step", "left the loss at"),
    ("model cannot take the data", "image/digits.yaml", [BROKEN, "model.name=broken_flatless_net", "~model.width"],
     "model", "fails on a batch"),
    ("missing data", "image/digits.yaml", ["data.train.root=/nonexistent/digits"], "data", "does not exist"),
]


@pytest.mark.parametrize(("name", "config", "extra", "area", "fragment"), BROKEN_CASES,
                         ids=[c[0] for c in BROKEN_CASES])
def test_check_catches(name: str, config: str, extra: list[str], area: str, fragment: str, digits_dir: Path,
                       reviews_dir: Path, tmp_path: Path) -> None:
    result = invoke("check", *config_args(config, digits_dir, reviews_dir, tmp_path), *extra, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    failed = [f for f in report["findings"] if f["status"] == "fail"]
    assert not report["passed"] and len(failed) == 1
    assert failed[0]["area"] == area and fragment in failed[0]["text"], failed[0]
    assert failed[0]["fix"]


def test_check_warns_without_failing_and_draws_a_table(digits_dir: Path, tmp_path: Path) -> None:
    args = ["check", "--config", ROOT / "configs/image/digits.yaml", *digits_overrides(digits_dir, tmp_path),
            "model.name=my_classification_net", "~model.width"]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    (warning,) = [f for f in json.loads(result.stdout)["findings"] if f["status"] != "ok"]
    assert warning["status"] == "warn" and "ends with LogSoftmax" in warning["text"]
    table = invoke(*args)
    assert table.exit_code == 0 and "check passed with 1 warning(s)" in table.stdout
    assert any(line.startswith("warn\t") for line in table.stdout.splitlines())  # piped: one finding a line


# ---------------------------------------------------------------- inspect-model

def test_inspect_model_lists_layers_shapes_parameters_and_flops(digits_dir: Path, tmp_path: Path) -> None:
    result = invoke("inspect-model", "--config", ROOT / "configs/image/digits_crazy.yaml",
                    *digits_overrides(digits_dir, tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    layers = {row["name"]: row for row in report["layers"]}
    assert layers["lin1"]["calls"] == 2  # the guide's crazy network reuses lin1
    assert layers["lin1"]["parameters"] == 64 * 30 + 30 and layers["lin1"]["flops"] == 2 * 2 * 32 * 64 * 30
    assert layers["lin3"]["output"] == [32, 10]
    assert report["parameters"] == sum(row["parameters"] for row in report["layers"])
    table = invoke("inspect-model", "--config", ROOT / "configs/image/digits.yaml",
                   *digits_overrides(digits_dir, tmp_path))
    assert "features.0.0\tConv2d\t" in table.stdout and "FLOPs" in table.stdout and table.stderr == ""


def test_inspect_model_names_the_layer_that_breaks(digits_dir: Path, tmp_path: Path) -> None:
    result = invoke("inspect-model", "--config", ROOT / "configs/image/digits.yaml",
                    *digits_overrides(digits_dir, tmp_path), BROKEN, "model.name=broken_flatless_net",
                    "~model.width")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: lin1 (Linear) expects 784 features, got 1*8*8=64 (input [32, 1, 8, 8])")
    assert "add a flatten or change in_features" in result.stderr
    flat = invoke("inspect-model", "--config", ROOT / "configs/image/digits_mlp.yaml",
                  *digits_overrides(digits_dir, tmp_path), "-i", "2,3,8,8")  # RGB where it learnt grayscale
    assert flat.exit_code == 2 and "lin1 (Linear) expects 64 features, got 192 (input [2, 192])" in flat.stderr


def test_inspect_model_of_a_checkpoint(digits_dir: Path, tmp_path: Path) -> None:
    trained = invoke("train-image", "--config", ROOT / "configs/image/digits.yaml",
                     *digits_overrides(digits_dir, tmp_path), "train.max_steps=1", "--quiet")
    assert trained.exit_code == 0, trained.output
    result = invoke("inspect-model", "--checkpoint", tmp_path / "digits" / "checkpoints" / "last.pt", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"] == [[1, 1, 8, 8]] and report["layers"][-1]["output"] == [1, 10]


# ---------------------------------------------------------------- data inspect

def test_data_inspect_finds_imbalance_duplicates_and_unreadable_files(digits_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "messy"
    shutil.copytree(digits_dir / "train", folder)
    for extra in list((folder / "3").iterdir())[:100]:
        extra.unlink()  # class 3 keeps 46 of 146
    first = next((folder / "1").iterdir())
    shutil.copy(first, folder / "1" / "copy.png")
    (folder / "2" / "broken.png").write_bytes(b"not an image")
    result = invoke("data", "inspect", folder, "--plot", tmp_path / "classes.png", "--json")
    assert result.exit_code == 0, result.output
    split = json.loads(result.stdout)["splits"]["data"]
    assert split["classes"]["3"] == 46 and split["imbalance"] == pytest.approx(147 / 46)
    assert split["sizes"] == {"8x8": split["samples"] - 1} and split["modes"] == {"L": split["samples"] - 1}
    assert split["unreadable"] == [str(folder / "2" / "broken.png")]
    assert [sorted(Path(p).name for p in group) for group in split["duplicates"]] == [sorted([first.name,
                                                                                               "copy.png"])]
    assert (tmp_path / "classes.png").read_bytes().startswith(PNG)


def test_data_inspect_text_lengths_padding_and_max_len(reviews_dir: Path, tmp_path: Path) -> None:
    result = invoke("data", "inspect", "--config", ROOT / "configs/text/reviews.yaml",
                    *reviews_overrides(reviews_dir, tmp_path), "--plot", tmp_path / "len.png", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    train = report["splits"]["train"]
    assert set(report["splits"]) == {"train", "valid", "test"} and train["samples"] == 240
    lengths = train["lengths"]
    assert lengths["min"] <= lengths["median"] <= lengths["p95"] <= lengths["max"]
    assert train["suggested_max_len"] % 8 == 0 and train["suggested_max_len"] >= lengths["p95"]
    assert train["padding"]["length_buckets"] < train["padding"]["random"] / 2
    assert (tmp_path / "len.png").read_bytes().startswith(PNG)
    table = invoke("data", "inspect", str(reviews_dir / "train.csv"), "--plot", tmp_path / "t.png")
    assert "suggested data.vocab.max_len" in table.stdout and f"plot: {tmp_path / 't.png'}" in table.stdout


def test_data_inspect_draws_only_when_asked(digits_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("data", "inspect", digits_dir / "test", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plot"] is None and not list(tmp_path.iterdir())
    table = invoke("data", "inspect", digits_dir / "test")
    assert table.stdout.startswith("data: 359 samples, 10 classes") and "plot:" not in table.stdout
    assert not list(tmp_path.iterdir())


def test_data_inspect_needs_one_source(tmp_path: Path) -> None:
    result = invoke("data", "inspect")
    assert result.exit_code == 2 and "give a PATH or --config" in result.stderr
    result = invoke("data", "inspect", tmp_path / "none.csv")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = invoke("data", "inspect", tmp_path / "none.csv", "data.loader.batch_size=8")
    assert result.exit_code == 2 and "overrides (data.loader.batch_size=8) apply to a config" in result.stderr


# ---------------------------------------------------------------- lr-find

def test_lr_find_suggests_a_rate_and_plots(digits_dir: Path, tmp_path: Path) -> None:
    result = invoke("lr-find", "--config", ROOT / "configs/image/digits.yaml", *digits_overrides(digits_dir, tmp_path),
                    "--steps", "120", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["exploded"] and report["steps"] < 120  # stopped once the loss blew up
    assert 3e-4 <= report["suggested"] <= 1e-1  # the shipped config trains at 3e-3
    assert Path(report["plot"]).read_bytes().startswith(PNG)
    text = invoke("lr-find", "--config", ROOT / "configs/image/digits.yaml", *digits_overrides(digits_dir, tmp_path),
                  "--steps", "120")
    assert "add optimizer.lr=" in text.stdout


def test_lr_find_says_when_nothing_in_the_range_helps(digits_dir: Path, tmp_path: Path) -> None:
    result = invoke("lr-find", "--config", ROOT / "configs/image/digits.yaml", *digits_overrides(digits_dir, tmp_path),
                    "--end-lr", "1e-6", "--steps", "30", "--plot", tmp_path / "flat.png")
    assert result.exit_code == 0, result.output
    assert "no learning rate in this range lowered the loss" in result.stdout
    assert (tmp_path / "flat.png").read_bytes().startswith(PNG)
