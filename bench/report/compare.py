"""Fair comparison in a suite's section: each model's costs, and its paired difference to a reference model.

Costs come from run.json: the model config's "cost" record (parameters_total, parameters_trainable,
train_samples_seen, train_wall_seconds, train_flops and an optional "note"; written by each trained model's
adapter, see baselines.common and genmask.adapter) and the run's timings (latency = model_s / samples, over
every suite of the run, at the recorded batch size and device). A value that is missing shows as "–" with a
footnote saying why.

Paired differences: per split, cIoU and gIoU of a model minus the reference's on the same samples, with the
paired bootstrap 95% interval (bench.metrics.paired_scores + paired_bootstrap under the reference run's
protocol), from the predictions records (intersection, union, status) of both runs. Context and trivial
baselines are included: they are cheap and give the scale (oracle is the headroom, center what a fixed rule gets,
every-object what segmenting everything gets).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.metrics import Protocol, paired_bootstrap, paired_scores
from bench.report.groups import CONTEXT, MODEL, TRIVIAL, row_kind
from bench.report.marks import marked_name
from bench.report.read_runs import Run
from bench.report.text import (
    MISSING,
    csv_file,
    link,
    link_text,
    markdown_table,
    md,
    metric_settings,
    ordered_splits,
    slug,
)
from bench.rundir.layout import RunDir
from bench.rundir.predictions import iter_records

Files = dict[str, bytes]
DEFAULT_REFERENCE = "genmask (tiny, 1 step)"  # label of the shipped GenMask's run; else any run of model genmask
REFERENCE_MODEL = "genmask"
KIND_ORDER = (MODEL, CONTEXT, TRIVIAL)  # the order of a suite's blocks of rows
NOTHING_TRAINED = {TRIVIAL: "nothing trained: a fixed rule (trivial baseline)",
                   CONTEXT: "nothing trained: it reads the image's annotations (context baseline)"}
COST_KEYS = ("parameters_total", "parameters_trainable", "train_samples_seen", "train_wall_seconds", "train_flops")


@dataclass(frozen=True)
class CompareOptions:
    """What `bench report` was asked for: the reference model (a label or a model name; None: the default) and
    the user's gallery selection (SUITE/SPLIT/SAMPLE_ID; empty: the automatic selection)."""

    reference: str | None = None
    gallery: tuple[str, ...] = ()


@dataclass
class ReportContext:
    """Shared by the suite sections of one build: where the runs are, the options, and records read once."""

    results_dir: Path
    options: CompareOptions = field(default_factory=CompareOptions)
    requests: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # suite -> the user's gallery samples
    _records: dict[tuple[str, str], dict[str, list[dict[str, Any]]] | None] = field(default_factory=dict)

    def records(self, run: Run, suite: str) -> dict[str, list[dict[str, Any]]] | None:
        """split -> the run's predictions records of `suite` (file order); None without a predictions file."""
        key = (run.name, suite)
        if key not in self._records:
            path = RunDir(self.results_dir / run.name, suites=run.record.suites).predictions(suite)
            by_split: dict[str, list[dict[str, Any]]] | None = None
            if path.is_file():
                by_split = {}
                for _, record in iter_records(path):
                    by_split.setdefault(str(record.get("split")), []).append(record)
            self._records[key] = by_split
        return self._records[key]


class Footnotes:
    """Numbered footnotes, each text once."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{index}] {md(text)}  " for index, text in enumerate(self.texts, start=1)]


# ---------------------------------------------------------------------------------------------------- costs
def run_costs(run: Run) -> dict[str, Any]:
    """The run's cost values (None when missing) and, per missing value, why; plus latency and its setting."""
    config = run.record.model_config if isinstance(run.record.model_config, dict) else {}
    cost = config.get("cost")
    values: dict[str, Any] = {}
    why: dict[str, str] = {}
    note = cost.get("note") if isinstance(cost, dict) and isinstance(cost.get("note"), str) else None
    for key in COST_KEYS:
        value = cost.get(key) if isinstance(cost, dict) else None
        values[key] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if values[key] is None:
            if row_kind(run) != MODEL:
                why[key] = NOTHING_TRAINED[row_kind(run)]
            elif not isinstance(cost, dict):
                why[key] = ('not recorded: the run\'s model config in run.json has no "cost" (the run predates cost '
                            "recording; remake it with its command to fill it in)")
            else:
                why[key] = "not recorded by its training run"
    timings = run.record.timings if isinstance(run.record.timings, dict) else {}
    samples, model_s = timings.get("samples"), timings.get("model_s")
    if isinstance(samples, int) and samples > 0 and isinstance(model_s, (int, float)):
        values["latency_ms"] = 1000 * model_s / samples
    else:
        values["latency_ms"] = None
        why["latency_ms"] = "not timed: run.json has no model time per sample (e.g. a run made by bench score)"
    spec = run.record.spec if isinstance(run.record.spec, dict) else {}
    values["batch_size"] = spec.get("batch_size")
    values["device"] = run.record.device
    values["world_size"] = run.record.world_size
    return {"values": values, "why": why, "note": note}


