"""The segmentation sample stream GenMask and every rival train on: images grouped with every instruction that
points into them, and each step's items drawn from (seed, step, rank) alone, so equal settings give equal samples.

Binding a word to an object is learned when the same image comes with different targets: a batch is made of
groups of `group_size` instructions of one image, different targets first, so guessing from the image alone
does not pay. Sources (`SampleStream.data`): "synth" (fresh `bench.synth` scenes, every verified referring
expression and reasoning query usable) or any registered suite's train split read from `data_root` (RefCOCO/+/g,
ReasonSeg, synthref, synthreason), where the samples of one image form its group.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from bench.images import resize_image
from bench.training.recipe import SampleStream


@dataclass
class SegItem:
    """One instruction: the image it is about, the index of its target mask, and what it asks."""

    image: int
    mask: int
    text: str
    kind: str  # "referring" or "reasoning"
    rule: str = ""


@dataclass
class GroupedSegData:
    """Images, every target mask once, the instructions pointing into them and (after encoding) latents."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # bool (M, H, W)
    items: list[SegItem]
    image_latents: np.ndarray | None = None  # float16 (N, C, 1, h, w), normalised
    mask_latents: np.ndarray | None = None  # float16 (M, C, 1, h, w)
    by_image: list[list[int]] = field(default_factory=list)  # item indices of each image

    def __post_init__(self) -> None:
        groups: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(self.items):
            groups[item.image].append(index)
        self.by_image = [groups[i] for i in range(len(self.images))]


def synth_groups(seed: int, scenes: int, image_size: int) -> GroupedSegData:
    """`scenes` fresh training scenes with all their instructions (`bench.synth.iter_training_scenes`)."""
    from bench.synth import iter_training_scenes

    images, masks, items = [], [], []
    for image_index, scene in enumerate(itertools.islice(iter_training_scenes(seed, image_size), scenes)):
        images.append(scene.image)
        first_mask = len(masks)
        masks += scene.masks
        items += [SegItem(image_index, first_mask + target, text, kind, rule)
                  for kind, rule, text, target in scene.options]
    return GroupedSegData(np.stack(images), np.stack(masks).astype(bool), items)


def suite_groups(name: str, data_root: str, image_size: int, limit: int, split: str = "train") -> GroupedSegData:
    """A split of a registered suite (its train split for training), resized to the model's square input; a sample that cannot be read
    is skipped with a count printed. Ignored target pixels count as background."""
    from bench.loading import read_sample
    from bench.suites import SUITES
    from bench.suites.reasonseg import ReasonSegSuite

    suite = SUITES.get(name)(data_root=data_root or None)
    known = suite.splits + suite.train_splits
    if split not in known:
        raise ValueError(f"suite {name!r} has no {split} split (splits: {', '.join(known)})")
    kind = "reasoning" if isinstance(suite, ReasonSegSuite) else "referring"  # synthreason is one too
    image_index: dict[Path, int] = {}
    images, masks, items, skipped = [], [], [], 0
    for sample in tqdm(suite.samples(split)[:limit], desc=f"{name} {split}"):
        image, target, error = read_sample(sample)
        if error:
            skipped += 1
            continue
        if sample.image_path not in image_index:
            image_index[sample.image_path] = len(images)
            images.append(resize_image(image, image_size))
        mask = np.asarray(Image.fromarray((target == 1).astype(np.uint8) * 255).resize((image_size, image_size)))
        masks.append(mask > 127)
        items.append(SegItem(image_index[sample.image_path], len(masks) - 1, sample.text, kind,
                             str(sample.meta.get("rule", ""))))
    if skipped:
        print(f"{name} {split}: skipped {skipped} samples that could not be read")
    if not items:
        raise ValueError(f"suite {name!r}: no readable {split} samples under {data_root or 'the default data root'}")
    return GroupedSegData(np.stack(images), np.stack(masks), items)


def training_groups(train: Any, image_size: int) -> GroupedSegData:
    """The grouped training data of a train section's stream (a `Recipe`'s seed and a `SampleStream`)."""
    if train.data == "synth":
        return synth_groups(train.seed, train.train_samples, image_size)
    return suite_groups(train.data, train.data_root, image_size, train.train_samples)


def draw_items(data: GroupedSegData, count: int, stream: SampleStream, generator: torch.Generator) -> list[int]:
    """`count` item indices in groups of `stream.group_size` per image. Within a group each slot draws a kind by
    `stream.task_weights`, preferring a target not yet used in the group, then a rule uniformly, then a text."""
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    chosen: list[int] = []
    while len(chosen) < count:
        members = data.by_image[int(rng.integers(len(data.images)))]
        used_masks: set[int] = set()
        for _ in range(min(stream.group_size, count - len(chosen))):
            pick = _pick_item(data, members, used_masks, stream.task_weights, rng)
            used_masks.add(data.items[pick].mask)
            chosen.append(pick)
    return chosen


def _pick_item(data: GroupedSegData, members: list[int], used_masks: set[int], weights: dict[str, float],
               rng: np.random.Generator) -> int:
    kinds = sorted({data.items[i].kind for i in members})
    p = np.array([weights.get(k, 0.0) for k in kinds], dtype=float)
    if not p.sum():
        p[:] = 1.0  # the image has only kinds weighted 0 (e.g. a suite with one kind of text): take them evenly
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    of_kind = [i for i in members if data.items[i].kind == kind]
    fresh = [i for i in of_kind if data.items[i].mask not in used_masks] or of_kind
    targets = sorted({data.items[i].mask for i in fresh})
    target = targets[int(rng.integers(len(targets)))]
    of_target = [i for i in fresh if data.items[i].mask == target]
    rules = sorted({data.items[i].rule for i in of_target})
    rule = rules[int(rng.integers(len(rules)))]
    options = [i for i in of_target if data.items[i].rule == rule]
    return options[int(rng.integers(len(options)))]
