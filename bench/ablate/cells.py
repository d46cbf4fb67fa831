"""Cells: one variant at one seed, keyed by its exact configuration, found on disk, reused or (re)made.

A cell's durable result is a directory `<out>/runs/<variant>-s<seed>-<key>`, where the key hashes the
resolved configuration, the budget, the seed and the data's fingerprints: a cell already complete is reused,
a cell a crash left half done is finished by --resume, and a changed configuration makes a new directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ablate.spec import Ablation
from bench.errors import BenchError

KEY_LENGTH = 10


@dataclass(frozen=True)
class Cell:
    """One variant of an ablation at one seed, under one budget."""

    ablation: str
    variant: str
    seed: int
    budget: str
    config: Any  # the kind's configuration dataclass
    data: dict[str, str]  # fingerprints of the data the cell reads

    @property
    def name(self) -> str:
        return f"{self.variant}:{self.seed}"

    def key(self) -> str:
        """A hash of everything that decides the cell's numbers."""
        identity = {"ablation": self.ablation, "variant": self.variant, "seed": self.seed, "budget": self.budget,
                    "config": dataclasses.asdict(self.config), "data": self.data}
        identity["config"].pop("data_root", None)  # where the data lie does not matter; what they hold does
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return digest[:KEY_LENGTH]

    def directory(self, out: Path) -> Path:
        return Path(out) / "runs" / f"{self.variant}-s{self.seed}-{self.key()}"


def parse_only(only: str, ablation: Ablation, budget: str, seeds: list[int]) -> list[tuple[str, int]]:
    """`VARIANT[:SEED]` -> the (variant, seed) pairs it names; an unknown variant or seed is an error."""
    variant, sep, seed = only.partition(":")
    names = ablation.variant_names(budget)
    if variant not in names:
        from bench.ablate.spec import unknown

        raise BenchError(f"--only: {unknown(f'variant of {ablation.name} at budget {budget}', variant, names)}")
    if not sep:
        return [(variant, s) for s in seeds]
    if not seed.isdigit() or int(seed) not in seeds:
        raise BenchError(f"--only: seed {seed!r} is not one of this budget's seeds {seeds}")
    return [(variant, int(seed))]


def cell_command(ablation: str, budget: str, cell_name: str, out: Path, extra: list[str]) -> str:
    """The command that makes exactly this cell, recorded in its run.json."""
    return shlex.join(["python", "-m", "bench", "ablate", ablation, "--budget", budget, "--only", cell_name,
                       "--out", Path(out).as_posix(), *extra])
