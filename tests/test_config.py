"""Config loading: overrides, deletes, imports, and every error path reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from torchguide.config import apply_overrides, load_config, to_yaml
from torchguide.errors import ConfigError

BASE = {
    "name": "t",
    "data": {"train": {"name": "image_folder", "root": "x"}, "valid": {"split": 0.1}},
    "model": {"name": "simple_cnn"},
}


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems(tmp_path: Path, data: dict | str, overrides: list[str] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), list(overrides))
    return info.value.problems


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["optimizer.lr=3e-4", "train.epochs=3", "model.width=8",
                                              "data.loader.batch_size=16", "optimizer.betas=[0.8, 0.9]"])
    assert cfg.optimizer.name == "adam" and cfg.optimizer.kwargs == {"lr": 3e-4, "betas": [0.8, 0.9]}
    assert cfg.train.epochs == 3 and cfg.model.kwargs == {"width": 8}
    assert cfg.data.loader.batch_size == 16 and cfg.data.valid.split == 0.1
    again = load_config(None, raw=yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


def test_delete_override_and_list_index() -> None:
    raw = {"a": {"b": 1, "c": [1, 2, 3]}}
    apply_overrides(raw, ["~a.b", "a.c.1=9", "a.d.e=x"])
    assert raw == {"a": {"c": [1, 9, 3], "d": {"e": "x"}}}


@pytest.mark.parametrize("override, message", [
    ("nonsense", "write key=value"),
    ("~a.zz", "no a.zz to remove"),
    ("a.c.7=1", "not an index"),
    ("a.b.x=1", "is a value, not a section"),
    ("a..b=1", "empty key part"),
])
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"a": {"b": 1, "c": [1]}}, [override])


def test_every_problem_reported_at_once_with_paths(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, ["train.epochs=0", "data.loader.batch_size=-1", "train.bogus=1",
                                      "optimizer.lr=fast", "train.precision=fp8"])
    joined = "\n".join(found)
    assert "train.epochs:" in joined and "data.loader.batch_size:" in joined
    assert "train.bogus: unknown key; train takes epochs" in joined
    assert "train.precision:" in joined
    assert len(found) >= 4


def test_unknown_component_names_get_did_you_mean(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, ["optimizer.name=adamm", "loss.name=cross_entropi", "model.name=simple_cn"])
    joined = "\n".join(found)
    assert "optimizer.name: unknown optimizer 'adamm'; did you mean adam" in joined
    assert "loss.name: unknown loss 'cross_entropi'; did you mean cross_entropy" in joined
    assert "model.name: unknown model 'simple_cn'; did you mean simple_cnn" in joined


def test_component_kwargs_checked_against_signatures(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, ["model.widht=3", "model.num_classes=3", "optimizer.lrr=1",
                                      "scheduler.name=step"])
    joined = "\n".join(found)
    assert "model.widht: not an argument of simple_cnn; did you mean 'width'" in joined
    assert "model.num_classes: set by guide from the data" in joined
    assert "optimizer.lrr:" in joined
    assert "scheduler.step_size: required by step" in joined


def test_valid_section_rules(tmp_path: Path) -> None:
    assert any("give either" in p for p in problems(tmp_path, BASE, ["data.valid.name=image_folder"]))
    assert any("data.valid.split" in p for p in problems(tmp_path, BASE, ["data.valid.split=1.5"]))


@pytest.mark.parametrize("text, message", [
    ("name: [", "YAML syntax error at line"),
    ("", "the file is empty"),
    ("- 1\n- 2", "top level must be a mapping"),
])
def test_yaml_file_errors(tmp_path: Path, text: str, message: str) -> None:
    assert message in problems(tmp_path, text)[0]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_task_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="guide train-image"):
        load_config(write(tmp_path, {**BASE, "task": "image"}), task="text")


CUSTOM = '''
import torch
from torch import nn
from torchguide.registry import LAYERS, LOSSES, MODELS


@LAYERS.register("test_custom_linear")
class myCustomLinearLayer(nn.Module):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(in_size, out_size))
        self.bias = nn.Parameter(torch.zeros(out_size))

    def forward(self, x):
        return x.mm(self.weights) + self.bias


@LOSSES.register("test_custom_mse", output="scores", target="onehot")
def customMseLoss(output, target):
    return torch.mean((output - target) ** 2)


@LOSSES.register("test_custom_nll", output="log_probs", target="index")
class CustomNLLLoss(nn.Module):
    def forward(self, x, y):
        return (-x).gather(1, y.unsqueeze(1)).mean()


@MODELS.register("test_custom_net")
def custom_net(num_classes: int, in_features: int):
    return nn.Sequential(nn.Flatten(), myCustomLinearLayer(in_features, num_classes), nn.LogSoftmax(1))
'''


def test_imports_register_user_components(tmp_path: Path) -> None:
    (tmp_path / "my_parts.py").write_text(CUSTOM)
    cfg = load_config(write(tmp_path, {**BASE, "imports": ["./my_parts.py"],
                                       "model": {"name": "test_custom_net"},
                                       "loss": {"name": "test_custom_mse"}}))
    assert cfg.loss.name == "test_custom_mse"
    from torchguide.inspect import inspect_layer
    from torchguide.losses import build_loss

    report = inspect_layer("test_custom_linear", {"in_size": 5, "out_size": 2}, (4, 5))
    assert report["outputs"][0]["shape"] == [4, 2]
    import torch

    assert float(build_loss("test_custom_mse")(torch.ones(2, 2), torch.zeros(2, 2))) == 1.0
    nll = build_loss("test_custom_nll")
    assert float(nll(torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([0]))) == pytest.approx(0.6931, 1e-3)


def test_bad_imports_are_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    found = problems(tmp_path, {**BASE, "imports": ["no_such_module_xyz", "./broken.py", "./missing.py"]})
    assert found[0].startswith("imports[0]: cannot import 'no_such_module_xyz'")
    assert "imports[1]" in found[1] and "boom" in found[1]
    assert "imports[2]" in found[2] and "not found" in found[2]


def test_imports_are_recorded_and_looked_for_next_to_the_config_first(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir, cwd = tmp_path / "project", tmp_path / "elsewhere"
    for folder, model in ((config_dir, "test_recorded_here"), (cwd, "test_recorded_cwd")):
        folder.mkdir()
        (folder / "parts.py").write_text("from torch import nn\nfrom torchguide.registry import MODELS\n"
                                         f"MODELS.register({model!r}, lambda num_classes: nn.Identity())\n")
    monkeypatch.chdir(cwd)
    cfg = load_config(write(config_dir, {**BASE, "imports": ["./parts.py", "json"]}))
    assert cfg.imported == [{"import": "./parts.py", "path": str((config_dir / "parts.py").resolve())},
                            {"import": "json", "path": None}]
    from torchguide.registry import MODELS

    assert "test_recorded_here" in MODELS and "test_recorded_cwd" not in MODELS
