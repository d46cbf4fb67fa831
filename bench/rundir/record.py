"""run.json's schema (`RunRecord`), the same for every command that writes a run, and what a record captures
about the code that made it (`provenance`) and when (`now_iso`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.code_version import git_commit, package_versions
from bench.errors import DataFormatError
from bench.rundir.checkout import restore_absolute, store_relative

SCHEMA_VERSION = 2
STATUSES = ("running", "complete", "failed")
KINDS = ("leaderboard", "ablation", "diagnostic")
_LEGACY_STATUS = {"finished": "complete"}  # schema 1 wrote "finished"
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # what a suite name in run.json may be


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
    # where run.json stores a path relative to the checkout ("model_config/checkpoint", ...): written for every
    # absolute path inside it, so a run is the same in every clone; reading makes them absolute again
    checkout_paths: list[str] = field(default_factory=list)

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

    def to_stored(self) -> dict[str, Any]:
        """run.json's contents: absolute paths inside the checkout made relative and listed in checkout_paths."""
        return store_relative(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> RunRecord:
        """Parse run.json read from `source` (schema 1 files are upgraded: status "finished" is "complete", kind
        leaderboard)."""
        if not isinstance(data, dict):
            raise DataFormatError(f"{source}: expected a JSON object")
        for key, kind in (("model", str), ("suites", list)):
            if not isinstance(data.get(key), kind):
                raise DataFormatError(f"{source}: '{key}' must be a {kind.__name__}")
        unsafe = [suite for suite in data["suites"] if not isinstance(suite, str) or not SUITE_NAME.fullmatch(suite)]
        if unsafe:  # suite names become file names (predictions.<suite>.jsonl): never a path
            raise DataFormatError(f"{source}: suite names must be plain names (letters, digits, '_.+-'), got "
                                  f"{unsafe[0]!r}"[:300])
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["status"] = _LEGACY_STATUS.get(values.get("status", "running"), values.get("status", "running"))
        values.setdefault("splits", {})
        restore_absolute(values)
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{source}: {exc}") from None


def provenance() -> dict[str, Any]:
    """The record's fields that say which code made it: the commit and the package versions."""
    return {"git_commit": git_commit(), "versions": package_versions()}


def now_iso() -> str:
    """The current UTC time to the second, as run.json records times."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
