"""A qualitative gallery per measured suite, as segmentation papers show one: for a few samples, the image with
its instruction, the ground truth and each model's mask side by side, in one PNG (deterministic bytes).

Models: the suite's shown leaderboard runs that learned something (trivial and context baselines, rules, are
left out; oracle's mask is the ground truth) and have a predictions file, one run per model name (its first training
seed: the others are the same recipe again). Masks are decoded from the predictions'
RLE; images and ground truth are read through the suite's loader, built as the first such run's spec built it
(data root and suite options).

Selection (automatic): among the samples every model predicted, the DISAGREE samples whose per-sample IoU
spreads most across the models (max - min), then AGREE samples drawn among those whose spread is at most
AGREE_SPREAD (the least spread ones when too few are), both in a fixed, seeded order per suite: the same runs
give the same selection. The ground truth read here must give each shown sample the intersection and union its
predictions record holds (the data themselves are checked, whatever their recorded fingerprint). `bench report --gallery SUITE/SPLIT/SAMPLE_ID ...` replaces it, for the suites it
names, by the user's own samples, in the order given; an id no model predicted is an error.
"""

from __future__ import annotations

import io
import textwrap
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.masks import RLEError, decode_rle, rle_size
from bench.metrics import Protocol, intersection_union
from bench.report.compare import ReportContext, protocol_of
from bench.report.data import open_suite
from bench.report.groups import MODEL, row_kind
from bench.report.marks import marked_name
from bench.report.read_runs import Run
from bench.report.text import (
    SPLIT_ORDER,
    error_reason,
    link,
    link_text,
    markdown_table,
    md,
    ordered_splits,
    portable,
    slug,
)

Files = dict[str, bytes]
GALLERY_SEED = 0
DISAGREE = 3  # samples where the models disagree most
AGREE = 3  # samples where they agree
AGREE_SPREAD = 0.1  # at most this IoU spread counts as agreement
ROWS_PER_IMAGE = 6  # a longer user selection is split over several PNGs
CELL = 128  # pixels of one image or mask panel (longest side)
PAD = 6
FONT_SIZE = 11
GT_COLOUR = (0, 150, 70)
PRED_COLOUR = (30, 90, 220)
IGNORE_COLOUR = (150, 150, 150)


@dataclass(frozen=True)
class Pick:
    """A sample chosen for the gallery and why."""

    split: str
    sample_id: str
    reason: str  # "disagree", "agree", "least spread" (too few agree) or "requested"
    spread: float | None  # max - min per-sample IoU over the models that predicted it


def parse_requests(ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """SUITE/SPLIT/SAMPLE_ID strings -> suite -> [(split, sample id)] in the given order (duplicates kept once)."""
    requests: dict[str, list[tuple[str, str]]] = {}
    for text in ids:
        parts = text.split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise BenchError(f"--gallery {text!r}: expected SUITE/SPLIT/SAMPLE_ID, e.g. synthref/testA/3218")
        suite, split, sample_id = parts
        if (split, sample_id) not in requests.setdefault(suite, []):
            requests[suite].append((split, sample_id))
    return requests


def check_requested_suites(requests: dict[str, list[tuple[str, str]]], runs: list[Run]) -> None:
    """Every suite the user names must have a measured leaderboard run."""
    measured = sorted({suite for run in runs for suite in run.results})
    for suite in requests:
        if suite not in measured:
            raise BenchError(f"--gallery {suite}/...: no measured leaderboard run of suite {suite!r}; measured: "
                             f"{', '.join(measured) or 'none'}")


def _order_key(key: tuple[str, str]) -> tuple[int, int, int, str]:
    split, sample_id = key
    rank = SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)
    return (rank, 0 if sample_id.isdecimal() else 1, int(sample_id) if sample_id.isdecimal() else 0, sample_id)


