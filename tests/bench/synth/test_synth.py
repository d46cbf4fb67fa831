"""The synthetic suites: scenes, verified language, on-disk formats read back by the real loaders, cache."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from bench.masks import polygons_to_mask
from bench.suites.base import IGNORE
from bench.synth import build, language, streams
from bench.synth.build import SynthConfig, build_synth, ensure_synth, synthreason_item, synthref_item
from bench.synth.language import caption, reasoning_queries, referring_expressions, vocabulary
from bench.synth.scenes import COLOURS, SHAPES, generate_scene
from bench.synth.suites import SynthReasonSuite, SynthRefSuite

N_SCENES = 150
SMALL = SynthConfig(
    seed=7,
    refer_images={"train": 3, "val": 3, "testA": 3, "testB": 3},
    reason_images={"train": 4, "val": 4, "test": 12},
)


def scenes(count: int = N_SCENES, offset: int = 0):
    for seed in range(offset, offset + count):
        rng = np.random.default_rng(seed)
        yield generate_scene(rng), rng


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The SMALL data set in a fresh cache directory (the suites find it there by fingerprint)."""
    return ensure_synth(tmp_path_factory.mktemp("cache"), SMALL, progress=False)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- scenes


def test_scene_is_deterministic_per_seed():
    first, again, other = (generate_scene(np.random.default_rng(s)) for s in (3, 3, 4))
    assert first.image.tobytes() == again.image.tobytes()
    assert [(o.shape, o.colour, o.polygon) for o in first.objects] == [
        (o.shape, o.colour, o.polygon) for o in again.objects
    ]
    assert first.image.tobytes() != other.image.tobytes()


def test_masks_are_exactly_the_drawn_pixels():
    for scene, _ in scenes(60):
        assert 2 <= len(scene.objects) <= 6
        total = np.zeros(scene.image.shape[:2], int)
        for obj in scene.objects:
            assert obj.mask.any()
            assert (scene.image[obj.mask] == COLOURS[obj.colour]).all()
            # the polygon, as written to COCO json, decodes to the same mask
            assert np.array_equal(polygons_to_mask([obj.flat_polygon()], scene.size, scene.size), obj.mask)
            total += obj.mask
        assert total.max() == 1  # objects never overlap
        for colour, rgb in COLOURS.items():
            painted = (scene.image == rgb).all(axis=2)
            union = np.zeros_like(painted)
            for obj in scene.objects:
                if obj.colour == colour:
                    union |= obj.mask
            assert np.array_equal(painted, union), colour


# ---------------------------------------------------------------- independent evaluation of the language

SIZE_OF = {"big": "large", "large": "large", "small": "small", "little": "small"}
NP = rf"(?:(big|large|small|little) )?(?:({'|'.join(COLOURS)}) )?({'|'.join(SHAPES)}|shape|one)"
RELATION = (
    r"(left of|to the left of|right of|to the right of|above|below|under|closest to|next to|nearest to)"
)
SUPERLATIVE = {
    "leftmost": ("cx", 1),
    "rightmost": ("cx", -1),
    "topmost": ("cy", 1),
    "highest": ("cy", 1),
    "bottommost": ("cy", -1),
    "lowest": ("cy", -1),
}
ORDINAL = {"second": 2, "third": 3, "fourth": 4, "fifth": 5}
SIDE = {"left": ("cx", 1), "right": ("cx", -1), "top": ("cy", 1), "bottom": ("cy", -1)}


def np_matches(scene, size, colour, shape) -> list[int]:
    return [
        i
        for i, o in enumerate(scene.objects)
        if (size is None or o.size == SIZE_OF[size])
        and (colour is None or o.colour == colour)
        and (shape in ("shape", "one") or o.shape == shape)
    ]


