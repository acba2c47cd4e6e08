"""Layers: the guide's custom linear layer, every `torch.nn` layer by name, and the
catalogue of sensible bare arguments that `guide inspect-layer NAME` uses.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from torchguide.registry import LAYERS

# Containers and bases are not layers you can inspect on their own.
NOT_LAYERS = {"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList",
              "ParameterDict", "Container"}


ACRONYMS = {"PReLU": "Prelu", "RReLU": "Rrelu", "ReLU": "Relu", "SiLU": "Silu", "GELU": "Gelu",
            "CELU": "Celu", "SELU": "Selu", "GLU": "Glu", "LPPool": "LpPool"}


def snake_case(name: str) -> str:
    """`MaxPool2d` -> `max_pool2d`, `LSTM` -> `lstm`, `LeakyReLU` -> `leaky_relu`, `NLLLoss` -> `nll_loss`."""
    for acronym, word in ACRONYMS.items():
        name = name.replace(acronym, word)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@LAYERS.register("custom_linear", aliases=["my_custom_linear_layer", "myCustomLinearLayer"])
class CustomLinear(nn.Module):
    """The guide's linear layer written by hand: y = x W + b with `nn.Parameter` weights.

    Parameters are initialised like `nn.Linear` (uniform in +-1/sqrt(in_features)),
    not with `torch.randn`, so deep stacks of it train as well as the built-in layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.weight
        return out + self.bias if self.bias is not None else out


def register_torch_layers() -> None:
    """Register every layer class `torch.nn` exports, under its snake_case name."""
    loss_base = nn.modules.loss._Loss
    for cls_name in sorted(dir(nn)):
        cls = getattr(nn, cls_name)
        if (not isinstance(cls, type) or not issubclass(cls, nn.Module)
                or cls_name in NOT_LAYERS or issubclass(cls, loss_base) or cls_name.startswith("_")):
            continue
        LAYERS.register(snake_case(cls_name), cls, aliases=[cls_name])


register_torch_layers()

# name -> (constructor kwargs, input shape) for a bare `guide inspect-layer NAME`.
IMAGE = (8, 3, 32, 32)
SEQ = (8, 20, 32)
CATALOGUE: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "conv1d": ({"in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1}, (8, 3, 64)),
    "conv2d": ({"in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1}, IMAGE),
    "conv3d": ({"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}, (2, 3, 8, 16, 16)),
    "conv_transpose2d": ({"in_channels": 16, "out_channels": 3, "kernel_size": 2, "stride": 2},
                         (8, 16, 16, 16)),
    "linear": ({"in_features": 784, "out_features": 10}, (8, 784)),
    "bilinear": ({"in1_features": 16, "in2_features": 16, "out_features": 4}, (8, 16)),
    "custom_linear": ({"in_features": 784, "out_features": 10}, (8, 784)),
    "max_pool1d": ({"kernel_size": 2}, (8, 3, 64)),
    "max_pool2d": ({"kernel_size": 2}, IMAGE),
    "avg_pool2d": ({"kernel_size": 2}, IMAGE),
    "adaptive_avg_pool2d": ({"output_size": 1}, IMAGE),
    "adaptive_max_pool2d": ({"output_size": 1}, IMAGE),
    "batch_norm1d": ({"num_features": 16}, (8, 16)),
    "batch_norm2d": ({"num_features": 3}, IMAGE),
    "layer_norm": ({"normalized_shape": 32}, SEQ),
    "group_norm": ({"num_groups": 1, "num_channels": 3}, IMAGE),
    "instance_norm2d": ({"num_features": 3}, IMAGE),
    "dropout": ({"p": 0.5}, (8, 16)),
    "dropout2d": ({"p": 0.5}, IMAGE),
    "embedding": ({"num_embeddings": 1000, "embedding_dim": 32}, (8, 20)),
    "embedding_bag": ({"num_embeddings": 1000, "embedding_dim": 32, "mode": "mean"}, (8, 20)),
    "lstm": ({"input_size": 32, "hidden_size": 64, "batch_first": True}, SEQ),
    "gru": ({"input_size": 32, "hidden_size": 64, "batch_first": True}, SEQ),
    "rnn": ({"input_size": 32, "hidden_size": 64, "batch_first": True}, SEQ),
    "lstm_cell": ({"input_size": 32, "hidden_size": 64}, (8, 32)),
    "gru_cell": ({"input_size": 32, "hidden_size": 64}, (8, 32)),
    "multihead_attention": ({"embed_dim": 32, "num_heads": 4, "batch_first": True}, SEQ),
    "transformer_encoder_layer": ({"d_model": 32, "nhead": 4, "batch_first": True}, SEQ),
    "transformer_decoder_layer": ({"d_model": 32, "nhead": 4, "batch_first": True}, SEQ),
    "softmax": ({"dim": -1}, (8, 10)),
    "log_softmax": ({"dim": -1}, (8, 10)),
    "relu": ({}, (8, 16)),
    "gelu": ({}, (8, 16)),
    "sigmoid": ({}, (8, 16)),
    "tanh": ({}, (8, 16)),
    "leaky_relu": ({"negative_slope": 0.01}, (8, 16)),
    "flatten": ({}, IMAGE),
    "unflatten": ({"dim": 1, "unflattened_size": (4, 4)}, (8, 16)),
    "identity": ({}, (8, 16)),
    "upsample": ({"scale_factor": 2, "mode": "nearest"}, IMAGE),
    "pixel_shuffle": ({"upscale_factor": 2}, (8, 12, 16, 16)),
    "zero_pad2d": ({"padding": 1}, IMAGE),
    "cosine_similarity": ({"dim": 1}, (8, 16)),
}

# Layers whose forward takes the same tensor more than once (query, key, value ...).
REPEAT_INPUT = {"multihead_attention": 3, "bilinear": 2, "cosine_similarity": 2,
                "pairwise_distance": 2, "transformer_decoder_layer": 2, "transformer": 2}
