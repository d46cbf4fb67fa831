"""The predictions file: one JSON object per line, appended and flushed as samples finish.

A line: {"sample_id": str, "split": str, "segmentation": COCO RLE at the original resolution or null,
"iou": float, "status": "ok" | "failed", "error": str | null, "intersection": int, "union": int}.
Only `sample_id` and `segmentation` are required by `bench score`. Files are read as a stream (line
offsets, not records, are kept), split on b"\n" only, and every RLE is validated before anything decodes it.

A finished run's predictions may be stored gzipped (`predictions.jsonl.gz`, written by `bench compact`):
every reader here opens them transparently, and `PredictionWriter` (a resumed run) first expands them back
to plain JSONL, which it appends to line by line.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import BenchError, DataFormatError
from bench.io import LINE_LIMIT, atomic_file, bounded_lines, expansion_limit, open_binary
from bench.masks import RLEError, counts_valid, rle_counts
from bench.rundir.layout import RunDir
from bench.rundir.lock import RunLock

GZ = ".gz"


def is_gzipped(path: Path) -> bool:
    return Path(path).name.endswith(GZ)


def _total(path: Path) -> int | None:
    """The bytes a gzipped predictions stream may expand to (`expansion_limit`); None for a plain file."""
    return expansion_limit(path) if is_gzipped(path) else None


def _open_binary(path: Path) -> BinaryIO:
    """A predictions file opened for reading bytes (a regular file only), gunzipped when its name ends in .gz."""
    raw = open_binary(path)
    if not is_gzipped(path):
        return raw
    unzipped = gzip.GzipFile(filename=str(path), mode="rb", fileobj=raw)
    unzipped.myfileobj = raw  # closed with it, as gzip.open does with the file it opens
    return unzipped


class PredictionWriter:
    """Appends records to a JSONL file, one write and flush per line so a killed run loses at most one line.

    Given a gzipped file (a compacted run being resumed), it first expands it to the plain file beside it
    (atomically) and appends there."""

    def __init__(self, path: Path):
        path = Path(path)
        if is_gzipped(path):
            plain = path.with_name(path.name[: -len(GZ)])
            if path.exists():
                _convert(path, plain)
            path = plain
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._file = os.fdopen(os.open(self.path, flags, 0o644), "a", encoding="utf-8")  # closed in close()

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
    """Yield (line number, record) from a predictions file, streamed; a malformed line raises DataFormatError.

    Every segmentation is validated (`bench.masks.rle_counts`). With `repair_tail`, an unterminated last line
    (a run killed mid-write) is cut off instead.
    """
    if repair_tail and not is_gzipped(path):  # a gzipped file is written whole, never torn
        _cut_unterminated_tail(Path(path))
    for number, _, record in _iter_lines(Path(path)):
        yield number, record


def _iter_lines(path: Path, validate: bool = True) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(line number, byte offset, record) of every non-blank line, split on b"\n" only: a JSON string may
    hold U+2028 or U+0085, which str.splitlines would take for line ends."""
    with _open_binary(path) as handle:
        offset = 0
        for number, raw in enumerate(bounded_lines(handle, path, total=_total(path)), start=1):
            if raw.strip():
                yield number, offset, parse_line(path, number, raw, validate)
            offset += len(raw)