def evaluate_expression(scene, text: str) -> list[int]:
    """Objects the text selects, with plain (margin-free) semantics: the selection must be exactly one."""
    if m := re.fullmatch(rf"the {NP}", text):
        return np_matches(scene, *m.groups())
    if m := re.fullmatch(rf"the {NP} {RELATION} the {NP}", text):
        anchors = np_matches(scene, *m.groups()[4:7])
        assert len(anchors) == 1, text
        anchor = scene.objects[anchors[0]]
        candidates = [i for i in np_matches(scene, *m.groups()[0:3]) if i != anchors[0]]
        relation = m.group(4)
        if relation in ("closest to", "next to", "nearest to"):
            distances = [
                math.dist((scene.objects[i].cx, scene.objects[i].cy), (anchor.cx, anchor.cy))
                for i in candidates
            ]
            return [i for i, d in zip(candidates, distances, strict=True) if d == min(distances)]
        test = {
            "left of": lambda o: o.cx < anchor.cx,
            "to the left of": lambda o: o.cx < anchor.cx,
            "right of": lambda o: o.cx > anchor.cx,
            "to the right of": lambda o: o.cx > anchor.cx,
            "above": lambda o: o.cy < anchor.cy,
            "below": lambda o: o.cy > anchor.cy,
            "under": lambda o: o.cy > anchor.cy,
        }[relation]
        return [i for i in candidates if test(scene.objects[i])]
    if m := re.fullmatch(rf"the ({'|'.join(SUPERLATIVE)}) {NP}", text):
        axis, sign = SUPERLATIVE[m.group(1)]
        members = np_matches(scene, *m.groups()[1:])
        best = min(sign * getattr(scene.objects[i], axis) for i in members)
        return [i for i in members if sign * getattr(scene.objects[i], axis) == best]
    if m := re.fullmatch(rf"the ({'|'.join(ORDINAL)}) {NP} from the (left|right|top|bottom)", text):
        axis, sign = SIDE[m.group(5)]
        members = sorted(
            np_matches(scene, *m.groups()[1:4]), key=lambda i: sign * getattr(scene.objects[i], axis)
        )
        return [members[ORDINAL[m.group(1)] - 1]]
    if m := re.fullmatch(rf"the {NP} (?:on the|at the) (left|right|top|bottom)", text):
        members = np_matches(scene, *m.groups()[:3])
        assert len(members) == 2, text
        axis, sign = SIDE[m.group(4)]
        return [min(members, key=lambda i: sign * getattr(scene.objects[i], axis))]
    raise AssertionError(f"unparsed expression: {text!r}")


def test_every_expression_selects_exactly_its_target():
    kinds = set()
    for scene, rng in scenes():
        for expression in referring_expressions(scene, rng):
            assert evaluate_expression(scene, expression.text) == [expression.target], expression
            kinds.add(expression.kind)
    assert kinds == {"attribute", "spatial", "ordinal"}


def test_every_expression_target_has_a_shape_or_colour_distractor():
    for scene, rng in scenes():
        targets = {e.target for e in referring_expressions(scene, rng)}
        for target in targets:
            t = scene.objects[target]
            assert any(o is not t and (o.shape == t.shape or o.colour == t.colour) for o in scene.objects)
        lonely = [
            i
            for i, t in enumerate(scene.objects)
            if not any(o is not t and (o.shape == t.shape or o.colour == t.colour) for o in scene.objects)
        ]
        assert not targets & set(lonely)


