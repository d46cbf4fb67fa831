"""Declare an ablation's complete cells in the runs.toml of the results directory they were written below,
so that `bench report`, which reads only declared runs, links and checks them like every committed run."""

from __future__ import annotations

from pathlib import Path

from bench.ablate.cells import Cell
from bench.report.runs import DECLARED_RUNS, read_declared
from bench.rundir.layout import RunDir
from bench.tomlfiles import toml_string


def results_root(out: Path) -> Path | None:
    """The nearest directory at or above `out` that has a runs.toml (None: the cells stay undeclared)."""
    for directory in [Path(out).resolve(), *Path(out).resolve().parents]:
        if (directory / DECLARED_RUNS).is_file():
            return directory
    return None


def declare_cells(out: Path, cells: list[Cell], complete) -> list[str]:
    """Append a [[run]] (directory, label = variant, the command its run.json records) for every complete cell
    not yet declared; returns the directories added."""
    root = results_root(out)
    if root is None:
        return []
    known = {Path(entry.directory).as_posix() for entry in read_declared(root) or []}
    blocks, added = [], []
    for cell in cells:
        directory = cell.directory(out)
        if not (complete(directory) and (directory / "run.json").is_file()):  # pca cells are not run directories
            continue
        relative = directory.resolve().relative_to(root).as_posix()
        if relative in known:
            continue
        command = RunDir(directory).read().command
        blocks.append(f"\n[[run]]\ndirectory = {toml_string(relative)}\nlabel = {toml_string(cell.variant)}\n"
                      f"command = {toml_string(command or '')}\n")
        added.append(relative)
    if blocks:
        with open(root / DECLARED_RUNS, "a", encoding="utf-8") as handle:
            handle.write("".join(blocks))
    return added
