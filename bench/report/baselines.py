"""The context baselines in a suite's report: what they read (the suite's objects, as their run.json records it),
where that is the answer itself, and random-object's exact expectation over its draw."""

from __future__ import annotations

from bench.report.compare import ReportContext
from bench.report.expectation import RANDOM_OBJECT, Expectation, expected_giou
from bench.report.groups import CONTEXT, row_kind
from bench.report.read_runs import Run
from bench.report.text import markdown_table, md, ordered_splits, percent


def context_notes(suite: str, runs: list[Run], context: ReportContext) -> tuple[list[str], list[str]]:
    """(lines under the index's context block, the suite page's section on them); both empty without any."""
    shown = [run for run in runs if row_kind(run) == CONTEXT]
    if not shown:
        return [], []
    config = shown[0].record.model_config if isinstance(shown[0].record.model_config, dict) else {}
    objects = (config.get("objects") or {}).get(suite, "not recorded")
    answer = suite in (config.get("objects_are_target") or [])
    read = (f"Context baselines ignore the instruction and read the annotations of the image's objects, on {suite} "
            f"{objects}: every-object is their union, random-object one of them drawn at random, largest-object the "
            "biggest. They show what the data give away without reading the text.")
    if answer:
        read += (f" **On {suite} these objects are the target's own shapes: the rows read the answer, so they measure "
                 "no dataset bias, only that the format annotates nothing but the target.**")
    index, page = [md(read), ""], ["## Context baselines", "", md(read), ""]
    drawn = next((run for run in shown if run.record.model == RANDOM_OBJECT), None)
    if drawn is not None:
        expectation = expected_giou(suite, drawn, context)
        index += [_expectation_line(expectation), ""]
        page += _expectation_table(drawn, suite, expectation)
    return index, page


def _expectation_line(expectation: Expectation) -> str:
    if expectation.why:
        return f"random-object's expected gIoU over its draw: not computed ({md(expectation.why)})."
    values = ", ".join(f"{split} {percent(100 * value)}" for split, value in _ordered(expectation))
    return (f"random-object's table row is one seeded draw; its exact expected gIoU over the draw (mean IoU over "
            f"the image's objects): {values}.")


def _expectation_table(run: Run, suite: str, expectation: Expectation) -> list[str]:
    lead = ("random-object scores one seeded draw per sample (run.json model config \"rule\"). Averaged over every "
            "draw, a sample scores the mean IoU over its image's objects, so the expected gIoU is the mean of that over "
            "the samples (exact; cIoU, a ratio of sums, has no such mean).")
    if expectation.why:
        return [lead, "", f"Expected gIoU not computed: {md(expectation.why)}.", ""]
    metrics = run.results[suite].metrics
    rows = [[split, str(metrics[split].get("n", "")), percent(100 * metrics[split]["giou"])
             if metrics[split].get("giou") is not None else "–", percent(100 * value)]
            for split, value in _ordered(expectation)]
    return [lead, "", markdown_table(rows, ["split", "n", "gIoU of the draw %", "expected gIoU %"]), ""]


def _ordered(expectation: Expectation) -> list[tuple[str, float]]:
    return [(split, expectation.values[split]) for split in ordered_splits(expectation.values)]
