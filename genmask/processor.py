"""Turn (image, instruction) pairs into Qwen2.5-VL encoder inputs, padded to a fixed length.

Two processors: `WordLevelProcessor` (the tiny preset: a word-level `tokenizers` vocabulary over the
synthetic scenes' words plus Qwen's image processor, both saved inside the checkpoint) and
`ChatProcessor` (a real Qwen2.5-VL processor loaded from its checkpoint directory, chat template included).
Both right-pad to `max_tokens` so a sample's encoding never depends on the other samples of its batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from bench.errors import DataFormatError
from bench.io import SMALL_JSON_LIMIT, read_json_object, read_text

WORD_TOKENIZER_FILE = "genmask_tokenizer.json"
PROCESSOR_SETTINGS_FILE = "genmask_processor.json"
PUNCTUATION = [".", ",", "?", "!", "'"]  # the Whitespace pre-tokenizer splits these off words
SPECIAL_TOKENS = ["[PAD]", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "[UNK]"]


def special_token_ids() -> dict[str, int]:
    """Qwen2.5-VL config fields for the word-level vocabulary's special tokens."""
    return {"vision_start_token_id": 1, "vision_end_token_id": 2, "image_token_id": 3, "video_token_id": 4}


def _pad(rows: list[list[int]], max_tokens: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to exactly `max_tokens`; returns input_ids and attention_mask."""
    ids = torch.full((len(rows), max_tokens), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), max_tokens), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) > max_tokens:
            raise ValueError(f"instruction {i} needs {len(row)} tokens (image included), more than "
                             f"encoder.max_tokens={max_tokens}")
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


class WordLevelProcessor:
    """Word-level tokenizer + Qwen image processor, for models trained from scratch on a closed vocabulary.

    With `coordinate_channels`, every pixel also carries its x and y (two extra input channels, CoordConv
    style; the vision config's `in_channels` is then 5): Qwen2.5-VL's vision tower has only relative (rotary)
    positions, from which a model this small did not learn where things are (see genmask/vlm.py)."""

    def __init__(self, tokenizer: Tokenizer, image_processor: Qwen2VLImageProcessorPil,
                 coordinate_channels: bool = False):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.coordinate_channels = coordinate_channels

    @classmethod
    def build(cls, words: list[str], patch_size: int, merge_size: int, temporal_patch_size: int,
              min_pixels: int, max_pixels: int, coordinate_channels: bool = False) -> WordLevelProcessor:
        """A fresh processor over `words` (lower-cased) and an image processor with the vision tower's patching."""
        vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
        for word in sorted({w.lower() for w in words} | set(PUNCTUATION)):
            vocab.setdefault(word, len(vocab))
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
            min_pixels=min_pixels, max_pixels=max_pixels,
        )
        return cls(tokenizer, image_processor, coordinate_channels)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / WORD_TOKENIZER_FILE))
        self.image_processor.save_pretrained(str(directory))
        settings = {"coordinate_channels": self.coordinate_channels}
        (Path(directory) / PROCESSOR_SETTINGS_FILE).write_text(json.dumps(settings) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> WordLevelProcessor:
        tokenizer_file = Path(directory) / WORD_TOKENIZER_FILE
        try:
            tokenizer = Tokenizer.from_str(read_text(tokenizer_file, SMALL_JSON_LIMIT))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for any malformed file
            if isinstance(exc, DataFormatError):
                raise
            raise DataFormatError(f"{tokenizer_file}: not a tokenizers file ({str(exc)[:200]})") from None
        settings_file = Path(directory) / PROCESSOR_SETTINGS_FILE  # absent in checkpoints older than the option
        settings = read_json_object(settings_file) if settings_file.exists() else {}
        return cls(tokenizer, Qwen2VLImageProcessorPil.from_pretrained(str(directory)),
                   bool(settings.get("coordinate_channels", False)))

    def __call__(self, images: list[np.ndarray | None], texts: list[str], max_tokens: int) -> dict[str, Any]:
        """Encoder inputs; an image of None (text-to-image samples) contributes no vision tokens."""
        inputs, grids, merge = vision_inputs(self.image_processor, images)
        if self.coordinate_channels and "pixel_values" in inputs:
            inputs["pixel_values"] = with_coordinates(self.image_processor, inputs["pixel_values"],
                                                      [image for image in images if image is not None])
        rows = []
        for image, text in zip(images, texts, strict=True):
            prefix = [] if image is None else [1] + [3] * (int(grids.pop(0).prod()) // merge) + [2]
            words = self.tokenizer.encode(text).ids[: max(0, max_tokens - len(prefix))]  # overlong text is cut
            rows.append(prefix + words)
        inputs["input_ids"], inputs["attention_mask"] = _pad(rows, max_tokens, pad_id=0)
        return inputs


def vision_inputs(image_processor: Qwen2VLImageProcessorPil, images: list[np.ndarray | None]) -> tuple[dict[str, Any], list[torch.Tensor], int]:
    """Pixel values and grids of the images present, the grids in order, and the patches merged per vision token."""
    present = [image for image in images if image is not None]
    inputs: dict[str, Any] = {}
    grids: list[torch.Tensor] = []
    if present:
        vision = image_processor(images=present, return_tensors="pt")
        inputs.update(pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"])
        grids = list(vision["image_grid_thw"])
    return inputs, grids, image_processor.merge_size**2


def with_coordinates(image_processor: Qwen2VLImageProcessorPil, pixel_values: torch.Tensor,
                     images: list[np.ndarray]) -> torch.Tensor:
    """Patch vectors with two more channels, x and y ramps over each image, patched exactly like the image."""
    ramps = []
    for image in images:
        height, width = image.shape[:2]
        x = np.broadcast_to(np.linspace(0, 255, width)[None, :], (height, width))
        y = np.broadcast_to(np.linspace(0, 255, height)[:, None], (height, width))
        ramps.append(np.stack([x, y, np.zeros((height, width))], -1).round().astype(np.uint8))
    coordinates = image_processor(images=ramps, return_tensors="pt")["pixel_values"]
    shape = (len(pixel_values), 3, image_processor.temporal_patch_size, image_processor.patch_size,
             image_processor.patch_size)
    both = torch.cat([pixel_values.view(shape), coordinates.view(shape)[:, :2].to(pixel_values.dtype)], dim=1)
    return both.reshape(len(pixel_values), -1)


QWEN_PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{vision}{text}<|im_end|>\n"
QWEN_VISION = "<|vision_start|><|image_pad|><|vision_end|>"


class ChatProcessor:
    """A real Qwen2.5-VL tokenizer and image processor (from its checkpoint directory) in Qwen's chat format.

    Does what Qwen2_5_VLProcessor does for one user turn (the image pad token repeated once per merged vision
    token) without its video processor, which needs torchvision.
    """

    def __init__(self, tokenizer: Any, image_processor: Qwen2VLImageProcessorPil):
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def load(cls, directory: str | Path) -> ChatProcessor:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(directory)), Qwen2VLImageProcessorPil.from_pretrained(str(directory)))

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))

    def __call__(self, images: list[np.ndarray | None], texts: list[str], max_tokens: int) -> dict[str, Any]:
        inputs, grids, merge = vision_inputs(self.image_processor, images)
        rows = []
        for image, text in zip(images, texts, strict=True):
            vision_text = "" if image is None else QWEN_VISION.replace(
                "<|image_pad|>", "<|image_pad|>" * (int(grids.pop(0).prod()) // merge))
            prompt = QWEN_PROMPT.format(vision=vision_text, text=text)
            rows.append(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        pad_id = self.tokenizer.pad_token_id or 0
        inputs["input_ids"], inputs["attention_mask"] = _pad(rows, max_tokens, pad_id)
        return inputs


def load_processor(directory: str | Path) -> WordLevelProcessor | ChatProcessor:
    """The processor saved in an encoder directory: word-level if its tokenizer file is there, else Qwen's own."""
    if (Path(directory) / WORD_TOKENIZER_FILE).exists():
        return WordLevelProcessor.load(directory)
    return ChatProcessor.load(directory)
