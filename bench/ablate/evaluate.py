"""Cells of kind "eval": each one `bench run` through the Runner into an ordinary run directory (kind
"ablation", group = the ablation, label = the variant); assembled into table.csv / table.md, plots, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ablate import report
from bench.ablate.cells import Cell
from bench.ablate.spec import Ablation, EvalConfig
from bench.ablate.table import CellResult, build_rows, difference, table_csv, table_markdown
from bench.ablate.verdicts import Verdict, judge
from bench.errors import BenchError
from bench.metrics import Protocol
from bench.rundir import RunDir
from bench.suites import SUITES


def data_identity(config: EvalConfig) -> tuple:
    return tuple(config.suites)


def fingerprints(config: EvalConfig, data_root: str | None) -> dict[str, str]:
    """The fingerprint of every suite the cell reads (synthetic ones are generated on first use)."""
    result = {}
    for name in config.suites:
        suite_cls = SUITES.get(name)
        options = {"progress": False} if suite_cls.synthetic else {}
        result[name] = suite_cls(data_root=data_root, **options).fingerprint()
    return result


def is_complete(directory: Path) -> bool:
    rundir = RunDir(directory)
    return rundir.exists() and rundir.read().status == "complete"


def is_started(directory: Path) -> bool:
    return Path(directory).is_dir() and any(Path(directory).iterdir())


def make(cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
    """One evaluation through the ordinary runner; `resume` finishes an interrupted one exactly."""
    from bench.predictions import compact_run
    from bench.runner import Runner, RunSpec

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


def assemble(ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
             missing: list[tuple[str, str]], sections: list[str] | None = None,
             plot_rows: Any = None) -> list[Path]:
    """table.csv, table.md, plots/*.png and report.md in `out` from the complete cells; `sections`: more
    markdown lines for the report's answer (a training kind's table); `plot_rows(rows)`: more plots, by path."""
    reference = ablation.resolve(ablation.reference, budget)
    protocol = Protocol(bootstrap=reference.bootstrap)
    results: dict[str, list[CellResult]] = {}
    for cell in cells:
        done = results.setdefault(cell.variant, [])
        if is_complete(cell.directory(out)):
            done.append(CellResult.read(cell.variant, cell.seed, cell.directory(out)))
    x = {cell.variant: cell.config.model_args.get(ablation.plot_x) if ablation.plot_x else None for cell in cells}
    rows = build_rows(results, ablation.reference, x, protocol)
    verdicts = [_verdict(claim, rows, results, ablation.reference, protocol) for claim in ablation.claims]
    files = {
        "table.csv": table_csv(rows, out).encode(),
        "table.md": (table_markdown(rows, ablation.reference, "table.md", out, ablation.plot_x) + "\n").encode(),
    }
    if ablation.plot_x and rows:
        files["plots/quality.png"] = report.quality_plot(ablation, rows)
    elif rows:
        files["plots/variants.png"] = report.variants_plot(ablation, rows)
    setting = _setting(reference, budget, cells, rows)
    answer = [table_markdown(rows, ablation.reference, report.REPORT, out, ablation.plot_x), "",
              "Cells: cIoU / gIoU in % (mean ± std over seeds when there are several) with the 95% bootstrap "
              "interval over samples (seeds pooled); latency: model seconds per sample as the run timed them "
              f"at batch size {reference.batch_size}, mean over seeds; Δ: the variant minus "
              f"{ablation.reference} on the same samples and seeds, paired bootstrap 95% interval. "
              "CSV: [table.csv](table.csv).", *([""] + sections if sections else [])]
    if plot_rows is not None and rows:
        files.update(plot_rows(rows))
    plots = sorted(path for path in files if path.startswith("plots/"))
    files[report.REPORT] = report.render(ablation, budget, command, setting, answer, verdicts, plots,
                                         missing)
    return report.write_files(out, files)


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


def _verdict(claim: Any, rows: list, results: dict[str, list[CellResult]], reference: str,
             protocol: Protocol) -> Verdict:
    """Rule "reference-within-margin-of-best": the best other variant (by mean metric) minus the reference lies
    below the margin. Rule "first-above-second": `compare[0]` minus `compare[1]` lies above the margin."""
    if claim.rule == "first-above-second":
        if len(claim.compare) != 2:
            raise BenchError(f"claim {claim.text!r}: rule first-above-second needs compare = [FIRST, SECOND]")
        first, second = claim.compare
        side, quantity = "above", f"{claim.metric}({first}) - {claim.metric}({second})"
        row = next((row for row in rows if row.variant == first), None)
        other = results.get(second)
    elif claim.rule == "reference-within-margin-of-best":
        others = [row for row in rows if row.variant != reference]
        row = max(others, key=lambda r: r.values[claim.metric]) if others else None
        other = results.get(reference)
        side = "below"
        quantity = f"{claim.metric}({row.variant if row else 'best'}) - {claim.metric}({reference})"
    else:
        raise BenchError(f"claim rule {claim.rule!r} is not one an eval ablation knows "
                         "(reference-within-margin-of-best, first-above-second)")
    if row is None or not other:
        return Verdict(claim.text, "no cells yet", float("nan"), None, claim.margin, side, "inconclusive",
                       claim.paper)
    diff = difference(row, other, protocol)[claim.metric]
    return Verdict(claim.text, quantity, diff["difference"], diff["ci95"], claim.margin, side,
                   judge(diff["difference"], diff["ci95"], claim.margin, side), claim.paper)
