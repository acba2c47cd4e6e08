"""Peers: guide against PyTorch Lightning on the same model, data and settings.

Each side runs as its user runs it, in a fresh process: guide as `guide train-image` /
`guide train-text` with overrides, Lightning as the script a Lightning user would write
(a LightningModule around the same nn.Module class, a DataLoader, a `Trainer`; it is
`python benchmarks/peers.py lightning ...` below). The runs alternate, guide then
Lightning, and the ratios are guide / Lightning, so below 1 means guide is faster:

- image: `simple_cnn` on 10,000 28x28 grayscale PNG digits in ImageFolder layout (shifted,
  noisy copies of scikit-learn's digits), validated on 1,000 more. Lightning reads them
  with torchvision's ImageFolder and Grayscale + ToTensor + Normalize, guide with its
  image_folder and the same normalisation from the config.
- text: the reviews BiLSTM (configs/text/reviews.yaml) on the first 384 training and 128
  validation snippets (an epoch over all of them takes minutes on 2 cores). Lightning
  reuses guide's dataset, vocabulary and collate function and shuffles batches at random;
  guide runs its config as shipped, with length-bucketed batches.
- one step: one optimizer step on the image data (`train.max_steps=1`, Lightning
  `max_steps=1`), no validation: the whole process, start-up included.

Both sides: the same batch, loader workers (persistent), compute threads, seed, AdamW
without a scheduler, epochs, fp32 on the CPU, a checkpoint per epoch. An epoch's time is
its training and validation: guide's `time_s` in metrics.jsonl, and on the Lightning
side a callback from `on_train_epoch_start` to `on_train_epoch_end` (which follows
validation). Page faults and system time are those of each whole process tree.

    pip install -e '.[bench]'   # Lightning, at the version constraints.txt pins
    python benchmarks/peers.py [--quick]
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import figure, interleaved, ratios, summarise  # noqa: E402

SEED, LR, WEIGHT_DECAY = 0, 3e-3, 1e-4
IMAGE = {"batch": 64, "workers": 1, "threads": 1, "width": 8, "mean": 0.5, "std": 0.5}
TEXT = {"batch": 64, "workers": 0, "threads": 2, "max_len": 80, "grad_clip": 1.0}
TARGETS = {"image": 0.95, "text": 0.90, "one_step": 1.0}
INSTALL = "pip install -e '.[bench]'"


def write_digits28(out: Path, count: int, seed: int) -> None:
    """`count` 28x28 grayscale PNGs in `out/<digit>/`: scikit-learn's 8x8 digits scaled to 20x20, placed
    at a random offset on a 28x28 canvas, with noise, so no two files are alike."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    scaled = [np.asarray(Image.fromarray((im * (255 / 16)).round().astype(np.uint8)).resize((20, 20)))
              for im in digits.images]
    rng = np.random.default_rng(seed)
    for i in range(count):
        j = int(rng.integers(len(scaled)))
        canvas = np.zeros((28, 28), np.float32)
        dy, dx = rng.integers(0, 9, 2)
        canvas[dy:dy + 20, dx:dx + 20] = scaled[j]
        canvas += rng.normal(0, 12, canvas.shape)
        folder = out / str(digits.target[j])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8), "L").save(folder / f"{i:05d}.png")


def shorten(path: Path, rows: int) -> None:
    """Keep the first `rows` rows of a CSV file."""
    with path.open(newline="", encoding="utf-8") as f:
        kept = list(itertools.islice(csv.reader(f), rows + 1))
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)


