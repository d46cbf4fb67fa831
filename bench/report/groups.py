"""Sorts runs by kind: leaderboard entries (newest per name), ablation variants by group, diagnostics; and names
what a leaderboard row is: a model, a context baseline or a trivial baseline."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.read_runs import Run

UNGROUPED = "ungrouped"  # the group of ablation runs whose run.json has no "group"
TRIVIAL_MODELS = ("center", "empty", "full", "oracle")  # fixed rules: nothing trained, no cost
CONTEXT_MODELS = ("every-object", "random-object", "largest-object")  # read the image's annotations (bench.models)
MODEL, CONTEXT, TRIVIAL = "model", "context baseline", "trivial baseline"  # what a leaderboard row is


@dataclass(frozen=True)
class Groups:
    """The runs of each part of the report; ablation variants and diagnostics never enter the leaderboard."""

    leaderboard: list[Run]
    ablations: dict[str, list[Run]]  # group -> its variants; groups by name, "ungrouped" last
    diagnostics: list[Run]


def group_runs(runs: list[Run]) -> Groups:
    ablations: dict[str, list[Run]] = {}
    for run in runs:
        if run.record.kind == "ablation":
            ablations.setdefault(run.record.group or UNGROUPED, []).append(run)
    order = sorted(ablations, key=lambda group: (group == UNGROUPED, group.lower(), group))
    return Groups(
        leaderboard=[run for run in runs if run.record.kind == "leaderboard"],
        ablations={group: by_name(ablations[group]) for group in order},
        diagnostics=by_name([run for run in runs if run.record.kind == "diagnostic"]),
    )


def by_name(runs: list[Run]) -> list[Run]:
    """Runs by display name, then by directory: runs sharing a name stay side by side, none is dropped."""
    return sorted(runs, key=lambda run: (run.display_name.lower(), run.display_name, run.name))


def cost_integer(run: Run, key: str) -> int | None:
    """An integer the run's cost record (run.json model config "cost") states under `key`, else None."""
    cost = run.record.model_config.get("cost") if isinstance(run.record.model_config, dict) else None
    value = cost.get(key) if isinstance(cost, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def training_seed(run: Run) -> int | None:
    """The seed the run's checkpoint was trained with, as its cost record states it (None when it does not)."""
    return cost_integer(run, "training_seed")


def newest_per_model(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(newest run of each display name and training seed, sorted by name then seed; the older ones in the given
    order). Runs of one name trained with different seeds all stay: the report pools them into one row."""
    newest: dict[tuple[str, int | None], Run] = {}
    for run in sorted(runs, key=lambda run: (run.created, run.name)):
        newest[(run.display_name, training_seed(run))] = run
    shown = sorted(newest.values(), key=lambda run: (run.display_name.lower(), run.display_name,
                                                     training_seed(run) is None, training_seed(run) or 0))
    superseded = [run for run in runs if all(run is not newer for newer in shown)]
    return shown, superseded


def row_kind(run: Run) -> str:
    """MODEL (learned), CONTEXT (reads the image's other annotations) or TRIVIAL (a fixed rule)."""
    if run.record.model in TRIVIAL_MODELS:
        return TRIVIAL
    return CONTEXT if run.record.model in CONTEXT_MODELS else MODEL
