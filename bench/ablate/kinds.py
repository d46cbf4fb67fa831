"""Ablation kinds: how a kind's cells are made, found complete and assembled into a page; `kind = NAME` in an
ablation file names one of `ABLATION_KINDS`, registered like suites and models (an unknown name suggests one).

The built-in kinds: "eval" (`bench.ablate.evaluate.EvalKind`: a runner evaluation), "train"
(`bench.ablate.train.TrainKind`: train, then evaluate as "eval" does) and "pca" (`bench.ablate.pca.PcaKind`:
a measurement of VAE latents). A new kind is a class with these methods, decorated `@ABLATION_KINDS.register(NAME)`
and registered lazily below, so that loading an ablation imports only the kind it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench.ablate.cells import Cell
from bench.ablate.spec import Ablation
from bench.registry import Registry


class AblationKind(Protocol):
    """What the driver asks of a kind (instances are stateless: the driver makes one per call)."""

    config: ClassVar[type]  # the dataclass a variant resolves to (its fields are the file's configuration keys)
    default_context: ClassVar[str]  # the context baseline a file that names none gets ("": no regime check)

    def data_identity(self, config: Any) -> tuple:
        """What decides the data a cell reads: cells that share it share one computation of the fingerprints."""

    def fingerprints(self, config: Any, data_root: str | None) -> dict[str, str]:
        """Fingerprints of the data a cell reads (part of its key)."""

    def is_complete(self, directory: Path) -> bool:
        """Does the cell directory hold a finished result (reused, never made again)?"""

    def is_started(self, directory: Path) -> bool:
        """Did an interrupted making leave something there (refused without --resume)?"""

    def make(self, cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
        """Make the cell in `directory`; `command` makes exactly this cell, `resume` finishes an interrupted one."""

    def assemble(self, ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
                 missing: list[tuple[str, str]]) -> list[Path]:
        """Write the page (table, plots, report, claims) in `out` from the complete cells; the paths written."""


ABLATION_KINDS: Registry[type[AblationKind]] = Registry("ablation kind")
ABLATION_KINDS.register_lazy("eval", "bench.ablate.evaluate:EvalKind")
ABLATION_KINDS.register_lazy("train", "bench.ablate.train:TrainKind")
ABLATION_KINDS.register_lazy("pca", "bench.ablate.pca:PcaKind")
