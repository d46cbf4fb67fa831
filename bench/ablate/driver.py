"""`bench ablate NAME`: resolve the cells of a budget, reuse the complete ones, make (or --resume) the rest,
then assemble the table, plots and report from whatever cells are on disk, naming the missing ones, and
declare the complete cells in the runs.toml of the results directory they lie below (if it has one).

Without --out an ablation writes below runs/ablations/NAME ($BENCH_RUNS/ablations/NAME when set), git-ignored like
`bench run`'s directories, so a smoke run never touches the committed results; those are made with
`--out results/ablations/NAME`. Each cell records the code that made it (`provenance.json`: commit, dirty tree,
source hash), and the report says when cells disagree."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ablate.cells import Cell, cell_command, parse_only, record_provenance
from bench.ablate.context import context_cell
from bench.ablate.declare import declare_cells
from bench.ablate.executors import LINKS as JOB_LOGS
from bench.ablate.kinds import ABLATION_KINDS, AblationKind
from bench.ablate.load import load_ablation
from bench.ablate.spec import Ablation
from bench.errors import BenchError
from bench.tomlfiles import toml_value


def default_out(name: str) -> Path:
    """runs/ablations/NAME below $BENCH_RUNS or the working directory (git-ignored, like `bench run`'s runs)."""
    return Path(os.environ.get("BENCH_RUNS") or "runs") / "ablations" / name


@dataclass
class Options:
    """The command line of `bench ablate`, parsed."""

    name: str
    budget: str = "smoke"
    seeds: int | None = None
    suites: list[str] | None = None
    data_root: str | None = None
    out: Path | None = None
    resume: bool = False
    only: str | None = None
    collect: bool = False  # assemble from what is on disk; make nothing
    list_cells: bool = False
    vae: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    cluster: Any = None  # bench.ablate.executors.Cluster (--executor): the cells as submitit jobs; None: in-process

    def config_overrides(self) -> dict[str, Any]:
        values = dict(self.overrides)
        if self.suites:
            values.update(suites=self.suites, splits=None)  # another suite: every split of it but train
        if self.vae:
            values["vae"] = self.vae
        return values

    def cell_flags(self) -> list[str]:
        """Flags beside --budget/--only/--out that change a cell, for the command recorded with it."""
        flags = [*(["--seeds", str(self.seeds)] if self.seeds is not None else []),
                 *(["--suite", *self.suites] if self.suites else []),
                 *(["--vae", self.vae] if self.vae else [])]
        for key, value in sorted(self.overrides.items()):
            flags += ["--set", f"{key}={toml_value(value)}"]
        return flags


def run(options: Options) -> int:
    """Make and assemble; returns the exit code (0, or 1 when --collect finds cells missing)."""
    ablation = load_ablation(options.name)
    out = options.out or default_out(ablation.name)
    kind = ABLATION_KINDS.get(ablation.kind)()
    overrides = options.config_overrides()
    cells = resolve_cells(ablation, options.budget, options.seeds, overrides, kind, options.data_root)
    if options.list_cells:
        print("\n".join(cell.name for cell in cells))
        return 0
    chosen = cells
    if options.only:
        wanted = set(parse_only(options.only, ablation, options.budget, options.seeds))
        chosen = [cell for cell in cells if (cell.variant, cell.seed) in wanted]
    failed = 0
    if not options.collect and options.cluster is not None and options.cluster.submits:
        failed = submit_cells(ablation, chosen, out, options, kind)
        if failed is None:
            return 0  # the jobs run on: --collect assembles later
    elif not options.collect:
        for cell in chosen:
            make_cell(cell, out, options, kind)
    if options.only:
        return 1 if failed else 0
    reference = next((cell for cell in cells if cell.variant == ablation.reference), None)
    context = context_cell(ablation, reference) if reference else None
    if context is not None:  # even with --collect: the regime check's baseline reads annotations, no model
        from bench.ablate.evaluate import ensure_context

        ensure_context(context, out, options.data_root)
    missing = [(cell.name, cell_command(ablation.name, options.budget, cell.name, out, options.cell_flags()))
               for cell in cells if not kind.is_complete(cell.directory(out))]
    paths = kind.assemble(ablation, options.budget, cells, out, command_line(options, out), missing)
    for directory in declare_cells(out, cells + ([context] if context else []), kind.is_complete):
        print(f"declared {directory} in runs.toml", file=sys.stderr)
    for name, command in missing:
        print(f"missing: {name}; make it with: {command}", file=sys.stderr)
    if missing:
        from bench.ablate.jobs import failure_notes

        for note in failure_notes(out, cells, kind.is_complete):
            print(note, file=sys.stderr)
    for path in paths:
        print(f"wrote {path}")
    return 1 if missing else 0


def submit_cells(ablation: Ablation, cells: list[Cell], out: Path, options: Options,
                 kind: AblationKind) -> int | None:
    """--executor slurm|local: the cells still to make as submitit jobs; once every job is over (--wait, or local)
    the number of failed cells, None while they run on."""
    from bench.ablate.jobs import JOBS, Jobs, to_submit

    cluster = options.cluster
    todo = to_submit(cells, out, kind.is_complete, kind.is_started, options.resume)
    if not todo:
        return 0
    jobs = Jobs(ablation.name, todo, out, cluster, options.cell_flags(), options.data_root)
    jobs.submit()
    resubmit = f"{command_line(options, out)} --executor {cluster.executor} --resume"
    if cluster.executor == "slurm" and not cluster.wait:
        print(f"submitted {len(todo)} cells of {ablation.name} as SLURM job array {jobs.job_id()} (its files: "
              f"{Path(out) / JOBS}); follow it with: squeue -j {jobs.job_id()}")
        print(f"when it is over, assemble the table with: {command_line(options, out)} --collect")
        return None
    failures = jobs.follow(kind.is_complete)
    if failures:
        print(f"{len(failures)} of {len(todo)} cells failed; resubmit what is missing or failed with: {resubmit}",
              file=sys.stderr)
    return len(failures)


def resolve_cells(ablation: Ablation, budget: str, seed_count: int | None, overrides: dict[str, Any],
                  kind: AblationKind, data_root: str | None) -> list[Cell]:
    """Every (variant, seed) of the budget, in variant order then seed order (`seed_count`: --seeds, else the
    budget's count for each variant)."""
    cells = []
    fingerprints: dict[str, dict[str, str]] = {}
    for variant in ablation.variant_names(budget):
        config = ablation.resolve(variant, budget, overrides)
        data = fingerprints.setdefault(repr(kind.data_identity(config)), kind.fingerprints(config, data_root))
        cells += [Cell(ablation.name, variant, seed, budget, config, data)
                  for seed in ablation.seeds(budget, seed_count, variant)]
    return cells


def make_cell(cell: Cell, out: Path, options: Options, kind: AblationKind) -> None:
    """Reuse a complete cell; finish a partial one with --resume (refuse without); else make it."""
    directory = cell.directory(out)
    if kind.is_complete(directory):
        print(f"reused {cell.name}: {directory}", file=sys.stderr)
        return
    started = kind.is_started(directory) and bool(set(os.listdir(directory)) - set(JOB_LOGS))  # not a job log alone
    if started and not options.resume:
        raise BenchError(f"cell {cell.name} in {directory} was interrupted; pass --resume to finish it")
    command = cell_command(cell.ablation, cell.budget, cell.name, out, options.cell_flags())
    print(f"{'resuming' if started else 'making'} {cell.name}: {directory}", file=sys.stderr)
    directory.mkdir(parents=True, exist_ok=True)
    record_provenance(directory)
    kind.make(cell, directory, command, options.data_root, resume=started)


def command_line(options: Options, out: Path) -> str:
    """The command that assembles this ablation's outputs (named in its report)."""
    import shlex

    return shlex.join(["python", "-m", "bench", "ablate", options.name, "--budget", options.budget,
                       "--out", Path(out).as_posix(), *options.cell_flags()])
