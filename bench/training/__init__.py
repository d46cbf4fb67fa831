"""Training toolkit shared by every trainable model: `bench train --model NAME` runs `TRAINERS.get(NAME).main`.

Importing this package stays light (no torch): it exposes only the registry and the `Trainer` base. The
modules a trainer imports itself: `process` (accelerator, `agree`), `seeding` (`step_generator`), `schedule`
(`LRSchedule`), `loop` (`StepLoop`: the step loop around a trainer's loss), `ema` (`EMA`), `checkpoint` (`Checkpoint`, `begin_training`), `cache` (`cached_arrays`), `validation`
(`validation_metrics`, through `bench.metrics`) and `log` (`JsonlLog`, learning curves).
"""

from bench.training.trainers import TRAINERS, Trainer

__all__ = ["TRAINERS", "Trainer"]
