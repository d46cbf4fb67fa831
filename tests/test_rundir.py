"""The run directory's shared pieces: the one failure summary (bench.rundir.outcome)."""

from __future__ import annotations

from bench.rundir.outcome import OutcomeTally


def _failed(sample_id: str, error: str) -> dict:
    return {"sample_id": sample_id, "status": "failed", "error": error}


def test_failure_summary_counts_the_most_frequent_reasons():
    errors = ["a"] * 3 + ["b"] * 5 + ["c", "d", "e"]
    records = [_failed(str(i), e) for i, e in enumerate(errors)]
    records.append({"sample_id": "ok", "status": "ok", "error": None, "area": 3})
    (warning,) = OutcomeTally.of("s", "val", records).warnings()
    assert warning == "s/val: 11 of 12 samples failed (5 x b; 3 x a; 1 x c; and 2 other reasons); first: 0"


def test_failure_summary_breaks_ties_by_first_failure_and_says_when_every_mask_is_empty():
    records = [_failed("7", "late"), {"sample_id": "1", "status": "ok", "error": None, "area": 0}, _failed("3", "early")]
    assert OutcomeTally.of("s", "test", records).warnings() == [
        "s/test: 2 of 3 samples failed (1 x late; 1 x early); first: 7", "s/test: every predicted mask is empty"]
    assert OutcomeTally.of("s", "test", []).warnings() == []  # nothing scored: nothing to say


def test_the_tally_streams_and_counts_what_was_predicted():
    tally = OutcomeTally("s", "val")
    tally.add({"sample_id": "1", "status": "ok", "error": None, "area": 4}, predicted=True)
    tally.add(_failed("2", "missing from the predictions file"), predicted=False)
    assert (tally.n, tally.n_predicted, tally.n_failed) == (2, 1, 1)
    assert tally.warnings() == ["s/val: 1 of 2 samples failed (1 x missing from the predictions file); first: 2"]
