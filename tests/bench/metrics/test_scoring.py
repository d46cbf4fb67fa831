"""`bench score` in RLE space, end to end: the same numbers as decoding everything, bad RLEs named, no big
allocations for a wrong size, and no deep-learning import."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bench.cli import main
from bench.errors import BenchError
from bench.masks import encode_rle
from bench.score_command import score_predictions

REPO = Path(__file__).resolve().parents[3]
H, W = 24, 32
pytestmark = pytest.mark.filterwarnings("ignore:suite refcoco split")  # the fixture is not the real size


def _segmentation(kind: str, mask: np.ndarray):
    """The ground truth in one of the COCO forms; `short` is an RLE covering fewer pixels than its size."""
    if kind == "polygons":
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        return [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)], [0.0, 0.0, 4.0, 0.0, 4.0, 3.0]]
    if kind == "compressed":
        return encode_rle(mask)
    if kind == "uncompressed":
        flat = mask.flatten(order="F").astype(int)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
        return {"size": [H, W], "counts": np.diff(np.concatenate(([0], edges))).tolist()}
    return {"size": [H, W], "counts": "0111"}  # short: runs 0, 1, 1, 2 cover 4 pixels


KINDS = ["polygons", "compressed", "uncompressed", "polygons", "compressed", "short"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, refer_dataset) -> Path:
    """A refer-format set: 12 sentences over 6 images; ground truth in every COCO form, one of them broken."""
    rng = np.random.default_rng(0)
    objects = []
    for image_id, kind in enumerate(KINDS, start=1):
        mask = np.zeros((H, W), bool)
        y, x = rng.integers(2, 10), rng.integers(2, 14)
        mask[y : y + rng.integers(3, 12), x : x + rng.integers(3, 16)] = True
        objects.append((image_id, image_id, "val", _segmentation(kind, mask),
                        [(10 * image_id, "the box"), (10 * image_id + 1, "that box")]))
    sizes = dict.fromkeys(range(1, len(KINDS) + 1), (H, W))
    return refer_dataset(tmp_path_factory.mktemp("data"), sizes, objects, pixels=None, category="box")  # reads no image


def _targets(data_root: Path) -> dict[str, np.ndarray | None]:
    """Naive reference: every ground truth decoded to a dense mask by pycocotools (None for the broken one)."""
    instances = json.loads((data_root / "refer_seg" / "refcoco" / "instances.json").read_text())
    targets = {}
    for annotation, kind in zip(instances["annotations"], KINDS):
        segmentation = annotation["segmentation"]
        if kind == "short":
            mask = None
        elif kind == "polygons":
            mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, H, W))).astype(bool)
        else:
            rle = mask_utils.frPyObjects(segmentation, H, W) if kind == "uncompressed" else {
                "size": segmentation["size"], "counts": segmentation["counts"].encode()}
            mask = mask_utils.decode(rle).astype(bool)
        for sent in (0, 1):
            targets[str(10 * annotation["image_id"] + sent)] = mask
    return targets


def _score(data_root: Path, predictions: Path, out: Path) -> int:
    return main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(predictions),
                 "--data-root", str(data_root), "--out", str(out), "--bootstrap", "0"])


def test_scores_equal_decoding_everything_with_numpy(tmp_path, data_root):
    targets = _targets(data_root)
    rng = np.random.default_rng(1)
    preds: dict[str, np.ndarray | None] = {}
    lines = []
    for index, sample_id in enumerate(sorted(targets)):
        if index == 3:
            continue  # missing: its gt area still enters the union
        pred = rng.random((H, W)) < 0.3 if index % 2 else np.zeros((H, W), bool)
        if index == 5:
            pred = targets[sample_id].copy()
        preds[sample_id] = pred
        lines.append(json.dumps({"sample_id": sample_id, "segmentation": encode_rle(pred)}))
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("\n".join(lines) + "\n")
    assert _score(data_root, predictions, tmp_path / "run") == 0
    records = {r["sample_id"]: r for r in map(json.loads, (tmp_path / "run" / "predictions.jsonl").open())}
    inters = unions = 0
    for sample_id, target in targets.items():
        record, pred = records[sample_id], preds.get(sample_id)
        if target is None:  # the broken ground truth fails its samples, with the reason
            assert record["status"] == "failed" and "counts cover 4 pixels" in record["error"]
            continue
        inter = int(np.count_nonzero(pred & target)) if pred is not None else 0
        union = int(np.count_nonzero(pred | target)) if pred is not None else int(target.sum())
        assert (record["intersection"], record["union"]) == (inter, union), sample_id
        if pred is not None:
            assert record["segmentation"] == encode_rle(pred) and record["area"] == int(pred.sum())
        inters, unions = inters + inter, unions + union
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["splits"]["val"]
    assert metrics["ciou"] == pytest.approx(inters / unions, abs=1e-12) and metrics["n_failed"] == 3


def test_a_short_prediction_rle_is_an_error_naming_the_line_every_time(tmp_path, data_root, capsys):
    predictions = tmp_path / "p.jsonl"
    short = {"size": [H, W], "counts": encode_rle(np.ones((H, W - 1), bool))["counts"]}  # 24 pixels short
    predictions.write_text(json.dumps({"sample_id": "10", "segmentation": encode_rle(np.ones((H, W), bool))}) + "\n"
                           + json.dumps({"sample_id": "11", "segmentation": short}) + "\n")
    messages = set()
    for attempt in range(3):
        assert _score(data_root, predictions, tmp_path / f"run{attempt}") != 0
        messages.add(capsys.readouterr().err.replace(f"run{attempt}", "run"))
    assert len(messages) == 1
    assert f"{predictions}:2: bad 'segmentation' RLE: counts cover 744 pixels, size 24x32 needs 768" in messages.pop()
    assert not (tmp_path / "run0" / "predictions.jsonl").exists()


def test_a_huge_declared_size_fails_its_sample_without_allocating(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(mask_utils, "decode", lambda *a: pytest.fail("bench score decoded a mask"))
    huge = {"size": [100_000, 100_000], "counts": [0, 2**32 - 1, 2**32 - 1, 10**10 - 2 * (2**32 - 1)]}  # 9.3 GiB
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"sample_id": "10", "segmentation": huge}) + "\n")
    tracemalloc.start()
    try:
        assert _score(data_root, predictions, tmp_path / "run") == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    record = json.loads((tmp_path / "run" / "predictions.jsonl").open().readline())
    assert record["status"] == "failed"
    assert record["error"] == "mask size (100000, 100000) differs from the image size (24, 32)"


def test_bench_score_imports_no_deep_learning_library(tmp_path, data_root):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"sample_id": "10", "segmentation": None}) + "\n")
    code = (
        "import sys\n"
        "from bench.cli import main\n"
        f"assert main(['score', '--suite', 'refcoco', '--split', 'val', '--predictions', {str(predictions)!r}, "
        f"'--data-root', {str(data_root)!r}, '--out', {str(tmp_path / 'run')!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'genmask') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=REPO,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_bench_score_refuses_a_directory_another_run_is_writing(tmp_path, data_root):
    predictions = tmp_path / "empty.jsonl"
    predictions.write_text("", encoding="utf-8")
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(  # another process holds the run directory's lock, as a run in progress does
        [sys.executable, "-c", "import sys, time; from bench.rundir.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
         "print('ready', flush=True); time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(BenchError, match="is being written by another run"):
            score_predictions("refcoco", "val", predictions, out=out, data_root=str(data_root), overwrite=True)
        assert not (out / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    score_predictions("refcoco", "val", predictions, out=out, data_root=str(data_root), overwrite=True)
    assert (out / "run.json").exists() and not (out / ".lock").exists()


def test_refer_samples_stream_as_they_list(data_root):
    from bench.suites import SUITES

    suite = SUITES.get("refcoco")(data_root=data_root)
    listed = suite.samples("val")
    streamed = list(SUITES.get("refcoco")(data_root=data_root).iter_samples("val"))
    assert [(s.sample_id, s.text, s.image_path, s.meta) for s in listed] == \
        [(s.sample_id, s.text, s.image_path, s.meta) for s in streamed]
    from bench.loading import read_target

    for a, b in zip(listed, streamed, strict=True):
        (ta, ea), (tb, eb) = read_target(a), read_target(b)
        assert ea == eb and (ta is None) == (tb is None) and (ta is None or np.array_equal(ta, tb))


@pytest.mark.parametrize("short_first", [False, True])
def test_batched_reading_raises_the_first_bad_rle_in_sample_order(tmp_path, data_root, capsys, short_first):
    """Predictions are read and their RLEs validated in batches; the error is still the first one a
    sample-by-sample reading meets, naming its file and line."""
    ids = [str(10 * image + sent) for image in range(1, len(KINDS) + 1) for sent in (0, 1)]  # sample order
    good = encode_rle(np.ones((H, W), bool))
    short = {"size": [H, W], "counts": encode_rle(np.ones((H, W - 1), bool))["counts"]}
    unterminated = {"size": [H, W], "counts": good["counts"] + "P"}
    lines = [json.dumps({"sample_id": sid, "segmentation": good}) for sid in ids]
    at_short, at_unterminated = (3, 5) if short_first else (5, 3)
    lines[at_short] = json.dumps({"sample_id": ids[at_short], "segmentation": short})
    lines[at_unterminated] = json.dumps({"sample_id": ids[at_unterminated], "segmentation": unterminated})
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("\n".join(lines[::-1]) + "\n")  # file order is not sample order
    assert _score(data_root, predictions, tmp_path / "run") != 0
    message = capsys.readouterr().err
    if short_first:
        assert f"{predictions}:{len(ids) - at_short}: bad 'segmentation' RLE: counts cover 744 pixels" in message
    else:
        assert f"{predictions}:{len(ids) - at_unterminated}: bad 'segmentation' RLE: counts string ends" in message
