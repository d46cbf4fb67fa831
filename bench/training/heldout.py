"""The held-out samples GenMask and every rival validate on: the same for the same seed, data and `val_samples`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.training.stream import suite_groups

VAL_SEED_OFFSET = 1_000_003  # validation scenes come from a different synth stream than training scenes


@dataclass
class SegData:
    """Segmentation samples: images, masks, instructions, kinds and (after encoding) latents."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # bool (N, H, W)
    texts: list[str]
    kinds: list[str]
    rules: list[str] = field(default_factory=list)  # finer than kinds: expression kind or reasoning rule
    image_latents: np.ndarray | None = None  # float16 (N, C, 1, h, w), normalised
    mask_latents: np.ndarray | None = None


def synth_segmentation(seed: int, count: int, image_size: int) -> SegData:
    """`count` fresh synth samples of the stream `seed`, one instruction per scene."""
    from bench.synth import iter_training_samples

    samples = list(itertools.islice(iter_training_samples(seed, task="both", image_size=image_size), count))
    return SegData(np.stack([s.image for s in samples]), np.stack([s.mask for s in samples]).astype(bool),
                   [s.text for s in samples], [s.kind for s in samples], [s.rule for s in samples])


def validation_data(train: Any, image_size: int) -> SegData | None:
    """Held-out samples of the stream a train section (a `Recipe` and a `SampleStream`) draws, one per image:
    fresh synth scenes, or the first `val_samples` of the suite's val split (None, with a note, when it has none)."""
    if train.data == "synth":
        return synth_segmentation(train.seed + VAL_SEED_OFFSET, train.val_samples, image_size)
    from bench.suites import SUITES

    suite_class = SUITES.get(train.data)  # splits are class attributes: nothing is read to check them
    if "val" not in suite_class.splits + suite_class.train_splits:
        print(f"note: {train.data} has no val split; training runs without validation")
        return None
    val = suite_groups(train.data, train.data_root, image_size, train.val_samples, split="val")
    return SegData(val.images[[item.image for item in val.items]], val.masks[[item.mask for item in val.items]],
                   [item.text for item in val.items], [item.kind for item in val.items],
                   [item.rule for item in val.items])
