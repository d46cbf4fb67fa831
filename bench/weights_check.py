"""A checkpoint's configuration checked against its weights before anything is allocated.

A configuration names sizes (layers, widths) that decide how much memory building the model takes; a hostile or
damaged one (`num_layers = 100000`) would allocate gigabytes before loading found the weights do not fit. Here
the configuration is read size-limited, its layer counts are compared with the layers the weights hold (from the
safetensors headers, nothing else read), and the model is built on the meta device (no memory) to compare its
parameter count with the weights' before the real build.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.errors import DataFormatError
from bench.io import SMALL_JSON_LIMIT, open_binary, parse_json, read_json

LAYER_KEYS = frozenset({"num_layers", "num_hidden_layers", "depth", "num_blocks", "num_res_blocks"})
MAX_LAYERS = 1024  # a layer count no configuration exceeds, where the weights name no layers to compare with
HEADER_LIMIT = 100 << 20  # bytes of a safetensors header
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)\.")


class CheckpointConfigError(DataFormatError):
    """A checkpoint configuration that does not fit its weights (or is malformed); names the file."""


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (its length and JSON only)."""
    with open_binary(path) as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointConfigError(f"{path}: too short for a safetensors file (truncated?)")
        (length,) = struct.unpack("<Q", prefix)
        if length > HEADER_LIMIT:
            raise CheckpointConfigError(f"{path}: a safetensors header of {length} bytes; refused")
        header = parse_json(handle.read(length), path)
    if not isinstance(header, dict):
        raise CheckpointConfigError(f"{path}: the safetensors header is not a JSON object")
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CheckpointConfigError(f"{path}: tensor {name!r} has no valid shape in the header")
        shapes[name] = shape
    return shapes


def layers_held(names: Iterable[str]) -> int | None:
    """1 + the largest `blocks.N.` / `layers.N.` index among tensor names; None when none is indexed."""
    indices = [int(match.group(1)) for name in names for match in _LAYER_INDEX.finditer(name)]
    return max(indices) + 1 if indices else None


def check_layer_counts(config: Any, shapes: dict[str, list[int]], source: str | Path) -> None:
    """Every layer count in `config` (any depth) is an integer no larger than the layers the weights hold."""
    limit = layers_held(shapes) or MAX_LAYERS
    for key, value in _items(config):
        if key in LAYER_KEYS and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit):
            raise CheckpointConfigError(f"{source}: {key} = {str(value)[:40]}, but the weights hold {limit} layers")


def check_parameter_count(build: Callable[[], Any], shapes: dict[str, list[int]], source: str | Path) -> None:
    """The model `build()` makes on the meta device has no more parameters than the weights hold."""
    import torch

    try:
        with torch.device("meta"):
            declared = sum(parameter.numel() for parameter in build().parameters())
    except Exception as exc:  # noqa: BLE001 - a hostile config makes libraries raise anything
        raise CheckpointConfigError(f"{source}: not a usable configuration ({type(exc).__name__}: "
                                    f"{str(exc)[:200]})") from None
    held = sum(math.prod(shape) for shape in shapes.values())
    if declared > held:
        raise CheckpointConfigError(f"{source}: declares a model of {declared} parameters, but its weights hold "
                                    f"{held}")


def check_checkpoint(directory: str | Path, build: Callable[[dict[str, Any]], Any],
                     config_name: str = "config.json") -> None:
    """`directory`'s configuration (a JSON object) checked against its *.safetensors weights: layer counts, then
    the parameter count of `build(config)` on the meta device."""
    directory = Path(directory)
    source = directory / config_name
    config = read_json(source, SMALL_JSON_LIMIT)
    if not isinstance(config, dict):
        raise CheckpointConfigError(f"{source}: expected a JSON object")
    shapes: dict[str, list[int]] = {}
    for weights in sorted(directory.glob("*.safetensors")):
        shapes.update(safetensors_shapes(weights))
    if not shapes:
        raise CheckpointConfigError(f"{directory}: no *.safetensors weights beside {config_name}")
    check_layer_counts(config, shapes, source)
    check_parameter_count(lambda: build(config), shapes, source)


def _items(value: Any, depth: int = 0) -> Iterable[tuple[str, Any]]:
    """(key, value) of every entry of nested dicts and lists (32 levels at most)."""
    if depth > 32:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key), item
            yield from _items(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _items(item, depth + 1)
