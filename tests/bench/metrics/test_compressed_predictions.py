"""Gzipped predictions (`bench compact`): read transparently by bench score, bench report's reader and
`bench run --resume`, written deterministically, and refused on a run that is not finished."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.rundir.layout import RunDir
from bench.rundir.predictions import (
    PredictionWriter,
    compact_run,
    index_predictions,
    iter_records,
    read_predictions,
    record_line,
    write_records,
)

pytestmark = pytest.mark.filterwarnings("ignore:suite refcoco split")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, refer_dataset) -> Path:
    """A small RefCOCO-layout dataset: 4 images, one ref of two sentences each, all in val."""
    objects = [(i, i, "val", [[3.0 * i, 4.0, 3.0 * i + 12, 4.0, 3.0 * i + 12, 20.0, 3.0 * i, 20.0]],
                [(10 * i, f"thing {i}"), (10 * i + 1, f"box {i}")]) for i in range(1, 5)]
    return refer_dataset(tmp_path_factory.mktemp("data"), {i: (30 + i, 40) for i in range(1, 5)}, objects)


def _run(data_root: Path, out: Path, *extra: str) -> int:
    return main(["run", "--suite", "refcoco", "--split", "val", "--model", "center", "--data-root", str(data_root),
                 "--out", str(out), "--no-progress", "--bootstrap", "50", "--workers", "0", *extra])


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_compact_then_score_report_reader_and_resume(tmp_path, data_root):
    out = tmp_path / "run"
    assert _run(data_root, out) == 0
    plain = (out / "predictions.jsonl").read_bytes()
    metrics = _metrics(out)
    assert main(["compact", str(out)]) == 0
    gz = out / "predictions.jsonl.gz"
    assert gz.is_file() and not (out / "predictions.jsonl").exists()
    assert gzip.decompress(gz.read_bytes()) == plain
    assert RunDir(out).predictions("refcoco") == gz  # what bench report and bench ablate read
    assert [r for _, r in iter_records(gz)] == [json.loads(line) for line in plain.splitlines()]
    # bench score reads it, with the same numbers as from the plain file
    assert main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(gz), "--data-root",
                 str(data_root), "--out", str(tmp_path / "scored"), "--bootstrap", "50"]) == 0
    assert _metrics(tmp_path / "scored") == {**metrics, "model": "predictions"}
    # resuming the compacted run: nothing left to predict, same metrics, the predictions expanded back
    assert _run(data_root, out, "--resume") == 0
    assert _metrics(out) == metrics
    assert (out / "predictions.jsonl").read_bytes() == plain and not gz.exists()


def test_resume_of_a_compacted_run_missing_samples_predicts_only_those(tmp_path, data_root):
    out = tmp_path / "run"
    assert _run(data_root, out) == 0
    plain = (out / "predictions.jsonl").read_bytes()
    metrics = _metrics(out)
    compact_run(out)
    gz = out / "predictions.jsonl.gz"
    lines = gzip.decompress(gz.read_bytes()).splitlines(keepends=True)
    gz.write_bytes(gzip.compress(b"".join(lines[:3])))  # as if the run had stopped after three samples
    assert _run(data_root, out, "--resume") == 0
    assert _metrics(out) == metrics and (out / "predictions.jsonl").read_bytes() == plain


def test_compaction_is_deterministic_and_refuses_unfinished_runs(tmp_path, data_root):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert _run(data_root, out) == 0
        compact_run(out)
    assert (first / "predictions.jsonl.gz").read_bytes() == (second / "predictions.jsonl.gz").read_bytes()
    assert compact_run(first) == [first / "predictions.jsonl.gz"]  # twice: nothing more to do
    with pytest.raises(BenchError, match="holds no run"):
        compact_run(tmp_path / "nothing")
    run_file = first / "run.json"
    run_file.write_text(run_file.read_text().replace('"status": "complete"', '"status": "running"'))
    with pytest.raises(BenchError, match="the run is running"):
        compact_run(first)


def test_gzipped_files_index_and_read_back(tmp_path):
    records = [{"sample_id": str(i), "split": "val", "segmentation": {"size": [2, 2], "counts": "04"},
                "iou": 1.0, "status": "ok", "error": None, "intersection": 4, "union": 4, "area": 4} for i in range(5)]
    gz = tmp_path / "p.jsonl.gz"
    write_records(gz, records)
    assert gzip.decompress(gz.read_bytes()).decode() == "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    index, left_out = index_predictions(gz, split="val")
    assert sorted(index) == [str(i) for i in range(5)] and left_out == 0
    by_id, _ = read_predictions(gz, split="val")
    assert by_id["3"] == records[3]
    with PredictionWriter(gz) as writer:  # a resumed run: expanded back to plain JSONL, then appended to
        writer.write({**records[0], "sample_id": "5"})
    assert not gz.exists() and len((tmp_path / "p.jsonl").read_text().splitlines()) == 6


def test_record_line_is_json_dumps_sorted():
    rng = np.random.default_rng(0)
    samples = ["a", "é\u2028\"\\", "x" * 3]
    for k in range(200):
        inter = int(rng.integers(0, 100))
        record = {"sample_id": samples[k % 3], "split": "val" if k % 2 else "testA",
                  "segmentation": {"size": [int(rng.integers(1, 9)), 5], "counts": "0\\1`o" * (k % 4)},
                  "iou": float(rng.random()) if k % 5 else 1.0, "status": "ok", "error": None,
                  "intersection": inter, "union": inter + int(rng.integers(0, 100)), "area": int(rng.integers(0, 9))}
        assert record_line(record) == json.dumps(record, sort_keys=True) + "\n"
    failed = {**record, "segmentation": None, "status": "failed", "error": "bad \u00e9", "iou": 0.0}
    assert record_line(failed) == json.dumps(failed, sort_keys=True) + "\n"
    odd = {**record, "extra": True}
    assert record_line(odd) == json.dumps(odd, sort_keys=True) + "\n"
