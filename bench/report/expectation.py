"""random-object's exact expectation over its draw: per split, the mean over samples of the mean IoU over the
image's objects, i.e. the gIoU the baseline scores on average over every draw (cIoU, a ratio of sums, has no such
per-sample mean). Computed from the suite's data, checked against the run: each sample's drawn object must give the
intersection and union the run recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import BenchError
from bench.metrics import intersection_union, sample_iou
from bench.report.compare import ReportContext, protocol_of
from bench.report.data import open_suite
from bench.report.read_runs import Run
from bench.report.text import error_reason

RANDOM_OBJECT = "random-object"


@dataclass(frozen=True)
class Expectation:
    """split -> expected gIoU (a fraction), or why it could not be computed."""

    values: dict[str, float] = field(default_factory=dict)
    why: str | None = None


def expected_giou(suite: str, run: Run, context: ReportContext) -> Expectation:
    """random-object's expected gIoU per split of `suite`, over the samples the run scored."""
    from bench.models.context import draw

    records = context.records(run, suite)
    if records is None:
        return Expectation(why="the run has no predictions file")
    try:
        loaded = open_suite(suite, run)
        samples = {split: {s.sample_id: s for s in loaded.samples(split)} for split in records}
    except (BenchError, OSError, ValueError) as exc:
        reason = error_reason(exc)
        return Expectation(why=f"the suite's data cannot be read here ({reason})")
    protocol, seed = protocol_of(run), int(run.record.seed or 0)
    values = {}
    for split, split_records in records.items():
        total = 0.0
        for record in split_records:
            sample = samples[split].get(record["sample_id"])
            if sample is None:
                return Expectation(why=f"{split}/{record['sample_id']} is not in the data found here")
            if record.get("status") != "ok":
                continue  # a failed sample fails every draw: IoU 0
            target, objects = sample.target(), sample.load_objects()
            scores = [intersection_union(mask, target, protocol) for mask in objects]
            drawn = scores[draw(seed, sample.sample_id, len(objects))] if objects else \
                intersection_union(None, target, protocol)
            if drawn != (record.get("intersection"), record.get("union")):
                return Expectation(why=f"the data found here are not those the run was scored on ({split}/"
                                       f"{sample.sample_id}: its drawn object gives another intersection or union)")
            ious = [sample_iou(inter, union, protocol) for inter, union in scores or [drawn]]
            total += sum(ious) / len(ious)
        values[split] = total / len(split_records) if split_records else 0.0
    return Expectation(values)
