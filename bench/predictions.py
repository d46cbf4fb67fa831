"""The predictions file: one JSON object per line, appended and flushed as samples finish.

A line: {"sample_id": str, "split": str, "segmentation": COCO RLE at the original resolution or null,
"iou": float, "status": "ok" | "failed", "error": str | null, "intersection": int, "union": int}.
Only `sample_id` and `segmentation` are required by `bench score`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.errors import DataFormatError


class PredictionWriter:
    """Appends records to a JSONL file, one write and flush per line so a killed run loses at most one line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(path: Path, repair_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a predictions file; malformed lines raise DataFormatError.

    With `repair_tail`, an unterminated last line (a run killed mid-write) is cut off instead.
    """
    path = Path(path)
    data = path.read_bytes()
    if repair_tail and data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(keep)
        data = data[:keep]
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("sample_id"), str):
            raise DataFormatError(f"{path}:{number}: expected an object with a string 'sample_id'")
        if "segmentation" not in record:
            raise DataFormatError(f"{path}:{number}: missing 'segmentation' (COCO RLE or null)")
        segmentation = record["segmentation"]
        if segmentation is not None and not _is_rle(segmentation):
            raise DataFormatError(f"{path}:{number}: 'segmentation' must be {{'size': [h, w], 'counts': str}} or null")
        yield number, record


def _is_rle(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("size"), list)
        and len(value["size"]) == 2
        and all(isinstance(v, int) and v >= 0 for v in value["size"])
        and isinstance(value.get("counts"), (str, list))
    )


def read_predictions(path: Path, split: str | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """(records by sample_id, number of lines left out) for scoring `split`.

    If some lines carry `"split": split`, only those are used and the others are left out; otherwise
    every line is used (so a file written for ReasonSeg `test` also serves `test-short`/`test-long`).
    A duplicated id among the used lines raises DataFormatError naming both lines.
    """
    records = list(iter_records(path))
    used = records
    if split is not None and any(r.get("split") == split for _, r in records):
        used = [(n, r) for n, r in records if r.get("split") == split]
    by_id: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for number, record in used:
        sid = record["sample_id"]
        if sid in by_id:
            raise DataFormatError(f"{path}:{number}: duplicated sample_id {sid!r} (first on line {lines[sid]})")
        by_id[sid] = record
        lines[sid] = number
    return by_id, len(records) - len(used)


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write a whole predictions file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