def _count(value: float | None) -> str | None:
    if value is None:
        return None
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{int(value)}"


def duration_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds >= 5400:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 90:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def flops_text(value: float | None) -> str | None:
    if value is None:
        return None
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value))
    return f"{value / 10 ** exponent:.2f}e{exponent}"


def _latency(milliseconds: float | None) -> str | None:
    if milliseconds is None:
        return None
    return f"{milliseconds:.2f}" if milliseconds >= 0.01 else "< 0.01"


def _setting(values: dict[str, Any]) -> str:
    parts = []
    if values.get("batch_size") is not None:
        parts.append(f"batch {values['batch_size']}")
    parts.append(str(values.get("device") or "unknown device"))
    if values.get("world_size") not in (None, 1):
        parts.append(f"{values['world_size']} processes")
    return ", ".join(parts)


def costs_section(suite: str, runs: list[Run], files: Files, page: str) -> list[str]:
    """Parameters and latency of the shown runs of `suite` (training cost: the budget tables), with footnotes for
    missing values; the CSV holds every cost value."""
    notes = Footnotes()
    table, csv_rows = [], []
    for run in runs:
        info = run_costs(run)
        values, why = info["values"], info["why"]

        def cell(key: str, text: str | None, why: dict[str, str] = why) -> str:
            return text if text is not None else f"{MISSING} {notes.mark(why[key])}"

        total, trainable = values["parameters_total"], values["parameters_trainable"]
        table.append([
            md(marked_name(run, suite)),
            f"{cell('parameters_total', _count(total))} / {cell('parameters_trainable', _count(trainable))}",
            cell("latency_ms", _latency(values["latency_ms"])),
            "" if values["latency_ms"] is None else md(_setting(values)),
        ])
        csv_rows.append([run.display_name, run.name] + [csv_value(values[key]) for key in (*COST_KEYS, "latency_ms")]
                        + [csv_value(values["batch_size"]), str(values["device"]), csv_value(values["world_size"]),
                           info["note"] or "", " | ".join(f"{key}: {text}" for key, text in sorted(why.items()))])
    headers = ["model", "parameters (total / trainable)", "latency ms/sample", "latency measured at"]
    csv_headers = ["model", "run", *COST_KEYS, "latency_ms", "batch_size", "device", "world_size", "note", "missing"]
    csv_line = csv_file(files, page, f"tables/{slug(suite)}_costs.csv", csv_headers, csv_rows,
                        "CSV (every cost value)")
    return [
        "## Parameters and latency",
        "",
        'Parameters as each model\'s run records them (run.json model config "cost": every parameter, and those its '
        "training updated) and latency: the run's model seconds per sample over all its suites (run.json timings "
        "model_s / samples) at the batch size and device it ran with. Latency was measured on a CPU machine shared "
        "with other work: indicative only. Training samples, FLOPs and wall time are in the budget tables above.",
        "",
        markdown_table(table, headers),
        "",
        *notes.lines(),
        *([""] if notes.texts else []),
        csv_line,
        "",
    ]


