"""Two-step runs of every shipped config through the CLI, then eval and predict on checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides, reviews_overrides

runner = CliRunner()
SMOKE = ["train.max_steps=2", "train.epochs=1"]


def run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "image").glob("*.yaml")), ids=lambda p: p.stem)
def test_image_configs_train_two_steps(config: Path, digits_dir: Path, tmp_path: Path) -> None:
    assert config.read_text().startswith(f"# guide train-image --config configs/image/{config.name}")
    result = run("train-image", "--config", str(config), *digits_overrides(digits_dir, tmp_path), *SMOKE,
                 "--json", "--quiet")
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["test"]["samples"] == 359


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "text").glob("*.yaml")), ids=lambda p: p.stem)
def test_text_configs_train_two_steps(config: Path, reviews_dir: Path, tmp_path: Path) -> None:
    assert config.read_text().startswith(f"# guide train-text --config configs/text/{config.name}")
    overrides = reviews_overrides(reviews_dir, tmp_path) if "reviews" in config.name else [
        f"output.dir={tmp_path}"]
    summary = json.loads(run("train-text", "--config", str(config), *overrides, *SMOKE, "--json").stdout)
    assert summary["steps"] == 2


@pytest.fixture(scope="module")
def image_run(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image_run")
    run("train-image", "--config", str(ROOT / "configs/image/digits.yaml"), *digits_overrides(digits_dir, out),
        "train.epochs=2", "--quiet")
    return out / "digits"


def test_image_eval_and_predictions(image_run: Path, digits_dir: Path, tmp_path: Path) -> None:
    assert (image_run / "curves.png").read_bytes().startswith(b"\x89PNG")
    best = image_run / "checkpoints" / "best.pt"
    result = run("eval", "--checkpoint", str(best), "--predictions", str(tmp_path / "p.csv"), "--json")
    metrics = json.loads(result.stdout)
    assert metrics["samples"] == 359 and metrics["accuracy"] > 0.5
    assert len(metrics["per_class"]) == 10 and sum(map(sum, metrics["confusion"])) == 359
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 359 and set(rows[0]) == {"input", "true", "predicted", "confidence"}
    table = run("eval", "--checkpoint", str(best), "--data", str(digits_dir / "train"))
    assert "confusion matrix" in table.stdout


def test_image_predict(image_run: Path, digits_dir: Path) -> None:
    images = sorted((digits_dir / "test" / "7").glob("*.png"))[:3]
    rows = json.loads(run("predict", "--checkpoint", str(image_run / "checkpoints/best.pt"), *map(str, images),
                          "-k", "2", "--json").stdout)
    assert len(rows) == 3 and len(rows[0]["top"]) == 2
    assert rows[0]["top"][0]["probability"] >= rows[0]["top"][1]["probability"]


def test_resume_from_the_cli(image_run: Path, digits_dir: Path) -> None:
    result = run("train-image", "--config", str(ROOT / "configs/image/digits.yaml"),
                 *digits_overrides(digits_dir, image_run.parent), "train.epochs=3", "--resume", "auto", "--json")
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 3 and "resuming from" in result.stderr


@pytest.fixture(scope="module")
def text_run(reviews_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text_run")
    run("train-text", "--config", str(ROOT / "configs/text/reviews.yaml"), *reviews_overrides(reviews_dir, out),
        "train.epochs=1", "--quiet")
    return out / "reviews"


def test_text_eval_predict(text_run: Path, reviews_dir: Path, tmp_path: Path) -> None:
    best = str(text_run / "checkpoints" / "best.pt")
    metrics = json.loads(run("eval", "--checkpoint", best, "--data", str(reviews_dir / "test.csv"),
                             "--predictions", str(tmp_path / "p.csv"), "--json").stdout)
    assert metrics["samples"] == 60 and metrics["classes"] == ["fresh", "rotten"]
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert len(rows) == 60 and rows[0]["input"]  # the text itself
    (tmp_path / "texts.txt").write_text("a wonderful, moving film\n\nboring and far too long\n")
    out = json.loads(run("predict", "--checkpoint", best, "an instant classic", "--file",
                         str(tmp_path / "texts.txt"), "--json").stdout)
    assert [r["input"] for r in out] == ["an instant classic", "a wonderful, moving film", "boring and far too long"]
    assert abs(sum(t["probability"] for t in out[0]["top"]) - 1) < 1e-5


def test_text_eval_refuses_unknown_labels(text_run: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("text,label\ngreat,excellent\n")
    result = runner.invoke(app, ["eval", "--checkpoint", str(text_run / "checkpoints/best.pt"),
                                 "--data", str(tmp_path / "bad.csv")])
    assert result.exit_code == 2 and "'excellent' are not among the trained classes" in result.stderr


def test_mixup_and_cutmix_train_and_evaluate(digits_dir: Path, tmp_path: Path) -> None:
    result = run("train-image", "--config", str(ROOT / "configs/image/digits_mixup.yaml"),
                 *digits_overrides(digits_dir, tmp_path), "train.epochs=2", "data.loader.batch_size=64",
                 "--json", "--quiet")
    summary = json.loads(result.stdout)
    assert summary["final"]["valid_acc"] > 0.7 and summary["test"]["accuracy"] > 0.7
    assert summary["final"]["train_loss"] > summary["final"]["valid_loss"]  # mixed targets are harder to fit
    best = tmp_path / "digits_mixup" / "checkpoints" / "best.pt"
    metrics = json.loads(run("eval", "--checkpoint", str(best), "--json").stdout)
    assert metrics["samples"] == 359 and metrics["accuracy"] > 0.7
