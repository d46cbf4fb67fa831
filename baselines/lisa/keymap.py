"""Real LISA checkpoints (LISA-7B layout) on transformers' `LlavaForConditionalGeneration` and `SamModel`.

A merged LISA checkpoint (e.g. LISA-7B-v1), as LISA's `merge_lora_weights_and_save_hf_model.py` writes it with
transformers 4.31 (`model.save_pretrained(path, state_dict=...)` without the CLIP tower, `tokenizer.save_pretrained`):
config.json, `pytorch_model-0000N-of-0000M.bin` shards + `pytorch_model.bin.index.json` (or safetensors), the slow
tokenizer's files (`baselines.lisa.tokenizer`), and one `LISAForCausalLM` state dict:

    model.embed_tokens / model.layers.N.* / model.norm / lm_head     LLaMA (LLaVA-7B), vocabulary with [SEG] added
    model.layers.N.self_attn.rotary_emb.inv_freq                     4.31's persistent rotary buffers (recomputed)
    model.mm_projector.{weight,bias}                                 LLaVA v1's projector: a single Linear
    model.visual_model.{image_encoder,prompt_encoder,mask_decoder}.* SAM ViT-H, original segment-anything names
    model.text_hidden_fcs.0.{0,2}.{weight,bias}                      LISA's projection to SAM's 256-d prompt
    (model.vision_tower.*: usually absent, the CLIP ViT-L/14 tower is read from its own directory)

An unmerged checkpoint (LISA's training output through DeepSpeed's `zero_to_fp32.py`: the PeftModel's state dict,
`base_model.model.*` with LoRA pairs on q_proj/v_proj) is merged at load as peft's `merge_and_unload` does
(`merge_lora`; alpha is not saved: LISA's 16 unless `lora_alpha` says otherwise).

The mapping: LLaMA keys go under `model.language_model.*`, the projector becomes a single `nn.Linear` in place of
transformers' two-layer `multi_modal_projector`, SAM keys take the renames of transformers' SAM conversion
(`image_encoder` -> `vision_encoder`, `blocks` -> `layers`, `.norm` -> `.layer_norm`, neck and upscaling indices
to names, MLP heads' `layers.0/1/2` -> `proj_in/layers.0/proj_out`, ...), and CLIP's `vision_model.*` goes under
`model.vision_tower.vision_model.*`. Every key must be used and every model weight filled (`load_lisa` raises
otherwise, naming them). SAM's and LLaMA's sizes are read off the weights (SAM's decoder head count, which the
weights do not fix, defaults to SAM's 8; its two-way transformer's LayerNorms take segment-anything's eps 1e-5)
and LLaMA's from the checkpoint's config.json.

Preprocessing is LISA's: SAM input = longest side 1024, SAM's pixel mean/std, zero padding bottom-right (masks
upsampled, cropped, resized back); CLIP input = CLIP's own image processor from its directory (224 x 224); the
prompt is LLaVA v1's conversation with `<im_start><image><im_end>` (the image's 256 CLIP features in place of
`<image>`) and LISA's questions, tokenised as LISA does (4.31's slow tokenizer, LLaVA's `tokenizer_image_token`);
the teacher-forced answer is "[SEG].".

Weights are read from safetensors; `.bin` pickles only through `torch.load(weights_only=True)` (no code runs).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.lisa.model import SEG_TOKEN, Encoded, Lisa, LisaConfig
from baselines.lisa.tokenizer import LisaTokenizer
from bench.errors import BenchError
from bench.io import read_json_object
from bench.weights_check import check_layer_counts, check_parameter_count

LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                "helpful, detailed, and polite answers to the human's questions.")
IMAGE_TOKEN, IM_START, IM_END = "<image>", "<im_start>", "<im_end>"
LISA_ANSWER = "[SEG]."

# transformers' SAM conversion renames (convert_sam_to_hf.py), applied in this order to every SAM key
SAM_RENAMES = [
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
]
HYPERNETWORK = re.compile(r"(.*output_hypernetworks_mlps\.\d+\.)layers\.(\d)(\..*)")
HYPERNETWORK_NAMES = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}


class KeyMappingError(ValueError):
    """A checkpoint whose keys do not fill the model exactly (names the missing and unexpected keys)."""


# ---------------------------------------------------------------------------------------- reading
WEIGHT_LAYOUTS = (("*.safetensors", "model.safetensors.index.json"), ("pytorch_model*.bin", "pytorch_model.bin.index.json"))


def weight_files(directory: Path) -> tuple[list[Path], dict[str, str]]:
    """The weight files of a checkpoint directory and its index's weight map (empty without an index): the shards
    an index names (all must be there), else every safetensors file, else every `pytorch_model*.bin`."""
    for pattern, index_name in WEIGHT_LAYOUTS:
        index = directory / index_name
        if index.exists():
            weight_map = read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(
                    isinstance(v, str) and v not in ("", ".", "..") and "/" not in v for v in weight_map.values()):
                raise KeyMappingError(f"{index}: 'weight_map' must map tensor names to file names in {directory}")
            files = [directory / name for name in sorted(set(weight_map.values()))]
            absent = [file.name for file in files if not file.exists()]
            if absent:
                raise FileNotFoundError(f"{index} names shards that are not in {directory}: {absent}")
            return files, weight_map
        files = sorted(directory.glob(pattern))
        if files:
            return files, {}
    raise FileNotFoundError(f"{directory}: no *.safetensors or pytorch_model*.bin weights")


def load_pickle(file: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict through `torch.load(weights_only=True)` (a restricted unpickler: tensors and plain
    containers only, no code runs); anything else is refused naming the file."""
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise KeyMappingError(f"{file}: refused by torch.load(weights_only=True), which reads tensors and plain "
                              f"containers only: {_load_failure(error)}") from None
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise KeyMappingError(f"{file}: not a state dict of tensors")
    return loaded


