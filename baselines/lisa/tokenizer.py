"""LISA's tokenizer as LISA's own code runs it, read from the files LISA saves.

LISA (`train_ds.py`, `chat.py`, `merge_lora_weights_and_save_hf_model.py`) loads LLaMA's tokenizer with
`AutoTokenizer.from_pretrained(..., use_fast=False)` under transformers 4.31, adds `[SEG]` and then `<im_start>`,
`<im_end>`, and saves the slow tokenizer: `tokenizer.model` (sentencepiece), `added_tokens.json`,
`special_tokens_map.json`, `tokenizer_config.json` (no `tokenizer.json`). Later transformers convert these files to
a fast tokenizer that keeps the whitespace around the added tokens, so the prompt's ids would differ from LISA's;
this module reproduces 4.31's slow `LlamaTokenizer` on sentencepiece directly:

- the text is split at the added and special tokens (longest first); the whitespace on both sides of a token is
  stripped unless it is an `AddedToken` whose `lstrip`/`rstrip` say otherwise (4.31 wraps bos/eos/unk in
  `AddedToken(lstrip=False, rstrip=False)`; `[SEG]`, `<im_start>`, `<im_end>` are plain strings: stripped);
- every other piece is encoded by sentencepiece on its own (each gets sentencepiece's "▁" dummy prefix); with
  `"legacy": false` in tokenizer_config.json, 4.31's non-legacy variant instead (a piece that follows a token loses
  its leading "▁", which may make it `<unk>`, exactly as 4.31 does);
- BOS is prepended (`add_bos_token`), EOS appended only with `add_eos_token`.

A LLaVA tokenizer directory without LISA's tokens gets them as `train_ds.py` adds them (`[SEG]`, `<im_start>`,
`<im_end>`, ids after the existing vocabulary).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

LISA_TOKENS = ("[SEG]", "<im_start>", "<im_end>")  # in the order train_ds.py adds them
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
LLAMA_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
UNDERLINE = "▁"
SLOW_FILES = "tokenizer.model, added_tokens.json, special_tokens_map.json, tokenizer_config.json"


class MissingDependencyError(ImportError, ValueError):
    """A package that LISA's files need is not installed (a ValueError too, so `bench run` reports it cleanly)."""


def require(module: str, purpose: str) -> Any:
    """Import `module`, or raise MissingDependencyError naming it and what needs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(f"{purpose} needs the {module!r} package, which is not installed "
                                     f"(pip install {module}; genmask-bench declares it)") from error


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _content(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


class LisaTokenizer:
    """transformers 4.31's slow LlamaTokenizer over LISA's saved files (see the module docstring)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if not (directory / "tokenizer.model").exists():
            raise FileNotFoundError(f"{directory}: no tokenizer.model; LISA saves its slow LLaMA tokenizer "
                                    f"({SLOW_FILES})")
        sentencepiece = require("sentencepiece", f"LISA's tokenizer ({directory / 'tokenizer.model'})")
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        config = _json(directory / "tokenizer_config.json")
        special_map = _json(directory / "special_tokens_map.json")
        self.legacy = bool(config.get("legacy", True))
        self.add_bos, self.add_eos = bool(config.get("add_bos_token", True)), bool(config.get("add_eos_token", False))
        self.added: dict[str, int] = {k: int(v) for k, v in _json(directory / "added_tokens.json").items()}
        for token in LISA_TOKENS:
            if token not in self.added and self.sp.piece_to_id(token) == self.sp.unk_id():
                self.added[token] = len(self)
        # special tokens as 4.31 ends up with them: tokenizer_config.json's (LlamaTokenizer wraps a string in
        # AddedToken(lstrip=False, rstrip=False)), replaced by special_tokens_map.json's (a string stays a string)
        values: dict[str, Any] = {}
        for name in (*SPECIAL_NAMES, "additional_special_tokens"):
            value = config.get(name, LLAMA_SPECIALS.get(name))
            if isinstance(value, str) and name in SPECIAL_NAMES:
                value = {"content": value, "lstrip": False, "rstrip": False}
            if special_map.get(name) is not None:
                value = special_map[name]
            if value is not None:
                values[name] = value
        tokens = [v for value in values.values() for v in (value if isinstance(value, list) else [value])]
        self.specials = {name: _content(value) for name, value in values.items() if name in SPECIAL_NAMES}
        # (lstrip, rstrip) of the AddedToken specials; any other token strips the whitespace on both sides
        self.strip_flags = {v["content"]: (bool(v.get("lstrip")), bool(v.get("rstrip")))
                            for v in tokens if isinstance(v, dict)}
        self.no_split = set(self.added) | {_content(v) for v in tokens}
        alternatives = sorted(self.no_split, key=len, reverse=True)
        self.splitter = re.compile("(" + "|".join(re.escape(t) for t in alternatives) + ")")
        self.inverse = {index: token for token, index in self.added.items()}

    def __len__(self) -> int:
        return self.sp.get_piece_size() + len(self.added)

    def token_id(self, token: str) -> int:
        return self.added[token] if token in self.added else self.sp.piece_to_id(token)

    @property
    def bos_token_id(self) -> int:
        return self.token_id(self.specials["bos_token"])

    @property
    def eos_token_id(self) -> int:
        return self.token_id(self.specials["eos_token"])

    @property
    def unk_token_id(self) -> int:
        return self.token_id(self.specials["unk_token"])

    @property
    def pad_token_id(self) -> int:
        return self.token_id(self.specials.get("pad_token", self.specials["unk_token"]))  # LISA: pad = unk

    def tokenize(self, text: str) -> list[str]:
        """4.31's `LlamaTokenizer.tokenize`: split at tokens, strip around them, sentencepiece the rest."""
        if not self.legacy:
            text = UNDERLINE + text.replace(UNDERLINE, " ")
        parts = self.splitter.split(text)
        for i, part in enumerate(parts):
            if part not in self.no_split:
                continue
            lstrip, rstrip = self.strip_flags.get(part, (True, True))
            if rstrip and i + 1 < len(parts) and parts[i + 1]:
                parts[i + 1] = parts[i + 1].lstrip()
            if lstrip and i > 0 and parts[i - 1]:
                parts[i - 1] = parts[i - 1].rstrip()
        pieces: list[str] = []
        for part in parts:
            if part:
                pieces.extend([part] if part in self.no_split else self._sentencepiece(part))
        return pieces

    def _sentencepiece(self, text: str) -> list[str]:
        if self.legacy:
            return self.sp.encode(text, out_type=str)
        first = text.startswith(UNDERLINE)
        text = text[1:] if first else text
        pieces = self.sp.encode(text, out_type=str)
        if not first and not text.startswith(" ") and pieces and pieces[0].startswith(UNDERLINE):
            pieces = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
        return pieces

    def encode(self, text: str) -> list[int]:
        """`tokenizer(text).input_ids` under 4.31: BOS, the pieces' ids (unknown pieces: unk), EOS if configured."""
        ids = [self.token_id(piece) for piece in self.tokenize(text)]
        return [self.bos_token_id] * self.add_bos + ids + [self.eos_token_id] * self.add_eos

    def decode(self, ids: list[int]) -> str:
        """The text of ids (added tokens as they are written), for display."""
        out, run = [], []
        for index in [int(i) for i in ids] + [-1]:
            if index in self.inverse or index == -1:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if index != -1:
                    out.append(self.inverse[index])
            elif 0 <= index < self.sp.get_piece_size():
                run.append(index)
        return " ".join(part for part in out if part)
