"""Harness adapter: LISA as the model `lisa`.

    bench run --suite synthref --model lisa                                    # the shipped tiny LISA
    bench run --suite synthref --model lisa --model-arg seg_token=generate     # answers generated, no [SEG] = empty
    bench run --suite refcoco --model lisa --checkpoint /models/LISA-7B-v1 --model-arg clip=/models/clip-vit-large-patch14 --device cuda

Options (`--model-arg`): `seg_token` teacher (default: the answer "[SEG]." teacher-forced in one pass, as LISA's
own validation) or generate (greedy answer; a sample whose answer has no [SEG] gets an empty mask, as Sa2VA's
evaluation counts it); `seg_state` predict (LISA's code: the state that predicts [SEG]) or token (the state at
[SEG]); for real checkpoints `clip` (CLIP ViT-L/14 directory), `dtype` (auto: bfloat16 on CUDA),
`max_new_tokens` and `lora_alpha` (an unmerged checkpoint's LoRA scale numerator; LISA's 16). Texts are treated as
LISA's evaluation treats them (`utils/dataset.py` ValDataset): referring expressions stripped and lowercased,
ReasonSeg texts stripped. All are recorded in run.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from baselines.common import RivalSegModel, resolve_path
from baselines.lisa.model import SEG_STATES, SEG_TOKEN_MODES
from baselines.lisa.train import LisaTrainer
from bench.models.base import MODELS, ModelInput, SegModel

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "lisa"
DTYPES = ("float32", "bfloat16", "float16")
TEXT_TREATMENT = ("as LISA's evaluation (utils/dataset.py ValDataset): referring expressions .strip().lower(), "
                  "ReasonSeg texts (is_sentence in the sample's metadata) .strip()")


def lisa_text(item: ModelInput) -> str:
    """The text as LISA's evaluation feeds it: RefCOCO sentences stripped and lowercased, ReasonSeg's stripped."""
    meta = item.sample.meta if item.sample is not None else {}
    return item.text.strip() if "is_sentence" in meta else item.text.strip().lower()


@MODELS.register("lisa")
class LisaSegModel(RivalSegModel):
    """LISA: the shipped tiny model (or a `bench train --model lisa` final directory), or a real LISA-7B-layout
    checkpoint (`--checkpoint DIR --model-arg clip=DIR`, see baselines/lisa/keymap.py)."""

    name = "lisa"
    trainer = LisaTrainer
    shipped = SHIPPED_CHECKPOINT

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, seg_token: str = "teacher",
                 seg_state: str | None = None, clip: str | None = None, dtype: str = "auto",
                 max_new_tokens: int | str | None = None, sam_decoder_heads: int | str = 8,
                 lora_alpha: float | str | None = None, **options: Any):
        from baselines.lisa.keymap import is_lisa_checkpoint, load_lisa

        if seg_token not in SEG_TOKEN_MODES:
            raise ValueError(f"lisa: seg_token must be one of {', '.join(SEG_TOKEN_MODES)}, not {seg_token!r}")
        if seg_state is not None and seg_state not in SEG_STATES:
            raise ValueError(f"lisa: seg_state must be one of {', '.join(SEG_STATES)}, not {seg_state!r}")
        self.seg_token = seg_token
        self.real = checkpoint is not None and is_lisa_checkpoint(resolve_path(checkpoint))
        if self.real:
            SegModel.__init__(self, checkpoint=checkpoint, device=device, seed=seed, **options)
            if dtype == "auto":
                dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
            if dtype not in DTYPES:
                raise ValueError(f"lisa: dtype must be auto or one of {', '.join(DTYPES)}, not {dtype!r}")
            self.dtype, self.lora_alpha = dtype, float(16 if lora_alpha is None else lora_alpha)  # LISA's default
            self.model = load_lisa(resolve_path(checkpoint), clip, dtype=getattr(torch, dtype),
                                   sam_decoder_heads=int(sam_decoder_heads), lora_alpha=self.lora_alpha).to(device)
            self.rival_config, self.metrics = None, {}
            self._timings = {"preprocess": 0.0, "forward": 0.0, "postprocess": 0.0}
        else:
            if clip is not None or lora_alpha is not None:
                raise ValueError("lisa: clip= and lora_alpha= apply to real LISA checkpoints only")
            super().__init__(checkpoint=checkpoint, device=device, seed=seed, **options)
            self.dtype = "float32"
        if seg_state is not None:
            self.model.config.seg_state = seg_state
        if max_new_tokens is not None:
            self.model.config.max_new_tokens = int(max_new_tokens)
        self.missing_seg = 0

    @property
    def image_size(self) -> int:
        return self.model.image_size if self.real else self.rival_config.train.image_size

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        import time

        from bench.images import as_rgb_array, resize_image

        if not batch:
            return []
        begin = time.perf_counter()
        images = [as_rgb_array(x.image) for x in batch]
        # the tiny model reads square 64 px scenes as it was trained; a real LISA takes the image as it is
        inputs = images if self.real else [resize_image(image, self.image_size) for image in images]
        if self.real:
            self.model.language.sentence_flags = [x.sample is not None and bool(x.sample.meta.get("is_sentence"))
                                                  for x in batch]
        middle = time.perf_counter()
        with torch.inference_mode():
            logits, _ = self.model.predict_logits(inputs, [lisa_text(x) for x in batch], self.seg_token)
        end = time.perf_counter()
        masks = []
        for score, image in zip(logits, images, strict=True):
            height, width = image.shape[:2]
            if score is None:  # generated answer without [SEG]: an empty mask
                self.missing_seg += 1
                masks.append(np.zeros((height, width), dtype=bool))
                continue
            if tuple(score.shape) != (height, width):
                score = F.interpolate(score[None, None].float(), size=(height, width), mode="bilinear",
                                      align_corners=False)[0, 0]
            masks.append((score > 0).cpu().numpy())
        self._timings["preprocess"] += middle - begin
        self._timings["forward"] += end - middle
        self._timings["postprocess"] += time.perf_counter() - end
        return masks

    def config(self) -> dict[str, Any]:
        lisa = {"seg_token": self.seg_token, "seg_state": self.model.config.seg_state,
                "max_new_tokens": self.model.config.max_new_tokens, "dtype": self.dtype,
                "language_adaptation": self.model.config.language_adaptation,
                "layout": "lisa-7b (keymap)" if self.real else "tiny", "text": TEXT_TREATMENT}
        if self.real:
            lisa |= {"lora_modules_merged_at_load": self.model.merged_lora_modules, "lora_alpha": self.lora_alpha,
                     "tokenizer": "transformers 4.31's slow LlamaTokenizer, as LISA loads it (use_fast=False)"}
            return SegModel.config(self) | {"image_size": self.image_size, "lisa": lisa}
        return super().config() | {"lisa": lisa}

    def check_suite(self, suite_name: str, synthetic: bool) -> list[str]:
        return [] if self.real else super().check_suite(suite_name, synthetic)
