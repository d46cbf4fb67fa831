"""Real LISA checkpoints as LISA's own scripts write them: a tiny checkpoint in the layout of LISA's
`merge_lora_weights_and_save_hf_model.py` under transformers 4.31 (LISA-7B's key names, shapes scaled down, bf16,
sharded `pytorch_model-0000N-of-0000M.bin` + index, LLaMA's `rotary_emb.inv_freq` buffers, the CLIP tower dropped,
the slow tokenizer files only) must load through `bench run --model lisa --checkpoint DIR --model-arg clip=DIR`,
tokenise as LISA does (ids pinned to transformers 4.31's), and an unmerged (LoRA) checkpoint must load as
peft's merge gives it."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from baselines.lisa.keymap import KeyMappingError, load_lisa, read_state_dict
from baselines.lisa.tokenizer import LisaTokenizer, MissingDependencyError
from bench.cli import main

LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "hidden_act": "silu"}
CLIP_HIDDEN, SAM_DIM, SAM_VISION, GRID, PATCH = 24, 32, 32, 8, 8
IMAGE = -200  # LLaVA's IMAGE_TOKEN_INDEX, where tokenizer_image_token puts the image

# ------------------------------------------------------------------------------------- tokenizer
# A fixed sentencepiece model shaped like LLaMA's (<unk> <s> </s> at 0-2, 256 byte pieces, byte fallback, dummy
# prefix): whole-word pieces for the prompt's words, single characters for the rest.
WORDS = ("A chat between a curious human and an artificial intelligence assistant The gives helpful detailed polite "
         "answers to the questions USER What is in this image Please output segmentation mask red thing on left "
         "When enjoying sunny day at beach what item could provide shade protection from sun rays").split()
PIECES = ["▁" + word for word in WORDS] + ["▁ASS", "IST", "ANT", "▁.", "'s", "▁"]
PHRASE = "the red thing"
SENTENCE = "When enjoying a sunny day at the beach, what item could provide shade and protection from the sun's rays?"
# transformers 4.31.0's ids (LlamaTokenizer, use_fast=False) for LISA's validation conversation through LLaVA's
# tokenizer_image_token, with the tokenizer set up as train_ds.py does and saved as the merge script does
# (computed once with transformers 4.31.0 and sentencepiece on this model; identical before and after the save).
SYSTEM_IDS = [1, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 327, 270, 269, 271, 272, 325, 273, 325, 265,
              274, 275, 276, 277, 264, 312, 278, 327, 279, 339, 409]  # ... "▁USER", ":", "<im_start>"
LISA_IDS = {
    (PHRASE, True): SYSTEM_IDS + [IMAGE, 410, 280, 281, 277, 289, 290, 282, 283, 284, 344, 285, 286, 287, 288, 327,
                                  308, 309, 310, 339, 408, 311, 2],
    (SENTENCE, True): SYSTEM_IDS + [IMAGE, 410, 293, 294, 262, 295, 296, 297, 277, 298, 325, 299, 300, 301, 302, 303,
                                    265, 304, 305, 277, 306, 312, 307, 344, 285, 286, 287, 288, 327, 308, 309, 310,
                                    339, 408, 311, 2],
    # "legacy": false in tokenizer_config.json: 4.31 drops the "▁" of the piece after a token ("What" -> <unk>)
    (PHRASE, False): SYSTEM_IDS + [IMAGE, 410, 0, 281, 277, 289, 290, 282, 283, 284, 344, 285, 286, 287, 288, 327,
                                   308, 309, 310, 339, 408, 327, 2],
}


def sentencepiece_model() -> bytes:
    from sentencepiece import sentencepiece_model_pb2 as pb

    model, piece = pb.ModelProto(), pb.ModelProto.SentencePiece
    for text, kind in (("<unk>", piece.UNKNOWN), ("<s>", piece.CONTROL), ("</s>", piece.CONTROL)):
        model.pieces.add(piece=text, score=0.0, type=kind)
    for byte in range(256):
        model.pieces.add(piece=f"<0x{byte:02X}>", score=0.0, type=piece.BYTE)
    for text in PIECES:
        model.pieces.add(piece=text, score=-2.0, type=piece.NORMAL)
    for text in (chr(c) for c in range(33, 127)):
        if text not in PIECES:
            model.pieces.add(piece=text, score=-6.0, type=piece.NORMAL)
    spec, normalizer = model.trainer_spec, model.normalizer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.UNIGRAM, len(model.pieces), True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    normalizer.name, normalizer.add_dummy_prefix = "identity", True
    normalizer.remove_extra_whitespaces, normalizer.escape_whitespaces = False, True
    return model.SerializeToString()


def write_tokenizer(directory: Path, legacy: bool = True, lisa_tokens: bool = True) -> int:
    """LISA's tokenizer files as transformers 4.31 saves them (LLaVA's without added_tokens.json: `lisa_tokens`
    False); returns the vocabulary size LISA resizes the embeddings to."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(sentencepiece_model())

    def token(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    specials = {"bos_token": token("<s>"), "eos_token": token("</s>"), "unk_token": token("<unk>")}
    config = {"add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "legacy": legacy, "model_max_length": 512, "pad_token": None, "padding_side": "right",
              "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
              **{name: {"__type": "AddedToken", **value} for name, value in specials.items()}}
    files = {"tokenizer_config.json": config, "special_tokens_map.json": {**specials, "pad_token": "<unk>"}}
    if lisa_tokens:
        files["added_tokens.json"] = {"[SEG]": 408, "<im_start>": 409, "<im_end>": 410}
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    return 411


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


def inv_freq() -> torch.Tensor:
    head = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    return 1.0 / 10000 ** (torch.arange(0, head, 2).float() / head)


def lisa_config(clip: Path, vocab: int, architecture: str = "LISAForCausalLM") -> dict:
    """config.json as LISAForCausalLM.save_pretrained writes it under 4.31 (LLaVA-LLaMA fields + LISA's)."""
    return {"architectures": [architecture], "model_type": "llava", "vocab_size": vocab, **LLAMA,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "pretraining_tp": 1, "rope_scaling": None,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.31.0",
            "use_cache": False, "mm_vision_tower": str(clip), "vision_tower": str(clip), "mm_hidden_size": CLIP_HIDDEN,
            "mm_use_im_start_end": True, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
            "out_dim": SAM_DIM, "train_mask_decoder": True, "use_mm_proj": True}


def save_sharded(state: dict[str, torch.Tensor], directory: Path, shards: int = 2) -> None:
    """`save_pretrained`'s .bin layout: pytorch_model-0000N-of-0000M.bin and pytorch_model.bin.index.json."""
    keys, weight_map = list(state), {}
    for n in range(shards):
        name = f"pytorch_model-{n + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key] for key in keys[n::shards]}
        torch.save(part, directory / name)
        weight_map |= dict.fromkeys(part, name)
    total = sum(v.numel() * v.element_size() for v in state.values())
    (directory / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}), encoding="utf-8")


