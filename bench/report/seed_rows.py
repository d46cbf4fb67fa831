"""Training seeds in the report: the runs of one model trained with several seeds (run.json model config "cost"
"training_seed") make one row, whose cells are the mean over seeds with a 95% interval that counts the
seed-to-seed spread as well as the test samples (`bench.ablate.seeds.seed_levels`)."""

from __future__ import annotations

from typing import Any

from bench.ablate.seeds import seed_levels
from bench.metrics import paired_scores
from bench.report.compare import SCORE_KEYS, ReportContext, protocol_of, run_costs
from bench.report.groups import cost_integer, training_seed
from bench.report.read_runs import Run

Values = dict[str, dict[str, float | None]]  # split -> ciou, ciou_lo, ciou_hi, giou, giou_lo, giou_hi (percent)


def training_seeds(run: Run) -> int:
    """How many independently trained checkpoints the row pools: the cost record's "seeds", else 1 (one
    checkpoint, one training seed)."""
    seeds = cost_integer(run, "seeds")
    return seeds if seeds is not None and seeds > 0 else 1


def group_seeds(group: list[Run]) -> int:
    """Training seeds behind a row: one run per seed, or one run's own count."""
    return len(group) if len(group) > 1 else training_seeds(group[0])


def training_cells(group: list[Run]) -> list[str]:
    """A learned model's training budget and seeds as REPORT.md's headline shows them."""
    samples = run_costs(group[0])["values"]["train_samples_seen"]
    return ["not recorded" if samples is None else f"{int(samples):,}", str(group_seeds(group))]


def by_model(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped by display name, in first-seen order, each group by training seed: one group per row."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.display_name, []).append(run)
    return [sorted(group, key=lambda run: (training_seed(run) is None, training_seed(run) or 0, run.name))
            for group in groups.values()]


def pooled_values(runs: list[Run], suite: str, context: ReportContext) -> tuple[Values, str | None]:
    """(the seeds' mean per split with the seed-aware interval, why a split has no interval or None); the splits
    every run measured. Without per-sample records the mean of the runs' own numbers is shown, without interval."""
    splits = [split for split in runs[0].results[suite].metrics if all(split in r.results[suite].metrics for r in runs)]
    protocol = protocol_of(runs[0])
    values: Values = {}
    why = None
    for split in splits:
        records = [(context.records(run, suite) or {}).get(split) for run in runs]
        scores = _aligned(records)
        if scores is None:
            why = "no per-sample predictions records for every seed on the same samples: the mean without an interval"
            values[split] = _plain_mean(runs, suite, split)
            continue
        levels = seed_levels(scores, protocol)
        cell: dict[str, float | None] = {}
        for metric in ("ciou", "giou"):
            interval = levels[metric].ci95 or [None, None]
            cell[metric] = 100 * levels[metric].difference
            cell[f"{metric}_lo"] = None if interval[0] is None else 100 * interval[0]
            cell[f"{metric}_hi"] = None if interval[1] is None else 100 * interval[1]
        values[split] = cell
    return values, why


def spread(runs: list[Run], suite: str) -> str:
    """The per-seed mean cIoU over the splits, in %, e.g. "s0 31.2 / s1 29.8 / s2 30.5"."""
    parts = []
    for run in runs:
        cious = [m["ciou"] for m in run.results[suite].metrics.values() if isinstance(m.get("ciou"), float)]
        seed = training_seed(run)
        mean = f"{100 * sum(cious) / len(cious):.1f}" if cious else "–"
        parts.append(f"{'s?' if seed is None else f's{seed}'} {mean}")
    return " / ".join(parts)


def _aligned(records: list[list[dict[str, Any]] | None]) -> list | None:
    """Every seed's SampleScores in one sample order, or None when a seed lacks records or covers other samples."""
    if any(r is None or not all(key in rec for rec in r for key in SCORE_KEYS) for r in records):
        return None
    try:
        return [paired_scores(records[0], own)[1] for own in records]
    except ValueError:
        return None


def _plain_mean(runs: list[Run], suite: str, split: str) -> dict[str, float | None]:
    cell: dict[str, float | None] = {}
    for metric in ("ciou", "giou"):
        found = [run.results[suite].metrics[split].get(metric) for run in runs]
        known = [value for value in found if isinstance(value, float)]
        cell[metric] = 100 * sum(known) / len(known) if len(known) == len(found) else None
        cell[f"{metric}_lo"] = cell[f"{metric}_hi"] = None
    return cell
