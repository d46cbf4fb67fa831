"""The `diffusion-features` rival (VPD-style decoder on the t2i foundation's DiT features): shapes of the hooked
features, the frozen foundation, the 0.01x fine-tune option, a loss that falls on a tiny overfit set, the
save/load round trip, the registries and the shipped checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baselines.common import RivalTrainConfig, load_rival, make_rival_batch, training_data
from baselines.diffusion_features import (
    SHIPPED_CHECKPOINT,
    DiffusionFeaturesConfig,
    DiffusionFeatureSegmenter,
    DiffusionFeaturesSegModel,
    DiffusionFeaturesTrainer,
)
from bench.models.base import MODELS, ModelInput
from bench.training import TRAINERS
from tests.baselines.helpers import overfit_losses


@pytest.fixture(scope="module")
def batch() -> dict:
    train = RivalTrainConfig(train_samples=4, batch_size=4)  # the foundation's 64 px
    return make_rival_batch(training_data(train), train, step=0)


@pytest.fixture(scope="module")
def model() -> DiffusionFeatureSegmenter:
    torch.manual_seed(0)
    return DiffusionFeatureSegmenter(DiffusionFeaturesConfig(width=16))


def test_registered_names() -> None:
    assert MODELS.get("diffusion-features") is DiffusionFeaturesSegModel
    assert TRAINERS.get("diffusion-features") is DiffusionFeaturesTrainer


def test_features_shapes_and_frozen_foundation(model: DiffusionFeatureSegmenter, batch: dict) -> None:
    maps, latent = model.read(batch["images"], batch["texts"])
    assert [m.shape for m in maps] == [(4, 128, 8, 8)] * 3 and latent.shape == (4, 16, 16, 16)
    logits = model(batch["images"], batch["texts"])
    assert logits.shape == (4, 64, 64) and torch.isfinite(logits).all()
    assert not any(p.requires_grad for p in model.foundation.parameters())
    assert model.external_prefixes == ("foundation.",) and len(model.config.foundation_sha256) == 64
    # the instruction changes the features (it reaches the DiT through cross-attention)
    other, _ = model.read(batch["images"], ["the blue square"] * 4)
    assert not torch.allclose(other[-1], maps[-1])


def test_bad_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="model.blocks"):
        DiffusionFeatureSegmenter(DiffusionFeaturesConfig(blocks=[6]))


def test_finetune_option_trains_the_dit_at_a_hundredth(batch: dict) -> None:
    model = DiffusionFeatureSegmenter(DiffusionFeaturesConfig(width=16, finetune_dit=True, blocks=[0]))
    groups = DiffusionFeaturesTrainer.param_groups(model, RivalTrainConfig())
    assert [g["lr_scale"] for g in groups] == [1.0, 0.01]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(p.numel() for p in model.foundation.transformer.parameters())
    DiffusionFeaturesTrainer.loss(model, batch).backward()
    assert model.foundation.transformer.blocks[0].ffn.net[0].proj.weight.grad is not None
    assert not model.is_external("foundation.transformer.blocks.0.ffn.net.0.proj.weight")
    assert model.is_external("foundation.vae.encoder.conv_in.weight")


def test_loss_falls_on_a_tiny_overfit_set(batch: dict) -> None:
    torch.manual_seed(0)
    model = DiffusionFeatureSegmenter(DiffusionFeaturesConfig(width=16)).train()
    before = {k: v.clone() for k, v in model.foundation.transformer.state_dict().items()}
    losses = overfit_losses(model, lambda: DiffusionFeaturesTrainer.loss(model, batch))
    assert losses[-1] < 0.6 * losses[0], losses
    for key, value in model.foundation.transformer.state_dict().items():
        assert torch.equal(value, before[key]), f"frozen DiT weight {key} changed"


def test_round_trip(tmp_path) -> None:
    assert DiffusionFeaturesTrainer.main([
        "--out", str(tmp_path), "train.train_samples=6", "train.val_samples=4", "train.batch_size=2",
        "train.steps=2", "train.warmup_steps=1", "train.eval_every=0", "model.width=16", "model.blocks=[2]"]) == 0
    final = tmp_path / "final"
    saved = load_file(final / "model.safetensors")
    assert saved and not any(key.startswith("foundation.") for key in saved)
    config = json.loads((final / "config.json").read_text())
    assert config["model"]["finetune_dit"] is False and config["model"]["blocks"] == [2]
    module, _, metrics = load_rival(DiffusionFeaturesTrainer, final)
    assert metrics["cost"]["parameters_trainable"] == sum(v.numel() for v in saved.values() if v.is_floating_point())
    adapter = DiffusionFeaturesSegModel(checkpoint=str(final))
    image = np.random.default_rng(2).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    [mask] = adapter.predict([ModelInput(sample=None, image=image, text="the red circle")])
    assert mask.shape == (50, 70)
    from bench.images import resize_image

    with torch.no_grad():
        logits = module(resize_image(image, 64)[None], ["the red circle"])
        direct = torch.nn.functional.interpolate(logits[None], size=(50, 70), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(mask, (direct[0, 0] > 0).numpy())


def test_shipped_checkpoint_predicts() -> None:
    assert (SHIPPED_CHECKPOINT / "model.safetensors").exists(), "the shipped diffusion-features checkpoint is missing"
    assert (SHIPPED_CHECKPOINT / "RECIPE.md").exists()
    adapter = DiffusionFeaturesSegModel()
    [mask] = adapter.predict([ModelInput(sample=None, image=np.zeros((64, 64, 3), dtype=np.uint8), text="the red one")])
    assert mask.shape == (64, 64) and mask.dtype == bool
    cost = adapter.config()["cost"]
    assert cost["train_flops"] > 0 and cost["train_wall_seconds"] > 0 and cost["parameters_total"] > 0
