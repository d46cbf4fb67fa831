"""GenMask model: component shapes, the VAE shortcut, inference call counts, persistence, meta-device sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmask.model import (
    GenMask,
    coordinate_ramps,
    images_to_tensor,
    masks_to_tensor,
    parameter_counts,
    widen_patch_embedding,
)
from genmask.train import FlowMatchingLoss

WORDS = "the red blue green circle square triangle on left right of".split()


@pytest.fixture(scope="module")
def model() -> GenMask:
    torch.manual_seed(0)
    return GenMask.from_preset("micro", vocabulary=WORDS).eval()


def images(count: int, seed: int = 0, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size + 4 * i, 3), dtype=np.uint8) for i in range(count)]


TEXTS = ["the red circle", "blue square on the left", "the green triangle right of the circle"]


def test_component_shapes_and_dtypes(model: GenMask) -> None:
    config = model.config
    pictures = [np.zeros((32, 32, 3), np.uint8)] * 2
    context = model.encode_instructions(pictures, TEXTS[:2])
    assert context.shape == (2, config.encoder.max_tokens, config.transformer.text_dim)
    assert context.dtype == torch.float32
    used = 1 + 4 + 1 + 3  # vision start, 2x2 merged vision tokens, vision end, three words
    assert torch.all(context[0, used:] == 0) and torch.any(context[0, used - 1] != 0)
    latent = model.encode_pixels(images_to_tensor(pictures))
    assert latent.shape == (2, config.vae.z_dim, 1, 8, 8) == (2, *model.latent_shape())
    assert model.decode_latents(latent).shape == (2, 3, 1, 32, 32)
    mask = masks_to_tensor([np.eye(32, dtype=bool)])
    assert mask.shape == (1, 3, 1, 32, 32) and float(mask.max()) == 1.0 and float(mask.min()) == -1.0
    velocity = model.velocity(latent, torch.tensor([1.0, 0.5]), context, shortcut=latent)
    assert velocity.shape == latent.shape and velocity.dtype == torch.float32


def record_transformer_calls(model: GenMask) -> tuple[list[dict], torch.utils.hooks.RemovableHandle]:
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({"hidden": args[0].shape, "timestep": args[1].clone()})

    return calls, model.transformer.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("mode", ["frame", "channel", "none"])
def test_shortcut_modes_reach_the_dit_as_documented(mode: str) -> None:
    torch.manual_seed(0)
    model = GenMask.from_preset("micro", overrides=[f"shortcut={mode}"], vocabulary=WORDS).eval()
    calls, handle = record_transformer_calls(model)
    try:
        masks = model.predict(images(2), TEXTS[:2])
    finally:
        handle.remove()
    assert len(calls) == 1 and len(masks) == 2
    hidden, timestep = calls[0]["hidden"], calls[0]["timestep"]
    z = model.config.vae.z_dim + 2  # two coordinate channels in every frame (the micro and tiny presets)
    if mode == "frame":
        assert hidden[1:3] == (z, 2)  # frames: clean image latent, then the mask latent
        assert timestep.shape == (2, 2 * 16)  # (batch, seq_len): 16 tokens per 8x8 frame with patch 2
        assert torch.all(timestep[:, :16] == 0) and torch.all(timestep[:, 16:] == 1000)
    else:
        assert hidden[1:3] == ((z + z - 2, 1) if mode == "channel" else (z, 1))
        assert timestep.shape == (2,) and torch.all(timestep == 1000)
    assert model.transformer.config.in_channels == hidden[1]
    assert set(model.timings) >= {"instruction_encoding", "dit", "vae_decoding"}


def test_unknown_shortcut_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shortcut mode 'frames'"):
        GenMask.from_preset("micro", overrides=["shortcut=frames"], vocabulary=WORDS)


def test_widened_patch_embedding_ignores_the_new_channels_at_first() -> None:
    torch.manual_seed(0)
    model = GenMask.from_preset("micro", overrides=["shortcut=none"], vocabulary=WORDS).eval()
    latent = torch.randn(2, 4, 1, 8, 8)
    context = torch.randn(2, model.config.encoder.max_tokens, model.config.transformer.text_dim)
    t = torch.tensor([1.0, 0.7])
    channels = model.config.transformer.in_channels  # the latent's 4 and 2 coordinate channels
    with torch.no_grad():
        before = model.velocity(latent, t, context, None)
        widen_patch_embedding(model.transformer, channels + 4)
        model.config.shortcut = "channel"
        after = model.velocity(latent, t, context, torch.randn(2, 4, 1, 8, 8))
    assert model.transformer.patch_embedding.in_channels == channels + 4 == 10
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="cannot narrow"):
        widen_patch_embedding(model.transformer, 4)


def test_coordinate_channels_tell_the_dit_where_each_token_is() -> None:
    ramps = coordinate_ramps(torch.zeros(3, 4, 2, 5, 7))
    assert ramps.shape == (3, 2, 2, 5, 7)
    assert torch.equal(ramps[:, 0, :, :, 0], -torch.ones(3, 2, 5)) and torch.equal(ramps[:, 0, :, :, -1], torch.ones(3, 2, 5))
    assert torch.equal(ramps[:, 1, :, 0], -torch.ones(3, 2, 7)) and torch.equal(ramps[:, 1, :, -1], torch.ones(3, 2, 7))
    plain = GenMask.from_preset("micro", overrides=["coordinate_channels=false"], vocabulary=WORDS)
    assert plain.config.transformer.in_channels == 4
    reader = GenMask.from_preset("micro", overrides=["encoder.coordinate_channels=true"], vocabulary=WORDS).eval()
    assert reader.instruction_encoder.config.vision_config.in_channels == 5 and reader.processor.coordinate_channels
    assert len(reader.predict(images(2), TEXTS[:2])) == 2


@pytest.mark.parametrize("steps", [1, 4])
def test_inference_calls_the_dit_once_per_step_per_batch(model: GenMask, steps: int) -> None:
    calls, handle = record_transformer_calls(model)
    try:
        masks = model.predict(images(3), TEXTS, steps=steps)
    finally:
        handle.remove()
    assert len(calls) == steps
    assert [m.shape for m in masks] == [(32, 32), (32, 36), (32, 40)]
    assert all(m.dtype == bool for m in masks)


def test_one_step_is_eps_minus_velocity(model: GenMask) -> None:
    context = model.encode_instructions([None], ["the red circle"])
    latent = model.sample(context, None, steps=1, seed=3)
    noise = torch.randn(model.latent_shape(), generator=torch.Generator().manual_seed(3))[None]
    expected = noise - model.velocity(noise, torch.ones(1), context, None)
    torch.testing.assert_close(latent, expected)


def test_predictions_do_not_depend_on_the_batch(model: GenMask) -> None:
    together = model.predict(images(3), TEXTS, seed=1)
    alone = [model.predict([image], [text], seed=1)[0] for image, text in zip(images(3), TEXTS)]
    for a, b in zip(together, alone):
        assert (a == b).mean() > 0.999



def test_pil_images_predict_the_same_as_arrays(model: GenMask) -> None:
    from PIL import Image

    arrays = images(3)
    pictures = [Image.fromarray(arrays[0]), Image.fromarray(arrays[1]).convert("RGBA"), arrays[2]]  # mixed inputs
    for a, b in zip(model.predict(arrays, TEXTS, seed=2), model.predict(pictures, TEXTS, seed=2)):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        model.predict([arrays[0][..., 0]], TEXTS[:1])


def test_euler_sampler_integrates_a_constant_velocity_exactly() -> None:
    from genmask.sampling import euler_sample

    noise = torch.randn(2, 4)
    target = torch.randn(2, 4)
    seen: list[float] = []

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(float(t[0]))
        return noise - target  # the straight path from target (t = 0) to noise (t = 1)

    for steps in (1, 3):
        seen.clear()
        torch.testing.assert_close(euler_sample(velocity, noise, steps), target)
        assert seen == pytest.approx([1 - k / steps for k in range(steps)])

def test_save_and_load_round_trip_gives_identical_predictions(model: GenMask, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").exists()
    assert (tmp_path / "instruction_encoder" / "model.safetensors").exists()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    loaded = GenMask.from_pretrained(tmp_path)
    for a, b in zip(model.predict(images(3), TEXTS, steps=2), loaded.predict(images(3), TEXTS, steps=2)):
        np.testing.assert_array_equal(a, b)
    assert loaded.config == model.config


def test_training_loss_falls_on_a_tiny_overfit_set() -> None:
    torch.manual_seed(0)
    model = GenMask.from_preset("micro", vocabulary=WORDS)
    loss_module = FlowMatchingLoss(model)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 4, 1, 8, 8, generator=generator).sign()  # mask-like latents
    shortcut = torch.randn(4, 4, 1, 8, 8, generator=generator)
    noise = torch.randn(4, 4, 1, 8, 8, generator=generator)
    batch = dict(images=images(4, size=32)[:1] * 4, texts=(TEXTS * 2)[:4], x0=x0, shortcut=shortcut,
                 t=torch.tensor([0.99, 0.95, 0.9, 0.97]), noise=noise)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        loss = loss_module(**batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_paper_preset_sizes_on_meta() -> None:
    model = GenMask.from_preset("paper", device="meta")
    counts = parameter_counts(model)
    assert model.transformer.patch_embedding.weight.device.type == "meta"
    width, layers, ffn, text_dim, freq = 1536, 30, 8960, 4096, 256
    linear = lambda i, o: i * o + o  # noqa: E731
    block = 8 * linear(width, width) + 4 * width + 2 * width + linear(width, ffn) + linear(ffn, width) + 6 * width
    dit = (16 * width * 4 + width + linear(freq, width) + linear(width, width) + linear(width, 6 * width)
           + linear(text_dim, width) + linear(width, width) + layers * block + linear(width, 16 * 4) + 2 * width)
    assert counts["transformer"] == dit  # Wan 2.1 T2V 1.3B: 1,418,996,800
    assert 1.3e9 < counts["transformer"] < 1.45e9
    # Qwen2.5-VL-7B without its LM head: 8.29B total minus 152064 x 3584 head weights
    assert counts["instruction_encoder"] == pytest.approx(8.292e9 - 152064 * 3584, rel=2e-3)
    assert counts["text_projection"] == 3584 * 4096 + 4096


def test_bfloat16_keeps_the_vae_in_float32_and_agrees_with_float32() -> None:
    """The CUDA default (bf16 DiT and encoder), run here on the CPU with the shipped checkpoint."""
    import itertools

    from bench.synth import iter_training_samples
    from genmask.adapter import GenMaskSegModel

    samples = list(itertools.islice(iter_training_samples(7), 8))
    images, texts = [s.image for s in samples], [s.text for s in samples]
    full = GenMaskSegModel(dtype="float32").model
    half = GenMaskSegModel(dtype="bfloat16").model
    assert half.transformer.dtype == torch.bfloat16 and half.text_projection.weight.dtype == torch.bfloat16
    assert half.vae.dtype == torch.float32
    reference, predicted = full.predict(images, texts), half.predict(images, texts)
    agreement = [np.logical_and(a, b).sum() / np.logical_or(a, b).sum() if np.logical_or(a, b).any() else 1.0
                 for a, b in zip(reference, predicted)]  # two empty masks agree
    assert all(p.dtype == bool and p.shape == (64, 64) for p in predicted)
    assert np.mean(agreement) > 0.8, agreement
    with pytest.raises(ValueError, match="dtype"):
        GenMaskSegModel(dtype="int8")
