"""Loading real-layout checkpoints (diffusers Wan, transformers Qwen2.5-VL) and the harness adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from bench.models.base import MODELS, ModelInput
from genmask.model import GenMask
from genmask.processor import SPECIAL_TOKENS, ChatProcessor, special_token_ids

WORDS = "the red blue circle square left".split()


@pytest.fixture(scope="module")
def micro() -> GenMask:
    torch.manual_seed(0)
    return GenMask.from_preset("micro", vocabulary=WORDS).eval()


def test_real_layout_directories_load(micro: GenMask, tmp_path) -> None:
    wan, qwen = tmp_path / "Wan2.1-T2V-tiny", tmp_path / "Qwen2.5-VL-tiny"
    micro.transformer.save_pretrained(wan / "transformer")
    micro.vae.save_pretrained(wan / "vae")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=micro.processor.tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                        additional_special_tokens=[*SPECIAL_TOKENS[1:5], "<|im_start|>", "<|im_end|>"])
    text = dict(micro.config.encoder.text, vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=None)
    qwen_config = Qwen2_5_VLConfig(text_config=text, vision_config=micro.config.encoder.vision, **special_token_ids())
    Qwen2_5_VLForConditionalGeneration(qwen_config).save_pretrained(qwen)
    tokenizer.save_pretrained(qwen)
    micro.processor.image_processor.save_pretrained(qwen)

    model = GenMask.from_components(wan, qwen, name="micro", overrides=["encoder.max_tokens=48"])
    assert isinstance(model.processor, ChatProcessor)
    for name, tensor in micro.transformer.state_dict().items():
        torch.testing.assert_close(model.transformer.state_dict()[name], tensor)
    assert model.config.transformer.num_layers == micro.config.transformer.num_layers
    inputs = model.processor([np.zeros((32, 32, 3), np.uint8)], ["the red circle"], 48)
    tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert tokens.count("<|image_pad|>") == 4 and "circle" in tokens  # 2x2 merged vision tokens, chat format
    masks = model.predict([np.zeros((40, 30, 3), np.uint8)], ["the red circle"])
    assert masks[0].shape == (40, 30) and masks[0].dtype == bool
    model.save_pretrained(tmp_path / "genmask")  # the loaded model saves and reloads like any other
    reloaded = GenMask.from_pretrained(tmp_path / "genmask")
    np.testing.assert_array_equal(reloaded.predict([np.zeros((40, 30, 3), np.uint8)], ["the red circle"])[0], masks[0])


def test_adapter_predicts_with_string_options(micro: GenMask, tmp_path) -> None:
    micro.save_pretrained(tmp_path)
    adapter = MODELS.get("genmask")(checkpoint=str(tmp_path), steps="2", seed=3)
    batch = [ModelInput(sample=None, image=np.zeros((20, 24, 3), np.uint8), text="the red circle")] * 2
    masks = adapter.predict(batch)
    assert [m.shape for m in masks] == [(20, 24)] * 2 and all(m.dtype == bool for m in masks)
    assert adapter.config()["steps"] == 2 and adapter.config()["preset"] == "micro"
    assert set(adapter.timings()) == {"instruction_encoding", "vae_encoding", "dit", "vae_decoding"}
    assert adapter.check_suite("refcoco", synthetic=False) and not adapter.check_suite("synthref", synthetic=True)
    with pytest.raises(ValueError, match="steps"):
        MODELS.get("genmask")(checkpoint=str(tmp_path), steps="0")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        MODELS.get("genmask")(checkpoint=str(tmp_path / "missing"))


@pytest.mark.parametrize("name", ["tiny", "tiny-shared-stream"])
def test_shipped_tiny_checkpoints_load_and_predict(name: str) -> None:
    from genmask.adapter import SHIPPED_CHECKPOINT

    checkpoint = SHIPPED_CHECKPOINT.parent / name  # tiny-shared-stream references tiny's VAE (vae.json)
    assert (checkpoint / "config.json").exists(), f"the shipped {name} checkpoint is missing"
    adapter = MODELS.get("genmask")(checkpoint=str(checkpoint) if name != "tiny" else None)
    assert adapter.config()["preset"] == "tiny" and adapter.checkpoint == str(checkpoint)
    masks = adapter.predict([ModelInput(sample=None, image=np.full((48, 80, 3), 200, np.uint8), text="the red circle")])
    assert masks[0].shape == (48, 80) and masks[0].dtype == bool


def test_a_checkpoint_may_reference_a_shared_vae_checked_by_sha256(micro: GenMask, tmp_path) -> None:
    from genmask.shared_vae import main as shared_vae_main

    micro.save_pretrained(tmp_path / "a")
    micro.vae.save_pretrained(tmp_path / "shared" / "vae")
    image = [np.zeros((40, 30, 3), np.uint8)]
    before = GenMask.from_pretrained(tmp_path / "a").predict(image, ["the red circle"])[0]
    assert shared_vae_main([str(tmp_path / "a"), "--vae", str(tmp_path / "shared" / "vae")]) == 0
    assert not (tmp_path / "a" / "vae").exists() and (tmp_path / "a" / "vae.json").exists()
    np.testing.assert_array_equal(GenMask.from_pretrained(tmp_path / "a").predict(image, ["the red circle"])[0], before)

    other = GenMask.from_preset("micro", vocabulary=WORDS)  # other random weights
    other.save_pretrained(tmp_path / "b")
    with pytest.raises(SystemExit) as refused:  # a reference must not change the model
        shared_vae_main([str(tmp_path / "b"), "--vae", str(tmp_path / "shared" / "vae")])
    assert refused.value.code == 2 and (tmp_path / "b" / "vae").exists()

    other.vae.save_pretrained(tmp_path / "shared" / "vae")  # the referenced weights change afterwards
    with pytest.raises(ValueError, match="SHA-256"):
        GenMask.from_pretrained(tmp_path / "a")
