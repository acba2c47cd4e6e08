"""A checkpoint's code: recorded where it was found, imported again, and a moved file named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchguide.errors import CheckpointError
from torchguide.registry import MODELS
from torchguide.usercode import import_checkpoint_code


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
