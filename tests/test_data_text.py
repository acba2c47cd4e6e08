"""Tokenizer and vocabulary, text datasets, collates and samplers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchguide.config import load_config
from torchguide.data import text as text_module
from torchguide.data.collate import pad_to_length, pad_to_longest
from torchguide.data.loaders import build_data
from torchguide.data.samplers import length_buckets, random, sorted_batches
from torchguide.data.text import Vocab, random_sequences, text_csv, token_ids, tokenize
from torchguide.errors import DataError


def test_tokenizer() -> None:
    assert tokenize("It's a GREAT film, isn't it?!") == ["it's", "a", "great", "film", ",", "isn't", "it", "?", "!"]


def test_vocab_round_trip_and_limits() -> None:
    texts = ["the cat sat", "the dog sat", "the end"]
    vocab = Vocab.build(texts, min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "the", "sat"]
    assert vocab.encode("the bird sat") == [2, 1, 3]
    assert vocab.encode("") == [1]
    assert Vocab(vocab.itos).stoi == vocab.stoi
    assert len(Vocab.build(texts, max_size=3)) == 3
    assert vocab.encode("the the the sat", max_len=2) == [2, 2]


def test_text_csv_tsv_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('review,sentiment\n"good, very ""good""\nfilm",pos\nbad,neg\n')
    ds = text_csv(str(tmp_path / "a.csv"), text="review", label="sentiment")
    assert ds.texts[0] == 'good, very "good"\nfilm' and ds.raw_labels == ["pos", "neg"]
    (tmp_path / "a.tsv").write_text("text\tlabel\nfine\t1\n")
    assert text_csv(str(tmp_path / "a.tsv")).raw_labels == ["1"]
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "ok", "label": 2}) + "\n")
    assert text_csv(str(tmp_path / "a.jsonl")).raw_labels == ["2"]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("text,label\n", "header but no rows"),
    ("words,label\nx,1\n", "no column\\(s\\) text"),
    ("text,label\nx,\n", "empty label"),
])
def test_text_csv_bad_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "f.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        text_csv(str(tmp_path / "f.csv"))


def test_non_utf8_and_missing(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        text_csv(str(tmp_path / "f.csv"))
    with pytest.raises(DataError, match="does not exist"):
        text_csv(str(tmp_path / "none.csv"))


def test_token_ids_jsonl_and_npz(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"ids": [3, 4], "label": 0}\n{"ids": [5], "label": 1}\n')
    ds = token_ids(str(tmp_path / "t.jsonl"))
    assert [x.tolist() for x in ds.ids] == [[3, 4], [5]]
    np.savez(tmp_path / "t.npz", ids=np.array([1, 2, 3, 4]), offsets=np.array([0, 3]), labels=np.array([1, 0]))
    ds = token_ids(str(tmp_path / "t.npz"))
    assert [x.tolist() for x in ds.ids] == [[1, 2, 3], [4]] and ds.raw_labels == ["1", "0"]


def test_random_sequences_is_the_guides_setup() -> None:
    ds = random_sequences(size=1024, min_len=50, max_len=300, vocab_size=10000)
    lengths = [len(x) for x in ds.ids]
    assert len(ds) == 1024 and min(lengths) >= 50 and max(lengths) <= 300
    assert all(int(x.min()) >= 1 and int(x.max()) < 10000 for x in ds.ids)
    assert set(ds.raw_labels) == {"0", "1"}


def test_eval_labels_not_in_training_are_refused(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "test.csv").write_text("text,label\na,z\n")
    cfg = load_config(None, raw={"data": {"train": {"name": "text_csv", "path": str(tmp_path / "train.csv")},
                                          "test": {"name": "text_csv", "path": str(tmp_path / "test.csv")}},
                                 "model": {"name": "bilstm"}})
    with pytest.raises(DataError, match="'z' are not among the trained classes"):
        build_data(cfg, ("train", "test"))


def samples(*lengths: int) -> list[tuple[torch.Tensor, int]]:
    return [(torch.arange(1, n + 1), i % 2) for i, n in enumerate(lengths)]


def test_pad_to_longest_pads_returns_lengths_and_target_dtype() -> None:
    batch = pad_to_longest(target="index")(samples(3, 1, 2))
    tokens, lengths = batch.inputs
    assert tokens.tolist() == [[1, 2, 3], [1, 0, 0], [1, 2, 0]] and lengths.tolist() == [3, 1, 2]
    assert batch.target.dtype == torch.long
    binary = pad_to_longest(target="binary")(samples(3, 1))
    assert binary.target.dtype == torch.float32 and binary.target.shape == (2, 1)
    onehot = pad_to_longest(target="onehot", num_classes=3)(samples(1, 1))
    assert onehot.target.tolist() == [[1, 0, 0], [0, 1, 0]]


def test_pad_to_length() -> None:
    batch = pad_to_length(length=4)(samples(6, 2))
    assert batch.inputs[0].tolist() == [[1, 2, 3, 4], [1, 2, 0, 0]] and batch.inputs[1].tolist() == [4, 2]


LENGTHS = torch.randint(1, 300, (1000,), generator=torch.Generator().manual_seed(0)).tolist()


@pytest.mark.parametrize("make", [random, length_buckets, sorted_batches])
def test_every_index_once_per_epoch(make) -> None:
    sampler = make(LENGTHS, batch_size=32, seed=1)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = [i for b in sampler for i in b]
        assert sorted(seen) == list(range(1000))


def padding_share(batches: list[list[int]]) -> float:
    real = sum(LENGTHS[i] for b in batches for i in b)
    return 1 - real / sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)


def test_length_buckets_are_tight_shuffled_and_reproducible() -> None:
    sampler = length_buckets(LENGTHS, batch_size=32, seed=1)
    sampler.set_epoch(0)
    first = sampler.batches()
    assert padding_share(first) < 0.05
    randomized = random(LENGTHS, batch_size=32, seed=1)
    assert padding_share(randomized.batches()) > 0.3
    sampler.set_epoch(1)
    assert sampler.batches() != first  # order changes between epochs
    again = length_buckets(LENGTHS, batch_size=32, seed=1)
    again.set_epoch(1)
    assert again.batches() == sampler.batches()  # and is reproducible under the seed
    guide = sorted_batches(LENGTHS, batch_size=32)
    guide.set_epoch(0)
    e0 = guide.batches()
    guide.set_epoch(1)
    assert guide.batches() == e0  # the guide's sort-once: same batches every epoch


def test_drop_last_and_resume_position() -> None:
    sampler = length_buckets(LENGTHS, batch_size=64, drop_last=True)
    sampler.set_epoch(0)
    assert all(len(b) == 64 for b in sampler) and len(sampler) == 1000 // 64
    full = list(sampler)
    sampler.set_epoch(0, start=5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5


def test_shards_cover_the_data_once_with_equal_batch_counts() -> None:
    for make in (random, length_buckets):
        shards = []
        for rank in range(3):
            s = make(LENGTHS, batch_size=16, seed=2, rank=rank, world_size=3)
            s.set_epoch(4)
            shards.append(s.batches())
        assert len({len(s) for s in shards}) == 1
        seen = [i for shard in shards for b in shard for i in b]
        assert sorted(seen) == list(range(1000))


# ---------------------------------------------------------------- rows read right or refused

def test_a_bom_is_dropped_from_the_header(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_text("\ufefftext,label\ngood,pos\nbad,neg\n", encoding="utf-8")
    assert text_csv(str(tmp_path / "bom.csv")).texts == ["good", "bad"]


@pytest.mark.parametrize(("content", "message"), [
    ("text,label\ngood,pos\nbad\n", "line 3: 1 field\\(s\\) where the header has 2"),
    ("text,label\ngood,pos\nbad, really,neg\n", "line 3: 3 field\\(s\\)"),
    ("text,label\ngood,pos\n\nok, \n", "1 row\\(s\\) have an empty label, the first at line 4"),
])
def test_rows_that_do_not_fit_the_header_name_their_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "f.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        text_csv(str(tmp_path / "f.csv"))


@pytest.mark.parametrize(("line", "message"), [
    ('{"label": "neg"}', "line 2 has no text; it has label"),
    ('{"text": "x", "label": null}', "line 2 has no label"),
    ('["x", "neg"]', "line 2 is a JSON list"),
    ("{not json", "line 2 is not JSON"),
])
def test_json_lines_without_a_column_name_their_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "f.jsonl").write_text('{"text": "a", "label": "pos"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        text_csv(str(tmp_path / "f.jsonl"))


def test_long_fields_are_read_up_to_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long = "word " * 200_000  # a megabyte: over the csv module's own limit of 131072
    (tmp_path / "f.csv").write_text(f"text,label\n{long},pos\nshort,neg\n")
    assert len(text_csv(str(tmp_path / "f.csv")).texts[0]) == len(long)
    before = csv.field_size_limit()
    monkeypatch.setattr(text_module, "MAX_FIELD_CHARS", 1000)
    with pytest.raises(DataError, match="line 2: a field is longer than 1,000 characters"):
        text_csv(str(tmp_path / "f.csv"))
    (tmp_path / "f.jsonl").write_text(json.dumps({"text": long, "label": "pos"}) + "\n")
    with pytest.raises(DataError, match="line 1 has a field longer than 1,000"):
        text_csv(str(tmp_path / "f.jsonl"))
    assert csv.field_size_limit() == before  # the process-wide setting is put back


def test_a_text_in_json_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    (tmp_path / "f.jsonl").write_text(json.dumps({"text": "a\u2028b", "label": "pos"}, ensure_ascii=False) + "\n")
    assert text_csv(str(tmp_path / "f.jsonl")).texts == ["a\u2028b"]


def test_home_is_expanded_in_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "f.csv").write_text("text,label\na,pos\n")
    assert text_csv("~/f.csv").raw_labels == ["pos"]
