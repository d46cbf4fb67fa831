"""The trainer registry and the contract `bench train` relies on: `TRAINERS.get(name).main(argv) -> int`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.registry import Registry

# packages outside the harness add trainers under [project.entry-points."genmask_bench.trainers"]
TRAINERS: Registry[type[Trainer]] = Registry("trainer", entry_point_group="genmask_bench.trainers")


class Trainer:
    """A model's trainer: `main(argv)` parses the words after `bench train --model NAME` and trains.

    Subclasses set `name` and `description`, add their own options in `add_arguments` and train in `run`.
    Every trainer shares --out, --resume and --new-schedule, so resuming means the same thing for all."""

    name = "model"
    description = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The trainer's own options (none by default)."""

    @classmethod
    def epilog(cls) -> str:
        """Text after the options in --help (e.g. the configuration keys); none by default."""
        return ""

    @classmethod
    def run(cls, args: argparse.Namespace) -> int:
        """Train with the parsed arguments; the exit code."""
        raise NotImplementedError

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"bench train --model {cls.name}", description=cls.description,
                                         epilog=cls.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--out", default=f".cache/train/{cls.name}",
                            help="output directory (checkpoint, log, final model)")
        parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
        parser.add_argument("--new-schedule", action="store_true",
                            help="with --resume: follow this command's learning-rate schedule, not the "
                                 "checkpoint's (a different schedule is otherwise refused)")
        cls.add_arguments(parser)
        return parser

    @classmethod
    def main(cls, argv: list[str]) -> int:
        """Parse `argv` (options and positionals in any order) and train; the exit code."""
        parser = cls.build_parser()
        args = parser.parse_intermixed_args(argv)
        if args.new_schedule and not args.resume:
            parser.error("--new-schedule only applies with --resume")
        return cls.run(args)


def print_summary(metrics: dict, out: str | Path) -> None:
    """A trainer's last words: the final metrics that are single numbers, on one line, and where all of them are
    (the trainer wrote them under OUT), instead of the whole metrics JSON."""
    scalars = [f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
               for key, value in metrics.items() if isinstance(value, int | float) and not isinstance(value, bool)]
    shown = ", ".join(scalars[:8]) + (f" (+{len(scalars) - 8} more)" if len(scalars) > 8 else "")
    print(f"trained: {shown or 'done'}; every metric is in the metrics.json files under {out}")
