"""Model adapters: one interface for diffusion models and VLM segmenters, batched."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bench.registry import Registry
from bench.suites.base import Sample

QUIET_LOADING = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                 "DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def quiet_model_loading() -> None:
    """No progress bars and no load reports from transformers, diffusers or the hub (`--no-progress`): their
    environment switches for what is imported later, their logging calls for what is imported already."""
    os.environ.update(QUIET_LOADING)
    for name in ("transformers", "diffusers"):
        if name in sys.modules:
            logging = sys.modules[name].utils.logging
            logging.set_verbosity_error()
            logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()


@dataclass
class ModelInput:
    """What a model sees for one sample: the decoded image and the instruction."""

    sample: Sample  # only the `oracle` sanity check may read the target through it
    image: np.ndarray  # uint8 HxWx3 at the original resolution
    text: str


class SegModel:
    """Base adapter. `predict` returns one mask per input at that input's original size.

    A mask is a boolean array, or a float array of foreground probabilities thresholded at 0.5;
    the runner fails a sample whose mask has the wrong shape or contains NaN.
    Constructor options come from the CLI's `--model-arg key=value` (and --checkpoint/--device/--seed).
    """

    name: ClassVar[str] = "base"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, **options: Any):
        if options:
            raise TypeError(f"model {self.name!r} takes no options {sorted(options)}")
        self.checkpoint = checkpoint
        self.device = device
        self.seed = seed

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The resolved configuration, recorded in run.json."""
        return {"name": self.name, "checkpoint": self.checkpoint, "device": self.device, "seed": self.seed}

    def timings(self) -> dict[str, float]:
        """Optional latency breakdown in seconds accumulated over the run (e.g. encoder / DiT / decoder)."""
        return {}

    def check_suite(self, suite_name: str, synthetic: bool) -> list[str]:
        """Warnings about using this model on that suite (e.g. weights trained on synthetic data only)."""
        return []


MODELS: Registry[type[SegModel]] = Registry("model", entry_point_group="genmask_bench.models")
