"""The JSON-lines training log (the main process writes it) and learning curves read back from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.io import JSON_LIMIT, parse_json, read_text

PNG_METADATA = {"Software": None}  # no matplotlib version in the file: the same curve gives the same bytes


class JsonlLog:
    """Appends one JSON record per line to `path`; a no-op unless `enabled` (only the main process logs)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The log's records; lines split on "\\n" only (str.splitlines also splits inside strings holding a raw
    U+2028 or U+0085, which JSON allows)."""
    text = read_text(path, JSON_LIMIT)
    return [parse_json(line, path) for line in text.split("\n") if line.strip()]


def validation_curve(records: list[dict[str, Any]], field: str, prefix: str = "ciou_") -> list[dict[str, Any]]:
    """One row per record that carries the validation result `field`: its step, wall seconds and the result's
    entries whose names start with `prefix`."""
    return [{"step": record["step"], "wall": record.get("wall"),
             **{k: v for k, v in record[field].items() if k.startswith(prefix)}}
            for record in records if field in record]


def plot_learning_curve(rows: list[dict[str, Any]], path: str | Path, series: dict[str, str], *, xlabel: str,
                        ylabel: str, title: str, ylim: tuple[float, float] = (0.0, 1.0),
                        others: dict[str, tuple[list[dict[str, Any]], str]] | None = None) -> None:
    """A PNG of the `series` ({label: row key}) against the step, with deterministic bytes; `others` ({label:
    (rows, key)}) adds other runs' curves, dashed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    steps = [row["step"] for row in rows]
    for label, key in series.items():
        axes.plot(steps, [row.get(key, float("nan")) for row in rows], marker="o", markersize=3, label=label)
    for label, (other, key) in (others or {}).items():
        axes.plot([row["step"] for row in other], [row.get(key, float("nan")) for row in other], linestyle="--",
                  marker="x", markersize=3, label=label)
    axes.set(xlabel=xlabel, ylabel=ylabel, ylim=ylim, title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata=PNG_METADATA)
