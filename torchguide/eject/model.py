"""The model of an ejected script: guide's own as its source, torchvision's by its call, yours
from your file; then pretrained weights and frozen layers where the config has them."""

from __future__ import annotations

import inspect
from typing import Any

from torchguide.data.loaders import supply
from torchguide.eject import blocks
from torchguide.eject.plan import Facts, Script, component, kw, script_path
from torchguide.eject.source import literal
from torchguide.registry import MODELS


def write_model(script: Script, facts: Facts) -> None:
    """The model's definition (a section) and main()'s lines that build it, after the data."""
    cfg = facts.config
    entry = MODELS.entry(cfg.model.name)
    if entry.meta.get("source") == "torchvision":
        script.imports.module("torchvision")
        build = torchvision_call(entry.name, facts)
        extra = weights_lines(script, facts, entry)
        what = f"torchvision's {entry.name}"
    else:
        builder = component(script, entry.obj, "")
        taken = supply(MODELS, cfg.model.name, facts.data.model_facts(facts.outputs))
        build = f"{builder}({', '.join([*(f'{k}={fact_code(k, facts)}' for k in taken), *kw(cfg.model.kwargs)])})"
        extra = []
        what = entry.name + (", torchguide's code" if entry.obj.__module__.startswith("torchguide") else
                             ", your code")
    if facts.task == "image":
        lines = ["", "    # the model; one training sample gives it the size of its input (guide reads this sample",
                 "    # too, so the random stream that initialises the weights lines up)",
                 "    sample, _ = train_set[0]"]
    else:
        lines = ["", "    # the model, for the vocabulary's size"]
    extra += freeze_lines(script, facts)
    if extra:
        lines += [f"    model = {build}", *extra, "    model = model.to(DEVICE)"]
    else:
        lines.append(f"    model = {build}.to(DEVICE)")
    script.section(f"the model: {what}")
    script.model_lines = lines + speed_lines(facts)


def speed_lines(facts: Facts) -> list[str]:
    """train.channels_last and train.compile: as configured; `auto`, which guide decides by timing the
    first steps, stays the plain model here, with a comment that says how to turn each on."""
    train, lines, auto = facts.config.train, [], []
    if train.channels_last is True:
        lines.append("    model = model.to(memory_format=torch.channels_last)  # train.channels_last")
    elif train.channels_last == "auto" and facts.task == "image":
        auto.append(("train.channels_last", "model = model.to(memory_format=torch.channels_last)"))
    if train.compile is True:
        lines.append("    model.compile()  # train.compile: compiled on its first batch")
    elif train.compile == "auto":
        auto.append(("train.compile", "model.compile()"))
    if auto:
        keys, code = " and ".join(k for k, _ in auto), "; ".join(c for _, c in auto)
        lines.append(f"    # {keys} auto: guide times {'them' if len(auto) > 1 else 'it'} on the first batches; "
                     f"to turn on here: {code}")
    return lines


def fact_code(name: str, facts: Facts) -> str:
    """The script's expression for a runtime fact a model builder takes."""
    if name == "num_classes":
        return "len(classes)" if facts.outputs == facts.data.num_classes else str(facts.outputs)
    shape = facts.data.input_shape or []
    square = len(shape) >= 3 and shape[-1] == shape[-2]
    return {"in_channels": "sample.shape[0]", "in_features": "sample.numel()", "vocab_size": "vocab_size",
            "pad_index": "0", "image_size": "sample.shape[-1]" if square else "tuple(sample.shape[-2:])"}[name]


def torchvision_call(arch: str, facts: Facts) -> str:
    """torchvision.models.get_model(...) as guide's torchvision builder calls it: random init, the data's
    class count (and image size, for the architectures that take it), guide's defaults, the config's options."""
    import torchvision

    from torchguide.models.image import SIZE_ARGUMENTS, TORCHVISION_DEFAULTS, class_options, torchvision_image_size

    cls = inspect.signature(torchvision.models.get_model_builder(arch)).return_annotation
    options = class_options(cls)
    filled = {}
    size_argument = next((a for a in SIZE_ARGUMENTS if a in inspect.signature(cls.__init__).parameters), None)
    if size_argument:
        filled[size_argument] = torchvision_image_size(arch, size_argument, facts.data.image_size)
    filled.update({k: v for k, v in TORCHVISION_DEFAULTS.items() if k in options})
    filled.update({k: v for k, v in facts.config.model.kwargs.items() if k != "weights"})
    parts = [literal(arch), "weights=None", f"num_classes={fact_code('num_classes', facts)}", *kw(filled)]
    return f"torchvision.models.get_model({', '.join(parts)})"


def weights_lines(script: Script, facts: Facts, entry: Any) -> list[str]:
    """model.weights: torchvision's pretrained weights (by name) or a state dict file, loaded where they fit."""
    weights = facts.config.model.kwargs.get("weights")
    if not weights:
        return []
    from torchguide.models.image import find_weights

    script.add(blocks.LOAD_MATCHING)
    found = find_weights(entry.name, weights)
    if found is not None:
        return [f"    # model.weights {weights}: torchvision's {found} (torch.hub's cache, downloaded once); building",
                "    # them initialises a second model first, as guide does",
                f"    load_matching(model, torchvision.models.get_model({literal(entry.name)}, "
                f"weights={literal(found.name)}).state_dict())"]
    return [f"    state = torch.load({literal(script_path(weights))}, map_location=\"cpu\", weights_only=True)"
            "  # model.weights",
            "    load_matching(model, state.get(\"model\", state))  # a guide checkpoint holds its weights in `model`"]


def freeze_lines(script: Script, facts: Facts) -> list[str]:
    """model.freeze: guide's own fix for frozen BatchNorms, and the call that freezes."""
    patterns = facts.config.model.freeze
    if not patterns:
        return []
    from torchguide.params import fix_frozen_batchnorms

    script.imports.name("fnmatch", "fnmatchcase")
    script.sources.define(fix_frozen_batchnorms)
    script.add(blocks.FREEZE)
    return [f"    freeze(model, {literal(patterns)})  # model.freeze"]
