"""Declare an ablation's complete cells in the runs.toml of the results directory they were written below
(bench.rundir.declared), so that `bench report`, which reads only declared runs, links and checks them like
every committed run."""

from __future__ import annotations

from pathlib import Path

from bench.ablate.cells import Cell
from bench.rundir.declared import declare_runs, results_root
from bench.rundir.layout import RunDir


def declare_cells(out: Path, cells: list[Cell], complete) -> list[str]:
    """Declare every complete cell that is a run directory (pca cells are not), labelled by its variant; returns
    the directories added."""
    root = results_root(out)
    if root is None:
        return []
    runs = [(cell.directory(out), cell.variant) for cell in cells
            if complete(cell.directory(out)) and RunDir(cell.directory(out)).exists()]
    return declare_runs(root, runs)
