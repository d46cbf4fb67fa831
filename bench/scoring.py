"""`bench score`: metrics from a predictions file produced elsewhere, no model involved.

Writes a run directory with the same layout and `run.json` schema as `bench run` (through bench.rundir);
per-sample scoring and aggregation are bench.metrics', the same functions the runner uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError, UnknownSplitError
from bench.loading import read_target
from bench.masks import decode_rle
from bench.metrics import Protocol, score_records, score_sample
from bench.predictions import read_predictions, write_records
from bench.provenance import git_commit, package_versions
from bench.rundir import RunDir, RunRecord, default_run_path, now_iso
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
    by_id, n_other_split = read_predictions(predictions, split=split)
    wanted = {s.sample_id for s in samples}
    n_outside = n_other_split + sum(sid not in wanted for sid in by_id)
    run_warnings = [f"{suite_name}: {w}" for w in suite.warnings]
    if n_outside:
        run_warnings.append(f"{n_outside} predictions in {predictions} are not in {suite_name}/{split} and were ignored")
    records = [_score_one(s, by_id.get(s.sample_id), protocol) for s in samples]
    n_missing = sum(r["error"] == "missing from the predictions file" for r in records)
    if n_missing:
        run_warnings.append(f"{n_missing} samples of {suite_name}/{split} have no prediction: scored as empty masks")
    metrics = {"suite": suite_name, "model": MODEL_NAME, "splits": {split: score_records(records, protocol)}}
    rundir.path.mkdir(parents=True, exist_ok=True)
    write_records(rundir.predictions(suite_name), records)
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


def _score_one(sample: Sample, record: dict[str, Any] | None, protocol: Protocol) -> dict[str, Any]:
    """Decode and check one prediction; a missing, failed or wrongly sized one is scored as failed."""
    error, mask = None, None
    if record is None:
        error = "missing from the predictions file"
    elif record["segmentation"] is None:
        error = record.get("error") or "prediction marked failed"
    else:
        mask = decode_rle(record["segmentation"])
        if mask.shape != (sample.height, sample.width):
            error = f"mask size {mask.shape} differs from the image size {(sample.height, sample.width)}"
            mask = None
    target, target_error = read_target(sample)
    return score_sample(sample.sample_id, sample.split, mask, target_error or error, target, protocol)
