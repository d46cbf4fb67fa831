"""Errors the CLI turns into a clear message and a non-zero exit code."""

from __future__ import annotations


class BenchError(Exception):
    """A problem with the user's input or environment; printed without a traceback."""

    exit_code = 1


class DataNotFoundError(BenchError):
    """A dataset file or directory is missing; names the path and the expected layout."""

    exit_code = 2

    def __init__(self, path, layout: str = ""):
        self.path = path
        message = f"dataset not found: {path}"
        if layout:
            message += f"\nexpected layout:\n{layout}"
        super().__init__(message)


class DataFormatError(BenchError):
    """A dataset or predictions file is malformed; the message names the file (and line)."""

    exit_code = 2


class SampleError(Exception):
    """One sample cannot be evaluated (corrupt image, bad model output); the run records it and goes on."""
