"""The step loop every trainer shares around its own batches and loss.

A trainer computes the loss of a step; `StepLoop.step` does the rest: backward, gradient clipping, the
optimizer and EMA steps, the smoothed loss and its log line every 50 steps, validation every `eval_every`
steps (main process), a checkpoint every `checkpoint_minutes`, and the stop rules (`max_minutes`, agreed by
all processes; `stop_at_step` ends `steps()`). Wall time is carried over resumes, so a split run logs one clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from tqdm import tqdm

from bench.training.checkpoint import Checkpoint
from bench.training.ema import EMA, averaged
from bench.training.log import JsonlLog
from bench.training.process import agree
from bench.training.recipe import Recipe
from bench.training.schedule import LRSchedule

LOG_EVERY = 50


class StepLoop:
    """One training run's loop state; `train` is the trainer's `Recipe` (steps, grad_clip, eval_every,
    checkpoint_minutes, max_minutes, stop_at_step)."""

    def __init__(self, *, accelerator: Any, model: torch.nn.Module, parameters: Iterable[torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, schedule: LRSchedule, ema: EMA | None, checkpoint: Checkpoint,
                 log: JsonlLog, stage: str, train: Recipe, start: int = 0, wall_before: float = 0.0):
        self.accelerator, self.model, self.parameters = accelerator, model, list(parameters)
        self.optimizer, self.schedule, self.ema, self.checkpoint = optimizer, schedule, ema, checkpoint
        self.log, self.stage, self.train = log, stage, train
        self.start, self.done, self.wall_before = start, start, wall_before
        self.begin = self.last_save = time.time()
        self.smoothed: float | None = None
        self.main = accelerator.is_main_process

    def wall(self) -> float:
        """Seconds of training so far, earlier sessions of a resumed run included."""
        return self.wall_before + time.time() - self.begin

    def save(self, step: int) -> None:
        self.checkpoint.save(self.model, self.optimizer, step=step, wall_seconds=self.wall(), schedule=self.schedule,
                             ema=self.ema)

    def steps(self) -> Iterator[int]:
        """The steps still to run, up to `stop_at_step` when set, with a progress bar on the main process. None
        when a resumed checkpoint is already at `stop_at_step`: the run just saves its weights (`final/`)."""
        end = min(self.train.steps, self.train.stop_at_step) if self.train.stop_at_step else self.train.steps
        self.progress = tqdm(range(self.start, max(self.start, end)), initial=self.start, total=self.train.steps,
                             desc=self.stage, disable=not self.main)
        return iter(self.progress)

    def learning_rate(self, step: int) -> float:
        """Set and return the scheduled learning rate of `step`."""
        self.lr = self.schedule.apply(self.optimizer, step)
        return self.lr

    def step(self, step: int, loss: torch.Tensor, validate: Callable[[], dict[str, Any]] | None = None) -> bool:
        """Optimise on `loss` and do the step's bookkeeping; True when the run should stop now."""
        self.optimizer.zero_grad()
        self.accelerator.backward(loss)
        if self.train.grad_clip:
            self.accelerator.clip_grad_norm_(self.parameters, self.train.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        value = loss.item()
        self.smoothed = value if self.smoothed is None else 0.98 * self.smoothed + 0.02 * value
        self.progress.set_postfix(loss=f"{self.smoothed:.4f}")
        self.done = step + 1
        if step % LOG_EVERY == 0:
            self.log.write({"stage": self.stage, "step": step, "loss": value, "smoothed": self.smoothed,
                            "lr": self.lr, "wall": self.wall()})
        if validate is not None and self.train.eval_every and self.done % self.train.eval_every == 0 and self.main:
            with averaged(self.ema):
                self.log.write({"stage": self.stage, "step": self.done, **validate(), "wall": self.wall()})
        if self.main and time.time() - self.last_save > self.train.checkpoint_minutes * 60:
            self.save(self.done)
            self.last_save = time.time()
        # the same config on every process, so only a time limit costs a collective per step
        out_of_time = bool(self.train.max_minutes) and agree(
            self.accelerator, time.time() - self.begin > self.train.max_minutes * 60)
        if out_of_time:
            self.progress.close()
            return True
        return False

    def finish(self) -> bool:
        """Wait for every process; the main process saves the last checkpoint. True on the main process."""
        self.accelerator.wait_for_everyone()
        if self.main:
            self.save(self.done)
        return self.main