def timed(command: list[str]) -> dict:
    """Run a command; its wall time, and the minor page faults and system time of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "NO_COLOR": "1"})
    with process.stderr:
        stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)  # the child's own usage, with its loader workers'
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{command[:4]} failed:\n{stderr.decode()[-3000:]}")
    return {"wall_s": wall, "minflt": usage.ru_minflt, "stime_s": usage.ru_stime}


def guide_args(task: str, data: Path, out: Path, epochs: int, one_step: bool = False) -> list[str]:
    common = [f"output.dir={out}", f"train.epochs={epochs}", "train.device=cpu", "train.precision=fp32",
              f"seed={SEED}", "scheduler=none", "optimizer.name=adamw", f"optimizer.lr={LR}",
              f"optimizer.weight_decay={WEIGHT_DECAY}", "~data.test"]
    if task == "text":
        return ["train-text", "--config", "configs/text/reviews.yaml", *common, f"data.train.path={data}/train.csv",
                f"data.valid.path={data}/valid.csv", f"data.loader.batch_size={TEXT['batch']}",
                f"data.loader.num_workers={TEXT['workers']}", f"train.threads={TEXT['threads']}",
                f"data.vocab.max_len={TEXT['max_len']}", f"train.grad_clip={TEXT['grad_clip']}"]
    norm = f"[{{name: normalize, mean: [{IMAGE['mean']}], std: [{IMAGE['std']}]}}]"
    valid = ["~data.valid"] if one_step else [f"data.valid={{name: image_folder, root: {data}/valid}}"]
    return ["train-image", "--config", "configs/image/digits.yaml", *common, f"data.train.root={data}/train",
            *valid, f"data.transforms.train={norm}", f"data.transforms.eval={norm}",
            f"data.loader.batch_size={IMAGE['batch']}", f"data.loader.num_workers={IMAGE['workers']}",
            f"train.threads={IMAGE['threads']}", f"model.width={IMAGE['width']}",
            *(["train.max_steps=1"] if one_step else [])]


def run_guide(task: str, data: Path, out: Path, epochs: int, one_step: bool = False) -> dict:
    result = timed([sys.executable, "-m", "cli.main", *guide_args(task, data, out, epochs, one_step)])
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {**result, "epochs_s": [r["time_s"] for r in rows if r["kind"] == "epoch"]}


def run_lightning(task: str, data: Path, out: Path, epochs: int, one_step: bool = False) -> dict:
    out.mkdir(parents=True)
    times = out / "epochs.json"
    result = timed([sys.executable, __file__, "lightning", task, str(data), str(out), str(epochs),
                    "1" if one_step else "0"])
    return {**result, "epochs_s": json.loads(times.read_text())}


def steady(runs: list[dict]) -> list[float]:
    """Every epoch time of a side's runs but each run's first (loader start, allocator warm-up)."""
    return [t for r in runs for t in r["epochs_s"][1:]]


def compare(task: str, data: Path, tmp: Path, repeats: int, epochs: int) -> tuple[list[dict], dict]:
    """Guide and Lightning runs alternated: figures for the epoch and whole-run ratios, with their spread over
    the repeats, and for the epoch spread (max / min of the steady epochs) of each side."""
    runs = interleaved({"guide": lambda i: run_guide(task, data, tmp / f"{task}-guide-{i}", epochs),
                        "lightning": lambda i: run_lightning(task, data, tmp / f"{task}-lightning-{i}", epochs)},
                       repeats, warmup=0)
    guide, light = runs["guide"], runs["lightning"]
    epoch = ratios([statistics.median(g["epochs_s"][1:]) for g in guide],
                   [statistics.median(lt["epochs_s"][1:]) for lt in light])
    wall = ratios([g["wall_s"] for g in guide], [lt["wall_s"] for lt in light])
    target = TARGETS[task]
    ours, theirs = (max(steady(side)) / min(steady(side)) for side in (guide, light))
    what = "image: simple_cnn, 10,000 PNGs" if task == "image" else "text: reviews BiLSTM, 384 snippets"
    figures = [figure(f"8. {what}: guide / Lightning, epoch time", *middle(epoch, target)),
               figure(f"8. {what}: guide / Lightning, whole run", *middle(wall, target)),
               figure(f"8. {what}: epoch spread (max/min), guide's / Lightning's ({ours:.3f} / {theirs:.3f})",
                      ours / theirs, "<= 1.0", ours <= theirs, None, len(steady(guide)))]
    return figures, {"guide": summary(guide), "lightning": summary(light)}


def middle(values: list[float], target: float) -> tuple[float, str, bool, list[float], int]:
    """What `figure` takes after the name for per-repeat ratios that must not exceed `target`."""
    value, spread, repeats = summarise(values)
    return value, f"<= {target}", value <= target, spread, repeats


def summary(runs: list[dict]) -> dict:
    """Medians of one side's runs: wall time, epoch time, minor page faults, system time."""
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
            "epoch_s": round(statistics.median(s for r in runs for s in r["epochs_s"]), 3),
            "minflt": int(statistics.median(r["minflt"] for r in runs)),
            "stime_s": round(statistics.median(r["stime_s"] for r in runs), 2)}


def one_step(data: Path, tmp: Path, repeats: int) -> tuple[list[dict], dict]:
    """Whole-process wall time of a one-step run, guide / Lightning, alternated."""
    runs = interleaved({"guide": lambda i: run_guide("image", data, tmp / f"step-guide-{i}", 1, one_step=True),
                        "lightning": lambda i: run_lightning("image", data, tmp / f"step-lightning-{i}", 1,
                                                             one_step=True)}, repeats, warmup=0)
    wall = ratios([g["wall_s"] for g in runs["guide"]], [lt["wall_s"] for lt in runs["lightning"]])
    return ([figure("8. one optimizer step, whole process: guide / Lightning", *middle(wall, TARGETS["one_step"]))],
            {"guide": summary(runs["guide"]), "lightning": summary(runs["lightning"])})


