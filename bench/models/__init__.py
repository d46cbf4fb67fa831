"""Model adapters. Heavy models are registered lazily: importing the harness does not import torch."""

from bench.models import trivial  # noqa: F401 - registers oracle, empty, full, center, replay
from bench.models.base import MODELS, ModelInput, SegModel

MODELS.register_lazy("genmask", "genmask.adapter:GenMaskSegModel")

__all__ = ["MODELS", "ModelInput", "SegModel"]
