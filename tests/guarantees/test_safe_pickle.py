"""The restricted refs(*.p) reader: plain data loads, anything that imports or calls is refused."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest

from bench.errors import DataFormatError
from bench.safe_pickle import load_refs_pickle
from bench.suites.writers import make_ref


class Python2StrPickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING), as the real refs files contain."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


class RunsShellOnLoad:
    """A pickle payload that would create `marker` through os.system when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def test_plain_refs_round_trip(tmp_path):
    refs = [make_ref(1, 10, 100, 3, "val", [(7, "the man"), (8, "left guy")])]
    assert load_refs_pickle(write_pickle(tmp_path / "refs(unc).p", refs)) == refs


def test_python2_byte_strings_are_decoded(tmp_path):
    ref = {
        b"ref_id": 1,
        b"ann_id": 2,
        b"image_id": 3,
        b"split": b"testA",
        b"sentences": [
            {b"sent_id": 4, b"sent": "café".encode()},
            {b"sent_id": 5, b"sent": "naïve".encode("latin-1")},
        ],
    }
    path = tmp_path / "refs(unc).p"
    with open(path, "wb") as f:
        Python2StrPickler(f, protocol=2).dump([ref])
    (loaded,) = load_refs_pickle(path)
    assert loaded["split"] == "testA"
    assert [s["sent"] for s in loaded["sentences"]] == ["café", "naïve"]


def test_pickle_calling_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "evil.p", [RunsShellOnLoad(marker)])
    with pytest.raises(DataFormatError) as info:
        load_refs_pickle(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{os.system.__module__}.system" in message
    assert not marker.exists()


def test_pickle_of_a_class_instance_is_refused(tmp_path):
    path = write_pickle(tmp_path / "refs.p", [Path("x")])
    with pytest.raises(DataFormatError, match="refusing pickled global pathlib"):
        load_refs_pickle(path)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", None])
def test_truncated_or_garbage_file_names_the_file(tmp_path, content):
    path = tmp_path / "refs(unc).p"
    if content is None:  # a valid pickle cut in half
        content = pickle.dumps([make_ref(1, 2, 3, 4, "val", [(5, "a dog")])], protocol=2)[:40]
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: not a readable pickle"):
        load_refs_pickle(path)


def test_structure_errors_name_the_entry(tmp_path):
    good = make_ref(1, 2, 3, 4, "val", [(5, "a dog")])
    lacks_ann = {k: v for k, v in good.items() if k != "ann_id"}
    with pytest.raises(DataFormatError, match="entry 1 lacks ann_id"):
        load_refs_pickle(write_pickle(tmp_path / "a.p", [good, lacks_ann]))
    bad_sentence = {**good, "sentences": [{"sent_id": 9}]}
    with pytest.raises(DataFormatError, match="entry 0, sentence 0"):
        load_refs_pickle(write_pickle(tmp_path / "b.p", [bad_sentence]))
    with pytest.raises(DataFormatError, match="expected a list"):
        load_refs_pickle(write_pickle(tmp_path / "c.p", {"refs": []}))


def test_shared_references_that_expand_to_gigabytes_are_refused(tmp_path):
    bomb = ["x" * 64]
    for _ in range(30):  # each level refers twice to the one below: 2**30 leaves once expanded
        bomb = [bomb, bomb]
    path = write_pickle(tmp_path / "refs(unc).p", bomb)
    assert path.stat().st_size < 1000
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: refusing data that expands beyond"):
        load_refs_pickle(path)


def test_deep_nesting_and_self_reference_are_refused(tmp_path):
    deep: list = []
    for _ in range(100):
        deep = [deep]
    cycle: list = []
    cycle.append(cycle)
    for name, data in (("deep.p", deep), ("cycle.p", cycle)):
        with pytest.raises(DataFormatError, match=f"{name}: refusing data nested deeper .* or containing itself"):
            load_refs_pickle(write_pickle(tmp_path / name, data))


def test_a_forged_memo_index_or_length_allocates_nothing(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    huge_memo = b"\x80\x02]r\xf0\xff\xff\xff."  # LONG_BINPUT 4294967280: an array memo would take 32 GiB
    huge_bytes = b"\x80\x02B\xff\xff\xff\x7fabc."  # BINBYTES of 2 GiB with 3 bytes present
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, hard))  # far below either allocation
    try:
        path = tmp_path / "memo.p"
        path.write_bytes(huge_memo)
        assert load_refs_pickle(path) == []  # the memo is a dict: one entry, whatever its number
        path.write_bytes(huge_bytes)
        with pytest.raises(DataFormatError, match="not a readable pickle"):
            load_refs_pickle(path)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _pure_load(path: Path):
    """What the restricted pure-Python unpickler alone makes of a file (the reference for the fast path)."""
    from bench import safe_pickle

    data = safe_pickle._RefusingUnpickler(io.BytesIO(path.read_bytes()), path).load()
    return safe_pickle._decode_bytes(data) if safe_pickle._check_expansion(data, path) else data


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_fast_path_loads_what_the_pure_unpickler_loads(tmp_path, protocol):
    from bench.safe_pickle import plain_and_bounded

    refs = [make_ref(i, 10 + i, 100 + i, 3, ["val", "testA"][i % 2], [(7 * i, "the man"), (7 * i + 1, "é ü")])
            for i in range(300)]  # more than 256 memo entries: LONG_BINPUT
    refs[0]["extra"] = {"floats": [0.5, -1e300], "big": 2**70, "tuple": (1, None, True)}
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=protocol))
    assert plain_and_bounded(path.read_bytes())
    assert load_refs_pickle(path) == _pure_load(path) == refs


def test_scan_sends_anything_unusual_to_the_pure_unpickler():
    from bench.safe_pickle import plain_and_bounded

    good = pickle.dumps([{"a": "b" * 300}] * 2, protocol=2)
    assert plain_and_bounded(good)
    assert not plain_and_bounded(pickle.dumps(Path("x"), protocol=2))  # a global
    assert not plain_and_bounded(b"\x80\x02]r\xf0\xff\xff\xff.")  # a memo index no pickler writes
    assert not plain_and_bounded(b"(lp99999999\n.")  # the same, protocol 0
    assert not plain_and_bounded(b"\x80\x02B\xff\xff\xff\x7fabc.")  # a length beyond the file
    assert not plain_and_bounded(b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00N.")  # a frame beyond the file
    assert not plain_and_bounded(good[:-1])  # no STOP
    assert not plain_and_bounded(b"")


def test_mutated_pickles_load_as_the_pure_unpickler_does_or_are_refused(tmp_path):
    import random

    rng = random.Random(0)
    base = pickle.dumps([make_ref(i, i, i, 1, "val", [(i, "a b")]) for i in range(40)], protocol=2)
    path = tmp_path / "refs(unc).p"
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            expected = _pure_load(path)
        except Exception:  # noqa: BLE001 - the reference refuses it in some way: the loader must refuse too
            expected = DataFormatError
        try:
            got = load_refs_pickle(path)
        except DataFormatError:
            got = DataFormatError
        if got is not DataFormatError:
            assert got == expected
