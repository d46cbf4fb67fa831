"""`key=value` and JSON/TOML overrides of nested config dataclasses: dotted keys, literal values, never executed.

Every trainer's config is a tree of dataclasses (dicts of component kwargs at the leaves); these apply changes
to it key by key, checking that each key exists and each value fits the type it replaces.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad override: unknown key, wrong type or unreadable override file."""


def _parse_value(text: str) -> Any:
    """`key=value` right-hand side: a Python/JSON literal if it parses, else the plain string."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(old: Any, new: Any, key: str, source: str) -> Any:
    """Check that `new` fits the type of the current value `old` (int -> float and list <-> tuple allowed)."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) != isinstance(new, bool):
        raise ConfigError(f"{source}: {key} expects {type(old).__name__}, got {new!r}")
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(new)
    if not isinstance(new, type(old)):
        raise ConfigError(f"{source}: {key} expects {type(old).__name__}, got {new!r}")
    return copy.deepcopy(new)


def set_key(config: Any, dotted: str, value: Any, source: str = "override") -> None:
    """Set one dotted key (`transformer.num_layers`, `encoder.text.hidden_size`); unknown keys are errors."""
    parts = dotted.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if dataclasses.is_dataclass(node):
            names = [f.name for f in dataclasses.fields(node)]
            if part not in names:
                raise ConfigError(f"{source}: unknown config key {where!r} (known here: {', '.join(names)})")
            if last:
                setattr(node, part, _coerce(getattr(node, part), value, where, source))
            else:
                node = getattr(node, part)
        elif isinstance(node, dict):
            if last:  # dicts of component kwargs accept new keys; the component validates them when built
                node[part] = _coerce(node.get(part), value, where, source)
            elif part in node:
                node = node[part]
            else:
                raise ConfigError(f"{source}: unknown config key {where!r}")
        else:
            raise ConfigError(f"{source}: {'.'.join(parts[:depth])} is a value, not a section, in {dotted!r}")


def apply_nested(config: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    """Apply a nested mapping (from JSON/TOML or `to_dict`) key by key."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        target = _lookup(config, dotted, source)
        if isinstance(value, dict) and dataclasses.is_dataclass(target):
            apply_nested(config, value, source, prefix=dotted + ".")
        else:
            set_key(config, dotted, value, source)


def _lookup(config: Any, dotted: str, source: str) -> Any:
    node = config
    for part in dotted.split("."):
        if dataclasses.is_dataclass(node):
            if part not in {f.name for f in dataclasses.fields(node)}:
                raise ConfigError(f"{source}: unknown config key {dotted!r}")
            node = getattr(node, part)
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Apply `key=value` strings in order (nanoGPT style, values parsed as literals, never executed)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, text = (part.strip() for part in item.split("=", 1))
        value = _parse_value(text)
        if isinstance(_lookup(config, key, f"override {item!r}"), str) and not isinstance(value, str):
            value = text  # a string setting takes the text as written: shortcut=none is "none", not None
        set_key(config, key, value, source=f"override {item!r}")
    return config


def load_override_file(config: Any, path: str | Path) -> Any:
    """Apply a JSON or TOML file of (nested) overrides."""
    import tomllib  # Python >= 3.11; only TOML files need it

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: override file not found") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot parse overrides: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: overrides must be a mapping, got {type(data).__name__}")
    apply_nested(config, data, source=str(path))
    return config


def dotted_items(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(`section.key`, value) for every leaf of a nested configuration dict, in order."""
    items = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            items += dotted_items(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items