COLOUR_OF = {
    "tomato": "red",
    "fire": "red",
    "banana": "yellow",
    "lemon": "yellow",
    "sky": "blue",
    "sea": "blue",
    "carrot": "orange",
    "pumpkin": "orange",
    "eggplant": "purple",
    "plum": "purple",
    "grass": "green",
    "leaf": "green",
}
LOOKS_LIKE = {
    "coin": "circle",
    "wheel": "circle",
    "egg": "ellipse",
    "olive": "ellipse",
    "pizza": "triangle",
    "warning": "triangle",
    "honeycomb": "hexagon",
    "nut": "hexagon",
    "starfish": "star",
    "sheriff": "star",
}
MIX = {
    frozenset(("red", "yellow")): "orange",
    frozenset(("red", "blue")): "purple",
    frozenset(("blue", "yellow")): "green",
}
NUMBERS = {"three": 3, "four": 4, "five": 5, "six": 6}
CORNERS = {"circle": 0, "ellipse": 0, "triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}


def strict_best(values: list[float]) -> list[int]:
    best = max(values)
    return [i for i, v in enumerate(values) if v == best]


def evaluate_query(scene, kind: str, short: str) -> list[int]:
    """Objects a reasoning query picks, recomputed from scratch from the query kind and its words."""
    objs = scene.objects
    word_list = set(language.words(short))
    corners = [CORNERS.get(o.shape) for o in objs]
    if kind in ("most_corners", "fewest_corners", "corner_count"):
        assert None not in corners  # corner-count questions are never asked about stars
    if kind == "most_corners":
        return strict_best(corners)
    if kind == "fewest_corners":
        return strict_best([-c for c in corners])
    if kind == "corner_count":
        (number,) = word_list & set(NUMBERS)
        return [i for i, c in enumerate(corners) if c == NUMBERS[number]]
    if kind == "no_corners":
        return [i for i, o in enumerate(objs) if o.shape in ("circle", "ellipse")]
    if kind == "only_corners":
        return [i for i, o in enumerate(objs) if o.shape not in ("circle", "ellipse")]
    if kind == "colour_mix":
        colour = MIX[frozenset(word_list & {"red", "yellow", "blue"})]
        return [i for i, o in enumerate(objs) if o.colour == colour]
    if kind == "primary":
        return [i for i, o in enumerate(objs) if o.colour in ("red", "yellow", "blue")]
    if kind == "not_primary":
        return [i for i, o in enumerate(objs) if o.colour not in ("red", "yellow", "blue")]
    if kind == "colour_of":
        (thing,) = word_list & set(COLOUR_OF)
        return [i for i, o in enumerate(objs) if o.colour == COLOUR_OF[thing]]
    if kind == "looks_like":
        (thing,) = word_list & set(LOOKS_LIKE)
        return [i for i, o in enumerate(objs) if o.shape == LOOKS_LIKE[thing]]
    if kind in ("odd_shape", "odd_colour"):
        attribute = kind[4:]
        return [
            i
            for i, o in enumerate(objs)
            if all(getattr(p, attribute) != getattr(o, attribute) for p in objs if p is not o)
            and len({getattr(p, attribute) for p in objs if p is not o}) == 1
        ]
    if kind == "same_colour":
        (shape,) = word_list & set(SHAPES)
        (anchor,) = [o for o in objs if o.shape == shape]
        return [i for i, o in enumerate(objs) if o is not anchor and o.colour == anchor.colour]
    if kind == "same_shape":
        (colour,) = word_list & set(COLOURS)
        (anchor,) = [o for o in objs if o.colour == colour]
        return [i for i, o in enumerate(objs) if o is not anchor and o.shape == anchor.shape]
    if kind == "largest":
        return strict_best([o.mask.sum() for o in objs])
    if kind == "smallest":
        return strict_best([-o.mask.sum() for o in objs])
    if kind == "isolated":
        return strict_best(
            [min(math.dist((o.cx, o.cy), (p.cx, p.cy)) for p in objs if p is not o) for o in objs]
        )
    if kind == "central":
        centre = scene.size / 2
        return strict_best([-math.dist((o.cx, o.cy), (centre, centre)) for o in objs])
    raise AssertionError(f"no independent evaluator for query kind {kind!r}")


def test_every_query_selects_exactly_its_target():
    kinds = set()
    for scene, rng in scenes():
        for query in reasoning_queries(scene, rng):
            assert evaluate_query(scene, query.kind, query.short) == [query.target], query
            assert query.long[0].isupper() and query.long[-1] in ".?"
            kinds.add(query.kind)
    assert len(kinds) >= 15


def test_vocabulary_covers_every_generated_text():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab)) and all(w == w.lower() for w in vocab)
    texts = []
    for scene, rng in scenes():
        texts += [e.text for e in referring_expressions(scene, rng)]
        texts += [
            t
            for q in reasoning_queries(scene, rng)
            for t in (q.short, q.long, q.short_paraphrase, q.long_paraphrase)
        ]
        texts.append(caption(scene, rng))
    missing = {w for text in texts for w in language.words(text)} - set(vocab)
    assert not missing


def test_caption_names_every_object():
    for scene, rng in scenes(30):
        text = caption(scene, rng)
        for shape in SHAPES:
            assert len(re.findall(rf"\b{shape}\b", text)) == sum(o.shape == shape for o in scene.objects)
        assert sum(text.count(f" {c} ") for c in COLOURS) == len(scene.objects)


# ---------------------------------------------------------------- training streams


def test_training_stream_is_deterministic_and_valid():
    first = list(itertools.islice(streams.iter_training_samples(5), 12))
    again = list(itertools.islice(streams.iter_training_samples(5), 12))
    other = list(itertools.islice(streams.iter_training_samples(6), 12))
    assert [(s.text, s.image.tobytes()) for s in first] == [(s.text, s.image.tobytes()) for s in again]
    assert [s.image.tobytes() for s in first] != [s.image.tobytes() for s in other]
    assert {s.kind for s in first} == {"referring", "reasoning"}
    referring_rules = {"attribute", "spatial", "ordinal"}
    assert all((s.rule in referring_rules) == (s.kind == "referring") for s in first)  # the rule that picked it
    for sample in first:
        assert sample.mask.any()
        colours = np.unique(sample.image[sample.mask].reshape(-1, 3), axis=0)
        assert len(colours) == 1  # the mask is one whole object
    for task in ("referring", "reasoning"):
        assert {s.kind for s in itertools.islice(streams.iter_training_samples(0, task), 5)} == {task}
    with pytest.raises(ValueError):
        next(streams.iter_training_samples(0, "captions"))


