"""The training settings trainers share, declared once: the recipe (optimiser, schedule, seed, clipping, stop and
save rules) every trainer has, and the segmentation sample stream GenMask and its rivals draw from.

A trainer's `train` section subclasses them (`Recipe` or `EMARecipe`, plus `SampleStream` where it trains on the
shared stream), so its keys stay flat (`train.lr`, as saved configs and `key=value` overrides have them), and
redeclares a field only to give it another default. Light on purpose (no numpy, no torch): `bench train --model
NAME --help` lists these keys without loading anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recipe:
    """How a run optimises and when it validates, saves and stops (`begin_training`, `StepLoop`)."""

    seed: int = 0  # every random draw of the run: initial weights and the (seed, step, rank) sample streams
    threads: int = 1  # torch CPU threads of each process
    steps: int = 1000  # optimiser steps; the cosine decay ends here
    lr: float = 1e-3  # AdamW's peak learning rate, reached at the end of the warm-up
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # linear warm-up to `lr` over these steps
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = off
    eval_every: int = 500  # validate every this many steps (main process); 0 = only at the end
    checkpoint_minutes: float = 5.0  # save OUT/checkpoint at least this often, so a killed run loses little
    max_minutes: float = 0.0  # stop (and save) after this wall time; 0 = no limit
    stop_at_step: int = 0  # stop (and save) once this step is done, to split a run into sessions; 0 = never


@dataclass
class EMARecipe(Recipe):
    """A recipe whose trainer can also keep an exponential moving average of the trained weights."""

    ema_decay: float = 0.0  # EMA of the trained weights, used to validate and save; 0 = off


def ema_decay(recipe: Recipe) -> float:
    """The recipe's EMA decay; 0 (no averaging) for a recipe without one."""
    return recipe.ema_decay if isinstance(recipe, EMARecipe) else 0.0


@dataclass
class SampleStream:
    """Which segmentation samples a run draws (`bench.training.stream`): the same values, the same samples, for
    GenMask and for every rival."""

    data: str = "synth"  # "synth" (bench.synth scenes) or a registered suite's train split read from data_root
    data_root: str = ""
    train_samples: int = 20000  # synth: scenes (grouped) or samples (one per scene); a suite: at most this many
    group_size: int = 1  # expressions of the same image per batch group, different targets first; 1 = none
    task_weights: dict[str, float] = field(default_factory=lambda: {"referring": 1.0, "reasoning": 1.0})
    val_samples: int = 256  # held-out samples validated on (`bench.training.heldout`)
