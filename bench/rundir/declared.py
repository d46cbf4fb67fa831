"""A results directory's runs.toml: the run directories it declares, each with the exact command that makes it;
`bench report` reads only those, and `bench ablate` declares its complete cells there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bench.errors import DataFormatError
from bench.io import read_text, write_atomic
from bench.rundir.layout import RUN_FILE, RunDir
from bench.rundir.record import RunRecord
from bench.tomlfiles import read_toml, toml_string

DECLARED_RUNS = "runs.toml"


@dataclass(frozen=True)
class DeclaredRun:
    """One [[run]] of runs.toml: the directory (relative to the results directory), the exact command that
    makes it and, optionally, the label the report shows; the run.json found there must agree."""

    directory: str
    command: str
    label: str | None = None

    def check(self, record: RunRecord, source: Path) -> None:
        if record.command != self.command:
            raise DataFormatError(f"{source}: run {self.directory!r} was made by {record.command!r}, "
                                  f"not by the declared {self.command!r}")
        if self.label is not None and record.display_name != self.label:
            raise DataFormatError(f"{source}: run {self.directory!r} is labelled {record.display_name!r}, "
                                  f"not {self.label!r}")


def read_declared(results_dir: Path) -> list[DeclaredRun] | None:
    """The [[run]] entries of results_dir/runs.toml, or None when there is no such file."""
    path = Path(results_dir) / DECLARED_RUNS
    if not path.is_file():
        return None
    data = read_toml(path)
    entries = data.get("run", [])
    declared = []
    for index, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(entry, dict) or set(entry) - {"directory", "command", "label"} or not all(
            isinstance(entry.get(key), str) for key in ("directory", "command")
        ):
            raise DataFormatError(f"{path}: run {index + 1} needs strings 'directory' and 'command' (and "
                                  "optionally 'label'), nothing else")
        relative = PurePosixPath(entry["directory"])
        if relative.is_absolute() or ".." in relative.parts or not (path.parent / relative / RUN_FILE).is_file():
            raise DataFormatError(f"{path}: run {index + 1}: no run.json in {entry['directory']!r} (a directory "
                                  "below the results directory)")
        declared.append(DeclaredRun(**entry))
    return declared


def run_directories(results_dir: Path) -> list[Path]:
    """Every run.json below results_dir."""
    return sorted(Path(results_dir).rglob(RUN_FILE), key=lambda path: path.parent.relative_to(results_dir).as_posix())


def undeclared_runs(results_dir: Path) -> list[str]:
    """Run directories below results_dir that its runs.toml does not declare (none without a runs.toml)."""
    declared = read_declared(results_dir)
    if declared is None:
        return []
    names = {PurePosixPath(entry.directory).as_posix() for entry in declared}
    return [name for path in run_directories(results_dir)
            if (name := path.parent.relative_to(results_dir).as_posix()) not in names]


def results_root(out: Path) -> Path | None:
    """The nearest directory at or above `out` that has a runs.toml (None: runs written there stay undeclared)."""
    for directory in [Path(out).resolve(), *Path(out).resolve().parents]:
        if (directory / DECLARED_RUNS).is_file():
            return directory
    return None


def declare_runs(root: Path, runs: list[tuple[Path, str]]) -> list[str]:
    """Add a [[run]] (directory, label, the command its run.json records) to root/runs.toml for every (run
    directory, label) not yet declared, rewriting the file atomically; returns the directories added."""
    known = {Path(entry.directory).as_posix() for entry in read_declared(root) or []}
    blocks, added = [], []
    for directory, label in runs:
        relative = directory.resolve().relative_to(root).as_posix()
        if relative in known:
            continue
        command = RunDir(directory).read().command
        blocks.append(f"\n[[run]]\ndirectory = {toml_string(relative)}\nlabel = {toml_string(label)}\n"
                      f"command = {toml_string(command or '')}\n")
        added.append(relative)
    if blocks:
        path = root / DECLARED_RUNS
        write_atomic(path, read_text(path) + "".join(blocks))
    return added
