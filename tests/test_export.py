"""`guide export`: each format loads back with plain torch or onnxruntime and computes what the checkpoint's
model computes; the sidecars are enough to feed it; bad input is one line, exit 2; a mismatch writes nothing."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides, reviews_overrides
from torchguide import export
from torchguide.build import build_from_checkpoint
from torchguide.checkpoint import load_checkpoint, save_checkpoint
from torchguide.runner import train_from_config

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
runner = CliRunner()
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnxscript") is not None
FORMATS = ["torchscript", "exported", pytest.param("onnx", marks=pytest.mark.skipif(
    not HAS_ORT, reason="onnxruntime and onnxscript are not installed (pip install onnx onnxscript onnxruntime)"))]
SUFFIX = {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}
TEXTS = ["a moving, funny film", "boring", "the plot is thin but the cast is wonderful and the ending lands"]


def train(task: str, config: str, overrides: list[str]) -> Path:
    summary = train_from_config(task, ROOT / config, [*overrides, "train.epochs=1", "train.max_steps=2"],
                                console=Console(quiet=True), quiet=True)
    return Path(summary["run_dir"]) / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def image_checkpoint(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_image")
    return train("image", "configs/image/digits.yaml", [*digits_overrides(digits_dir, out), "model.width=8"])


TINY_TEXT = ["model.embed_dim=16", "model.hidden=8", "model.head=8", "data.vocab.max_len=10"]


@pytest.fixture(scope="module")
def text_checkpoint(reviews_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_text")
    return train("text", "configs/text/reviews.yaml", [*reviews_overrides(reviews_dir, out), *TINY_TEXT])


def run_export(checkpoint: Path, fmt: str, out: Path, *more: str) -> dict:
    result = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out),
                                 "--json", *more])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def load_back(fmt: str, path: Path):
    """The exported file, loaded with torch or onnxruntime alone, as a function of tensors."""
    if fmt == "torchscript":
        return torch.jit.load(path)
    if fmt == "exported":
        return torch.export.load(path).module()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    return lambda *xs: torch.from_numpy(session.run(None, dict(zip(names, (x.numpy() for x in xs), strict=True)))[0])


def model_of(checkpoint: Path) -> torch.nn.Module:
    return build_from_checkpoint(load_checkpoint(checkpoint))[1].eval()


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_image_model_exports_and_agrees(fmt: str, image_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / f"digits{SUFFIX[fmt]}"
    summary = run_export(image_checkpoint, fmt, out)
    assert summary["data"].startswith("8 samples of the test data")
    assert [c["batch"] for c in summary["checks"]] == [8, 3] and summary["checks"][0]["max_abs_diff"] < 1e-5
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["classes"] == [str(d) for d in range(10)] and sidecar["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert sidecar["preprocessing"]["image_mode"] == "L" and sidecar["preprocessing"]["normalize"] is None
    images = torch.rand(5, 1, 8, 8)  # a batch size the export did not see
    with torch.no_grad():
        assert torch.allclose(load_back(fmt, out)(images), model_of(image_checkpoint)(images), atol=1e-5)


def encode(texts: list[str], vocab: dict, length: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids as FILE.vocab.json describes them, without guide: padded to `length` or the longest."""
    stoi = {t: i for i, t in enumerate(vocab["tokens"])}
    unk = vocab["unk"]["id"]
    ids = [[stoi.get(t, unk) for t in re.findall(vocab["tokenizer"]["pattern"], text.lower())][: vocab["max_len"]]
           or [unk] for text in texts]
    width = length or max(map(len, ids))
    tokens = torch.tensor([row + [vocab["pad"]["id"]] * (width - len(row)) for row in ids])
    return tokens, torch.tensor([len(row) for row in ids])


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_bilstm_exports_with_its_vocabulary_and_agrees(fmt: str, text_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / f"reviews{SUFFIX[fmt]}"
    summary = run_export(text_checkpoint, fmt, out)
    assert summary["files"] == [str(out), f"{out}.json", f"{out}.vocab.json"]
    assert max(c["max_abs_diff"] for c in summary["checks"]) < 1e-5
    sidecar = json.loads(Path(f"{out}.json").read_text())
    vocab = json.loads(Path(f"{out}.vocab.json").read_text())
    assert vocab["classes"] == sidecar["classes"] == ["fresh", "rotten"] and vocab["tokens"][:2] == ["<pad>", "<unk>"]
    length = sidecar["inputs"][0]["shape"][1]  # "length" where free, else the size to pad to
    assert (length == 10) == (fmt == "exported")  # torch.export unrolls the LSTM over max_len
    inputs = encode(TEXTS, vocab, length if isinstance(length, int) else None)
    with torch.no_grad():
        assert torch.allclose(load_back(fmt, out)(*inputs), model_of(text_checkpoint)(*inputs), atol=1e-5)


def test_packed_sequences_export_where_the_format_can(reviews_dir: Path, tmp_path: Path) -> None:
    checkpoint = train("text", "configs/text/reviews.yaml", [*reviews_overrides(reviews_dir, tmp_path), *TINY_TEXT,
                                                              "model.pack=true"])
    refused = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--format", "exported",
                                  "--out", str(tmp_path / "packed.pt2")])
    assert refused.exit_code == 2 and refused.stderr.startswith("error: torch.export cannot export this model")
    assert "--format torchscript or onnx" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("packed*"))
    for fmt in ("torchscript", "onnx") if HAS_ORT else ("torchscript",):
        summary = run_export(checkpoint, fmt, tmp_path / f"packed{SUFFIX[fmt]}")
        assert summary["checks"][1]["shape"][1] < summary["checks"][0]["shape"][1]  # a shorter batch too


