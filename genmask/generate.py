"""Render images from captions with a GenMask DiT, and measure how well they match their captions.

    python -m genmask.generate "a red circle and a blue square" --model DIR --out DIR
    python -m genmask.generate --evaluate 256 --model DIR --out DIR

The measure (`--evaluate N`, on N held-out synthetic captions): a scene parser for flat-coloured shapes on a
light background labels every strongly coloured pixel with its nearest palette colour and counts connected
regions of one colour (at least `MIN_AREA` pixels at 64 px) as objects. A generated scene *matches* its caption
when the multiset of its objects' colours equals the caption's; `count_match` compares the number of objects
alone. Shapes are not checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

MIN_AREA = 12  # pixels at 64 px (scaled with the area); smaller regions are blur, not objects
STRONG = 150  # a pixel whose darkest channel is below this is painted, not background (backgrounds stay >= 200)


def parse_colours(image: np.ndarray) -> list[str]:
    """The colour of every object the parser finds in a generated scene, sorted."""
    from scipy import ndimage

    from bench.synth import COLOURS

    names = list(COLOURS)
    palette = np.array([COLOURS[name] for name in names], dtype=np.float32)
    pixels = image.astype(np.float32)
    nearest = np.linalg.norm(pixels[:, :, None, :] - palette, axis=-1).argmin(-1)
    painted = image.min(-1) < STRONG
    min_area = MIN_AREA * image.shape[0] * image.shape[1] / 64**2
    found = []
    for index, name in enumerate(names):
        labels, count = ndimage.label(painted & (nearest == index))
        areas = ndimage.sum_labels(np.ones_like(labels), labels, range(1, count + 1)) if count else []
        found += [name] * int(np.sum(np.asarray(areas) >= min_area))
    return sorted(found)


def caption_colours(caption: str) -> list[str]:
    """The colour of every object a synthetic caption lists, sorted."""
    from bench.synth import COLOURS

    return sorted(word for word in caption.replace(",", " ").split() if word in COLOURS)


def generation_quality(images: list[np.ndarray], captions: list[str]) -> dict[str, float]:
    """Share of scenes whose parsed colours equal the caption's (`colour_match`) and whose object count does."""
    parsed = [parse_colours(image) for image in images]
    wanted = [caption_colours(caption) for caption in captions]
    return {"n": len(images),
            "colour_match": float(np.mean([p == w for p, w in zip(parsed, wanted, strict=True)])),
            "count_match": float(np.mean([len(p) == len(w) for p, w in zip(parsed, wanted, strict=True)])),
            "colour_recall": float(sum(sum((Counter(p) & Counter(w)).values()) for p, w in zip(parsed, wanted))
                                   / max(1, sum(len(w) for w in wanted)))}


def held_out_captions(count: int, image_size: int, seed: int = 7_000_001) -> tuple[list[str], list[np.ndarray]]:
    """Captions (and their real scenes) from a caption stream no training run draws from."""
    import itertools

    from bench.synth import iter_captions

    pairs = list(itertools.islice(iter_captions(seed, image_size), count))
    return [caption for _, caption in pairs], [image for image, _ in pairs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genmask.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("captions", nargs="*", help="captions to render")
    parser.add_argument("--model", required=True, help="a GenMask directory (save_pretrained), e.g. a text-to-image run's OUT/final")
    parser.add_argument("--out", required=True, help="output directory for PNGs (and generation.json)")
    parser.add_argument("--steps", type=int, default=25, help="Euler steps (default 25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", type=int, default=0, metavar="N",
                        help="also render N held-out synthetic captions and write the measure to OUT/generation.json")
    args = parser.parse_args(argv)
    if not args.captions and not args.evaluate:
        parser.error("give captions to render, or --evaluate N")
    if args.steps < 1 or args.evaluate < 0:
        parser.error("--steps must be at least 1 and --evaluate at least 0")
    from PIL import Image

    from bench.errors import BenchError
    from bench.io import write_json
    from genmask.model import GenMask, generate_images

    try:
        model = GenMask.from_pretrained(args.model).eval()
    except (OSError, ValueError, BenchError) as exc:
        parser.exit(2, f"error: --model {args.model}: {exc}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, image in enumerate(generate_images(model, args.captions, args.steps, args.seed)):
        Image.fromarray(image).save(out / f"caption_{index}.png")
        written[f"caption_{index}.png"] = args.captions[index]
    if written:
        write_json(out / "captions.json", written)
        print(f"wrote {len(written)} images to {out} (captions.json says which caption each shows)")
    if args.evaluate:
        captions, real = held_out_captions(args.evaluate, model.config.image_size)
        images = [image for start in range(0, len(captions), 64)
                  for image in generate_images(model, captions[start : start + 64], args.steps, args.seed)]
        result = {"model": args.model, "steps": args.steps, "seed": args.seed,
                  "generated": generation_quality(images, captions),
                  "real_scenes": generation_quality(real, captions)}  # the parser's own ceiling
        write_json(out / "generation.json", result)
        for index in range(min(8, len(images))):
            Image.fromarray(np.concatenate([real[index], images[index]], 1)).save(out / f"sample_{index}.png")
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
