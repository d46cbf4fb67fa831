"""`bench score`: metrics from a predictions file produced elsewhere, no model involved."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.masks import decode_rle
from bench.metrics import Protocol
from bench.predictions import read_predictions, write_records
from bench.provenance import git_commit, now_iso, package_versions
from bench.runner import score_records, score_sample, write_json
from bench.suites import SUITES, Sample


def score_predictions(
    suite_name: str,
    split: str,
    predictions: Path,
    out: Path | None = None,
    data_root: str | None = None,
    suite_args: dict[str, str] | None = None,
    protocol: Protocol | None = None,
    command: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Score `predictions` on one split; writes a run directory (run.json, predictions.jsonl, metrics.json)."""
    protocol = protocol or Protocol()
    predictions = Path(predictions)
    if not predictions.is_file():
        raise BenchError(f"predictions file not found: {predictions}")
    suite = SUITES.get(suite_name)(data_root=data_root, **(suite_args or {}))
    samples = suite.samples(split)
    by_id, n_other_split = read_predictions(predictions, split=split)
    wanted = {s.sample_id for s in samples}
    n_outside = n_other_split + sum(sid not in wanted for sid in by_id)
    run_warnings = [f"{suite_name}: {w}" for w in suite.warnings]
    if n_outside:
        message = f"{n_outside} predictions in {predictions} are not in {suite_name}/{split} and were ignored"
        warnings.warn(message, stacklevel=2)
        run_warnings.append(message)
    records = [_score_one(s, by_id.get(s.sample_id), protocol) for s in samples]
    n_missing = sum(r["error"] == "missing from the predictions file" for r in records)
    if n_missing:
        run_warnings.append(f"{n_missing} samples of {suite_name}/{split} have no prediction: scored as empty masks")
    metrics = {"suite": suite_name, "model": "predictions", "splits": {split: score_records(records, protocol)}}
    out = Path(out) if out else Path("results") / "runs" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}_score_{predictions.stem}_{suite_name}"
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "predictions.jsonl", records)
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", {
        "suites": [suite_name],
        "splits": {suite_name: [split]},
        "model": "predictions",
        "command": command,
        "label": predictions.stem,
        "model_config": {"predictions": str(predictions)},
        "protocol": {**protocol.to_dict(), suite_name: suite.protocol()},
        "seed": None,
        "device": "none",
        "git_commit": git_commit(),
        "versions": package_versions(),
        "dataset_fingerprints": {suite_name: suite.fingerprint()},
        "warnings": run_warnings,
        "created": now_iso(),
        "status": "finished",
        "timings": {},
    })
    return out, metrics


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
    return score_sample(sample, mask, error, sample.target(), protocol)
