"""Layer inspection: build a layer by name, feed it random input, explain the shapes.

This is the guide's way of learning a layer (`nn.Conv2d(3, 64, 3)(torch.randn(100, 3,
24, 24)).shape`), with the questions a learner asks answered on the way: which
arguments were used, what the output shapes and dtypes are, how many parameters of
which shape it has, how many FLOPs a forward pass costs, and what the docs say. A wrong
input shape is explained in terms of what the layer expects.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchguide.errors import ConfigError, GuideError
from torchguide.layers import CATALOGUE, REPEAT_INPUT
from torchguide.registry import LAYERS, one_line

OUTPUT_NAMES = {"lstm": ["output", "h_n", "c_n"], "gru": ["output", "h_n"], "rnn": ["output", "h_n"],
                "lstm_cell": ["h_1", "c_1"], "multihead_attention": ["attn_output", "attn_weights"]}
INTEGER_INPUT = {"embedding", "embedding_bag"}


def parse_shape(text: str) -> tuple[int, ...]:
    """'100,3,24,24' (or 100x3x24x24) -> (100, 3, 24, 24)."""
    parts = [p for p in re.split(r"[,\s]+|(?<=\d)x(?=\d)", text.strip().strip("()[]")) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise GuideError(f"--input-shape {text!r}: write positive sizes separated by commas, e.g. 100,3,24,24")
    return tuple(int(p) for p in parts)


def pick_arguments(name: str, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Constructor arguments: the given ones, plus the catalogue's for required ones left out.

    With no arguments at all the catalogue's whole set is used. Returns (kwargs, picked names).
    """
    known, _ = CATALOGUE.get(name, ({}, None))
    if not given:
        return dict(known), list(known)
    sig = LAYERS.signature(name)
    required = [n for n, p in (sig.parameters.items() if sig else [])
                if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
                and p.kind is not p.VAR_POSITIONAL]
    picked = [n for n in required if n not in given and n in known]
    return {**{n: known[n] for n in picked}, **given}, picked


def guess_input_shape(name: str, kwargs: dict[str, Any]) -> tuple[int, ...]:
    """A plausible input shape from the catalogue, or from the layer's size arguments."""
    if name in CATALOGUE and all(kwargs.get(k) == v for k, v in CATALOGUE[name][0].items()
                                 if k in ("in_channels", "in_features", "num_features", "input_size",
                                          "embed_dim", "d_model", "normalized_shape")):
        return CATALOGUE[name][1]
    dims = 3 if name.endswith("3d") else 2 if name.endswith("2d") else 1 if name.endswith("1d") else 0
    spatial = {1: (64,), 2: (32, 32), 3: (8, 16, 16)}.get(dims, ())
    for key in ("in_channels", "num_features", "num_channels"):
        if key in kwargs and dims:
            return (8, int(kwargs[key]), *spatial)
    if "in_features" in kwargs or "in1_features" in kwargs:
        return (8, int(kwargs.get("in_features", kwargs.get("in1_features"))))
    for key in ("input_size", "embed_dim", "d_model"):
        if key in kwargs:
            return (8, 20, int(kwargs[key])) if kwargs.get("batch_first") else (20, 8, int(kwargs[key]))
    if "normalized_shape" in kwargs:
        shape = kwargs["normalized_shape"]
        return (8, *(shape if isinstance(shape, list | tuple) else [shape]))
    if name in INTEGER_INPUT:
        return (8, 20)
    return (8, 3, 32, 32) if dims == 2 else (8, 16)


def expectation(name: str, layer: nn.Module) -> str | None:
    """What input a layer expects, in words, for a shape error."""
    m = re.match(r"(conv|conv_transpose|max_pool|avg_pool|batch_norm|instance_norm|adaptive_avg_pool"
                 r"|adaptive_max_pool|dropout)(\d)d$", name)
    spatial = {"1": "L", "2": "H, W", "3": "D, H, W"}
    if m:
        dims = spatial[m.group(2)]
        channels = getattr(layer, "in_channels", None) or getattr(layer, "num_features", None)
        c = f"C={channels}" if channels else "C"
        if m.group(1) == "batch_norm":
            return f"(N, {c}, {dims})"
        return f"(N, {c}, {dims}) or ({c}, {dims})"
    if isinstance(layer, nn.Linear | nn.LazyLinear):
        return f"(*, {layer.in_features}) (last dimension = in_features)"
    if isinstance(layer, nn.RNNBase):
        seq = "(N, T, {})" if layer.batch_first else "(T, N, {})"
        return seq.format(f"input_size={layer.input_size}") + " or unbatched (T, input_size)"
    if isinstance(layer, nn.Embedding | nn.EmbeddingBag):
        return f"integer indices in [0, {layer.num_embeddings})"
    if isinstance(layer, nn.LayerNorm):
        return f"(*, {', '.join(map(str, layer.normalized_shape))}) (last dims = normalized_shape)"
    if isinstance(layer, nn.MultiheadAttention):
        return f"(N, T, E={layer.embed_dim})" if layer.batch_first else f"(T, N, E={layer.embed_dim})"
    return None