def select_samples(suite: str, ious: Sequence[dict[tuple[str, str], float]], seed: int = GALLERY_SEED,
                   disagree: int = DISAGREE, agree: int = AGREE) -> list[Pick]:
    """The automatic selection from each model's (split, sample id) -> IoU: disagreements (largest spread
    first), then agreements, over the samples that every model predicted; ties and draws follow a permutation
    seeded by `seed` and the suite's name."""
    if not ious:
        return []
    common = sorted(set.intersection(*(set(by_sample) for by_sample in ious)), key=_order_key)
    if not common:
        return []
    spreads = np.array([max(m[key] for m in ious) - min(m[key] for m in ious) for key in common])
    order = np.random.default_rng([seed, zlib.crc32(suite.encode("utf-8"))]).permutation(len(common))
    rank = np.empty(len(common), dtype=np.int64)
    rank[order] = np.arange(len(common))
    by_spread = sorted(range(len(common)), key=lambda i: (-round(float(spreads[i]), 9), rank[i]))
    chosen = by_spread[:disagree]
    rest = [i for i in order.tolist() if i not in chosen]
    agreeing = [i for i in rest if spreads[i] <= AGREE_SPREAD]
    if len(agreeing) < agree:  # too few agree that closely: the least spread of the rest
        agreeing += sorted((i for i in rest if i not in agreeing), key=lambda i: (float(spreads[i]), rank[i]))
    picks = [Pick(*common[i], "disagree", float(spreads[i])) for i in chosen]
    return picks + [Pick(*common[i], "agree" if spreads[i] <= AGREE_SPREAD else "least spread", float(spreads[i]))
                    for i in agreeing[:agree]]


def requested_picks(suite: str, requested: list[tuple[str, str]],
                    ious: Sequence[dict[tuple[str, str], float]]) -> list[Pick]:
    """The user's samples, checked: each must be predicted by at least one model; BenchError otherwise."""
    known = set().union(*(set(by_sample) for by_sample in ious)) if ious else set()
    splits = ordered_splits(split for split, _ in known)
    picks = []
    for split, sample_id in requested:
        if split not in splits:
            raise BenchError(f"--gallery {suite}/{split}/{sample_id}: the models shown have no predictions of split "
                             f"{split!r} of {suite}; splits: {', '.join(splits) or 'none'}")
        if (split, sample_id) not in known:
            examples = ", ".join(sid for _, sid in sorted((k for k in known if k[0] == split), key=_order_key)[:3])
            raise BenchError(f"--gallery {suite}/{split}/{sample_id}: no model shown predicted a sample "
                             f"{sample_id!r} in {suite}/{split} (ids there look like: {examples})")
        values = [m[(split, sample_id)] for m in ious if (split, sample_id) in m]
        picks.append(Pick(split, sample_id, "requested", max(values) - min(values)))
    return picks


def _iou(record: dict[str, Any]) -> float:
    value = record.get("iou")
    return float(value) if isinstance(value, (int, float)) and record.get("status", "ok") == "ok" else 0.0


