"""A checkpoint's code: recorded where it was found, imported again, and a moved file named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchguide.checkpoint import import_checkpoint_code
from torchguide.errors import CheckpointError
from torchguide.registry import MODELS
from torchguide.train import first_difference, must_match


def model_file(folder: Path, name: str, registered: str) -> Path:
    """A .py file that registers a model `registered`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"from torch import nn\nfrom torchguide.registry import MODELS\n\n"
                    f"MODELS.register({registered!r}, lambda num_classes: nn.Linear(4, num_classes))\n")
    return path


def recorded(*paths: Path) -> dict:
    return {"imports": [{"import": f"./{p.name}", "path": str(p)} for p in paths], "config": {}}


def test_recorded_files_and_modules_are_imported_again(tmp_path: Path) -> None:
    path = model_file(tmp_path, "kept.py", "test_ckpt_kept")
    payload = recorded(path)
    payload["imports"].append({"import": "json", "path": None})
    import_checkpoint_code(payload)
    import_checkpoint_code(payload)  # twice: the same code registers once
    assert "test_ckpt_kept" in MODELS


def test_a_moved_file_is_one_line_naming_it_and_how_to_point_at_it(tmp_path: Path) -> None:
    gone = tmp_path / "old" / "moved.py"
    with pytest.raises(CheckpointError) as info:
        import_checkpoint_code(recorded(gone))
    assert info.value.lines() == [f"the checkpoint's code is gone from where it was: ./moved.py ({gone}): give "
                                  "its new folder with --import FOLDER, or each file with --import PATH/NAME.py"]
    new = model_file(tmp_path / "new", "moved.py", "test_ckpt_moved")
    import_checkpoint_code(recorded(gone), [str(new)])
    assert "test_ckpt_moved" in MODELS
    also_gone = tmp_path / "old" / "also.py"
    model_file(tmp_path / "new", "also.py", "test_ckpt_also")
    import_checkpoint_code(recorded(gone, also_gone), [str(tmp_path / "new")])  # a folder: found there by name
    assert "test_ckpt_also" in MODELS
    renamed = model_file(tmp_path / "new", "renamed.py", "test_ckpt_renamed")
    import_checkpoint_code(recorded(gone), [str(renamed)])  # takes the place of the file that is gone
    assert "test_ckpt_renamed" in MODELS
    import_checkpoint_code(recorded(gone), skip_missing=True)  # resume: the config's own imports decide


def test_old_checkpoints_import_their_configs_imports_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    model_file(tmp_path, "legacy.py", "test_ckpt_legacy")
    monkeypatch.chdir(tmp_path)
    import_checkpoint_code({"config": {"imports": ["./legacy.py"]}})
    assert "test_ckpt_legacy" in MODELS


@pytest.mark.parametrize(("imports", "extra", "message"), [
    ([{"import": "no_such_module_xyz", "path": None}], [], "PYTHONPATH"),
    ([], ["no/such/file.py"], "--import no/such/file.py: no such file or folder"),
    ("boom", [], "RuntimeError: boom: fix the error in that file"),
])
def test_code_that_cannot_be_imported_is_a_checkpoint_error(imports: list | str, extra: list[str], message: str,
                                                            tmp_path: Path) -> None:
    if imports == "boom":
        (tmp_path / "boom.py").write_text("raise RuntimeError('boom')\n")
        imports = [{"import": "./boom.py", "path": str(tmp_path / "boom.py")}]
    with pytest.raises(CheckpointError) as info:
        import_checkpoint_code({"imports": imports}, extra)
    assert message in info.value.lines()[0]


# ---------------------------------------------------------------- what a resumed run must keep

SAVED = {"seed": 1, "model": {"name": "simple_cnn", "width": 32},
         "data": {"train": {"name": "image_folder", "root": "a"}, "loader": {"batch_size": 32, "num_workers": 2}}}


def test_must_match_leaves_out_only_the_data_loader() -> None:
    assert must_match(SAVED, "data") == {"train": {"name": "image_folder", "root": "a"}}
    assert must_match(SAVED, "model") == {"name": "simple_cnn", "width": 32}
    assert must_match(SAVED, "seed") == 1
    assert must_match(SAVED, "loss") is None  # a section the config lacks
    assert must_match({"data": None}, "data") is None
    assert SAVED["data"]["loader"] == {"batch_size": 32, "num_workers": 2}  # the config itself is untouched


def test_must_match_ignores_a_changed_loader_but_not_a_changed_dataset() -> None:
    loader = {**SAVED, "data": {**SAVED["data"], "loader": {"batch_size": 64, "num_workers": 0}}}
    root = {**SAVED, "data": {**SAVED["data"], "train": {"name": "image_folder", "root": "b"}}}
    assert must_match(loader, "data") == must_match(SAVED, "data")
    assert must_match(root, "data") != must_match(SAVED, "data")


@pytest.mark.parametrize(("key", "a", "b", "named"), [
    ("model", {"name": "simple_cnn", "width": 32}, {"name": "simple_cnn", "width": 64}, "model.width (32 -> 64)"),
    ("data", {"train": {"root": "a", "size": 1}}, {"train": {"root": "b", "size": 2}},
     "data.train.root ('a' -> 'b')"),  # the first difference, in the saved config's order
    ("model", {"name": "x"}, {"name": "x", "dropout": 0.5}, "model.dropout (None -> 0.5)"),  # only in the new one
    ("model", {"name": "x", "dropout": 0.5}, {"name": "x"}, "model.dropout (0.5 -> None)"),
    ("model", {"sizes": [1, 2]}, {"sizes": [1, 3]}, "model.sizes"),  # a list is named, not printed
    ("data", {"train": {"root": "a"}}, {"train": None}, "data.train"),  # a section removed
    ("model", "simple_cnn", "resnet18", "model ('simple_cnn' -> 'resnet18')"),
])
def test_first_difference_names_the_dotted_path(key: str, a: object, b: object, named: str) -> None:
    assert first_difference(a, b, key) == named
