"""GenMask's training data: the shared segmentation stream (`bench.training.stream`: images grouped with every
instruction that points into them, the rivals draw the same) with its latents, and captions for text-to-image.

Captions for joint text-to-image training (`train.captions`): "synth" or a COCO captions file (`captions_*.json`
beside its images). Image latents and the latents of every target mask are computed once with the frozen VAE and
cached (`bench.training.cache`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from bench.images import resize_image
from bench.io import read_json
from bench.training.stream import GroupedSegData, training_groups
from genmask.model import GenMask, images_to_tensor, masks_to_tensor


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
    data = training_groups(train, size)

    def build() -> dict[str, np.ndarray]:
        return {"image_latents": encode_batched(model, images_to_tensor(list(data.images)), label="image latents"),
                "mask_latents": encode_batched(model, masks_to_tensor(list(data.masks)), label="mask latents")}

    key = {"kind": "groups", "data": train.data, "root": train.data_root, "seed": train.seed,
           "count": train.train_samples, "size": size}
    arrays = cached_arrays(["image_latents", "mask_latents"], key, build, modules=[model.vae])
    data.image_latents, data.mask_latents = arrays["image_latents"], arrays["mask_latents"]
    return data


