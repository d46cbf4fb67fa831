"""Writes the report's files atomically, then deletes only what an earlier build wrote and this one did not.

The manifest `<results>/.report-manifest.json` lists every file a build wrote (sorted, paths relative to the
results directory) with the SHA-256 of the bytes written: {"about": "...", "files": [...], "schema": 2,
"sha256": {path: digest}}. A file is deleted only when the previous manifest lists it, its bytes are still the
ones recorded there (so a manifest naming a user's file deletes nothing) and it is reached without a symbolic
link; a manifest without digests deletes nothing.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path, PurePosixPath

from bench.errors import DataFormatError
from bench.io import read_json_object, read_limited, write_atomic

MANIFEST = ".report-manifest.json"
MANIFEST_SCHEMA = 2
GENERATED_SUFFIXES = (".md", ".csv", ".png")  # what a build writes; nothing else is ever deleted
GENERATED_LIMIT = 1 << 28  # bytes: no file a build writes is larger


def write_outputs(results_dir: Path, outputs: dict[str, bytes]) -> None:
    """Writes every output (unchanged files are left alone), prunes stale ones, then records the manifest."""
    previous = _manifest_digests(results_dir)
    for relative in sorted(outputs):
        _write(results_dir / relative, outputs[relative])
    for relative in sorted(set(previous) - set(outputs)):
        _delete_generated(results_dir, relative, previous[relative])
    _write(results_dir / MANIFEST, manifest_bytes(outputs))


def manifest_bytes(outputs: dict[str, bytes]) -> bytes:
    data = {
        "about": "Written by `python -m bench report`: the files of its last build. The next build deletes "
        "those it no longer writes, and nothing else.",
        "files": sorted(outputs),
        "schema": MANIFEST_SCHEMA,
        "sha256": {name: _sha256(data) for name, data in sorted(outputs.items())},
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_manifest(results_dir: Path) -> set[str]:
    """The files the previous build wrote; an unreadable manifest means none (nothing is deleted)."""
    path = results_dir / MANIFEST
    if not path.is_file():
        return set()
    try:
        files = read_json_object(path).get("files")
    except DataFormatError as exc:
        warnings.warn(f"{exc}: no stale report files deleted", stacklevel=2)
        return set()
    if not isinstance(files, list):
        warnings.warn(f"{path}: 'files' must be a list: no stale report files deleted", stacklevel=2)
        return set()
    return {entry for entry in files if isinstance(entry, str)}


def _manifest_digests(results_dir: Path) -> dict[str, str]:
    """path -> SHA-256 of the files the previous build wrote; none for a manifest without digests."""
    path = results_dir / MANIFEST
    listed = read_manifest(results_dir)
    try:
        digests = read_json_object(path).get("sha256") if listed else None
    except DataFormatError:
        digests = None
    if not isinstance(digests, dict):
        return {}
    return {name: digest for name, digest in digests.items() if name in listed and isinstance(digest, str)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _holds(path: Path, digest: str) -> bool:
    """Whether the file's bytes have SHA-256 `digest` (a file too large for a report never has)."""
    try:
        return _sha256(read_limited(path, GENERATED_LIMIT)) == digest
    except DataFormatError:
        return False


def _write(path: Path, data: bytes) -> None:
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        return  # same bytes: keep the file (and its modification time)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _delete_generated(results_dir: Path, relative: str, digest: str) -> None:
    """Deletes results_dir/relative if it is a regular file reached without any symbolic link whose bytes have
    SHA-256 `digest` (those the build wrote), then its emptied folders up to results_dir."""
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
    if not path.is_file() or not _holds(path, digest):
        return
    path.unlink()
    folder = path.parent
    while folder != results_dir:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            break
        folder = folder.parent
