"""Model adapters. Models outside the harness plug in through the `genmask_bench.models` entry point group
(see pyproject.toml), imported only when asked for: importing the harness does not import torch."""

from bench.models import context, trivial  # noqa: F401 - register oracle, empty, full, center, replay and the

# context baselines every-object, random-object, largest-object
from bench.models.base import MODELS, ModelInput, SegModel

__all__ = ["MODELS", "ModelInput", "SegModel"]
