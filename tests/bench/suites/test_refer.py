"""RefCOCO-family loader on a tiny dataset written in the real refer format."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench.suites.refer as refer
from bench.errors import BenchError, DataFormatError, DataNotFoundError
from bench.masks import encode_rle
from bench.suites.base import SUITES
from bench.suites.refer import RefCOCO, RefCOCOg, split_matches
from bench.suites.writers import coco_image_name, make_ref, write_refer_dataset

SIZES = {1: (8, 10), 2: (6, 7)}  # image_id -> (height, width)

RLE_MASK = np.zeros((8, 10), dtype=bool)
RLE_MASK[2:6, 3:9] = True
RLE_MASK[7, 0] = True

CROWD_MASK = np.zeros((6, 7), dtype=bool)
CROWD_MASK[1:4, 2:5] = True
CROWD_MASK[5, 6] = True


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths of the column-major pixels, starting with a run of zeros."""
    pixels = mask.flatten(order="F").astype(int)
    counts, current, run = [], 0, 0
    for value in pixels:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


ANNOTATIONS = [
    # two overlapping rectangles: x 1..5, y 1..5 and x 3..8, y 3..6
    {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 7, 5],
     "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5], [3, 3, 8, 3, 8, 6, 3, 6]]},
    {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [0, 2, 9, 6],
     "segmentation": encode_rle(RLE_MASK)},
    {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [2, 1, 5, 5],
     "segmentation": uncompressed_rle(CROWD_MASK)},
]  # fmt: skip

REFS = [
    make_ref(1, 11, 1, 1, "val", [(101, "left square"), (102, "the big shape")]),
    make_ref(2, 12, 1, 2, "testA", [(201, "the blob")]),
    make_ref(3, 13, 2, 1, "testB", [(301, "crowd")]),
    make_ref(4, 12, 1, 2, "testAB", [(401, "blob again")]),
    make_ref(5, 11, 1, 1, "train", [(501, "training sentence")]),
]


def write_dataset(
    root: Path, dataset: str = "refcoco", split_by: str = "unc", refs: list | None = None
) -> Path:
    """The tiny dataset under root/refer_seg (images included) in the LISA layout; returns root."""
    images = [
        {"id": i, "file_name": coco_image_name(i), "height": h, "width": w} for i, (h, w) in SIZES.items()
    ]
    categories = [{"id": 1, "name": "thing"}, {"id": 2, "name": "blob"}]
    write_refer_dataset(root / "refer_seg", dataset, split_by, images, ANNOTATIONS, refs or REFS, categories)
    image_dir = root / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        pixels = np.full((image["height"], image["width"], 3), 128, dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / image["file_name"])
    return root


class TinyRefCOCO(RefCOCO):
    """RefCOCO whose expected counts are those of the tiny dataset, so loading it warns of nothing."""

    expected_counts = {
        "val": {"refs": 1, "images": 1},
        "testA": {"refs": 2},
        "testB": {"refs": 2, "images": 2},
    }


