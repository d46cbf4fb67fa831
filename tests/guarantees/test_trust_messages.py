"""Issue 21: checkpoint configs checked before allocation, and hostile input answered by a message (exit 2), never a
traceback (every fixture built here)."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError, DataFormatError
from tests.guarantees.test_hostile import SQUARE

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "genmask" / "checkpoints" / "tiny"


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    made = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
    assert "Traceback" not in made.stderr, made.stderr[-3000:]
    return made


def _tiny_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(TINY, copy)
    return copy


@pytest.mark.parametrize(("component", "key", "value"), [("transformer", "num_layers", 100000),
                                                         ("transformer", "ffn_dim", 10**9),
                                                         ("instruction_encoder", "text_config", None)])
def test_a_checkpoint_config_that_does_not_fit_its_weights_is_refused_before_allocation(
        tmp_path: Path, component: str, key: str, value):
    checkpoint = _tiny_copy(tmp_path)
    config_file = checkpoint / component / "config.json"
    config = json.loads(config_file.read_text())
    if value is None:  # the encoder's language model 100000 layers deep
        config["text_config"]["num_hidden_layers"] = 100000
    else:
        config[key] = value
    config_file.write_text(json.dumps(config))
    script = textwrap.dedent(f"""
        import resource
        from genmask.model import GenMask
        from bench.errors import BenchError
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            GenMask.from_pretrained({str(checkpoint)!r})
        except BenchError as exc:
            print("refused:", exc)
    """)
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert made.returncode == 0 and "refused" in made.stdout and "config.json" in made.stdout, made.stderr[-2000:]


@pytest.mark.parametrize(("component", "change"), [("config.json", {"transformer": 5}),
                                                   ("config.json", {"image_size": "big"}),
                                                   ("transformer/config.json", {"num_attention_heads": "x"}),
                                                   ("instruction_encoder/config.json", {"text_config": 7}),
                                                   ("vae/config.json", {"base_dim": -5})])
def test_a_malformed_genmask_config_is_a_message(tmp_path: Path, component: str, change: dict):
    from genmask.model import GenMask

    checkpoint = _tiny_copy(tmp_path)
    config_file = checkpoint / component
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    with pytest.raises((BenchError, ValueError), match=str(config_file)):
        GenMask.from_pretrained(checkpoint)


def test_the_shipped_checkpoint_passes_the_check():
    from genmask.model import check_components

    check_components(TINY)


def test_generate_with_a_bad_model_or_zero_steps_is_a_message(tmp_path: Path, capsys):
    from genmask.generate import main as generate

    for argv in (["a red square", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")],
                 ["a red square", "--model", str(TINY), "--out", str(tmp_path / "out"), "--steps", "0"]):
        with pytest.raises(SystemExit) as exit_:
            generate(argv)
        assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


def test_a_malformed_tokenizer_file_is_a_message(tmp_path: Path):
    from genmask.processor import WORD_TOKENIZER_FILE, WordLevelProcessor

    encoder = _tiny_copy(tmp_path) / "instruction_encoder"
    (encoder / WORD_TOKENIZER_FILE).write_text('{"model": 5}')
    with pytest.raises(DataFormatError, match=WORD_TOKENIZER_FILE):
        WordLevelProcessor.load(encoder)


def _data(tmp_path: Path, write_refer) -> Path:
    return write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}], [SQUARE])


def _run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--suite", "refcoco", "--split", "val", "--model", "oracle", "--data-root", str(root), "--out",
            str(out), "--no-progress", "--bootstrap", "0", "--workers", "0", *extra]


def test_refs_with_a_list_for_an_id_are_a_message(tmp_path: Path, capsys, write_refer):
    root = _data(tmp_path, write_refer)
    refs_file = next(root.rglob("refs*.p"))
    refs = pickle.loads(refs_file.read_bytes())
    refs[0]["image_id"] = [1]
    refs_file.write_bytes(pickle.dumps(refs))
    assert main(_run_args(root, tmp_path / "out")) == 2
    assert "image_id" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["9" * 5000, "[" * 200000 + "]" * 200000])
def test_instances_with_huge_numbers_or_deep_nesting_are_a_message(tmp_path: Path, capsys, value: str, write_refer):
    root = _data(tmp_path, write_refer)
    instances = next(root.rglob("instances.json"))
    instances.write_text(instances.read_text().replace('"area": 1', f'"area": {value}', 1))
    assert main(_run_args(root, tmp_path / "out")) == 2
    assert "instances.json" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b'{"model": "\xff", "suites": []}', b'{"model": ' + b"[" * 200000])
def test_a_run_json_not_utf8_or_too_deep_is_a_message(tmp_path: Path, capsys, content: bytes):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_bytes(content)
    assert main(["compact", str(tmp_path / "run")]) == 2
    assert "run.json" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b'question = "\xff"', b"a = " + b"[" * 100000 + b"]" * 100000])
def test_an_ablation_toml_not_utf8_or_too_deep_is_a_message(tmp_path: Path, content: bytes):
    from bench.ablate.load import _read_toml

    (tmp_path / "x.toml").write_bytes(content)
    with pytest.raises(DataFormatError, match="x.toml"):
        _read_toml(tmp_path / "x.toml")


def test_a_non_ascii_digit_as_a_seed_is_a_message(tmp_path: Path, capsys):
    assert main(["ablate", "steps", "--only", "1-step:\u00b2", "--collect", "--out", str(tmp_path)]) == 2
    assert "seed" in capsys.readouterr().err


def test_a_non_ascii_digit_as_a_sample_id_is_ordered_not_a_crash(tmp_path: Path):
    from bench.report.gallery import select_samples

    picks = select_samples("refcoco", [{("val", "\u00b2"): 0.5, ("val", "1"): 0.2, ("val", "10"): 0.9}])
    assert {pick.sample_id for pick in picks} <= {"\u00b2", "1", "10"}


def test_a_truncated_gzip_leaves_a_complete_run_complete(tmp_path: Path, write_refer):
    root = _data(tmp_path, write_refer)
    out = tmp_path / "results" / "r"
    assert main(_run_args(root, out)) == 0
    assert main(["compact", str(out)]) == 0
    gz = out / "predictions.jsonl.gz"
    gz.write_bytes(gz.read_bytes()[:-12])
    for made in (_bench(*_run_args(root, out, "--resume")), _bench("report", "--results", str(tmp_path / "results"))):
        assert made.returncode == 2 and str(gz) in made.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_a_half_written_cell_is_a_message(tmp_path: Path):
    from bench.ablate.cells import PROVENANCE, read_provenance

    (tmp_path / PROVENANCE).write_text('{"commit": "abc", "dirty": fa')
    with pytest.raises(DataFormatError, match=PROVENANCE):
        read_provenance(tmp_path)


def test_cuda_without_cuda_is_refused_before_anything_is_recorded(tmp_path: Path, capsys, write_refer):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = _data(tmp_path, write_refer)
    assert main(_run_args(root, tmp_path / "out", "--device", "cuda")) == 2
    assert "CUDA" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_hostile_training_log_is_a_message(tmp_path: Path):
    from bench.training.log import read_log

    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataFormatError, match="log.jsonl"):
        read_log(tmp_path / "log.jsonl")
