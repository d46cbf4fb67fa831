"""`bench train --model lisa`: the tiny LISA trained on the stream every rival shares (`baselines.common`).

    python -m bench train --model lisa --out DIR [train.steps=N] [model.seg_state=token]

Foundations: the tiny VLM foundation that GenMask adapts (`model.foundation`) and the tiny SAM pretrained by
`bench train --model sam-tiny` (`model.sam`), both pinned by digest. Trained as LISA trains (`train_ds.py`): LoRA
through peft (r 8, alpha 16, dropout 0.05) on the language model's q_proj and v_proj, its embeddings and head,
`text_hidden_fcs` and SAM's mask decoder (`model.language_adaptation=full` trains the whole language model);
frozen: the rest of the VLM and SAM's image and prompt encoders.
Loss: 1.0 x answer cross-entropy + 2.0 x BCE + 0.5 x Dice (LISA's). OUT/final: config.json, model.safetensors
(the trained weights; the frozen parts come from `model.foundation` and `model.sam`), metrics.json (validation,
cost, data stream).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.common import RivalConfig, RivalModule, RivalTrainer
from baselines.lisa.model import LisaConfig, build_tiny_lisa


class LisaTrainer(RivalTrainer):
    name = "lisa"
    description = "Train the tiny LISA ([SEG] token -> SAM prompt) on the rivals' shared synthetic stream."
    model_config = LisaConfig
    # lr: chosen on val by `bench ablate lr-lisa` (LISA's own 3e-4 before; baselines/checkpoints/lisa/RECIPE.md)
    recipe: dict[str, Any] = {"lr": 1e-4, "steps": 1000, "warmup_steps": 100, "weight_decay": 0.0, "eval_every": 250}

    @classmethod
    def build(cls, config: RivalConfig) -> RivalModule:
        return build_tiny_lisa(config.model, config.train.seed)

    @classmethod
    def loss(cls, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch["images"], batch["texts"], torch.from_numpy(batch["masks"]))["loss"]

    @classmethod
    def predict(cls, model: RivalModule, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        return model(images, texts)
