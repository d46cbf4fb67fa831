"""Write the synthetic suites to disk in the real formats, deterministically, and cache them by fingerprint.

Layout under the output directory:
    refer_seg/images/synthref/COCO_train2014_<image_id:012d>.png
    refer_seg/synthref/{refs(unc).p, instances.json}
    reason_seg/SynthReason/{train,val,test}/image_N.png + image_N.json

synthref (refer format): each image carries `refs_per_image` refs, each with 1-3 sentences; instances.json
annotates every object of the image (category = shape) with its polygon, as the real RefCOCO files store
referred objects (LISA's refer code reads RLE only as a list of dicts; the loader reads every variant, which
the tests cover). Split rule, mirroring RefCOCO's people (testA) vs objects
(testB): testA refs target curved shapes (circle, ellipse), testB refs target shapes with corners;
train and val refs target anything.

SynthReason (ReasonSeg format): one query per image, its text either [long, long paraphrase]
(is_sentence true) or [short, short paraphrase]. The target is written as LabelMe polygons traced along
its pixels so the ReasonSeg rasteriser gives back exactly the generator's mask. Some images carry a grey
smudge labelled "ignore" (its pixels leave the metric) and some a "flag" polygon around another object
(the loader must skip it).

Every image has its own random stream (seed, stream, split, index), disjoint from the training
streams of bench.synth.language, so the same config gives byte-identical files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.suites import writers
from bench.suites.reasonseg import paint_target
from bench.suites.writers import coco_image_name, make_ref, write_reasonseg_sample, write_refer_dataset
from bench.synth import language, scenes
from bench.synth.language import Expression, Query, pick_balanced, reasoning_queries, referring_expressions
from bench.synth.scenes import CURVED_SHAPES, SHAPES, Scene, generate_scene, place, rasterise

GENERATOR_VERSION = "1"
CACHE_ENV = "BENCH_SYNTH_CACHE"
FINGERPRINT_CHARS = 16
STAGING_NAME = re.compile(r"^\.[0-9a-f]{16}-")  # .<fingerprint>-<random>: a generation in progress
STAGING_LOCK_SUFFIX = ".lock"
MAX_IMAGE_SIZE = 128  # synthetic suites are for tiny models
REFER_DATASET = "synthref"
REFER_SPLIT_BY = "unc"
REFER_SPLITS = ("train", "val", "testA", "testB")
REASON_DIRECTORY = "SynthReason"
REASON_SPLITS = ("train", "val", "test")
REFER_STREAM, REASON_STREAM = 0, 1  # bench.synth.language's training streams are >= 1000
SENTENCE_COUNTS, SENTENCE_COUNT_P = (1, 2, 3), (0.4, 0.35, 0.25)
OCCLUDER_P, FLAG_P = 0.3, 0.1
OCCLUDER_COLOUR = (128, 128, 128)  # grey: never an object colour, darker than every background
OCCLUDER_RADIUS = (4.0, 6.0)  # at 64 px
PNG_OPTIONS = {"format": "PNG", "optimize": False, "compress_level": 6}
# split -> which refs a testA / testB image may carry (train and val take any target)
TARGET_RULES = {
    "testA": lambda shape: shape in CURVED_SHAPES,
    "testB": lambda shape: shape not in CURVED_SHAPES,
}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; the defaults suit training and evaluating a tiny model on a 2-core CPU."""

    image_size: int = 64
    seed: int = 0
    refs_per_image: int = 2
    refer_images: dict[str, int] = field(
        default_factory=lambda: {"train": 800, "val": 75, "testA": 75, "testB": 75}
    )
    reason_images: dict[str, int] = field(default_factory=lambda: {"train": 1000, "val": 300, "test": 300})

    def __post_init__(self) -> None:
        if not scenes.MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be within {scenes.MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, not {self.image_size}"
            )
        if set(self.refer_images) != set(REFER_SPLITS) or set(self.reason_images) != set(REASON_SPLITS):
            raise ValueError(f"refer_images needs splits {REFER_SPLITS}, reason_images {REASON_SPLITS}")


