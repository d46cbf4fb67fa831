"""Image helpers every model and the training streams share: RGB arrays and the square resize to a model's input."""

from __future__ import annotations

import numpy as np
from PIL import Image


def as_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """A PIL image (any mode) or an HxWx3 uint8 array as an HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a PIL image or an HxWx3 uint8 array, got shape {array.shape} {array.dtype}")
    return array


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square bilinear resize to the model resolution (aspect ratio not kept: masks are resized back)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
