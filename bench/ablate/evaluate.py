"""Cells of kind "eval" (`EvalKind`): each one `bench run` through the Runner into an ordinary run directory (kind
"ablation", group = the ablation, label = the variant); assembled into table.csv / table.md, plots, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from bench.ablate import page
from bench.ablate.cells import Cell
from bench.ablate.context import answer_suites, context_cell, regime_check
from bench.ablate.kinds import ABLATION_KINDS
from bench.ablate.seeds import detectable_effect
from bench.ablate.spec import Ablation, EvalConfig
from bench.ablate.table import (
    CellResult,
    build_rows,
    difference,
    restricted,
    split_roles,
    table_csv,
    table_markdown,
)
from bench.ablate.verdicts import Verdict, holm, judge, withheld
from bench.errors import BenchError
from bench.metrics import Protocol
from bench.rundir.layout import RunDir
from bench.suites import SUITES


@ABLATION_KINDS.register("eval")
class EvalKind:
    """Cells evaluated through the runner; the page: every variant against the reference, paired by seed and
    sample, with the control and regime checks; a subclass adds to the report through `sections` and `plots`."""

    config: ClassVar[type] = EvalConfig
    default_context: ClassVar[str] = "every-object"

    def data_identity(self, config: EvalConfig) -> tuple:
        return tuple(config.suites)

    def fingerprints(self, config: EvalConfig, data_root: str | None) -> dict[str, str]:
        """The fingerprint of every suite the cell reads (synthetic ones are generated on first use)."""
        result = {}
        for name in config.suites:
            suite_cls = SUITES.get(name)
            options = {"progress": False} if suite_cls.synthetic else {}
            result[name] = suite_cls(data_root=data_root, **options).fingerprint()
        return result

    def is_complete(self, directory: Path) -> bool:
        rundir = RunDir(directory)
        return rundir.exists() and rundir.read().status == "complete"

    def is_started(self, directory: Path) -> bool:
        return Path(directory).is_dir() and any(Path(directory).iterdir())

    def make(self, cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
        """One evaluation through the ordinary runner; `resume` finishes an interrupted one exactly."""
        from bench.run_command import Runner, RunSpec
        from bench.rundir.predictions import compact_run

        config: EvalConfig = cell.config
        spec = RunSpec(suites=list(config.suites), model=config.model, splits=config.splits,
                       model_args=dict(config.model_args), checkpoint=config.checkpoint, data_root=data_root,
                       limit=config.limit, batch_size=config.batch_size, device=config.device, seed=cell.seed,
                       out=Path(directory).as_posix(), resume=resume and RunDir(directory).exists(),
                       protocol=Protocol(bootstrap=config.bootstrap), progress=False, label=cell.variant,
                       kind="ablation", group=cell.ablation)
        runner = Runner(spec, command=command)
        try:
            runner.run()
            if runner.proc.is_main:  # cells multiply: their predictions are kept gzipped (read transparently)
                compact_run(Path(directory))
        finally:
            runner.proc.close()

    def assemble(self, ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
                 missing: list[tuple[str, str]]) -> list[Path]:
        """table.csv, table.md, plots/*.png and report.md in `out` from the complete cells."""
        reference = ablation.resolve(ablation.reference, budget)
        protocol = Protocol(bootstrap=reference.bootstrap)
        results: dict[str, list[CellResult]] = {}
        for cell in cells:
            done = results.setdefault(cell.variant, [])
            if self.is_complete(cell.directory(out)):
                done.append(CellResult.read(cell.variant, cell.seed, cell.directory(out)))
        x = {cell.variant: cell.config.model_args.get(ablation.plot_x) if ablation.plot_x else None for cell in cells}
        reported, selection = split_roles(results)
        chosen_on = restricted(results, selection) if selection else None
        results = restricted(results, reported)
        rows = build_rows(results, ablation.reference, x, protocol)
        verdicts = holm([_verdict(claim, rows, results, chosen_on, ablation.reference, protocol)
                         for claim in ablation.claims])
        checks, passed = control_check(ablation, results, protocol)
        reference_cell = next((cell for cell in cells if cell.variant == ablation.reference), None)
        regime, in_regime = regime_check(ablation, results.get(ablation.reference, []),
                                         self._context_results(ablation, reference_cell, out, reported), protocol,
                                         answer_suites(reference_cell) if reference_cell else [])
        checks += regime
        if not (passed and in_regime):
            verdicts = withheld(verdicts)
        files = {
            "table.csv": table_csv(rows, out).encode(),
            "table.md": (table_markdown(rows, ablation.reference, "table.md", out, ablation.plot_x) + "\n").encode(),
        }
        if ablation.plot_x and rows:
            files["plots/quality.png"] = page.quality_plot(ablation, rows)
        elif rows:
            files["plots/variants.png"] = page.variants_plot(ablation, rows)
        complete = [cell.directory(out) for cell in cells if self.is_complete(cell.directory(out))]
        setting = _setting(reference, budget, cells, rows) + page.provenance_lines(complete) + page.cost_lines(
            complete, self.training_seconds(complete))
        answer = [table_markdown(rows, ablation.reference, page.REPORT, out, ablation.plot_x), "",
                  f"Splits reported: {', '.join(sorted(reported))}"
                  + (f"; {', '.join(sorted(selection))} only chooses (a best variant), never reported. " if selection
                     else " (no val split in the cells: nothing can be chosen without looking at these). ")
                  + choice_text(chosen_on, protocol)
                  + "Cells: cIoU / gIoU in % (mean ± std over seeds when there are several) with the 95% bootstrap "
                  "interval over samples (seeds pooled: the level of one variant); latency: model seconds per sample "
                  f"as the run timed them at batch size {reference.batch_size}, mean over seeds; Δ: the variant minus "
                  f"{ablation.reference}, paired by seed and sample, with the per-seed differences; its 95% interval "
                  "treats the training seed as the unit (`bench.ablate.seeds`: mean ± t(seeds - 1) x standard error "
                  "from the seed-to-seed spread and a joint bootstrap of the test samples). "
                  + _detectable_text(rows) + "CSV: [table.csv](table.csv).", *checks, *self.sections(cells, out)]
        if rows:
            files.update(self.plots(rows, cells, out))
        plots = sorted(path for path in files if path.startswith("plots/"))
        files[page.REPORT] = page.render(ablation, budget, command, setting, answer, verdicts, plots,
                                             missing)
        files[page.CLAIMS] = page.claims_csv(ablation.name, verdicts)
        return page.write_files(out, files)

    def training_seconds(self, directories: list[Path]) -> dict[str, float]:
        """Wall seconds of each training the complete cells in `directories` came from (none here)."""
        return {}

    def sections(self, cells: list[Cell], out: Path) -> list[str]:
        """More markdown lines for the report's answer, after the table and checks (none here)."""
        return []

    def plots(self, rows: list, cells: list[Cell], out: Path) -> dict[str, bytes]:
        """More plots, PNG bytes by path below `out` (none here)."""
        return {}

    def _context_results(self, ablation: Ablation, reference: Cell | None, out: Path,
                         reported: set[str]) -> list[CellResult]:
        """The context baseline's complete cell on the reported splits ([] when missing or not checked)."""
        cell = context_cell(ablation, reference) if reference else None
        if cell is None or not self.is_complete(cell.directory(out)):
            return []
        return [CellResult.read(cell.variant, cell.seed, cell.directory(out)).only(reported)]


def control_check(ablation: Ablation, results: dict[str, list[CellResult]], protocol: Protocol) -> tuple[list[str], bool]:
    """Does the reference arm beat the no-training control (`control`: the starting checkpoint evaluated)? Lines for
    the page and whether verdicts may be given (True when the ablation has no control)."""
    control, reference = ablation.control, ablation.reference
    if control is None:
        return [], True
    if not results.get(control) or not results.get(reference):
        return ["", f"**Control check pending**: no complete cells of the no-training control `{control}` and the "
                "reference yet; no verdict until it passes."], False
    diff = difference(results[reference], results[control], protocol)["ciou"]
    passed = diff.ci95 is not None and diff.ci95[0] > 0
    seeds = " / ".join(f"{100 * v:+.1f}" for v in diff.per_seed)
    text = (f"Control check: the reference `{reference}` minus the no-training control `{control}` (the starting "
            f"checkpoint evaluated on the same samples and noise): {100 * diff.difference:+.1f} cIoU points "
            f"[{100 * diff.ci95[0]:+.1f}, {100 * diff.ci95[1]:+.1f}] (seeds {seeds}). " if diff.ci95 else
            f"Control check: {reference} minus {control}: no interval. ")
    if passed:
        return ["", text + "The training improves the model, so the variants' differences are differences in what "
                "they add."], True
    return ["", text + "**The training does not improve on where it started (it loses quality or does nothing), so "
            "the variants' differences say which loses least, not which helps: no verdict is given.**"], False


def _detectable_text(rows: list) -> str:
    """The smallest cIoU difference these seeds could detect (80% power, 5% two-sided), from the table's Δs."""
    differences = [row.values["vs_reference"]["ciou"] for row in rows if "vs_reference" in row.values]
    known = [d for d in differences if d["se"] is not None]
    effect = detectable_effect([d["se"] for d in known], min(d["df"] for d in known)) if known else None
    return "" if effect is None else (f"Smallest cIoU difference these seeds detect (80% power, 5% two-sided, median "
                                      f"standard error of the Δs): {100 * effect:.1f} points. ")


def _setting(config: EvalConfig, budget: str, cells: list[Cell], rows: list) -> list[str]:
    n = rows[0].values["n"] if rows else "?"
    trainer = getattr(config, "trainer", None)
    model = (f"- model: `{config.model}`, trained per cell by `bench train --model {trainer} "
             f"{' '.join(config.training_argv())}` (the variant's overrides on top, seed = the cell's seed)"
             if trainer else
             f"- model: `{config.model}`, checkpoint: {config.checkpoint or 'the model default (GenMask: shipped tiny)'}")
    return [model,
            f"- data: {', '.join(config.suites)}, splits {', '.join(config.splits or ['all but train'])}"
            + (f", first {config.limit} per split" if config.limit else "") + f": {n} samples pooled",
            f"- seeds: {sorted({c.seed for c in cells})}; device {config.device}, batch size {config.batch_size}; "
            "latency is wall time on whatever else the machine was running (a shared one varies from run to run)",
            f"- data fingerprints: {', '.join(f'{k}: {v}' for k, v in sorted(cells[0].data.items()))}"]


def _verdict(claim: Any, rows: list, results: dict[str, list[CellResult]],
             chosen_on: dict[str, list[CellResult]] | None, reference: str, protocol: Protocol) -> Verdict:
    """Rule "reference-within-margin-of-best": the best other variant, chosen on val (`chosen_on`), minus the
    reference lies below the margin on the reported splits; without val nothing is chosen and the claim stays
    inconclusive. Rule "first-above-second": `compare[0]` minus `compare[1]` lies above the margin."""
    if claim.rule == "first-above-second":
        if len(claim.compare) != 2:
            raise BenchError(f"claim {claim.text!r}: rule first-above-second needs compare = [FIRST, SECOND]")
        first, second = claim.compare
        side, quantity = "above", f"{claim.metric}({first}) - {claim.metric}({second})"
    elif claim.rule == "reference-within-margin-of-best":
        side, second = "below", reference
        first = _best_on_val(claim.metric, chosen_on, reference, protocol)
        if first is None:
            return Verdict(claim.text, "no val split to choose the best variant on (the cells score test splits "
                           "only)", float("nan"), None, claim.margin, side, "inconclusive", claim.paper)
        quantity = f"{claim.metric}({first}, best on val) - {claim.metric}({reference})"
    else:
        raise BenchError(f"claim rule {claim.rule!r} is not one an eval ablation knows "
                         "(reference-within-margin-of-best, first-above-second)")
    if not results.get(first) or not results.get(second):
        return Verdict(claim.text, "no cells yet", float("nan"), None, claim.margin, side, "inconclusive",
                       claim.paper)
    diff = difference(results[first], results[second], protocol)[claim.metric]
    return Verdict(claim.text, quantity, diff.difference, diff.ci95, claim.margin, side,
                   judge(diff.difference, diff.ci95, claim.margin, side), claim.paper, per_seed=diff.per_seed,
                   p_value=diff.p_value(claim.margin), method=diff.method)


def _best_on_val(metric: str, chosen_on: dict[str, list[CellResult]] | None, reference: str,
                 protocol: Protocol) -> str | None:
    """The variant other than the reference with the highest mean-over-seeds `metric` on val (None without val)."""
    means = {variant: mean for variant, mean in val_means(metric, chosen_on, protocol).items() if variant != reference}
    return max(means, key=means.get) if means else None


def val_means(metric: str, chosen_on: dict[str, list[CellResult]] | None, protocol: Protocol) -> dict[str, float]:
    """Each variant's mean-over-seeds `metric` on the selection split ({} without one)."""
    from bench.metrics import SampleScores

    empty = protocol.empty_union_iou
    return {variant: sum(getattr(SampleScores.from_records(c.records), metric)(empty) for c in done) / len(done)
            for variant, done in (chosen_on or {}).items() if done}


def choice_text(chosen_on: dict[str, list[CellResult]] | None, protocol: Protocol) -> str:
    """The variant val chooses (highest mean cIoU over seeds) and every variant's val cIoU; "" without val."""
    means = val_means("ciou", chosen_on, protocol)
    if not means:
        return ""
    best = max(means, key=means.get)
    listed = ", ".join(f"{variant} {100 * mean:.1f}" for variant, mean in sorted(means.items(), key=lambda kv: -kv[1]))
    return f"Chosen on val (highest mean cIoU over seeds): **{best}** (val cIoU %: {listed}). "


def ensure_context(cell: Cell, out: Path, data_root: str | None) -> None:
    """Evaluate the context baseline unless its cell is complete (cheap: it reads annotations, runs no network)."""
    import shlex

    kind, directory = EvalKind(), cell.directory(out)
    if kind.is_complete(directory):
        return
    command = shlex.join(["python", "-m", "bench", "ablate", cell.ablation, "--budget", cell.budget, "--out",
                          Path(out).as_posix()])  # any call that assembles the page makes it
    directory.mkdir(parents=True, exist_ok=True)
    kind.make(cell, directory, command, data_root, resume=(directory / "run.json").exists())
