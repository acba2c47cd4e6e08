"""Measurements kept between runs in the user's cache folder: one small JSON file per kind.

What guide measures once per machine (the matmul peak) or once per model and input
shape (the `auto` choices of precision, memory layout and compile) is stored here, so
a second run starts without measuring again. The folder is `GUIDE_CACHE_DIR` when set,
else `$XDG_CACHE_HOME/torchguide`, else `~/.cache/torchguide`. A cache that cannot be
read or written is treated as empty: it only saves time, it never decides an outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

import torch

from torchguide.errors import RunFailed
from torchguide.files import make_folder, write_text_atomic

CACHE_ENV = "GUIDE_CACHE_DIR"


def cache_dir() -> Path:
    """The folder guide keeps its measurements in (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "torchguide"


@cache
def cpu_identity() -> str:
    """The CPU's model name and its flags: two machines differ here when their speeds may differ."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return f"{model} [{hashlib.sha1(flags.encode()).hexdigest()[:10]}]"


def machine_key(device: torch.device, threads: int) -> str:
    """What a speed measurement depends on besides the work: the device, its name, threads, torch."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        where = f"{cpu_identity()} x{threads} threads"
    else:
        where = device.type
    return f"{device.type}: {where}; torch {torch.__version__}"


def read(kind: str) -> dict[str, Any]:
    """All entries of one kind (empty when there is no cache or it cannot be read)."""
    try:
        data = json.loads((cache_dir() / f"{kind}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lookup(kind: str, key: str) -> Any:
    """One entry, or None."""
    return read(kind).get(key)


def store(kind: str, key: str, value: Any) -> bool:
    """Keep one entry (atomically, beside the others); False when the cache cannot be written."""
    entries = read(kind)
    entries[key] = value
    try:
        folder = make_folder(cache_dir())
        write_text_atomic(folder / f"{kind}.json", json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except (OSError, RunFailed):
        return False
    return True