@pytest.fixture
def data_root(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def suite(data_root) -> TinyRefCOCO:
    return TinyRefCOCO(data_root)


def by_id(samples):
    return {s.sample_id: s for s in samples}


def test_registered_suites():
    assert SUITES.get("refcoco") is RefCOCO
    assert SUITES.get("refcoco+").dataset == "refcoco+"
    assert SUITES.get("refcocog") is RefCOCOg
    assert RefCOCOg.splits == ("val", "test")


@pytest.mark.parametrize(
    "requested, ref_split, expected",
    [
        ("testA", "testA", True),
        ("testA", "testAB", True),
        ("testA", "testB", False),
        ("testB", "testAB", True),
        ("test", "testB", True),
        ("test", "test", True),
        ("test", "val", False),
        ("val", "val", True),
        ("val", "valA", False),
        ("train", "train", True),
        ("testAB", "testA", False),
    ],
)
def test_split_matching_follows_refer(requested, ref_split, expected):
    assert split_matches(requested, ref_split) is expected


def test_one_sample_per_sentence_with_ids_texts_and_sizes(suite, data_root):
    val = by_id(suite.samples("val"))
    assert list(val) == ["101", "102"]
    assert val["101"].text == "left square" and val["102"].text == "the big shape"
    first = val["101"]
    assert first.split == "val"
    assert (first.height, first.width) == SIZES[1]
    assert first.image_path == data_root / "refer_seg/images/mscoco/images/train2014" / coco_image_name(1)
    assert first.meta == {"ref_id": 1, "ann_id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0}
    assert first.load_image().shape == (8, 10, 3)


def test_test_letter_splits_include_combined_splits(suite):
    assert sorted(by_id(suite.samples("testA"))) == ["201", "401"]
    assert sorted(by_id(suite.samples("testB"))) == ["301", "401"]
    assert all(s.split == "testB" for s in suite.samples("testB"))


def test_refcocog_test_matches_every_test_split(tmp_path):
    root = write_dataset(tmp_path, "refcocog", "umd")
    samples = RefCOCOg(root).samples("test")
    assert sorted(by_id(samples)) == ["201", "301", "401"]


def test_polygon_parts_are_merged_with_or(suite):
    target = by_id(suite.samples("val"))["101"].target()
    expected = np.zeros((8, 10), dtype=np.uint8)
    expected[1:5, 1:5] = 1
    expected[3:6, 3:8] = 1
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target, expected)  # the overlap stays 1, never 2


def test_compressed_and_uncompressed_rle_targets(suite):
    np.testing.assert_array_equal(by_id(suite.samples("testA"))["201"].target(), RLE_MASK.astype(np.uint8))
    crowd = by_id(suite.samples("testB"))["301"]
    assert crowd.meta["iscrowd"] == 1
    np.testing.assert_array_equal(crowd.target(), CROWD_MASK.astype(np.uint8))


def test_targets_are_decoded_lazily(suite, monkeypatch):
    calls = []
    real = refer.segmentation_rle
    monkeypatch.setattr(refer, "segmentation_rle", lambda *args: calls.append(args) or real(*args))
    samples = suite.samples("val")
    assert calls == []
    samples[0].target()
    assert len(calls) == 1


def test_files_are_parsed_once_per_suite(suite, data_root):
    suite.samples("val")
    (data_root / "refer_seg/refcoco/refs(unc).p").unlink()
    assert len(suite.samples("testA")) == 2


def test_matching_counts_warn_of_nothing(suite):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for split in suite.splits:
            suite.samples(split)
    assert suite.warnings == []


def test_count_mismatch_warns_with_suite_split_and_numbers(data_root):
    suite = RefCOCO(data_root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an expected condition: recorded, not a Python warning
        suite.samples("val")
    assert len(suite.warnings) == 2
    assert "refcoco split val: expected 3811 refs, found 1" in suite.warnings[0]
    assert "refcoco split val: expected 1500 images, found 1" in suite.warnings[1]


def test_split_by_option(tmp_path):
    root = write_dataset(tmp_path, "refcoco", "google", refs=REFS[:1])
    suite = RefCOCO(root, split_by="google")
    assert suite.protocol() == {
        "dataset": "refcoco",
        "split_by": "google",
        "texts": "all sentences of every ref",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # published counts are for unc only
        assert len(suite.samples("val")) == 2
    with pytest.raises(BenchError, match="split_by 'umd'"):
        RefCOCO(root, split_by="umd")
    with pytest.raises(BenchError, match="split_by 'google'"):
        SUITES.get("refcoco+")(root, split_by="google")
    with pytest.raises(BenchError, match="no option texts"):
        RefCOCO(root, texts="all")


def test_empty_split_warns(tmp_path):
    root = write_dataset(tmp_path, refs=REFS[:1])
    suite = RefCOCO(root)
    assert suite.samples("testA") == []
    assert "no refs match" in suite.warnings[0]


def test_missing_data_root_or_files(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        RefCOCO(missing).samples("val")
    assert info.value.exit_code == 2
    assert str(missing / "refer_seg/refcoco/refs(unc).p") in str(info.value)
    assert "refer_seg/refcocog/{refs(umd).p, instances.json}" in str(info.value)

    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    with pytest.raises(DataNotFoundError, match="BENCH_DATA_ROOT"):
        RefCOCO().samples("val")


def test_data_root_from_environment(data_root, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_ROOT", str(data_root))
    assert len(TinyRefCOCO().samples("val")) == 2


def test_missing_image_directory(data_root):
    image_dir = data_root / "refer_seg/images/mscoco/images/train2014"
    for path in image_dir.iterdir():
        path.unlink()
    image_dir.rmdir()
    with pytest.raises(DataNotFoundError, match="train2014"):
        TinyRefCOCO(data_root).samples("val")


def test_malformed_instances_json_names_the_file_and_line(data_root):
    instances = data_root / "refer_seg/refcoco/instances.json"
    instances.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(DataFormatError, match=r"instances\.json: line 2 column"):
        TinyRefCOCO(data_root).samples("val")


def test_ref_pointing_at_missing_annotation(data_root):
    instances = data_root / "refer_seg/refcoco/instances.json"
    instances.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(DataFormatError, match=r"instances\.json: has no image 1 \(needed by ref 1\)"):
        TinyRefCOCO(data_root).samples("val")


def test_fingerprint_is_stable_and_tracks_contents(data_root):
    first = TinyRefCOCO(data_root).fingerprint()
    assert len(first) == 16 and first == TinyRefCOCO(data_root).fingerprint()
    instances = data_root / "refer_seg/refcoco/instances.json"
    instances.write_text(instances.read_text() + " ")
    assert TinyRefCOCO(data_root).fingerprint() != first


def test_hooks_relocate_the_files(tmp_path):
    root = write_dataset(tmp_path / "elsewhere")

    class Relocated(TinyRefCOCO):
        def refer_root(self) -> Path:
            return root / "refer_seg"

        def image_dir(self) -> Path:
            return root / "refer_seg/images/mscoco/images/train2014"

    assert len(Relocated().samples("val")) == 2
