"""GenMask's training data: images grouped with every instruction that points into them, latents cached once.

Binding a word to an object is learned when the same image comes with different targets: a batch is made
of groups of `train.group_size` instructions of one image, different targets first, so guessing from the
image alone does not pay. Sources (`train.data`): "synth" (fresh `bench.synth` scenes, every verified
referring expression and reasoning query usable) or any registered suite's train split read from
`train.data_root` (RefCOCO/+/g, ReasonSeg, synthref, synthreason), where the samples of one image form its
group. Captions for joint text-to-image training (`train.captions`): "synth" or a COCO captions file
(`captions_*.json` beside its images). Image latents and the latents of every target mask are computed once
with the frozen VAE and cached (`bench.training.cache`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from bench.io import read_json
from genmask.config import TrainConfig
from genmask.model import GenMask, images_to_tensor, masks_to_tensor, resize_image


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


def coco_captions(path: str | Path, image_size: int, limit: int) -> tuple[np.ndarray, list[str]]:
    """(images, captions) from a COCO captions file; images are read from the folder named like the file's
    split beside its `annotations/` folder (captions_train2017.json -> ../train2017/), one caption each."""
    path = Path(path)
    data = read_json(path)
    folder = path.parent.parent / path.stem.removeprefix("captions_")
    files = {image["id"]: image["file_name"] for image in data["images"]}
    images, texts, seen = [], [], set()
    for annotation in data["annotations"]:
        if annotation["image_id"] in seen or len(texts) >= limit:
            continue
        seen.add(annotation["image_id"])
        with Image.open(folder / files[annotation["image_id"]]) as image:
            images.append(resize_image(np.asarray(image.convert("RGB")), image_size))
        texts.append(annotation["caption"].strip())
    if not texts:
        raise ValueError(f"{path}: no captions")
    return np.stack(images), texts


@torch.no_grad()
def encode_batched(model: GenMask, pixels: torch.Tensor, batch: int = 64, label: str = "encoding") -> np.ndarray:
    """Normalised VAE latents of (N, 3, 1, H, W) pixels, as float16."""
    parts = [model.encode_pixels(pixels[i : i + batch]).half().cpu()
             for i in tqdm(range(0, len(pixels), batch), desc=label)]
    return torch.cat(parts).numpy()


def load_grouped_data(model: GenMask) -> GroupedSegData:
    """The configured training data with its cached image and mask latents."""
    from bench.training.cache import cached_arrays

    train = model.config.train
    size = model.config.image_size
    if train.data == "synth":
        data = synth_groups(train.seed, train.train_samples, size)
    else:
        data = suite_groups(train.data, train.data_root, size, train.train_samples)

    def build() -> dict[str, np.ndarray]:
        return {"image_latents": encode_batched(model, images_to_tensor(list(data.images)), label="image latents"),
                "mask_latents": encode_batched(model, masks_to_tensor(list(data.masks)), label="mask latents")}

    key = {"kind": "groups", "data": train.data, "root": train.data_root, "seed": train.seed,
           "count": train.train_samples, "size": size}
    arrays = cached_arrays(["image_latents", "mask_latents"], key, build, modules=[model.vae])
    data.image_latents, data.mask_latents = arrays["image_latents"], arrays["mask_latents"]
    return data


def draw_items(data: GroupedSegData, count: int, train: TrainConfig, generator: torch.Generator) -> list[int]:
    """`count` item indices in groups of `train.group_size` per image. Within a group each slot draws a kind by
    `train.task_weights`, preferring a target not yet used in the group, then a rule uniformly, then a text."""
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    chosen: list[int] = []
    while len(chosen) < count:
        members = data.by_image[int(rng.integers(len(data.images)))]
        used_masks: set[int] = set()
        for _ in range(min(train.group_size, count - len(chosen))):
            pick = _pick_item(data, members, used_masks, train.task_weights, rng)
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