def merged_checkpoint(directory: Path, clip: Path, state: dict[str, torch.Tensor]) -> Path:
    """What LISA's merge script leaves: config.json, the bf16 state dict without the CLIP tower (with 4.31's
    persistent inv_freq buffers) in two .bin shards + index, the slow tokenizer files."""
    directory.mkdir(parents=True)
    vocab = write_tokenizer(directory)
    (directory / "config.json").write_text(json.dumps(lisa_config(clip, vocab)), encoding="utf-8")
    bf16 = {key: value.to(torch.bfloat16) for key, value in state.items()}
    bf16 |= {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq() for i in range(LLAMA["num_hidden_layers"])}
    save_sharded(bf16, directory)
    return directory


@pytest.fixture(scope="module")
def tiny_lisa(tmp_path_factory):
    root = tmp_path_factory.mktemp("lisa")
    clip = root / "clip"
    write_clip(clip)
    state = lisa_state(411)
    lisa = merged_checkpoint(root / "LISA-7B-tiny", clip, state)
    return {"lisa": lisa, "clip": clip, "state": {k: v.to(torch.bfloat16).float() for k, v in state.items()}}


def llava_ids(model, text: str, is_sentence: bool) -> list[int]:
    """The port's teacher-forced ids with the image's positions collapsed to LLaVA's one IMAGE index."""
    model.language.sentence_flags = [is_sentence]
    encoded = model.language.encode([np.zeros((8, 8, 3), np.uint8)], [text], with_answer=True)
    ids, image = encoded.inputs["input_ids"][0].tolist(), encoded.inputs["image_mask"][0].tolist()
    start = image.index(True)
    return ids[:start] + [IMAGE] + ids[start + sum(image):]