def test_captions_stream_is_deterministic():
    first = list(itertools.islice(streams.iter_captions(1), 4))
    again = list(itertools.islice(streams.iter_captions(1), 4))
    assert [(img.tobytes(), text) for img, text in first] == [(img.tobytes(), text) for img, text in again]


def test_training_images_are_not_evaluation_images(built):
    evaluation = {p.read_bytes() for p in built.rglob("*.png")}
    from PIL import Image

    evaluation_pixels = {np.asarray(Image.open(p).convert("RGB")).tobytes() for p in built.rglob("*.png")}
    assert len(evaluation) == len(evaluation_pixels) > 0
    for sample in itertools.islice(streams.iter_training_samples(SMALL.seed), 200):
        assert sample.image.tobytes() not in evaluation_pixels


# ---------------------------------------------------------------- on-disk formats through the real loaders


def test_build_is_byte_identical_for_a_config(built, tmp_path):
    assert file_bytes(build_synth(tmp_path / "again", SMALL, progress=False)) == file_bytes(built)
    other = build_synth(tmp_path / "other", SynthConfig(**{**SMALL.__dict__, "seed": 8}), progress=False)
    assert file_bytes(other).keys() == file_bytes(built).keys()
    assert file_bytes(other) != file_bytes(built)


def test_synthref_reads_back_through_the_refer_loader(built):
    suite = SynthRefSuite(cache_dir=built.parent, config=SMALL)
    instances = json.loads((built / "refer_seg" / "synthref" / "instances.json").read_text())
    segmentations = [a["segmentation"] for a in instances["annotations"]]
    # polygons, as the real files store referred objects (LISA's REFER.getMask fails on a bare RLE dict)
    assert all(isinstance(s, list) and all(isinstance(p, list) and len(p) >= 6 for p in s) for s in segmentations)
    categories = {c["id"]: c["name"] for c in instances["categories"]}
    image_ids = {}
    for split in ("train", "val", "testA", "testB"):
        samples = suite.samples(split)
        items = [synthref_item(SMALL, split, i) for i in range(SMALL.refer_images[split])]
        assert len(samples) == sum(len(sentences) for item in items for _, sentences in item.refs)
        assert len({s.meta["ref_id"] for s in samples}) == SMALL.refer_images[split] * SMALL.refs_per_image
        expected = {
            (text, item.scene.objects[target].mask.tobytes(), item.scene.image.tobytes())
            for item in items
            for target, sentences in item.refs
            for text in sentences
        }
        loaded = {(s.text, s.target().astype(bool).tobytes(), s.load_image().tobytes()) for s in samples}
        assert loaded == expected
        for sample in samples:
            assert set(np.unique(sample.target())) <= {0, 1}
            shape = categories[sample.meta["category_id"]]
            if split == "testA":
                assert shape in ("circle", "ellipse")
            if split == "testB":
                assert shape not in ("circle", "ellipse")
        image_ids[split] = {s.meta["image_id"] for s in samples}
    assert not set.intersection(*image_ids.values())
    assert suite.warnings == []
    assert suite.protocol()["fingerprint"] == build.fingerprint(SMALL)


def test_synthreason_reads_back_through_the_reasonseg_loader(built):
    suite = SynthReasonSuite(cache_dir=built.parent, config=SMALL)
    labels = set()
    number = 0
    for split in ("train", "val", "test"):
        samples = {s.sample_id: s for s in suite.samples(split)}
        assert len(samples) == SMALL.reason_images[split]
        for index in range(SMALL.reason_images[split]):
            item = synthreason_item(SMALL, split, index)
            sample = samples[f"image_{number}"]
            number += 1
            expected = item.scene.objects[item.query.target].mask.astype(np.uint8)
            if item.occluder is not None:
                expected[item.occluder] = IGNORE
            assert np.array_equal(sample.target(), expected)
            assert np.array_equal(sample.load_image(), item.image)
            assert sample.text == (item.query.long if item.is_sentence else item.query.short)
            assert sample.meta["is_sentence"] == item.is_sentence
            labels |= {shape["label"] for shape in item.shapes}
    assert labels == {"target", "ignore", "flag"}  # the loader's ignore and flag rules both ran
    assert {s.meta["is_sentence"] for s in suite.samples("test")} == {True, False}
    assert suite.warnings == []


