"""Hostile and broken input as small generated fixtures: each fails its own sample, or exits 2 naming the file."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from bench.cli import main
from bench.masks import encode_rle
from bench.suites.base import MAX_IMAGE_PIXELS
from bench.suites.refer import RefCOCO

SQUARE = [[4, 4, 20, 4, 20, 20, 4, 20]]


def run(root: Path, out: Path, suite: str = "refcoco", split: str = "val") -> dict[str, dict]:
    """`bench run` with the oracle; the records by sample id."""
    assert main(["run", "--suite", suite, "--split", split, "--model", "oracle", "--data-root", str(root), "--out",
                 str(out), "--no-progress", "--bootstrap", "0", "--workers", "0"]) == 0
    return {r["sample_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and whose single row of data is empty."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def write_reasonseg(reasonseg_sample):
    """Factory: `write_reasonseg(root, stem, size=None, image=None)`, a ReasonSeg val pair; `size` overrides
    imageHeight/imageWidth (None: removed), `image` the image bytes."""

    def write(root: Path, stem: str, size: tuple[int, int] | None = None, image: bytes | None = None) -> Path:
        split_dir = reasonseg_sample(root, stem)
        annotation = json.loads((split_dir / f"{stem}.json").read_text())
        annotation.pop("imageHeight"), annotation.pop("imageWidth")
        if size is not None:
            annotation["imageHeight"], annotation["imageWidth"] = size
        (split_dir / f"{stem}.json").write_text(json.dumps(annotation))
        if image is not None:
            (split_dir / f"{stem}.png").write_bytes(image)
        return root

    return write


def test_a_huge_declared_image_size_in_instances_json_fails_its_sample(tmp_path, write_refer):
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64},
                                           {"id": 2, "height": 100_000, "width": 100_000}], [SQUARE, SQUARE])
    records = run(root, tmp_path / "out")  # pycocotools used to crash the interpreter here
    assert records["1"]["status"] == "ok"
    assert records["2"]["status"] == "failed" and f"exceeds the limit of {MAX_IMAGE_PIXELS} pixels" in records["2"]["error"]


def test_an_rle_of_another_size_fails_before_it_is_decoded(tmp_path, write_refer):
    huge = {"size": [100_000, 100_000], "counts": "0"}
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}, {"id": 2, "height": 64, "width": 64}],
                       [huge, [encode_rle(np.ones((64, 64), bool))]])  # the second: a list of RLEs, as LISA accepts
    records = run(root, tmp_path / "out")
    assert records["1"]["status"] == "failed"
    assert "RLE size (100000, 100000) != image size (64, 64)" in records["1"]["error"]
    assert records["2"]["status"] == "ok" and records["2"]["area"] == 64 * 64


def test_a_file_name_leaving_the_data_root_is_refused(tmp_path, write_refer):
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(outside)
    escape = "../../../../../../secret.png"
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64, "file_name": escape},
                                           {"id": 2, "height": 64, "width": 64, "file_name": str(outside)}],
                       [SQUARE, SQUARE])
    image_dir = root / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
    assert (image_dir / escape).resolve() == outside.resolve()  # it would be read without the check
    records = run(root, tmp_path / "out")
    for sample_id in ("1", "2"):
        assert records[sample_id]["status"] == "failed" and "leaves the image directory" in records[sample_id]["error"]


def test_reasonseg_huge_declared_size_fails_its_sample(tmp_path, write_reasonseg):
    root = write_reasonseg(tmp_path / "data", "image_1", size=(64, 64))
    write_reasonseg(root, "image_2", size=(100_000, 100_000))  # used to raise MemoryError
    records = run(root, tmp_path / "out", suite="reasonseg")
    assert records["image_1"]["status"] == "ok"
    assert records["image_2"]["status"] == "failed" and "exceeds the limit" in records["image_2"]["error"]


def test_a_decompression_bomb_header_fails_its_sample_not_the_suite(tmp_path, write_reasonseg):
    root = write_reasonseg(tmp_path / "data", "image_1")
    write_reasonseg(root, "image_2", image=png_header(30_000, 30_000))  # size read from the header: a bomb
    records = run(root, tmp_path / "out", suite="reasonseg")
    assert records["image_1"]["status"] == "ok"
    assert records["image_2"]["status"] == "failed" and "decompression bomb" in records["image_2"]["error"]


def test_an_oversize_image_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch, write_reasonseg):
    big = tmp_path / "big.png"
    Image.new("1", (12_000, 12_000)).save(big)  # 144 Mpx, a few kB on disk
    root = write_reasonseg(tmp_path / "data", "image_1", size=(12_000, 12_000), image=big.read_bytes())

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    records = run(root, tmp_path / "out", suite="reasonseg")
    assert records["image_1"]["status"] == "failed"
    assert "image: image size 12000x12000 is not positive or exceeds the limit" in records["image_1"]["error"]


def test_a_symlink_loop_exits_2_naming_the_file(tmp_path, capsys, write_reasonseg):
    root = write_reasonseg(tmp_path / "data", "image_1")
    loop = root / "reason_seg" / "ReasonSeg" / "val" / "image_2.json"
    loop.symlink_to(loop.name)
    code = main(["run", "--suite", "reasonseg", "--split", "val", "--model", "oracle", "--data-root", str(root),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"{loop}: cannot read" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused input leaves no run directory behind


def test_an_image_symlink_loop_fails_its_sample(tmp_path, write_reasonseg):
    root = write_reasonseg(tmp_path / "data", "image_1", size=(64, 64))
    image = root / "reason_seg" / "ReasonSeg" / "val" / "image_1.png"
    image.unlink()
    image.symlink_to(image.name)
    records = run(root, tmp_path / "out", suite="reasonseg")
    assert records["image_1"]["status"] == "failed" and "cannot read image" in records["image_1"]["error"]


@pytest.mark.parametrize("image", [{"id": 1, "height": "64", "width": 64}, {"id": 1, "width": 64}])
def test_malformed_image_entries_name_the_file(tmp_path, image, write_refer):
    root = write_refer(tmp_path / "data", [image], [SQUARE])
    with pytest.raises(Exception, match=r"instances.json: image 1 needs integer 'height'"):
        RefCOCO(root).samples("val")


def test_json_lines_with_raw_line_separators_inside_strings_are_read(tmp_path):
    from bench.training.log import read_log

    records = [{"step": 1, "note": "a\u2028b\u0085c\x1cd"}, {"step": 2, "note": "e"}]
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    assert read_log(path) == records
