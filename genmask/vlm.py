"""The tiny VLM foundation: a Qwen2.5-VL pretrained here, by next-token loss, to read synthetic scenes.

The stand-in for the Qwen2.5-VL that GenMask adapts: before it sees a mask, it learns captions, questions
about colours, shapes and counts, and grounding (a referring expression or reasoning query answered by the
target's grid cell, colour and shape: `bench.synth.dialogues`). A prompt is followed by the word `ANSWER`; the
hidden state at that word is the one trained to predict the answer, so GenMask, which reads the encoder's
hidden states of image + instruction + `ANSWER`, starts from states that already locate the target.

    python -m bench train --model genmask-vlm --preset tiny --out DIR

writes DIR/final: the `Qwen2_5_VLForConditionalGeneration` (safetensors), its word-level processor,
foundation.json (this config) and metrics.json (answer accuracy per question kind and per rule).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel

from bench.io import read_json_object
from bench.training import Trainer
from bench.training.checkpoint import begin_training
from bench.training.ema import averaged
from bench.training.heldout import VAL_SEED_OFFSET
from bench.training.log import JsonlLog
from bench.training.loop import StepLoop
from bench.training.overrides import apply_nested, apply_overrides, load_override_file
from bench.training.process import launched_as_main, make_accelerator
from bench.training.recipe import EMARecipe
from bench.training.trainers import print_summary
from bench.weights_check import check_checkpoint
from genmask.config import EncoderConfig
from genmask.processor import WordLevelProcessor, load_processor, special_token_ids

ANSWER, END = "ans", "eos"  # the words that open and close an answer
FOUNDATION_FILE = "foundation.json"


@dataclass
class VLMTrainConfig(EMARecipe):
    """Pretraining recipe: the shared one (`bench.training.recipe`) and what questions are asked."""

    threads: int = 2
    steps: int = 4000
    weight_decay: float = 0.01
    batch_size: int = 32
    kind_weights: dict[str, float] = field(default_factory=lambda: {
        "caption": 1.0, "count": 1.0, "colour": 1.0, "shape": 1.0, "where": 1.0, "refer": 3.0})
    val_samples: int = 768


@dataclass
class VLMConfig:
    """The foundation: encoder sizes (GenMask's `EncoderConfig`), image size and recipe."""

    preset: str = "tiny"
    image_size: int = 64
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: VLMTrainConfig = field(default_factory=VLMTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tiny() -> VLMConfig:
    """64 px scenes: 4 px patches merged 2x2 -> 64 vision tokens (one per 8 px cell); text 4 x 128."""
    encoder = EncoderConfig(
        text=dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256,
                  rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0}),
        vision=dict(depth=2, hidden_size=64, intermediate_size=256, num_heads=2, patch_size=4, spatial_merge_size=2,
                    temporal_patch_size=2, window_size=64, out_hidden_size=128, fullatt_block_indexes=[0, 1]),
        processor="word_level", max_tokens=128, image_min_pixels=64 * 64, image_max_pixels=64 * 64,
        coordinate_channels=True,  # with rotary positions alone, this small model never learned where things are
    )
    return VLMConfig(preset="tiny", image_size=64, encoder=encoder)


def _micro() -> VLMConfig:
    """Smallest working foundation, for unit tests (32 px, one layer)."""
    config = _tiny()
    config.preset, config.image_size = "micro", 32
    config.encoder.text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1,
                               rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    config.encoder.vision.update(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                                 out_hidden_size=32, fullatt_block_indexes=[0])
    config.encoder.image_min_pixels = config.encoder.image_max_pixels = 32 * 32
    config.encoder.max_tokens = 96
    config.train = VLMTrainConfig(steps=6, batch_size=4, warmup_steps=1, val_samples=12, eval_every=0)
    return config


PRESETS = {"tiny": _tiny, "micro": _micro}


def vlm_preset(name: str, overrides: list[str] | None = None) -> VLMConfig:
    """A named preset plus `key=value` overrides (unknown keys are errors)."""
    if name not in PRESETS:
        raise ValueError(f"unknown VLM preset {name!r}; known: {', '.join(PRESETS)}")
    return apply_overrides(PRESETS[name](), overrides or [])  # type: ignore[arg-type]


