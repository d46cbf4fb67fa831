"""Model adapters. Models outside the harness plug in through the `genmask_bench.models` entry point group
(see pyproject.toml), imported only when asked for: importing the harness does not import torch."""

from bench.models import trivial  # noqa: F401 - registers oracle, empty, full, center, replay
from bench.models.base import MODELS, ModelInput, SegModel

__all__ = ["MODELS", "ModelInput", "SegModel"]