def _load_failure(error: BaseException) -> str:
    """Why torch.load refused a file, in one sentence (never torch's advice to load it with weights_only=False)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    foreign = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if foreign:
        return (f"it holds a Python object ({foreign.group(1)}) that loading would import and call, so it is never "
                "loaded; convert the checkpoint to safetensors where you trust its source")
    if isinstance(error, EOFError) or "PytorchStreamReader" in text or "truncated" in text.lower():
        return "the file is truncated or not a PyTorch checkpoint"
    return text.splitlines()[0][:200] if text else type(error).__name__


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory: safetensors, else `.bin` files (LISA's merge script writes
    `pytorch_model-0000N-of-0000M.bin` shards and `pytorch_model.bin.index.json`) read by `load_pickle`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    files, weight_map = weight_files(directory)
    pickles = [file for file in files if file.suffix == ".bin"]
    if pickles:
        print(f"note: {directory}: reading {len(pickles)} .bin file(s) with torch.load(weights_only=True); "
              "convert them to safetensors to avoid pickles altogether")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_pickle(file) if file.suffix == ".bin" else load_file(str(file)))
    absent = sorted(weight_map.keys() - state.keys())
    if absent:
        raise KeyMappingError(f"{directory}: keys its index lists are in no shard: {absent[:8]}")
    return state


def is_lisa_checkpoint(directory: str | Path) -> bool:
    """A LISA-layout directory: a transformers config.json naming LISA/LLaVA (not a bench rival's config)."""
    path = Path(directory) / "config.json"
    if not path.exists():
        return False
    try:
        config = read_json_object(path)
    except (OSError, BenchError):
        return False
    names = " ".join(config.get("architectures") or []) + " " + str(config.get("model_type", ""))
    return "name" not in config and ("LISA" in names or "llava" in names.lower())


# ---------------------------------------------------------------------------------------- mapping
def sam_key(key: str) -> str:
    """An original segment-anything key (without `model.visual_model.`) in transformers' `SamModel` naming."""
    for old, new in SAM_RENAMES:
        if old in key:
            key = key.replace(old, new)
    match = HYPERNETWORK.match(key)
    if match:
        key = f"{match.group(1)}{HYPERNETWORK_NAMES[match.group(2)]}{match.group(3)}"
    return key


LORA_KEY = re.compile(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight")
PEFT_PREFIX = "base_model.model."


def merge_lora(state: dict[str, torch.Tensor], alpha: float) -> tuple[dict[str, torch.Tensor], int]:
    """An unmerged LISA state dict (the PeftModel's: LISA's training output through DeepSpeed's zero_to_fp32, keys
    `base_model.model.*`, LoRA pairs `*.lora_A.default.weight` / `*.lora_B.default.weight`) merged as peft's
    `merge_and_unload` in LISA's merge script does: W + alpha / r * B @ A (r from lora_A's rows). Returns the
    state under LISA's merged names and the number of merged modules (0 for a merged checkpoint)."""
    merged: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
        match = LORA_KEY.fullmatch(key)
        if match:
            pairs.setdefault(match.group(1), {})[match.group(2)] = value
        else:
            merged[key] = value
    for module, pair in pairs.items():
        weight = merged.get(module + ".weight")
        if weight is None or set(pair) != {"A", "B"}:
            raise KeyMappingError(f"LoRA weights of {module!r} without their base weight or their other half")
        update = pair["B"].float() @ pair["A"].float() * (alpha / pair["A"].shape[0])
        merged[module + ".weight"] = (weight.float() + update).to(weight.dtype)
    return merged, len(pairs)


def split_lisa_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """LISA's keys sorted into {"llava": ..., "sam": ..., "fcs": ...} under the target models' names; raises on
    a key it does not know."""
    parts: dict[str, dict[str, torch.Tensor]] = {"llava": {}, "sam": {}, "fcs": {}}
    unknown = []
    for key, value in state.items():
        if key.startswith("model.visual_model."):
            name = key.removeprefix("model.visual_model.")
            if name in ("pixel_mean", "pixel_std"):  # SAM's normalisation buffers: constants of the preprocessing
                continue
            parts["sam"][sam_key(name)] = value
        elif key.startswith("model.text_hidden_fcs."):
            parts["fcs"][key.removeprefix("model.")] = value
        elif key.startswith("model.mm_projector."):
            parts["llava"]["model.multi_modal_projector.linear." + key.removeprefix("model.mm_projector.")] = value
        elif key.startswith("model.vision_tower."):
            name = key.removeprefix("model.vision_tower.").removeprefix("vision_tower.")
            if not name.endswith("position_ids"):
                parts["llava"]["model.vision_tower." + name.removeprefix("vision_model.")] = value
        elif key.endswith("rotary_emb.inv_freq"):
            continue  # transformers 4.31 saved LLaMA's rotary buffers; recomputed here from the config
        elif re.match(r"model\.(embed_tokens|layers|norm)\.", key):
            parts["llava"]["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            parts["llava"][key] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyMappingError(f"unexpected keys in the LISA checkpoint: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    positional = "prompt_encoder.shared_embedding.positional_embedding"
    if positional in parts["sam"]:  # one matrix, used by the prompt encoder and for the image's positions
        parts["sam"]["shared_image_embedding.positional_embedding"] = parts["sam"][positional]
    return parts


# ------------------------------------------------------------------------------------- configs
def sam_config_from_weights(sam: dict[str, torch.Tensor], decoder_heads: int = 8):
    """The `SamConfig` that the (renamed) SAM weights fix: every size is read off a shape; the mask decoder's
    head count, which no shape fixes, is `decoder_heads` (SAM's 8); its LayerNorms' eps is segment-anything's."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    def count(pattern: str) -> int:
        return len({m.group(1) for k in sam if (m := re.match(pattern, k))})

    patch = sam["vision_encoder.patch_embed.projection.weight"]
    hidden, patch_size = patch.shape[0], patch.shape[-1]
    grid = sam["vision_encoder.pos_embed"].shape[1]
    layers = count(r"vision_encoder\.layers\.(\d+)\.")
    rel = [sam[f"vision_encoder.layers.{i}.attn.rel_pos_h"] for i in range(layers)]
    global_layers = [i for i, r in enumerate(rel) if r.shape[0] == 2 * grid - 1]
    windowed = [r.shape[0] for r in rel if r.shape[0] != 2 * grid - 1]
    window = (windowed[0] + 1) // 2 if windowed else 14
    vision = SamVisionConfig(
        hidden_size=hidden, output_channels=sam["vision_encoder.neck.conv1.weight"].shape[0],
        num_hidden_layers=layers, num_attention_heads=hidden // rel[0].shape[1], image_size=grid * patch_size,
        patch_size=patch_size, window_size=window, global_attn_indexes=global_layers,
        mlp_dim=sam["vision_encoder.layers.0.mlp.lin1.weight"].shape[0],
        num_pos_feats=sam["prompt_encoder.shared_embedding.positional_embedding"].shape[1])
    prompt_dim = sam["prompt_encoder.no_mask_embed.weight"].shape[1]
    prompt = SamPromptEncoderConfig(
        hidden_size=prompt_dim, image_size=grid * patch_size, patch_size=patch_size,
        mask_input_channels=sam["prompt_encoder.mask_embed.conv2.weight"].shape[0],
        num_point_embeddings=count(r"prompt_encoder\.point_embed\.(\d+)\."))
    cross = sam["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape[0]
    decoder = SamMaskDecoderConfig(
        hidden_size=sam["mask_decoder.iou_token.weight"].shape[1],
        mlp_dim=sam["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        num_hidden_layers=count(r"mask_decoder\.transformer\.layers\.(\d+)\."), num_attention_heads=decoder_heads,
        attention_downsample_rate=prompt_dim // cross,
        num_multimask_outputs=sam["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        iou_head_depth=count(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.") + 2,
        iou_head_hidden_dim=sam["mask_decoder.iou_prediction_head.proj_in.weight"].shape[0],
        layer_norm_eps=1e-5)  # segment-anything's two-way transformer: nn.LayerNorm's default (transformers: 1e-6)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def llama_config_from(config: dict[str, Any], llava: dict[str, torch.Tensor]):
    """LLaMA's config from the checkpoint's config.json (LISA writes the LLaVA-LLaMA fields there), the
    vocabulary size from the embedding (LISA's tokens added)."""
    from transformers import LlamaConfig

    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings", "rms_norm_eps", "hidden_act", "rope_theta", "bos_token_id", "eos_token_id",
            "pad_token_id")
    if config.get("rope_scaling"):
        raise KeyMappingError(f"rope_scaling {config['rope_scaling']} is not supported (LISA's LLaMA has none)")
    fields = {k: config[k] for k in keys if config.get(k) is not None}
    rope_theta = fields.pop("rope_theta", 10000.0)
    vocab = llava["model.language_model.embed_tokens.weight"].shape[0]
    return LlamaConfig(vocab_size=vocab, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, **fields)


# ---------------------------------------------------------------------------------- LLaVA side
class SingleLinearProjector(nn.Module):
    """LLaVA v1's `mm_projector`: one Linear from CLIP's width to LLaMA's."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def question(text: str, is_sentence: bool) -> str:
    """LISA's evaluation questions (its ValDataset): long sentences as they are, phrases asked about."""
    text = text.strip()
    if is_sentence:
        return f"{text} Please output segmentation mask."
    return f"What is {text} in this image? Please output segmentation mask."


def llava_v1_prompt(text: str, is_sentence: bool, answer: str | None) -> str:
    """LLaVA v1's conversation (separators " " and "</s>") with the image between <im_start> and <im_end>."""
    user = f"{IM_START}{IMAGE_TOKEN}{IM_END}\n {question(text, is_sentence)}"
    prompt = f"{LLAVA_SYSTEM} USER: {user} ASSISTANT:"
    return prompt + (f" {answer}</s>" if answer is not None else "")


class LlavaLanguage(nn.Module):
    """The LLaVA side of a real LISA: CLIP (feature layer -2, patch tokens) -> single Linear -> LLaMA."""

    def __init__(self, llava: nn.Module, tokenizer: LisaTokenizer, clip_processor: Any, is_sentence: bool = False):
        super().__init__()
        self.vlm, self.tokenizer, self.clip_processor = llava, tokenizer, clip_processor
        self.is_sentence = is_sentence  # set per batch by the adapter from the sample's metadata
        self.sentence_flags: list[bool] | None = None
        self.seg_id = tokenizer.token_id(SEG_TOKEN)
        self.end_id = tokenizer.eos_token_id
        self.answer_word, self.end_word = "ASSISTANT:", "</s>"
        vision = llava.config.vision_config
        self.image_tokens = (vision.image_size // vision.patch_size) ** 2

    @property
    def hidden_size(self) -> int:
        return self.vlm.config.text_config.hidden_size

    def _chunks(self, prompt: str) -> tuple[list[int], list[int]]:
        """LLaVA's `tokenizer_image_token`: each side of <image> tokenised on its own; when the first starts with
        BOS, the second loses its first token (its own BOS)."""
        before, after = prompt.split(IMAGE_TOKEN)
        first, second = self.tokenizer.encode(before), self.tokenizer.encode(after)
        offset = int(bool(first) and first[0] == self.tokenizer.bos_token_id)
        return first, second[offset:]

    def encode(self, images: list[np.ndarray], texts: list[str], with_answer: bool) -> Encoded:
        flags = self.sentence_flags or [self.is_sentence] * len(texts)
        rows, image_rows, label_rows = [], [], []
        for text, flag in zip(texts, flags, strict=True):
            first, second = self._chunks(llava_v1_prompt(text, flag, None))
            ids = first + [0] * self.image_tokens + second
            labels = [-100] * len(ids)
            if with_answer:
                full_first, full_second = self._chunks(llava_v1_prompt(text, flag, LISA_ANSWER))
                full = full_first + [0] * self.image_tokens + full_second
                if full[: len(ids)] != ids:  # the answer's labels must follow the prompt's tokens exactly
                    raise ValueError(f"the tokenizer merges the prompt of {text!r} with its answer")
                answer = full[len(ids):]
                ids, labels = ids + answer, labels + answer
            rows.append(ids)
            image_rows.append([False] * len(first) + [True] * self.image_tokens + [False] * (len(ids) - len(first)
                                                                                           - self.image_tokens))
            label_rows.append(labels)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        image_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, m, lab) in enumerate(zip(rows, image_rows, label_rows, strict=True)):
            ids[i, : len(r)], image_mask[i, : len(r)], labels[i, : len(r)] = torch.tensor(r), torch.tensor(m), torch.tensor(lab)
        lengths = torch.tensor([len(r) for r in rows])
        pixels = self.clip_processor(images=[np.asarray(image) for image in images], return_tensors="pt")["pixel_values"]
        attention = (torch.arange(width)[None] < lengths[:, None]).long()
        inputs = {"input_ids": ids, "attention_mask": attention, "image_mask": image_mask, "pixel_values": pixels}
        return Encoded(inputs, labels if with_answer else None, lengths)

    def run(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.vlm.model
        dtype = model.multi_modal_projector.linear.weight.dtype
        vision = model.vision_tower(inputs["pixel_values"].to(dtype), output_hidden_states=True)
        features = model.multi_modal_projector(vision.hidden_states[-2][:, 1:])  # LLaVA: layer -2, no CLS
        ids, image_mask = inputs["input_ids"], inputs["image_mask"]
        embeds = model.language_model.embed_tokens(ids.masked_fill(image_mask, 0))
        embeds = embeds.masked_scatter(image_mask[..., None], features.to(embeds.dtype))
        hidden = model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                      use_cache=False).last_hidden_state
        return self.vlm.lm_head(hidden), hidden

    def decode_ids(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode([int(i) for i in ids])


# ------------------------------------------------------------------------------------------ load
CLIP_TOWER_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def clip_tower_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision tower's weights of a CLIP directory (a CLIPModel's or a CLIPVisionModel's, with or without the
    `vision_model.` level), named as transformers' CLIPVisionModel names them now (no `vision_model.`)."""
    tower = {}
    for key, value in state.items():
        name = key.removeprefix("vision_model.")
        if name.startswith(CLIP_TOWER_PARTS) and not name.endswith("position_ids"):
            tower[name] = value
    if not tower:
        raise KeyMappingError("the CLIP directory holds no vision tower weights (vision_model.* or embeddings.*)")
    return tower


def _fill(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise KeyMappingError(f"{what}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    module.load_state_dict(state, strict=True)


def load_lisa(directory: str | Path, clip: str | Path | None, *, dtype: torch.dtype = torch.float32,
              sam_decoder_heads: int = 8, lora_alpha: float = 16.0, config: LisaConfig | None = None) -> Lisa:
    """A real LISA checkpoint as a `Lisa` (LLaVA side + SAM + text_hidden_fcs), every key checked.

    `clip`: the CLIP ViT-L/14 directory (its config, weights unless the checkpoint carries the tower, and image
    processor); LISA's config.json names it in `mm_vision_tower` / `vision_tower`, used when `clip` is None and
    it is a local directory. An unmerged (LoRA) checkpoint is merged with `lora_alpha` (LISA's default 16)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SamModel,
    )
    from transformers.initialization import no_init_weights

    directory = Path(directory)
    record = read_json_object(directory / "config.json")
    clip = clip or record.get("mm_vision_tower") or record.get("vision_tower")
    if not clip or not Path(clip).is_dir():
        raise FileNotFoundError(f"{directory}: LISA needs the CLIP ViT-L/14 directory (model-arg clip=DIR); "
                                f"its config names {clip!r}, which is not a local directory")
    clip = Path(clip)
    tokenizer = LisaTokenizer(directory)  # before the weights: a missing file or package fails at once
    state, merged_lora = merge_lora(read_state_dict(directory), lora_alpha)
    parts = split_lisa_state(state)
    if not any(k.startswith("model.vision_tower.") for k in parts["llava"]):  # the merged checkpoint dropped it
        for key, value in clip_tower_state(read_state_dict(clip)).items():
            parts["llava"]["model.vision_tower." + key] = value
    vision = CLIPVisionConfig.from_pretrained(clip)
    text = llama_config_from(record, parts["llava"])
    if len(tokenizer) != text.vocab_size:
        raise KeyMappingError(f"{directory}: the tokenizer has {len(tokenizer)} tokens, the embedding "
                              f"{text.vocab_size} rows (LISA resizes it to its tokenizer)")
    llava_config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-2,
                               vision_feature_select_strategy="default", image_token_id=0)
    try:
        sam_config = sam_config_from_weights(parts["sam"], sam_decoder_heads)
    except KeyError as error:  # a weight that fixes a size is absent
        raise KeyMappingError(f"{directory} (SAM): missing keys [{error.args[0]!r}]") from None
    def build_llava() -> nn.Module:
        llava = LlavaForConditionalGeneration(llava_config)
        llava.model.multi_modal_projector = SingleLinearProjector(vision.hidden_size, text.hidden_size)
        return llava

    shapes = {key: list(value.shape) for key, value in parts["llava"].items()}  # before allocating: sizes fit
    check_layer_counts(record, shapes, directory / "config.json")
    check_parameter_count(build_llava, shapes, directory / "config.json")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # allocate the 7B once, in the dtype it runs in
    try:
        with no_init_weights():
            llava = build_llava()
            sam = SamModel(sam_config)
    finally:
        torch.set_default_dtype(default_dtype)
    _fill(llava, parts["llava"], f"{directory} (LLaVA)")
    _fill(sam, parts["sam"], f"{directory} (SAM)")
    processor = CLIPImageProcessorPil.from_pretrained(clip)
    language = LlavaLanguage(llava, tokenizer, processor)
    model = Lisa(language, sam, config or LisaConfig(foundation=str(directory), sam=str(directory),
                                                     language_adaptation="merged", max_new_tokens=32))
    fcs = {k.removeprefix("text_hidden_fcs."): v for k, v in parts["fcs"].items()}
    _fill(model.text_hidden_fcs, fcs, f"{directory} (text_hidden_fcs)")
    model.merged_lora_modules = merged_lora
    return model.to(dtype).eval()
