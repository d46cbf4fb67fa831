"""A run directory: its file names, the `run.json` schema, reading and atomic writing.

Every command that makes or reads runs (`bench run`, `bench score`, `bench report`, ablations) goes through
this module, so a run directory has one layout:

    run.json                        configuration, provenance, status and kind (schema below); absolute paths
                                    inside the checkout are stored relative to it (see `checkout_paths`)
    predictions.jsonl               one line per sample (see bench.predictions); .jsonl.gz once `bench compact`ed
    metrics.json                    per-split metrics
    predictions.<suite>.jsonl       the same per suite, when one run covers several suites
    predictions[.<suite>].rank<k>.jsonl   a rank's own file under a launcher, merged and removed at the end
    .lock                           locked by the run writing the directory; see RunLock
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import re
import socket
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError, DataFormatError
from bench.io import read_json_object, write_json

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUNS_ENV = "BENCH_RUNS"
SCHEMA_VERSION = 2
STATUSES = ("running", "complete", "failed")
KINDS = ("leaderboard", "ablation", "diagnostic")
_LEGACY_STATUS = {"finished": "complete"}  # schema 1 wrote "finished"
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # what a suite name in run.json may be
CHECKOUT = Path(__file__).resolve().parents[1]  # the checkout this harness runs from, when it is one


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
        data = self.to_dict()
        root = checkout_root()
        if root is None:
            return data
        relative: list[str] = []
        for key, value in data.items():
            if key not in ("command", "checkout_paths"):
                data[key] = _relative_paths(value, root, key, relative)
        data["checkout_paths"] = sorted(set(relative))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = RUN_FILE) -> RunRecord:
        """Parse run.json (schema 1 files are upgraded: status "finished" is "complete", kind leaderboard)."""
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
        root = checkout_root()
        pointers = values.get("checkout_paths")
        if not isinstance(pointers, list) or not all(isinstance(pointer, str) for pointer in pointers):
            pointers = values["checkout_paths"] = []
        for pointer in pointers if root is not None else []:
            _absolute_path(values, pointer, root)
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
        """`predictions[.<suite>][.rank<k>].jsonl`, or the merged file's gzipped form `.jsonl.gz` when only that
        is there (`bench compact`; bench.predictions reads it transparently)."""
        path = self._name("predictions", suite, rank)
        gzipped = path.with_name(path.name + ".gz")
        return gzipped if rank is None and not path.exists() and gzipped.exists() else path

    def metrics(self, suite: str) -> Path:
        """`metrics[.<suite>].json`."""
        return self._name("metrics", suite)

    def prediction_files(self, suite: str) -> list[Path]:
        """The suite's merged predictions file (if written) followed by any rank files."""
        main = self.predictions(suite)
        stem = main.name[: -len(".gz")] if main.name.endswith(".gz") else main.name
        stem = stem[: -len(".jsonl")]
        ranks = sorted(self.path.glob(f"{stem}.rank*.jsonl"))
        return ([main] if main.exists() else []) + ranks

    def prediction_files_anywhere(self) -> list[Path]:
        """Every predictions file in the directory, of any suite or rank, plain or gzipped."""
        return sorted(self.path.glob("predictions*.jsonl")) + sorted(self.path.glob("predictions*.jsonl.gz"))

    def read(self) -> RunRecord:
        return RunRecord.from_dict(read_json_object(self.run_file), source=str(self.run_file))

    def write(self, record: RunRecord) -> None:
        write_json(self.run_file, record.to_stored(), sort_keys=True)

    def read_metrics(self, suite: str) -> dict[str, Any] | None:
        path = self.metrics(suite)
        return read_json_object(path) if path.is_file() else None

    def write_metrics(self, suite: str, metrics: dict[str, Any]) -> None:
        write_json(self.metrics(suite), metrics, sort_keys=True)


def checkout_root() -> Path | None:
    """The checkout of this project the harness runs from; None when it runs from an installed copy."""
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else None


def _relative_paths(value: Any, root: Path, pointer: str, found: list[str]) -> Any:
    """`value` with every string that is an absolute path inside `root` made relative to it; their pointers
    ("key/sub/0", JSON-pointer escaped) go to `found`."""
    if isinstance(value, dict):
        return {key: _relative_paths(item, root, f"{pointer}/{_escaped(key)}", found) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative_paths(item, root, f"{pointer}/{index}", found) for index, item in enumerate(value)]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        if path == root or root in path.parents:
            found.append(pointer)
            return path.relative_to(root).as_posix()
    return value


def _escaped(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _child(container: Any, part: str) -> Any:
    """A dict's value or a list's item named by one pointer part; None when there is none."""
    if isinstance(container, dict):
        return container.get(part.replace("~1", "/").replace("~0", "~"))
    if isinstance(container, list) and part.isdecimal() and int(part) < len(container):
        return container[int(part)]
    return None


def _absolute_path(values: dict[str, Any], pointer: str, root: Path) -> None:
    """Makes the relative path at `pointer` absolute below `root` (a pointer that names no string is left)."""
    *parents, last = pointer.split("/")
    container: Any = values
    for part in parents:
        container = _child(container, part)
    if isinstance(_child(container, last), str):
        key: Any = int(last) if isinstance(container, list) else last.replace("~1", "/").replace("~0", "~")
        container[key] = (root / container[key]).as_posix()


class RunLock:
    """An exclusive lock on a run directory, held while one command writes it.

    The lock is a POSIX record lock on `<run>/.lock`: the kernel frees it when its process dies, even by
    SIGKILL, and forked children (data-loading workers that may outlive a killed run for a while) never hold
    it. A lock file left by a killed run is stale and is taken over (`stale` then says whose it was)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.stale: str | None = None  # the holder a killed run left in the lock file, once acquired
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock at once or raise BenchError naming the process that holds it."""
        while True:
            fd = _open_lock_file(self.path)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                holder = _read_fd(fd) or "another process"
                os.close(fd)
                raise BenchError(f"{self.path.parent} is being written by another run ({holder}); wait for it to "
                                 "end or choose another --out") from None
            try:  # the holder we waited for may have removed the file: lock the one at the path
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.stale = _read_fd(fd) or None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}".encode())
        self._fd = fd
        return self

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock file and free the lock (removing first, so no one locks a file about to vanish)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _open_lock_file(path: Path) -> int:
    """The lock file opened for writing, never through a link (O_NOFOLLOW) and refused unless a regular file
    with no other name (a hard link), so locking never truncates a file elsewhere."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BenchError(f"{path} is a symbolic link; remove it (a lock file is never followed)") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise BenchError(f"{path} is not a plain file of its own (a FIFO, device or hard link); remove it")
    return fd


def _read_fd(fd: int) -> str:
    """The holder a lock file names (its first line, at most 200 bytes of it)."""
    lines = os.pread(fd, 200, 0).decode("utf-8", errors="replace").strip().splitlines()
    return lines[0] if lines else ""


def runs_root() -> Path:
    """Where runs go without --out: $BENCH_RUNS, else `runs/` in the working directory (git-ignored, so
    ad-hoc runs never enter the committed results/)."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def default_run_path(*name_parts: str, root: Path | None = None) -> Path:
    """`<root or runs_root()>/<UTC time>_<parts joined by _>`, with unsafe characters replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return (root or runs_root()) / re.sub(r"[^A-Za-z0-9_.+-]", "_", "_".join([stamp, *name_parts]))


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()