def refer_expected_counts(config: SynthConfig) -> dict[str, dict[str, int]]:
    """Refs and images per synthref split (exact: each image carries refs_per_image refs)."""
    return {
        split: {"refs": n * config.refs_per_image, "images": n} for split, n in config.refer_images.items()
    }


def reason_expected_counts(config: SynthConfig) -> dict[str, int]:
    """JSON files per SynthReason split directory."""
    return dict(config.reason_images)


def fingerprint(config: SynthConfig) -> str:
    """Hash of the config, the generator version and the source of the modules that shape the files."""
    digest = hashlib.sha256(GENERATOR_VERSION.encode())
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    for module in (scenes, language, writers):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _item_rng(config: SynthConfig, stream: int, split_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(stream, split_index, index)))


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, **PNG_OPTIONS)


# ---------------------------------------------------------------- synthref


def _choose_sentences(rng: np.random.Generator, expressions: list[Expression]) -> list[str]:
    """1-3 different expressions of one target, spread over kinds."""
    count = min(int(rng.choice(SENTENCE_COUNTS, p=SENTENCE_COUNT_P)), len(expressions))
    remaining = [(e.kind, e.text) for e in expressions]
    chosen = []
    for _ in range(count):
        option = pick_balanced(rng, remaining)
        remaining.remove(option)
        chosen.append(option[1])
    return chosen


@dataclass
class ReferItem:
    """One synthref image: its scene and its refs as (object index, sentences)."""

    scene: Scene
    refs: list[tuple[int, list[str]]]


def synthref_item(config: SynthConfig, split: str, index: int) -> ReferItem:
    """Image `index` of a synthref split: a scene with refs_per_image targets allowed in the split."""
    rng = _item_rng(config, REFER_STREAM, REFER_SPLITS.index(split), index)
    allowed = TARGET_RULES.get(split, lambda shape: True)
    while True:
        scene = generate_scene(rng, config.image_size)
        by_target: dict[int, list[Expression]] = {}
        for expression in referring_expressions(scene, rng):
            if allowed(scene.objects[expression.target].shape):
                by_target.setdefault(expression.target, []).append(expression)
        if len(by_target) >= config.refs_per_image:
            targets = sorted(
                int(t) for t in rng.choice(sorted(by_target), size=config.refs_per_image, replace=False)
            )
            return ReferItem(scene, [(t, _choose_sentences(rng, by_target[t])) for t in targets])


def _annotation(ann_id: int, image_id: int, obj: scenes.SceneObject) -> dict[str, Any]:
    """COCO annotation of one object: its polygon, which decodes to exactly its mask (scenes.rasterise)."""
    ys, xs = np.nonzero(obj.mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": list(SHAPES).index(obj.shape) + 1,
        "segmentation": [obj.flat_polygon()],
        "area": float(obj.area),
        "bbox": [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)],
        "iscrowd": 0,
    }


def _build_refer(out_dir: Path, config: SynthConfig, progress: tqdm) -> None:
    refer_root = out_dir / "refer_seg"
    image_dir = refer_root / "images" / REFER_DATASET
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, refs = [], [], []
    sent_id = 0
    for split in REFER_SPLITS:
        for index in range(config.refer_images[split]):
            item = synthref_item(config, split, index)
            scene = item.scene
            image_id = len(images) + 1
            file_name = Path(coco_image_name(image_id)).with_suffix(".png").name
            _save_png(scene.image, image_dir / file_name)
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "height": config.image_size,
                    "width": config.image_size,
                }
            )
            first_ann_id = len(annotations) + 1
            annotations += [
                _annotation(first_ann_id + k, image_id, obj) for k, obj in enumerate(scene.objects)
            ]
            for target, sentences in item.refs:
                numbered = [(sent_id + k + 1, text) for k, text in enumerate(sentences)]
                sent_id += len(sentences)
                category_id = list(SHAPES).index(scene.objects[target].shape) + 1
                refs.append(
                    make_ref(len(refs) + 1, first_ann_id + target, image_id, category_id, split, numbered)
                )
            progress.update()
    categories = [
        {"id": k + 1, "name": shape, "supercategory": "curved" if shape in CURVED_SHAPES else "cornered"}
        for k, shape in enumerate(SHAPES)
    ]
    write_refer_dataset(refer_root, REFER_DATASET, REFER_SPLIT_BY, images, annotations, refs, categories)


