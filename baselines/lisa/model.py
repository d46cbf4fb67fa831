"""LISA's architecture (Lai et al., "LISA: Reasoning Segmentation via Large Language Model", CVPR 2024).

A VLM reads the image and the instruction and answers with a `[SEG]` token. The last-layer hidden state at the
`[SEG]` position goes through `text_hidden_fcs` (Linear -> ReLU -> Linear to SAM's prompt width) and enters SAM's
mask decoder as the single sparse prompt; the dense prompt is SAM's `no_mask_embed`; the decoder runs with
`multimask_output=False` over the (frozen) SAM image encoder's embedding of the image.

Which hidden state (`seg_state`): "predict" (default) takes the state whose next-token prediction is `[SEG]`, i.e.
the position just before it, which is what LISA's code does (`seg_token_mask = input_ids[:, 1:] == seg_token_idx`,
shifted by one); "token" takes the state at `[SEG]` itself, as the paper's text describes it.

Losses, as LISA's: 1.0 x language-model cross-entropy on the answer + 2.0 x per-pixel BCE + 0.5 x Dice.

Language adaptation, as LISA's `train_ds.py`: LoRA through peft (r 8, alpha 16, dropout 0.05) on the language
model's q_proj and v_proj, its embeddings and head trained too, the rest of the VLM frozen (`add_lora`).

Two language sides share this module: `QwenLanguage` (the tiny Qwen2.5-VL foundation that GenMask also adapts,
its word-level processor with `[SEG]` added; the prompt is "<instruction> ans", the word after which the
foundation was trained to answer, and the answer "[SEG] . eos") and `keymap.LlavaLanguage` (real LISA-7B:
LLaVA with LISA's tokenizer and chat prompt).

Evaluation (`seg_token`): "teacher" (default) feeds the answer and reads the `[SEG]` state in one forward pass, as
LISA's own `validate` does; "generate" decodes greedily and a sample whose answer holds no `[SEG]` gets an empty
mask, as Sa2VA's evaluation counts it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import SamModel

from baselines.common import RivalModule
from baselines.lisa.sam import bce_loss, check_sam, dice_loss, encoder_size, postprocess_masks, sam_pixels

SEG_TOKEN = "[SEG]"
SEG_STATES = ("predict", "token")
SEG_TOKEN_MODES = ("teacher", "generate")
# "lora": LISA's (peft LoRA on the language model's q/v projections, its embeddings and head trained, the rest
# frozen); "full": the whole language model trained; "merged": a real LISA checkpoint, LoRA merged into the weights
LANGUAGE_ADAPTATIONS = ("lora", "full", "merged")
LISA_TRAINED = ("embed_tokens", "lm_head")  # train_ds.py's other trained names (+ mask_decoder, text_hidden_fcs)
LISA_LORA_EXCLUDED = ("visual", "vision_tower", "mm_projector", "text_hidden_fcs")  # train_ds.py's find_linear_layers


@dataclass
class LisaConfig:
    """The model section of a tiny LISA's config (`bench train --model lisa model.KEY=VALUE`)."""

    foundation: str = "genmask/checkpoints/foundations/vlm-tiny"  # the VLM GenMask adapts
    foundation_sha256: str = ""  # pinned on first use (baselines.common.pin_foundation)
    sam: str = "baselines/checkpoints/sam-tiny"  # `bench train --model sam-tiny` OUT/final
    sam_sha256: str = ""
    seg_state: str = "predict"
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    language_adaptation: str = "lora"  # LANGUAGE_ADAPTATIONS; checkpoints before LoRA say "full"
    lora_r: int = 8  # LISA's train_ds.py defaults
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    max_tokens: int = 128
    max_new_tokens: int = 4

    def __post_init__(self) -> None:
        if self.seg_state not in SEG_STATES:
            raise ValueError(f"seg_state must be one of {', '.join(SEG_STATES)}, not {self.seg_state!r}")
        if self.language_adaptation not in LANGUAGE_ADAPTATIONS:
            raise ValueError(f"language_adaptation must be one of {', '.join(LANGUAGE_ADAPTATIONS)}, "
                             f"not {self.language_adaptation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_hidden_fcs(in_dim: int, out_dim: int) -> nn.ModuleList:
    """LISA's projection, with its module names (`text_hidden_fcs.0.0`, `.0.2`)."""
    return nn.ModuleList([nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim),
                                        nn.Dropout(0.0))])


@dataclass
class Encoded:
    """Language-model inputs (right-padded), answer labels (-100 elsewhere) and each row's prompt length."""

    inputs: dict[str, Any]
    labels: torch.Tensor | None
    lengths: torch.Tensor  # tokens of each row that are real (attention mask ones)


