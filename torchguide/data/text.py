"""Text datasets, the word tokenizer and the vocabulary.

`text_csv` reads CSV, TSV or JSONL files with a text and a label column; `token_ids`
reads pre-tokenized integer sequences; `random_sequences` is the guide's experiment
of random sequences. They all give a `TextSamples`; `encode` then turns texts into
token ids with a `Vocab` built from the training split only.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from torchguide.errors import DataError
from torchguide.registry import DATASETS

log = logging.getLogger("torchguide")

PAD, UNK = "<pad>", "<unk>"
MAX_FIELD_CHARS = 10_000_000  # one text of ten million characters is a broken file, not a sample
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case words (with inner apostrophes: don't) and single punctuation marks."""
    return TOKEN.findall(text.lower())


class Vocab:
    """Token <-> id; id 0 is `<pad>`, id 1 is `<unk>` (any token not in the vocabulary)."""

    def __init__(self, tokens: list[str]) -> None:
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """The vocabulary of `texts`: tokens seen at least `min_freq` times, most frequent first."""
        counts = Counter(tok for text in texts for tok in tokenize(text))
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size:
            ranked = ranked[: max_size - 2]
        return cls([PAD, UNK, *ranked])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Token ids of `text`; an empty text becomes one `<unk>` so every input has a token."""
        ids = [self.stoi.get(t, 1) for t in tokenize(text)][:max_len] or [1]
        return ids


class TextSamples(Dataset):
    """Sequences of token ids with class indices, and the raw texts when there are any.

    `classes`, when given, is the class order a dataset declares (a dataset of the user's
    own); without it the classes are the sorted labels of the training split.
    """

    def __init__(self, labels: list[str], texts: list[str] | None = None,
                 ids: list[torch.Tensor] | None = None, source: str = "", classes: list[str] | None = None) -> None:
        self.raw_labels = labels
        self.texts = texts
        self.ids = ids
        self.source = source
        self.targets: list[int] = []
        self.classes: list[str] = list(classes or [])

    def __len__(self) -> int:
        return len(self.raw_labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.ids[index], self.targets[index]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def encode(self, vocab: Vocab | None, classes: list[str], max_len: int | None = None) -> TextSamples:
        """Token ids with `vocab` (texts) and class indices in `classes`; unknown labels are an error."""
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({lab for lab in self.raw_labels if lab not in index})
        if unknown:
            raise DataError(f"{self.source}: label(s) {', '.join(map(repr, unknown[:5]))} are not among the "
                            f"trained classes ({', '.join(classes)})", "use data with the same labels")
        self.classes = classes
        self.targets = [index[lab] for lab in self.raw_labels]
        if self.texts is not None:
            self.ids = [torch.tensor(vocab.encode(t, max_len), dtype=torch.long) for t in self.texts]
        elif max_len:
            self.ids = [x[:max_len] for x in self.ids]
        return self

    def subset(self, indices: list[int]) -> TextSamples:
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return TextSamples(pick(self.raw_labels), pick(self.texts), pick(self.ids), self.source, self.classes)


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Class names sorted, numerically when they are all integers."""
    unique = set(labels)
    if all(lab.lstrip("-").isdigit() for lab in unique):
        return sorted(unique, key=int)
    return sorted(unique)


Row = tuple[int, dict[str, Any]]  # (line number in the file, the row's fields)


def read_table(path: Path, columns: tuple[str, ...], hint: str) -> list[Row]:
    """Rows of a .csv, .tsv or .jsonl file that has `columns`; problems are DataErrors naming the line.

    A BOM is dropped; a row with fewer or more fields than the header, a JSON line without
    a column, and a field over MAX_FIELD_CHARS are refused. `hint` says how to name other columns.
    """
    raw = read_text(path)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, raw, columns)
    else:
        rows = read_csv(path, raw, columns, hint, "\t" if path.suffix in (".tsv", ".tab") else ",")
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    return rows


def read_text(path: Path) -> str:
    """A data file's text: UTF-8, a leading BOM dropped; an empty file is a DataError."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 (byte {exc.start})", "re-save the file as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise DataError(f"{path} is empty")
    return raw


@contextmanager
def csv_field_limit(limit: int) -> Iterator[None]:
    """The csv module's field limit (a process-wide setting) raised for a block, then put back."""
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def read_csv(path: Path, raw: str, columns: tuple[str, ...], hint: str, delimiter: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter=delimiter)
    rows = []
    with csv_field_limit(MAX_FIELD_CHARS):
        try:
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path} has no column(s) {', '.join(missing)}; it has {', '.join(header)}", hint)
            for row in reader:
                if None in row or None in row.values():
                    fields = len(header) + len(row.get(None, [])) - list(row.values()).count(None)
                    raise DataError(f"{path}, line {reader.line_num}: {fields} field(s) where the header has "
                                    f"{len(header)}", "quote fields that contain the delimiter, and fill every "
                                    "field of each row")
                rows.append((reader.line_num, row))
        except csv.Error as exc:
            line = reader.line_num + 1  # the line it failed on was not counted yet
            if "field limit" in str(exc):
                raise DataError(f"{path}, line {line}: a field is longer than {MAX_FIELD_CHARS:,} "
                                "characters", "look for an unclosed quote, which runs to the end of the file") \
                    from exc
            raise DataError(f"{path}, line {line}: {exc}") from exc
    return rows


