"""GenMask configuration: presets, `key=value` and file overrides, errors naming the bad key."""

from __future__ import annotations

import pytest

from bench.training.overrides import ConfigError, apply_overrides, load_override_file
from genmask.config import GenMaskConfig, preset


def test_presets_have_the_documented_sizes() -> None:
    paper, tiny = preset("paper"), preset("tiny")
    assert (paper.transformer.num_layers, paper.transformer.num_attention_heads * paper.transformer.attention_head_dim,
            paper.transformer.ffn_dim, paper.transformer.text_dim) == (30, 1536, 8960, 4096)
    assert paper.encoder.text["hidden_size"] == 3584 and paper.encoder.vision["depth"] == 32
    assert tiny.image_size == 64 and len(tiny.vae.dim_mult) == 3  # 4x down: 16x16 latents
    assert preset("tiny") is not preset("tiny")  # fresh copies
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_dotted_overrides_parse_literals() -> None:
    config = apply_overrides(preset("tiny"), ["transformer.num_layers=3", "train.lr=3e-4", "shortcut=none",
                                              "train.seg_sampler_params={'a': 0.1}", "encoder.text.hidden_size=64",
                                              "train.vae_dir=/tmp/some dir"])
    assert config.transformer.num_layers == 3 and config.train.lr == 3e-4 and config.shortcut == "none"
    assert config.train.seg_sampler_params == {"a": 0.1} and config.encoder.text["hidden_size"] == 64
    assert config.train.vae_dir == "/tmp/some dir"
    assert apply_overrides(preset("tiny"), ["train.lr=1"]).train.lr == 1.0  # int accepted for a float


@pytest.mark.parametrize(
    ("override", "message"),
    [("transformer.num_layer=3", "unknown config key 'transformer.num_layer'"),
     ("bogus=1", "unknown config key 'bogus'"),
     ("train.steps=many", "train.steps expects int"),
     ("encoder.freeze=1", "encoder.freeze expects bool"),
     ("image_size.width=3", "is a value, not a section"),
     ("no_equals_sign", "is not key=value")],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(preset("tiny"), [override])


def test_override_files_json_and_toml(tmp_path) -> None:
    toml = tmp_path / "recipe.toml"
    toml.write_text('image_size = 32\n[train]\nlr = 0.002\nseg_fraction = 1.0\n', encoding="utf-8")
    config = load_override_file(preset("tiny"), toml)
    assert config.image_size == 32 and config.train.lr == 0.002 and config.train.seg_fraction == 1.0
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"lr": 0.1, "lr_typo": 1}}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: unknown config key 'train\.lr_typo'"):
        load_override_file(preset("tiny"), bad)
    with pytest.raises(ConfigError, match="not found"):
        load_override_file(preset("tiny"), tmp_path / "missing.json")


def test_dict_round_trip() -> None:
    config = apply_overrides(preset("tiny"), ["train.steps=7"])
    assert GenMaskConfig.from_dict(config.to_dict()) == config