# --------------------------------------------------------------------------------- tiny language side
class QwenLanguage(nn.Module):
    """The tiny Qwen2.5-VL foundation with `[SEG]` in its vocabulary; prompt "<text> ans", answer "[SEG] . eos"."""

    def __init__(self, vlm: nn.Module, processor: Any, max_tokens: int, answer_word: str = "ans",
                 end_word: str = "eos"):
        super().__init__()
        self.vlm, self.processor, self.max_tokens = vlm, processor, max_tokens
        self.answer_word, self.end_word = answer_word, end_word
        self.seg_id = processor.tokenizer.token_to_id(SEG_TOKEN)
        self.end_id = processor.tokenizer.token_to_id(end_word)
        if self.seg_id is None:
            raise ValueError(f"the processor has no {SEG_TOKEN} token: use `add_seg_token` first")

    @property
    def hidden_size(self) -> int:
        return self.vlm.config.text_config.hidden_size

    @property
    def answer(self) -> str:
        return f"{SEG_TOKEN} . {self.end_word}"

    def encode(self, images: list[np.ndarray], texts: list[str], with_answer: bool) -> Encoded:
        prompts = [f"{text} {self.answer_word}" + (f" {self.answer}" if with_answer else "") for text in texts]
        inputs = self.processor(images, prompts, self.max_tokens)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        labels = None
        if with_answer:
            answer_id = self.processor.tokenizer.token_to_id(self.answer_word)
            for row, text in zip(ids, texts, strict=True):
                if not (row == self.end_id).any():
                    raise ValueError(f"instruction {text!r} and its answer do not fit in max_tokens={self.max_tokens}")
            # the answer starts after the last answer word: an instruction may contain "ans" only as [UNK]
            after = ((ids == answer_id).long().flip(1).cumsum(1).flip(1) == 0) & (mask == 1)
            labels = torch.where(after, ids, torch.full_like(ids, -100))
        return Encoded(inputs, labels, mask.sum(1))

    def run(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last-layer hidden states after the final norm)."""
        hidden = self.vlm.model(**inputs, use_cache=False).last_hidden_state
        return self.vlm.lm_head(hidden), hidden

    def decode_ids(self, ids: torch.Tensor) -> str:
        return " ".join(self.processor.tokenizer.id_to_token(int(i)) or "?" for i in ids)


def add_seg_token(vlm: nn.Module, processor: Any) -> int:
    """Add `[SEG]` to a word-level processor's vocabulary and grow the model's embeddings (new rows initialised
    as the mean of the others, as LLaVA does for its added tokens); returns its id."""
    tokenizer = processor.tokenizer
    if tokenizer.token_to_id(SEG_TOKEN) is None:
        tokenizer.add_special_tokens([SEG_TOKEN])
    seg_id = tokenizer.token_to_id(SEG_TOKEN)
    size = tokenizer.get_vocab_size()
    old = vlm.get_input_embeddings().weight.shape[0]
    if size > old:
        vlm.resize_token_embeddings(size, mean_resizing=False)
        with torch.no_grad():
            for embedding in (vlm.get_input_embeddings().weight, vlm.get_output_embeddings().weight):
                embedding[old:] = embedding[:old].mean(0, keepdim=True)
    return seg_id


def add_lora(vlm: nn.Module, config: LisaConfig) -> list[str]:
    """LISA's LoRA through peft (`train_ds.py`): adapters (r, alpha, dropout) on the language model's Linear layers
    whose names hold a target (q_proj, v_proj; not the vision tower or projector); every other weight frozen but
    the embeddings and the head. Returns the adapted modules' names."""
    from baselines.lisa.tokenizer import require

    peft = require("peft", "LISA's LoRA (language_adaptation=lora)")
    names = sorted(name for name, module in vlm.named_modules() if isinstance(module, nn.Linear)
                   and not any(part in name for part in LISA_LORA_EXCLUDED)
                   and any(target in name for target in config.lora_targets))
    vlm.requires_grad_(False)
    peft.inject_adapter_in_model(peft.LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout, target_modules=names, bias="none"),
                                 vlm)
    for name, parameter in vlm.named_parameters():
        if ".lora_" in name or any(part in name for part in LISA_TRAINED):
            parameter.requires_grad_(True)
    return names


