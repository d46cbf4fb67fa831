"""The regime check of an ablation: is its reference arm clearly above the context baseline of its suites?

A claim about which variant helps a model is only testable where the model does better than a rule that reads no
instruction. The context baseline (`every-object` by default: the union of the image's annotated objects) is
evaluated once on the ablation's suites, splits and limit (deterministic: seed 0, shared by every seed of the
reference), and the reference minus it, paired by sample, must have its 95% interval above zero; otherwise the page
says the model has not learned enough for the question and gives no verdict.
"""

from __future__ import annotations

import dataclasses

from bench.ablate.cells import Cell
from bench.ablate.spec import Ablation, EvalConfig


def answer_suites(reference: Cell) -> list[str]:
    """The reference's suites whose annotated objects are the target's own shapes (ReasonSeg format): there a context
    baseline reads the answer, so no regime check is possible."""
    from bench.suites import SUITES

    suites = getattr(reference.config, "suites", [])
    return [name for name in suites if name in SUITES and SUITES.get(name).objects_are_target]


def context_cell(ablation: Ablation, reference: Cell) -> Cell | None:
    """The context baseline's cell for the reference's data (None when the ablation has no context check or a suite
    annotates only the target)."""
    if not ablation.context or not isinstance(reference.config, EvalConfig) or answer_suites(reference):
        return None
    config = reference.config
    evaluation = EvalConfig(model=ablation.context, suites=list(config.suites), splits=config.splits,
                            limit=config.limit, batch_size=config.batch_size, bootstrap=config.bootstrap)
    return Cell(ablation.name, f"context-{ablation.context}", 0, reference.budget, evaluation, reference.data)


def replicated(result, seeds: list[int]) -> list:
    """The deterministic context result as one cell per seed, so it pairs with every seed of the reference."""
    return [dataclasses.replace(result, seed=seed) for seed in seeds]


def regime_check(ablation: Ablation, reference: list, context: list, protocol,
                 unchecked: list[str] = ()) -> tuple[list[str], bool]:
    """Lines for the page and whether verdicts may be given: the reference's cIoU minus the context baseline's on
    the reported samples, seeds as the unit, must lie above zero (`unchecked`: suites where it cannot be asked)."""
    from bench.ablate.table import difference

    if not ablation.context:
        return [], True
    if unchecked:
        return ["", f"No regime check: on {', '.join(unchecked)} the annotated objects are the target's own shapes, "
                f"so `{ablation.context}` would read the answer."], True
    if not reference or not context:
        return ["", f"**Regime check pending**: the reference `{ablation.reference}` or the context baseline "
                f"`{ablation.context}` has no complete cell yet; no verdict until it passes."], False
    diff = difference(reference, replicated(context[0], [c.seed for c in reference]), protocol)["ciou"]
    passed = diff.ci95 is not None and diff.ci95[0] > 0
    seeds = " / ".join(f"{100 * v:+.1f}" for v in diff.per_seed)
    interval = f" [{100 * diff.ci95[0]:+.1f}, {100 * diff.ci95[1]:+.1f}]" if diff.ci95 else " (no interval)"
    text = (f"Regime check: the reference `{ablation.reference}` minus the context baseline `{ablation.context}` (a "
            f"rule that reads the image's annotated objects and no instruction, a dataset-bias diagnostic): "
            f"{100 * diff.difference:+.1f} cIoU points{interval} (seeds {seeds}). ")
    if passed:
        return ["", text + "The model is above it, so the question can be asked of it."], True
    return ["", text + "**The model is not clearly above a rule that ignores the instruction: it has not learned "
            "enough for this question, and no verdict is given.**"], False
