"""Every bad input answered: a corpus of broken configs, data, checkpoints and arguments.

Each case runs the real command against a workspace that already holds a finished run,
and must end with the expected exit code (2 for bad input, 1 for a failure during a
run), exactly one `error:` line that names the problem, no traceback, and every file of
the existing run byte-for-byte as it was (no new run directory either).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT, digits_overrides, reviews_overrides

runner = CliRunner()
DIGITS = str(ROOT / "configs/image/digits.yaml")
REVIEWS = str(ROOT / "configs/text/reviews.yaml")
TINY = ["train.epochs=1", "train.max_steps=2", "--quiet"]


@dataclass
class World:
    """Paths the cases point at: good data, a finished run, and bad files of every kind."""

    tmp: Path
    digits: Path
    reviews: Path
    out: Path  # output.dir of every training case; holds the finished run

    @property
    def run_dir(self) -> Path:
        return self.out / "digits"

    @property
    def best(self) -> str:
        return str(self.run_dir / "checkpoints" / "best.pt")

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def image(self, *extra: str) -> list[str]:
        return ["train-image", "--config", DIGITS, *digits_overrides(self.digits, self.out), *TINY, *extra]

    def text(self, *extra: str) -> list[str]:
        return ["train-text", "--config", REVIEWS, *reviews_overrides(self.reviews, self.out), *TINY, *extra]


@pytest.fixture(scope="module")
def world(digits_dir: Path, reviews_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("bad-inputs"), digits_dir, reviews_dir, Path())
    w.out = w.tmp / "runs"
    result = runner.invoke(app, w.image())
    assert result.exit_code == 0, result.output
    return w


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- the cases

def truncated(w: World) -> str:
    data = Path(w.best).read_bytes()
    return w.file("truncated.pt", data[: len(data) // 3])


def plain_state_dict(w: World) -> str:
    path = w.tmp / "state_dict.pt"
    torch.save(torch.load(w.best, weights_only=True)["model"], path)
    return str(path)


def pickled_model(w: World) -> str:
    path = w.tmp / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    return str(path)


def corrupt_images(w: World) -> str:
    for label in ("a", "b"):
        w.file(f"corrupt/{label}/x.png", b"not a png at all")
    return str(w.tmp / "corrupt")


def unknown_class_folder(w: World) -> str:
    source = next((w.digits / "test" / "3").iterdir())
    for label in ("3", "zebra"):
        target = w.tmp / "zebra" / label / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return str(w.tmp / "zebra")


USER_MODELS = """
import torch
from torch import nn
from torchguide.data.collate import Batch
from torchguide.registry import COLLATES, MODELS

@MODELS.register("three_outputs")
def three_outputs():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

@MODELS.register("rgb_only")
def rgb_only():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))

@MODELS.register("one_number")
def one_number():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(1), nn.Flatten(0))

@COLLATES.register("float_labels")
def float_labels():
    def collate(samples):
        labels = torch.tensor([y for _, y in samples])
        return Batch((torch.stack([x for x, _ in samples]),), labels.float(), labels)
    return collate
"""


def user_models(w: World) -> str:
    """A user's code with mistakes: sizes fixed by hand, float labels (`imports:` brings user code in)."""
    return f"imports=[{w.file('user_models.py', USER_MODELS)}]"


def one_label_csv(w: World) -> str:
    return w.file("one_label.csv", "text,label\ngood film,fresh\nfine film,fresh\nnice,fresh\n")


def tree(w: World, name: str, per_class: int = 10, classes: tuple[str, ...] = ("0", "1")) -> Path:
    """A small ImageFolder tree of digit images (8x8) under `name`, written once."""
    root = w.tmp / name
    if not root.exists():
        for label in classes:
            (root / label).mkdir(parents=True)
            for source in sorted((w.digits / "train" / label).iterdir())[:per_class]:
                shutil.copy(source, root / label / source.name)
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (no pixel data): what a header check sees."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def mixed_sizes(w: World, name: str = "mixed") -> str:
    root = tree(w, name)
    Image.new("L", (12, 9), 7).save(root / "1" / "wide.png")
    return str(root)


