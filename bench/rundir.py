"""A run directory: its file names, the `run.json` schema, reading and atomic writing.

Every command that makes or reads runs (`bench run`, `bench score`, `bench report`, ablations) goes through
this module, so a run directory has one layout:

    run.json                        configuration, provenance, status and kind (schema below)
    predictions.jsonl               one line per sample (see bench.predictions)
    metrics.json                    per-split metrics
    predictions.<suite>.jsonl       the same per suite, when one run covers several suites
    predictions[.<suite>].rank<k>.jsonl   a rank's own file under a launcher, merged and removed at the end
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.errors import DataFormatError

RUN_FILE = "run.json"
SCHEMA_VERSION = 2
STATUSES = ("running", "complete", "failed")
KINDS = ("leaderboard", "ablation", "diagnostic")
_LEGACY_STATUS = {"finished": "complete"}  # schema 1 wrote "finished"


@dataclass
class RunRecord:
    """The contents of run.json: what was run, how, on what, by which code, and how it went."""

    model: str
    suites: list[str]
    splits: dict[str, list[str]]  # suite -> splits scored
    kind: str = "leaderboard"  # leaderboard entry, ablation variant or diagnostic
    status: str = "running"
    label: str | None = None  # display name in reports (default: the model name)
    group: str | None = None  # e.g. the ablation a variant belongs to
    spec: dict[str, Any] = field(default_factory=dict)  # the resolved configuration (compared on --resume)
    command: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    device: str = "none"
    world_size: int = 1
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    dataset_fingerprints: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: str = ""
    updated: str = ""
    resumed: int = 0
    timings: dict[str, Any] = field(default_factory=dict)
    throughput_samples_per_s: float | None = None
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"run kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.status not in STATUSES:
            raise ValueError(f"run status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def display_name(self) -> str:
        return self.label or self.model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = RUN_FILE) -> RunRecord:
        """Parse run.json (schema 1 files are upgraded: status "finished" is "complete", kind leaderboard)."""
        if not isinstance(data, dict):
            raise DataFormatError(f"{source}: expected a JSON object")
        for key, kind in (("model", str), ("suites", list)):
            if not isinstance(data.get(key), kind):
                raise DataFormatError(f"{source}: '{key}' must be a {kind.__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["status"] = _LEGACY_STATUS.get(values.get("status", "running"), values.get("status", "running"))
        values.setdefault("splits", {})
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{source}: {exc}") from None


class RunDir:
    """One run directory: where its files are, and reading and writing them safely."""

    def __init__(self, path: str | Path, suites: list[str] | None = None):
        self.path = Path(path)
        self._suites = suites

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    def exists(self) -> bool:
        return self.run_file.is_file()

    @property
    def suites(self) -> list[str]:
        """The run's suites: as given, else from run.json."""
        if self._suites is None:
            self._suites = self.read().suites
        return self._suites

    def _name(self, kind: str, suite: str, rank: int | None = None) -> Path:
        several = len(self.suites) > 1
        parts = [kind] + ([suite] if several else []) + ([f"rank{rank}"] if rank is not None else [])
        return self.path / (".".join(parts) + (".jsonl" if kind == "predictions" else ".json"))

    def predictions(self, suite: str, rank: int | None = None) -> Path:
        """`predictions[.<suite>][.rank<k>].jsonl`."""
        return self._name("predictions", suite, rank)

    def metrics(self, suite: str) -> Path:
        """`metrics[.<suite>].json`."""
        return self._name("metrics", suite)

    def prediction_files(self, suite: str) -> list[Path]:
        """The suite's merged predictions file (if written) followed by any rank files."""
        main = self.predictions(suite)
        stem = main.name[: -len(".jsonl")]
        ranks = sorted(self.path.glob(f"{stem}.rank*.jsonl"))
        return ([main] if main.exists() else []) + ranks

    def read(self) -> RunRecord:
        return RunRecord.from_dict(read_json(self.run_file), source=str(self.run_file))

    def write(self, record: RunRecord) -> None:
        write_json(self.run_file, record.to_dict())

    def read_metrics(self, suite: str) -> dict[str, Any] | None:
        path = self.metrics(suite)
        return read_json(path) if path.is_file() else None

    def write_metrics(self, suite: str, metrics: dict[str, Any]) -> None:
        write_json(self.metrics(suite), metrics)


def default_run_path(*name_parts: str, root: Path = Path("results") / "runs") -> Path:
    """`<root>/<UTC time>_<parts joined by _>`, with unsafe characters replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return root / re.sub(r"[^A-Za-z0-9_.+-]", "_", "_".join([stamp, *name_parts]))


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; malformed JSON is a DataFormatError naming the file and line."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename): a crash never leaves a half-written file."""
    write_text_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str | bytes) -> None:
    """Write a file through a temporary sibling and a rename, so readers see the old or the new bytes."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
