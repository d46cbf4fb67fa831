"""`bench score`: metrics from a predictions file produced elsewhere, no model involved.

Writes a run directory with the same layout and `run.json` schema as `bench run`, held through
bench.rundir.session; per-sample scoring and aggregation are bench.metrics'. Scoring streams: the predictions
file is indexed (validated, offsets kept), the samples' lines are read back in batches of READ_BATCH (their RLEs
validated together), each scored in RLE space against the ground truth's RLE (never decoded; the prediction's
RLE passes through) and written, so memory does not grow with the samples.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import BenchError, UnknownSplitError
from bench.io import refuse_input_as_output
from bench.loading import read_target_rle
from bench.masks import coco_rle, rle_size
from bench.metrics import Protocol, SegmentationEvaluator, score_rle_sample
from bench.rundir.layout import LOCK_FILE, RunDir, default_run_path
from bench.rundir.outcome import OutcomeTally
from bench.rundir.predictions import (
    index_predictions,
    read_lines,
    readable_predictions,
    record_line,
    write_records,
)
from bench.rundir.session import RunSession
from bench.suites import SUITES, Sample

MODEL_NAME = "predictions"  # run.json "model" of a scored file
READ_BATCH = 512  # predictions read and their RLEs validated together (bench.rundir.predictions.read_lines)


@dataclass
class Scored:
    """What `bench score` prints: the run directory, its metrics, notes on the input (run.json's warnings
    about the data and the file) and warnings about the outcome (failed samples, all-empty masks; also in
    run.json, as `bench run` records them)."""

    path: Path
    metrics: dict[str, Any]
    notes: list[str]
    warnings: list[str]
    label: str = ""  # the run's display name (--label, default the predictions file's stem)


def score_predictions(*args: Any, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
    """`score_file`, returning (run directory, metrics)."""
    scored = score_file(*args, **kwargs)
    return scored.path, scored.metrics


def score_file(
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
) -> Scored:
    """Score `predictions` (JSONL, or gzipped JSONL when its name ends in .gz) on one split; writes a run
    directory (run.json, predictions.jsonl, metrics.json). Samples, predictions and records stream: memory
    does not grow with the split.

    An existing run directory is replaced only with `overwrite`."""
    protocol = protocol or Protocol()
    predictions = Path(predictions)
    if not predictions.is_file():
        raise BenchError(f"predictions file not found: {predictions}")
    suite_args = dict(suite_args or {})
    out = Path(out) if out else default_run_path("score", predictions.stem, suite_name)
    written, plain = RunDir(out, suites=[suite_name]), out / "predictions.jsonl"
    # checked before the claim, which makes the lock file: an input is never an output
    refuse_input_as_output(predictions, [written.run_file, written.metrics(suite_name), plain,
                                         plain.with_name(plain.name + ".gz"), out / LOCK_FILE])
    spec = {"suites": [suite_name], "splits": [split], "model": MODEL_NAME, "predictions": str(predictions),
            "data_root": data_root, "suite_args": suite_args, "protocol": protocol.to_dict(), "label": label}
    # a run, or another bench score, writing the same directory is refused
    with RunSession(out, [suite_name], spec, overwrite=overwrite) as session:
        rundir = session.rundir
        suite = SUITES.get(suite_name)(data_root=data_root, **suite_args)
        if split not in suite.splits:
            raise UnknownSplitError(suite_name, [split], suite.splits)
        samples = suite.iter_samples(split)
        first = next(samples, None)  # the split is read and checked here, before anything is written
        index, n_other_split = index_predictions(predictions, split=split)  # offsets into the plain (gunzipped) text
        with readable_predictions(predictions) as plain, open(plain, "rb") as handle:
            run_warnings = [f"{suite_name}: {w}" for w in suite.warnings]
            evaluator = SegmentationEvaluator(protocol)
            tally = OutcomeTally(suite_name, split)
            stream = _scored(itertools.chain([first] if first else [], samples), index, handle, predictions,
                             evaluator, tally)
            write_records(rundir.predictions(suite_name), stream, encode=record_line)
        n_outside = n_other_split + len(index) - tally.n_predicted
        if n_outside:
            run_warnings.append(f"{n_outside} predictions in {predictions} are not in {suite_name}/{split} and "
                                "were ignored")
        n_missing = tally.n - tally.n_predicted
        if n_missing:
            run_warnings.append(f"{n_missing} samples of {suite_name}/{split} have no prediction: scored as "
                                "empty masks")
        outcome = tally.warnings()
        metrics = {"suite": suite_name, "model": MODEL_NAME, "splits": {split: evaluator.evaluate()}}
        rundir.write_metrics(suite_name, metrics)
        session.write_record(
            "complete",
            command=command,
            model=MODEL_NAME,
            suites=[suite_name],
            splits={suite_name: [split]},
            label=label or predictions.stem,
            model_config={"predictions": str(predictions)},
            protocol={**protocol.to_dict(), suite_name: suite.protocol()},
            dataset_fingerprints={suite_name: suite.fingerprint()},
            warnings=run_warnings + outcome,
        )
        return Scored(rundir.path, metrics, run_warnings, outcome, label or predictions.stem)


def _scored(samples: Iterable[Sample], index: dict[str, tuple[int, int]], handle: BinaryIO, path: Path,
            evaluator: SegmentationEvaluator, tally: OutcomeTally) -> Iterator[dict[str, Any]]:
    """Each sample's record, in sample order, added to `evaluator` and `tally` as it is produced."""
    samples = iter(samples)
    while batch := list(itertools.islice(samples, READ_BATCH)):
        places = [index.get(sample.sample_id) for sample in batch]
        for sample, where, record in zip(batch, places, read_lines(handle, path, places), strict=True):
            scored = _score_one(sample, record, evaluator.protocol)
            evaluator.process(scored["sample_id"], scored["intersection"], scored["union"], scored["status"] != "ok")
            tally.add(scored, where is not None)
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