# ------------------------------------------------------------------------------------------ tests
def test_lisa_merge_script_output_runs_through_bench_run(tiny_lisa, tmp_path):
    """LISA's layout as its merge script saves it (.bin shards + index, inv_freq buffers, slow tokenizer only)."""
    files = sorted(p.name for p in tiny_lisa["lisa"].iterdir())
    assert "tokenizer.json" not in files and "tokenizer.model" in files and "pytorch_model.bin.index.json" in files
    assert any(".rotary_emb.inv_freq" in key for key in read_state_dict(tiny_lisa["lisa"]))
    out = tmp_path / "run"
    code = main(["run", "--suite", "synthref", "synthreason", "--split", "val", "--limit", "3", "--model", "lisa",
                 "--checkpoint", str(tiny_lisa["lisa"]), "--model-arg", f"clip={tiny_lisa['clip']}",
                 "--bootstrap", "0", "--no-progress", "--out", str(out)])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    lisa = run["model_config"]["lisa"]
    assert run["status"] == "complete" and lisa["layout"].startswith("lisa-7b")
    assert lisa["language_adaptation"] == "merged" and lisa["lora_modules_merged_at_load"] == 0
    assert "lower()" in lisa["text"]
    for suite in ("synthref", "synthreason"):
        split = json.loads((out / f"metrics.{suite}.json").read_text())["splits"]["val"]
        assert split["n"] == 3 and split["n_failed"] == 0


@pytest.mark.parametrize(("text", "legacy"), list(LISA_IDS))
def test_prompt_ids_are_lisas(tiny_lisa, tmp_path, text, legacy):
    """LISA's ids (transformers 4.31, use_fast=False): no whitespace pieces around [SEG], <im_start>, <im_end>."""
    directory = tiny_lisa["lisa"]
    if not legacy:
        directory = tmp_path / "legacy-false"
        shutil.copytree(tiny_lisa["lisa"], directory)
        write_tokenizer(directory, legacy=False)
    model = load_lisa(directory, tiny_lisa["clip"])
    assert llava_ids(model, text, is_sentence=text == SENTENCE) == LISA_IDS[(text, legacy)]
    tokenizer = model.language.tokenizer
    assert tokenizer.tokenize("ASSISTANT: [SEG].</s>") == ["▁ASS", "IST", "ANT", ":", "[SEG]", "▁." if legacy else ".",
                                                             "</s>"]


def test_a_llava_tokenizer_gets_lisas_tokens_as_train_ds_adds_them(tmp_path):
    write_tokenizer(tmp_path / "llava", lisa_tokens=False)
    tokenizer = LisaTokenizer(tmp_path / "llava")
    assert [tokenizer.token_id(t) for t in ("[SEG]", "<im_start>", "<im_end>")] == [408, 409, 410]
    assert len(tokenizer) == 411 and tokenizer.pad_token_id == tokenizer.unk_token_id == 0


