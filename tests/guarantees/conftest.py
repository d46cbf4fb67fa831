"""Fixtures of the guarantees' tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.suites.writers import coco_image_name


def black_if_coco_named(image: dict[str, Any]) -> np.ndarray | None:
    """A black 64 x 64 file for an image under COCO's name for its id, whatever size instances.json declares;
    none for a file name of its own (which tests point elsewhere)."""
    return np.zeros((64, 64, 3), np.uint8) if image["file_name"] == coco_image_name(image["id"]) else None


@pytest.fixture(scope="session")
def write_refer(refer_dataset) -> Callable[[Path, list[dict], list], Path]:
    """Factory: `write_refer(root, images, segmentations)`, a RefCOCO-layout dataset with one val ref (one
    sentence, sent_id = image id) per image dict given, as it is (sizes and file names included)."""

    def write(root: Path, images: list[dict], segmentations: list) -> Path:
        objects = [(image["id"], image["id"], "val", segmentation, [(image["id"], f"thing {image['id']}")])
                   for image, segmentation in zip(images, segmentations, strict=True)]
        return refer_dataset(root, images, objects, pixels=black_if_coco_named)

    return write
