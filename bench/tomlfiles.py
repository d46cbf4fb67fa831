"""TOML read with errors that name the file, and TOML values written so that tomllib reads back exactly what was
written (strings in ASCII, every type kept)."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

from bench.errors import BenchError, DataFormatError
from bench.io import read_text

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def parse_toml(text: str, source: Path | str) -> dict[str, Any]:
    """A TOML document; malformed or too deeply nested TOML is a DataFormatError naming `source`."""
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise DataFormatError(f"{source}: not valid TOML ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file: UTF-8, size-limited, a regular file (`bench.io.read_text`), parsed by `parse_toml`."""
    return parse_toml(read_text(path), path)


def toml_string(value: str) -> str:
    """`value` as a TOML basic string in ASCII (escaping every other character); a lone surrogate, which no
    TOML string can hold, is a BenchError."""
    out = []
    for char in value:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise BenchError(f"{value!r} holds a character that is not Unicode text (a lone surrogate); "
                             "it cannot be written as TOML")
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """Any TOML value (string, boolean, integer, float, array, table) written inline."""
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")) if not math.isfinite(value) \
            else repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(key)} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise BenchError(f"{value!r} has no TOML form")


def _key(key: Any) -> str:
    return key if isinstance(key, str) and _BARE_KEY.fullmatch(key) else toml_string(str(key))
