"""Synthetic scenes: a few flat-coloured shapes on a light background, with exact per-object masks.

Every object is a polygon (circles and ellipses as 32-sided ones). Its mask is the polygon rasterised
by `bench.masks.polygons_to_mask` (pycocotools, the rasteriser COCO annotations are decoded with) and
the image is painted from that mask, so mask == drawn pixels exactly and a polygon written to disk
decodes back to the very same mask. Objects never overlap (bounding circles keep a gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.masks import polygons_to_mask

# shape name -> number of corners (a star has 5 outer and 5 inner corners)
SHAPES: dict[str, int] = {
    "circle": 0,
    "ellipse": 0,
    "triangle": 3,
    "square": 4,
    "pentagon": 5,
    "hexagon": 6,
    "star": 10,
}
CURVED_SHAPES = ("circle", "ellipse")
PRIMARY_COLOURS = ("red", "yellow", "blue")
COLOUR_MIXES: dict[str, tuple[str, str]] = {  # secondary colour -> the two primaries it mixes
    "orange": ("red", "yellow"),
    "purple": ("red", "blue"),
    "green": ("blue", "yellow"),
}
# saturated object colours: each has a channel <= 60, so none can equal a (light) background pixel
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "yellow": (240, 200, 20),
    "blue": (35, 70, 215),
    "orange": (245, 130, 20),
    "purple": (135, 45, 170),
    "green": (35, 150, 55),
}
# size class -> radius range (bounding circle) in pixels at 64 px; scaled with the image size.
# The gaps between classes keep "big"/"small" visually unambiguous.
SIZES: dict[str, tuple[float, float]] = {
    "small": (5.5, 7.0),
    "medium": (8.5, 10.0),
    "large": (11.5, 13.5),
}
# shapes whose corners blur into a circle when small
MIN_SIZE: dict[str, str] = {"pentagon": "medium", "hexagon": "medium", "star": "medium"}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (245, 245, 240),
    (235, 238, 245),
    (240, 232, 220),
    (225, 235, 225),
    (250, 250, 250),
)
BACKGROUND_MIN = 200  # with texture, every background channel stays >= this
REFERENCE_SIZE = 64  # image size the pixel constants above are given for
MIN_IMAGE_SIZE = 32  # below this, small shapes lose their corners
CIRCLE_VERTICES = 32
ELLIPSE_ASPECT = 0.55  # minor / major axis
STAR_INNER = 0.45  # inner / outer radius
GAP = 2.0  # minimum free pixels between bounding circles at 64 px
PLACEMENT_TRIES = 60
SHARE_ATTRIBUTE_P = 0.5  # chance a new object copies the shape or colour of one already placed


@dataclass
class SceneObject:
    """One drawn shape; `mask` is exactly the pixels painted in its colour."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float  # bounding-circle radius in pixels
    polygon: list[tuple[float, float]]
    mask: np.ndarray  # bool HxW

    @property
    def corners(self) -> int:
        return SHAPES[self.shape]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def flat_polygon(self) -> list[float]:
        """COCO polygon [x1, y1, x2, y2, ...]."""
        return [c for point in self.polygon for c in point]


@dataclass
class Scene:
    """An RGB image and the objects drawn on it."""

    image: np.ndarray  # uint8 HxWx3
    objects: list[SceneObject]

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def shape_polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of `shape` inscribed in the circle (cx, cy, radius), rotated by `angle`; rounded to 0.01 px
    so that the polygon written to JSON is exactly the one rasterised."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    if shape in CURVED_SHAPES:
        minor = radius * (ELLIPSE_ASPECT if shape == "ellipse" else 1.0)
        steps = [2 * math.pi * i / CIRCLE_VERTICES for i in range(CIRCLE_VERTICES)]
        local = [(radius * math.cos(t), minor * math.sin(t)) for t in steps]
    else:
        k = SHAPES[shape]
        radii = (
            [radius if i % 2 == 0 else radius * STAR_INNER for i in range(k)]
            if shape == "star"
            else [radius] * k
        )
        steps = [2 * math.pi * i / k - math.pi / 2 for i in range(k)]  # first vertex points up
        local = [(r * math.cos(t), r * math.sin(t)) for r, t in zip(radii, steps, strict=True)]
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return [(round(cx + x * cos_a - y * sin_a, 2), round(cy + x * sin_a + y * cos_a, 2)) for x, y in local]


def rasterise(polygon: list[tuple[float, float]], image_size: int) -> np.ndarray:
    """Boolean mask of a polygon, with the rasteriser COCO polygon annotations are decoded with."""
    return polygons_to_mask([[c for point in polygon for c in point]], image_size, image_size)


def _choose_attributes(rng: np.random.Generator, placed: list[SceneObject]) -> tuple[str, str]:
    """A shape and a colour; often shared with an object already placed, so that expressions are needed."""
    shape = str(rng.choice(list(SHAPES)))
    colour = str(rng.choice(list(COLOURS)))
    if placed and rng.random() < SHARE_ATTRIBUTE_P:
        other = placed[int(rng.integers(len(placed)))]
        if rng.random() < 0.5:
            shape = other.shape
        else:
            colour = other.colour
    return shape, colour


def _choose_size(rng: np.random.Generator, shape: str) -> str:
    names = list(SIZES)
    allowed = names[names.index(MIN_SIZE.get(shape, "small")) :]
    return str(rng.choice(allowed))


def place(
    rng: np.random.Generator, radius: float, placed: list[SceneObject], image_size: int
) -> tuple[float, float] | None:
    """A centre whose bounding circle fits in the image and keeps a gap to every placed object."""
    gap = GAP * image_size / REFERENCE_SIZE
    low, high = radius + 1.0, image_size - radius - 1.0
    for _ in range(PLACEMENT_TRIES):
        cx, cy = rng.uniform(low, high, size=2)
        if all(math.hypot(cx - o.cx, cy - o.cy) >= radius + o.radius + gap for o in placed):
            return float(cx), float(cy)
    return None


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A light plain colour, half of the time with faint grey noise or a soft gradient."""
    base = np.array(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], dtype=np.int16)
    image = np.broadcast_to(base, (image_size, image_size, 3)).copy()
    texture = rng.integers(3)
    if texture == 1:
        image += rng.integers(-5, 6, size=(image_size, image_size, 1), dtype=np.int16)
    elif texture == 2:
        ramp = np.linspace(-8, 8, image_size).astype(np.int16)
        image += ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None]
    return np.clip(image, BACKGROUND_MIN, 255).astype(np.uint8)


def generate_scene(rng: np.random.Generator, image_size: int = 64) -> Scene:
    """2-6 non-overlapping shapes on a light background; deterministic for the generator's state."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, not {image_size}")
    scale = image_size / REFERENCE_SIZE
    count = int(rng.integers(2, 7))
    objects: list[SceneObject] = []
    while len(objects) < count:
        shape, colour = _choose_attributes(rng, objects)
        size = _choose_size(rng, shape)
        radius = float(rng.uniform(*SIZES[size])) * scale
        centre = place(rng, radius, objects, image_size)
        if centre is None:
            if len(objects) >= 2:
                break  # the image is full: keep the scene smaller
            continue
        polygon = shape_polygon(shape, *centre, radius, float(rng.uniform(0, 2 * math.pi)))
        mask = rasterise(polygon, image_size)
        objects.append(SceneObject(shape, colour, size, centre[0], centre[1], radius, polygon, mask))
    image = _background(rng, image_size)
    for obj in objects:
        image[obj.mask] = COLOURS[obj.colour]
    return Scene(image=image, objects=objects)