# ------------------------------------------------------------------------------------------ LISA
class Lisa(RivalModule):
    """Language side + `text_hidden_fcs` + SAM (image encoder frozen, prompt encoder frozen, mask decoder trained).

    `forward(images, texts)` -> mask logits (B, H, W) at the images' size (teacher-forced answer);
    `forward(images, texts, masks)` -> LISA's training losses. The frozen parts are loaded from their own
    directories and not saved with the trained weights (`is_external`)."""

    external_prefixes = ("sam.vision_encoder.", "sam.prompt_encoder.", "sam.shared_image_embedding.")

    def __init__(self, language: nn.Module, sam: SamModel, config: LisaConfig):
        super().__init__()
        self.language, self.sam, self.config = language, sam, config
        self.prompt_dim = sam.config.prompt_encoder_config.hidden_size
        self.text_hidden_fcs = text_hidden_fcs(language.hidden_size, self.prompt_dim)
        self.freeze()

    def freeze(self) -> None:
        """LISA's choice: SAM's image and prompt encoders frozen, its mask decoder and the projection trained; the
        language model adapted by LoRA (its embeddings and head trained too), or fully fine-tuned ("full")."""
        self.sam.requires_grad_(False)
        self.sam.mask_decoder.requires_grad_(True)
        if self.config.language_adaptation == "lora":
            add_lora(self.language.vlm, self.config)

    def is_external(self, key: str) -> bool:
        """Not saved: the frozen SAM encoders and, under LoRA, the frozen language-model weights (the foundation's)."""
        if super().is_external(key):
            return True
        return (self.config.language_adaptation == "lora" and key.startswith("language.")
                and ".lora_" not in key and not any(name in key for name in LISA_TRAINED))

    @property
    def image_size(self) -> int:
        return encoder_size(self.sam)

    # --- the mask path
    @torch.no_grad()
    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.sam.get_image_embeddings(pixels)

    def decode(self, prompts: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits (B, 1, h, w) from (B, prompt_dim) text prompts."""
        sparse = prompts[:, None, None, :].to(embeddings.dtype)  # (batch, point_batch 1, one token, dim)
        if bool(sparse.sum() == 0):
            # transformers' SamMaskDecoder (up to 4.x) drops sparse prompts whose sum is exactly zero: nudge it
            sparse = sparse + F.pad(torch.full_like(sparse[..., :1], 1e-6), (0, sparse.shape[-1] - 1))
        batch, size = len(prompts), embeddings.shape[-1]
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, size, size)
        positional = self.sam.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        low_res, _ = self.sam.mask_decoder(image_embeddings=embeddings, image_positional_embeddings=positional,
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
        return low_res[:, 0]

    def seg_positions(self, ids: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Per row, the position of the state to read: from the first [SEG] at or after `starts` (the answer's
        first position), that position ("token") or the one before ("predict"); -1 where there is none."""
        position_index = torch.arange(ids.shape[1])[None]
        seg = (ids == self.language.seg_id) & (position_index < lengths[:, None]) & (position_index >= starts[:, None])
        has = seg.any(1)
        first = seg.float().argmax(1)
        position = first - 1 if self.config.seg_state == "predict" else first
        return torch.where(has, position, torch.full_like(position, -1))

    def prompts(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(hidden), device=hidden.device)
        return self.text_hidden_fcs[0](hidden[rows, positions.clamp(min=0).to(hidden.device)])

    # --- training
    def forward(self, images: np.ndarray | list[np.ndarray], texts: list[str], masks: torch.Tensor | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        if masks is None:
            logits, _ = self.predict_logits(list(images), texts, "teacher")
            return torch.stack(logits)
        return self.losses(list(images), texts, masks)

    def losses(self, images: list[np.ndarray], texts: list[str], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """LISA's training losses on a batch; `masks` (B, H, W) at the images' size."""
        encoded = _trimmed(self.language.encode(images, texts, with_answer=True))
        device = self.text_hidden_fcs[0][0].weight.device
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in encoded.inputs.items()}
        logits, hidden = self.language.run(inputs)
        labels = encoded.labels.to(device)
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        positions = self.seg_positions(encoded.inputs["input_ids"], encoded.lengths, _answer_starts(encoded.labels))
        pixels, input_sizes = sam_pixels(images, self.image_size)
        low_res = self.decode(self.prompts(hidden, positions), self.image_embeddings(pixels.to(device, self.sam.dtype)))
        logits_full = torch.stack(postprocess_masks(low_res, input_sizes,
                                                    [tuple(m.shape) for m in masks], self.image_size))
        target = masks.to(device).float()
        bce, dice = bce_loss(logits_full, target), dice_loss(logits_full, target)
        loss = self.config.ce_weight * ce + self.config.bce_weight * bce + self.config.dice_weight * dice
        return {"loss": loss, "ce": ce.detach(), "bce": bce.detach(), "dice": dice.detach()}

    # --- inference
    @torch.no_grad()
    def predict_logits(self, images: list[np.ndarray], texts: list[str], seg_token: str = "teacher"
                       ) -> tuple[list[torch.Tensor | None], list[str]]:
        """Mask logits at each image's size (None where a generated answer has no [SEG]) and the answers."""
        if seg_token not in SEG_TOKEN_MODES:
            raise ValueError(f"seg_token must be one of {', '.join(SEG_TOKEN_MODES)}, not {seg_token!r}")
        device = self.text_hidden_fcs[0][0].weight.device
        if seg_token == "teacher":
            encoded = self.language.encode(images, texts, with_answer=True)
            ids, lengths, starts = encoded.inputs["input_ids"], encoded.lengths, _answer_starts(encoded.labels)
        else:
            ids, lengths, starts, encoded = self.generate(images, texts)
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in encoded.inputs.items()}
        inputs["input_ids"], inputs["attention_mask"] = ids.to(device), _mask_of(ids, lengths).to(device)
        _, hidden = self.language.run(inputs)
        positions = self.seg_positions(ids, lengths, starts)
        pixels, input_sizes = sam_pixels(images, self.image_size)
        low_res = self.decode(self.prompts(hidden, positions), self.image_embeddings(pixels.to(device, self.sam.dtype)))
        logits = postprocess_masks(low_res.float(), input_sizes, [image.shape[:2] for image in images],
                                   self.image_size)
        answers = [self.language.decode_ids(row[int(s) : int(n)]) for row, s, n in zip(ids, starts, lengths, strict=True)]
        return [logit if int(p) >= 0 else None for logit, p in zip(logits, positions, strict=True)], answers

    @torch.no_grad()
    def generate(self, images: list[np.ndarray], texts: list[str]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Encoded]:
        """Greedy answers after the prompts, `max_new_tokens` at most (stopping at the end token)."""
        encoded = self.language.encode(images, texts, with_answer=False)
        device = self.text_hidden_fcs[0][0].weight.device
        steps = self.config.max_new_tokens
        ids = F.pad(encoded.inputs["input_ids"], (0, steps), value=0)
        lengths = encoded.lengths.clone()
        prompt_lengths = lengths.clone()
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in encoded.inputs.items()}
        if "image_mask" in inputs:  # the LLaVA side marks image positions; new tokens are text
            inputs["image_mask"] = F.pad(inputs["image_mask"], (0, steps), value=False)
        done = torch.zeros(len(ids), dtype=torch.bool)
        for _ in range(steps):
            inputs["input_ids"], inputs["attention_mask"] = ids.to(device), _mask_of(ids, lengths).to(device)
            logits, _ = self.language.run(inputs)
            rows = torch.arange(len(ids))
            following = logits[rows, (lengths - 1).to(device)].argmax(-1).cpu()
            active = ~done
            ids[rows[active], lengths[active]] = following[active]
            lengths = lengths + active.long()
            done |= following == self.language.end_id
            if bool(done.all()):
                break
        encoded.inputs.update(input_ids=ids, attention_mask=_mask_of(ids, lengths))
        if "image_mask" in inputs:
            encoded.inputs["image_mask"] = inputs["image_mask"].cpu()
        return ids, lengths, prompt_lengths, encoded


