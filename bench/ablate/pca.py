"""Cells of kind "pca" (`PcaKind`): are VAE latents of masks sharply distributed and linearly separable under noise?

For one diffusers `AutoencoderKLWan` (normalised by its latents_mean / latents_std when it has them):
- PCA of per-position channel vectors of mask latents (masks as black/white RGB images) and of image latents:
  the variance PC1 explains; PC1 of a held-out mask's latent, upsampled (bilinear) to the image and cut
  halfway between the PC1 scores of an all-black and an all-white mask, against the mask: IoU per image.
- Linear probes (scikit-learn logistic regression, per latent position) on x_t = (1 - t) x0 + t eps over a
  grid of t: from the mask latent, is this position the referred object? From the image latent, is it any
  shape (image content: darkest channel < 128, the synthetic scenes' backgrounds never are)? Both scored by
  IoU at latent resolution on held-out images, so the two curves are comparable.
The cell's result is `measurements.json` (+ `examples.npz`, the PC1 maps plotted) in its directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.ablate import page
from bench.ablate.cells import Cell
from bench.ablate.kinds import ABLATION_KINDS
from bench.ablate.spec import Ablation, PcaConfig
from bench.ablate.verdicts import Verdict, holm, judge, p_from_interval
from bench.errors import BenchError
from bench.io import read_json_object, write_json
from bench.metrics import Protocol, SampleScores, bootstrap_cis, paired_bootstrap
from bench.report.text import PROJECT_ROOT, markdown_table
from bench.suites import SUITES

RESULT = "measurements.json"
EXAMPLES = "examples.npz"
SHOWN = 6  # test images whose PC1 maps are plotted
CONTENT_THRESHOLD = 128  # an image pixel is a shape where its darkest channel is below this


def vae_path(config: PcaConfig) -> Path:
    path = Path(config.vae)
    return path if path.is_absolute() or path.exists() else PROJECT_ROOT / path


def _images_and_masks(config: PcaConfig, split: str, count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 N x H x W x 3, masks bool N x H x W, sample ids): one sample per image, the first ones."""
    from bench.loading import iter_loaded

    suite = SUITES.get(config.suite)(progress=False)
    chosen, seen = [], set()
    for sample in suite.samples(split):
        if sample.image_path not in seen:
            seen.add(sample.image_path)
            chosen.append(sample)
        if len(chosen) == count:
            break
    loaded = [x for x in iter_loaded(chosen, workers=0) if x.error is None]
    images = np.stack([x.image for x in loaded])
    masks = np.stack([x.target == 1 for x in loaded])
    return images, masks, [x.sample.sample_id for x in loaded]


