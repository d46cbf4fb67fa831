"""The harness's one file reader and writer: every file written whole goes through `atomic_file`, every read is
bounded and refuses special files.

- Written files go through `atomic_file`: a temporary sibling with a unique name, created exclusively and never
  through a symbolic link (O_CREAT | O_EXCL | O_NOFOLLOW), synced and renamed onto the target; on any error it
  is removed and the message names the file.
- Read files are opened without blocking and refused unless regular (`open_regular`: no FIFO, device or socket,
  also behind a link), and have a size limit checked before they are read (`read_limited`, `read_json`).
- Streams are bounded per line and gzip streams in all (`bounded_lines`, `expansion_limit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import BenchError, DataFormatError

JSON_LIMIT = 1 << 30  # bytes of one JSON file (annotation files of the real datasets are far smaller)
SMALL_JSON_LIMIT = 16 << 20  # bytes of a configuration or record file (run.json, config.json, runs.toml, ...)
LINE_LIMIT = 64 << 20  # bytes of one line of a stream (a predictions line holds one RLE)
GZIP_EXPANSION = 100  # a gzipped stream expands to at most this many times its size (predictions: about 4)
GZIP_FLOOR = 1 << 30  # ... or to this many bytes, whichever is more
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SpecialFileError(DataFormatError):
    """A path that is not a regular file (FIFO, device, socket) where a file is read."""


def open_regular(path: str | Path, flags: int = os.O_RDONLY) -> int:
    """A descriptor of `path` opened without blocking (a FIFO never hangs), refused unless a regular file."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise SpecialFileError(f"{path}: is a directory, not a file") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SpecialFileError(f"{path}: not a regular file (a FIFO, device or socket); refused")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def open_binary(path: str | Path) -> BinaryIO:
    """A regular file opened for reading bytes (`open_regular`)."""
    return os.fdopen(open_regular(path), "rb")


def check_regular(path: str | Path) -> None:
    """Raise SpecialFileError unless `path` is a regular file (following links; nothing is read)."""
    os.close(open_regular(path))


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file, refused before reading when it holds more than `limit`."""
    with open_binary(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(size + 1) if size <= limit else b""  # read(n) allocates n: never the limit itself
        while size <= limit and len(data) <= limit and (more := handle.read(1 << 20)):  # the file grew
            data += more
    if size > limit or len(data) > limit:
        raise DataFormatError(f"{path}: {max(size, len(data))} bytes, over the limit of {limit} for this file")
    return data


def read_text(path: str | Path, limit: int = SMALL_JSON_LIMIT) -> str:
    """A UTF-8 text file (`read_limited`); other bytes are a DataFormatError naming the file."""
    data = read_limited(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def parse_json(text: str | bytes, source: str | Path) -> Any:
    """JSON from text; malformed, too deep or too long numbers are a DataFormatError naming `source`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # an integer of too many digits, nesting too deep, bad UTF-8
        raise DataFormatError(f"{source}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_json(path: str | Path, limit: int = JSON_LIMIT) -> Any:
    """A JSON file, size-limited (`read_limited`) and parsed by `parse_json`."""
    return parse_json(read_text(path, limit), path)


def read_json_object(path: str | Path, limit: int = SMALL_JSON_LIMIT) -> dict[str, Any]:
    """A JSON object (a record or configuration: run.json, config.json, ...) of at most `limit` bytes; anything
    else is a DataFormatError naming the file."""
    data = read_json(path, limit)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object")
    return data


def bounded_lines(handle: BinaryIO, source: str | Path, limit: int = LINE_LIMIT,
                  total: int | None = None) -> Iterator[bytes]:
    """The lines of a binary stream, split on b"\\n"; a line over `limit` bytes, more than `total` bytes in all
    (a gzip bomb), or a stream that cannot be read (a truncated or foreign gzip) is a DataFormatError naming
    `source` and the line."""
    number = read = 0
    while True:
        number += 1
        try:
            raw = handle.readline(limit + 1)
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"{source}:{number}: cannot be read ({type(exc).__name__}: {exc})") from None
        if not raw:
            return
        if len(raw) > limit:
            raise DataFormatError(f"{source}:{number}: a line over {limit} bytes; refused")
        read += len(raw)
        if total is not None and read > total:
            raise DataFormatError(f"{source}:{number}: expands to over {total} bytes (a gzip bomb?); refused")
        yield raw


def expansion_limit(path: str | Path) -> int:
    """How many bytes a gzipped file may expand to: GZIP_EXPANSION times its size, at least GZIP_FLOOR."""
    return max(GZIP_FLOOR, GZIP_EXPANSION * os.stat(path).st_size)


def refuse_input_as_output(source: str | Path, outputs: Iterable[str | Path]) -> None:
    """Raise BenchError when the input `source` is one of `outputs` (same path, a link to it or a hard link)."""
    for output in outputs:
        same = os.path.realpath(source) == os.path.realpath(output)
        with contextlib.suppress(OSError):
            same = same or os.path.samefile(source, output)
        if same:
            raise BenchError(f"{source} is an input and would also be written as {output}; choose another --out "
                             "or move the input away")


def temporary_name(path: Path) -> Path:
    """A unique temporary sibling of `path` (never the same for two writers)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A new empty temporary file (exclusive, not through a link) for writers that take a name; synced and
    renamed onto `path` once the block ends. On error it is removed, `path` is left as it was and the message
    names `path`."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        os.close(os.open(tmp, _CREATE, 0o644))
    except OSError as exc:
        raise BenchError(f"{path}: cannot be written ({exc.strerror})") from None
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """`atomic_path` opened for writing bytes: the block's writes land in `path` all at once or not at all."""
    with atomic_path(path) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "wb") as handle:
        yield handle


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through `atomic_file`."""
    with atomic_file(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | Path, value: Any, **dumps: Any) -> None:
    """Write `value` as indented JSON (and a final newline) through `atomic_file`."""
    write_atomic(path, json.dumps(value, indent=2, **dumps) + "\n")