# ---------------------------------------------------------------- SynthReason

_DIRECTIONS = [(-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1)]  # clockwise from west
_DIRECTION_INDEX = {d: i for i, d in enumerate(_DIRECTIONS)}


def _trace_contour(mask: np.ndarray) -> list[list[int]]:
    """Moore-neighbour trace of the outer boundary pixels of the component holding the first pixel of `mask`
    (raster order), as [x, y] pixel centres in clockwise order; stops when its first move repeats."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    start = (int(xs[0]), int(ys[0]))
    point, backtrack = start, 0  # the west neighbour of the first pixel is background
    contour, first_move = [start], None
    while True:
        for turn in range(1, 9):
            direction = (backtrack + turn) % 8
            nx, ny = point[0] + _DIRECTIONS[direction][0], point[1] + _DIRECTIONS[direction][1]
            if 0 <= nx < width and 0 <= ny < height and mask[ny, nx]:
                break
        else:
            return [list(start)]  # a lone pixel
        if (point, direction) == first_move:
            return [list(p) for p in contour[:-1]]
        first_move = first_move or (point, direction)
        # the next search starts from the background pixel checked last, seen from the new point
        dx, dy = _DIRECTIONS[(direction - 1) % 8]
        backtrack = _DIRECTION_INDEX[(point[0] + dx - nx, point[1] + dy - ny)]
        point = (nx, ny)
        contour.append(point)


def mask_to_labelme_polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """LabelMe polygons (one per connected part) the ReasonSeg loader rasterises back to exactly `mask`."""
    remaining = mask.copy()
    polygons = []
    while remaining.any():
        polygon = _trace_contour(remaining)
        drawn = paint_target([{"label": "part", "points": polygon}], *mask.shape).astype(bool)
        remaining &= ~drawn
        polygons.append(polygon)
    shapes = [{"label": "part", "points": polygon} for polygon in polygons]
    if not np.array_equal(paint_target(shapes, *mask.shape).astype(bool), mask):
        raise RuntimeError(
            "traced polygons do not rasterise back to the mask (ReasonSeg rasteriser changed?)"
        )
    return polygons


def _occluder(rng: np.random.Generator, scene: Scene) -> np.ndarray | None:
    """Mask of an irregular blob in free space (never touching an object), or None when there is no room."""
    scale = scene.size / scenes.REFERENCE_SIZE
    radius = float(rng.uniform(*OCCLUDER_RADIUS)) * scale
    centre = place(rng, radius, scene.objects, scene.size)
    if centre is None:
        return None
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=9))
    radii = radius * rng.uniform(0.6, 1.0, size=9)
    polygon = [
        (round(centre[0] + r * math.cos(a), 2), round(centre[1] + r * math.sin(a), 2))
        for r, a in zip(radii, angles, strict=True)
    ]
    mask = rasterise(polygon, scene.size)
    return mask if mask.any() else None


@dataclass
class ReasonItem:
    """One SynthReason sample: the scene, the chosen query and what is written to disk."""

    scene: Scene
    query: Query
    image: np.ndarray  # the scene's image, with the occluder painted in
    texts: list[str]
    is_sentence: bool
    shapes: list[dict[str, Any]]  # LabelMe shapes: "target", "ignore", "flag"
    occluder: np.ndarray | None  # bool HxW mask of the "ignore" smudge


def synthreason_item(config: SynthConfig, split: str, index: int) -> ReasonItem:
    """Sample `index` of a SynthReason split."""
    rng = _item_rng(config, REASON_STREAM, REASON_SPLITS.index(split), index)
    while True:
        scene = generate_scene(rng, config.image_size)
        queries = reasoning_queries(scene, rng)
        if queries:
            break
    _, query = pick_balanced(rng, [(q.kind, q) for q in queries])
    is_sentence = bool(rng.random() < 0.5)
    texts = [query.long, query.long_paraphrase] if is_sentence else [query.short, query.short_paraphrase]
    image = scene.image.copy()
    shapes = [
        {"label": "target", "points": p} for p in mask_to_labelme_polygons(scene.objects[query.target].mask)
    ]
    occluder = _occluder(rng, scene) if rng.random() < OCCLUDER_P else None
    if occluder is not None:
        image[occluder] = OCCLUDER_COLOUR
        shapes += [{"label": "ignore", "points": p} for p in mask_to_labelme_polygons(occluder)]
    others = [i for i in range(len(scene.objects)) if i != query.target]
    if rng.random() < FLAG_P:
        flagged = scene.objects[others[int(rng.integers(len(others)))]]
        shapes += [{"label": "flag", "points": p} for p in mask_to_labelme_polygons(flagged.mask)]
    return ReasonItem(scene, query, image, texts, is_sentence, shapes, occluder)


def _build_reason(out_dir: Path, config: SynthConfig, progress: tqdm) -> None:
    number = 0
    for split in REASON_SPLITS:
        split_dir = out_dir / "reason_seg" / REASON_DIRECTORY / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for index in range(config.reason_images[split]):
            item = synthreason_item(config, split, index)
            write_reasonseg_sample(
                split_dir,
                f"image_{number}",
                item.image,
                item.texts,
                item.is_sentence,
                item.shapes,
                image_ext=".png",
            )
            number += 1
            progress.update()


# ---------------------------------------------------------------- entry points


def build_synth(out_dir: Path, config: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Write both synthetic suites under out_dir (layout in the module docstring); returns out_dir."""
    out_dir = Path(out_dir)
    total = sum(config.refer_images.values()) + sum(config.reason_images.values())
    with tqdm(total=total, desc="generating synthetic data", unit="image", disable=not progress) as bar:
        _build_refer(out_dir, config, bar)
        _build_reason(out_dir, config, bar)
    return out_dir


