"""Shell completion of registry names, for Typer's `autocompletion=`.

A shell asks at each TAB, so these import as little as they can: the kinds come from the
registry module alone (no torch); a registry's names fill it, which imports torch.
"""

from __future__ import annotations

import typer


def complete_kind(incomplete: str) -> list[str]:
    """Shell completion of `guide list KIND`: the registries' kinds (the registry module alone, no torch)."""
    from torchguide.registry import REGISTRIES

    return [kind for kind in REGISTRIES if kind.startswith(incomplete)]


def complete_name(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of `guide list KIND FILTER`: the names in that registry (filling it imports torch)."""
    return registry_names(ctx.params.get("kind") or "", incomplete)


def complete_layer(incomplete: str) -> list[str]:
    """Shell completion of `guide inspect-layer NAME`."""
    return registry_names("layers", incomplete)


def registry_names(kind: str, incomplete: str) -> list[str]:
    """The names of registry `kind` that start with `incomplete`, in any case ([] for an unknown kind)."""
    from torchguide.registry import REGISTRIES

    registry = REGISTRIES.get(kind)
    return [n for n in registry.names() if n.lower().startswith(incomplete.lower())] if registry else []
