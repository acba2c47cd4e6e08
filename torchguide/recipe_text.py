"""The zero-config start for text: the text and label columns found, and a recipe chosen from them
(see `torchguide.recipe`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchguide.data.survey import survey_text
from torchguide.data.text import read_table, text_csv
from torchguide.errors import DataError
from torchguide.recipe import (
    BILSTM_MAX_TOKENS,
    BILSTM_MIN_TEXTS,
    LABEL_NAMES,
    SPLIT_NAMES,
    TEXT_FILES,
    VALID_SPLIT,
    Recipe,
    run_name,
    train_count,
)


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