def huge_image(w: World) -> str:
    root = tree(w, "huge")
    (root / "1" / "huge.png").write_bytes(png_header(15000, 15000))
    return str(root)


def zebra_test_split(w: World) -> str:
    root = tree(w, "test-zebra")
    shutil.copytree(root / "1", root / "zebra", dirs_exist_ok=True)
    return str(root)


def image_table(w: World, name: str, rows: str) -> str:
    root = tree(w, "table")
    return w.file(name, "path,label\n" + rows.format(a=root / "0" / "0000.png", b=root / "1" / "0000.png"))


def alias_bomb(levels: int = 6) -> str:
    """A kilobyte of YAML whose aliases expand to ten to the `levels` values."""
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nloss: {{name: cross_entropy, weight: *a{levels}}}\n"


def edited_checkpoint(w: World, name: str, edit: Callable[[dict], object]) -> str:
    """The finished run's best.pt with `edit` applied to its payload (which it changes or replaces)."""
    payload = torch.load(w.best, weights_only=True)
    payload = edit(payload) or payload
    path = w.tmp / f"{name}.pt"
    torch.save(payload, path)
    return str(path)


def drop(*keys: str) -> Callable[[dict], None]:
    def edit(payload: dict) -> None:
        for key in keys:
            node = payload
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            del node[last]
    return edit


def pickled_dict(w: World) -> str:
    """A plain pickle (protocol 4): torch warns about it before refusing it."""
    import pickle

    path = w.tmp / "pickled.pt"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    return str(path)


def fifo(w: World, name: str) -> str:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    path = w.tmp / name
    if not path.exists():
        os.mkfifo(path)
    return str(path)


LONG_FIELD = "x" * 10_000_001


Case = tuple[str, Callable[[World], list[str]], int, str]