def gallery_section(suite: str, runs: list[Run], context: ReportContext, files: Files,
                    requested: list[tuple[str, str]] | None, page: str) -> list[str]:
    """The suite's gallery on `page`: markdown (figure and a table of the samples) and its PNG files; a short note
    when the data cannot be read; nothing when no learned model has predictions (unless samples were requested)."""
    shown: list[Run] = []
    for run in runs:  # sorted by name, then training seed
        if (row_kind(run) == MODEL and context.records(run, suite) is not None
                and all(run.display_name != other.display_name for other in shown)):
            shown.append(run)
    title = "## Gallery"
    if not shown:
        if requested:
            raise BenchError(f"--gallery {suite}/...: no learned model with predictions measured on {suite} "
                             f"(trivial and context baselines are not shown)")
        return []
    records = [{(split, r["sample_id"]): r for split, rs in context.records(run, suite).items() for r in rs}
               for run in shown]
    ious = [{key: _iou(record) for key, record in by_sample.items()} for by_sample in records]
    picks = requested_picks(suite, requested, ious) if requested else select_samples(suite, ious)
    if not picks:
        return [title, "", "No gallery: no sample was predicted by every model shown.", ""]
    try:
        samples = _load_samples(suite, shown, picks)
    except (BenchError, OSError, ValueError) as exc:
        if requested:
            raise BenchError(f"--gallery {suite}: cannot read the suite's data: {portable(str(exc))}") from None
        reason = error_reason(exc)
        return [title, "", f"No gallery: the suite's data cannot be read here ({md(reason)}).", ""]
    labels = [run.display_name for run in shown]
    rows = []
    for pick in picks:
        sample = samples[(pick.split, pick.sample_id)]
        image, target, error = _read(sample)
        masks = [_mask(by_sample.get((pick.split, pick.sample_id)), (sample.height, sample.width))
                 for by_sample in records]
        mismatch = _mismatch(pick, target, masks, [by_sample.get((pick.split, pick.sample_id)) for by_sample in records],
                             [protocol_of(run) for run in shown])
        if mismatch:
            if requested:
                raise BenchError(f"--gallery {suite}/{pick.split}/{pick.sample_id}: {mismatch}")
            return [title, "", f"No gallery: {md(mismatch)}.", ""]
        rows.append(GalleryRow(
            caption=f"{pick.split}/{pick.sample_id}: {sample.text}",
            tag=_reason_text(pick), image=image, target=target, masks=masks,
            ious=[by_sample.get((pick.split, pick.sample_id)) for by_sample in ious], error=error))
    lines = [title, ""]
    if requested:
        lines.append("Samples chosen by the user (`bench report --gallery SUITE/SPLIT/SAMPLE_ID ...`).")
    else:
        lines.append(
            f"A fixed, seeded selection (seed {GALLERY_SEED}): the {DISAGREE} samples whose per-sample IoU spreads "
            f"most across the models shown (max - min), then {AGREE} drawn among those where they agree (spread at "
            f"most {AGREE_SPREAD:g}; 'least spread' when too few do). Ground truth in green, each model's mask in blue over the image in grey; "
            "trivial and context baselines are left out. `bench report --gallery SUITE/SPLIT/SAMPLE_ID ...` shows your own "
            "samples instead.")
    lines.append("")
    for start in range(0, len(rows), ROWS_PER_IMAGE):
        number = start // ROWS_PER_IMAGE + 1
        path = f"plots/gallery/{slug(suite)}" + ("" if number == 1 else f"-{number}") + ".png"
        files[path] = gallery_png(labels, rows[start:start + ROWS_PER_IMAGE])
        lines += [f"![{link_text(suite)} gallery{'' if number == 1 else f' ({number})'}]({link(page, path)})", ""]
    table = [[md(f"{pick.split}/{pick.sample_id}"), md(row.caption.split(": ", 1)[1]), md(row.tag)]
             + ["–" if value is None else f"{100 * value:.1f}" for value in row.ious]
             for pick, row in zip(picks, rows, strict=True)]
    headers = ["sample", "instruction", "selected", *[f"{marked_name(run, suite)} IoU %" for run in shown]]
    return lines + [markdown_table(table, headers), ""]


def _reason_text(pick: Pick) -> str:
    spread = "" if pick.spread is None else f"IoU spread {pick.spread:.2f}"
    return f"{pick.reason} ({spread})"


def _load_samples(suite: str, runs: list[Run], picks: list[Pick]) -> dict[tuple[str, str], Any]:
    """The picked samples, read through the suite's loader as the first run's spec built it."""
    loaded = open_suite(suite, runs[0])
    samples = {}
    for split in dict.fromkeys(pick.split for pick in picks):
        by_id = {sample.sample_id: sample for sample in loaded.samples(split)}
        for pick in picks:
            if pick.split == split:
                if pick.sample_id not in by_id:
                    raise BenchError(f"{suite}/{split} has no sample {pick.sample_id!r} in the data found here")
                samples[(split, pick.sample_id)] = by_id[pick.sample_id]
    return samples


def _mismatch(pick: Pick, target: np.ndarray | None, masks: list[np.ndarray | None],
              records: list[dict[str, Any] | None], protocols: list[Protocol]) -> str | None:
    """Why the ground truth read here is not the one the runs were scored on (their intersection and union,
    recomputed from their masks, differ), or None. Checks the data themselves, whatever their fingerprint."""
    if target is None:
        return None
    for mask, record, protocol in zip(masks, records, protocols, strict=True):
        if mask is None or record is None or not {"intersection", "union"} <= set(record):
            continue
        if mask.shape != target.shape or intersection_union(mask, target, protocol) != (
                record["intersection"], record["union"]):
            return (f"the data found here are not those the runs were scored on (sample {pick.split}/"
                    f"{pick.sample_id}: its ground truth gives another intersection or union than recorded)")
    return None


def _read(sample: Any) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    from bench.loading import read_sample

    image, target, error = read_sample(sample)
    return image, target, None if error is None else portable(error)