class Encoder:
    """The VAE's normalised latent (posterior mode) of images in [0, 255]."""

    def __init__(self, directory: Path):
        import torch
        from diffusers import AutoencoderKLWan

        self.torch = torch
        self.vae = AutoencoderKLWan.from_pretrained(directory, use_safetensors=True).eval()
        config = self.vae.config
        shape = (1, -1, 1, 1, 1)
        self.mean = torch.tensor(config.latents_mean).view(shape) if config.get("latents_mean") else 0.0
        self.std = torch.tensor(config.latents_std).view(shape) if config.get("latents_std") else 1.0

    def __call__(self, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
        """N x H x W x 3 uint8 -> N x h x w x C float32."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), batch):
                x = torch.from_numpy(pixels[start:start + batch]).float().permute(0, 3, 1, 2)[:, :, None]
                latent = self.vae.encode(x / 127.5 - 1.0).latent_dist.mode()
                out.append(((latent - self.mean) / self.std)[:, :, 0].permute(0, 2, 3, 1).numpy())
        return np.concatenate(out).astype(np.float32)


def _rgb(masks: np.ndarray) -> np.ndarray:
    return np.repeat((masks * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _pool(labels: np.ndarray, size: int) -> np.ndarray:
    """Boolean N x H x W -> N x size x size: a latent position is positive when most of its pixels are."""
    n, h, w = labels.shape
    return labels.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4)) > 0.5


def _scores(pred: np.ndarray, truth: np.ndarray) -> SampleScores:
    """Per image intersection and union of boolean maps N x ..."""
    axes = tuple(range(1, pred.ndim))
    return SampleScores((pred & truth).sum(axes).astype(np.float64), (pred | truth).sum(axes).astype(np.float64),
                        np.zeros(len(pred), dtype=bool))


def _summary(scores: SampleScores, protocol: Protocol) -> dict[str, Any]:
    ciou_ci, giou_ci = bootstrap_cis(scores, protocol)
    return {"ciou": scores.ciou(1.0), "ciou_ci95": ciou_ci, "giou": scores.giou(1.0), "giou_ci95": giou_ci,
            "inter": scores.inters.tolist(), "union": scores.unions.tolist()}


@ABLATION_KINDS.register("pca")
class PcaKind:
    """Cells that measure one VAE's latents; the page: probe IoU against noise, PC1 maps, the claims judged."""

    config: ClassVar[type] = PcaConfig
    default_context: ClassVar[str] = ""  # no model is evaluated: no regime check

    def data_identity(self, config: PcaConfig) -> tuple:
        return config.suite, config.vae

    def fingerprints(self, config: PcaConfig, data_root: str | None) -> dict[str, str]:
        """The suite's fingerprint and a hash of the VAE's files (its config and weights)."""
        suite_cls = SUITES.get(config.suite)
        if not suite_cls.synthetic:
            raise BenchError(f"pca: suite {config.suite!r} is not synthetic; the image-content probe's labels need the "
                             "synthetic scenes' light backgrounds")
        directory = vae_path(config)
        files = sorted(p for p in directory.glob("*") if p.suffix in (".json", ".safetensors"))
        if not files:
            raise BenchError(f"pca: no diffusers VAE (config.json, *.safetensors) in {directory}")
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + path.read_bytes())
        return {config.suite: suite_cls(progress=False).fingerprint(), "vae": digest.hexdigest()[:16]}

    def is_complete(self, directory: Path) -> bool:
        return (Path(directory) / RESULT).is_file()

    def is_started(self, directory: Path) -> bool:
        return False  # a measurement is written at its end only: an interrupted one starts again

    def make(self, cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
        """Measure and write measurements.json and examples.npz into `directory`."""
        import torch
        import torch.nn.functional as F
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression

        config: PcaConfig = cell.config
        protocol = Protocol(bootstrap=config.bootstrap, ci_seed=cell.seed)
        encode = Encoder(vae_path(config))
        fit_images, fit_masks, _ = _images_and_masks(config, config.fit_split, config.fit_images)
        test_images, test_masks, test_ids = _images_and_masks(config, config.test_split, config.test_images)
        latents = {name: encode(pixels) for name, pixels in (("fit_mask", _rgb(fit_masks)), ("test_mask", _rgb(test_masks)),
                                                              ("fit_image", fit_images), ("test_image", test_images))}
        side, channels = latents["fit_mask"].shape[1], latents["fit_mask"].shape[3]
        labels = {"fit_mask": _pool(fit_masks, side), "test_mask": _pool(test_masks, side),
                  "fit_image": _pool(fit_images.min(-1) < CONTENT_THRESHOLD, side),
                  "test_image": _pool(test_images.min(-1) < CONTENT_THRESHOLD, side)}
        result: dict[str, Any] = {"command": command, "cell": cell.name, "config": config.__dict__, "data": cell.data,
                                  "latent": {"side": side, "channels": channels},
                                  "test_ids": test_ids, "fit_count": len(fit_images), "test_count": len(test_images)}

        # PCA of per-position channel vectors
        pca = {name: PCA(n_components=min(channels, 8), random_state=0).fit(latents[f"fit_{name}"].reshape(-1, channels))
               for name in ("mask", "image")}
        result["explained_variance"] = {name: p.explained_variance_ratio_.tolist() for name, p in pca.items()}
        fit_pc1 = pca["mask"].transform(latents["fit_mask"].reshape(-1, channels))[:, 0]
        sign = 1.0 if np.corrcoef(fit_pc1, labels["fit_mask"].reshape(-1))[0, 1] >= 0 else -1.0
        ends = encode(_rgb(np.stack([np.zeros(test_masks.shape[1:], bool), np.ones(test_masks.shape[1:], bool)])))
        black, white = (sign * pca["mask"].transform(e.reshape(-1, channels))[:, 0].mean() for e in ends)
        cut = (black + white) / 2
        maps = sign * pca["mask"].transform(latents["test_mask"].reshape(-1, channels))[:, 0].reshape(-1, side, side)
        upsampled = F.interpolate(torch.from_numpy(maps[:, None]).float(), size=test_masks.shape[1:], mode="bilinear",
                                  align_corners=False)[:, 0].numpy()
        result["pc1"] = {"cut": float(cut), "black": float(black), "white": float(white),
                         **_summary(_scores(upsampled > cut, test_masks), protocol)}

        # linear probes on noised latents
        rng = np.random.default_rng(cell.seed)
        probes: dict[str, list[dict[str, Any]]] = {"mask": [], "image": []}
        for t in config.t_grid:
            for name in probes:
                x0 = np.concatenate([latents[f"fit_{name}"]] * config.probe_repeats).reshape(-1, channels)
                y = np.concatenate([labels[f"fit_{name}"]] * config.probe_repeats).reshape(-1)
                xt = (1 - t) * x0 + t * rng.standard_normal(x0.shape, dtype=np.float32)
                test = latents[f"test_{name}"].reshape(-1, channels)
                test_t = (1 - t) * test + t * rng.standard_normal(test.shape, dtype=np.float32)
                if y.all() or not y.any():
                    raise BenchError(f"pca: the {name} labels of the fitting images are all one class")
                probe = LogisticRegression(max_iter=1000).fit(xt, y)
                predicted = probe.predict(test_t).reshape(-1, side, side).astype(bool)
                probes[name].append({"t": t, **_summary(_scores(predicted, labels[f"test_{name}"]), protocol)})
        result["probes"] = probes
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / EXAMPLES, images=test_images[:SHOWN], masks=test_masks[:SHOWN],
                            maps=maps[:SHOWN], cut=np.float32(cut))
        write_json(directory / RESULT, result, sort_keys=True)  # last: its presence marks the cell complete

    def assemble(self, ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
                 missing: list[tuple[str, str]]) -> list[Path]:
        """table.csv / table.md (probe IoU against t), plots and report.md from the complete cells."""
        done = [(cell, read_json_object(cell.directory(out) / RESULT)) for cell in cells
                if self.is_complete(cell.directory(out))]
        files: dict[str, bytes] = {}
        answer, verdicts, plots = [], [], []
        headers = ["variant", "seed", "t", "mask probe IoU %", "mask lo", "mask hi", "image probe IoU %", "image lo",
                   "image hi", "mask - image %", "lo", "hi"]
        csv_rows, md_rows = [], []
        for cell, result in done:
            protocol = Protocol(bootstrap=cell.config.bootstrap, ci_seed=cell.seed)
            relative = cell.directory(out).relative_to(out).as_posix()
            ev = result["explained_variance"]
            pc1 = result["pc1"]
            answer += [f"### {cell.name} ([{relative}]({relative}/{RESULT}))", "",
                       f"- PC1 explains {100 * ev['mask'][0]:.1f}% of the variance of mask latents (PC2 "
                       f"{100 * ev['mask'][1]:.1f}%) against {100 * ev['image'][0]:.1f}% of image latents' (PC2 "
                       f"{100 * ev['image'][1]:.1f}%), per-position vectors of {result['latent']['channels']} channels "
                       f"at {result['latent']['side']} x {result['latent']['side']}.",
                       f"- PC1 of a held-out mask's latent, upsampled and cut halfway between an all-black and an "
                       f"all-white mask's PC1: mean IoU {100 * pc1['giou']:.1f}% {_pct_interval(pc1['giou_ci95'])}, "
                       f"cIoU {100 * pc1['ciou']:.1f}% {_pct_interval(pc1['ciou_ci95'])} over "
                       f"{result['test_count']} images.", ""]
            for mask, image in zip(result["probes"]["mask"], result["probes"]["image"]):
                diff = paired_bootstrap(_scores_of(mask), _scores_of(image), protocol)["giou"]
                interval = diff["ci95"] or [None, None]
                values = [mask["giou"], *(mask["giou_ci95"] or [None, None]), image["giou"],
                          *(image["giou_ci95"] or [None, None]), diff["difference"], *interval]
                cells_text = ["" if v is None else f"{100 * v:.1f}" for v in values]
                csv_rows.append([cell.variant, str(cell.seed), f"{mask['t']:g}", *cells_text])
                md_rows.append([cell.variant, str(cell.seed), f"{mask['t']:g}",
                                f"{cells_text[0]} [{cells_text[1]}, {cells_text[2]}]",
                                f"{cells_text[3]} [{cells_text[4]}, {cells_text[5]}]",
                                f"{100 * diff['difference']:+.1f} {_pct_interval(diff['ci95'])}"])
            verdicts += [_verdict(claim, result, protocol) for claim in ablation.claims]
            name = f"plots/{cell.variant}-s{cell.seed}"
            files[f"{name}-probes.png"] = probe_plot(result)
            files[f"{name}-pc1.png"] = pc1_plot(cell.directory(out) / EXAMPLES)
            plots += [f"{name}-probes.png", f"{name}-pc1.png"]
        from bench.report.text import csv_text

        files["table.csv"] = csv_text(headers, csv_rows).encode()
        table = markdown_table(md_rows, ["variant", "seed", "t", "mask probe IoU % [95%]", "image probe IoU % [95%]",
                                         "mask - image (points, paired 95%)"])
        files["table.md"] = (table + "\n").encode()
        answer += ["### Probes against noise", "", table, "",
                   "Probe IoU: mean over held-out images of the per-image IoU (at latent resolution) of a logistic "
                   "regression per position on x_t = (1 - t) x0 + t eps; mask probe: the referred object from the "
                   "mask latent; image probe: any shape from the image latent. Interval: bootstrap over images; "
                   "mask - image: paired bootstrap on the same images. CSV: [table.csv](table.csv)."]
        config = cells[0].config
        counts = (done[0][1]["fit_count"], done[0][1]["test_count"]) if done else (config.fit_images, config.test_images)
        setting = [f"- VAE: `{config.vae}` (diffusers AutoencoderKLWan; fingerprint {cells[0].data.get('vae')}), "
                   "latents normalised by its latents_mean / latents_std",
                   f"- data: {config.suite}, {counts[0]} images of {config.fit_split} fit the PCA and the probes, "
                   f"{counts[1]} of {config.test_split} score them (the first sample of each image: one referred "
                   f"object; at most {config.fit_images} / {config.test_images} images)",
                   "- probes: one logistic regression (scikit-learn defaults) per noise level, on single positions' "
                   "channel vectors (the paper does not say what its linear classifier sees)",
                   f"- t grid: {', '.join(f'{t:g}' for t in config.t_grid)}; noise draws per fitting latent: "
                   f"{config.probe_repeats}; seeds {sorted({c.seed for c in cells})}; bootstrap {config.bootstrap}",
                   *page.provenance_lines([cell.directory(out) for cell, _ in done])]
        verdicts = holm(verdicts)
        files[page.REPORT] = page.render(ablation, budget, command, setting, answer, verdicts, plots, missing)
        files[page.CLAIMS] = page.claims_csv(ablation.name, verdicts)
        return page.write_files(out, files)


