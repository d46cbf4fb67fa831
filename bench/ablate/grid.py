"""`[grid]` in an ablation file: variants as the product of named axes, each value written once.

    [grid]
    name = "{distribution}@{steps}"          # each variant's name: every axis once, as {AXIS}
    [grid.axes.steps]                        # an axis: labels, each with the variant keys it sets
    "1" = { model_args = { steps = 1 } }
    "2" = { model_args = { steps = 2 } }
    [grid.axes.distribution]
    "tail-0.05" = { train_args = { "train.seg_sampler_params" = { a = 0.05 } } }
    "uniform" = { train_args = { "train.seg_sampler" = "uniform" } }

Order: like nested loops over the axes in file order, the first axis outermost (tail-0.05@1, uniform@1,
tail-0.05@2, uniform@2), labels in file order. A variant's keys are its labels' keys merged, a table (model_args,
train_args) key by key; two axes setting the same key is an error, as is a name that is not exactly the axes.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from bench.ablate.spec import check_keys, unknown
from bench.errors import BenchError

GRID_KEYS = ("name", "axes")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def grid_variants(grid: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The variants `grid` makes, name -> keys, in the order above; `where` names the file in errors."""
    check_keys(grid, GRID_KEYS, f"{where}: [grid]")
    axes, template = grid.get("axes", {}), grid.get("name")
    if not isinstance(template, str) or not isinstance(axes, dict) or not axes:
        raise BenchError(f"{where}: [grid] needs a name (e.g. name = \"{{AXIS}}@{{AXIS}}\") and "
                         "[grid.axes.AXIS] tables")
    named = PLACEHOLDER.findall(template)
    for axis in named:
        if axis not in axes:
            raise BenchError(f"{where}: [grid] name {template!r}: {unknown('placeholder', axis, list(axes))}")
    for axis, values in axes.items():
        if not isinstance(values, dict) or not values:
            raise BenchError(f"{where}: [grid.axes.{axis}] needs labels, e.g. \"1\" = {{ model_args = {{ ... }} }}")
        if named.count(axis) != 1:
            raise BenchError(f"{where}: [grid] name {template!r} must name axis {axis!r} exactly once, as {{{axis}}}")
        for label, keys in values.items():
            if not isinstance(keys, dict):
                raise BenchError(f"{where}: [grid.axes.{axis}] {label!r} must be a table of variant keys, e.g. "
                                 "{ model_args = { ... } }")
    variants: dict[str, dict[str, Any]] = {}
    for combination in itertools.product(*(values.items() for values in axes.values())):
        name = _name(template, dict(zip(axes, (label for label, _ in combination))))
        if name in variants:
            raise BenchError(f"{where}: [grid] name {template!r} makes variant {name!r} twice")
        variants[name] = _merged(dict(zip(axes, (keys for _, keys in combination))), f"{where}: [grid] {name!r}")
    return variants


def _name(template: str, labels: dict[str, str]) -> str:
    """The template with each {AXIS} replaced by its label."""
    return PLACEHOLDER.sub(lambda match: labels[match.group(1)], template)


def _merged(keys_by_axis: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
    """The axes' keys in one table (a table value merged key by key); a key two axes set is an error."""
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}  # "key" or "table.key" -> the axis that set it
    for axis, keys in keys_by_axis.items():
        for key, value in keys.items():
            tables = isinstance(value, dict) and isinstance(merged.get(key, {}), dict)
            paths = [f"{key}.{inner}" for inner in value] if tables else [key]
            clash = next((path for path in paths if path in owner), None)
            if clash is not None:
                raise BenchError(f"{where}: axes {owner[clash]!r} and {axis!r} both set {clash!r}")
            merged[key] = {**merged.get(key, {}), **value} if tables else value
            owner.update(dict.fromkeys([key, *paths], axis))
    return merged