def random_input(name: str, layer: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    if name in INTEGER_INPUT:
        return torch.randint(0, layer.num_embeddings, shape)
    return torch.randn(shape)


def call_string(cls: type, kwargs: dict[str, Any]) -> str:
    module = "nn" if cls.__module__.startswith("torch.nn") else cls.__module__
    return f"{module}.{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def flatten_outputs(out: Any, names: list[str] | None) -> list[dict[str, Any]]:
    leaves: list[tuple[str, torch.Tensor | None]] = []

    def walk(x: Any, path: str) -> None:
        if isinstance(x, torch.Tensor) or x is None:
            leaves.append((path, x))
        elif isinstance(x, tuple | list):
            for i, item in enumerate(x):
                walk(item, f"{path}[{i}]")

    walk(out, "output")
    if names and len(names) == len(leaves):
        leaves = [(n, t) for n, (_, t) in zip(names, leaves, strict=True)]
    return [{"name": n, "shape": list(t.shape) if t is not None else None,
             "dtype": str(t.dtype).removeprefix("torch.") if t is not None else None} for n, t in leaves]


def doc_paragraph(cls: type) -> str:
    """The first prose paragraph of a class's docstring (some start with a signature line)."""
    doc = inspect.getdoc(cls) or ""
    for paragraph in doc.strip().split("\n\n"):
        if paragraph.strip() and not paragraph.lstrip().startswith("__init__("):
            return " ".join(paragraph.split())
    return ""


def inspect_layer(name: str, given: dict[str, Any] | None = None,
                  input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Build layer `name`, run random input through it and describe what happened.

    Raises ConfigError for an unknown name or a bad argument, GuideError for an input
    the layer cannot take (with what it expects).
    """
    entry = LAYERS.entry(name)
    key = entry.name
    kwargs, picked = pick_arguments(key, dict(given or {}))
    problems = LAYERS.check_kwargs(key, kwargs)
    if problems:
        raise ConfigError([f"{key} {p}" for p in problems])
    layer = LAYERS.build(key, **kwargs)
    shape = input_shape or guess_input_shape(key, kwargs)
    x = random_input(key, layer, shape)
    inputs = (x,) * REPEAT_INPUT.get(key, 1)
    layer.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = layer(*inputs)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        expected = expectation(key, layer)
        got = f"got {len(shape)} dims {list(shape)}"
        hint = f"{key} expects {expected}; {got}" if expected else f"{key} cannot take input {list(shape)}"
        raise GuideError(f"{hint} ({one_line(exc)[:200]})", "change --input-shape") from exc
    params = [{"name": n, "shape": list(p.shape), "count": p.numel()}
              for n, p in layer.named_parameters() if p.requires_grad]
    return {
        "layer": key,
        "call": call_string(type(layer), kwargs),
        "picked": picked,
        "input": {"shape": list(shape), "dtype": str(x.dtype).removeprefix("torch."),
                  "picked": input_shape is None},
        "outputs": flatten_outputs(out, OUTPUT_NAMES.get(key)),
        "parameters": params,
        "trainable": sum(p["count"] for p in params),
        "flops": int(counter.get_total_flops()) or None,
        "doc": doc_paragraph(type(layer)),
    }


# ---------------------------------------------------------------- whole models

def inspect_model(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """One forward pass with hooks: per layer name, type, output shape, parameters and FLOPs.

    A layer that cannot take what reaches it is a GuideError naming the layer and both
    shapes (what it expects, what it got), with the usual fix.
    """
    leaves = {m: name for name, m in model.named_modules() if name and not list(m.children())}
    started: list[tuple[str, nn.Module, tuple[Any, ...]]] = []
    rows: dict[str, dict[str, Any]] = {}

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        started.append((leaves[module], module, args))

    def after(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        started.pop()
        name = leaves[module]
        shapes = [o["shape"] for o in flatten_outputs(output, None) if o["shape"] is not None]
        if name not in rows:  # a layer used twice (the guide's crazy network) is listed once
            own = sum(p.numel() for p in module.parameters(recurse=False))
            rows[name] = {"name": name, "type": type(module).__name__,
                          "output": shapes[0] if len(shapes) == 1 else shapes, "parameters": own, "calls": 0}
        rows[name]["calls"] += 1

    hooks = [h for m in leaves for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        if not started:
            raise GuideError(f"the model fails on inputs {[list(t.shape) for t in inputs]}: {one_line(exc)}") from exc
        name, module, args = started[-1]
        raise GuideError(*layer_mismatch(name, module, args, exc)) from exc
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    prefix = type(model).__name__
    for row in rows.values():
        row["flops"] = int(sum(flops.get(f"{prefix}.{row['name']}", {}).values()))
    params = list(model.parameters())
    size = sum(t.numel() * t.element_size() for t in [*params, *model.buffers()])
    batch = inputs[0].shape[0]
    return {"layers": list(rows.values()), "parameters": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad), "size_mb": size / 2**20,
            "flops": int(counter.get_total_flops()), "batch": batch,
            "input": [list(t.shape) for t in inputs]}


def layer_mismatch(name: str, module: nn.Module, args: tuple[Any, ...], exc: Exception) -> tuple[str, str]:
    """(message, fix) for the layer where a forward pass broke, in the layer's own terms."""
    x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    shape = list(x.shape) if x is not None else []
    kind = type(module).__name__
    if isinstance(module, nn.Linear) and x is not None:
        per_sample = x[0].numel() if x.dim() > 1 else x.numel()
        if x.dim() > 2 and per_sample == module.in_features:
            return (f"{name} ({kind}) expects {module.in_features} features, got {shape[-1]} (input {shape}): "
                    f"the {'*'.join(map(str, shape[1:]))}={per_sample} values of a sample are not flattened",
                    "add nn.Flatten() before it")
        got = f"{'*'.join(map(str, shape[1:]))}={per_sample}" if x.dim() > 2 else str(shape[-1])
        return (f"{name} ({kind}) expects {module.in_features} features, got {got} (input {shape})",
                "add a flatten or change in_features")
    if isinstance(module, nn.modules.conv._ConvNd) and x is not None:
        return (f"{name} ({kind}) expects {module.in_channels} input channels, got input {shape}",
                f"give it (N, {module.in_channels}, ...) or change in_channels")
    return f"{name} ({kind}) fails on input {shape}: {one_line(exc)[:200]}", "check the shapes before this layer"
