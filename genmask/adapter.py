"""Harness adapter: GenMask as a `SegModel` (`--model genmask --model-arg steps=4`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.io import read_json_object
from bench.models.base import MODELS, ModelInput, SegModel

SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "tiny"
DTYPES = ("float32", "bfloat16", "float16")  # of the DiT and the instruction encoder; "auto": bfloat16 on CUDA


@MODELS.register("genmask")
class GenMaskSegModel(SegModel):
    """One-step (or N-step Euler) mask generation; checkpoint defaults to the shipped tiny model; dtype "auto"
    runs the DiT and the encoder in bfloat16 on CUDA and float32 elsewhere; profile=true times each part on
    CUDA (synchronising the device; CPU parts are always timed); readout=linear|pc1 reads the mask from the
    latent without the VAE decoder (`genmask.readout`, fitted at start-up on `readout_masks` synthetic masks);
    threshold=X replaces the checkpoint's mask_threshold (e.g. one calibrated on val: `genmask.diagnose --calibrate`)."""

    name = "genmask"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, steps: int | str = 1,
                 dtype: str = "auto", profile: bool | str = False, readout: str = "vae",
                 readout_masks: int | str = 512, threshold: float | str | None = None, **options: Any):
        super().__init__(checkpoint=checkpoint or str(SHIPPED_CHECKPOINT), device=device, seed=seed, **options)
        self.steps = int(steps)
        if self.steps < 1:
            raise ValueError(f"genmask: steps must be >= 1, got {steps!r}")
        if dtype == "auto":
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        if dtype not in DTYPES:
            raise ValueError(f"genmask: dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        from genmask.model import GenMask

        directory = Path(self.checkpoint)
        if not (directory / "config.json").exists():
            raise FileNotFoundError(f"genmask: no checkpoint at {directory} (expected config.json and component folders)")
        self.model = GenMask.from_pretrained(directory, device=device, dtype=getattr(torch, dtype)).eval()
        self.model.profile = str(profile).lower() in ("1", "true", "yes")  # per-part CUDA timings (synchronises)
        if threshold is not None:
            self.model.config.mask_threshold = float(threshold)
        from genmask.readout import READOUTS, fit_readout

        if readout not in READOUTS:
            raise ValueError(f"genmask: readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        self.readout, self.readout_masks = readout, int(readout_masks)
        self.model.readout = fit_readout(self.model, readout, self.readout_masks)

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        with torch.inference_mode():
            return self.model.predict([x.image for x in batch], [x.text for x in batch], steps=self.steps, seed=self.seed)

    def config(self) -> dict[str, Any]:
        return super().config() | {"preset": self.model.config.preset, "steps": self.steps, "dtype": self.dtype,
                                   "profile": self.model.profile, "readout": self.readout,
                                   "mask_threshold": self.model.config.mask_threshold,
                                   **({"readout_masks": self.readout_masks} if self.readout != "vae" else {}),
                                   "image_size": self.model.config.image_size, "shortcut": self.model.config.shortcut,
                                   "cost": self.cost()}

    def cost(self) -> dict[str, Any]:
        """The training cost as the rivals record it (baselines.common): every parameter, those the DiT stage
        trained (the VAE is frozen there, the encoder too if encoder.freeze), and that stage's wall time from
        the checkpoint's metrics.json with its FLOPs when the run recorded them; the VAE stage is not included."""
        parts = {"transformer": self.model.transformer, "vae": self.model.vae,
                 "instruction_encoder": self.model.instruction_encoder, "text_projection": self.model.text_projection}
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        frozen = {"vae"} | ({"instruction_encoder"} if self.model.config.encoder.freeze else set())
        metrics_file = Path(self.checkpoint) / "metrics.json"
        metrics = read_json_object(metrics_file) if metrics_file.is_file() else {}
        batch = self.model.config.train.batch_size
        return {"parameters_total": sum(counts.values()),
                "parameters_trainable": sum(n for name, n in counts.items() if name not in frozen),
                "train_wall_seconds": metrics.get("wall_seconds"), "train_flops": metrics.get("train_flops"),
                "train_samples_seen": metrics["step"] * batch if "step" in metrics else None,
                "training_seed": self.model.config.train.seed,
                "note": "training wall time and FLOPs of the DiT stage only (the VAE stage, trained before it and "
                        "frozen in it, is not included)" + ("" if "train_flops" in metrics else
                                                           "; training FLOPs not recorded by its training run")}

    def timings(self) -> dict[str, float]:
        return dict(self.model.timings)

    def check_suite(self, suite_name: str, synthetic: bool) -> list[str]:
        if self.model.config.preset in ("tiny", "micro") and not synthetic:
            return [f"genmask checkpoint {self.checkpoint} is a {self.model.config.preset} model trained on synthetic "
                    f"shape scenes only; its numbers on the real suite {suite_name!r} are not meaningful"]
        return []
