"""Text helpers shared by the report's renderers: percent cells, markdown escaping, CSV text, links, slugs."""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from tabulate import tabulate

from bench.rundir.checkout import checkout_root

REPORT = "REPORT.md"  # the main page, at the top of the results directory
MISSING = "–"
CI_METRICS = ("ciou", "giou")
SPLIT_ORDER = ("train", "val", "test", "testA", "testB", "test-short", "test-long")
DATA_KEYS = ("generator", "fingerprint")  # recorded in synthetic suites' protocols; data, not metric settings
PROJECT_ROOT = Path(__file__).resolve().parents[2]
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])/[^\s\"'`,;()\[\]{}<>=|]+")  # an absolute path inside a text


def ordered_splits(splits: Iterable[str]) -> list[str]:
    """Known splits in the conventional order, others after them in order of appearance."""
    unique = list(dict.fromkeys(splits))
    rank = {split: index for index, split in enumerate(SPLIT_ORDER)}
    return sorted(unique, key=lambda split: (rank.get(split, len(rank)), unique.index(split)))


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def metric_text(values: dict[str, float | None], metric: str) -> str:
    """'value [lo, hi]' in %, the interval only when both ends are known."""
    text = percent(values.get(metric))
    if values.get(f"{metric}_lo") is not None and values.get(f"{metric}_hi") is not None:
        text += f" [{percent(values[f'{metric}_lo'])}, {percent(values[f'{metric}_hi'])}]"
    return text


def cell_text(values: dict[str, float | None] | None) -> str:
    """'cIoU [lo, hi] / gIoU [lo, hi]' in %, or empty when the row has no such split."""
    if values is None:
        return ""
    return f"{metric_text(values, 'ciou')} / {metric_text(values, 'giou')}"


def md(text: str) -> str:
    """Escapes the one character that breaks a markdown table cell."""
    return text.replace("|", "\\|")


def link_text(text: str) -> str:
    """Escapes what would break or restyle the text of a markdown link (a label like 'a [b] *c*')."""
    return re.sub(r"([\\`*_\[\]<>|])", r"\\\1", text)


def markdown_table(rows: list[list[str]], headers: list[str]) -> str:
    """A github-style table; cells are text as given (no number parsing, so '51.0' stays '51.0')."""
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def csv_text(headers: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()


def csv_file(files: dict[str, bytes], page: str, path: str, headers: list[str], rows: list[list[str]],
             label: str = "CSV") -> str:
    """Puts a CSV table into `files` at `path`; returns the line that links it from `page`."""
    files[path] = csv_text(headers, rows).encode("utf-8")
    return f"{label}: [{path}]({link(page, path)})"


def csv_number(value: float | None) -> str:
    """A percentage for the CSV tables: 1 decimal like the markdown, empty when missing."""
    return "" if value is None else f"{value:.1f}"


def csv_keys() -> list[str]:
    return [f"{metric}{suffix}" for metric in CI_METRICS for suffix in ("", "_lo", "_hi")]


def link(page: str, target: str, directory: bool = False) -> str:
    """URL of `target` as seen from `page`, both posix paths relative to the results directory."""
    relative = posixpath.relpath(target, posixpath.dirname(page) or ".")
    if directory:
        return "./" if relative == "." else quote(relative) + "/"
    return quote(relative)


def slug(name: str) -> str:
    """A file-name-safe form of a suite, run or group name ('.' becomes 'run')."""
    return re.sub(r"[^A-Za-z0-9_+.-]+", "_", name.replace("/", "__")).strip("._") or "run"


def key_values(mapping: Any) -> str:
    """Sorted `key=value` pairs (values as compact JSON) for one provenance line."""
    if not isinstance(mapping, dict):
        return "" if mapping is None else json.dumps(mapping, sort_keys=True)
    return ", ".join(f"{key}={json.dumps(mapping[key], sort_keys=True)}" for key in sorted(mapping))


def metric_settings(protocol: Any, suite: str | None = None) -> dict[str, Any]:
    """A run's protocol without the data identity it also records (synthetic suites' generator version and
    fingerprint): the global options and the suite's own (every suite's when `suite` is None)."""
    if not isinstance(protocol, dict):
        return {}
    return {
        key: {k: v for k, v in value.items() if k not in DATA_KEYS} if isinstance(value, dict) else value
        for key, value in protocol.items()
        if not isinstance(value, dict) or suite is None or key == suite
    }


def data_identity(protocol: Any, suite: str) -> str:
    """' (generator 1, 65da605cae68394a)' for a synthetic suite's run, else ''."""
    options = protocol.get(suite) if isinstance(protocol, dict) else None
    values = [str(options[key]) for key in DATA_KEYS if isinstance(options, dict) and key in options]
    return f" (generator {', '.join(values)})" if values else ""


def timings_text(timings: Any) -> str:
    """`key=value` pairs with seconds to the hundredth (counts stay integers), nested ones in braces."""
    if isinstance(timings, dict):
        return ", ".join(f"{key}={_timing(timings[key])}" for key in sorted(timings))
    return "" if timings is None else _timing(timings)


def _timing(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + timings_text(value) + "}"
    return f"{value:.2f}" if isinstance(value, float) else json.dumps(value, sort_keys=True)


def checkout_path(path: str) -> str:
    """An absolute path as reports show it: relative to this checkout when inside it, and also when a run recorded
    it in another clone (the longest tail of two or more parts that names a file or folder here); else as it is."""
    root = checkout_root()
    candidate = PurePosixPath(path)
    if root is None or not candidate.is_absolute():
        return path
    if candidate == PurePosixPath(root) or PurePosixPath(root) in candidate.parents:
        return candidate.relative_to(root).as_posix() or "."
    parts = candidate.parts[1:]
    for start in range(len(parts) - 1):
        tail = PurePosixPath(*parts[start:])
        if (root / tail).exists():
            return tail.as_posix()
    return path


def checkout_text(text: str) -> str:
    """`text` with every absolute path in it shown by `checkout_path`: the same bytes in every clone."""
    return _ABSOLUTE_PATH.sub(lambda match: checkout_path(match.group(0)), text)


def portable(text: str) -> str:
    """`text` without this machine's paths (for messages about data read now): the checkout's as `checkout_text`
    shows them, the home folder as ~."""
    return checkout_text(text).replace(f"{Path.home()}/", "~/")


def error_reason(exc: BaseException) -> str:
    """The first line of an error's message without this machine's paths (its type when it has no message)."""
    return portable(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__


def generated_line(results_dir: str) -> str:
    """The line under every generated page's title."""
    return f"Generated by `python -m bench report --results {results_dir}`; do not edit by hand."