def default_cache_dir() -> Path:
    """$BENCH_SYNTH_CACHE, else the user cache directory of genmask-bench / synth."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("genmask-bench")) / "synth"


def ensure_synth(
    cache_dir: Path | None = None, config: SynthConfig = SynthConfig(), progress: bool = True
) -> Path:
    """<cache>/<fingerprint>, generated first if missing. Generation goes to a hidden staging sibling that is
    renamed into place atomically; a process that loses the race (e.g. under torchrun) drops its copy. The
    staging folder's lock file stays locked while its process lives, so the staging folders of killed
    generations are recognised and removed by the next one."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / fingerprint(config)
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(cache_dir)
    fd, lock_name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=STAGING_LOCK_SUFFIX, dir=cache_dir)
    fcntl.lockf(fd, fcntl.LOCK_EX)  # before the folder exists, so no one takes a live folder for stale
    staging = Path(lock_name.removesuffix(STAGING_LOCK_SUFFIX))
    try:
        staging.mkdir()
        build_synth(staging, config, progress)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        os.unlink(lock_name)
        os.close(fd)
    return target


def remove_stale_staging(cache_dir: Path) -> None:
    """Delete the staging folders (and lock files) of generations whose process is gone."""
    for path in sorted(cache_dir.iterdir()):
        if not STAGING_NAME.match(path.name.removesuffix(STAGING_LOCK_SUFFIX)):
            continue
        lock = path.with_name(path.name.removesuffix(STAGING_LOCK_SUFFIX) + STAGING_LOCK_SUFFIX)
        if lock.exists() and _locked_by_a_live_process(lock):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        lock.unlink(missing_ok=True)


def _locked_by_a_live_process(lock: Path) -> bool:
    """True while the process that created `lock` lives (the kernel drops its POSIX lock when it dies)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