def csv_value(value: Any) -> str:
    """A cost value as the CSV tables write it: empty when missing, floats to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.6e}"
    return str(value)


# --------------------------------------------------------------------------------------- paired differences
def find_reference(runs: list[Run], reference: str | None) -> Run | None:
    """The reference among `runs` (shown runs of one suite): the run labelled `reference`, else the first (by
    name) run of that model; by default the run labelled DEFAULT_REFERENCE, else the first run of genmask."""
    wanted = reference or DEFAULT_REFERENCE
    for run in runs:
        if run.display_name == wanted:
            return run
    model = reference or REFERENCE_MODEL
    return next((run for run in runs if run.record.model == model), None)


def check_reference(runs: list[Run], reference: str | None) -> None:
    """A reference asked for by name must name some leaderboard run; BenchError listing the names otherwise."""
    if reference is None or any(reference in (run.display_name, run.record.model) for run in runs):
        return
    names = sorted({run.display_name for run in runs} | {run.record.model for run in runs})
    raise BenchError(f"--reference {reference!r} names no measured leaderboard run; labels and models: "
                     f"{', '.join(names) or 'none'}")


def protocol_of(run: Run) -> Protocol:
    """The metric protocol recorded in run.json (defaults for what it lacks)."""
    recorded = run.record.protocol if isinstance(run.record.protocol, dict) else {}
    defaults = Protocol()
    return Protocol(
        empty_union_iou=float(recorded.get("empty_union_iou", defaults.empty_union_iou)),
        ignore_value=int(recorded.get("ignore_value", defaults.ignore_value)),
        thresholds=tuple(recorded.get("thresholds", defaults.thresholds)),
        bootstrap=int(recorded.get("bootstrap", defaults.bootstrap)),
        ci_seed=int(recorded.get("ci_seed", defaults.ci_seed)),
    )


SCORE_KEYS = ("intersection", "union", "status")


def split_difference(records: list[dict[str, Any]], reference: list[dict[str, Any]],
                     protocol: Protocol) -> tuple[dict[str, Any] | None, str | None]:
    """(paired bootstrap of `records` minus `reference`, None) or (None, why it cannot be computed)."""
    if not all(key in record for record in (*records, *reference) for key in SCORE_KEYS):
        return None, "its predictions records (or the reference's) lack intersection / union / status"
    try:
        a, b = paired_scores(records, reference)
    except ValueError as exc:
        return None, f"not the same samples as the reference: {exc}"
    return paired_bootstrap(a, b, protocol), None


def differences(suite: str, runs: list[Run], reference: Run, context: ReportContext) -> dict[str, Any]:
    """run name -> split -> (difference or None, why); every shown run but the reference."""
    protocol = protocol_of(reference)
    settings = json.dumps(metric_settings(reference.record.protocol, suite), sort_keys=True)
    reference_records = context.records(reference, suite)
    result: dict[str, Any] = {}
    for run in runs:
        if run is reference:
            continue
        own = context.records(run, suite)
        by_split = {}
        for split in ordered_splits(run.results[suite].metrics):
            if json.dumps(metric_settings(run.record.protocol, suite), sort_keys=True) != settings:
                by_split[split] = (None, "other metric settings than the reference's: not comparable")
            elif own is None or reference_records is None:
                by_split[split] = (None, "no predictions file (for this run or the reference)")
            elif split not in reference_records or split not in own:
                by_split[split] = (None, "the reference has no predictions of this split")
            else:
                by_split[split] = split_difference(own[split], reference_records[split], protocol)
        result[run.name] = by_split
    return result


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _difference_text(diff: dict[str, Any]) -> str:
    interval = diff["ci95"]
    point = _points(diff["difference"])
    if diff.get("significant"):
        point = f"**{point}**"
    return point if interval is None else f"{point} [{_points(interval[0])}, {_points(interval[1])}]"


def differences_section(suite: str, runs: list[Run], context: ReportContext, files: Files, page: str) -> list[str]:
    """The table of paired differences to the reference model, per split, and its CSV."""
    reference = find_reference(runs, context.options.reference)
    title = "## Paired differences to the reference"
    if reference is None:
        wanted = context.options.reference or f"{DEFAULT_REFERENCE} (or any run of {REFERENCE_MODEL})"
        return [title, "", f"No paired differences: the reference model {md(wanted)} has no measured run of "
                f"{suite}.", ""]
    results = differences(suite, runs, reference, context)
    splits = ordered_splits(split for by_split in results.values() for split in by_split)
    notes = Footnotes()
    table, csv_rows = [], []
    for run in sorted(runs, key=lambda run: KIND_ORDER.index(row_kind(run))):  # models, then baselines
        if run is reference:
            continue
        cells = []
        for split in splits:
            diff, why = results[run.name].get(split, (None, None))
            if diff is None:
                cells.append("" if why is None else f"{MISSING} {notes.mark(why)}")
                continue
            cells.append(f"{_difference_text(diff['ciou'])} / {_difference_text(diff['giou'])}")
            row = [run.display_name, run.name, reference.display_name, split, str(diff["n"])]
            for metric in ("ciou", "giou"):
                interval = diff[metric]["ci95"] or [None, None]
                row += [_csv_points(diff[metric]["difference"]), _csv_points(interval[0]),
                        _csv_points(interval[1]), "" if diff[metric]["significant"] is None
                        else str(diff[metric]["significant"]).lower()]
            csv_rows.append(row)
        kind = row_kind(run)
        table.append([md(marked_name(run, suite)) + ("" if kind == MODEL else f" ({kind})"), *cells])
    headers = ["model", *[f"{split} Δ cIoU / Δ gIoU" for split in splits]]
    csv_headers = ["model", "run", "reference", "split", "n"] + [
        f"d_{metric}{suffix}" for metric in ("ciou", "giou") for suffix in ("", "_lo", "_hi", "_significant")]
    csv_line = csv_file(files, page, f"tables/{slug(suite)}_vs_reference.csv", csv_headers, csv_rows)
    protocol = protocol_of(reference)
    target = link(page, reference.name, directory=True)
    lines = [
        title,
        "",
        f"Each model's cIoU and gIoU minus the reference's, [{link_text(marked_name(reference, suite))}]({target}), "
        "on the same "
        f"samples, in points, with the paired bootstrap 95% interval ({protocol.bootstrap} resamples, seed "
        f"{protocol.ci_seed}: each resample draws the same samples for both models). **Bold**: the interval "
        "excludes 0. Context and trivial baselines are included for scale (oracle: the headroom; center, empty, "
        "full: what a fixed rule gets; every-object: what segmenting every annotated object gets). "
        "`bench report --reference LABEL` picks another reference.",
        "",
    ]
    if not table:
        return lines + ["No other model measured on this suite.", ""]
    return lines + [markdown_table(table, headers), "", *notes.lines(), *([""] if notes.texts else []),
                    csv_line, ""]


def _csv_points(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"
