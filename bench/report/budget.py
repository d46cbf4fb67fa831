"""A suite page's lead: the learned models compared at equal training samples, then those trained on other
budgets, each row with its training seeds, estimated FLOPs and wall time (from run.json's model config "cost")."""

from __future__ import annotations

from bench.report.compare import Footnotes, ReportContext, csv_value, duration_text, flops_text, run_costs
from bench.report.groups import MODEL, row_kind
from bench.report.leaderboard import by_score, pooled_row
from bench.report.read_runs import Run
from bench.report.seed_rows import by_model, group_seeds, spread
from bench.report.text import (
    MISSING,
    cell_text,
    csv_file,
    csv_number,
    markdown_table,
    md,
    ordered_splits,
    slug,
)

Files = dict[str, bytes]


def stream_fingerprint(run: Run) -> str | None:
    """The training sample stream's fingerprint the run records (baselines.common's data_stream), if any."""
    stream = run.record.model_config.get("data_stream") if isinstance(run.record.model_config, dict) else None
    value = stream.get("sha256_16") if isinstance(stream, dict) else None
    return value if isinstance(value, str) else None


def budgets(runs: list[Run]) -> tuple[float | None, dict[float | None, list[Run]]]:
    """(the equal budget: the training-sample count most learned runs share, the smaller on a tie; runs by
    training samples seen, None for those that record none)."""
    by_budget: dict[float | None, list[Run]] = {}
    for run in runs:
        by_budget.setdefault(run_costs(run)["values"]["train_samples_seen"], []).append(run)
    known = [budget for budget in by_budget if budget is not None]
    equal = max(known, key=lambda budget: (len(by_budget[budget]), -budget)) if known else None
    return equal, by_budget


def budget_sections(suite: str, runs: list[Run], page: str, files: Files, context: ReportContext) -> list[str]:
    """The equal-budget table, then the other budgets' (labelled with their budget), with footnotes and a CSV."""
    trained = [run for run in runs if row_kind(run) == MODEL]
    if not trained:
        return ["## Trained models", "", "No trained model measured on this suite.", ""]
    equal, by_budget = budgets(trained)
    splits = ordered_splits(split for run in trained for split in run.results[suite].metrics)
    notes, csv_rows = Footnotes(), []
    lines = []
    if equal is not None:
        table = _table(suite, by_budget[equal], splits, page, notes, csv_rows, context, with_budget=False)
        lines += [f"## At equal training samples: {int(equal):,}", "",
                  f"The learned models whose training saw {int(equal):,} samples (run.json model config \"cost\" "
                  "train_samples_seen; the sample stream's fingerprint where the run records it: equal fingerprints, "
                  "the same samples in the same order), sorted by mean cIoU over the splits. Cells: cIoU / gIoU in % "
                  "with the 95% bootstrap interval over samples. A row of one training seed is one training run: "
                  "its interval covers the test samples, not the training's luck; a row of several seeds shows their "
                  "mean with an interval that counts the seed-to-seed spread too (mean ± t(seeds - 1) x standard "
                  "error), and each seed's mean cIoU.", "", table, ""]
    others = [budget for budget in sorted(b for b in by_budget if b is not None) if budget != equal]
    others += [None] if None in by_budget else []
    if others:
        table = _table(suite, [run for budget in others for run in by_budget[budget]], splits, page, notes, csv_rows,
                       context, with_budget=True)
        lines += ["## Other training budgets", "",
                  "Learned models trained on another number of samples: not comparable at equal cost; each row "
                  "names its budget.", "", table, ""]
    csv_path = f"tables/{slug(suite)}_budgets.csv"
    csv_headers = ["training_samples", "model", "run", "seeds", "train_flops", "train_wall_seconds", "stream",
                   *[f"{split}_{metric}" for split in splits for metric in ("ciou", "giou")]]
    return lines + [*notes.lines(), *([""] if notes.texts else []),
                    csv_file(files, page, csv_path, csv_headers, csv_rows), ""]


def _table(suite: str, runs: list[Run], splits: list[str], page: str, notes: Footnotes, csv_rows: list[list[str]],
           context: ReportContext, with_budget: bool) -> str:
    """One budget table of `runs` (given by budget; by mean cIoU within one), a row per model and budget (its
    training seeds pooled); appends its CSV lines to `csv_rows`."""
    budget_of = {run.name: run_costs(run)["values"]["train_samples_seen"] for run in runs}
    order = list(dict.fromkeys(budget_of.values()))
    groups = [group for budget in order for group in by_model([r for r in runs if budget_of[r.name] == budget])]
    rows = {group[0].name: pooled_row(group, suite, page, context, notes.mark) for group in groups}
    ranked = {row.origin: rank for rank, row in enumerate(by_score(list(rows.values())))}
    with_spread = any(len(group) > 1 for group in groups)
    table = []
    for group in sorted(groups, key=lambda group: (order.index(budget_of[group[0].name]), ranked[group[0].name])):
        run, row = group[0], rows[group[0].name]
        info = run_costs(run)
        values, why = info["values"], info["why"]

        def cell(key: str, text: str | None, why: dict[str, str] = why) -> str:
            return text if text is not None else f"{MISSING} {notes.mark(why[key])}"

        samples = values["train_samples_seen"]
        stream = stream_fingerprint(run)
        note = f" {notes.mark(info['note'])}" if info["note"] else ""
        cells = [row.name_cell() + note]
        cells += [cell("train_samples_seen", None if samples is None else f"{int(samples):,}")] if with_budget else []
        cells += [md(cell_text(row.values.get(split))) for split in splits]
        cells += [str(group_seeds(group))] + ([md(spread(group, suite)) if len(group) > 1 else ""] if with_spread else [])
        cells += [cell("train_flops", flops_text(values["train_flops"])),
                  cell("train_wall_seconds", duration_text(values["train_wall_seconds"])),
                  stream or f"{MISSING} {notes.mark('not recorded: the run has no data_stream fingerprint')}"]
        table.append(cells)
        csv_rows.append([csv_value(samples), run.display_name, ";".join(r.name for r in group), str(group_seeds(group)),
                         csv_value(values["train_flops"]), csv_value(values["train_wall_seconds"]), stream or ""]
                        + [csv_number(row.values.get(split, {}).get(metric)) for split in splits
                           for metric in ("ciou", "giou")])
    headers = ["model", *(["training samples"] if with_budget else []),
               *[f"{split} cIoU / gIoU" for split in splits], "training seeds",
               *(["per seed: mean cIoU %"] if with_spread else []), "training FLOPs (est.)",
               "training wall time", "sample stream"]
    return markdown_table(table, headers)
