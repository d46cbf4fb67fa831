"""Errors the CLI turns into a clear message and a non-zero exit code."""

from __future__ import annotations


class BenchError(Exception):
    """A problem with the user's input or environment; printed without a traceback, exit code 2."""

    exit_code = 2


class DataNotFoundError(BenchError):
    """A dataset file or directory is missing; names the path and the expected layout."""

    def __init__(self, path, layout: str = ""):
        self.path = path
        message = f"dataset not found: {path}"
        if "--data-root" not in message:
            message += " (point --data-root, or $BENCH_DATA_ROOT, at the folder that holds the datasets)"
        if layout:
            message += f"\nexpected layout:\n{layout}"
        super().__init__(message)


class DataFormatError(BenchError):
    """A dataset or predictions file is malformed; the message names the file (and line)."""


class UnknownSplitError(BenchError):
    """A split the suite does not have; suggests the closest names."""

    def __init__(self, suite: str, unknown: list[str], splits: tuple[str, ...] | list[str]):
        import difflib

        hints = [match for name in unknown for match in difflib.get_close_matches(name, splits, n=1)]
        hint = f" Did you mean {' or '.join(repr(h) for h in hints)}?" if hints else ""
        super().__init__(f"suite {suite!r} has no split {', '.join(map(repr, unknown))}.{hint} "
                         f"Splits: {', '.join(splits)}")


class SampleError(Exception):
    """One sample cannot be evaluated (corrupt image, bad model output); the run records it and goes on."""


def check_run_sizes(limit: object, batch_size: object, workers: object = 0) -> None:
    """BenchError unless limit is None or a positive integer, batch_size a positive and workers a non-negative one."""
    def integer(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not (limit is None or (integer(limit) and limit > 0)):
        raise BenchError(f"limit must be a positive integer (or none), got {limit!r}")
    if not (integer(batch_size) and batch_size > 0):
        raise BenchError(f"batch size must be a positive integer, got {batch_size!r}")
    if not (integer(workers) and workers >= 0):
        raise BenchError(f"workers must be an integer of at least 0, got {workers!r}")