@pytest.mark.parametrize(("run", "key", "source"), [
    ("image_checkpoint", "root", "random input of the recorded shape (1, 8, 8)"),
    ("text_checkpoint", "path", "random token ids")], ids=["image", "text"])
def test_random_input_when_the_data_is_gone(run: str, key: str, source: str, request: pytest.FixtureRequest,
                                            tmp_path: Path) -> None:
    payload = load_checkpoint(request.getfixturevalue(run))
    payload["config"]["data"]["test"][key] = str(tmp_path / "gone")
    moved = save_checkpoint(tmp_path / "moved.pt", payload)
    (tmp_path / "model.pt").write_bytes(b"an earlier export")
    summary = run_export(moved, "torchscript", tmp_path / "model.pt", "--force")
    assert summary["data"] == f"{source}: the config's data cannot be read here (data.test.{key}: " \
        f"{'image folder' if key == 'root' else 'text file'} {tmp_path / 'gone'} does not exist)"
    assert summary["checks"][0]["batch"] == 8 and (tmp_path / "model.pt").read_bytes() != b"an earlier export"


def test_a_mismatch_is_an_error_and_writes_nothing(image_checkpoint: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference is small enough
    result = runner.invoke(app, ["export", "--checkpoint", str(image_checkpoint), "--format", "torchscript",
                                 "--out", str(tmp_path / "digits.pt")])
    assert result.exit_code == 1 and "outputs differ from the checkpoint's model" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_and_exit_2(image_checkpoint: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "taken.pt").write_bytes(b"mine")
    cases = {
        ("--checkpoint", str(tmp_path / "none.pt"), "--format", "torchscript", "--out", str(tmp_path / "a.pt")):
            "does not exist",
        ("--checkpoint", str(image_checkpoint), "--format", "tflite", "--out", str(tmp_path / "a.pt")):
            "unknown format 'tflite': choose torchscript, exported, onnx",
        ("--checkpoint", str(image_checkpoint), "--format", "onnx", "--out", str(tmp_path / "no" / "a.onnx")):
            "does not exist: create it first",
        ("--checkpoint", str(image_checkpoint), "--format", "torchscript", "--out", str(tmp_path / "taken.pt")):
            "taken.pt exists: pass --force",
    }
    for args, message in cases.items():
        result = runner.invoke(app, ["export", *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert (tmp_path / "taken.pt").read_bytes() == b"mine"
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None)
    result = runner.invoke(app, ["export", "--checkpoint", str(image_checkpoint), "--format", "onnx",
                                 "--out", str(tmp_path / "a.onnx")])
    assert result.exit_code == 2 and "pip install onnx onnxscript onnxruntime" in result.stderr