def test_missing_tokenizer_package_or_file_is_named(tiny_lisa, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "lisa"
    shutil.copytree(tiny_lisa["lisa"], copy)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match="'sentencepiece'"):
        LisaTokenizer(copy)
    assert main(["run", "--suite", "synthref", "--split", "val", "--limit", "1", "--model", "lisa", "--checkpoint",
                 str(copy), "--model-arg", f"clip={tiny_lisa['clip']}", "--out", str(tmp_path / "run")]) == 2
    assert "pip install sentencepiece" in capsys.readouterr().err
    monkeypatch.undo()
    (copy / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        LisaTokenizer(copy)


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
    # segment-anything's LayerNorms: nn.LayerNorm's 1e-5 in the two-way transformer, LayerNorm2d's 1e-6 elsewhere
    decoder = model.sam.mask_decoder
    assert decoder.transformer.layers[0].layer_norm1.eps == decoder.transformer.layer_norm_final_attn.eps == 1e-5
    assert decoder.upscale_layer_norm.eps == model.sam.vision_encoder.neck.layer_norm1.eps == 1e-6


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
    # the texts as LISA's evaluation gives them: RefCOCO's stripped and lowercased, ReasonSeg's stripped
    seen = []
    model.model.predict_logits = lambda images, texts, mode: (seen.extend(texts), ([None] * len(texts), []))[1]
    refer = Sample("r0", "val", tmp_path / "x.png", " The RED Thing ", 30, 45, load_target=lambda: None)
    model.predict([ModelInput(sample, image, " Which One? "), ModelInput(refer, image, refer.text)])
    assert seen == ["Which One?", "the red thing"]


def test_unknown_or_missing_keys_are_refused(tiny_lisa, tmp_path):
    for change in ("extra", "missing"):
        copy = tmp_path / change
        shutil.copytree(tiny_lisa["lisa"], copy)
        state = dict(tiny_lisa["state"])
        if change == "extra":
            state["model.something_else.weight"] = torch.zeros(1)
        else:
            del state["model.visual_model.mask_decoder.iou_token.weight"]
        for file in copy.glob("pytorch_model*"):
            file.unlink()
        save_file(state, copy / "model.safetensors")
        with pytest.raises(KeyMappingError, match="something_else" if change == "extra" else "iou_token"):
            load_lisa(copy, tiny_lisa["clip"])


def test_bin_shards_load_weights_only_and_as_their_index_says(tiny_lisa, tmp_path):
    copy = tmp_path / "bin"
    shutil.copytree(tiny_lisa["lisa"], copy)
    assert len(read_state_dict(copy)) == len(tiny_lisa["state"]) + LLAMA["num_hidden_layers"]  # + inv_freq
    # any object but tensors and plain containers (here an importable class) is refused, naming the file
    shard = copy / "pytorch_model-00002-of-00002.bin"
    torch.save({"x": argparse.Namespace(code="would run")}, shard)
    with pytest.raises(KeyMappingError, match=r"pytorch_model-00002-of-00002\.bin: refused by .*weights_only"):
        read_state_dict(copy)
    shard.unlink()  # a shard the index names but that is not there
    with pytest.raises(FileNotFoundError, match="pytorch_model-00002-of-00002.bin"):
        read_state_dict(copy)


def test_unmerged_lora_checkpoint_loads_as_peft_merges_it(tiny_lisa, tmp_path):
    """LISA's training output before its merge script (the PeftModel's state dict through DeepSpeed's zero_to_fp32:
    `base_model.model.*`, LoRA r 8 on q_proj/v_proj, the CLIP tower included) beside LLaVA's config and tokenizer
    (LISA's tokens added at load): merged as peft's merge_and_unload does, with LISA's alpha 16."""
    import peft

    generator = torch.Generator().manual_seed(5)
    state, unmerged, expected = tiny_lisa["state"], {}, {}
    for key, weight in state.items():
        unmerged["base_model.model." + key] = weight
        if not (key.startswith("model.layers.") and key.endswith(("q_proj.weight", "v_proj.weight"))):
            continue
        a = 0.1 * torch.randn(8, weight.shape[1], generator=generator)
        b = 0.1 * torch.randn(weight.shape[0], 8, generator=generator)
        module = key.removesuffix(".weight")
        unmerged[f"base_model.model.{module}.lora_A.default.weight"] = a
        unmerged[f"base_model.model.{module}.lora_B.default.weight"] = b
        holder = torch.nn.Module()
        holder.proj = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        holder.proj.weight.data.copy_(weight)
        peft.inject_adapter_in_model(peft.LoraConfig(r=8, lora_alpha=16, target_modules=["proj"]), holder)
        holder.proj.lora_A["default"].weight.data.copy_(a)
        holder.proj.lora_B["default"].weight.data.copy_(b)
        holder.proj.merge()
        expected[key.replace("model.layers.", "model.language_model.layers.")] = holder.proj.base_layer.weight.detach()
    # LISA's CLIPVisionTower holds a 4.31 CLIPVisionModel (`vision_model.*`); its weights differ from the directory's
    tower = {"vision_model." + k.removeprefix("vision_model."): v + 1.0 for k, v in read_state_dict(tiny_lisa["clip"]).items()}
    unmerged |= {"base_model.model.model.vision_tower.vision_tower." + k: v for k, v in tower.items()}
    directory = tmp_path / "lisa-lora"
    vocab = write_tokenizer(directory, lisa_tokens=False)
    (directory / "config.json").write_text(
        json.dumps(lisa_config(tiny_lisa["clip"], vocab, "LlavaLlamaForCausalLM")), encoding="utf-8")
    torch.save(unmerged, directory / "pytorch_model.bin")

    model = load_lisa(directory, tiny_lisa["clip"])
    weights = model.language.vlm.state_dict()
    assert model.merged_lora_modules == len(expected) == 2 * LLAMA["num_hidden_layers"]
    for key, value in expected.items():
        assert torch.allclose(weights[key], value, atol=1e-6), key
        assert not torch.allclose(value, state[key.replace("language_model.", "")])  # the adapter changed it
    assert torch.equal(weights["model.language_model.layers.0.self_attn.k_proj.weight"],
                       state["model.layers.0.self_attn.k_proj.weight"])
    assert torch.equal(weights["model.vision_tower.post_layernorm.weight"],
                       tower["vision_model.post_layernorm.weight"])
    image = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    logits, _ = model.predict_logits([image], ["the red thing"], "teacher")
    assert logits[0].shape == (20, 30) and torch.isfinite(logits[0]).all()
    from bench.models.base import MODELS

    recorded = MODELS.get("lisa")(checkpoint=str(directory), clip=str(tiny_lisa["clip"])).config()["lisa"]
    assert recorded["lora_modules_merged_at_load"] == 4 and recorded["lora_alpha"] == 16.0
