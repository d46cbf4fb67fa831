"""Ablation files: a base configuration, named variants as overrides of it, budgets, claims; strict keys.

An ablation is one TOML file in `bench/ablate/defs/` (nanoGPT-style config files: a base plus overrides):

    include = "_finetune"          # optional: a shared file in defs/ (named with a leading _, not an ablation)
                                   # whose base and budgets this file's own extend key by key (lm-eval style)
    question = "..."               # what the ablation answers
    kind = "eval"                  # how a cell is made: "eval" (a runner evaluation), "train" (train, then
                                   # evaluate) or "pca" (a measurement)
    reference = "1-step"           # the variant every other is compared with
    plot_x = "steps"               # optional: the model_args key the plots put on the x axis
    [base]                         # the kind's configuration keys (EvalConfig, TrainedEvalConfig, PcaConfig)
    [variants.NAME]                # overrides of base keys; a table value (model_args) is merged into base's
    [budgets.smoke|small|full]     # overrides of base keys, plus `seeds` and `variants` (the subset to run)
    [[claims]]                     # text, rule, metric, margin, paper: judged by bench.ablate.verdicts

Every key is checked: an unknown one is an error naming the file and suggesting the closest known key (the
trainer checks the keys of `train_args` itself, when a cell trains).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, check_run_sizes
from bench.tomlfiles import read_toml

DEFS = Path(__file__).parent / "defs"
BUDGETS = ("smoke", "small", "full")
TOP_KEYS = ("include", "question", "kind", "reference", "control", "context", "plot_x", "base", "variants", "budgets", "claims")
BUDGET_KEYS = ("seeds", "variants")  # a budget's own keys, beside overrides of the base configuration
CLAIM_KEYS = ("text", "rule", "metric", "margin", "paper", "at_t", "compare")


@dataclass(frozen=True)
class EvalConfig:
    """A cell of kind "eval": one `bench run` of a registered model (its fields are RunSpec's)."""

    model: str = "genmask"
    checkpoint: str | None = None  # None: the model's own (GenMask: the shipped tiny checkpoint)
    model_args: dict[str, str] = field(default_factory=dict)
    suites: list[str] = field(default_factory=lambda: ["synthref"])
    splits: list[str] | None = None  # None: every split but train
    limit: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        check_run_sizes(self.limit, self.batch_size)


@dataclass(frozen=True)
class PcaConfig:
    """A cell of kind "pca": PCA and linear probes of one VAE's latents (see bench.ablate.pca)."""

    vae: str = "genmask/checkpoints/tiny/vae"  # a diffusers AutoencoderKLWan folder; relative: to the project
    suite: str = "synthref"
    fit_split: str = "train"  # images whose latents fit the PCA and train the probes
    test_split: str = "val"  # images the PC1 maps and probes are scored on
    fit_images: int = 256
    test_images: int = 128
    t_grid: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0])
    probe_repeats: int = 1  # noise draws per fitting latent when training a probe
    bootstrap: int = 1000


@dataclass(frozen=True)
class TrainedEvalConfig(EvalConfig):
    """A cell of kind "train": `bench train --model TRAINER` (options and key=value overrides; the trainer's
    seed key set to the cell's seed), then one evaluation of its OUT/`output` as an "eval" cell."""

    trainer: str = "genmask"
    train_options: dict[str, Any] = field(default_factory=dict)  # --name=value options, e.g. preset = "tiny"
    train_args: dict[str, Any] = field(default_factory=dict)  # key=value overrides, e.g. "train.steps" = 200
    seed_key: str = "train.seed"
    output: str = "final"  # the trained model's folder under the trainer's --out

    def training_argv(self, seed: int | str = "SEED") -> list[str]:
        """The trainer's command line without --out: `--name=value` options, then sorted `key=value` overrides
        (TOML values written as Python literals, which the trainers parse; strings as written)."""
        def text(value: Any) -> str:
            return value if isinstance(value, str) else repr(value)

        argv = [f"--{name}={text(value)}" for name, value in sorted(self.train_options.items())]
        overrides = {**self.train_args, self.seed_key: seed}
        return argv + [f"{key}={text(value)}" for key, value in sorted(overrides.items())]


KINDS: dict[str, type] = {"eval": EvalConfig, "pca": PcaConfig, "train": TrainedEvalConfig}


