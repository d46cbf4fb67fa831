"""ReasonSeg loader on tiny image/JSON pairs written in the real LabelMe-style format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import bench.suites.reasonseg as reasonseg
from bench.errors import BenchError, DataFormatError, DataNotFoundError, SampleError
from bench.suites.base import IGNORE, SUITES
from bench.suites.reasonseg import ReasonSegSuite, natural_key, paint_target, polygon_area
from bench.suites.writers import write_reasonseg_sample

H, W = 12, 16


def rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """Polygon of the rectangle with corners (x0, y0) and (x1, y1); painted it covers both corners."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def filled(*boxes: tuple[int, int, int, int, int]) -> np.ndarray:
    """Independent reference: paint inclusive rectangles (x0, y0, x1, y1, value) in the given order."""
    target = np.zeros((H, W), dtype=np.uint8)
    for x0, y0, x1, y1, value in boxes:
        target[y0 : y1 + 1, x0 : x1 + 1] = value
    return target


def image() -> np.ndarray:
    return np.full((H, W, 3), 90, dtype=np.uint8)


def write(
    split_dir: Path, stem: str, shapes: list[dict], is_sentence: bool = False, texts=None, **kwargs
) -> None:
    write_reasonseg_sample(split_dir, stem, image(), texts or [f"find {stem}"], is_sentence, shapes, **kwargs)


def shape(label: str, points: list) -> dict:
    return {"label": label, "points": points}


@pytest.fixture
def data_root(tmp_path) -> Path:
    base = tmp_path / "data" / "reason_seg" / "ReasonSeg"
    val, test = base / "val", base / "test"
    # small ignore region listed first, inside a larger target: the target is painted first
    write(val, "image_1", [shape("ignore", rect(4, 4, 6, 6)), shape("target", rect(2, 2, 10, 8))])
    write(val, "image_10", [shape("target", rect(0, 0, 3, 3)), shape("flag", rect(8, 8, 12, 10))])
    write(val, "image_2", [shape("target", rect(1, 1, 2, 2))], texts=["what is it", "where is it", "third"])
    write(test, "long_1", [shape("target", rect(0, 0, 5, 5))], is_sentence=True)
    write(test, "long_2", [], is_sentence=True)  # no polygons, as 2 real test files
    write(test, "short_1", [shape("Target", rect(3, 3, 4, 4))], texts=["café sign"], encoding="cp1252")
    write(test, "short_2", [shape("target", rect(1, 1, 2, 2))], image_ext=".png")
    write(test, "short_3", [shape("target", rect(1, 1, 2, 2))])
    (test / "short_3.jpg").unlink()
    return tmp_path / "data"


class TinyReasonSeg(ReasonSegSuite):
    """ReasonSeg whose expected counts are those of the tiny fixture."""

    expected_counts = {"val": 3, "test": 5}


def by_id(samples):
    return {s.sample_id: s for s in samples}


def test_registered():
    assert SUITES.get("reasonseg") is ReasonSegSuite
    assert ReasonSegSuite.splits == ("val", "test", "test-short", "test-long")


def test_natural_order_and_first_text(data_root):
    samples = TinyReasonSeg(data_root).samples("val")
    assert [s.sample_id for s in samples] == ["image_1", "image_2", "image_10"]
    assert samples[1].text == "what is it"
    assert (samples[0].height, samples[0].width) == (H, W)
    assert samples[0].load_image().shape == (H, W, 3)
    assert sorted(["b10", "b9", "a"], key=natural_key) == ["a", "b9", "b10"]


def test_texts_all_gives_one_sample_per_instruction(data_root):
    suite = TinyReasonSeg(data_root, texts="all")
    samples = by_id(suite.samples("val"))
    assert [k for k in samples if k.startswith("image_2")] == ["image_2", "image_2:1", "image_2:2"]
    assert samples["image_2:2"].text == "third"
    assert len(samples) == 5
    assert suite.protocol()["texts"] == "all"
    with pytest.raises(BenchError, match="texts must be one of"):
        ReasonSegSuite(data_root, texts="random")
    with pytest.raises(BenchError, match="no option split_by"):
        ReasonSegSuite(data_root, split_by="unc")


def test_smaller_ignore_region_stays_on_top_of_larger_target(data_root):
    target = by_id(TinyReasonSeg(data_root).samples("val"))["image_1"].target()
    np.testing.assert_array_equal(target, filled((2, 2, 10, 8, 1), (4, 4, 6, 6, IGNORE)))


def test_larger_polygon_painted_first_whatever_the_list_order():
    small_then_large = [shape("target", rect(4, 4, 6, 6)), shape("ignore", rect(0, 0, 12, 10))]
    np.testing.assert_array_equal(
        paint_target(small_then_large, H, W), filled((0, 0, 12, 10, IGNORE), (4, 4, 6, 6, 1))
    )


def test_flag_shapes_are_skipped_and_labels_compared_case_insensitively(data_root):
    suite = TinyReasonSeg(data_root)
    with_flag = by_id(suite.samples("val"))["image_10"]
    np.testing.assert_array_equal(with_flag.target(), filled((0, 0, 3, 3, 1)))
    capitalised = by_id(suite.samples("test"))["short_1"]  # label "Target"
    np.testing.assert_array_equal(capitalised.target(), filled((3, 3, 4, 4, 1)))