CASES: list[Case] = [
    # ---- config files
    ("missing config file", lambda w: ["train-image", "--config", str(w.tmp / "nope.yaml")], 2, "does not exist"),
    ("config is a directory", lambda w: ["train-image", "--config", str(w.tmp)], 2, "is a directory"),
    ("yaml syntax error", lambda w: ["train-image", "--config", w.file("syntax.yaml", "name: [a\nmodel: {")], 2,
     "YAML syntax error at line"),
    ("yaml top level is a list", lambda w: ["config", "validate", "--config", w.file("list.yaml", "- a\n- b\n")], 2,
     "must be a mapping"),
    ("empty yaml", lambda w: ["config", "validate", "--config", w.file("empty.yaml", "")], 2, "file is empty"),
    ("binary config", lambda w: ["config", "validate", "--config", w.file("bin.yaml", b"\xff\xfe\x00\x81")], 2,
     "not UTF-8"),
    ("unknown top-level key", lambda w: w.image("trian.epochs=3"), 2, "trian"),
    ("wrong type", lambda w: w.image("train.epochs=ten"), 2, "train.epochs"),
    ("negative epochs", lambda w: w.image("train.epochs=-1"), 2, "train.epochs"),
    ("zero batch size", lambda w: w.image("data.loader.batch_size=0"), 2, "data.loader.batch_size"),
    ("negative batch size", lambda w: w.image("data.loader.batch_size=-8"), 2, "data.loader.batch_size"),
    ("unknown model", lambda w: w.image("model.name=resnet9000"), 2, "model.name"),
    ("unknown optimizer", lambda w: w.image("optimizer.name=adamm"), 2, "did you mean"),
    ("unknown loss", lambda w: w.image("loss.name=cross_entropyy"), 2, "loss.name"),
    ("unknown scheduler", lambda w: w.image("scheduler.name=cosine_annealling"), 2, "scheduler.name"),
    ("unknown transform", lambda w: w.image("data.transforms.train=[random_flipp]"), 2, "random_flipp"),
    ("mixing one image", lambda w: w.image("data.transforms.train=[{name: cut_mix, num_classes: 10}]"), 2,
     "move it to data.batch_transforms"),
    ("detection transform", lambda w: w.image("data.transforms.train=[sanitize_bounding_boxes]"), 2, "detection"),
    ("mixed batches for nll", lambda w: w.image("data.batch_transforms=[mix_up]", "loss.name=nll"), 2,
     "use loss cross_entropy"),
    ("mixed batches of text", lambda w: w.text("data.batch_transforms=[mix_up]"), 2, "not texts"),
    ("misspelt optimizer argument", lambda w: w.image("optimizer.weight_decai=0.1"), 2, "weight_decai"),
    ("negative learning rate", lambda w: w.image("optimizer.lr=-0.1"), 2, "invalid learning rate"),
    ("override without a value", lambda w: w.image("train.epochs"), 2, "key=value"),
    ("override into a value", lambda w: w.image("seed.x=1"), 2, "is a value, not a section"),
    ("remove a missing key", lambda w: w.image("~train.nothing"), 2, "no train.nothing to remove"),
    ("bad precision", lambda w: w.image("train.precision=fp8"), 2, "train.precision"),
    ("bad device", lambda w: w.image("train.device=tpu"), 2, "train.device"),
    ("cuda on a machine without one", lambda w: w.image("train.device=cuda"), 2, "cuda"),
    ("valid split above 1", lambda w: w.image("data.valid.split=1.5"), 2, "data.valid.split"),
    ("run name with a slash", lambda w: w.image("name=a/b"), 2, "name: use letters"),
    ("missing import", lambda w: w.image("imports=[no_such_module_here]"), 2, "imports[0]"),
    ("import with a syntax error", lambda w: w.image(f"imports=[{w.file('broken.py', 'def f(:')}]"), 2,
     "imports[0]"),
    ("text config under train-image", lambda w: ["train-image", "--config", REVIEWS], 2, "train-text"),
    ("sampler given the batch size", lambda w: w.text("data.sampler.batch_size=4"), 2, "data.sampler.batch_size"),
    ("model size set by hand", lambda w: w.image("model.num_classes=3"), 2, "set by guide from the data"),
    ("model with too few outputs", lambda w: w.image(user_models(w), "model.name=three_outputs", "~model.width"), 2,
     "outputs 3 score(s) per sample"),
    ("model for other input channels", lambda w: w.image(user_models(w), "model.name=rgb_only", "~model.width"), 2,
     "fails on a batch of this data"),
    ("model output of the wrong shape", lambda w: w.image(user_models(w), "model.name=one_number", "~model.width"), 2,
     "outputs shape"),
    ("float targets for cross entropy", lambda w: w.image(user_models(w), "data.collate.name=float_labels"), 2,
     "cannot compare the model's output"),
    ("two-class loss on ten classes", lambda w: w.image("loss.name=soft_margin"), 2, "two classes"),
    ("bad on_nan", lambda w: w.image("train.on_nan=ignore"), 2, "train.on_nan"),
    # ---- data
    ("missing data folder", lambda w: w.image(f"data.train.root={w.tmp / 'nowhere'}"), 2, "nowhere"),
    ("data root is a file", lambda w: w.image(f"data.train.root={w.file('plain.txt', 'x')}"), 2, "plain.txt"),
    ("empty data folder", lambda w: w.image(f"data.train.root={(w.tmp / 'empty').mkdir() or w.tmp / 'empty'}"), 2,
     "empty"),
    ("only corrupt images", lambda w: w.image(f"data.train.root={corrupt_images(w)}"), 2, "corrupt"),
    ("missing text file", lambda w: w.text(f"data.train.path={w.tmp / 'none.csv'}"), 2, "none.csv"),
    ("csv without the text column", lambda w: w.text("data.train.path=" + w.file("cols.csv", "body,label\nx,1\n")),
     2, "text"),
    ("one label only", lambda w: w.text(f"data.train.path={one_label_csv(w)}", "~data.valid"), 2, "one label"),
    ("batch larger than the data with drop_last",
     lambda w: w.text("data.loader.batch_size=100000", "data.loader.drop_last=true"), 2, "no batches"),
    ("unwritable output folder", lambda w: w.image(f"output.dir={w.file('blocker', 'x')}/runs"), 2, "output.dir"),
    # ---- checkpoints
    ("missing checkpoint", lambda w: ["eval", "--checkpoint", str(w.tmp / "none.pt")], 2, "does not exist"),
    ("checkpoint is a directory", lambda w: ["eval", "--checkpoint", str(w.tmp)], 2, "is a directory"),
    ("truncated checkpoint", lambda w: ["eval", "--checkpoint", truncated(w)], 2, "truncated"),
    ("garbage checkpoint", lambda w: ["predict", "--checkpoint", w.file("junk.pt", b"\x00junk" * 50), "x.png"], 2,
     "junk.pt: it is not a checkpoint"),
    ("plain state_dict", lambda w: ["eval", "--checkpoint", plain_state_dict(w)], 2, "plain state_dict"),
    ("pickled whole model", lambda w: ["eval", "--checkpoint", pickled_model(w)], 2, "not loaded for safety"),
    ("classes the checkpoint does not know", lambda w: ["eval", "--checkpoint", w.best, "--data",
                                                        unknown_class_folder(w)], 2, "does not know: zebra"),
    ("resume with another model", lambda w: w.image("model.name=my_neural_net", "~model.width", "--resume", w.best), 2,
     "model.name ('simple_cnn' -> 'my_neural_net') differs"),
    ("resume with another seed", lambda w: w.image("seed=7", "--resume", "auto"), 2, "seed"),
    ("resume from a text checkpoint", lambda w: w.text("--resume", w.best), 2, "cannot resume"),
    ("resume auto with no run", lambda w: w.image("name=never-trained", "--resume", "auto"), 2, "no "),
    ("resume from garbage", lambda w: w.image("--resume", w.file("junk2.pt", b"PK\x03\x04broken")), 2, "junk2.pt"),
    ("predict a missing image", lambda w: ["predict", "--checkpoint", w.best, str(w.tmp / "no.png")], 2, "no.png"),
    ("predict nothing", lambda w: ["predict", "--checkpoint", w.best], 2, "nothing to predict"),
    ("eval a split that does not exist", lambda w: ["eval", "--checkpoint", w.best, "--split", "dev"], 2, "--split"),
    # ---- command-line arguments
    ("unknown command", lambda w: ["trian-image"], 2, "no such command"),
    ("missing --config", lambda w: ["train-image"], 2, "missing option '--config'"),
    ("unknown option", lambda w: ["train-image", "--cofig", DIGITS], 2, "no such option"),
    ("batch size zero on eval", lambda w: ["eval", "--checkpoint", w.best, "--batch-size", "0"], 2, "--batch-size"),
    ("top-k zero", lambda w: ["predict", "--checkpoint", w.best, "--top-k", "0", "x"], 2, "--top-k"),
    ("unknown layer", lambda w: ["inspect-layer", "conv3x"], 2, "did you mean"),
    ("bad input shape", lambda w: ["inspect-layer", "linear", "in_features=4", "out_features=2", "-i", "2,x"], 2,
     "write positive sizes"),
    ("layer argument without a value", lambda w: ["inspect-layer", "linear", "in_features"], 2, "name=value"),
    ("unknown list kind", lambda w: ["list", "layerz"], 2, "unknown kind"),
    ("unknown data source", lambda w: ["data", "mnist", "--out", str(w.tmp / "m")], 2, "no such command 'mnist'"),
    # ---- parsing that cannot hang or explode
    ("yaml alias", lambda w: ["config", "validate", "--config", w.file("alias.yaml", "a: &x 1\nb: *x\n")], 2,
     "line 2: YAML aliases (*x)"),
    ("yaml alias bomb", lambda w: ["config", "show", "--config", w.file("bomb.yaml", alias_bomb())], 2,
     "aliases"),
    ("yaml merge key", lambda w: ["config", "validate", "--config",
                                  w.file("merge.yaml", "base: &b {lr: 1}\noptimizer: {<<: *b, name: adam}\n")], 2,
     "aliases"),
    ("duplicate top-level key", lambda w: ["config", "validate", "--config",
                                           w.file("dup.yaml", Path(DIGITS).read_text() + "name: again\n")], 2,
     "key 'name' appears twice"),
    ("duplicate nested key", lambda w: ["config", "validate", "--config",
                                        w.file("dup2.yaml", "model: {name: simple_cnn, width: 8, width: 16}\n")], 2,
     "line 1: key 'width' appears twice"),
    ("duplicate key in an override", lambda w: w.image("model={name: simple_cnn, name: my_neural_net}"), 2,
     "key 'name' appears twice"),
    ("config over 1 MB", lambda w: ["config", "validate", "--config",
                                    w.file("big.yaml", "# padding\n" * 120_000)], 2, "larger than 1 MB"),
    ("/dev/null as config", lambda w: ["config", "validate", "--config", os.devnull], 2, "character device"),
    ("/dev/zero as checkpoint", lambda w: ["eval", "--checkpoint", "/dev/zero"], 2, "character device"),
    # ---- config values
    ("zero threads", lambda w: w.image("train.threads=0"), 2, "train.threads"),
    ("negative threads", lambda w: w.image("train.threads=-3"), 2, "train.threads"),
    ("run name .", lambda w: w.image("name=."), 2, "name: use letters"),
    ("run name ..", lambda w: w.image("name=.."), 2, "name: use letters"),
    ("hidden run name", lambda w: w.image("name=.secret"), 2, "not starting with '.'"),
    ("valid split emptying a class", lambda w: w.image(f"data.train.root={tree(w, 'pairs', 2)}", "~data.test",
                                                      "data.valid.split=0.99"), 2, "data.valid.split: 0.99"),
    ("loss weight of the wrong length", lambda w: w.image("loss.weight=[1, 2, 3]"), 2,
     "loss.weight: 3 value(s), but the data has 10 classes"),
    ("pos_weight of the wrong length", lambda w: w.text("loss.pos_weight=[1, 2, 3]"), 2, "loss.pos_weight"),
    ("home folder expanded in data roots", lambda w: w.image("data.train.root=~/no-such-guide-data-here"), 2,
     f"{Path.home()}/no-such-guide-data-here"),
    # ---- images
    ("images of two sizes", lambda w: w.image(f"data.train.root={mixed_sizes(w)}", "~data.test"), 2,
     "add `{name: resize, size: [8, 8]}`"),
    ("test images of another size", lambda w: w.image(f"data.test.root={mixed_sizes(w, 'mixed-test')}"), 2,
     "data.transforms.eval: the images differ in size"),
    ("resize to one number of images of two shapes",
     lambda w: w.image(f"data.train.root={mixed_sizes(w)}", "~data.test",
                       "data.transforms.train=[{name: resize, size: 8}]"), 2, "differ in size"),
    ("image over the pixel budget", lambda w: w.image(f"data.train.root={huge_image(w)}", "~data.test"), 2,
     "huge.png has more than"),
    ("predict an image over the pixel budget",
     lambda w: ["predict", "--checkpoint", w.best, f"{huge_image(w)}/1/huge.png"], 2, "huge.png has more than"),
    ("predict a folder", lambda w: ["predict", "--checkpoint", w.best, str(w.tmp)], 2, "not an image file"),
    ("predict a text file", lambda w: ["predict", "--checkpoint", w.best, w.file("note.png", "hello")], 2,
     "cannot read image"),
    ("missing test folder", lambda w: w.image(f"data.test.root={w.tmp / 'no-test'}"), 2, "data.test.root"),
    ("test folder is a file", lambda w: w.image(f"data.test.root={w.file('test.txt', 'x')}"), 2, "data.test.root"),
    ("test class the training lacks", lambda w: w.image(f"data.test.root={zebra_test_split(w)}"), 2,
     "does not know: zebra"),
    ("glob matching nothing", lambda w: w.image("data.train.name=image_glob", "data.train.pattern=*/*.jpg"), 2,
     "data.train.pattern"),
    ("image csv row without a label", lambda w: w.image(
        "data.train={name: image_csv, csv_file: " + image_table(w, "short.csv", "{a},0\n{b}\n") + "}",
        "~data.test"), 2, "line 3: 1 field(s)"),
    ("image csv listing a missing file", lambda w: w.image(
        "data.train={name: image_csv, csv_file: " + image_table(w, "lost.csv", "{a},0\nnope.png,1\n") + "}",
        "~data.test"), 2, "data.train.csv_file"),
    ("image csv with an empty label", lambda w: w.image(
        "data.train={name: image_csv, csv_file: " + image_table(w, "blank.csv", "{a},0\n{b}, \n") + "}",
        "~data.test"), 2, "line 3: empty label"),
    # ---- text
    ("csv row without a label", lambda w: w.text("data.train.path=" + w.file("short.csv", "text,label\na,fresh\nb\n")),
     2, "line 3: 1 field(s) where the header has 2"),
    ("csv row with an unquoted comma", lambda w: w.text(
        "data.train.path=" + w.file("extra.csv", "text,label\na,fresh\nb, c,rotten\n")), 2, "line 3: 3 field(s)"),
    ("csv field over the limit", lambda w: w.text(
        "data.train.path=" + w.file("long.csv", f"text,label\nok,fresh\n{LONG_FIELD},rotten\n")), 2,
     "longer than 10,000,000 characters"),
    ("jsonl row without the text", lambda w: w.text(
        "data.train.path=" + w.file("nokey.jsonl", '{"text": "a", "label": "fresh"}\n{"label": "rotten"}\n')), 2,
     "line 2 has no text"),
    ("jsonl row that is a list", lambda w: w.text(
        "data.train.path=" + w.file("list.jsonl", '{"text": "a", "label": "fresh"}\n["b", "rotten"]\n')), 2,
     "line 2 is a JSON list"),
    ("jsonl null label", lambda w: w.text(
        "data.train.path=" + w.file("null.jsonl", '{"text": "a", "label": null}\n')), 2, "line 1 has no label"),
    ("text test labels the training lacks", lambda w: w.text(
        "data.test.path=" + w.file("zebra.csv", "text,label\na,fresh\nb,zebra\n")), 2, "data.test: "),
    ("missing text test file", lambda w: w.text(f"data.test.path={w.tmp / 'no-test.csv'}"), 2, "data.test.path"),
    ("missing text valid file", lambda w: w.text(f"data.valid.path={w.tmp / 'no-valid.csv'}"), 2, "data.valid.path"),
    ("text test file without the label column", lambda w: w.text(
        "data.test.path=" + w.file("nolabel.csv", "text\na\n")), 2, "data.test: "),
    ("token ids that are not integers", lambda w: w.text(
        "data.train={name: token_ids, path: " + w.file("ids.jsonl", '{"ids": [1, "x"], "label": 1}\n') + "}",
        "~data.valid", "~data.test"), 2, "ids must be a list of integers"),
    # ---- checkpoints
    ("checkpoint with only its format", lambda w: ["eval", "--checkpoint", edited_checkpoint(
        w, "format-only", lambda p: {"format": p["format"]})], 2, "it lacks task, config, classes, facts, model"),
    ("checkpoint without facts", lambda w: ["predict", "--checkpoint", edited_checkpoint(
        w, "no-facts", drop("facts")), "x.png"], 2, "it lacks facts"),
    ("checkpoint without one fact", lambda w: ["inspect-model", "--checkpoint", edited_checkpoint(
        w, "no-channels", drop("facts.in_channels"))], 2, "facts.in_channels"),
    ("checkpoint config that is a string", lambda w: ["eval", "--checkpoint", edited_checkpoint(
        w, "str-config", lambda p: p.update(config="digits"))], 2, "config is a str, not a dict"),
    ("checkpoint config that is not valid", lambda w: ["inspect-model", "--checkpoint", edited_checkpoint(
        w, "bad-config", lambda p: p["config"].update(model="x"))], 2, "checkpoint's config is not a valid config"),
    ("resume from a checkpoint without its optimizer", lambda w: w.image("--resume", edited_checkpoint(
        w, "no-optimizer", drop("optimizer"))), 2, "it lacks optimizer"),
    # ---- run directories
    ("run directory is a file", lambda w: w.image(f"output.dir={w.file('filled/digits', 'x') and w.tmp / 'filled'}"),
     2, "is a file, not a run directory"),
    ("resume auto of a name that begins another", lambda w: w.image("name=digit", "--resume", "auto"), 2,
     "no run named digit in"),
    ("data into a folder of other files", lambda w: ["data", "reviews", "--out", str(w.tmp)], 2, "holds other files"),
    # ---- component arguments, checked against the builder before any data is read
    ("model argument of the wrong type", lambda w: w.image("model.width=abc"), 2, "model.width: expected int"),
    ("betas with one value", lambda w: w.image("optimizer.name=adam", "optimizer.betas=[0.9]"), 2,
     "optimizer.betas: expected tuple"),
    ("class weights that are not numbers", lambda w: w.image("loss.weight=[a, b]"), 2, "loss.weight: expected"),
    ("learning rate as a word", lambda w: w.image("optimizer.lr=fast"), 2, "optimizer.lr: expected float"),
    ("learning rate in quotes", lambda w: w.image('optimizer.lr="0.1"'), 2, "write it without quotes"),
    ("transform argument of the wrong type", lambda w: w.image(
        "data.transforms.train=[{name: random_affine, degrees: lots}]"), 2, "degrees: expected"),
    ("optimizer that needs a closure", lambda w: w.image("optimizer.name=lbfgs"), 2, "needs a closure"),
    ("optimizer for 2-d weights only", lambda w: w.image("optimizer.name=muon"), 2, "2-D weight matrices"),
    ("scheduler that takes a function", lambda w: w.image("scheduler.name=lambda_lr"), 2, "takes a Python function"),
    ("runtime fact written in the config", lambda w: w.image("model.in_channels=3"), 2, "set by guide from the data"),
    ("fact a torchvision model does not take", lambda w: w.image("model={name: resnet18, in_features: 3}"), 2,
     "model.in_features: not an argument of resnet18"),
    ("torchvision model on grayscale images", lambda w: w.image("model={name: resnet18}"), 2,
     "takes 3-channel images"),
    ("images smaller than an architecture takes", lambda w: w.image(
        "model={name: inception_v3}", "data.train.mode=RGB", "data.test.mode=RGB"), 2, "at least 75x75"),
    ("unknown torchvision weights name", lambda w: w.image("model={name: resnet18, weights: IMAGENET9K}"), 2,
     "neither a file nor a weights name of resnet18"),
    ("weights for a model that takes none", lambda w: w.image("model.weights=DEFAULT"), 2,
     "model.weights: not an argument of simple_cnn"),
    ("freeze pattern matching nothing", lambda w: w.image("model.freeze=[nothing.*]"), 2, "model.freeze"),
    ("optimizer group matching nothing", lambda w: w.image("optimizer.groups=[{params: nothing.*, lr: 0.1}]"), 2,
     "optimizer.groups.0.params"),
    ("collate for images on texts", lambda w: w.text("data.collate.name=default"), 2,
     "data.collate.name: default is for image data"),
    ("mixing text batches", lambda w: w.text("data.batch_transforms=[mix_up]"), 2, "batch_transforms"),
]


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) + len(HANG_CASES) >= 150
    names = [name for name, *_ in CASES + HANG_CASES]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("name", "argv", "code", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_answered(world: World, name: str, argv: Callable[[World], list[str]], code: int,
                               fragment: str) -> None:
    before = snapshot(world.out)
    result = runner.invoke(app, argv(world))
    err = result.stderr
    assert result.exit_code == code, f"{name}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), f"{name}: want one error line last:\n{err}"
    assert fragment.lower() in errors[0].lower(), f"{name}: {fragment!r} not in {errors[0]!r}"
    assert snapshot(world.out) == before, f"{name}: the existing run directory changed"


# ---------------------------------------------------------------- inputs that could hang

HANG_CASES: list[Case] = [
    ("fifo as config", lambda w: w.image("--config", fifo(w, "pipe.yaml")), 2, "named pipe"),
    ("fifo as config of config show", lambda w: ["config", "show", "--config", fifo(w, "pipe.yaml")], 2,
     "named pipe"),
    ("/dev/zero as config", lambda w: ["config", "validate", "--config", "/dev/zero"], 2, "character device"),
    ("alias bomb under config validate", lambda w: ["config", "validate", "--config",
                                                    w.file("bomb.yaml", alias_bomb())], 2, "aliases"),
    ("alias bomb under config show", lambda w: ["config", "show", "--config", w.file("bomb.yaml", alias_bomb())], 2,
     "aliases"),
    ("fifo as checkpoint", lambda w: ["eval", "--checkpoint", fifo(w, "pipe.pt")], 2, "named pipe"),
    ("fifo as checkpoint of inspect-model", lambda w: ["inspect-model", "--checkpoint", fifo(w, "pipe.pt")], 2,
     "named pipe"),
    ("pickle checkpoint without torch's warning", lambda w: ["eval", "--checkpoint", pickled_dict(w)], 2,
     "it is not a checkpoint"),
]


@pytest.mark.parametrize(("name", "argv", "code", "fragment"), HANG_CASES, ids=[c[0] for c in HANG_CASES])
def test_input_that_could_hang_is_refused_at_once(world: World, name: str, argv: Callable[[World], list[str]],
                                                  code: int, fragment: str) -> None:
    """The real command in a process of its own, killed if it does not answer in time."""
    args = argv(world)
    if "/dev/zero" in args and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    before = snapshot(world.out)
    result = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "NO_COLOR": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == code, f"{name}: exit {result.returncode}\n{output}"
    assert "Traceback" not in output and "Warning" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), f"{name}:\n{result.stderr}"
    assert fragment.lower() in errors[0].lower(), f"{name}: {fragment!r} not in {errors[0]!r}"
    assert len(result.stdout) < 10_000, f"{name}: stdout grew to {len(result.stdout)} characters"
    assert snapshot(world.out) == before, f"{name}: the existing run directory changed"


