"""The tiny LISA and its SAM: shapes, LISA's LoRA (peft) and what it trains, the [SEG] prompt reaching SAM's
decoder, a loss that falls, save/load, registry names, the sam-tiny trainer."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from baselines.common import RivalConfig, RivalTrainConfig, load_rival, save_final
from baselines.lisa.model import SEG_TOKEN, LisaConfig, build_tiny_lisa
from baselines.lisa.sam import SAM_PRESETS, build_sam, postprocess_masks, sam_pixels, save_sam
from baselines.lisa.tokenizer import MissingDependencyError
from baselines.lisa.train import LisaTrainer
from bench.training.stream import synth_groups

FOUNDATION = "genmask/checkpoints/foundations/vlm-tiny"


@pytest.fixture(scope="module")
def micro_sam_dir(tmp_path_factory):
    config = SAM_PRESETS["micro"]()
    directory = tmp_path_factory.mktemp("sam") / "final"
    save_sam(build_sam(config.sizes, seed=0), config, directory)
    return directory


@pytest.fixture(scope="module")
def batch():
    data = synth_groups(3, 4, 64)
    items = data.items[:4]
    return {"images": data.images[[i.image for i in items]], "texts": [i.text for i in items],
            "masks": data.masks[[i.mask for i in items]]}


def make_lisa(sam_dir, **overrides):
    torch.manual_seed(0)
    return build_tiny_lisa(LisaConfig(foundation=FOUNDATION, sam=str(sam_dir), **overrides))


def test_shapes_and_losses(micro_sam_dir, batch):
    model = make_lisa(micro_sam_dir)
    assert model.language.seg_id == model.language.processor.tokenizer.token_to_id(SEG_TOKEN)
    assert model.language.vlm.get_input_embeddings().weight.shape[0] == model.language.processor.vocab_size
    losses = model(batch["images"], batch["texts"], torch.from_numpy(batch["masks"]))
    assert set(losses) == {"loss", "ce", "bce", "dice"} and torch.isfinite(losses["loss"])
    expected = 1.0 * losses["ce"] + 2.0 * losses["bce"] + 0.5 * losses["dice"]
    assert torch.allclose(losses["loss"].detach(), expected)
    model.eval()
    logits = model(batch["images"], batch["texts"])
    assert logits.shape == (4, 64, 64)
    # what is frozen: SAM's image and prompt encoders; trained: projection, mask decoder and, of the language model,
    # as LISA's train_ds.py: LoRA on q_proj/v_proj (r 8, alpha 16, dropout 0.05), the embeddings and the head
    assert not any(p.requires_grad for p in model.sam.vision_encoder.parameters())
    assert not any(p.requires_grad for p in model.sam.prompt_encoder.parameters())
    assert all(p.requires_grad for p in model.sam.mask_decoder.parameters())
    assert all(p.requires_grad for p in model.text_hidden_fcs.parameters())
    trained = {n.removeprefix("language.vlm.") for n, p in model.named_parameters() if p.requires_grad and "language" in n}
    layers = model.language.vlm.config.text_config.num_hidden_layers
    assert {n for n in trained if "lora_" in n} == {f"model.language_model.layers.{i}.self_attn.{proj}_proj.lora_{ab}"
                                                    f".default.weight" for i in range(layers) for proj in "qv"
                                                    for ab in "AB"}
    assert trained - {n for n in trained if "lora_" in n} == {"model.language_model.embed_tokens.weight",
                                                              "lm_head.weight"}
    lora = model.language.vlm.model.language_model.layers[0].self_attn.q_proj
    assert lora.r["default"] == 8 and lora.scaling["default"] == 2.0 and lora.lora_dropout["default"].p == 0.05
    assert not any("lora_" in n for n, _ in model.language.vlm.model.visual.named_parameters())


def test_seg_state_positions(micro_sam_dir, batch):
    model = make_lisa(micro_sam_dir)
    encoded = model.language.encode(list(batch["images"]), batch["texts"], with_answer=True)
    starts = (encoded.labels != -100).float().argmax(1)
    ids = encoded.inputs["input_ids"]
    predict = model.seg_positions(ids, encoded.lengths, starts)
    rows = torch.arange(len(ids))
    assert (ids[rows, predict + 1] == model.language.seg_id).all()  # LISA's: the state that predicts [SEG]
    assert (ids[rows, predict] == model.language.processor.tokenizer.token_to_id("ans")).all()
    model.config.seg_state = "token"
    assert (ids[rows, model.seg_positions(ids, encoded.lengths, starts)] == model.language.seg_id).all()


def test_seg_prompt_reaches_the_decoder(micro_sam_dir, batch):
    model = make_lisa(micro_sam_dir).eval()
    seen = []
    hook = model.sam.mask_decoder.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["point_embeddings"].detach().clone()), with_kwargs=True)
    try:
        first = model(batch["images"], batch["texts"])
        tokens = seen[-1]
        mask_tokens = model.sam.mask_decoder.num_mask_tokens
        assert tokens.shape[2] == 1 + mask_tokens + 1  # iou token, mask tokens, the one text prompt
        assert tokens[:, :, -1].abs().sum(-1).min() > 0  # non-zero sparse embedding
        # a zero prompt still reaches the decoder (transformers <= 4.x dropped zero-sum sparse prompts)
        with torch.no_grad():
            last = model.text_hidden_fcs[0][2]
            saved = last.weight.clone(), last.bias.clone()
            last.weight.zero_()
            last.bias.zero_()
        zero = model(batch["images"], batch["texts"])
        assert seen[-1].shape[2] == 1 + mask_tokens + 1
        with torch.no_grad():
            last.weight.copy_(saved[0])
            last.bias.copy_(saved[1])
        assert not torch.allclose(first, zero)  # the text prompt changes the mask
    finally:
        hook.remove()


def test_loss_falls_on_a_tiny_overfit_set(micro_sam_dir, batch):
    torch.manual_seed(0)
    model = make_lisa(micro_sam_dir)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    masks = torch.from_numpy(batch["masks"])
    values = []
    for _ in range(25):
        loss = model(batch["images"], batch["texts"], masks)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0]
    assert model(batch["images"], batch["texts"], masks)["ce"] < 0.1  # the answer "[SEG] . eos" is learned


def test_generate_counts_a_missing_seg_as_empty(micro_sam_dir, batch):
    model = make_lisa(micro_sam_dir).eval()
    run = model.language.run

    def never_seg(inputs):  # a language model that never answers [SEG]
        logits, hidden = run(inputs)
        logits[..., model.language.seg_id] = -1e9
        return logits, hidden

    model.language.run = never_seg
    logits, answers = model.predict_logits(list(batch["images"]), batch["texts"], "generate")
    assert all(logit is None for logit in logits) and all(SEG_TOKEN not in a for a in answers)
    model.language.run = run
    logits, answers = model.predict_logits(list(batch["images"]), batch["texts"], "teacher")
    assert all(logit.shape == (64, 64) for logit in logits) and answers[0].startswith(SEG_TOKEN)


def test_save_load_round_trip(micro_sam_dir, batch, tmp_path):
    model = make_lisa(micro_sam_dir)
    with torch.no_grad():  # make the trained parts differ from the foundations
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    config = RivalConfig(name="lisa", model=model.config, train=RivalTrainConfig())
    save_final(model, config, tmp_path / "final", {"step": 0})
    saved = json.loads((tmp_path / "final" / "config.json").read_text())
    assert saved["model"]["sam_sha256"] and saved["model"]["foundation_sha256"]
    loaded, _, _ = load_rival(LisaTrainer, tmp_path / "final")
    with torch.no_grad():
        assert torch.equal(model(batch["images"], batch["texts"]), loaded(batch["images"], batch["texts"]))
    # saved: what LoRA training changes; the frozen language weights come from the pinned foundation
    from safetensors import safe_open

    with safe_open(tmp_path / "final" / "model.safetensors", "pt") as saved_file:
        keys = set(saved_file.keys())
    assert any(".lora_A." in k for k in keys) and any(k.endswith("embed_tokens.weight") for k in keys)
    assert not any("base_layer" in k or ("mlp" in k and k.startswith("language.")) for k in keys)


def test_full_fine_tuning_and_missing_peft(micro_sam_dir, monkeypatch):
    model = make_lisa(micro_sam_dir, language_adaptation="full")  # checkpoints made before LoRA say "full"
    assert all(p.requires_grad for p in model.language.parameters())
    assert not any("lora_" in n for n, _ in model.named_parameters())
    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match="'peft'"):
        make_lisa(micro_sam_dir)
    with pytest.raises(ValueError, match="language_adaptation"):
        LisaConfig(language_adaptation="adapters")


def test_sam_preprocessing_round_trip():
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    pixels, sizes = sam_pixels([image], 64)
    assert pixels.shape == (1, 3, 64, 64) and sizes == [(38, 64)]
    assert (pixels[0, :, 38:] == 0).all()  # padded bottom-right
    logits = postprocess_masks(torch.zeros(1, 1, 16, 16), sizes, [(30, 50)], 64)
    assert logits[0].shape == (30, 50)


def test_registry_names():
    from bench.models.base import MODELS
    from bench.training import TRAINERS

    assert MODELS.get("lisa").__name__ == "LisaSegModel"
    assert TRAINERS.get("lisa") is LisaTrainer
    assert TRAINERS.get("sam-tiny").__name__ == "SamTinyTrainer"


def test_sam_tiny_trainer_micro(tmp_path):
    from bench.training import TRAINERS

    out = tmp_path / "sam"
    assert TRAINERS.get("sam-tiny").main(["--preset", "micro", "--out", str(out)]) == 0
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0.0 <= metrics["val_one_click"]["miou"] <= 1.0
    assert (out / "final" / "model.safetensors").exists()


def test_adapter_on_a_trained_directory(micro_sam_dir, tmp_path):
    from bench.models.base import MODELS, ModelInput
    from bench.suites.base import Sample

    model = make_lisa(micro_sam_dir).eval()
    save_final(model, RivalConfig(name="lisa", model=model.config, train=RivalTrainConfig()), tmp_path / "final",
               {"step": 0})
    adapter = MODELS.get("lisa")(checkpoint=str(tmp_path / "final"), seg_token="generate", seg_state="token")
    image = np.full((48, 80, 3), 230, dtype=np.uint8)
    sample = Sample("s0", "val", tmp_path / "x.png", "the red circle", 48, 80, load_target=lambda: None)
    (mask,) = adapter.predict([ModelInput(sample, image, sample.text)])
    assert mask.shape == (48, 80) and mask.dtype == bool
    recorded = adapter.config()["lisa"]
    assert recorded["seg_token"] == "generate" and recorded["seg_state"] == "token" and recorded["layout"] == "tiny"
    with pytest.raises(ValueError, match="seg_token"):
        MODELS.get("lisa")(checkpoint=str(tmp_path / "final"), seg_token="sometimes")


def test_shipped_checkpoint_predicts_and_shares_the_rivals_stream():
    from baselines.lisa.adapter import SHIPPED_CHECKPOINT
    from bench.models.base import MODELS, ModelInput

    assert (SHIPPED_CHECKPOINT / "model.safetensors").exists() and (SHIPPED_CHECKPOINT / "RECIPE.md").exists()
    adapter = MODELS.get("lisa")()
    image = np.full((48, 80, 3), 230, dtype=np.uint8)
    (mask,) = adapter.predict([ModelInput(sample=None, image=image, text="the red circle")])
    assert mask.shape == (48, 80) and mask.dtype == bool
    streams = {name: json.loads((SHIPPED_CHECKPOINT.parent / name / "metrics.json").read_text())["data_stream"]
               for name in ("lisa", "unet", "diffusion-features")}
    assert len({stream["sha256_16"] for stream in streams.values()}) == 1  # the same samples, in the same order
