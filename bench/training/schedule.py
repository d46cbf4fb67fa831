"""Learning-rate schedule (linear warm-up, cosine decay), saved with the checkpoint so a resumed run keeps it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from bench.errors import BenchError


class ScheduleMismatchError(BenchError):
    """A resumed run asked for another learning-rate schedule than the one its checkpoint was following."""


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up over `warmup` steps to `base_lr`, then cosine decay to `base_lr * min_ratio` at `total`."""

    base_lr: float
    warmup: int
    total: int
    min_ratio: float = 0.0

    def factor(self, step: int) -> float:
        """The multiplier of `base_lr` at `step` (0-based): (step + 1) / warmup, then the cosine."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizer, step: int) -> float:
        """Set every parameter group of `optimizer` to this step's learning rate; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume(self, saved: dict[str, Any] | None, new_schedule: bool = False) -> LRSchedule:
        """The schedule a resumed run follows: the checkpoint's (`saved`). Asking for a different one (this
        schedule) is refused, naming what differs, unless `new_schedule` (--new-schedule) says to follow it.
        A checkpoint that saved no schedule continues with this one."""
        if saved is None:
            return self
        old = LRSchedule(**saved)
        differences = [f"{f.name} {getattr(old, f.name)!r} in the checkpoint, {getattr(self, f.name)!r} now"
                       for f in fields(self) if getattr(old, f.name) != getattr(self, f.name)]
        if differences and not new_schedule:
            raise ScheduleMismatchError(
                "the resumed run asks for another learning-rate schedule than its checkpoint's ("
                + "; ".join(differences) + "): resume with the checkpoint's settings, or pass --new-schedule "
                "to continue with the new schedule from the saved step")
        return self if new_schedule else old
