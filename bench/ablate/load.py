"""Ablation files: a base configuration, named variants as overrides of it, budgets, claims; strict keys.

An ablation is one TOML file in `bench/ablate/defs/` (nanoGPT-style config files: a base plus overrides):

    include = "_finetune"          # optional: a shared file in defs/ (named with a leading _, not an ablation)
                                   # whose base and budgets this file's own extend key by key (lm-eval style)
    question = "..."               # what the ablation answers
    kind = "eval"                  # how a cell is made: a name in bench.ablate.kinds.ABLATION_KINDS, "eval" (a
                                   # runner evaluation), "train" (train, then evaluate) or "pca" (a measurement)
    reference = "1-step"           # the variant every other is compared with
    tuning = true                  # optional: a recipe search (which setting to train a model with), not a
                                   # question about the method; `bench ablate all` leaves it out
    plot_x = "steps"               # optional: the model_args key the plots put on the x axis
    [base]                         # the kind's configuration keys (EvalConfig, TrainedEvalConfig, PcaConfig)
    [variants.NAME]                # overrides of base keys; a table value (model_args) is merged into base's
    [grid]                         # optional: more variants, the product of named axes (bench.ablate.grid),
                                   # after the [variants] ones
    [budgets.smoke|small|full]     # overrides of base keys, plus `seeds`, `variants` (the subset to run) and
                                   # `variant_seeds` ({ VARIANT = N }: more seeds for those variants)
    [[claims]]                     # text, rule, metric, margin, paper: judged by bench.ablate.verdicts

Every key is checked: an unknown one is an error naming the file and suggesting the closest known key (the
trainer checks the keys of `train_args` itself, when a cell trains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ablate.grid import grid_variants
from bench.ablate.kinds import ABLATION_KINDS
from bench.ablate.spec import Ablation, Claim, check_keys, unknown
from bench.errors import BenchError
from bench.registry import UnknownNameError
from bench.tomlfiles import read_toml

DEFS = Path(__file__).parent / "defs"
BUDGETS = ("smoke", "small", "full")
TOP_KEYS = ("include", "question", "kind", "tuning", "reference", "control", "context", "plot_x", "base", "variants",
            "grid", "budgets", "claims")
CLAIM_KEYS = ("text", "rule", "metric", "margin", "paper", "at_t", "compare")


def ablation_names(tuning: bool | None = None) -> list[str]:
    """The ablation files' names (`_shared` files are not ablations); `tuning` True or False keeps only the recipe
    searches or only the questions about the method (`tuning = true` in the file), reading just that key."""
    names = sorted(path.stem for path in DEFS.glob("*.toml") if not path.stem.startswith("_"))
    if tuning is None:
        return names
    return [name for name in names if bool(_read_toml(DEFS / f"{name}.toml").get("tuning", False)) == tuning]


def _read_toml(path: Path) -> dict[str, Any]:
    return read_toml(path)


def _merge(shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `shared`, tables merged key by key (recursively)."""
    merged = dict(shared)
    for key, value in own.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _with_include(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Resolve `include = "NAME"`: defs/NAME.toml's base and budgets under this file's."""
    name = data.pop("include", None)
    if name is None:
        return data
    shared_path = path.parent / f"{name}.toml"
    if not shared_path.is_file():
        raise BenchError(f"{path.name}: include {name!r}: no {shared_path}")
    shared = _read_toml(shared_path)
    check_keys(shared, ("base", "budgets"), shared_path.name)
    return {**data, "base": _merge(shared.get("base", {}), data.get("base", {})),
            "budgets": _merge(shared.get("budgets", {}), data.get("budgets", {}))}


def load_ablation(name: str, directory: Path = DEFS) -> Ablation:
    """Parse and check `directory/NAME.toml`."""
    path = Path(directory) / f"{name}.toml"
    if not path.is_file():
        raise BenchError(unknown("ablation", name, sorted(p.stem for p in Path(directory).glob("*.toml"))))
    data = _read_toml(path)
    check_keys(data, TOP_KEYS, path.name)
    data = _with_include(data, path)
    kind = data.get("kind", "eval")
    try:
        kind_class = ABLATION_KINDS.get(kind)
    except UnknownNameError as error:
        raise BenchError(f"{path.name}: {error}") from None
    variants = data.get("variants", {})
    generated = grid_variants(data["grid"], path.name) if "grid" in data else {}
    twice = next((variant for variant in generated if variant in variants), None)
    if twice is not None:
        raise BenchError(f"{path.name}: [grid] makes variant {twice!r}, which [variants] defines too")
    variants = {**variants, **generated}
    budgets = data.get("budgets", {})
    for budget, values in budgets.items():
        if budget not in BUDGETS:
            raise BenchError(f"{path.name}: {unknown('budget', budget, list(BUDGETS))}")
        for variant in values.get("variants", []):
            if variant not in variants:
                raise BenchError(f"{path.name}: budget {budget}: {unknown('variant', variant, list(variants))}")
        _check_variant_seeds(values, variants, f"{path.name}: budget {budget}")
    claims = []
    for claim in data.get("claims", []):
        check_keys(claim, CLAIM_KEYS, f"{path.name}: claim")
        compare = tuple(claim.pop("compare", ()))
        for variant in compare:
            if variant not in variants:
                raise BenchError(f"{path.name}: claim compares {unknown('variant', variant, list(variants))}")
        claims.append(Claim(**claim, compare=compare))
    reference = data.get("reference", next(iter(variants), ""))
    if reference not in variants:
        raise BenchError(f"{path.name}: reference {reference!r} is not a variant")
    control = data.get("control")
    if control is not None and control not in variants:
        raise BenchError(f"{path.name}: control {unknown('variant', control, list(variants))}")
    tuning = data.get("tuning", False)
    if not isinstance(tuning, bool):
        raise BenchError(f"{path.name}: tuning must be true or false, got {tuning!r}")
    ablation = Ablation(name=name, path=path, question=data.get("question", ""), kind=kind, tuning=tuning,
                        config_class=kind_class.config, reference=reference, base=data.get("base", {}),
                        variants=variants, budgets=budgets, claims=claims, plot_x=data.get("plot_x"), control=control,
                        context=data.get("context", kind_class.default_context))
    for budget in budgets:  # every variant resolves under every budget: unknown keys fail at load time
        for variant in ablation.variant_names(budget):
            ablation.resolve(variant, budget)
    return ablation


def _check_variant_seeds(budget: dict[str, Any], variants: dict[str, Any], where: str) -> None:
    """`variant_seeds = { VARIANT = N }`: known variants, each N a whole number at least the budget's `seeds`."""
    table = budget.get("variant_seeds", {})
    if not isinstance(table, dict):
        raise BenchError(f"{where}: variant_seeds must be a table of VARIANT = seed count")
    floor = budget.get("seeds", 1)
    for variant, count in table.items():
        if variant not in variants:
            raise BenchError(f"{where}: variant_seeds: {unknown('variant', variant, list(variants))}")
        if not isinstance(count, int) or isinstance(count, bool) or count < floor:
            raise BenchError(f"{where}: variant_seeds: {variant} = {count!r} must be a whole number of seeds, at "
                             f"least the budget's seeds ({floor})")
