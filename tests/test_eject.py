"""`guide eject`: the ejected script trains the run guide trains, loss for loss.

Each shipped config is ejected, then trained for two short epochs on small data both by
`guide train-*` (in this process) and by the script (a process of its own, in which
`import torchguide` fails), and every epoch's train and validation loss, and the test loss
of the best epoch, must agree to 4 decimals (they agree to the 6 the script prints).
digits and reviews run by default; the other configs, your own code and the features no
shipped config uses (accumulation, workers, freezing, groups, ...) are marked slow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT

runner = CliRunner()
EPOCH = re.compile(r"^epoch (\d+)/\d+  train loss (\S+)  acc \S+(?:  valid loss (\S+)  acc \S+)?", re.M)
TEST = re.compile(r"^test loss (\S+)", re.M)
# runs the script with torchguide made unimportable, so a dependency on it fails the test
STANDALONE = "import runpy, sys; sys.modules['torchguide'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"
SHORT = ["train.epochs=2"]


@pytest.fixture(scope="module")
def small_digits(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 4 test images per class: two epochs of 5 batches, validation and test in a second."""
    out = tmp_path_factory.mktemp("small_digits")
    for split, n in (("train", 16), ("test", 4)):
        for folder in sorted((digits_dir / split).iterdir()):
            (out / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.png"))[:n]:
                shutil.copy(image, out / split / folder.name / image.name)
    return out


def data_overrides(config: Path, small_digits: Path, reviews_dir: Path) -> list[str]:
    """Small data for a shipped config."""
    if config.parent.name == "image":
        return [f"data.train.root={small_digits / 'train'}", f"data.test.root={small_digits / 'test'}"]
    if config.stem == "reviews":
        return [f"data.{s}.path={reviews_dir / f'{s}.csv'}" for s in ("train", "valid", "test")]
    return ["data.train.size=192", "data.train.max_len=80"]  # random_sequences: fewer, shorter


def guide_losses(config: Path, overrides: list[str], out: Path) -> tuple[list[tuple[float, float | None]], float]:
    """(train loss, valid loss) of each epoch of `guide train-*`, and its test loss, from its run directory."""
    task = "text" if config.parent.name == "text" else "image"
    result = runner.invoke(app, [f"train-{task}", "--config", str(config), *overrides, f"output.dir={out}",
                                 "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    epochs = [(r["train_loss"], r["valid_loss"]) for r in rows if r["kind"] == "epoch"]
    return epochs, (summary.get("test") or {}).get("loss")


def script_losses(script: Path, cwd: Path) -> tuple[list[tuple[float, float | None]], float | None, str]:
    """(train loss, valid loss) of each epoch the script prints, its test loss, and all it printed."""
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "HOME": str(cwd)}
    done = subprocess.run([sys.executable, "-c", STANDALONE, str(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = [(float(train), float(valid) if valid else None) for _, train, valid in EPOCH.findall(done.stdout)]
    test = TEST.search(done.stdout)
    return epochs, float(test.group(1)) if test else None, done.stdout


def check_same_run(config: Path, overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eject `config` with `overrides`, train it both ways, and compare every loss."""
    monkeypatch.chdir(tmp_path)  # the script writes its weights where it runs
    script = tmp_path / "train.py"
    result = runner.invoke(app, ["eject", "--config", str(config), *overrides, "--out", str(script)])
    assert result.exit_code == 0, result.output
    assert not re.search(r"^\s*(import|from) torchguide", script.read_text(), re.M)
    theirs, their_test, output = script_losses(script, tmp_path)
    ours, our_test = guide_losses(config, overrides, tmp_path / "runs")
    assert len(theirs) == len(ours) > 0, output
    for epoch, ((train, valid), (guide_train, guide_valid)) in enumerate(zip(theirs, ours, strict=True), 1):
        assert train == pytest.approx(guide_train, abs=5e-5), f"epoch {epoch} train loss\n{output}"
        assert (valid is None) == (guide_valid is None), output
        if valid is not None:
            assert valid == pytest.approx(guide_valid, abs=5e-5), f"epoch {epoch} valid loss\n{output}"
    assert (their_test is None) == (our_test is None)
    if our_test is not None:
        assert their_test == pytest.approx(our_test, abs=5e-5), f"test loss of the best epoch\n{output}"


SHIPPED = sorted((ROOT / "configs").glob("*/*.yaml"))
DEFAULT = {"digits", "reviews"}


@pytest.mark.parametrize("config", [pytest.param(c, id=c.stem, marks=() if c.stem in DEFAULT else pytest.mark.slow)
                                    for c in SHIPPED])
def test_ejected_script_trains_the_same_run(config: Path, small_digits: Path, reviews_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    check_same_run(config, [*data_overrides(config, small_digits, reviews_dir), *SHORT], tmp_path, monkeypatch)


@pytest.mark.slow
def test_your_own_code_is_imported_from_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ROOT / "examples" / "custom" / "config.yaml"
    check_same_run(config, ["train.max_steps=3", "train.epochs=1"], tmp_path, monkeypatch)
    assert "load_file(" in (tmp_path / "train.py").read_text()


def test_script_to_stdout_names_what_guide_adds(small_digits: Path) -> None:
    config = ROOT / "configs/image/digits.yaml"
    result = runner.invoke(app, ["eject", "--config", str(config), *data_overrides(config, small_digits, Path())])
    assert result.exit_code == 0, result.output
    script = result.stdout
    compile(script, "train.py", "exec")
    assert "--nproc 2" in script and "--resume auto" in script and "guide check --config" in script
    for step in ("optimizer.zero_grad(", "loss.backward()", "optimizer.step()", "scheduler.step()",
                 "torch.autocast(", "def collate(", "class RandomBatches(", "class SimpleCNN(", "def conv_block("):
        assert step in script.replace("scaler.scale(loss).backward()", "loss.backward()").replace(
            "scaler.step(optimizer)", "optimizer.step()"), step


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
    (["--config", "configs/image/digits.yaml", "--out", "no/such/folder/train.py"], "the folder no/such/folder"),
    (["--config", "configs/image/digits.yaml", "--out", "README.md"], "README.md exists: add --force"),
    (["--config", "configs/image/digits.yaml", "--out", "configs"], "is a directory"),
    (["--config", "configs/image/digits.yaml", "train.strategy=ddp"], "train.strategy: ddp has no plain"),
    (["--config", "configs/image/digits.yaml", "train.ema=true"], "train.ema: the script keeps no moving average"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["eject", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    out = tmp_path_factory.mktemp("tokens") / "ids.jsonl"
    gen = torch.Generator().manual_seed(1)
    rows = [{"ids": torch.randint(1, 50, (int(n),), generator=gen).tolist(), "label": ["a", "b", "c"][i % 3]}
            for i, n in enumerate(torch.randint(3, 40, (150,), generator=gen))]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


FEATURES = {
    "accumulate, clip, plateau, eval batch, early stopping, workers": (
        "image/digits.yaml", ["train.accumulate=3", "train.grad_clip=0.5", "scheduler.name=reduce_lr_on_plateau",
                              "data.loader.eval_batch_size=7", "train.early_stopping.patience=1",
                              "data.loader.num_workers=2", "train.epochs=3"]),
    "freeze, groups, no decay, step schedule, drop_last, normalize, random crop, max_steps": (
        "image/digits.yaml", ["model.freeze=[features.0.*]", "optimizer.groups=[{params: head.*, lr: 0.01}]",
                              "optimizer.no_decay_norm_bias=true", "scheduler.name=step", "scheduler.step_size=1",
                              "data.loader.drop_last=true", "train.max_steps=7",
                              "data.transforms.train=[{name: random_crop, size: 8, padding: 1}, "
                              "{name: normalize, mean: [0.5], std: [0.25]}]",
                              "data.transforms.eval=[{name: normalize, mean: [0.5], std: [0.25]}]"]),
    "bf16 autocast on the CPU, channels_last, RGB, a named validation set": (
        "image/digits_mlp.yaml", ["train.precision=bf16", "train.channels_last=true", "data.train.mode=RGB",
                                  "data.test.mode=RGB", "~data.valid",
                                  "data.valid={name: image_folder, mode: RGB}"]),
    "sorted batches, pad_to_length, weighted cross entropy, skip NaN, embedding bag": (
        "text/reviews.yaml", ["data.sampler.name=sorted", "data.collate.name=pad_to_length", "data.collate.length=30",
                              "loss.name=cross_entropy", "loss.weight=[1.0, 2.0]", "train.on_nan=skip",
                              "model.name=embedding_bag", "~model.embed_dim", "~model.hidden", "~model.head",
                              "~model.dropout", "~data.valid", "data.valid={split: 0.2}"]),
    "token ids, a transformer, cosine schedule": (
        "text/reviews.yaml", ["model.name=transformer_encoder", "~model.embed_dim", "~model.hidden", "~model.head",
                              "model.dim=32", "model.ff=64", "scheduler={name: cosine}", "loss.name=cross_entropy"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("feature", list(FEATURES))
def test_features_train_the_same_run(feature: str, small_digits: Path, reviews_dir: Path, token_file: Path,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, extra = FEATURES[feature]
    config = ROOT / "configs" / name
    overrides = [*data_overrides(config, small_digits, reviews_dir), *SHORT, *extra]
    if "data.valid={name: image_folder, mode: RGB}" in extra:
        overrides.append(f"data.valid.root={small_digits / 'test'}")
    if "token ids" in feature:
        overrides = [o for o in overrides if not o.startswith("data.")] + [
            "data.train={name: token_ids}", f"data.train.path={token_file}", "~data.valid", "~data.test",
            "data.valid={split: 0.2}"]
    check_same_run(config, overrides, tmp_path, monkeypatch)


def test_your_code_that_needs_guide_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\nfrom torchguide.losses import build_loss  # noqa: F401\n"
        "from torchguide.registry import MODELS\n\n\n@MODELS.register('eject_needs_guide')\n"
        "def needs_guide(num_classes: int) -> nn.Module:\n    return nn.Linear(64, num_classes)\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["eject", "--config", str(ROOT / "configs/image/digits.yaml"), "imports=[./net.py]",
                                 "model.name=eject_needs_guide", "~model.width"])
    assert result.exit_code == 2, result.output
    assert "imports[0]: ./net.py imports torchguide.losses, which the script cannot provide" in result.stderr


def test_the_readme_shows_the_script_of_digits(digits_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "digits").symlink_to(digits_dir)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["eject", "--config", "configs/image/digits.yaml"])
    assert result.exit_code == 0, result.output
    shown = re.search(r"<summary>The script .*?</summary>\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(),
                      re.S)
    assert shown is not None and shown.group(1) == result.stdout, "README: run guide eject again for the script"