def measure(quick: bool = False) -> dict:
    """{"figures": [...], "sides": {...}} (see the module docstring); {"skipped": note} without Lightning.

    `quick`: fewer images, epochs and repeats, to check that everything runs.
    """
    if importlib.util.find_spec("lightning") is None:
        return {"skipped": f"Lightning is not installed: the peer benchmark is skipped ({INSTALL})"}
    from torchguide.data.sources import write_reviews

    repeats, epochs = (1, 2) if quick else (2, 3)
    with tempfile.TemporaryDirectory(prefix="guide-bench-peers-") as tmp:
        tmp = Path(tmp)
        os.environ["GUIDE_CACHE_DIR"] = str(tmp / "cache")  # guide's first run measures its auto settings
        write_digits28(tmp / "digits" / "train", 1_000 if quick else 10_000, seed=0)
        write_digits28(tmp / "digits" / "valid", 100 if quick else 1_000, seed=1)
        write_reviews(tmp / "reviews")
        shorten(tmp / "reviews" / "train.csv", 256 if quick else 384)  # a BiLSTM epoch on all 10,246 takes minutes
        shorten(tmp / "reviews" / "valid.csv", 128)
        started, figures, sides = time.perf_counter(), [], {}
        for name, (rows, side) in (("image", compare("image", tmp / "digits", tmp, repeats, epochs)),
                                   ("text", compare("text", tmp / "reviews", tmp, repeats, epochs)),
                                   ("one_step", one_step(tmp / "digits", tmp, 1 if quick else 2))):
            figures += rows
            sides[name] = side
    return {"figures": figures, "sides": sides, "seconds": round(time.perf_counter() - started, 1)}


def lightning_main(task: str, data: Path, out: Path, epochs: int, one_step: bool) -> None:
    """The Lightning side of one run, as a Lightning user writes it; epoch times go to out/epochs.json."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from torchguide.registry import MODELS

    L.seed_everything(SEED)
    settings = IMAGE if task == "image" else TEXT
    torch.set_num_threads(settings["threads"])
    if task == "image":
        from torchvision import datasets
        from torchvision import transforms as T

        tf = T.Compose([T.Grayscale(), T.ToTensor(), T.Normalize((IMAGE["mean"],), (IMAGE["std"],))])
        train = datasets.ImageFolder(str(data / "train"), transform=tf)
        valid = datasets.ImageFolder(str(data / "valid"), transform=tf) if not one_step else None
        model = MODELS.build("simple_cnn", num_classes=len(train.classes), in_channels=1, width=IMAGE["width"])
        collate, unpack = None, lambda batch: ((batch[0],), batch[1], batch[1])
        loss_fn, predict = F.cross_entropy, lambda output: output.argmax(1)
    else:
        from torchguide.config import load_config
        from torchguide.data.collate import pad_to_longest
        from torchguide.data.loaders import build_data

        config = load_config(ROOT / "configs/text/reviews.yaml", [f"data.train.path={data}/train.csv",
                                                                  f"data.valid.path={data}/valid.csv", "~data.test"])
        splits = build_data(config, ("train", "valid"))
        train, valid = splits.splits["train"], splits.splits["valid"]
        model = MODELS.build("bilstm", num_classes=1, vocab_size=splits.vocab_size, pad_index=0, embed_dim=200,
                             hidden=128, head=64, dropout=0.5)
        collate = pad_to_longest(target="binary", max_len=TEXT["max_len"])
        unpack = lambda batch: (batch.inputs, batch.target, batch.labels)  # noqa: E731
        loss_fn, predict = F.binary_cross_entropy_with_logits, lambda output: (output[:, 0] > 0).long()

    class Classifier(L.LightningModule):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            inputs, target, labels = unpack(batch)
            output = self.model(*inputs)
            loss = loss_fn(output, target)
            self.log("train_loss", loss, prog_bar=True)
            self.log("train_acc", (predict(output) == labels).float().mean(), prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            inputs, target, labels = unpack(batch)
            output = self.model(*inputs)
            self.log("val_loss", loss_fn(output, target), prog_bar=True)
            self.log("val_acc", (predict(output) == labels).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    class EpochTimes(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.times.append(time.perf_counter() - self.started)

    workers = settings["workers"]
    loader = {"batch_size": settings["batch"], "num_workers": workers, "persistent_workers": workers > 0,
              "collate_fn": collate}
    timer = EpochTimes()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, max_steps=1 if one_step else -1,
                        precision="32-true", default_root_dir=out, callbacks=[timer],
                        gradient_clip_val=settings.get("grad_clip"))
    trainer.fit(Classifier(model), DataLoader(train, shuffle=True, **loader),
                DataLoader(valid, **loader) if valid is not None else None)
    (out / "epochs.json").write_text(json.dumps(timer.times))


def show(results: dict) -> None:
    if "skipped" in results:
        print(results["skipped"])
        return
    for f in results["figures"]:
        spread = f"{f['spread'][0]:.3f}-{f['spread'][1]:.3f}" if f["spread"] else "-"
        print(f"{f['name']}: {f['value']:.3f} (repeats {spread}), target {f['target']}: "
              f"{'met' if f['met'] else 'MISSED'}")
    for name, side in results["sides"].items():
        print(f"  {name}: guide {side['guide']}\n  {name}: Lightning {side['lightning']}")
    print(f"({results['seconds']:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["lightning"]:
        task, data, out, epochs, step = sys.argv[2:7]
        lightning_main(task, Path(data), Path(out), int(epochs), step == "1")
    else:
        show(measure(quick="--quick" in sys.argv))
