"""The configs shipped inside the package: found by name when not on disk, listed, copied, and in the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT
from torchguide.config import load_config
from torchguide.config.checks import infer_task
from torchguide.config.raw import read_yaml
from torchguide.config.shipped import SHIPPED_DIR, find_config, shipped_names
from torchguide.errors import ConfigError

runner = CliRunner()


def test_the_checkout_links_configs_into_the_package() -> None:
    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == SHIPPED_DIR
    out = subprocess.run(["git", "ls-files", "-s", "configs"], capture_output=True, text=True, cwd=ROOT)
    if out.returncode == 0 and out.stdout:  # a git checkout: stored as a link, not as copies
        assert out.stdout.startswith("120000 ")


def test_every_shipped_config_sits_in_its_tasks_folder() -> None:
    assert "image/digits" in shipped_names() and "text/reviews" in shipped_names()
    for name in shipped_names():
        raw = read_yaml(SHIPPED_DIR / f"{name}.yaml")
        assert infer_task(raw, None) == name.split("/")[0], name


@pytest.mark.parametrize("given", ["image/digits", "image/digits.yaml", "configs/image/digits.yaml"])
def test_a_path_not_on_disk_names_a_shipped_config(given: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here, as after `pip install`
    assert find_config(given) == SHIPPED_DIR / "image" / "digits.yaml"
    assert load_config(given, ["train.epochs=1"]).name == "digits"


def test_a_file_on_disk_wins_over_the_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "digits.yaml").write_text("name: mine\n")
    assert find_config("image/digits.yaml") == Path("image/digits.yaml")


def test_neither_a_file_nor_a_shipped_config_lists_the_shipped_ones(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("image/digitz")
    line = info.value.lines()[0]
    assert "config file image/digitz does not exist, and no shipped config has that name" in line
    assert "did you mean image/digits?" in line and "text/reviews" in line
    for bad in ("../image/digits", "image/../image/digits", "digits"):
        with pytest.raises(ConfigError, match="no shipped config"):
            find_config(bad)


def test_config_list_prints_one_config_a_line_with_task_and_model() -> None:
    result = runner.invoke(app, ["config", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(shipped_names())
    assert lines[0].split() == ["image/digits", "image", "simple_cnn"]
    assert "text/reviews text bilstm" in [" ".join(line.split()) for line in lines]
    rows = json.loads(runner.invoke(app, ["config", "list", "--json"]).stdout)
    assert rows[0] == {"name": "image/digits", "task": "image", "model": "simple_cnn",
                       "path": str(SHIPPED_DIR / "image" / "digits.yaml")}


def test_config_copy_writes_a_config_that_runs_as_its_first_line_says(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["config", "copy", "image/digits", "my.yaml"])
    assert result.exit_code == 0, result.output
    assert "copied image/digits to my.yaml: edit it, then run guide train-image --config my.yaml" in result.stderr
    text = (tmp_path / "my.yaml").read_text()
    shipped = (SHIPPED_DIR / "image" / "digits.yaml").read_text()
    assert text.splitlines()[0] == "# guide train-image --config my.yaml"
    assert text.splitlines()[1:] == shipped.splitlines()[1:]
    assert load_config("my.yaml").name == "digits"

    (tmp_path / "my.yaml").write_text("name: mine\n")
    refused = runner.invoke(app, ["config", "copy", "image/digits", "my.yaml"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "error: my.yaml exists: choose another name, or add --force to overwrite it"
    assert (tmp_path / "my.yaml").read_text() == "name: mine\n"
    forced = runner.invoke(app, ["config", "copy", "image/digits", "my.yaml", "--force", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["path"] == "my.yaml"
    assert (tmp_path / "my.yaml").read_text() == text

    (tmp_path / "mine").mkdir()
    into = runner.invoke(app, ["config", "copy", "configs/text/reviews.yaml", "mine"])
    assert into.exit_code == 0 and (tmp_path / "mine" / "reviews.yaml").is_file()
    unknown = runner.invoke(app, ["config", "copy", "image/nope", "x.yaml"])
    assert unknown.exit_code == 2 and "no shipped config is named 'image/nope'" in unknown.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_the_wheel_holds_the_configs(tmp_path: Path) -> None:
    """Built from a copy of the sources, so the checkout gets no build/ or egg-info folders."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("torchguide", "cli"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, src / file)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], cwd=src, env=env, check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("torchguide-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"torchguide/configs/{name}.yaml" for name in shipped_names()} <= names
