"""One PNG per run and suite (IoU histogram, Prec@X curve), rendered to bytes, identical in every build."""

from __future__ import annotations

import io

import matplotlib.style
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.report.text import ordered_splits

CURVE_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)  # Prec@X curve, X = 0.5 ... 0.95
HISTOGRAM_BINS = np.linspace(0.0, 1.0, 21)
PLOT_DPI = 100
PNG_METADATA = {"Software": None, "Creation Time": None}  # no version or time stamp: same bytes per build


def plot_png(title: str, ious: dict[str, list[float]]) -> bytes:
    """Two panels, one line per split: the IoU histogram and Prec@X for X in 0.5 ... 0.95; `title` says what the
    figure shows (suite, splits, model)."""
    with matplotlib.style.context("default"):  # ignore the user's matplotlibrc: same bytes everywhere
        figure = Figure(figsize=(10, 3.6), dpi=PLOT_DPI)
        figure.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.82, wspace=0.22)
        histogram_axes, curve_axes = figure.subplots(1, 2)
        for split in ordered_splits(ious):
            values = np.asarray(ious[split], dtype=np.float64)
            histogram_axes.hist(
                values,
                bins=HISTOGRAM_BINS,
                histtype="step",
                linewidth=1.5,
                label=f"{split} (n={len(values)})",
            )
            precision = [
                100 * float(np.mean(values > threshold)) if len(values) else 0.0
                for threshold in CURVE_THRESHOLDS
            ]
            curve_axes.plot(CURVE_THRESHOLDS, precision, marker="o", label=split)
        histogram_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        histogram_axes.set(xlabel="IoU per sample", ylabel="samples", xlim=(0, 1),
                           title="samples per IoU bin (histogram, per split)")
        curve_axes.set(xlabel="X", ylabel="Prec@X (% of samples with IoU > X)", ylim=(0, 100),
                       title="Prec@X against the IoU threshold X")
        histogram_axes.legend(fontsize="small")
        curve_axes.legend(fontsize="small")
        figure.suptitle(title)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=PLOT_DPI, metadata=PNG_METADATA)
    return buffer.getvalue()
