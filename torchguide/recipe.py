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
from torchguide.data.survey import class_counts, survey_text
from torchguide.data.text import read_table, text_csv
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


# ------------------------------------------------------------------ text

@dataclass
class TextFacts:
    """What the recipe of a text file (or folder of them) is chosen from."""

    name: str
    files: dict[str, str]  # split -> file
    text: str  # the text column
    label: str  # the label column
    columns: str  # how the columns were found, one line
    classes: dict[str, int]  # label -> training texts
    lengths: dict[str, float]  # tokens: min, median, p95, max
    suggested_max_len: int  # the p95 rounded up to 8, as `guide data inspect` suggests
    length_values: list[int]  # tokens of each training text


def text_files(path: str | Path) -> dict[str, Path]:
    """{split: file}: `path` itself as the training file, or train/valid/test files in the folder `path`."""
    given = Path(path).expanduser()
    if not given.exists():
        raise DataError(f"--data {path} does not exist", "give a .csv/.tsv/.jsonl file or a folder of them")
    if given.is_file():
        if given.suffix.lower() not in TEXT_FILES:
            raise DataError(f"--data {path} is not a .csv, .tsv or .jsonl file", "give one of those, or a folder "
                            "with train.csv (and valid.csv, test.csv)")
        return {"train": given}
    found = {}
    for split, names in SPLIT_NAMES.items():
        file = next((given / f"{n}{ext}" for n in names for ext in TEXT_FILES if (given / f"{n}{ext}").is_file()), None)
        if file is not None:
            found[split] = file
    if "train" not in found:
        listed = sorted(p.name for p in given.iterdir() if p.suffix.lower() in TEXT_FILES)
        folders = not listed and any(p.is_dir() for p in given.iterdir())
        raise DataError(f"--data {path} has no train.csv, train.tsv or train.jsonl"
                        + (f" (it has {', '.join(listed[:5])})" if listed else ""),
                        "for a folder of image folders use guide train-image --data" if folders else
                        "name the training file train.csv (valid.csv and test.csv beside it), or give the file itself")
    return found


@dataclass
class Column:
    """One column of a table, as the column detection sees it."""

    name: str
    distinct: int
    numeric: bool  # every non-empty value is a number
    mean_chars: float
    values: list[str]

    def describe(self) -> str:
        return f"{self.name} ({'numbers' if self.numeric else f'{self.distinct:,} values'})"


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_columns(file: Path) -> list[Column]:
    """Every column of a .csv/.tsv/.jsonl file that holds text or numbers (JSON lists and objects are left out)."""
    rows = read_table(file, (), "")
    names = list(dict.fromkeys(key for _, row in rows for key in row))
    columns = []
    for name in names:
        raw = [row.get(name) for _, row in rows]
        if any(isinstance(v, list | dict) for v in raw):
            continue
        values = ["" if v is None else str(v) for v in raw]
        filled = [v.strip() for v in values if v.strip()]
        columns.append(Column(name, len(set(filled)), bool(filled) and all(map(is_number, filled)),
                              sum(map(len, values)) / len(values), values))
    return columns


