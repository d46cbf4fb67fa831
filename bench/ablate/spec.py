"""The parsed ablation: the configuration of each kind's cells, claims, and variants resolved under a budget.

`bench.ablate.load` reads a file into an `Ablation`, whose configuration class is that of the kind the file names
(`bench.ablate.kinds`).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, check_run_sizes

# a budget's own keys, beside overrides of the base configuration: its seed count, the variants it runs, and
# `variant_seeds`, more seeds for some variants (issue 18: 5 for the variants of a claim whose effect is small)
BUDGET_KEYS = ("seeds", "variants", "variant_seeds")


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
    config_class: type  # the kind's configuration dataclass, which a variant resolves to
    reference: str
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]]  # name -> overrides: [variants] in file order, then the [grid]'s
    budgets: dict[str, dict[str, Any]]
    claims: list[Claim]
    plot_x: str | None = None
    # a variant that trains nothing (the starting checkpoint evaluated): unless the reference beats it, the page
    # says the training loses quality and gives no verdict
    control: str | None = None
    # a context baseline model (bench.ablate.context): the reference must beat it clearly for any verdict; "" = none
    context: str = ""
    tuning: bool = False  # a recipe search (which setting to train with), which `bench ablate all` leaves out

    def budget(self, name: str) -> dict[str, Any]:
        if name not in self.budgets:
            raise BenchError(f"ablation {self.name!r} has no budget {name!r}; budgets: {', '.join(self.budgets)}")
        return self.budgets[name]

    def seeds(self, budget: str, override: int | None = None, variant: str | None = None) -> list[int]:
        """Seed k of every variant is seed k: the same samples, batches and noise. A variant the budget's
        `variant_seeds` names has that many; `override` (--seeds) sets every variant's count."""
        table = self.budget(budget)
        count = override if override is not None else table.get("variant_seeds", {}).get(variant, table.get("seeds", 1))
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
