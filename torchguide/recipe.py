"""The zero-config start: a whole config chosen from the data, for `guide train-image --data DIR`
and `guide train-text --data PATH`.

The data is looked at once (`image_facts`, `text_facts`): the layout of its folders or files
and what `guide data inspect` measures (class counts, image sizes and channels, the pixel
mean and std of the training images; the text and label columns, token lengths). Then
`choose_image_recipe` / `choose_text_recipe` pick every section from those facts alone, each
choice with a one-line reason that `Recipe.to_yaml` prints as a comment above it. The result
is an ordinary config: the run directory's config.yaml holds it, so
`guide train-image --config runs/NAME/config.yaml` trains it again.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchguide.config import apply_overrides
from torchguide.data.image import ImageSamples, image_folder, is_image, load_image
from torchguide.data.survey import class_counts
from torchguide.errors import DataError

VALID_SPLIT = 0.1  # of train, stratified, when the data has no validation split of its own
MEASURED_IMAGES = 1000  # training images the pixel mean and std are measured on (a seeded sample)
SMALL_SIDE = 64  # images up to this side train the guide's simple_cnn at their own size; larger, resnet18
CNN_BUDGET = 1.0e12  # multiply-adds of a whole simple_cnn run (forward and backward): minutes on 2 CPU cores
CACHE_BYTES = 512 << 20  # decoded images up to this size stay in memory (`data.cache: memory`)
IMAGE_SAMPLES_SEEN = 15_000  # epochs x training images, at least: 12 epochs for the 1,294 digits
BILSTM_MIN_TEXTS = 20_000  # below this a bag of embeddings matches a BiLSTM (and trains 10x faster)
BILSTM_MAX_TOKENS = 256  # longer texts: a BiLSTM over hundreds of steps is slow on a CPU; a bag is not
TEXT_FILES = (".csv", ".tsv", ".jsonl")
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val", "validation", "dev"), "test": ("test",)}
LABEL_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "y", "tag", "topic")


@dataclass
class Recipe:
    """A config as YAML holds it (`raw`) and why each part was chosen (`reasons`: dotted key -> one line)."""

    task: str
    raw: dict[str, Any]
    reasons: dict[str, str]
    command: str = ""

    def with_overrides(self, overrides: list[str]) -> Recipe:
        """The recipe with `key=value` / `~key` overrides applied, each noted as set on the command line."""
        raw = apply_overrides(copy.deepcopy(self.raw), list(overrides))
        reasons = dict(self.reasons)
        for text in overrides:
            key = text.lstrip("~").split("=", 1)[0].strip()
            reasons = {k: v for k, v in reasons.items() if k != key and not k.startswith(key + ".")}
            reasons[key] = f"{text}: set on the command line"
        return Recipe(self.task, raw, reasons, self.command)

    def to_yaml(self) -> str:
        """The config as YAML, each choice's reason a comment line above the key it explains."""
        header = [f"{self.command}: a config chosen from the data" if self.command else "a config chosen from the data",
                  f"the run directory's config.yaml holds it: guide train-{self.task} --config RUN/config.yaml "
                  "trains it again"]
        return commented_yaml(self.raw, self.reasons, header)


def choose_recipe(task: str, path: str | Path, text: str | None = None, label: str | None = None) -> Recipe:
    """The recipe for `guide train-<task> --data PATH` (with `--text`/`--label` for text).

    Raises:
        DataError: the data cannot be read, or has no class folders, text column or second class.
    """
    command = f"guide train-{task} --data {path}"
    if task == "image":
        if text or label:
            raise DataError("--text and --label name the columns of text data", "drop them for images")
        recipe = choose_image_recipe(image_facts(path))
    else:
        from torchguide.recipe_text import choose_text_recipe, text_facts  # text's half imports this module

        recipe = choose_text_recipe(text_facts(path, text, label))
    recipe.command = command + "".join(f" --{k} {v}" for k, v in (("text", text), ("label", label)) if v)
    return recipe


def run_name(path: str | Path) -> str:
    """A run name from the data's folder or file name (`data/digits` -> digits, `x/train.csv` -> x)."""
    path = Path(path).expanduser().resolve()
    name = path.stem if path.is_file() and path.stem not in ("train", "data", "all") else \
        (path.parent.name if path.is_file() else path.name)
    return re.sub(r"[^\w.-]", "-", name).lstrip(".") or "run"


