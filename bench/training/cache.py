"""On-disk cache of derived arrays (e.g. latents), keyed by the weights that made them and a JSON key."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.io import atomic_file, write_json


def cache_root() -> Path:
    """$BENCH_CACHE, else $GENMASK_CACHE (its older name, still honoured), else ~/.cache/genmask-bench."""
    root = os.environ.get("BENCH_CACHE") or os.environ.get("GENMASK_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "genmask-bench"


def weights_fingerprint(modules: Iterable[nn.Module]) -> str:
    """SHA-256 over every named tensor of the modules' state dicts: names, dtypes and raw bytes."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{data.dtype}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_arrays(names: list[str], key: dict[str, Any], build: Callable[[], dict[str, np.ndarray]],
                  modules: Iterable[nn.Module] = ()) -> dict[str, np.ndarray]:
    """The arrays `names` for (`modules`' weights, `key`) from CACHE/arrays/<digest>, or made by `build()` and
    stored there as .npy files (no pickle; each renamed into place once written, so readers never see half)."""
    record = {**key, "arrays": list(names)}
    digest = hashlib.sha256(weights_fingerprint(modules).encode())
    digest.update(json.dumps(record, sort_keys=True).encode())
    directory = cache_root() / "arrays" / digest.hexdigest()[:20]
    if all((directory / f"{name}.npy").exists() for name in names):
        return {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in names}
    arrays = build()
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "key.json", record, sort_keys=True)
    for name in names:
        with atomic_file(directory / f"{name}.npy") as handle:
            np.save(handle, arrays[name], allow_pickle=False)
    return {name: arrays[name] for name in names}