def _scores_of(entry: dict[str, Any]) -> SampleScores:
    inters, unions = np.asarray(entry["inter"]), np.asarray(entry["union"])
    return SampleScores(inters, unions, np.zeros(len(inters), dtype=bool))


def _pct_interval(interval: list[float] | None) -> str:
    return "" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _verdict(claim: Any, result: dict[str, Any], protocol: Protocol) -> Verdict:
    """Rules: "pc1-iou-above" (PC1 maps' mean IoU above the margin), "mask-probe-iou-above" (the mask probe's
    IoU at t = at_t above the margin) and "mask-probe-above-image-probe" (at t = at_t, mask probe IoU minus
    image probe IoU above the margin, paired over images)."""
    at = {entry["t"]: entry for entry in result["probes"]["mask"]}, {e["t"]: e for e in result["probes"]["image"]}
    if claim.rule != "pc1-iou-above" and claim.at_t not in at[0]:
        raise BenchError(f"claim {claim.text!r}: at_t {claim.at_t} is not on the t grid")
    if claim.rule == "pc1-iou-above":
        value, interval, quantity = result["pc1"]["giou"], result["pc1"]["giou_ci95"], "mean IoU of PC1 maps"
    elif claim.rule == "mask-probe-iou-above":
        entry = at[0][claim.at_t]
        value, interval, quantity = entry["giou"], entry["giou_ci95"], f"mask probe IoU at t = {claim.at_t:g}"
    elif claim.rule == "mask-probe-above-image-probe":
        diff = paired_bootstrap(_scores_of(at[0][claim.at_t]), _scores_of(at[1][claim.at_t]), protocol)["giou"]
        value, interval = diff["difference"], diff["ci95"]
        quantity = f"IoU(mask probe) - IoU(image probe) at t = {claim.at_t:g}"
    else:
        raise BenchError(f"claim rule {claim.rule!r} is not one the pca ablation knows "
                         "(pc1-iou-above, mask-probe-iou-above, mask-probe-above-image-probe)")
    return Verdict(claim.text, quantity, value, interval, claim.margin, "above",
                   judge(value, interval, claim.margin, "above"), claim.paper,
                   p_value=p_from_interval(value, interval, claim.margin),
                   method="one VAE: sample bootstrap (normal reading of its 95% interval for the p-value)")