def build_vlm(config: VLMConfig) -> tuple[Qwen2_5_VLForConditionalGeneration, WordLevelProcessor]:
    """A randomly initialised foundation and its processor over the scene and dialogue vocabulary."""
    from bench.synth import dialogue_words, vocabulary

    vision = config.encoder.vision
    processor = WordLevelProcessor.build(
        list(vocabulary()) + dialogue_words() + [ANSWER, END], vision["patch_size"], vision["spatial_merge_size"],
        vision["temporal_patch_size"], config.encoder.image_min_pixels, config.encoder.image_max_pixels,
        coordinate_channels=config.encoder.coordinate_channels)
    text = dict(config.encoder.text, vocab_size=processor.vocab_size, bos_token_id=None, eos_token_id=None,
                pad_token_id=0)
    vision = dict(vision, in_channels=5 if config.encoder.coordinate_channels else 3)
    model_config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special_token_ids())
    return Qwen2_5_VLForConditionalGeneration(model_config), processor


def tokenise(processor: WordLevelProcessor, images: list[np.ndarray], prompts: list[str], answers: list[str],
             max_tokens: int) -> dict[str, torch.Tensor]:
    """Model inputs for "prompt ANSWER answer END", with labels only on the answer and END (-100 elsewhere)."""
    inputs = processor(images, [f"{p} {ANSWER} {a} {END}" for p, a in zip(prompts, answers, strict=True)], max_tokens)
    ids = inputs["input_ids"]
    answer_id, end_id = processor.tokenizer.token_to_id(ANSWER), processor.tokenizer.token_to_id(END)
    for row, prompt in zip(ids, prompts, strict=True):
        if not (row == end_id).any():
            raise ValueError(f"prompt {prompt!r} and its answer do not fit in max_tokens={max_tokens}")
    after_answer = ((ids == answer_id).long().cumsum(1) > 0) & (ids != answer_id)
    inputs["labels"] = torch.where(after_answer & (inputs["attention_mask"] == 1), ids, torch.full_like(ids, -100))
    return inputs


@dataclass
class DialogueBatch:
    """Images, prompts, answers and what each question is (kind, rule)."""

    images: list[np.ndarray]
    prompts: list[str]
    answers: list[str]
    kinds: list[str]
    rules: list[str]


def draw_dialogues(seed: int, indices: range | list[int], config: VLMConfig) -> DialogueBatch:
    """Items `indices` of the seeded dialogue stream (`bench.synth.dialogue_sample`)."""
    from bench.synth import dialogue_sample

    batch = DialogueBatch([], [], [], [], [])
    for index in indices:
        image, dialogue = dialogue_sample(seed, index, config.train.kind_weights, config.image_size)
        batch.images.append(image)
        batch.prompts.append(dialogue.prompt)
        batch.answers.append(dialogue.answer)
        batch.kinds.append(dialogue.kind)
        batch.rules.append(dialogue.rule)
    return batch


@torch.no_grad()
def answer_accuracy(model: Qwen2_5_VLForConditionalGeneration, processor: WordLevelProcessor, data: DialogueBatch,
                    max_tokens: int, batch: int = 64) -> dict[str, Any]:
    """Teacher-forced answer accuracy: `exact` (every answer token right, which is what greedy decoding would
    produce) and `first` (the first answer token: the cell, for grounding) per question kind and per refer rule."""
    was_training = model.training
    model.eval()
    exact, first = [], []
    for start in range(0, len(data.prompts), batch):
        part = slice(start, start + batch)
        inputs = tokenise(processor, data.images[part], data.prompts[part], data.answers[part], max_tokens)
        labels = inputs.pop("labels")
        predicted = model(**inputs, use_cache=False).logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        scored = target != -100
        right = (predicted == target) | ~scored
        exact += right.all(1).tolist()
        first_position = scored.float().argmax(1)
        first += right[torch.arange(len(target)), first_position].tolist()
    model.train(was_training)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (kind, rule) in enumerate(zip(data.kinds, data.rules, strict=True)):
        groups[f"kind_{kind}"].append(i)
        if rule:
            groups[f"rule_{rule}"].append(i)
    result: dict[str, Any] = {"exact": float(np.mean(exact)), "n": len(exact)}
    for name, members in sorted(groups.items()):
        result[f"exact_{name}"] = float(np.mean([exact[i] for i in members]))
        result[f"first_{name}"] = float(np.mean([first[i] for i in members]))
    return result