def test_traced_polygons_rasterise_back_to_the_mask():
    for scene, _ in scenes(40):
        for obj in scene.objects:
            polygons = build.mask_to_labelme_polygons(obj.mask)
            assert all(len(p) >= 3 for p in polygons)
    two_parts = np.zeros((16, 16), bool)
    two_parts[2:5, 2:6] = two_parts[9:14, 8:10] = two_parts[0, 15] = True
    assert len(build.mask_to_labelme_polygons(two_parts)) == 3  # checked against the loader inside


# ---------------------------------------------------------------- cache


def test_cache_reuses_and_regenerates_on_a_changed_fingerprint(tmp_path, monkeypatch):
    tiny = SynthConfig(
        refer_images={"train": 1, "val": 1, "testA": 1, "testB": 1},
        reason_images={"train": 1, "val": 1, "test": 1},
    )
    first = ensure_synth(tmp_path, tiny, progress=False)
    assert first.name == build.fingerprint(tiny)
    marker = first / "marker"
    marker.write_text("kept")
    assert ensure_synth(tmp_path, tiny, progress=False) == first and marker.exists()  # reused, not rebuilt
    monkeypatch.setattr(build, "GENERATOR_VERSION", "changed")
    second = ensure_synth(tmp_path, tiny, progress=False)
    assert second != first and (second / "refer_seg" / "synthref" / "instances.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])  # no staging left


def test_cache_keeps_the_copy_of_a_process_that_won_the_race(tmp_path, monkeypatch):
    tiny = SynthConfig(
        refer_images={"train": 1, "val": 1, "testA": 1, "testB": 1},
        reason_images={"train": 1, "val": 1, "test": 1},
    )
    target = tmp_path / build.fingerprint(tiny)

    def rival_finishes_first(out_dir, config, progress):
        target.mkdir()
        (target / "winner").write_text("rival")
        Path(out_dir, "loser").write_text("me")

    monkeypatch.setattr(build, "build_synth", rival_finishes_first)
    assert ensure_synth(tmp_path, tiny) == target
    assert (target / "winner").exists() and not (target / "loser").exists()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    assert build.default_cache_dir() == tmp_path
    monkeypatch.delenv(build.CACHE_ENV)
    assert build.default_cache_dir().name == "synth"


KILLED_GENERATION = """
import os, sys
from pathlib import Path
from bench.synth import build

def killed_half_way(out_dir, config, progress):
    Path(out_dir, "half-written").write_text("x")
    os.kill(os.getpid(), 9)

build.build_synth = killed_half_way
build.ensure_synth(Path(sys.argv[1]), build.SynthConfig(**eval(sys.argv[2])), progress=False)
"""


def test_a_killed_generation_leaves_nothing_the_next_one_does_not_remove(tmp_path):
    import subprocess
    import sys

    tiny = SynthConfig(refer_images={"train": 1, "val": 1, "testA": 1, "testB": 1},
                       reason_images={"train": 1, "val": 1, "test": 1})
    repo = Path(__file__).resolve().parents[3]
    args = [sys.executable, "-c", KILLED_GENERATION, str(tmp_path), repr({"refer_images": tiny.refer_images,
                                                                         "reason_images": tiny.reason_images})]
    killed = subprocess.run(args, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True)
    assert killed.returncode == -9
    assert any(p.name.startswith(".") for p in tmp_path.iterdir())  # the killed generation's staging folder
    target = ensure_synth(tmp_path, tiny, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_live_generation_is_left_alone(tmp_path):
    import fcntl

    staging = tmp_path / ".0123456789abcdef-live"
    staging.mkdir()
    lock = staging.with_name(staging.name + build.STAGING_LOCK_SUFFIX)
    with open(lock, "w") as handle:  # a POSIX lock counts for another process only: hold it in a child
        fcntl.lockf(handle, fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:
            build.remove_stale_staging(tmp_path)
            os._exit(0 if staging.is_dir() and lock.exists() else 1)
        assert os.waitpid(pid, 0)[1] == 0
    build.remove_stale_staging(tmp_path)  # the holder closed the file: the lock is gone, so is the folder
    assert list(tmp_path.iterdir()) == []


def test_no_progress_reaches_the_generation(tmp_path, monkeypatch, capsys):
    from bench.cli import main
    from bench.errors import BenchError
    from bench.synth import suites

    calls = []

    def record(cache_dir, config, progress=True):
        calls.append(progress)
        raise BenchError("stop here")

    monkeypatch.setattr(suites, "ensure_synth", record)
    assert main(["run", "--suite", "synthref", "--model", "empty", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert calls == [False] and "stop here" in capsys.readouterr().err