@dataclass(frozen=True)
class Claim:
    """A claim the ablation judges: agrees / disagrees / inconclusive by `rule` (bench.ablate.verdicts)."""

    text: str
    rule: str
    metric: str = "ciou"
    margin: float = 0.0
    paper: str = ""  # the paper's statement or number, shown beside ours
    at_t: float | None = None  # pca: the noise level the probe claim is judged at
    compare: tuple[str, ...] = ()  # rule "first-above-second": the two variants, first minus second


@dataclass(frozen=True)
class Ablation:
    """One ablation file, parsed and checked."""

    name: str
    path: Path
    question: str
    kind: str
    reference: str
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]]  # name -> overrides, in file order
    budgets: dict[str, dict[str, Any]]
    claims: list[Claim]
    plot_x: str | None = None
    # a variant that trains nothing (the starting checkpoint evaluated): unless the reference beats it, the page
    # says the training loses quality and gives no verdict
    control: str | None = None
    # a context baseline model (bench.ablate.context): the reference must beat it clearly for any verdict; "" = none
    context: str = ""

    @property
    def config_class(self) -> type:
        return KINDS[self.kind]

    def budget(self, name: str) -> dict[str, Any]:
        if name not in self.budgets:
            raise BenchError(f"ablation {self.name!r} has no budget {name!r}; budgets: {', '.join(self.budgets)}")
        return self.budgets[name]

    def seeds(self, budget: str, override: int | None = None) -> list[int]:
        """Seed k of every variant is seed k: the same samples, batches and noise."""
        count = override if override is not None else self.budget(budget).get("seeds", 1)
        if count < 1:
            raise BenchError(f"--seeds must be at least 1, got {count}")
        return list(range(count))

    def variant_names(self, budget: str) -> list[str]:
        return list(self.budget(budget).get("variants", self.variants))

    def resolve(self, variant: str, budget: str, overrides: dict[str, Any] | None = None) -> Any:
        """The variant's configuration: base, then the budget's overrides, then the command line's, then the
        variant's (a table value merged key by key), as the kind's dataclass."""
        if variant not in self.variants:
            raise BenchError(unknown(f"variant of ablation {self.name!r}", variant, list(self.variants)))
        values: dict[str, Any] = {}
        budget_values = {k: v for k, v in self.budget(budget).items() if k not in BUDGET_KEYS}
        layers = {"base": self.base, f"budget {budget}": budget_values, "the command line": overrides or {},
                  f"variant {variant}": self.variants[variant]}
        for where, layer in layers.items():
            check_keys(layer, [f.name for f in dataclasses.fields(self.config_class)], f"{self.path.name}, {where}")
            for key, value in layer.items():
                merged = isinstance(value, dict) and isinstance(values.get(key), dict)
                values[key] = {**values[key], **value} if merged else value
        if "model_args" in values:
            values["model_args"] = {k: str(v) for k, v in values["model_args"].items()}
        return self.config_class(**values)


def unknown(what: str, name: str, known: list[str]) -> str:
    """'unknown WHAT 'name'. Did you mean ...? Known: ...'."""
    close = difflib.get_close_matches(name, known, n=2)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Known: {', '.join(known)}"


def check_keys(table: dict[str, Any], known: list[str] | tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise BenchError(f"{where}: {unknown('key', key, list(known))}")


def ablation_names() -> list[str]:
    """The ablation files' names, without reading them (`bench list` stays light); `_shared` files are not."""
    return sorted(path.stem for path in DEFS.glob("*.toml") if not path.stem.startswith("_"))


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
    if kind not in KINDS:
        raise BenchError(f"{path.name}: {unknown('kind', kind, list(KINDS))}")
    variants = data.get("variants", {})
    budgets = data.get("budgets", {})
    for budget, values in budgets.items():
        if budget not in BUDGETS:
            raise BenchError(f"{path.name}: {unknown('budget', budget, list(BUDGETS))}")
        for variant in values.get("variants", []):
            if variant not in variants:
                raise BenchError(f"{path.name}: budget {budget}: {unknown('variant', variant, list(variants))}")
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
    ablation = Ablation(name=name, path=path, question=data.get("question", ""), kind=kind, reference=reference,
                        base=data.get("base", {}), variants=variants, budgets=budgets, claims=claims,
                        plot_x=data.get("plot_x"), control=control,
                        context=data.get("context", "every-object" if kind in ("eval", "train") else ""))
    for budget in budgets:  # every variant resolves under every budget: unknown keys fail at load time
        for variant in ablation.variant_names(budget):
            ablation.resolve(variant, budget)
    return ablation
