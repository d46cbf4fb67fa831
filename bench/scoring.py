"""`bench score`: metrics from a predictions file produced elsewhere, no model involved.

Writes a run directory with the same layout and `run.json` schema as `bench run` (through bench.rundir);
per-sample scoring and aggregation are bench.metrics'. Scoring streams: the predictions file is indexed
(validated, offsets kept), each sample's line is read, scored in RLE space against the ground truth's RLE
(never decoded; the prediction's RLE passes through) and written, so memory does not grow with the samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import BenchError, UnknownSplitError
from bench.loading import read_target_rle
from bench.masks import coco_rle, rle_size
from bench.metrics import Protocol, SegmentationEvaluator, score_rle_sample
from bench.predictions import index_predictions, read_line, write_records
from bench.provenance import git_commit, package_versions
from bench.rundir import RunDir, RunLock, RunRecord, default_run_path, now_iso
from bench.suites import SUITES, Sample

MODEL_NAME = "predictions"  # run.json "model" of a scored file


def score_predictions(
    suite_name: str,
    split: str,
    predictions: Path,
    out: Path | None = None,
    data_root: str | None = None,
    suite_args: dict[str, str] | None = None,
    protocol: Protocol | None = None,
    command: str | None = None,
    label: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Score `predictions` on one split; writes a run directory (run.json, predictions.jsonl, metrics.json).

    An existing run directory is replaced only with `overwrite`."""
    protocol = protocol or Protocol()
    predictions = Path(predictions)
    if not predictions.is_file():
        raise BenchError(f"predictions file not found: {predictions}")
    suite_args = dict(suite_args or {})
    rundir = RunDir(Path(out) if out else default_run_path("score", predictions.stem, suite_name), suites=[suite_name])
    if rundir.exists() and not overwrite:
        raise BenchError(f"{rundir.path} already holds a run; choose another --out or pass --overwrite to replace it")
    suite = SUITES.get(suite_name)(data_root=data_root, **suite_args)
    if split not in suite.splits:
        raise UnknownSplitError(suite_name, [split], suite.splits)
    samples = suite.samples(split)
    index, n_other_split = index_predictions(predictions, split=split)
    wanted = {s.sample_id for s in samples}
    n_outside = n_other_split + sum(sid not in wanted for sid in index)
    run_warnings = [f"{suite_name}: {w}" for w in suite.warnings]
    if n_outside:
        run_warnings.append(f"{n_outside} predictions in {predictions} are not in {suite_name}/{split} and were ignored")
    evaluator = SegmentationEvaluator(protocol)
    rundir.path.mkdir(parents=True, exist_ok=True)
    with RunLock(rundir.path):  # a run, or another bench score, writing the same directory is refused
        with open(predictions, "rb") as handle:
            write_records(rundir.predictions(suite_name), _scored(samples, index, handle, predictions, evaluator))
        n_missing = len(samples) - sum(s.sample_id in index for s in samples)
        if n_missing:
            run_warnings.append(f"{n_missing} samples of {suite_name}/{split} have no prediction: scored as empty masks")
        metrics = {"suite": suite_name, "model": MODEL_NAME, "splits": {split: evaluator.evaluate()}}
        rundir.write_metrics(suite_name, metrics)
        now = now_iso()
        spec = {"suites": [suite_name], "splits": [split], "model": MODEL_NAME, "predictions": str(predictions),
                "data_root": data_root, "suite_args": suite_args, "protocol": protocol.to_dict(), "label": label}
        rundir.write(RunRecord(
            model=MODEL_NAME,
            suites=[suite_name],
            splits={suite_name: [split]},
            status="complete",
            label=label or predictions.stem,
            spec=spec,
            command=command,
            model_config={"predictions": str(predictions)},
            protocol={**protocol.to_dict(), suite_name: suite.protocol()},
            git_commit=git_commit(),
            versions=package_versions(),
            dataset_fingerprints={suite_name: suite.fingerprint()},
            warnings=run_warnings,
            created=now,
            updated=now,
        ))
        return rundir.path, metrics


def _scored(samples: list[Sample], index: dict[str, tuple[int, int]], handle: BinaryIO, path: Path,
            evaluator: SegmentationEvaluator) -> Iterator[dict[str, Any]]:
    """Each sample's record, in sample order, added to `evaluator` as it is produced."""
    for sample in samples:
        where = index.get(sample.sample_id)
        record = None if where is None else read_line(handle, path, *where)
        scored = _score_one(sample, record, evaluator.protocol)
        evaluator.process(scored["sample_id"], scored["intersection"], scored["union"], scored["status"] != "ok")
        yield scored


def _score_one(sample: Sample, record: dict[str, Any] | None, protocol: Protocol) -> dict[str, Any]:
    """Check one prediction and score it in RLE space; a missing, failed or wrongly sized one is scored as failed.

    The size is compared before anything is decoded, so a huge declared size allocates nothing."""
    error, pred = None, None
    if record is None:
        error = "missing from the predictions file"
    elif record["segmentation"] is None:
        error = record.get("error") or "prediction marked failed"
    elif rle_size(record["segmentation"]) != (sample.height, sample.width):
        error = (f"mask size {rle_size(record['segmentation'])} differs from the image size "
                 f"{(sample.height, sample.width)}")
    else:
        pred = coco_rle(record["segmentation"], validated=True)
    target, target_error = read_target_rle(sample, protocol.ignore_value)
    return score_rle_sample(sample.sample_id, sample.split, pred, target_error or error, target, protocol)
