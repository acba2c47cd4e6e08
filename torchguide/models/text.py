"""Text models. Each takes `(tokens, lengths)`: tokens (N, T) padded with `pad_index`,
lengths (N,) the true lengths, and returns (N, num_classes) outputs.

All of them ignore padding exactly: pooling uses the lengths, recurrent layers never
read padded positions, and the transformer masks them, so the same sequence gives the
same output whatever batch (and padding) it comes in, and a batch of one works.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchguide.registry import MODELS


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(N, T) True at real tokens, False at padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean_max(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and max over real time steps of (N, T, D), concatenated to (N, 2D)."""
    m = mask.unsqueeze(-1)
    mean = (h * m).sum(1) / m.sum(1).clamp(min=1)
    maxed = h.masked_fill(~m, torch.finfo(h.dtype).min).amax(1)
    return torch.cat([mean, maxed], dim=1)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first `length` steps, leaving padding at the end."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class RecurrentClassifier(nn.Module):
    """The guide's BiLSTM, made exact: embedding, bidirectional RNN, masked mean and max
    pooling concatenated, Linear, ReLU, dropout, output layer.

    The backward direction must start at each sequence's last real token, not at the
    padding. `pack=True` does that with packed sequences; `pack=False` (the default,
    faster on CPU, see benchmarks/) runs the backward RNN over each sequence reversed
    within its length, which gives the same result on padded tensors.
    """

    def __init__(self, cell: str, vocab_size: int, num_classes: int, embed_dim: int, hidden: int,
                 layers: int, head: int, dropout: float, pad_index: int, pack: bool) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.pack = pack
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_index)
        if pack:
            self.rnn = rnn(embed_dim, hidden, layers, batch_first=True, bidirectional=True)
        else:
            self.forward_rnn = rnn(embed_dim, hidden, layers, batch_first=True)
            self.backward_rnn = rnn(embed_dim, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden * 4, head)  # (mean, max) x (forward, backward)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(head, num_classes)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.pack:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
            return h
        forward, _ = self.forward_rnn(x)
        backward, _ = self.backward_rnn(reverse_within_length(x, lengths))
        return torch.cat([forward, reverse_within_length(backward, lengths)], dim=-1)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.encode(self.embedding(tokens), lengths)
        pooled = masked_mean_max(h, padding_mask(lengths, tokens.shape[1]))
        return self.out(self.dropout(self.relu(self.linear(pooled))))


@MODELS.register("bilstm", task="text")
def bilstm(vocab_size: int, num_classes: int, embed_dim: int = 128, hidden: int = 64, layers: int = 1,
           head: int = 64, dropout: float = 0.1, pad_index: int = 0, pack: bool = False) -> nn.Module:
    """The guide's BiLSTM classifier, exact under padding (see RecurrentClassifier)."""
    return RecurrentClassifier("lstm", vocab_size, num_classes, embed_dim, hidden, layers, head, dropout,
                               pad_index, pack)


@MODELS.register("gru", task="text")
def gru(vocab_size: int, num_classes: int, embed_dim: int = 128, hidden: int = 64, layers: int = 1,
        head: int = 64, dropout: float = 0.1, pad_index: int = 0, pack: bool = False) -> nn.Module:
    """The BiLSTM's structure with a bidirectional GRU."""
    return RecurrentClassifier("gru", vocab_size, num_classes, embed_dim, hidden, layers, head, dropout,
                               pad_index, pack)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class TransformerClassifier(nn.Module):
    """Embedding + sinusoidal positions, nn.TransformerEncoder with a padding mask, masked mean pool."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int, heads: int, layers: int, ff: int,
                 dropout: float, pad_index: int) -> None:
        super().__init__()
        self.dim = dim
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_index)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(lengths, tokens.shape[1])
        x = self.embedding(tokens) * math.sqrt(self.dim)
        x = x + sinusoidal_positions(tokens.shape[1], self.dim, tokens.device)
        h = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1)
        return self.out((h * m).sum(1) / m.sum(1).clamp(min=1))


@MODELS.register("transformer_encoder", task="text")
def transformer_encoder(vocab_size: int, num_classes: int, dim: int = 128, heads: int = 4, layers: int = 2,
                        ff: int = 256, dropout: float = 0.1, pad_index: int = 0) -> nn.Module:
    """A small transformer encoder classifier with a key padding mask."""
    return TransformerClassifier(vocab_size, num_classes, dim, heads, layers, ff, dropout, pad_index)


class EmbeddingBagClassifier(nn.Module):
    """Mean of token embeddings (nn.EmbeddingBag over the real tokens only), then a linear layer."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="mean")
        self.out = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        flat = tokens[padding_mask(lengths, tokens.shape[1])]
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
        return self.out(self.bag(flat, offsets))


@MODELS.register("embedding_bag", task="text")
def embedding_bag(vocab_size: int, num_classes: int, dim: int = 64) -> nn.Module:
    """A fast bag-of-embeddings baseline."""
    return EmbeddingBagClassifier(vocab_size, num_classes, dim)
