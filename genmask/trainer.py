"""`bench train --model genmask`: the command line, kept light (no torch, diffusers or transformers until a stage
runs), so `--help` with every configuration key answers at once; the stages are in `genmask.train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.training import Trainer
from bench.training.overrides import apply_overrides, dotted_items, load_override_file
from bench.training.trainers import print_summary
from genmask.config import GenMaskConfig, preset

T2I_STAGE = ["train.seg_fraction=0.0", "shortcut=none", "encoder.freeze=true"]


def resolve_config(args: argparse.Namespace) -> GenMaskConfig:
    """The preset, then the t2i stage's settings, then the override file, then `key=value` overrides."""
    config = apply_overrides(preset(args.preset), T2I_STAGE if args.stage == "t2i" else [])
    if args.config:
        load_override_file(config, args.config)
    return apply_overrides(config, args.overrides)


class GenMaskTrainer(Trainer):
    """`bench train --model genmask`: the vae stage, the t2i foundation, then the dit stage on the trained VAE."""

    name = "genmask"
    description = "Train GenMask (vae, t2i or dit stage)."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", default="tiny", help="named preset: tiny, paper, micro (default tiny)")
        parser.add_argument("--config", help="JSON or TOML file of (nested) config overrides")
        parser.add_argument("--stage", choices=["vae", "t2i", "dit"], default="dit",
                            help="vae, t2i (text-to-image foundation) or dit (segmentation; default)")
        parser.add_argument("overrides", nargs="*", help="key=value config overrides, dotted for nested keys")

    @classmethod
    def epilog(cls) -> str:
        keys = "\n".join(f"  {key} = {json.dumps(value)}" for key, value in dotted_items(preset("tiny").to_dict()))
        return f"configuration keys (key=value overrides; the tiny preset's values):\n{keys}"

    @classmethod
    def run(cls, args: argparse.Namespace) -> int:
        import torch

        from bench.training.process import launched_as_main
        from genmask.train import train_dit, train_vae

        config = resolve_config(args)
        torch.set_num_threads(config.train.threads)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        main = launched_as_main()  # under torchrun / accelerate launch only rank 0 writes
        if main:
            (out / f"config-{args.stage}.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
        stage = train_vae if args.stage == "vae" else train_dit
        metrics = stage(config, out, args.resume, args.new_schedule)
        if main:
            print_summary(metrics, out)
        return 0
