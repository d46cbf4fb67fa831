"""Issue 21, LISA checkpoints: a config that does not fit its weights is refused before allocation; a .bin that
would run code, or is truncated, is a message naming the file (never advice to load it unsafely)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from baselines.lisa.keymap import KeyMappingError, read_state_dict
from tests.baselines.lisa.test_keymap import tiny_lisa  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("key", "value"), [("num_hidden_layers", 100000), ("intermediate_size", 10**8)])
def test_a_lisa_config_that_does_not_fit_its_weights_is_refused_before_allocation(
        tiny_lisa, tmp_path: Path, key: str, value: int):  # noqa: F811
    copy = tmp_path / "lisa"
    shutil.copytree(tiny_lisa["lisa"], copy)
    config = json.loads((copy / "config.json").read_text())
    config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    script = textwrap.dedent(f"""
        import resource
        from baselines.lisa.keymap import load_lisa
        from bench.errors import BenchError
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            load_lisa({str(copy)!r}, {str(tiny_lisa["clip"])!r})
        except BenchError as exc:
            print("refused:", exc)
    """)
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert made.returncode == 0 and "refused" in made.stdout and "config.json" in made.stdout, made.stderr[-2000:]


def test_a_bin_that_would_run_code_is_refused_without_unsafe_advice(tiny_lisa, tmp_path: Path):  # noqa: F811
    copy = tmp_path / "bin"
    shutil.copytree(tiny_lisa["lisa"], copy)
    shard = copy / "pytorch_model-00002-of-00002.bin"
    torch.save({"x": argparse.Namespace(code="would run")}, shard)
    with pytest.raises(KeyMappingError) as error:
        read_state_dict(copy)
    message = str(error.value)
    assert shard.name in message and "argparse.Namespace" in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "\x1b" not in message


def test_a_truncated_bin_is_a_message_naming_the_file(tiny_lisa, tmp_path: Path):  # noqa: F811
    copy = tmp_path / "cut"
    shutil.copytree(tiny_lisa["lisa"], copy)
    shard = copy / "pytorch_model-00001-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(KeyMappingError, match=rf"{shard.name}.*truncated"):
        read_state_dict(copy)