def probe_plot(result: dict[str, Any]) -> bytes:
    """Probe IoU (95% interval) against t, mask probe beside image probe."""
    import matplotlib.style
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        figure = Figure(figsize=(6, 3.8))
        axes = figure.subplots()
        for name, label in (("mask", "mask latent: referred object"), ("image", "image latent: any shape")):
            entries = result["probes"][name]
            ts = [e["t"] for e in entries]
            values = np.array([100 * e["giou"] for e in entries])
            lows = np.array([100 * (e["giou_ci95"] or [e["giou"]] * 2)[0] for e in entries])
            highs = np.array([100 * (e["giou_ci95"] or [e["giou"]] * 2)[1] for e in entries])
            axes.errorbar(ts, values, yerr=[values - lows, highs - values], marker="o", capsize=3, label=label)
        axes.set(xlabel="noise level t (x_t = (1 - t) x0 + t eps)", ylabel="probe IoU % (95% interval)",
                 ylim=(0, 100), title="linear probes against noise")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        return page.png(figure)


def pc1_plot(examples: Path) -> bytes:
    """Held-out images, their masks, and PC1 of the mask latent (cut marked as a contour)."""
    import matplotlib.style
    from matplotlib.figure import Figure

    data = np.load(examples)
    count = len(data["images"])
    with matplotlib.style.context("default"):
        figure = Figure(figsize=(1.6 * count, 5))
        grid = figure.subplots(3, count, squeeze=False)
        for k in range(count):
            grid[0, k].imshow(data["images"][k])
            grid[1, k].imshow(data["masks"][k], cmap="gray")
            grid[2, k].imshow(data["maps"][k], cmap="viridis")
            grid[2, k].contour(data["maps"][k], levels=[float(data["cut"])], colors="red", linewidths=1)
            for row in range(3):
                grid[row, k].set_xticks([])
                grid[row, k].set_yticks([])
        for row, label in enumerate(("image", "mask", "PC1 of mask latent")):
            grid[row, 0].set_ylabel(label, fontsize="small")
        figure.tight_layout()
        return page.png(figure)

