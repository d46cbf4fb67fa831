"""Real LISA checkpoints: a tiny checkpoint written here with LISA-7B's key names (LLaVA LLaMA + single-Linear
mm_projector, SAM under model.visual_model.* with segment-anything's names, text_hidden_fcs), shapes scaled down,
must load onto transformers' Llava + SamModel with no missing or unexpected key and predict a mask."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from baselines.lisa.keymap import LLAVA_SYSTEM, KeyMappingError, load_lisa, read_state_dict

LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "hidden_act": "silu"}
CLIP_HIDDEN, SAM_DIM, SAM_VISION, GRID, PATCH = 24, 32, 32, 8, 8


def tokenizer_words() -> list[str]:
    text = LLAVA_SYSTEM + " USER ASSISTANT What is in this image ? Please output segmentation mask . the red thing"
    return sorted(set(re.findall(r"\w+|[^\w\s]", text)))


def write_tokenizer(directory: Path) -> int:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in tokenizer_words():
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<unk>")
    tokenizer.add_tokens(["[SEG]"])  # LISA adds [SEG], then LLaVA's image start/end tokens
    tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


def write_clip(directory: Path) -> None:
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(1)
    config = CLIPVisionConfig(hidden_size=CLIP_HIDDEN, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=2, image_size=28, patch_size=14)
    CLIPVisionModel(config).save_pretrained(directory, safe_serialization=True)
    CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(directory)


def lisa_state(vocab: int) -> dict[str, torch.Tensor]:
    """LISA-7B's keys (LISAForCausalLM: LLaVA-LLaMA + SAM ViT-H + text_hidden_fcs), shapes scaled down."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def put(name: str, *shape: int) -> None:
        state[name] = 0.1 * torch.randn(*shape, generator=g)

    h, f = LLAMA["hidden_size"], LLAMA["intermediate_size"]
    put("model.embed_tokens.weight", vocab, h)
    for i in range(LLAMA["num_hidden_layers"]):
        for proj in ("q", "k", "v", "o"):
            put(f"model.layers.{i}.self_attn.{proj}_proj.weight", h, h)
        put(f"model.layers.{i}.mlp.gate_proj.weight", f, h)
        put(f"model.layers.{i}.mlp.up_proj.weight", f, h)
        put(f"model.layers.{i}.mlp.down_proj.weight", h, f)
        put(f"model.layers.{i}.input_layernorm.weight", h)
        put(f"model.layers.{i}.post_attention_layernorm.weight", h)
    put("model.norm.weight", h)
    put("lm_head.weight", vocab, h)
    put("model.mm_projector.weight", h, CLIP_HIDDEN)
    put("model.mm_projector.bias", h)
    put("model.text_hidden_fcs.0.0.weight", h, h)
    put("model.text_hidden_fcs.0.0.bias", h)
    put("model.text_hidden_fcs.0.2.weight", SAM_DIM, h)
    put("model.text_hidden_fcs.0.2.bias", SAM_DIM)
    # SAM with segment-anything's own module names
    sam, v, d = "model.visual_model.", SAM_VISION, SAM_DIM
    put(sam + "image_encoder.patch_embed.proj.weight", v, 3, PATCH, PATCH)
    put(sam + "image_encoder.patch_embed.proj.bias", v)
    put(sam + "image_encoder.pos_embed", 1, GRID, GRID, v)
    for i, size in enumerate((4, GRID)):  # block 0 windowed (window 4), block 1 global
        block = f"{sam}image_encoder.blocks.{i}."
        for norm in ("norm1", "norm2"):
            put(block + f"{norm}.weight", v)
            put(block + f"{norm}.bias", v)
        put(block + "attn.qkv.weight", 3 * v, v)
        put(block + "attn.qkv.bias", 3 * v)
        put(block + "attn.proj.weight", v, v)
        put(block + "attn.proj.bias", v)
        put(block + "attn.rel_pos_h", 2 * size - 1, v // 2)  # 2 heads
        put(block + "attn.rel_pos_w", 2 * size - 1, v // 2)
        put(block + "mlp.lin1.weight", 2 * v, v)
        put(block + "mlp.lin1.bias", 2 * v)
        put(block + "mlp.lin2.weight", v, 2 * v)
        put(block + "mlp.lin2.bias", v)
    put(sam + "image_encoder.neck.0.weight", d, v, 1, 1)
    put(sam + "image_encoder.neck.1.weight", d)
    put(sam + "image_encoder.neck.1.bias", d)
    put(sam + "image_encoder.neck.2.weight", d, d, 3, 3)
    put(sam + "image_encoder.neck.3.weight", d)
    put(sam + "image_encoder.neck.3.bias", d)
    prompt = sam + "prompt_encoder."
    put(prompt + "pe_layer.positional_encoding_gaussian_matrix", 2, d // 2)
    for i in range(4):
        put(prompt + f"point_embeddings.{i}.weight", 1, d)
    put(prompt + "not_a_point_embed.weight", 1, d)
    put(prompt + "no_mask_embed.weight", 1, d)
    for name, shape in (("0", (4, 1, 2, 2)), ("1", (4,)), ("3", (16, 4, 2, 2)), ("4", (16,)), ("6", (d, 16, 1, 1))):
        put(prompt + f"mask_downscaling.{name}.weight", *shape)
        put(prompt + f"mask_downscaling.{name}.bias", shape[0])
    decoder = sam + "mask_decoder."

    def attention(prefix: str, internal: int) -> None:
        for proj in ("q", "k", "v"):
            put(prefix + f"{proj}_proj.weight", internal, d)
            put(prefix + f"{proj}_proj.bias", internal)
        put(prefix + "out_proj.weight", d, internal)
        put(prefix + "out_proj.bias", d)

    for i in range(2):
        layer = f"{decoder}transformer.layers.{i}."
        attention(layer + "self_attn.", d)
        attention(layer + "cross_attn_token_to_image.", d // 2)
        attention(layer + "cross_attn_image_to_token.", d // 2)
        put(layer + "mlp.lin1.weight", 64, d)
        put(layer + "mlp.lin1.bias", 64)
        put(layer + "mlp.lin2.weight", d, 64)
        put(layer + "mlp.lin2.bias", d)
        for norm in range(1, 5):
            put(layer + f"norm{norm}.weight", d)
            put(layer + f"norm{norm}.bias", d)
    attention(decoder + "transformer.final_attn_token_to_image.", d // 2)
    put(decoder + "transformer.norm_final_attn.weight", d)
    put(decoder + "transformer.norm_final_attn.bias", d)
    put(decoder + "iou_token.weight", 1, d)
    put(decoder + "mask_tokens.weight", 4, d)
    put(decoder + "output_upscaling.0.weight", d, d // 4, 2, 2)
    put(decoder + "output_upscaling.0.bias", d // 4)
    put(decoder + "output_upscaling.1.weight", d // 4)
    put(decoder + "output_upscaling.1.bias", d // 4)
    put(decoder + "output_upscaling.3.weight", d // 4, d // 8, 2, 2)
    put(decoder + "output_upscaling.3.bias", d // 8)
    for head, out in [(f"output_hypernetworks_mlps.{i}", d // 8) for i in range(4)] + [("iou_prediction_head", 4)]:
        for layer, (rows, cols) in enumerate(((d, d), (d, d), (out, d))):
            put(f"{decoder}{head}.layers.{layer}.weight", rows, cols)
            put(f"{decoder}{head}.layers.{layer}.bias", rows)
    state[sam + "pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state[sam + "pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    return state


@pytest.fixture(scope="module")
def tiny_lisa(tmp_path_factory):
    root = tmp_path_factory.mktemp("lisa")
    clip, lisa = root / "clip", root / "LISA-7B-tiny"
    write_clip(clip)
    lisa.mkdir()
    vocab = write_tokenizer(lisa)
    config = {"architectures": ["LISAForCausalLM"], "model_type": "llava", "vocab_size": vocab, **LLAMA,
              "mm_vision_tower": str(clip), "mm_use_im_start_end": True, "mm_vision_select_layer": -2,
              "out_dim": SAM_DIM, "train_mask_decoder": True}
    (lisa / "config.json").write_text(json.dumps(config), encoding="utf-8")
    state = lisa_state(vocab)
    save_file(state, lisa / "model.safetensors")
    return {"lisa": lisa, "clip": clip, "state": state}


def test_every_key_maps_and_lands_where_it_belongs(tiny_lisa):
    model = load_lisa(tiny_lisa["lisa"], None)  # CLIP found through config.json's mm_vision_tower
    state, sam, llava = tiny_lisa["state"], model.sam.state_dict(), model.language.vlm.state_dict()
    pairs = {
        "mask_decoder.iou_prediction_head.proj_in.weight": "mask_decoder.iou_prediction_head.layers.0.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight": "mask_decoder.iou_prediction_head.layers.1.weight",
        "mask_decoder.output_hypernetworks_mlps.2.proj_out.weight": "mask_decoder.output_hypernetworks_mlps.2.layers.2.weight",
        "mask_decoder.upscale_conv2.weight": "mask_decoder.output_upscaling.3.weight",
        "mask_decoder.transformer.layer_norm_final_attn.weight": "mask_decoder.transformer.norm_final_attn.weight",
        "mask_decoder.transformer.layers.1.layer_norm4.bias": "mask_decoder.transformer.layers.1.norm4.bias",
        "prompt_encoder.mask_embed.conv3.weight": "prompt_encoder.mask_downscaling.6.weight",
        "prompt_encoder.point_embed.3.weight": "prompt_encoder.point_embeddings.3.weight",
        "shared_image_embedding.positional_embedding": "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "vision_encoder.neck.layer_norm1.weight": "image_encoder.neck.1.weight",
        "vision_encoder.layers.1.layer_norm2.bias": "image_encoder.blocks.1.norm2.bias",
        "vision_encoder.patch_embed.projection.weight": "image_encoder.patch_embed.proj.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(sam[ours], state["model.visual_model." + theirs]), ours
    assert torch.equal(llava["model.multi_modal_projector.linear.weight"], state["model.mm_projector.weight"])
    assert torch.equal(llava["model.language_model.layers.1.mlp.down_proj.weight"],
                       state["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(llava["lm_head.weight"], state["lm_head.weight"])
    clip = {k.removeprefix("vision_model."): v for k, v in read_state_dict(tiny_lisa["clip"]).items()}
    assert torch.equal(llava["model.vision_tower.post_layernorm.weight"], clip["post_layernorm.weight"])
    assert torch.equal(model.text_hidden_fcs[0][2].weight, state["model.text_hidden_fcs.0.2.weight"])
    config = model.sam.config
    assert config.vision_config.global_attn_indexes == [1] and config.vision_config.window_size == 4
    assert config.vision_config.num_attention_heads == 2 and config.vision_config.image_size == GRID * PATCH


def test_predicts_a_mask_of_the_image_size(tiny_lisa):
    model = load_lisa(tiny_lisa["lisa"], tiny_lisa["clip"])
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    logits, answers = model.predict_logits([image, image[:40]], ["the red thing", "the thing"], "teacher")
    assert [tuple(x.shape) for x in logits] == [(50, 70), (40, 70)]
    assert answers[0].startswith("[SEG]")
    encoded = model.language.encode([image], ["the red thing"], with_answer=True)
    ids = encoded.inputs["input_ids"][0]
    assert int(encoded.inputs["image_mask"].sum()) == 4  # CLIP's patch tokens, 2 x 2 at 28 px
    labelled = ids[encoded.labels[0] != -100].tolist()
    assert labelled[0] == model.language.seg_id and labelled[-1] == model.language.end_id
    generated, _ = model.predict_logits([image], ["the red thing"], "generate")
    assert generated[0] is None or tuple(generated[0].shape) == (50, 70)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bfloat16: what dtype=auto picks on CUDA
def test_the_harness_adapter_runs_a_real_layout(tiny_lisa, tmp_path, dtype):
    from bench.models.base import MODELS, ModelInput
    from bench.suites.base import Sample

    model = MODELS.get("lisa")(checkpoint=str(tiny_lisa["lisa"]), clip=str(tiny_lisa["clip"]), dtype=dtype)
    image = np.full((30, 45, 3), 200, dtype=np.uint8)
    sample = Sample("s0", "val", tmp_path / "x.png", "the red thing", 30, 45, load_target=lambda: None,
                    meta={"is_sentence": True})
    (mask,) = model.predict([ModelInput(sample, image, sample.text)])
    assert mask.shape == (30, 45) and mask.dtype == bool
    assert model.config()["lisa"]["layout"].startswith("lisa-7b") and model.config()["lisa"]["dtype"] == dtype
    model.seg_token = "generate"
    (mask,) = model.predict([ModelInput(sample, image, sample.text)])
    assert mask.shape == (30, 45)


def test_unknown_or_missing_keys_are_refused(tiny_lisa, tmp_path):
    for change in ("extra", "missing"):
        copy = tmp_path / change
        shutil.copytree(tiny_lisa["lisa"], copy)
        state = dict(tiny_lisa["state"])
        if change == "extra":
            state["model.something_else.weight"] = torch.zeros(1)
        else:
            del state["model.visual_model.mask_decoder.iou_token.weight"]
        save_file(state, copy / "model.safetensors")
        with pytest.raises(KeyMappingError, match="something_else" if change == "extra" else "iou_token"):
            load_lisa(copy, tiny_lisa["clip"])


def test_bin_checkpoints_load_weights_only(tiny_lisa, tmp_path):
    copy = tmp_path / "bin"
    shutil.copytree(tiny_lisa["lisa"], copy)
    (copy / "model.safetensors").unlink()
    torch.save(tiny_lisa["state"], copy / "pytorch_model.bin")
    assert len(read_state_dict(copy)) == len(tiny_lisa["state"])

    # any object but tensors and plain containers (here an importable class) is refused by weights_only
    torch.save({"x": argparse.Namespace(code="would run")}, copy / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        read_state_dict(copy)
