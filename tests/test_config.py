"""Config loading: overrides, deletes, imports, and every error path reported at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from torchguide.config import apply_overrides, load_config, parse_value, read_yaml, to_yaml
from torchguide.config import raw as raw_config
from torchguide.errors import ConfigError
from torchguide.usercode import is_file_import

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


def test_a_component_given_a_name_is_swapped_whole() -> None:
    raw = {"name": "bilstm", "model": {"name": "bilstm", "hidden": 128, "dropout": 0.5}, "data": {}}
    apply_overrides(raw, ["model=embedding_bag", "model.dim=32", "data.collate=pad_to_longest", "name=x"],
                    ["model", "data.collate"])
    assert raw == {"name": "x", "model": {"name": "embedding_bag", "dim": 32},
                   "data": {"collate": {"name": "pad_to_longest"}}}


def test_renamed_sections_remember_the_keys_they_kept() -> None:
    raw = {"model": {"name": "a", "x": 1, "y": 2, "z": 3}, "loss": {"name": "l", "w": 1}}
    renamed: dict[str, list[str]] = {}
    apply_overrides(raw, ["model.name=b", "model.y=5", "~model.z", "loss.name=m", "loss=n"],
                    ["model", "loss"], renamed)
    assert renamed == {"model": ["x"]}  # y and z were set again; loss was swapped whole afterwards


REVIEWS = Path(__file__).parent.parent / "configs/text/reviews.yaml"


def test_a_new_name_that_leaves_the_old_arguments_suggests_the_swap() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REVIEWS, ["model.name=embedding_bag", "model.dimm=3", "scheduler.name=step",
                              "scheduler.step_size=2"])
    assert info.value.problems == [
        "model.name=embedding_bag leaves embed_dim, hidden, head, dropout that embedding_bag does not take: "
        "use model=embedding_bag to swap the whole section",
        "model.dimm: not an argument of embedding_bag; did you mean 'dim'? it takes dim",
        "scheduler.name=step leaves warmup_steps that step does not take: use scheduler=step to swap the "
        "whole section"]


def test_swapped_sections_start_from_the_new_components_defaults() -> None:
    cfg = load_config(REVIEWS, ["model=embedding_bag", "model.dim=32", "optimizer=sgd", "optimizer.lr=0.1",
                                "scheduler=cosine", "data.sampler=random", "loss=cross_entropy"])
    assert (cfg.model.name, cfg.model.kwargs) == ("embedding_bag", {"dim": 32})
    assert (cfg.optimizer.name, cfg.optimizer.kwargs) == ("sgd", {"lr": 0.1})
    assert (cfg.scheduler.name, cfg.scheduler.kwargs) == ("cosine", {})
    assert cfg.data.sampler.name == "random" and cfg.loss.name == "cross_entropy"
    assert load_config(REVIEWS, ["optimizer.name=adam"]).optimizer.kwargs == {"lr": 1e-3, "weight_decay": 0.1}


def test_command_line_values_are_read_as_yaml() -> None:
    assert parse_value("3e-4") == 0.0003 and parse_value("8") == 8 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("  ") is None
    assert parse_value("a: [") == "a: ["  # not YAML: kept as the text it is


def test_sections_given_a_value_are_named_as_users_know_them(tmp_path: Path) -> None:
    assert problems(tmp_path, BASE, ["data=3"]) == [
        "data: Input should be a valid dictionary or instance of Data (got 3)"]
    assert problems(tmp_path, BASE, ["data.vocab=3"]) == [
        "data.vocab: Input should be a valid dictionary or instance of Vocab (got 3)"]


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


@pytest.mark.parametrize("overrides, message", [
    (["model.width=abc"], "model.width: expected int, got 'abc'"),
    (["optimizer.name=adam", "optimizer.betas=[0.9]"],
     "optimizer.betas: expected tuple[float | Tensor, float | Tensor], got [0.9]"),
    (["loss.weight=[a,b]"], "loss.weight: expected Tensor | None, got ['a', 'b']"),
    (["optimizer.lr=fast"], "optimizer.lr: expected float | Tensor, got 'fast'"),
    (['optimizer.lr="0.1"'], "optimizer.lr: expected float | Tensor, got the text '0.1': write it without quotes"),
    (["scheduler.name=step", "scheduler.step_size=[1]"], "scheduler.step_size: expected int, got [1]"),
    (["model.name=resnet18", "model.zero_init_residual=maybe"], "model.zero_init_residual: expected bool"),
    (["model.name=vit_b_16", "model.num_layers=2"], "model.num_layers: not an argument of vit_b_16"),
    (["model.name=resnet18", "model.in_features=3"], "model.in_features: not an argument of resnet18"),
])
def test_component_arguments_are_type_checked(tmp_path: Path, overrides: list[str], message: str) -> None:
    found = problems(tmp_path, BASE, overrides)
    assert any(p.startswith(message) for p in found), found


def test_well_typed_component_arguments_pass(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), ["optimizer.name=adam", "optimizer.betas=[0.8, 0.9]",
                                                 "loss.weight=[1, 2.5, 1]", "model.width=8"])
    assert config.optimizer.kwargs["betas"] == [0.8, 0.9] and config.model.kwargs["width"] == 8


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



MIX = "data.batch_transforms=[{name: mix_up, alpha: 0.2, p: 0.5}, {name: cut_mix, p: 0.5}]"


def test_batch_transforms_are_validated_with_p_and_without_num_classes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), [MIX])
    assert [(t.name, t.kwargs, t.p) for t in cfg.data.batch_transforms] == [
        ("mix_up", {"alpha": 0.2}, 0.5), ("cut_mix", {}, 0.5)]
    assert load_config(write(tmp_path, BASE), ["data.batch_transforms=[cut_mix]"]).data.batch_transforms[0].p == 1
    found = problems(tmp_path, BASE, ["data.batch_transforms=[{name: mix_up, p: 0.7}, "
                                      "{name: cut_mix, num_classes: 10, p: 0.5}, {name: mixx, p: 0}]"])
    assert found[0].startswith("data.batch_transforms: the p values add up to 1.2")
    assert "data.batch_transforms.1.num_classes: set by guide from the data, remove it from the config" in found
    assert any(p.startswith("data.batch_transforms.2.name: unknown batch_transform 'mixx'") for p in found)
    assert problems(tmp_path, BASE, ["data.batch_transforms=[{name: mix_up, p: 2}]"]) == [
        "data.batch_transforms.0.p: Input should be less than or equal to 1 (got 2)"]


@pytest.mark.parametrize("loss", ["nll", "bce_with_logits", "mse", "kl_div", "custom_nll"])
def test_batch_transforms_refuse_a_loss_without_soft_targets(tmp_path: Path, loss: str) -> None:
    assert problems(tmp_path, BASE, [MIX, f"loss.name={loss}"]) == [
        f"loss.name: {loss} cannot learn from the class probabilities that data.batch_transforms "
        "(mix_up, cut_mix) makes: use loss cross_entropy, or remove data.batch_transforms"]


def test_batch_transforms_refuse_text(tmp_path: Path) -> None:
    text = {"name": "t", "data": {"train": {"name": "text_csv", "path": "x.csv"}}, "model": {"name": "bilstm"}}
    message = ("data.batch_transforms: batch transforms (mix_up) mix images, not texts: "
               "remove data.batch_transforms")
    assert problems(tmp_path, text, ["data.batch_transforms=[mix_up]"]) == [message]
    with pytest.raises(ConfigError) as info:  # the command's task counts too
        load_config(write(tmp_path, {**text, "data": {"train": {"name": "my_texts"}}}),
                    ["data.batch_transforms=[mix_up]"], task="text")
    assert message in info.value.problems


def test_per_image_mixing_and_left_out_transforms_point_to_the_fix(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, ["data.transforms.train=[{name: cut_mix, num_classes: 10}, MixUp, "
                                      "sanitize_bounding_boxes, {name: five_crop, size: 4}]"])
    assert found[0].startswith("data.transforms.train.0.name: cut_mix mixes whole batches, not single images: "
                               "move it to data.batch_transforms")
    assert found[1].startswith("data.transforms.train.1.name: mix_up mixes whole batches")
    assert "(detection)" in found[2] and "five images per sample" in found[3]
    assert len(found) == 4 and all("\n" not in p for p in found)


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
    from torchguide.inspection import inspect_layer
    from torchguide.losses import build_loss

    report = inspect_layer("test_custom_linear", {"in_size": 5, "out_size": 2}, (4, 5))
    assert report["outputs"][0]["shape"] == [4, 2]
    import torch

    assert float(build_loss("test_custom_mse")(torch.ones(2, 2), torch.zeros(2, 2))) == 1.0
    nll = build_loss("test_custom_nll")
    assert float(nll(torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([0]))) == pytest.approx(0.6931, 1e-3)


def test_imports_of_files_and_of_modules_are_told_apart() -> None:
    assert is_file_import("my_models.py") and is_file_import("lib/my_models")
    assert not is_file_import("my_package.models")


def test_bad_imports_are_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    found = problems(tmp_path, {**BASE, "imports": ["no_such_module_xyz", "./broken.py", "./missing.py"]})
    assert found[0].startswith("imports[0]: cannot import 'no_such_module_xyz'")
    assert "imports[1]" in found[1] and "boom" in found[1]
    assert "imports[2]" in found[2] and "not found" in found[2]


def test_freeze_and_optimizer_groups_are_guide_keys_not_builder_kwargs(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["model.freeze=features.*", "optimizer.name=adamw",
                                              "optimizer.groups=[{params: head.*, lr: 1.0e-2, betas: [0.8, 0.9]}]",
                                              "optimizer.no_decay_norm_bias=true"])
    assert cfg.model.freeze == ["features.*"] and cfg.model.kwargs == {}
    assert cfg.optimizer.kwargs == {"lr": 1e-3} and cfg.optimizer.groups[0].options == {"lr": 1e-2, "betas": [0.8, 0.9]}
    assert "freeze" not in to_yaml(load_config(write(tmp_path, BASE)))  # keys at their default stay out of dumps


def test_optimizer_group_options_are_checked_against_the_optimizer(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, ["optimizer.groups=[{params: head.*, momentun: 0.9}, {lr: 1}]",
                                      "optimizer.name=rprop", "optimizer.no_decay_norm_bias=true", "model.freeze=[]"])
    joined = "\n".join(found)
    assert "optimizer.groups.0.momentun: not an option of rprop; it takes lr, etas" in joined
    assert "optimizer.groups.1.params: required, add it" in joined
    assert "optimizer.no_decay_norm_bias: rprop has no weight_decay to leave out" in joined
    assert "model.freeze: List should have at least 1 item" in joined



@pytest.mark.parametrize("weights, message", [
    ("IMAGENET1K_V2", "model.weights: 'IMAGENET1K_V2' is neither a file nor a weights name of resnet18; "
                      "choose DEFAULT, IMAGENET1K_V1"),
    ("ResNet50_Weights.IMAGENET1K_V2", "is neither a file nor a weights name of resnet18"),
    ("missing/resnet.pth", "model.weights: file missing/resnet.pth does not exist"),
])
def test_torchvision_weights_must_be_a_file_or_a_known_name(tmp_path: Path, weights: str, message: str) -> None:
    found = problems(tmp_path, BASE, ["model.name=resnet18", f"model.weights={weights}"])
    assert any(message in p for p in found), found


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "FILE"])
def test_torchvision_weights_names_and_files_validate(tmp_path: Path, weights: str) -> None:
    if weights == "FILE":
        weights = str(tmp_path / "w.pt")
        (tmp_path / "w.pt").write_bytes(b"")
    cfg = load_config(write(tmp_path, BASE), ["model.name=resnet18", f"model.weights={weights}"])
    assert cfg.model.kwargs == {"weights": weights}


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


# ---------------------------------------------------------------- parsing that cannot hang or explode

def test_yaml_aliases_are_refused_with_their_line(tmp_path: Path) -> None:
    text = "name: t\nbase: &b {lr: 1}\noptimizer: *b\n"
    assert problems(tmp_path, text) == ["line 3: YAML aliases (*b) are not accepted in a config: write the value "
                                        "out where it is used"]


def test_duplicate_keys_are_refused_with_key_and_line(tmp_path: Path) -> None:
    assert problems(tmp_path, "name: a\nmodel: {name: simple_cnn}\nname: b\n") == [
        "line 3: key 'name' appears twice in the same section: keep one (YAML would silently use the last)"]
    (problem,) = problems(tmp_path, "model:\n  name: simple_cnn\n  width: 8\n  width: 16\n")
    assert problem.startswith("line 4: key 'width'")
    with pytest.raises(ConfigError, match="appears twice"):
        parse_value("{a: 1, a: 2}")
    assert parse_value("{a: 1, b: 2}") == {"a": 1, "b": 2}


def test_only_regular_files_of_limited_size_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.yaml")
        with pytest.raises(ConfigError, match="named pipe"):
            read_yaml(tmp_path / "pipe.yaml")  # refused without opening it, so it cannot block
    with pytest.raises(ConfigError, match="character device"):
        read_yaml(os.devnull)
    monkeypatch.setattr(raw_config, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(ConfigError, match="larger than"):
        read_yaml(write(tmp_path, "# x\n" * 30))


def test_a_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff".encode() + yaml.safe_dump(BASE).encode())
    assert load_config(path).name == "t"


# ---------------------------------------------------------------- values

def test_home_is_expanded_in_output_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {**BASE, "output": {"dir": "~/runs"}}))
    assert config.output.dir == str(Path.home() / "runs")


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", ""])
def test_run_names_that_leave_output_dir_or_hide_are_refused(tmp_path: Path, name: str) -> None:
    assert any(p.startswith("name:") for p in problems(tmp_path, {**BASE, "name": name}))


def test_run_names_with_dots_inside_are_fine(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, {**BASE, "name": "v1.2-run_3"})).name == "v1.2-run_3"


@pytest.mark.parametrize(("threads", "ok"), [(0, False), (-3, False), (1, True), ("auto", True)])
def test_threads_are_at_least_one_or_auto(tmp_path: Path, threads: object, ok: bool) -> None:
    raw = {**BASE, "train": {"threads": threads}}
    if ok:
        assert load_config(write(tmp_path, raw)).train.threads == threads
    else:
        assert problems(tmp_path, raw) == [f"train.threads: give a number of threads >= 1, or auto (got {threads})"]