def parse_line(path: Path, number: int, raw: bytes, validate: bool = True) -> dict[str, Any]:
    """One predictions line -> record; DataFormatError naming the file and line if it is malformed."""
    try:
        record = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of too many digits, nesting too deep
        raise DataFormatError(f"{path}:{number}: not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("sample_id"), str):
        raise DataFormatError(f"{path}:{number}: expected an object with a string 'sample_id'")
    if "segmentation" not in record:
        raise DataFormatError(f"{path}:{number}: missing 'segmentation' (COCO RLE or null)")
    if validate and record["segmentation"] is not None:
        _validate_rle(path, number, record["segmentation"])
    return record


def _validate_rle(path: Path, number: int, segmentation: Any) -> None:
    try:
        rle_counts(segmentation)
    except RLEError as exc:
        raise DataFormatError(f"{path}:{number}: bad 'segmentation' RLE: {exc}") from None


def _cut_unterminated_tail(path: Path, chunk: int = 1 << 16) -> None:
    """Truncate the file after its last b"\n" (reading backwards from the end, not the whole file)."""
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        handle.seek(max(end - 1, 0))
        if end == 0 or handle.read(1) == b"\n":
            return
        position = end
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            newline = handle.read(position - start).rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            position = start
        handle.truncate(0)


def index_predictions(path: Path, split: str | None = None) -> tuple[dict[str, tuple[int, int]], int]:
    """((line number, byte offset) by sample_id, number of lines left out) for scoring `split`; every line is
    parsed and checked, but only the offsets are kept, so memory does not grow with the records. RLE counts
    are validated where they are read back (`read_line`), once, and only for the lines that are scored.

    If some lines carry `"split": split`, only those are used and the others are left out; otherwise
    every line is used (so a file written for ReasonSeg `test` also serves `test-short`/`test-long`).
    A duplicated id among the used lines raises DataFormatError naming both lines.
    """
    path = Path(path)
    every: dict[str, tuple[int, int]] = {}
    in_split: dict[str, tuple[int, int]] = {}
    duplicates: dict[bool, tuple[int, str, int]] = {}  # first duplicate among every line / the split's lines
    total = 0
    for number, offset, record in _iter_lines(path, validate=False):
        total += 1
        sid = record["sample_id"]
        for in_scope, seen in ((True, every), (record.get("split") == split, in_split)):
            if not in_scope:
                continue
            if sid in seen:
                duplicates.setdefault(seen is every, (number, sid, seen[sid][0]))
            else:
                seen[sid] = (number, offset)
    use_split = split is not None and bool(in_split)
    used = in_split if use_split else every
    duplicate = duplicates.get(not use_split)
    if duplicate:
        number, sid, first = duplicate
        raise DataFormatError(f"{path}:{number}: duplicated sample_id {sid!r} (first on line {first})")
    return used, total - len(used)


def read_line(handle: BinaryIO, path: Path, number: int, offset: int) -> dict[str, Any]:
    """The record on line `number` at byte `offset` of an open predictions file (found by index_predictions),
    its RLE validated."""
    handle.seek(offset)
    return parse_line(path, number, handle.readline(LINE_LIMIT))


def read_lines(handle: BinaryIO, path: Path, places: list[tuple[int, int] | None]) -> list[dict[str, Any] | None]:
    """`read_line` for many lines at once: the record at each (line number, byte offset), None for None.

    The RLEs are validated together (`bench.masks.counts_valid`: one vectorised pass over all their counts
    strings); any it is not certain of goes through `rle_counts` as in `read_line`. The error raised is the
    one `read_line` would raise first, taking the places in order."""
    records: list[dict[str, Any] | None] = []
    numbers: list[int] = []
    malformed = None
    for place in places:
        if place is None:
            records.append(None)
            continue
        number, offset = place
        handle.seek(offset)
        try:
            records.append(parse_line(path, number, handle.readline(LINE_LIMIT), validate=False))
        except DataFormatError as exc:  # raised after the RLEs of the lines before it are checked
            malformed = exc
            break
        numbers.append(number)
    segmentations = [record["segmentation"] for record in records if record is not None]
    certain = counts_valid(segmentations)
    for number, segmentation, valid in zip(numbers, segmentations, certain, strict=True):
        if not valid and segmentation is not None:
            _validate_rle(path, number, segmentation)
    if malformed is not None:
        raise malformed
    return records


def read_predictions(path: Path, split: str | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """(records by sample_id, number of lines left out) for scoring `split`: `index_predictions`, read."""
    index, left_out = index_predictions(path, split)
    with readable_predictions(path) as plain, open(plain, "rb") as handle:
        return {sid: read_line(handle, Path(path), *where) for sid, where in index.items()}, left_out


def record_line(record: dict[str, Any]) -> str:
    """`json.dumps(record, sort_keys=True) + "\n"` for a predictions record, written out directly for the usual
    shape (an ok record with a compressed RLE; tests/bench/metrics/test_predictions.py checks they agree), else
    json.dumps."""
    segmentation = record.get("segmentation")
    if (len(record) == 9 and record.get("status") == "ok" and "error" in record
            and record["error"] is None
            and isinstance(segmentation, dict) and len(segmentation) == 2 and isinstance(segmentation.get("counts"), str)
            and type(record.get("iou")) is float and all(type(record.get(k)) is int for k in ("area", "intersection",
                                                                                            "union"))
            and isinstance(record.get("sample_id"), str) and isinstance(record.get("split"), str)
            and record["iou"] - record["iou"] == 0.0):  # finite
        size = segmentation.get("size")
        if isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size):
            return (f'{{"area": {record["area"]}, "error": null, "intersection": {record["intersection"]}, '
                    f'"iou": {record["iou"]!r}, "sample_id": {_json_string(record["sample_id"])}, '
                    f'"segmentation": {{"counts": {_json_string(segmentation["counts"])}, '
                    f'"size": [{size[0]}, {size[1]}]}}, "split": {_json_string(record["split"])}, '
                    f'"status": "ok", "union": {record["union"]}}}\n')
    return json.dumps(record, sort_keys=True) + "\n"


_json_string = json.encoder.encode_basestring_ascii


def write_records(path: Path, records: Iterable[dict[str, Any]],
                  encode: Callable[[dict[str, Any]], str] = record_line) -> None:
    """Write a whole predictions file atomically (temp file + rename), streaming `records` (gzipped when the
    name ends in .gz); if they raise, the temp file is removed and `path` is left as it was."""

    def fill(binary: BinaryIO) -> None:
        for record in records:
            binary.write(encode(record).encode("utf-8"))

    _write_atomic(Path(path), fill)


def _write_atomic(path: Path, fill: Callable[[BinaryIO], None]) -> None:
    """`fill` writes the content (gzipped when `path` ends in .gz) through `bench.io.atomic_file`."""
    with atomic_file(path) as raw, _gzip_writer(raw) if is_gzipped(path) else contextlib.nullcontext(raw) as binary:
        fill(binary)


def _gzip_writer(raw: BinaryIO) -> gzip.GzipFile:
    """Deterministic gzip (no name, no time stamp): the same records give the same bytes."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9)


def _convert(source: Path, target: Path) -> Path:
    """Copy `source` into `target` atomically, gunzipping or gzipping by their names, then remove `source`.
    A kill in between leaves both, identical in content; readers take the plain one first."""
    with _open_binary(source) as reader:
        _write_atomic(target, lambda writer: writer.writelines(bounded_lines(reader, source, total=_total(source))))
    source.unlink()
    return target


def compress(plain: Path) -> Path:
    """Gzip a predictions file into `<name>.gz` atomically, then remove the plain file; returns the new path."""
    plain = Path(plain)
    return _convert(plain, plain.with_name(plain.name + GZ))


@contextlib.contextmanager
def readable_predictions(path: Path) -> Iterator[Path]:
    """A plain JSONL path for `path`: itself, or for a gzipped file a temporary plain copy (removed after), so
    that it can be indexed by byte offsets and read back line by line."""
    path = Path(path)
    if not is_gzipped(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bench-predictions-") as scratch:
        plain = Path(scratch) / path.name[: -len(GZ)]
        with _open_binary(path) as source, open(plain, "xb") as target:
            target.writelines(bounded_lines(source, path, total=_total(path)))
        yield plain


def merge_rank_files(rundir: RunDir, suite: str, order: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The suite's records of every rank, by (split, sample_id) in `order`, written atomically to its predictions
    file; rank files removed after. Crash-safe: a kill between the two leaves records in both the merged file
    and rank files, identical, and the next merge keeps one of each."""
    files = rundir.prediction_files(suite)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for path in files:
        for number, record in iter_records(path):
            key = (record.get("split"), record["sample_id"])
            if key in by_key and by_key[key] != record:
                raise BenchError(f"{path}:{number}: sample {key[1]!r} ({key[0]}) predicted twice, differently")
            by_key[key] = record
    missing = [k for k in order if k not in by_key]
    if missing:
        raise BenchError(f"{len(missing)} samples of {suite} have no prediction after the run (first: {missing[0]})")
    records = [by_key[k] for k in order]
    main = rundir.predictions(suite)
    write_records(main, records)
    for path in files:
        if path != main:
            path.unlink()
    return records


def compact_run(run: Path) -> list[Path]:
    """Gzip the merged predictions files of a finished run directory (holding its lock); returns the new files.
    Refuses a directory that holds no run, a run that is not complete, and rank files left to merge."""
    rundir = RunDir(run)
    if not rundir.exists():
        raise BenchError(f"{rundir.path} holds no run (no {rundir.run_file.name})")
    with RunLock(rundir.path):
        record = rundir.read()
        if record.status != "complete":
            raise BenchError(f"{rundir.path}: the run is {record.status}; finish it (--resume) before compacting")
        written = []
        for suite in rundir.suites:
            files = rundir.prediction_files(suite)
            if any(path != rundir.predictions(suite) for path in files):
                raise BenchError(f"{rundir.path}: rank files of {suite} are not merged yet; finish the run first")
            for path in files:
                written.append(path if is_gzipped(path) else compress(path))
        return written
