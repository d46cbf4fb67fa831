"""The predictions file: lines split on b"\\n" only, every RLE validated, bad lines named, tails repaired."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.errors import DataFormatError
from bench.masks import encode_rle
from bench.rundir.predictions import index_predictions, iter_records, read_predictions

GOOD = encode_rle(np.eye(4, dtype=bool))


def write_lines(path, *lines: str | bytes) -> None:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))


def line(sample_id: str, segmentation=GOOD, **extra) -> str:
    return json.dumps({"sample_id": sample_id, "segmentation": segmentation, **extra}, ensure_ascii=False)


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\u2029", "\x1c"])
def test_unicode_line_separators_inside_strings_are_not_line_ends(tmp_path, separator):
    path = tmp_path / "p.jsonl"
    write_lines(path, line(f"a{separator}b"), line("c"))
    assert [(n, r["sample_id"]) for n, r in iter_records(path)] == [(1, f"a{separator}b"), (2, "c")]


BAD_LINES = {
    "short RLE": (line("b", {"size": [4, 4], "counts": "61"}), "counts cover 7 pixels, size 4x4 needs 16"),
    "long RLE": (line("b", {"size": [2, 2], "counts": "61"}), "counts cover 7 pixels"),
    "garbage counts": (line("b", {"size": [4, 4], "counts": "\u00e9\u00e9"}), "not ASCII"),
    "negative run": (line("b", {"size": [2, 2], "counts": [5, -1]}), "uncompressed counts must lie in"),
    "overflowing run": (line("b", {"size": [2, 2], "counts": [2**80, 0]}), "uncompressed counts must lie in"),
    "bad size": (line("b", {"size": [2, "2"], "counts": "4"}), "size must be"),
    "deep nesting": ('{"sample_id": "b", "segmentation": ' + "[" * 100_000 + "]" * 100_000 + "}", "RecursionError"),
    "huge integer": ('{"sample_id": "b", "segmentation": null, "iou": ' + "9" * 5000 + "}", "not valid JSON"),
    "not JSON": ("{nope", "not valid JSON"),
    "no sample_id": (json.dumps({"segmentation": None}), "string 'sample_id'"),
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_a_bad_line_is_an_error_naming_the_file_and_line(tmp_path, name):
    bad, reason = BAD_LINES[name]
    path = tmp_path / "p.jsonl"
    write_lines(path, line("a"), bad)
    with pytest.raises(DataFormatError) as info:
        read_predictions(path)  # indexed, then each line read back and its RLE validated
    assert str(info.value).startswith(f"{path}:2: ") and reason in str(info.value)


def test_index_keeps_offsets_and_reads_back_the_records(tmp_path):
    path = tmp_path / "p.jsonl"
    write_lines(path, line("a", split="val"), "", line("b", None, split="test"), line("c", split="val"))
    index, left_out = index_predictions(path, split="val")
    assert sorted(index) == ["a", "c"] and index["c"][0] == 4 and left_out == 1
    records, _ = read_predictions(path, split="val")
    assert records["c"]["sample_id"] == "c" and records["c"]["segmentation"] == GOOD
    index, left_out = index_predictions(path, split="testA")  # no line carries it: every line is used
    assert sorted(index) == ["a", "b", "c"] and left_out == 0


def test_duplicates_count_only_among_the_used_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    write_lines(path, line("a", split="val"), line("a", split="test"), line("a", split="test"))
    assert sorted(index_predictions(path, split="val")[0]) == ["a"]
    with pytest.raises(DataFormatError, match=r":2: duplicated sample_id 'a' \(first on line 1\)"):
        index_predictions(path)


@pytest.mark.parametrize("content, kept", [("", ""), ('{"sample_id": "a"', ""), ("A\n", "A\n"),
                                           ("A\nA2\n{torn", "A\nA2\n")])
def test_repair_tail_cuts_only_an_unterminated_last_line(tmp_path, content, kept):
    lines = {"A": line("a"), "A2": line("a2")}

    def expand(text: str) -> str:
        return "\n".join(lines.get(part, part) for part in text.split("\n"))

    path = tmp_path / "p.jsonl"
    path.write_text(expand(content))
    records = [r["sample_id"] for _, r in iter_records(path, repair_tail=True)]
    assert path.read_text() == expand(kept) and len(records) == kept.count("\n")
