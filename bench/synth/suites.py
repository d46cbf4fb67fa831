"""The synthetic suites synthref and synthreason: the real refer / ReasonSeg loaders reading the synth cache.

Both ignore any data root; options: cache_dir (default: bench.synth.build.default_cache_dir()), progress
(a progress bar while the data are generated; the runner passes --no-progress on) and, for programmatic use,
config (a SynthConfig). The data are generated on first use (see ensure_synth).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bench.suites.base import SUITES
from bench.suites.reasonseg import ReasonSegSuite
from bench.suites.refer import ReferSuite
from bench.synth.build import (
    GENERATOR_VERSION,
    REASON_DIRECTORY,
    REASON_SPLITS,
    REFER_DATASET,
    REFER_SPLIT_BY,
    REFER_SPLITS,
    SynthConfig,
    ensure_synth,
    fingerprint,
    reason_expected_counts,
    refer_expected_counts,
    synthreason_item,
)

SYNTH_OPTIONS = ("cache_dir", "config", "progress")


class SynthCache:
    """Mixin: takes the synth options out of a suite's options and finds (or builds) the cached data."""

    def _take_synth_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Remember cache_dir and config; return the options left for the real loader."""
        config = options.get("config", SynthConfig())
        if not isinstance(config, SynthConfig):
            raise TypeError(f"option config must be a SynthConfig, not {type(config).__name__}")
        self.synth_config = config
        self.cache_dir = Path(options["cache_dir"]) if options.get("cache_dir") is not None else None
        self.progress = bool(options.get("progress", True))
        self._synth_root: Path | None = None
        return {k: v for k, v in options.items() if k not in SYNTH_OPTIONS}

    def synth_root(self) -> Path:
        """The generated data directory, built on first use."""
        if self._synth_root is None:
            self._synth_root = ensure_synth(self.cache_dir, self.synth_config, self.progress)
        return self._synth_root

    def synth_protocol(self) -> dict[str, Any]:
        return {"generator": GENERATOR_VERSION, "fingerprint": fingerprint(self.synth_config)}


@SUITES.register("synthref")
class SynthRefSuite(SynthCache, ReferSuite):
    """Synthetic shapes in the refer format; testA targets curved shapes, testB shapes with corners."""

    name = "synthref"
    dataset = REFER_DATASET
    split_by = REFER_SPLIT_BY
    valid_split_by = (REFER_SPLIT_BY,)
    splits = REFER_SPLITS
    synthetic = True
    expected_counts = refer_expected_counts(SynthConfig())

    def __init__(self, data_root: Path | None = None, **options: Any):
        loader_options = self._take_synth_options(options)
        super().__init__(None, **loader_options)
        self.options = options
        self.expected_counts = refer_expected_counts(self.synth_config)

    def refer_root(self) -> Path:
        return self.synth_root() / "refer_seg"

    def image_dir(self) -> Path:
        return self.synth_root() / "refer_seg" / "images" / REFER_DATASET

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), **self.synth_protocol()}


@SUITES.register("synthreason")
class SynthReasonSuite(SynthCache, ReasonSegSuite):
    """Synthetic reasoning queries in the ReasonSeg format (about half short phrases, half sentences)."""

    name = "synthreason"
    splits = REASON_SPLITS
    synthetic = True
    expected_counts = reason_expected_counts(SynthConfig())
    # the JSON annotates the target alone (as ReasonSeg does); the generator knows every shape of the scene
    objects_rule = "every shape of the generated scene (the generator's own objects; the JSON annotates only the target)"
    objects_are_target = False

    def __init__(self, data_root: Path | None = None, **options: Any):
        loader_options = self._take_synth_options(options)
        super().__init__(None, **loader_options)
        self.options = options
        self.expected_counts = reason_expected_counts(self.synth_config)

    def split_dir(self, split: str) -> Path:
        return self.synth_root() / "reason_seg" / REASON_DIRECTORY / split

    def _samples_of(self, annotation: Any, directory: Path, split: str) -> list:
        """ReasonSeg's samples, whose objects are every shape of the scene the generator made for the file."""
        folder = directory.name  # train / val / test, also for the test-short / test-long views
        offset = sum(self.synth_config.reason_images[s] for s in REASON_SPLITS[: REASON_SPLITS.index(folder)])
        index = int(annotation.stem.removeprefix("image_")) - offset
        config = self.synth_config

        def load_objects() -> list[np.ndarray]:
            return [obj.mask for obj in synthreason_item(config, folder, index).scene.objects]

        return [dataclasses.replace(sample, load_objects=load_objects)
                for sample in super()._samples_of(annotation, directory, split)]

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), **self.synth_protocol()}