def few_values(column: Column, rows: int) -> bool:
    """Whether a column has few enough distinct values to be a label: at most a quarter of the rows, 1000 at most."""
    return column.distinct <= max(2, min(1000, rows // 4))


def pick_columns(file: Path, columns: list[Column], text: str | None, label: str | None) -> tuple[str, str, str]:
    """(text column, label column, how they were found): named, or detected.

    The label is a column named like one (label, class, category, ...), else the column with the
    fewest distinct values (two or more, and few for the number of rows); the text is the
    column, other than the label, of words (not numbers, not few values) with the longest values.

    Raises:
        DataError: a named column is missing, no column holds text or labels, or the label has one value.
    """
    by_name = {c.name: c for c in columns}
    listing = "; ".join(c.describe() for c in columns)
    for given, option in ((text, "--text"), (label, "--label")):
        if given is not None and given not in by_name:
            raise DataError(f"{file} has no column {given!r}", f"{option} takes one of {', '.join(by_name)}")
    rows = len(columns[0].values) if columns else 0
    how = []
    if label is None:
        named = [c for c in columns if c.name.lower() in LABEL_NAMES and c.name != text
                 and (c.distinct < 2 or few_values(c, rows))]
        counted = sorted((c for c in columns if c.name != text and c.distinct >= 2 and few_values(c, rows)),
                         key=lambda c: (c.distinct, -columns.index(c)))
        found = named[0] if named else counted[0] if counted else None
        if found is None:
            raise DataError(f"{file} has no label column (a column with few distinct values): {listing}",
                            "name it with --label COL")
        label = found.name
        how.append(f"label `{label}` ({'by its name' if named else 'fewest distinct values'})")
    else:
        how.append(f"label `{label}` (--label)")
    if by_name[label].distinct < 2:
        only = next((v for v in by_name[label].values if v.strip()), "")
        raise DataError(f"{file}: the label column `{label}` has one value ({only!r}); a classifier needs two or more",
                        "give data with at least two labels, or name another column with --label")
    if text is None:
        words = [c for c in columns if c.name != label and not c.numeric and not few_values(c, rows)]
        if not words:
            raise DataError(f"{file} has no text column (a column of words, other than the label `{label}`): "
                            f"{listing}", "name it with --text COL")
        text = max(words, key=lambda c: c.mean_chars).name
        how.insert(0, f"text `{text}` (the longest values, {by_name[text].mean_chars:.0f} characters on average)")
    else:
        how.insert(0, f"text `{text}` (--text)")
    if text == label:
        raise DataError(f"--text and --label both name {text!r}", "give two different columns")
    return text, label, ", ".join(how)


def text_facts(path: str | Path, text: str | None = None, label: str | None = None) -> TextFacts:
    """The files, columns, classes and token lengths of text data (a file, or a folder of train/valid/test files)."""
    files = text_files(path)
    text, label, how = pick_columns(files["train"], read_columns(files["train"]), text, label)
    try:
        survey = survey_text(text_csv(str(files["train"]), text, label), 64, None)
    except DataError as exc:
        raise DataError(f"--data: {exc.message}", exc.hint) from exc
    return TextFacts(run_name(path), {s: str(f) for s, f in files.items()}, text, label, how, survey["classes"],
                     survey["lengths"], survey["suggested_max_len"], survey["length_values"])


def choose_text_recipe(facts: TextFacts) -> Recipe:
    """Every section of a text config from the facts of its data (pure: no files are read)."""
    reasons: dict[str, str] = {}
    split = None if "valid" in facts.files else VALID_SPLIT
    n = train_count(facts.classes, split)
    lengths = facts.lengths
    bilstm = n >= BILSTM_MIN_TEXTS and lengths["p95"] <= BILSTM_MAX_TOKENS
    max_len = min(facts.suggested_max_len, BILSTM_MAX_TOKENS if bilstm else 2 * BILSTM_MAX_TOKENS)
    tokens = sum(min(x, max_len) for x in facts.length_values) / max(len(facts.length_values), 1)
    batch = 64 if n < 50_000 else 128
    steps = math.ceil(n / batch)

    def section(split_name: str) -> dict[str, Any]:
        return {"name": "text_csv", "path": facts.files[split_name], "text": facts.text, "label": facts.label}

    data: dict[str, Any] = {"train": section("train")}
    reasons["data.train"] = facts.columns
    if split:
        data["valid"] = {"split": split}
        reasons["data.valid"] = f"no valid file: {split:.0%} of train, stratified by label"
    else:
        data["valid"] = section("valid")
    if "test" in facts.files:
        data["test"] = section("test")
    min_freq = 2 if n >= 1000 else 1
    data["vocab"] = {"min_freq": min_freq, "max_size": 50_000, "max_len": max_len}
    whole = share_within(facts.length_values, max_len)
    reasons["data.vocab"] = (f"tokens per text: median {lengths['median']:g}, p95 {lengths['p95']}, "
                             f"max {lengths['max']}: max_len {max_len} keeps {whole:.0%} of texts whole"
                             + ("; words seen once are <unk>" if min_freq == 2 else ""))
    data["loader"] = {"batch_size": batch}
    reasons["data.loader"] = f"{n:,} training texts: batch {batch}, {steps:,} steps an epoch"
    data["collate"] = {"name": "pad_to_longest"}
    data["sampler"] = {"name": "length_buckets"}
    reasons["data.sampler"] = "batches of texts of similar length, so little of each batch is padding"
    described = f"{n:,} training texts of {tokens:.0f} tokens on average, {len(facts.classes)} classes"
    if bilstm:
        model = {"name": "bilstm", "embed_dim": 200, "hidden": 128, "head": 64, "dropout": 0.5}
        reasons["model"] = f"{described}: the guide's BiLSTM"
        epochs = min(8, max(2, math.ceil(120_000 / n)))
        train = {"epochs": epochs, "grad_clip": 1.0}
        reasons["train.grad_clip"] = "clip gradients at norm 1, as recurrent networks want"
    else:
        model = {"name": "embedding_bag", "dim": 64}
        why = (f"under {BILSTM_MIN_TEXTS:,} texts a BiLSTM does no better, at 10x the time" if n < BILSTM_MIN_TEXTS
               else f"over {BILSTM_MAX_TOKENS} tokens is long for a BiLSTM on a CPU")
        reasons["model"] = f"{described}: embedding_bag ({why}; `model={{name: bilstm}}` to compare)"
        epochs = min(20, max(4, math.ceil(60_000 / n)))
        train = {"epochs": epochs}
    warmup = max(10, round(0.05 * epochs * steps))
    raw = {"name": facts.name, "seed": 0, "data": data, "model": model, "loss": {"name": "cross_entropy"},
           "optimizer": {"name": "adamw", "lr": 1.0e-3 if bilstm else 1.0e-2, "weight_decay": 0.1},
           "scheduler": {"name": "linear_warmup", "warmup_steps": warmup}, "train": train}
    reasons["optimizer"] = ("adamw, lr " + ("1e-3" if bilstm else "1e-2 (a bag of embeddings wants a high one)")
                            + ", weight decay 0.1")
    reasons["scheduler"] = f"linear warmup over {warmup} steps (5%), then cosine decay to zero"
    reasons["train.epochs"] = f"{epochs} epochs, {epochs * steps:,} steps; the best epoch on validation is kept"
    return Recipe("text", raw, reasons)


def share_within(lengths: list[int], max_len: int) -> float:
    return sum(1 for x in lengths if x <= max_len) / max(len(lengths), 1)


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
