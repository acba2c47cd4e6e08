"""Image datasets, the stratified split, transforms and bad data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from torchguide.config import Component, load_config
from torchguide.data import image as image_module
from torchguide.data.image import image_csv, image_folder, image_glob, load_image, require_image_files
from torchguide.data.loaders import build_data, check_sizes, fixes_size, stratified_split
from torchguide.data.transforms import build_pipeline
from torchguide.errors import ConfigError, DataError


def make_tree(root: Path, spec: dict[str, list[tuple[str, str]]]) -> Path:
    """spec: class -> [(file name, mode or 'text')]"""
    for cls, files in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, mode in files:
            path = root / cls / name
            if mode == "text":
                path.write_text("not an image")
            else:
                Image.new(mode, (6, 5), 128).save(path)
    return root


def test_image_folder_on_digits(digits_dir: Path) -> None:
    ds = image_folder(str(digits_dir / "train"))
    assert ds.classes == [str(i) for i in range(10)] and len(ds) == 1438 and ds.mode == "L"
    image, label = ds[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8 and label == 0


def test_glob_dataset_sorts_classes_and_opens_lazily(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"zebra": [("a.png", "RGB")], "ant": [("b.png", "RGB")], "cat": [("c.png", "RGB")]})
    ds = image_glob(str(root), pattern="*/*.png")
    assert ds.classes == ["ant", "cat", "zebra"]
    assert [label for _, label in ds.samples] == [0, 1, 2]
    assert isinstance(ds.samples[0][0], str)  # paths, not decoded images


def test_csv_dataset(tmp_path: Path) -> None:
    make_tree(tmp_path / "img", {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    (tmp_path / "labels.csv").write_text("path,label\nimg/a/1.png,yes\nimg/b/2.png,no\n")
    ds = image_csv(str(tmp_path / "labels.csv"))
    assert ds.classes == ["no", "yes"] and ds.samples[0][1] == 1
    (tmp_path / "bad.csv").write_text("file,label\nx,y\n")
    with pytest.raises(DataError, match="no column"):
        image_csv(str(tmp_path / "bad.csv"))


def test_mixed_modes_are_converted(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": [("1.png", "L"), ("2.png", "RGBA")], "b": [("3.png", "RGB"), ("4.png", "P")]})
    ds = image_folder(str(root))
    assert ds.mode == "RGB"
    for i, (path, _) in enumerate(ds.samples):  # torchvision's decode gives what PIL's convert gives
        with Image.open(path) as image:
            assert torch.equal(ds[i][0], pil_to_tensor(image.convert("RGB")))
    assert image_folder(str(root), mode="L")[1][0].shape[0] == 1


def test_unreadable_and_non_image_files_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    root = make_tree(tmp_path, {"a": [("1.png", "L"), ("broken.png", "text")], "b": [("2.png", "L"),
                                                                                   ("notes.txt", "text")]})
    with caplog.at_level(logging.WARNING, logger="torchguide"):
        ds = image_folder(str(root))
    assert len(ds) == 2
    assert "skipped 1 unreadable image file(s)" in caplog.text and "broken.png" in caplog.text
    assert "skipped 1 non-image file(s)" in caplog.text


@pytest.mark.parametrize("spec, message", [
    ({}, "no class folders"),
    ({"a": [("1.png", "L")], "b": []}, "class folder\\(s\\) with no images in .*: b"),
    ({"a": [("1.png", "L")]}, "only one class"),
    ({"a": [("1.txt", "text")], "b": [("2.txt", "text")]}, "no readable images"),
])
def test_bad_folders(tmp_path: Path, spec: dict, message: str) -> None:
    root = make_tree(tmp_path / "root", spec)
    root.mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        image_folder(str(root))


def test_missing_folder_and_corrupt_file_at_read(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        image_folder(str(tmp_path / "nope"))
    root = make_tree(tmp_path / "r", {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    ds = image_folder(str(root))
    Path(ds.samples[0][0]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated after the check
    with pytest.raises(DataError, match="cannot read image"):
        ds[0]


def test_stratified_split_is_reproducible_and_keeps_shares() -> None:
    targets = [0] * 50 + [1] * 30 + [2] * 20
    train, valid = stratified_split(targets, 0.1, seed=3)
    assert stratified_split(targets, 0.1, seed=3) == (train, valid)
    assert stratified_split(targets, 0.1, seed=4) != (train, valid)
    assert sorted(train + valid) == list(range(100))
    assert [sum(targets[i] == c for i in valid) for c in range(3)] == [5, 3, 2]


def test_transforms_pipeline_completed_to_float_tensors() -> None:
    from torchguide.config import Component

    image = Image.new("RGB", (40, 30), (255, 0, 0))
    pipeline = build_pipeline([Component(name="resize", size=[16, 16]), Component(
        name="normalize", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
    out = pipeline(image)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert out[0].max() == pytest.approx(1.0) and out[1].min() == pytest.approx(-1.0)
    parts = [[type(t).__name__ for t in part.transforms] for part in (pipeline.fixed, pipeline.batch)]
    assert parts == [["ToImage", "Resize"], ["ToDtype", "Normalize"]]  # uint8 per image, float per batch
    assert build_pipeline(["grayscale", "to_image"])(image).shape[0] == 1
    augment = build_pipeline(["to_image", Component(name="resize", size=[8, 8]),
                              Component(name="random_rotation", degrees=5), Component(name="center_crop", size=[6, 6])])
    assert [type(t).__name__ for t in augment.fixed.transforms] == ["ToImage", "Resize"]  # cacheable
    assert [type(t).__name__ for t in augment.random.transforms] == ["RandomRotation", "CenterCrop"]


def test_memory_cache_keeps_the_fixed_part(digits_dir: Path, tmp_path: Path) -> None:
    import shutil

    from torchguide.config import Component

    shutil.copytree(digits_dir / "test", tmp_path / "digits")
    ds = image_folder(str(tmp_path / "digits"))
    cached = ds.view(transform=build_pipeline([Component(name="resize", size=[16, 16])]), cache=True)
    first = cached[5][0]
    shutil.rmtree(tmp_path / "digits")  # the files are gone: the cache answers
    assert torch.equal(cached[5][0], first) and first.shape == (1, 16, 16) and first.dtype == torch.uint8
    assert list(cached.cache) == [5]


def test_build_data_split_and_facts(digits_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(None, raw={"data": {"train": {"name": "image_folder", "root": str(digits_dir / "train")},
                                          "valid": {"split": 0.1}}, "model": {"name": "simple_cnn"}})
    data = build_data(cfg, ("train", "valid"))
    assert len(data.splits["train"]) + len(data.splits["valid"]) == 1438
    assert data.in_channels == 1 and data.in_features == 64 and data.num_classes == 10
    train_paths = {p for p, _ in data.splits["train"].samples}
    assert not train_paths & {p for p, _ in data.splits["valid"].samples}


def test_eval_data_with_unknown_classes_is_refused(tmp_path: Path, digits_dir: Path) -> None:
    root = make_tree(tmp_path, {"0": [("1.png", "L")], "cats": [("2.png", "L")]})
    cfg = load_config(None, raw={"data": {"train": {"name": "image_folder", "root": str(root)},
                                          "test": {"name": "image_folder", "root": str(root)}},
                                 "model": {"name": "simple_cnn"}})
    with pytest.raises(DataError, match="classes the model does not know: cats"):
        build_data(cfg, ("test",), classes=[str(i) for i in range(10)])


# ---------------------------------------------------------------- read right or refused

def test_16_bit_images_use_the_full_8_bit_range(tmp_path: Path) -> None:
    wide = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024 + 1023)  # 1023 ... 65535
    Image.fromarray(wide).save(tmp_path / "wide.png")  # torchvision decodes it to uint16
    Image.fromarray(wide).save(tmp_path / "wide.tif")  # PIL decodes it as I;16
    for name in ("wide.png", "wide.tif"):
        image = load_image(str(tmp_path / name), "L")
        assert image.dtype == torch.uint8 and int(image.min()) == 3 and int(image.max()) == 255, name
        assert len(image.unique()) == 64, name
    assert load_image(str(tmp_path / "wide.png"), "RGB").shape == (3, 8, 8)


def test_a_class_folder_linking_into_the_root_is_not_a_class(tmp_path: Path, caplog) -> None:
    root = make_tree(tmp_path / "root", {"a": [("1.png", "L"), ("2.png", "L")], "b": [("3.png", "L")]})
    (root / "a2").symlink_to(root / "a", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="torchguide"):
        ds = image_folder(str(root))
    assert ds.classes == ["a", "b"] and len(ds) == 3
    assert "a2" in caplog.text


def test_links_never_loop_and_each_file_counts_once(tmp_path: Path, caplog) -> None:
    root = make_tree(tmp_path / "root", {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    (root / "a" / "up").symlink_to(root, target_is_directory=True)  # a cycle
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "again.png").symlink_to(root / "b" / "2.png")
    outside = make_tree(tmp_path / "elsewhere", {"c": [("4.png", "L")]})
    (root / "c").symlink_to(outside / "c", target_is_directory=True)  # data kept elsewhere: a class
    with caplog.at_level(logging.WARNING, logger="torchguide"):
        ds = image_folder(str(root))
    assert ds.classes == ["a", "b", "c"]
    assert sorted(Path(p).name for p, _ in ds.samples) == ["1.png", "2.png", "4.png"]  # not again.png
    assert "reached twice" in caplog.text


def test_sizes_come_from_the_headers(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    Image.new("L", (9, 7)).save(root / "b" / "3.png")
    ds = image_folder(str(root))
    assert set(ds.sizes) == {(6, 5), (9, 7)} and ds.view([0]).sizes == ds.sizes
    assert image_folder(str(root), verify=False).sizes is None


def test_images_of_several_sizes_need_a_transform_that_unifies_them(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    Image.new("L", (12, 10)).save(root / "b" / "3.png")  # the same shape as 6x5, twice as large
    Image.new("L", (6, 6)).save(root / "a" / "4.png")
    ds = image_folder(str(root))
    with pytest.raises(ConfigError, match=r"data.transforms.train: the images differ in size .*\(3 sizes in all\)"):
        check_sizes([ds], [], "train")
    check_sizes([ds], [Component(name="resize", size=[8, 8])], "train")
    check_sizes([ds], ["center_crop"], "train")
    with pytest.raises(ConfigError, match="differ in size"):  # one number keeps each aspect ratio
        check_sizes([ds], [Component(name="resize", size=8)], "train")
    assert fixes_size([Component(name="resize", size=8)], [(6, 5), (12, 10)])


def test_images_over_the_pixel_budget_are_refused_from_the_header(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path, {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    monkeypatch.setattr(image_module, "MAX_PIXELS", 29)
    with pytest.raises(DataError, match=r"1.png has more than 29 pixels \(6x5\)"):
        image_folder(str(root))
    with pytest.raises(DataError, match="more than 29 pixels"):
        require_image_files([str(root / "a" / "1.png")])


def test_a_valid_split_may_not_empty_a_class() -> None:
    with pytest.raises(ConfigError, match="data.valid.split: 0.9 of a class of 2 samples"):
        stratified_split([0, 0, 1, 1, 1, 1, 1], 0.9, seed=0)
    train, valid = stratified_split([0, 0, 1, 1, 1, 1, 1], 0.5, seed=0)
    assert {0, 1} <= {[0, 0, 1, 1, 1, 1, 1][i] for i in train}


def test_path_errors_name_the_split_key(tmp_path: Path, digits_dir: Path) -> None:
    raw = {"name": "t", "data": {"train": {"name": "image_folder", "root": str(digits_dir / "train")},
                                 "test": {"name": "image_folder", "root": str(tmp_path / "gone")}},
           "model": {"name": "simple_cnn"}}
    with pytest.raises(DataError, match=r"^data.test.root: image folder .*gone does not exist"):
        build_data(load_config(None, raw=raw), ("test",))


def test_image_csv_drops_a_bom_and_refuses_short_rows(tmp_path: Path) -> None:
    make_tree(tmp_path / "img", {"a": [("1.png", "L")], "b": [("2.png", "L")]})
    (tmp_path / "bom.csv").write_text("\ufeffpath,label\nimg/a/1.png,yes\nimg/b/2.png,no\n", encoding="utf-8")
    assert image_csv(str(tmp_path / "bom.csv")).classes == ["no", "yes"]
    (tmp_path / "short.csv").write_text("path,label\nimg/a/1.png,yes\nimg/b/2.png\n")
    with pytest.raises(DataError, match="line 3: 1 field"):
        image_csv(str(tmp_path / "short.csv"))


def test_headers_read_from_the_first_bytes_agree_with_pil(tmp_path: Path) -> None:
    from torchguide.data.headers import jpeg_header, png_header
    from torchguide.data.image import read_header

    files = [(mode, "png", {}) for mode in ("1", "L", "I;16", "RGB", "RGBA", "P", "LA")]
    files += [("L", "jpeg", {}), ("RGB", "jpeg", {}), ("CMYK", "jpeg", {}), ("RGB", "jpeg", {"progressive": True}),
              ("RGB", "jpeg", {"exif": b"Exif\0\0" + b"\0" * 6000}), ("RGB", "bmp", {}), ("RGB", "gif", {})]
    for i, (mode, fmt, options) in enumerate(files):
        path = tmp_path / f"{i}.{fmt}"
        Image.new(mode, (7 + i, 5), 0).save(path, format=fmt, **options)
        with Image.open(path) as image:
            assert read_header(path) == (image.mode, image.size), path
    head = (tmp_path / "1.png").read_bytes()
    assert png_header(head) == ("L", (8, 5)) and jpeg_header(head) is None
    assert jpeg_header((tmp_path / "11.jpeg").read_bytes()[:4096]) is None  # metadata before the frame: PIL reads it
    assert png_header(head[:20]) is None and read_header(tmp_path / "missing.png") is None