def train_vlm(config: VLMConfig, out: Path, resume: bool = False, new_schedule: bool = False) -> dict[str, Any]:
    """Next-token pretraining on fresh scenes every step; validation on a held-out stream."""
    train = config.train
    torch.manual_seed(train.seed)
    model, processor = build_vlm(config)
    accelerator = make_accelerator()
    main = accelerator.is_main_process
    val = draw_dialogues(train.seed + VAL_SEED_OFFSET, range(train.val_samples), config) if main else None
    run = begin_training(out, model, model.parameters(), train, resume=resume, new_schedule=new_schedule)
    prepared, optimizer = accelerator.prepare(model, run.optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    loop = StepLoop(accelerator=accelerator, model=model, parameters=model.parameters(), optimizer=optimizer,
                    schedule=run.schedule, ema=run.ema, checkpoint=run.checkpoint,
                    log=JsonlLog(out / "log.jsonl", main), stage="vlm", train=train, start=run.start,
                    wall_before=run.wall_before)
    for step in loop.steps():
        first_index = (step * world + rank) * train.batch_size  # every (step, rank) draws its own fresh scenes
        data = draw_dialogues(train.seed, range(first_index, first_index + train.batch_size), config)
        inputs = tokenise(processor, data.images, data.prompts, data.answers, config.encoder.max_tokens)
        loop.learning_rate(step)
        loss = prepared(**{k: v.to(accelerator.device) for k, v in inputs.items()}, use_cache=False).loss
        if loop.step(step, loss, validate=lambda: {"val": answer_accuracy(model, processor, val,
                                                                          config.encoder.max_tokens)}):
            break
    if not loop.finish():
        return {}
    with averaged(run.ema):
        metrics = {"step": loop.done, "wall_seconds": loop.wall(),
                   "val": answer_accuracy(model, processor, val, config.encoder.max_tokens)}
        save_foundation(model, processor, config, out / "final")
    (out / "final" / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    loop.log.write({"stage": "vlm", "final": metrics})
    return metrics


def save_foundation(model: Qwen2_5_VLForConditionalGeneration, processor: WordLevelProcessor, config: VLMConfig,
                    directory: Path) -> None:
    """Weights (safetensors), processor and foundation.json in one directory."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save(directory)
    record = {"answer_word": ANSWER, "end_word": END, "config": config.to_dict()}
    (directory / FOUNDATION_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def load_foundation(directory: str | Path) -> tuple[Qwen2_5_VLForConditionalGeneration, WordLevelProcessor, VLMConfig]:
    """The whole foundation (language-model head included) as `save_foundation` wrote it."""
    directory = Path(directory)
    record = _read_record(directory)
    config = VLMConfig()
    apply_nested(config, record["config"], source=str(directory / FOUNDATION_FILE))
    check_checkpoint(directory, lambda values: Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_dict(values)))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(directory, use_safetensors=True)
    return model, load_processor(directory), config


def load_foundation_encoder(directory: str | Path, dtype: torch.dtype = torch.float32
                            ) -> tuple[Qwen2_5_VLModel, WordLevelProcessor, str]:
    """What GenMask adapts: the foundation without its language-model head, its processor, and the prompt
    suffix (" " + the answer word) after which its hidden states were trained to answer."""
    directory = Path(directory)
    record = _read_record(directory)
    check_checkpoint(directory, lambda values: Qwen2_5_VLModel(Qwen2_5_VLConfig.from_dict(values)))
    encoder = Qwen2_5_VLModel.from_pretrained(directory, use_safetensors=True, torch_dtype=dtype)
    return encoder, load_processor(directory), " " + record["answer_word"]


def _read_record(directory: Path) -> dict[str, Any]:
    path = directory / FOUNDATION_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a VLM foundation directory (made by `bench train --model genmask-vlm`)")
    return read_json_object(path)


class VLMTrainer(Trainer):
    """`bench train --model genmask-vlm`: pretrain the tiny Qwen2.5-VL foundation on synthetic scenes."""

    name = "genmask-vlm"
    description = "Pretrain the tiny Qwen2.5-VL foundation (captions, questions, grounding) that GenMask adapts."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", default="tiny", help=f"named preset: {', '.join(PRESETS)} (default tiny)")
        parser.add_argument("--config", help="JSON or TOML file of (nested) config overrides")
        parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.steps=2000")

    @classmethod
    def run(cls, args: argparse.Namespace) -> int:
        config = vlm_preset(args.preset)
        if args.config:
            load_override_file(config, args.config)  # type: ignore[arg-type]
        apply_overrides(config, args.overrides)  # type: ignore[arg-type]
        torch.set_num_threads(config.train.threads)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if launched_as_main():
            (out / "config-vlm.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
        metrics = train_vlm(config, out, args.resume, args.new_schedule)
        if launched_as_main():
            print_summary(metrics, out)
        return 0
