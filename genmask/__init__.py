"""GenMask: a Diffusion Transformer that segments by generating the mask (see genmask/model.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["GenMask"]


def __getattr__(name: str) -> Any:
    """`from genmask import GenMask` without importing torch when only the package is imported."""
    if name == "GenMask":
        from genmask.model import GenMask

        return GenMask
    raise AttributeError(f"module 'genmask' has no attribute {name!r}")
