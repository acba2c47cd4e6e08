"""Every bad input answered: a corpus of broken configs, data, checkpoints and arguments.

Each case runs the real command against a workspace that already holds a finished run,
and must end with the expected exit code (2 for bad input, 1 for a failure during a
run), exactly one `error:` line that names the problem, no traceback, and every file of
the existing run byte-for-byte as it was (no new run directory either).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
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
    # ---- run directories
    ("run directory is a file", lambda w: w.image(f"output.dir={w.file('filled/digits', 'x') and w.tmp / 'filled'}"),
     2, "is a file, not a run directory"),
    ("resume auto of a name that begins another", lambda w: w.image("name=digit", "--resume", "auto"), 2,
     "no run named digit in"),
    ("data into a folder of other files", lambda w: ["data", "reviews", "--out", str(w.tmp)], 2, "holds other files"),
]


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 40
    assert len({name for name, *_ in CASES}) == len(CASES)


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


# ---------------------------------------------------------------- random configs

KEYS = ["name", "seed", "task", "data", "data.train", "data.train.name", "data.train.root", "data.valid",
        "data.valid.split", "data.test", "data.loader", "data.loader.batch_size", "data.loader.num_workers",
        "data.loader.drop_last", "data.loader.cache", "data.transforms.train", "data.transforms.train.0",
        "data.collate", "data.collate.name", "data.sampler.name", "data.sampler.bucket_size", "data.vocab.max_len",
        "model", "model.name", "model.width", "model.dropout", "loss", "loss.name", "loss.label_smoothing",
        "optimizer.name", "optimizer.lr", "optimizer.betas", "scheduler.name", "scheduler.T_max", "train",
        "train.epochs", "train.max_steps", "train.precision", "train.device", "train.strategy",
        "train.checkpoint_every", "train.checkpoint_every.steps", "train.early_stopping",
        "train.early_stopping.patience", "train.threads", "train.accumulate", "train.grad_clip", "output.dir",
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