def read_jsonl(path: Path, raw: str, columns: tuple[str, ...]) -> list[Row]:
    rows = []
    for number, line in enumerate(raw.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not JSON") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, not an object with keys "
                            f"{', '.join(columns)}")
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            raise DataError(f"{path}: line {number} has no {', '.join(missing)}; it has "
                            f"{', '.join(map(str, row)) or 'no keys'}", "give every line each key")
        if any(isinstance(row[c], str) and len(row[c]) > MAX_FIELD_CHARS for c in columns):
            raise DataError(f"{path}: line {number} has a field longer than {MAX_FIELD_CHARS:,} characters")
        rows.append((number, row))
    return rows


@DATASETS.register("text_csv", task="text")
def text_csv(path: str, text: str = "text", label: str = "label") -> TextSamples:
    """Texts and labels from a CSV, TSV (.tsv) or JSON-lines (.jsonl) file; columns named in config."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"text file {file} does not exist" if not file.exists() else f"{file} is not a file",
                        "check the path, or run `guide data reviews`", key="path")
    rows = read_table(file, (text, label), "set `text:` and `label:` in the dataset config")
    texts = [str(r[text]) for _, r in rows]
    labels = [str(r[label]).strip() for _, r in rows]
    if "" in labels:
        line = rows[labels.index("")][0]
        raise DataError(f"{file}: {labels.count('')} row(s) have an empty label, the first at line {line}",
                        "give every row a label")
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        log.warning("%s: %d empty text(s); each is read as one unknown token", file, empty)
    return TextSamples(labels, texts=texts, source=str(file))


@DATASETS.register("token_ids", task="text")
def token_ids(path: str) -> TextSamples:
    """Pre-tokenized sequences: .jsonl rows `{"ids": [...], "label": ...}`, or an .npz with
    `ids` (one flat int array), `offsets` (start of each sequence) and `labels`. Id 0 is padding."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"token file {file} does not exist", key="path")
    if file.suffix == ".npz":
        with np.load(file) as npz:
            missing = {"ids", "offsets", "labels"} - set(npz.files)
            if missing:
                raise DataError(f"{file} lacks array(s) {', '.join(sorted(missing))}")
            flat, offsets, labels = torch.from_numpy(npz["ids"]).long(), npz["offsets"], npz["labels"]
        bounds = [*offsets.tolist(), len(flat)]
        ids = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        labels = [str(x) for x in labels.tolist()]
    else:
        rows = read_table(file, ("ids", "label"), "write columns ids and label")
        bad = next((line for line, r in rows if not isinstance(r["ids"], list)
                    or not all(isinstance(i, int) for i in r["ids"])), None)
        if bad is not None:
            raise DataError(f"{file}: line {bad}: ids must be a list of integers")
        ids = [torch.tensor(r["ids"], dtype=torch.long) for _, r in rows]
        labels = [str(r["label"]) for _, r in rows]
    if any(len(x) == 0 for x in ids):
        raise DataError(f"{file}: some sequences are empty")
    if any(int(x.min()) < 0 for x in ids):
        raise DataError(f"{file}: token ids must be >= 0 (0 is padding)")
    return TextSamples(labels, ids=ids, source=str(file))


@DATASETS.register("random_sequences", task="text")
def random_sequences(size: int = 1024, min_len: int = 50, max_len: int = 300, vocab_size: int = 10000,
                     num_classes: int = 2, seed: int = 0) -> TextSamples:
    """The guide's experiment: `size` sequences of random length in [min_len, max_len] over
    `vocab_size` token ids (0 is padding), with random labels."""
    if not 1 <= min_len <= max_len:
        raise DataError(f"need 1 <= min_len <= max_len, got {min_len} and {max_len}")
    if size < 2 or vocab_size < 2 or num_classes < 2:
        raise DataError("size, vocab_size and num_classes must be at least 2")
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (size,), generator=gen).tolist()
    ids = [torch.randint(1, vocab_size, (n,), generator=gen) for n in lengths]
    labels = [str(x) for x in torch.randint(0, num_classes, (size,), generator=gen).tolist()]
    return TextSamples(labels, ids=ids, source="random_sequences")
