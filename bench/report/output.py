"""Writes the report's files atomically, then deletes only what an earlier build wrote and this one did not.

The manifest `<results>/.report-manifest.json` lists every file a build wrote (sorted, paths relative to the
results directory): {"about": "...", "files": [...], "schema": 1}. A file not in the previous manifest is
never deleted (a user's own plots/my_figure.png stays), nor one reached through a symbolic link.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path, PurePosixPath

from bench.errors import DataFormatError
from bench.rundir import read_json, write_text_atomic

MANIFEST = ".report-manifest.json"
MANIFEST_SCHEMA = 1
GENERATED_SUFFIXES = (".md", ".csv", ".png")  # what a build writes; nothing else is ever deleted


def write_outputs(results_dir: Path, outputs: dict[str, bytes]) -> None:
    """Writes every output (unchanged files are left alone), prunes stale ones, then records the manifest."""
    previous = read_manifest(results_dir)
    for relative in sorted(outputs):
        _write(results_dir / relative, outputs[relative])
    for relative in sorted(previous - set(outputs)):
        _delete_generated(results_dir, relative)
    _write(results_dir / MANIFEST, manifest_bytes(outputs))


def manifest_bytes(outputs: dict[str, bytes]) -> bytes:
    data = {
        "about": "Written by `python -m bench report`: the files of its last build. The next build deletes "
        "those it no longer writes, and nothing else.",
        "files": sorted(outputs),
        "schema": MANIFEST_SCHEMA,
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_manifest(results_dir: Path) -> set[str]:
    """The files the previous build wrote; an unreadable manifest means none (nothing is deleted)."""
    path = results_dir / MANIFEST
    if not path.is_file():
        return set()
    try:
        files = read_json(path).get("files")
    except DataFormatError as exc:
        warnings.warn(f"{exc}: no stale report files deleted", stacklevel=2)
        return set()
    if not isinstance(files, list):
        warnings.warn(f"{path}: 'files' must be a list: no stale report files deleted", stacklevel=2)
        return set()
    return {entry for entry in files if isinstance(entry, str)}


def _write(path: Path, data: bytes) -> None:
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        return  # same bytes: keep the file (and its modification time)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, data)


def _delete_generated(results_dir: Path, relative: str) -> None:
    """Deletes results_dir/relative if it is a regular file reached without any symbolic link, then its
    emptied folders up to results_dir."""
    parts = PurePosixPath(relative).parts
    if (
        not parts
        or PurePosixPath(relative).is_absolute()
        or "\\" in relative
        or any(part in (".", "..") for part in parts)
        or not relative.endswith(GENERATED_SUFFIXES)
    ):
        return
    path = results_dir
    for part in parts:
        path = path / part
        if path.is_symlink():
            return
    if not path.is_file():
        return
    path.unlink()
    folder = path.parent
    while folder != results_dir:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            break
        folder = folder.parent
