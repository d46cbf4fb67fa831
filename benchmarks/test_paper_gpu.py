"""GenMask at paper scale on a CUDA GPU: the `paper` preset (Wan 2.1 1.3B DiT dimensions, Wan VAE,
Qwen2.5-VL-7B) with random weights in bf16, one-step and 25-step latency and peak GPU memory per sample at
batch 1 and 16. Skipped, with the reason, where there is no CUDA device.

The paper preset reads instructions with Qwen's own processor, whose files come with a real checkpoint; with
random weights any token ids of the right shapes do, so a word-level processor over a few words stands in, and
the encoder is told its special-token ids (`attach_minimal_processor`)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

BATCHES = (1, 16)
STEPS = (1, 25)
WORDS = "the red circle left of green square segment largest shape".split()


def attach_minimal_processor(model) -> None:
    """Give a randomly initialised GenMask a word-level processor with its vision tower's patching."""
    from genmask.processor import WordLevelProcessor, special_token_ids

    encoder = model.config.encoder
    vision = encoder.vision
    model.processor = WordLevelProcessor.build(WORDS, vision["patch_size"], vision["spatial_merge_size"],
                                               vision["temporal_patch_size"], encoder.image_min_pixels,
                                               encoder.image_max_pixels)
    for key, value in special_token_ids().items():
        setattr(model.instruction_encoder.config, key, value)


@pytest.fixture(scope="module")
def paper_model():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: the paper preset (about 9 billion parameters) is not run on a CPU")
    from genmask.model import GenMask

    model = GenMask.from_preset("paper", device="cuda", dtype=torch.bfloat16).eval()
    model.vae.float()  # as GenMask's adapter runs it: bf16 DiT and encoder, float32 VAE
    attach_minimal_processor(model)
    model.profile = True  # per-part timings synchronise the device
    return model


@pytest.mark.benchmark(group="paper scale on CUDA (random weights, bf16)")
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("steps", STEPS)
def test_paper_latency_and_memory(benchmark, paper_model, batch, steps):
    rng = np.random.default_rng(0)
    size = paper_model.config.image_size
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    texts = [" ".join(rng.choice(WORDS, 6)) for _ in range(batch)]

    def predict():
        with torch.inference_mode():
            return paper_model.predict(images, texts, steps=steps)

    predict()  # warm-up: kernels, allocator
    paper_model.timings.clear()
    torch.cuda.reset_peak_memory_stats()
    rounds = 3
    benchmark.pedantic(predict, rounds=rounds, iterations=1)
    parts = {part: seconds / (rounds * batch) for part, seconds in paper_model.timings.items()}
    benchmark.extra_info.update(role="paper", steps=steps, batch=batch, per_sample_s=parts,
                                peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30,
                                device=torch.cuda.get_device_name())