def test_only_a_label_equal_to_flag_is_skipped_as_in_lisa():
    shapes = [shape("Flag", rect(0, 0, 3, 3)), shape("flagpole", rect(4, 4, 6, 6))]
    np.testing.assert_array_equal(paint_target(shapes, H, W), filled((4, 4, 6, 6, 1)))


def test_fractional_vertices_are_truncated_like_lisa():
    fractional = [[1.9, 1.2], [4.7, 1.2], [4.7, 3.99], [1.9, 3.99]]
    np.testing.assert_array_equal(paint_target([shape("t", fractional)], H, W), filled((1, 1, 4, 3, 1)))


def test_polygon_area_is_the_shoelace_area():
    assert polygon_area(np.array(rect(0, 0, 4, 3))) == 12.0
    assert polygon_area(np.array([[0, 0], [4, 0], [0, 3]])) == 6.0


def test_file_without_polygons_gives_an_empty_target(data_root):
    target = by_id(TinyReasonSeg(data_root).samples("test-long"))["long_2"].target()
    assert target.shape == (H, W) and not target.any()


def test_short_long_partition_of_test(data_root):
    suite = TinyReasonSeg(data_root)
    test = by_id(suite.samples("test"))
    short, long = by_id(suite.samples("test-short")), by_id(suite.samples("test-long"))
    assert sorted(short) == ["short_1", "short_2", "short_3"]
    assert sorted(long) == ["long_1", "long_2"]
    assert sorted(short | long) == sorted(test)
    assert all(s.split == "test-short" and not s.meta["is_sentence"] for s in short.values())
    assert all(s.meta["is_sentence"] for s in long.values())


def test_cp1252_json_is_read(data_root):
    raw = (data_root / "reason_seg/ReasonSeg/test/short_1.json").read_bytes()
    assert "café".encode("cp1252") in raw  # the fixture really is not UTF-8
    assert by_id(TinyReasonSeg(data_root).samples("test"))["short_1"].text == "café sign"


def test_png_image_and_missing_image(data_root):
    samples = by_id(TinyReasonSeg(data_root).samples("test"))
    assert samples["short_2"].image_path.suffix == ".png"
    assert samples["short_2"].load_image().shape == (H, W, 3)
    missing = samples["short_3"]
    assert (missing.height, missing.width) == (H, W)  # from imageHeight / imageWidth
    with pytest.raises(SampleError, match="short_3"):
        missing.load_image()


def test_size_from_image_header_when_json_lacks_it(data_root):
    path = data_root / "reason_seg/ReasonSeg/val/image_2.json"
    annotation = json.loads(path.read_text())
    del annotation["imageHeight"], annotation["imageWidth"]
    path.write_text(json.dumps(annotation))
    sample = by_id(TinyReasonSeg(data_root).samples("val"))["image_2"]
    assert (sample.height, sample.width) == (H, W)


def test_targets_are_painted_lazily(data_root, monkeypatch):
    calls = []
    real = reasonseg.paint_target
    monkeypatch.setattr(reasonseg, "paint_target", lambda *args: calls.append(args) or real(*args))
    samples = TinyReasonSeg(data_root).samples("val")
    assert calls == []
    samples[0].target()
    assert len(calls) == 1


def test_count_warnings(data_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suite = TinyReasonSeg(data_root)
        for split in suite.splits:
            suite.samples(split)
    suite = ReasonSegSuite(data_root)
    suite.samples("test-short")
    suite.samples("test-long")  # the test directory is read (and counted) once
    assert len(suite.warnings) == 1
    assert "reasonseg split test: expected 779 images (JSON files), found 5" in suite.warnings[0]


def test_malformed_json_names_file_and_line(data_root):
    path = data_root / "reason_seg/ReasonSeg/val/image_2.json"
    path.write_text('{"text": ["a"],\n "is_sentence": tru}')
    with pytest.raises(DataFormatError, match=r"image_2\.json: line 2 column"):
        TinyReasonSeg(data_root).samples("val")
    path.write_text('{"text": "a", "is_sentence": false, "shapes": []}')
    with pytest.raises(DataFormatError, match=r"image_2\.json: 'text' must be"):
        TinyReasonSeg(data_root).samples("val")


def test_missing_data(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        ReasonSegSuite(missing).samples("val")
    assert info.value.exit_code == 2
    assert str(missing / "reason_seg/ReasonSeg/val") in str(info.value)
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    with pytest.raises(DataNotFoundError, match="BENCH_DATA_ROOT"):
        ReasonSegSuite().samples("val")


def test_fingerprint_tracks_json_contents(data_root):
    first = TinyReasonSeg(data_root).fingerprint()
    assert first == TinyReasonSeg(data_root).fingerprint()
    write(
        data_root / "reason_seg/ReasonSeg/test",
        "long_1",
        [shape("target", rect(0, 0, 6, 5))],
        is_sentence=True,
    )
    assert TinyReasonSeg(data_root).fingerprint() != first


def test_split_dir_hook(data_root):
    class Relocated(TinyReasonSeg):
        def split_dir(self, split: str) -> Path:
            return data_root / "reason_seg/ReasonSeg" / ("test" if split.startswith("test") else split)

    assert len(Relocated().samples("test-long")) == 2
