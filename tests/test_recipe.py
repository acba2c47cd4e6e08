"""The zero-config start: configs chosen from the data (`--data`), column detection, refusals, and
short end-to-end runs of `guide train-image --data` and `guide train-text --data`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT
from torchguide.config import load_config, to_yaml
from torchguide.config.raw import YamlLoader
from torchguide.errors import ConfigError, DataError
from torchguide.recipe import ImageFacts, choose_image_recipe, choose_recipe, image_facts
from torchguide.recipe_text import TextFacts, choose_text_recipe, pick_columns, read_columns, text_facts

runner = CliRunner()


def image_facts_of(size: tuple[int, int], images: int, classes: int = 10, mode: str = "L",
                   splits: tuple[str, ...] = ("train", "test"), sizes: int = 1) -> ImageFacts:
    channels = 1 if mode == "L" else 3
    return ImageFacts("x", {s: f"d/{s}" for s in splits}, {str(c): images // classes for c in range(classes)},
                      mode, size, sizes, [0.5] * channels, [0.25] * channels, min(images, 1000))


def sections(recipe) -> tuple[dict, dict]:
    return recipe.raw["data"], recipe.raw["model"]


# ------------------------------------------------------------------ image choices (pure)

def test_small_grayscale_images_get_the_simple_cnn_at_their_size() -> None:
    recipe = choose_image_recipe(image_facts_of((8, 8), 1440))
    data, model = sections(recipe)
    assert model == {"name": "simple_cnn", "width": 32}
    assert data["valid"] == {"split": 0.1} and data["test"]["root"] == "d/test"
    assert data["transforms"]["train"][0]["name"] == "random_affine"
    assert data["transforms"]["eval"] == [{"name": "normalize", "mean": [0.5], "std": [0.25]}]
    assert data["loader"] == {"batch_size": 32} and data["cache"] == "memory"
    assert recipe.raw["train"] == {"epochs": 12} and recipe.raw["scheduler"] == {"name": "one_cycle"}
    assert recipe.reasons["model"].startswith("8x8 grayscale, 10 classes, 1,300 training images: simple_cnn width 32")


def test_many_small_images_get_a_narrower_cnn_larger_batches_and_fewer_epochs() -> None:
    recipe = choose_image_recipe(image_facts_of((28, 28), 30_000))
    data, model = sections(recipe)
    assert model == {"name": "simple_cnn", "width": 16}
    assert data["loader"]["batch_size"] == 128 and recipe.raw["train"]["epochs"] == 3


def test_large_images_get_resnet18_with_crops_and_grayscale_read_as_rgb() -> None:
    recipe = choose_image_recipe(image_facts_of((300, 400), 2000, classes=5, mode="L"))
    data, model = sections(recipe)
    assert model == {"name": "resnet18"}
    assert data["train"]["mode"] == "RGB" and data["test"]["mode"] == "RGB"
    names = [t["name"] for t in data["transforms"]["train"]]
    assert names == ["random_resized_crop", "random_horizontal_flip", "normalize"]
    assert data["transforms"]["train"][0]["size"] == 112
    assert [t["name"] for t in data["transforms"]["eval"]] == ["resize", "center_crop", "normalize"]
    assert data["transforms"]["eval"][-1]["mean"] == [0.5, 0.5, 0.5]  # one value per RGB channel
    assert "cache" not in data


def test_images_of_several_sizes_are_resized_to_the_most_common_and_valid_folders_are_used() -> None:
    recipe = choose_image_recipe(image_facts_of((20, 30), 500, splits=("train", "valid"), sizes=3))
    data, _ = sections(recipe)
    assert data["transforms"]["train"][0] == {"name": "resize", "size": [20, 30]}
    assert data["transforms"]["eval"][0] == {"name": "resize", "size": [20, 30]}
    assert data["valid"] == {"name": "image_folder", "root": "d/valid"} and "test" not in data


# ------------------------------------------------------------------ image facts from files

def write_images(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 5), value: int = 0) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.full(size, value + i, dtype=np.uint8)
            Image.fromarray(pixels, "L").save(root / name / f"{i}.png")


def test_image_facts_of_a_single_folder_of_class_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "pets", {"cat": 4, "dog": 6}, value=10)
    facts = image_facts(tmp_path / "pets")
    assert facts.splits == {"train": str(tmp_path / "pets")} and facts.classes == {"cat": 4, "dog": 6}
    assert facts.mode == "L" and facts.size == (6, 5) and facts.sizes == 1 and facts.name == "pets"
    values = np.array([10 + i for i in range(4)] + [10 + i for i in range(6)]) / 255
    assert facts.mean == [round(values.mean(), 4)] and facts.std == [round(values.std(), 4)]


def test_image_facts_of_train_and_test_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 3, "b": 3})
    write_images(tmp_path / "val", {"a": 1, "b": 1})
    write_images(tmp_path / "test", {"a": 1, "b": 1})
    facts = image_facts(tmp_path)
    assert set(facts.splits) == {"train", "valid", "test"} and facts.splits["valid"].endswith("val")


@pytest.mark.parametrize("layout, message", [
    ("empty", "holds no class folders"),
    ("loose images", "holds 2 images but no class folders"),
    ("one class", "has only one class"),
    ("missing", "does not exist"),
    ("text files", "holds no class folders: for text files use guide train-text --data"),
])
def test_image_folders_that_cannot_be_trained_are_refused(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "imgs"
    if layout != "missing":
        root.mkdir()
    if layout == "loose images":
        for i in range(2):
            Image.new("L", (4, 4)).save(root / f"{i}.png")
    if layout == "one class":
        write_images(root, {"only": 3})
    if layout == "text files":
        write_csv(root / "train.csv", review_rows())
    with pytest.raises(DataError) as error:
        image_facts(root)
    assert message in error.value.lines()[0]


# ------------------------------------------------------------------ text columns

def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def review_rows(n: int = 40) -> list[dict]:
    return [{"id": i, "source": ["web", "paper", "tv"][i % 3], "body": f"review number {i} says the film is "
             + ("good and moving" if i % 2 else "dull and long"), "stars": "pos" if i % 2 else "neg"}
            for i in range(n)]


def test_columns_are_detected_text_the_longest_words_label_the_fewest_values(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "r.csv", review_rows())
    text, label, how = pick_columns(file, read_columns(file), None, None)
    assert (text, label) == ("body", "stars")
    assert "fewest distinct values" in how


def test_a_column_named_like_a_label_wins_and_named_columns_are_used(tmp_path: Path) -> None:
    rows = [{**r, "category": r["source"]} for r in review_rows()]
    file = write_csv(tmp_path / "r.tsv", rows, delimiter="\t")
    assert pick_columns(file, read_columns(file), None, None)[:2] == ("body", "category")
    assert pick_columns(file, read_columns(file), "body", "stars")[:2] == ("body", "stars")


def test_jsonl_with_integer_labels(tmp_path: Path) -> None:
    file = tmp_path / "r.jsonl"
    file.write_text("\n".join(json.dumps({"text": r["body"], "y": int(r["stars"] == "pos"), "tags": ["a"]})
                              for r in review_rows()), encoding="utf-8")
    facts = text_facts(file)
    assert (facts.text, facts.label) == ("text", "y") and facts.classes == {"0": 20, "1": 20}


@pytest.mark.parametrize("rows, text, label, message", [
    ([{"x": i, "y": i * 2, "label": i % 2} for i in range(40)], None, None, "has no text column"),
    ([{"text": f"words {i} here", "label": "same"} for i in range(40)], None, None,
     "the label column `label` has one value"),
    ([{"text": f"words {i} here", "n": i} for i in range(40)], None, None, "has no label column"),
    (review_rows(), "comment", None, "has no column 'comment'"),
])
def test_text_files_without_what_a_classifier_needs_are_refused(tmp_path: Path, rows: list[dict], text: str | None,
                                                                label: str | None, message: str) -> None:
    file = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=message):
        text_facts(file, text, label)


def test_a_folder_of_text_files_needs_a_train_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "all.csv", review_rows())
    with pytest.raises(DataError, match=r"has no train.csv.*\(it has all.csv\)"):
        text_facts(tmp_path)
    write_images(tmp_path / "images", {"a": 1, "b": 1})
    with pytest.raises(DataError) as error:
        text_facts(tmp_path / "images")
    assert error.value.hint == "for a folder of image folders use guide train-image --data"


# ------------------------------------------------------------------ text choices (pure)

def text_facts_of(texts: int, p95: int, files: tuple[str, ...] = ("train",)) -> TextFacts:
    lengths = [p95 // 2] * (texts // 2) + [p95] * (texts - texts // 2)
    return TextFacts("t", {s: f"d/{s}.csv" for s in files}, "text", "label", "detected",
                     {"a": texts // 2, "b": texts - texts // 2},
                     {"min": 1, "median": p95 // 2, "p95": p95, "max": p95 * 2}, -(-p95 // 8) * 8, lengths)


def test_few_short_texts_get_the_embedding_bag() -> None:
    recipe = choose_text_recipe(text_facts_of(10_000, 39))
    data, model = sections(recipe)
    assert model["name"] == "embedding_bag" and data["vocab"]["max_len"] == 40
    assert data["valid"] == {"split": 0.1} and "test" not in data
    assert data["sampler"] == {"name": "length_buckets"} and data["collate"] == {"name": "pad_to_longest"}
    assert recipe.raw["scheduler"]["name"] == "linear_warmup"


def test_many_short_texts_get_the_bilstm_and_long_ones_the_bag() -> None:
    recipe = choose_text_recipe(text_facts_of(40_000, 60, files=("train", "valid", "test")))
    data, model = sections(recipe)
    assert model["name"] == "bilstm" and recipe.raw["train"]["grad_clip"] == 1.0
    assert data["valid"]["path"] == "d/valid.csv" and data["test"]["path"] == "d/test.csv"
    long = choose_text_recipe(text_facts_of(40_000, 900))
    assert long.raw["model"]["name"] == "embedding_bag" and long.raw["data"]["vocab"]["max_len"] == 512


@pytest.mark.parametrize("recipe", [
    choose_image_recipe(image_facts_of((8, 8), 1440)),
    choose_image_recipe(image_facts_of((28, 28), 30_000, sizes=2)),
    choose_image_recipe(image_facts_of((300, 400), 2000, classes=5, mode="L", splits=("train", "valid", "test"))),
    choose_text_recipe(text_facts_of(10_000, 39)),
    choose_text_recipe(text_facts_of(40_000, 60, files=("train", "valid", "test"))),
], ids=["digits", "many-small", "large-gray", "bag", "bilstm"])
def test_every_kind_of_recipe_is_a_valid_config(recipe) -> None:
    config = load_config(None, [], task=recipe.task, raw=recipe.raw)
    assert config.model.name == recipe.raw["model"]["name"]


# ------------------------------------------------------------------ the printed config

def test_the_printed_config_is_the_config_with_a_reason_per_choice() -> None:
    recipe = choose_image_recipe(image_facts_of((8, 8), 1440)).with_overrides(["train.epochs=3", "~data.cache"])
    text = recipe.to_yaml()
    assert yaml.load(text, Loader=YamlLoader) == recipe.raw
    assert recipe.raw["train"]["epochs"] == 3 and "cache" not in recipe.raw["data"]
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comments) == 2 + len(recipe.reasons)  # two lines of header, then one per choice
    assert "# train.epochs=3: set on the command line" in comments
    assert not any("12 epochs" in c for c in comments)


def test_a_recipe_validates_and_round_trips_through_the_resolved_yaml(digits_dir: Path, tmp_path: Path) -> None:
    recipe = choose_recipe("image", digits_dir)
    config = load_config(None, [], task="image", raw=recipe.raw)
    (tmp_path / "config.yaml").write_text(to_yaml(config), encoding="utf-8")
    again = load_config(tmp_path / "config.yaml", [], task="image")
    assert again.model_dump() == config.model_dump()


def test_a_resolved_config_with_a_validation_dataset_loads_back(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "text" / "reviews.yaml", [], task="text")
    (tmp_path / "config.yaml").write_text(to_yaml(config), encoding="utf-8")  # data.valid: {..., split: null}
    assert load_config(tmp_path / "config.yaml", [], task="text").model_dump() == config.model_dump()


def test_the_stop_message_of_a_data_run_resumes_from_the_run_directory(tmp_path: Path) -> None:
    from torchguide.runner import stopped

    run = SimpleNamespace(state=SimpleNamespace(epoch=0, batch=3, step=3), run_dir=tmp_path / "runs" / "digits")
    exc = SimpleNamespace(signal_name="SIGINT", checkpoint=run.run_dir / "checkpoints" / "last.pt")
    error = stopped(run, exc, "image", None, [])
    assert f"guide train-image --config {run.run_dir / 'config.yaml'} --resume {exc.checkpoint}" in error.hint


# ------------------------------------------------------------------ the command line

def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_data_and_config_together_are_refused(digits_dir: Path) -> None:
    result = invoke("train-image", "--data", str(digits_dir), "--config", "configs/image/digits.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --data and --config together") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["train-image"], "missing option '--config'"),
    (["train-text", "--config", "configs/text/reviews.yaml", "--text", "body"],
     "--text and --label name the columns of --data"),
])
def test_train_needs_config_or_data(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.stderr


def test_bad_data_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("train-image", "--data", str(tmp_path / "empty"))
    assert result.exit_code == 2 and result.stderr.startswith("error: --data ") and result.stderr.count("\n") == 1
    assert "put each class's images in a folder of its own" in result.stderr
    numbers = write_csv(tmp_path / "n.csv", [{"x": i, "label": i % 2} for i in range(40)])
    result = invoke("train-text", "--data", str(numbers))
    assert result.exit_code == 2 and "has no text column" in result.stderr and "--text COL" in result.stderr


def test_train_image_with_data_end_to_end(digits_dir: Path, tmp_path: Path) -> None:
    result = invoke("train-image", "--data", str(digits_dir), "train.max_steps=3", "train.epochs=1",
                    f"output.dir={tmp_path}", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 3 and summary["test"]["samples"] == 359
    assert result.stderr.startswith(f"# guide train-image --data {digits_dir}: a config chosen from the data\n")
    assert "\n# 8x8 grayscale, 10 classes" in result.stderr
    assert "\nmodel: {name: simple_cnn, width: 32}\n" in result.stderr
    run_dir = tmp_path / digits_dir.name
    config = load_config(run_dir / "config.yaml", [], task="image")
    assert config.model.name == "simple_cnn" and config.train.max_steps == 3
    assert config.data.transforms.eval[0].name == "normalize"
    again = invoke("train-image", "--config", str(run_dir / "config.yaml"), "train.max_steps=1", "--json", "-q")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["steps"] == 1


def test_train_text_with_data_end_to_end(reviews_dir: Path, tmp_path: Path) -> None:
    result = invoke("train-text", "--data", str(reviews_dir), "--label", "label", "train.max_steps=2",
                    f"output.dir={tmp_path}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 2
    assert "model: {name: embedding_bag" in result.stderr and "label `label` (--label)" in result.stderr
    config = load_config(tmp_path / reviews_dir.name / "config.yaml", [], task="text")
    assert config.data.train.kwargs["text"] == "text" and config.data.test is not None


def test_a_config_error_in_the_overrides_of_a_data_run_is_reported(digits_dir: Path, tmp_path: Path) -> None:
    result = invoke("train-image", "--data", str(digits_dir), "optimizer.name=adamm", f"output.dir={tmp_path}")
    assert result.exit_code == 2 and "optimizer.name: unknown optimizer 'adamm'; did you mean adam" in result.stderr
    with pytest.raises(ConfigError, match="override 'x': write key=value"):
        choose_recipe("image", digits_dir).with_overrides(["x"])
