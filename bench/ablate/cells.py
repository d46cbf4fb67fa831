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
PROVENANCE = "provenance.json"  # in each cell directory: the code identity of whoever made (and resumed) it


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


def parse_only(only: str, ablation: Ablation, budget: str, seed_count: int | None) -> list[tuple[str, int]]:
    """`VARIANT[:SEED]` -> the (variant, seed) pairs it names (`seed_count`: --seeds, else the budget's count for
    the variant); an unknown variant or seed is an error."""
    names = ablation.variant_names(budget)
    # a variant's own name may hold colons ("joint-1:1"): the whole string first, else the seed after the last one
    variant, sep, seed = (only, "", "") if only in names or ":" not in only else only.rpartition(":")
    if variant not in names:
        from bench.ablate.spec import unknown

        raise BenchError(f"--only: {unknown(f'variant of {ablation.name} at budget {budget}', variant, names)}")
    seeds = ablation.seeds(budget, seed_count, variant)
    if not sep:
        return [(variant, s) for s in seeds]
    if not seed.isdecimal() or int(seed) not in seeds:
        raise BenchError(f"--only: seed {seed!r} is not one of {variant}'s seeds at budget {budget}: {seeds}")
    return [(variant, int(seed))]


def cell_command(ablation: str, budget: str, cell_name: str, out: Path, extra: list[str]) -> str:
    """The command that makes exactly this cell, recorded in its run.json."""
    return shlex.join(["python", "-m", "bench", "ablate", ablation, "--budget", budget, "--only", cell_name,
                       "--out", Path(out).as_posix(), *extra])


def record_provenance(directory: Path) -> None:
    """Write the cell's provenance.json, or, on a resume by other code, add that code to its `resumed_by`."""
    from bench.code_version import code_identity
    from bench.io import read_json_object, write_atomic

    path = Path(directory) / PROVENANCE
    identity = code_identity()
    if path.is_file():
        record = read_json_object(path)
        if {k: record.get(k) for k in identity} == identity or identity in record.get("resumed_by", []):
            return
        record["resumed_by"] = [*record.get("resumed_by", []), identity]
    else:
        record = identity
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def read_provenance(directory: Path) -> dict[str, Any] | None:
    """A cell's provenance.json; for cells made before it was recorded, the commit and dirty flag their run.json
    recorded with no source hash (None when neither exists)."""
    from bench.io import read_json_object

    path = Path(directory) / PROVENANCE
    if path.is_file():
        return read_json_object(path)
    run = Path(directory) / "run.json"
    if not run.is_file():
        return None
    commit = read_json_object(run).get("git_commit") or "unknown"
    return {"commit": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty"), "source_hash": None}