def _trimmed(encoded: Encoded) -> Encoded:
    """Training only: drop the padding columns that no row of the batch uses (right padding, causal attention:
    the real tokens' states do not change). Evaluation keeps the fixed width, so that a sample's result never
    depends on the other samples of its batch."""
    width = int(encoded.lengths.max())
    for key in ("input_ids", "attention_mask", "image_mask"):
        if key in encoded.inputs:
            encoded.inputs[key] = encoded.inputs[key][:, :width]
    if encoded.labels is not None:
        encoded.labels = encoded.labels[:, :width]
    return encoded


def _answer_starts(labels: torch.Tensor) -> torch.Tensor:
    """Each row's first answer position (its first labelled token: [SEG] in the teacher-forced answer)."""
    return (labels != -100).float().argmax(1)


def _mask_of(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()


def build_tiny_lisa(config: LisaConfig, seed: int = 0) -> Lisa:
    """The tiny LISA: the VLM foundation GenMask adapts (with [SEG] added) and the SAM pretrained here, both
    pinned by digest (a checkpoint refuses to load over changed foundations)."""
    from baselines.common import pin_foundation
    from genmask.vlm import load_foundation

    foundation = pin_foundation(config, "foundation", "foundation_sha256")
    sam_directory = pin_foundation(config, "sam", "sam_sha256")
    vlm, processor, _ = load_foundation(foundation)
    record = json.loads((foundation / "foundation.json").read_text(encoding="utf-8"))
    add_seg_token(vlm, processor)
    torch.manual_seed(seed)
    language = QwenLanguage(vlm, processor, config.max_tokens, record["answer_word"], record["end_word"])
    check_sam(sam_directory)
    return Lisa(language, SamModel.from_pretrained(sam_directory, use_safetensors=True), config)