# ------------------------------------------------------------------ images

@dataclass
class ImageFacts:
    """What the recipe of an image folder is chosen from."""

    name: str
    splits: dict[str, str]  # split -> folder of class folders
    classes: dict[str, int]  # class -> training images
    mode: str  # L or RGB
    size: tuple[int, int]  # the most common (height, width)
    sizes: int  # distinct sizes among the training images
    mean: list[float]  # per channel, pixels scaled to [0, 1]
    std: list[float]
    measured: int  # images the size, mean and std were measured on

    @property
    def samples(self) -> int:
        return sum(self.classes.values())


def image_splits(path: str | Path) -> dict[str, Path]:
    """train/ (and valid/ or val/, and test/) when `path` holds them as folders of class folders; else
    `path` itself is the training folder."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"--data {path} does not exist", "give a folder of class folders, e.g. data/digits")
    if not root.is_dir():
        raise DataError(f"--data {path} is a file, not a folder of class folders",
                        "give a folder (guide train-text reads .csv/.tsv/.jsonl files)")
    train = root / "train"
    if not (train.is_dir() and any(p.is_dir() for p in train.iterdir())):
        return {"train": root}
    splits = {"train": train}
    for split in ("valid", "test"):
        found = next((root / n for n in SPLIT_NAMES[split] if (root / n).is_dir()), None)
        if found is not None:
            splits[split] = found
    return splits


def read_image_folder(root: Path) -> ImageSamples:
    """The training images, or a DataError that says how to lay a folder out for --data."""
    if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        images = sum(1 for p in root.iterdir() if is_image(p))
        texts = any(p.suffix.lower() in TEXT_FILES for p in root.iterdir())
        found = f"{images} images but no class folders" if images else "no class folders"
        raise DataError(f"--data {root} holds {found}",
                        "for text files use guide train-text --data" if texts and not images else
                        f"put each class's images in a folder of its own ({root}/<class>/<image>.png), "
                        "or train/ and test/ folders of class folders")
    try:
        return image_folder(str(root))
    except DataError as exc:
        raise DataError(f"--data: {exc.message}", exc.hint) from exc


def image_facts(path: str | Path, measure: int = MEASURED_IMAGES) -> ImageFacts:
    """Classes, mode, sizes and the pixel mean and std of the training images under `path`.

    The mean, std and sizes come from a seeded sample of `measure` images, so the same data
    always gives the same recipe; the distinct sizes from every file's header.
    """
    splits = image_splits(path)
    train = read_image_folder(splits["train"])
    picked = sorted(random.Random(0).sample(range(len(train)), min(measure, len(train))))
    sizes: Counter[tuple[int, int]] = Counter()
    total = squares = None
    pixels = 0
    for i in picked:
        image = load_image(train.samples[i][0], train.mode).double() / 255  # (C, H, W)
        sizes[tuple(image.shape[1:])] += 1
        sums, sq = image.sum(dim=(1, 2)), (image * image).sum(dim=(1, 2))
        total, squares = (sums, sq) if total is None else (total + sums, squares + sq)
        pixels += image.shape[1] * image.shape[2]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp(min=1e-12).sqrt()
    counts = class_counts([train.classes[y] for _, y in train.samples])["classes"]
    return ImageFacts(run_name(path), {s: str(p) for s, p in splits.items()}, counts, train.mode,
                      sizes.most_common(1)[0][0], len(train.sizes or {}) or len(sizes),
                      [round(float(m), 4) for m in mean], [round(max(float(s), 1e-3), 4) for s in std], len(picked))


def train_count(classes: dict[str, int], split: float | None) -> int:
    """Training samples left once a stratified `split` is carved out (as `stratified_split` does)."""
    if not split:
        return sum(classes.values())
    return sum(n - (round(n * split) if n > 1 else 0) for n in classes.values())


def cnn_multiply_adds(height: int, width: int, channels: int, cnn_width: int) -> int:
    """Multiply-adds of one simple_cnn forward pass: its four 3x3 convolutions (pooling halves H, W twice)."""
    w, area = cnn_width, height * width
    return 9 * (area * (channels * w + w * w) + area // 4 * (w * 2 * w) + area // 16 * (2 * w * 4 * w))


def choose_image_recipe(facts: ImageFacts) -> Recipe:
    """Every section of an image config from the facts of its data (pure: no files are read)."""
    reasons: dict[str, str] = {}
    split = None if "valid" in facts.splits else VALID_SPLIT
    n = train_count(facts.classes, split)
    height, width = facts.size
    side = max(height, width)
    small = side <= SMALL_SIDE
    kind = {"L": "grayscale", "RGB": "color"}[facts.mode]
    described = f"{width}x{height} {kind}, {len(facts.classes)} classes, {n:,} training images"
    batch = 32 if n < 2000 else 64 if n < 20_000 or not small else 128
    epochs = min(15, max(3, math.ceil(IMAGE_SAMPLES_SEEN / n)))
    data: dict[str, Any] = {}
    data["train"], reasons["data.train"] = image_dataset(facts, "train", small)
    if split:
        data["valid"] = {"split": split}
        reasons["data.valid"] = f"no valid/ folder: {split:.0%} of train, stratified by class"
    else:
        data["valid"], reasons["data.valid"] = image_dataset(facts, "valid", small)
    if "test" in facts.splits:
        data["test"], reasons["data.test"] = image_dataset(facts, "test", small)
    channels = 1 if facts.mode == "L" and small else 3
    mean, std = (facts.mean, facts.std) if channels == len(facts.mean) else (facts.mean * 3, facts.std * 3)
    normalize = {"name": "normalize", "mean": mean, "std": std}
    if small:
        resize = [{"name": "resize", "size": [height, width]}] if facts.sizes > 1 else []
        train_tf = [*resize, {"name": "random_affine", "degrees": 10, "translate": [0.1, 0.1]}, normalize]
        eval_tf = [*resize, normalize]
        reasons["data.transforms.train"] = ("small images: a light random affine (10 degrees, 10% shifts); no flips, "
                                            "they turn digits and letters into others")
        if resize:
            reasons["data.transforms.train"] += f"; {facts.sizes} sizes: resized to the most common, {width}x{height}"
        cnn_width = next((w for w in (32, 16) if 3 * cnn_multiply_adds(height, width, channels, w) * n * epochs
                          <= CNN_BUDGET), 16)
        cost = 3 * cnn_multiply_adds(height, width, channels, cnn_width) * n * epochs
        model = {"name": "simple_cnn", "width": cnn_width}
        reasons["model"] = f"{described}: simple_cnn width {cnn_width}, {cost:.1e} multiply-adds for the run"
        if cnn_width == 16:
            reasons["model"] += " (width 32: 4x as many)"
        optimizer = {"name": "adamw", "lr": 3.0e-3, "weight_decay": 1.0e-4}
        cached = n * channels * height * width
    else:
        crop = 112 if min(height, width) >= 112 else 64
        resize = round(crop / 0.875)
        train_tf = [{"name": "random_resized_crop", "size": crop, "scale": [0.35, 1.0], "antialias": True},
                    {"name": "random_horizontal_flip"}, normalize]
        eval_tf = [{"name": "resize", "size": resize, "antialias": True}, {"name": "center_crop", "size": crop},
                   normalize]
        reasons["data.transforms.train"] = (f"large images: random crops of {crop}x{crop} (35-100% of the image) and "
                                            "horizontal flips, as for photos")
        reasons["data.transforms.eval"] = f"resized to {resize}, center crop {crop}x{crop}"
        model = {"name": "resnet18"}
        reasons["model"] = (f"{described}: resnet18 at {crop}x{crop}, random init (model.weights=DEFAULT "
                            "fine-tunes ImageNet weights)")
        optimizer = {"name": "adamw", "lr": 2.0e-3, "weight_decay": 5.0e-2, "no_decay_norm_bias": True}
        cached = 0  # random crops of the full images: the decoded originals would be cached
    data["transforms"] = {"train": train_tf, "eval": eval_tf}
    reasons["data.transforms"] = (f"normalize: the mean and std of {facts.measured:,} training images"
                                  + (" (each channel: grayscale made RGB)" if channels != len(facts.mean) else ""))
    data["loader"] = {"batch_size": batch}
    steps = math.ceil(n / batch)
    reasons["data.loader"] = f"{n:,} training images: batch {batch}, {steps:,} steps an epoch"
    if 0 < cached <= CACHE_BYTES:
        data["cache"] = "memory"
        reasons["data.cache"] = (f"the decoded images take {cached / 2**20:.1f} MB: kept in memory after the first "
                                 "epoch, augmented afresh each epoch")
    raw = {"name": facts.name, "seed": 0, "data": data, "model": model, "loss": {"name": "cross_entropy"},
           "optimizer": optimizer, "scheduler": {"name": "one_cycle"}, "train": {"epochs": epochs}}
    reasons["optimizer"] = (f"adamw, lr {optimizer['lr']:g} at one_cycle's peak, "
                            f"weight decay {optimizer['weight_decay']:g}")
    reasons["scheduler"] = "one_cycle: warms up for the first 30% of the steps, then anneals to zero by the last"
    reasons["train.epochs"] = (f"{epochs} epochs: about {IMAGE_SAMPLES_SEEN:,} images seen at least, "
                               f"{epochs * steps:,} steps")
    return Recipe("image", raw, reasons)


def image_dataset(facts: ImageFacts, split: str, small: bool) -> tuple[dict[str, Any], str]:
    """The image_folder section of one split, and the reason for the first."""
    section: dict[str, Any] = {"name": "image_folder", "root": facts.splits[split]}
    if not small and facts.mode == "L":
        section["mode"] = "RGB"  # torchvision's architectures take 3 channels
    if split != "train":
        return section, f"{split} images from {facts.splits[split]}"
    folders = [f"{Path(p).name}/" for p in facts.splits.values()]
    where = "one folder of class folders" if folders == [f"{Path(facts.splits['train']).name}/"] \
        and folders != ["train/"] else f"{', '.join(folders)}: folders of class folders"
    reason = f"{where}; {facts.samples:,} training images in {len(facts.classes)} classes"
    if "mode" in section:
        reason += "; read as RGB for resnet18"
    return section, reason


# ------------------------------------------------------------------ the commented YAML

BLOCK = {"data", "data.transforms"}  # sections written one key a line; the others in flow style, as in configs/
BLOCK_LISTS = {"data.transforms.train", "data.transforms.eval"}


def commented_yaml(raw: dict[str, Any], reasons: dict[str, str], header: list[str]) -> str:
    """`raw` as YAML in the style of the shipped configs, with `# reason` lines above the keys they explain.

    A reason for a key inside a flow-style section (`train.epochs`) goes above the section's line.
    """
    lines = [f"# {line}" for line in header]
    shown = {p for p in paths(raw, "") if p.count(".") == 0 or p.rsplit(".", 1)[0] in BLOCK}

    def anchor(key: str) -> str:
        parts = key.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in shown),
                    parts[0])

    notes: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        notes.setdefault(anchor(key), []).append(reason)

    def emit(mapping: dict[str, Any], prefix: str, indent: str) -> None:
        for key, value in mapping.items():
            path = f"{prefix}{key}"
            lines.extend(f"{indent}# {note}" for note in notes.get(path, []))
            if path in BLOCK and isinstance(value, dict):
                lines.append(f"{indent}{key}:")
                emit(value, path + ".", indent + "  ")
            elif path in BLOCK_LISTS and isinstance(value, list) and value:
                lines.append(f"{indent}{key}:")
                lines.extend(f"{indent}  - {flow(item)}" for item in value)
            else:
                lines.append(f"{indent}{key}: {flow(value)}")

    emit(raw, "", "")
    return "\n".join(lines) + "\n"


def paths(mapping: dict[str, Any], prefix: str) -> list[str]:
    found = []
    for key, value in mapping.items():
        found.append(prefix + str(key))
        if isinstance(value, dict):
            found += paths(value, f"{prefix}{key}.")
    return found


def flow(value: Any) -> str:
    """One value in YAML's flow style, on one line: `{name: simple_cnn, width: 32}`, `[0.1, 0.1]`, `0.003`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()