def _mask(record: dict[str, Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """The record's mask, decoded only when its RLE is valid and of the sample's size (else None)."""
    if record is None or record.get("segmentation") is None:
        return None
    try:
        return decode_rle(record["segmentation"]) if rle_size(record["segmentation"]) == size else None
    except RLEError:
        return None


# ------------------------------------------------------------------------------------------------ rendering
@dataclass
class GalleryRow:
    """One sample: its caption, image, ground truth (0, 1, ignore) and each model's mask and IoU."""

    caption: str
    tag: str
    image: np.ndarray | None  # uint8 HxWx3
    target: np.ndarray | None  # uint8 HxW
    masks: list[np.ndarray | None]  # bool HxW per model (None: failed or not predicted)
    ious: list[float | None]
    error: str | None = None


@cache
def _font() -> Any:
    """DejaVu Sans as matplotlib ships it: the same glyphs on every machine."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), FONT_SIZE)


def _fit(array: np.ndarray, nearest: bool) -> Any:
    """An image or mask scaled so that its longest side is CELL pixels."""
    from PIL import Image

    height, width = array.shape[:2]
    scale = CELL / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.NEAREST if nearest or scale >= 1 else Image.BOX
    return Image.fromarray(array).resize(size, resample)


def _overlay(image: np.ndarray | None, shape: tuple[int, int], mask: np.ndarray | None,
             target: np.ndarray | None, colour: tuple[int, int, int]) -> np.ndarray:
    """The image in light grey with the mask (or the target's foreground, ignored pixels grey) in colour."""
    if image is not None:
        grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        grey = np.full(shape, 128, dtype=np.float32)
    base = np.repeat((0.5 * grey + 0.5 * 255)[..., None], 3, axis=2)
    out = base.copy()
    if target is not None:
        mask = (target != 0) & (target != 255)
        out[target == 255] = 0.4 * base[target == 255] + 0.6 * np.array(IGNORE_COLOUR, dtype=np.float32)
    if mask is not None and mask.shape == tuple(shape):
        out[mask] = 0.35 * base[mask] + 0.65 * np.array(colour, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _text_lines(text: str, width_px: int) -> list[str]:
    chars = max(8, width_px // 6)
    return textwrap.wrap(text, chars, max_lines=3, placeholder="…") or [""]


def gallery_png(labels: list[str], rows: list[GalleryRow]) -> bytes:
    """One PNG: a header with the column names, then per sample a caption line and its panels."""
    from PIL import Image, ImageDraw

    font = _font()
    line = FONT_SIZE + 5
    columns = 2 + len(labels)
    width = PAD + columns * (CELL + PAD)
    names = ["image", "ground truth", *labels]
    header_lines = max(len(_text_lines(name, CELL)) for name in names)
    caption_lines = [_text_lines(f"{row.caption}  [{row.tag}]", width - 2 * PAD)[:2] for row in rows]
    row_heights = [len(lines) * line + CELL + line + PAD for lines in caption_lines]
    height = PAD + header_lines * line + PAD + sum(row_heights)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, name in enumerate(names):
        for index, text in enumerate(_text_lines(name, CELL)):
            draw.text((PAD + column * (CELL + PAD), PAD + index * line), text, fill=(0, 0, 0), font=font)
    y = PAD + header_lines * line + PAD
    for row, lines, row_height in zip(rows, caption_lines, row_heights, strict=True):
        draw.line([(PAD, y - PAD // 2), (width - PAD, y - PAD // 2)], fill=(200, 200, 200))
        for index, text in enumerate(lines):
            draw.text((PAD, y + index * line), text, fill=(0, 0, 0), font=font)
        top = y + len(lines) * line
        shape = (row.image.shape[:2] if row.image is not None else
                 row.target.shape if row.target is not None else
                 next((m.shape for m in row.masks if m is not None), (CELL, CELL)))
        panels = [row.image if row.image is not None else _overlay(None, shape, None, None, GT_COLOUR),
                  _overlay(row.image, shape, None, row.target, GT_COLOUR)]
        panels += [_overlay(row.image, shape, mask, None, PRED_COLOUR) for mask in row.masks]
        texts = ["" if row.error is None else "unreadable", "" if row.target is not None else "no ground truth"]
        texts += ["no prediction" if mask is None else "" if iou is None else f"IoU {iou:.2f}"
                  for mask, iou in zip(row.masks, row.ious, strict=True)]
        for column, (panel, text) in enumerate(zip(panels, texts, strict=True)):
            fitted = _fit(panel, nearest=column > 0 and row.image is None)
            left = PAD + column * (CELL + PAD)
            canvas.paste(fitted, (left + (CELL - fitted.width) // 2, top + (CELL - fitted.height) // 2))
            draw.rectangle([left - 1, top - 1, left + CELL, top + CELL], outline=(210, 210, 210))
            if text:
                draw.text((left, top + CELL + 2), text, fill=(0, 0, 0), font=font)
        y += row_height
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