# ---------------------------------------------------------------- random configs

KEYS = ["name", "seed", "task", "data", "data.train", "data.train.name", "data.train.root", "data.valid",
        "data.valid.split", "data.test", "data.loader", "data.loader.batch_size", "data.loader.num_workers",
        "data.loader.drop_last", "data.loader.cache", "data.transforms.train", "data.transforms.train.0",
        "data.collate", "data.collate.name", "data.sampler.name", "data.sampler.bucket_size", "data.vocab.max_len",
        "model", "model.name", "model.width", "model.dropout", "loss", "loss.name", "loss.label_smoothing",
        "optimizer.name", "optimizer.lr", "optimizer.betas", "scheduler.name", "scheduler.T_max", "train",
        "train.epochs", "train.max_steps", "train.precision", "train.device", "train.strategy",
        "train.checkpoint_every", "train.checkpoint_every.steps", "train.early_stopping",
        "train.early_stopping.patience", "train.threads", "train.accumulate", "train.grad_clip", "train.ema",
        "train.ema.decay", "train.ema.warmup", "output.dir", "output.tensorboard",
        "nonsense", "model.name.deeper", "data.transforms.train.7", "data.batch_transforms",
        "data.batch_transforms.0", "data.batch_transforms.0.name", "data.batch_transforms.0.p"]
