"""Context baselines (bench.models.context) and the objects suites expose for them (Sample.load_objects): every
annotation of a refer image, every ReasonSeg shape but ignore and flag ones; the union, the largest and a seeded
draw, on fixtures the tests write; what a run records; and the report's exact expectation of random-object."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bench.cli import main
from bench.errors import SampleError
from bench.masks import segmentation_to_mask
from bench.metrics import Protocol, intersection_union, sample_iou
from bench.models import MODELS, ModelInput
from bench.models.context import draw
from bench.report import build_report
from bench.suites.base import Sample
from tests.bench.suites.test_reasonseg import TinyReasonSeg, filled, rect, shape, write
from tests.bench.suites.test_refer import ANNOTATIONS, SIZES, TinyRefCOCO, write_dataset


def annotation_mask(ann_id: int) -> np.ndarray:
    """Annotation `ann_id` of the refer fixture rasterised on its own, independently of the suite."""
    annotation = next(a for a in ANNOTATIONS if a["id"] == ann_id)
    return segmentation_to_mask(annotation["segmentation"], *SIZES[annotation["image_id"]])


@pytest.fixture
def refer_samples(tmp_path) -> dict[str, Sample]:
    suite = TinyRefCOCO(write_dataset(tmp_path / "data"))
    return {s.sample_id: s for split in ("val", "testA", "testB") for s in suite.samples(split)}


def inputs(*samples: Sample) -> list[ModelInput]:
    return [ModelInput(sample, np.zeros((sample.height, sample.width, 3), np.uint8), sample.text) for sample in samples]


def test_refer_objects_are_every_annotation_of_the_image(refer_samples):
    first = refer_samples["101"].load_objects()  # image 1: annotations 11 (two polygons) and 12 (an RLE)
    assert len(first) == 2 and all(mask.dtype == bool for mask in first)
    assert np.array_equal(first[0], annotation_mask(11)) and np.array_equal(first[1], annotation_mask(12))
    assert [np.array_equal(a, b) for a, b in zip(refer_samples["201"].load_objects(), first, strict=True)] == [True] * 2
    crowd = refer_samples["301"].load_objects()  # image 2: its one (crowd) annotation
    assert len(crowd) == 1 and np.array_equal(crowd[0], annotation_mask(13))


def test_reasonseg_objects_skip_ignore_and_flag_shapes(tmp_path):
    val = tmp_path / "reason_seg" / "ReasonSeg" / "val"
    write(val, "image_1", [shape("target", rect(0, 0, 3, 3)), shape("ignore region", rect(1, 1, 2, 2)),
                           shape("Flag", rect(8, 8, 12, 10)), shape("flagpole", rect(5, 0, 6, 9))])
    (sample,) = TinyReasonSeg(tmp_path).samples("val")[:1]
    objects = sample.load_objects()
    assert len(objects) == 2  # the target and the flagpole; the ignore region and the flag are no objects
    assert np.array_equal(objects[0], filled((0, 0, 3, 3, 1)) == 1)
    assert np.array_equal(objects[1], filled((5, 0, 6, 9, 1)) == 1)
    assert TinyReasonSeg.objects_are_target and not TinyRefCOCO.objects_are_target


def test_every_largest_and_random_object(refer_samples):
    sample = refer_samples["101"]
    objects = [annotation_mask(11), annotation_mask(12)]
    (union,) = MODELS.get("every-object")().predict(inputs(sample))
    assert np.array_equal(union, objects[0] | objects[1])
    (largest,) = MODELS.get("largest-object")().predict(inputs(sample))
    sizes = [int(mask.sum()) for mask in objects]
    assert sizes[0] != sizes[1] and np.array_equal(largest, objects[int(np.argmax(sizes))])
    picks = []
    for seed in range(12):
        model = MODELS.get("random-object")(seed=seed)
        (first,), (again,) = model.predict(inputs(sample)), model.predict(inputs(sample))
        assert np.array_equal(first, again)  # deterministic per sample id and seed
        index = draw(seed, "101", 2)
        assert np.array_equal(first, objects[index])
        picks.append(index)
    assert set(picks) == {0, 1}  # seeds do draw different objects
    assert draw(0, "101", 2) == draw(0, "101", 2) and {draw(0, str(i), 5) for i in range(40)} == set(range(5))


def test_a_suite_without_objects_fails_the_sample(refer_samples):
    sample = refer_samples["101"]
    bare = Sample(sample.sample_id, sample.split, sample.image_path, sample.text, sample.height, sample.width,
                  sample.load_target)
    with pytest.raises(SampleError, match="exposes no objects"):
        MODELS.get("every-object")().predict(inputs(bare))


def test_a_run_records_the_rule_and_warns_where_the_objects_are_the_target(tmp_path, capsys):
    val = tmp_path / "data" / "reason_seg" / "ReasonSeg" / "val"
    write(val, "image_1", [shape("target", rect(0, 0, 3, 3))])
    write(tmp_path / "data" / "reason_seg" / "ReasonSeg" / "test", "image_2", [shape("target", rect(1, 1, 4, 4))])
    out = tmp_path / "run"
    assert main(["run", "--suite", "reasonseg", "--model", "every-object", "--data-root", str(tmp_path / "data"),
                 "--out", str(out), "--no-progress", "--bootstrap", "0"]) == 0
    run = json.loads((out / "run.json").read_text())
    config = run["model_config"]
    assert config["baseline"] == "context" and config["rule"].startswith("the union of every annotated object")
    assert config["objects"] == {"reasonseg": TinyReasonSeg.objects_rule} and config["objects_are_target"] == ["reasonseg"]
    assert any("reads the answer" in warning for warning in run["warnings"])
    assert "reads the answer" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())["splits"]
    assert metrics["val"]["giou"] == 1.0  # the objects are the target: the row reads the answer


def test_the_report_gives_random_objects_exact_expectation(tmp_path):
    data = write_dataset(tmp_path / "data")
    results = tmp_path / "results"
    run = results / "runs" / "random"
    assert main(["run", "--suite", "refcoco", "--model", "random-object", "--seed", "3", "--data-root", str(data),
                 "--out", str(run), "--no-progress", "--bootstrap", "0"]) == 0
    suite, protocol = TinyRefCOCO(data), Protocol()
    expected = {}
    for split in ("val", "testA", "testB"):
        means = []
        for sample in suite.samples(split):
            target = sample.target()
            ious = [sample_iou(*intersection_union(mask, target, protocol), protocol) for mask in sample.load_objects()]
            means.append(sum(ious) / len(ious))
        expected[split] = f"{100 * sum(means) / len(means):.1f}"
    build_report(results)
    page = (results / "suites" / "refcoco.md").read_text(encoding="utf-8")
    table = page.partition("expected gIoU %")[2].splitlines()[2:]
    table = table[:next(i for i, line in enumerate(table) if not line.startswith("|"))]
    assert {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table} == expected
    index = (results / "REPORT.md").read_text(encoding="utf-8")
    assert f"val {expected['val']}, testA {expected['testA']}, testB {expected['testB']}." in index
    assert "**Context baselines: dataset-bias diagnostics, not models**" in index
    predictions = run / "predictions.jsonl"  # the data are not those the run was scored on: no expectation
    predictions.write_text(re.sub(r'"intersection": \d+', '"intersection": 999', predictions.read_text()))
    build_report(results)
    assert "not computed (the data found here are not those" in (results / "REPORT.md").read_text(encoding="utf-8")


def test_synthreason_objects_are_every_shape_of_its_generated_scene():
    from bench.suites import SUITES
    from bench.synth.build import synthreason_item

    suite = SUITES.get("synthreason")(progress=False)
    assert not suite.objects_are_target
    config = suite.synth_config
    for sample in suite.samples("test")[:5]:
        index = int(sample.sample_id.removeprefix("image_")) - config.reason_images["train"] - config.reason_images["val"]
        scene = synthreason_item(config, "test", index).scene
        objects = sample.load_objects()
        assert len(objects) == len(scene.objects) >= 2
        target = sample.load_target() == 1
        overlaps = [np.logical_and(o, target).sum() / np.logical_or(o, target).sum() for o in objects]
        assert max(overlaps) > 0.9 and sorted(overlaps)[-2] < 0.5  # the target is one of them, the rest are others
