"""YAML configs: load, apply `key=value` overrides, validate everything at once.

A config is checked in two passes, and every problem of both is reported together,
each with its path (`optimizer.lr: ...`):

1. structure: known keys, types, ranges (the pydantic models of `schema`, unknown keys refused);
2. components: each `{name: ..., **kwargs}` section is looked up in its registry and
   its kwargs are checked against the builder's signature, before anything is built (`checks`).

Configs are read with a `yaml.SafeLoader` (no Python objects, `raw`); the only way a config runs
code is `imports:`, which imports the named modules or files so their decorators register
components (`user_code`). `load_config` (`load`) does it all; the names below are the ones the
rest of guide uses.
"""

from torchguide.config.load import load_config
from torchguide.config.raw import apply_overrides, parse_value, read_yaml
from torchguide.config.schema import (
    BatchTransform,
    Component,
    Config,
    OptimizerSection,
    ParamGroup,
    format_validation,
    to_yaml,
)

__all__ = [
    "BatchTransform",
    "Component",
    "Config",
    "OptimizerSection",
    "ParamGroup",
    "apply_overrides",
    "format_validation",
    "load_config",
    "parse_value",
    "read_yaml",
    "to_yaml",
]