NAMES = ["simple_cnn", "bilstm", "resnet18", "adam", "sgd", "one_cycle", "cross_entropy", "image_folder",
         "text_csv", "length_buckets", "pad_to_longest", "random_affine", "none", "auto", "epoch", "mix_up",
         "cut_mix", "five_crop"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.floats() | st.text(max_size=12)
    | st.sampled_from(NAMES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.sampled_from(NAMES),
                                                                inner, max_size=3),
    max_leaves=8)


def validate(overrides: list[str] = (), raw: dict | None = None) -> None:
    """Validation must return a Config or raise a GuideError; anything else is a bug."""
    from torchguide.config import Config, load_config
    from torchguide.errors import GuideError

    try:
        config = load_config(None if raw is not None else DIGITS, overrides, task="image", raw=raw)
    except GuideError as exc:
        assert exc.lines() and all(isinstance(line, str) and line for line in exc.lines())
    else:
        assert isinstance(config, Config)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from(KEYS), st.text(max_size=30)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(KEYS).map(lambda k: f"~{k}"),
    st.text(max_size=30)), max_size=4))
def test_random_overrides_never_crash_validation(overrides: list[str]) -> None:
    assume(not any(o.lstrip("~").startswith("imports") for o in overrides))  # imports run code by design
    validate(overrides)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=6), st.booleans())
def test_random_configs_never_crash_validation(changes: list[tuple[str, object]], from_scratch: bool) -> None:
    import yaml

    raw = {} if from_scratch else yaml.safe_load(Path(DIGITS).read_text())
    for key, value in changes:
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {}) if not isinstance(node.get(part), list) else {}
        if isinstance(node, dict):
            node[parts[-1]] = value
    validate(raw=raw)
