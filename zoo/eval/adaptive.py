"""Rate and quality of an adaptive-length image tokenizer (`zoo eval --quality`, `zoo info --data`).

An adaptive tokenizer (KARL, ALIT: one whose `info()` has a "quality" entry) chooses each image's tokens
for a target error. Per target: the tokens chosen (mean, std, min, max over the images), the error reached
(mean L1 per pixel channel, the fraction of images at or under the target), PSNR, and the encoder and
decoder passes per image (`tokens.meta["encoder_passes"]` / `["decoder_passes"]` where the tokenizer
records them, else one each). Per image: its complexity, the size in bytes of its PNG at the model's
input size. Beside it, a flexible-length tokenizer (One-D-Piece) at fixed token counts: what a fixed
count gives at equal mean tokens. Images are read and encoded one at a time, as `zoo info --data` counts them.
"""
from __future__ import annotations

import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.errors import TokenizerError
from zoo.eval.runner import EvalReport, _mean, save_figure
from zoo.io import IMAGE_SUFFIXES, read_image


@dataclass
class AdaptiveReport(EvalReport):
    """An EvalReport with a row per target (and per fixed count of the compared tokenizer), plus per image:
    its PNG size and, at each target, the tokens chosen and the L1 reached."""

    images: list[dict] = field(default_factory=list)  # {"file", "png_bytes", "by_quality": {q: {tokens, l1}}}


def image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """The image files under `folder`, sorted (at most `limit`); a missing or empty folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizerError(f"--data {folder} is not a folder of images.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TokenizerError(f"--data {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return files[:limit] if limit else files


def check_image_model(model, label: str) -> None:
    """Refuse a model that is not an image tokenizer."""
    if model.modality != "image":
        raise TokenizerError(f"--data counts the tokens of image tokenizers; {label} is an {model.modality} model.")


def kept(tokens) -> list[int]:
    """Tokens kept per image: `lengths` where the tokenizer gives them, else the codes' width."""
    if tokens.lengths is not None:
        return [int(n) for n in tokens.lengths]
    return [int(tokens.codes.shape[1])] * tokens.batch_size


def spread(values: list[float]) -> dict:
    """Mean, population std, min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values), "max": max(values)}


def encode_each(model, files: list[Path], options: dict):
    """(file, image (1, 3, S, S) at the model's size, tokens) for each file, encoded alone."""
    for path in files:
        x = read_image(path, size=model.image_size)[None].to(model.device)
        with torch.no_grad():
            yield path, x, model.encode(x, **options)


def png_bytes(image: torch.Tensor) -> int:
    """Size in bytes of `image` (3, H, W) in [0, 1] as an 8-bit RGB PNG (PIL, compress_level 9, no optimize
    pass, no metadata): a deterministic complexity measure."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG", compress_level=9, optimize=False)
    return buffer.tell()


def quality_range(model, label: str) -> tuple[float, float]:
    """The [low, high] target range an adaptive tokenizer declares in `info()["quality"]`."""
    quality = model.info().get("quality")
    if not quality:
        raise TokenizerError(f"{label} is not an adaptive tokenizer (its info has no quality entry), so it takes no "
                             "--quality; sweep --num-tokens instead, or evaluate an adaptive one such as KARL.")
    low, high = quality["range"]
    return float(low), float(high)


def check_targets(model, label: str, targets: list[float]) -> None:
    """Refuse a target error outside the range the model declares."""
    low, high = quality_range(model, label)
    for q in targets:
        if not low <= q <= high:
            raise TokenizerError(f"--quality {q:g} is outside the range {label} takes, [{low:g}, {high:g}] "
                                 f"({model.info()['quality'].get('metric', 'its target error')}).")


def _passes(tokens, key: str) -> float:
    value = tokens.meta.get(key, 1)
    return float(torch.as_tensor(value, dtype=torch.float64).mean())


def _l1_psnr(x: torch.Tensor, recon: torch.Tensor) -> tuple[list[float], list[float]]:
    from zoo.eval.image_metrics import psnr

    recon = recon.clamp(0, 1)
    return (x.double() - recon.double()).abs().flatten(1).mean(1).tolist(), psnr(x, recon).tolist()


@torch.no_grad()
def evaluate_adaptive(model, folder: Path, targets: list[float], label: str = "", limit: int | None = None,
                      search: str | None = None, decode_options: dict | None = None, compare=None,
                      compare_label: str = "", compare_counts: list[int] | None = None) -> AdaptiveReport:
    """The rate-quality report of `model` at each target error in `targets` over the images of `folder`;
    `search` goes to encode (ALIT's linear / binary search); `compare`, a flexible-length tokenizer, adds a
    row per fixed token count (default: each target's mean tokens, and powers of two up to its budget)."""
    label = label or model.name or model.architecture
    check_image_model(model, label)
    check_targets(model, label, targets)
    files = image_files(folder, limit)
    extra = {} if search is None else {"search": search}
    for q in targets:  # every option checked before the first image is encoded
        model.check_options("encode", {"quality": q, **extra})
    if compare is not None:
        check_image_model(compare, compare_label)
        if "num_tokens" not in compare.declared_options("encode"):
            raise TokenizerError(f"--compare {compare_label} takes no num_tokens: compare with a flexible-length "
                                 "tokenizer such as One-D-Piece.")
    method = {"method": label} if compare is not None else {}
    report = AdaptiveReport(label, "image", str(folder), len(files), weights_sha256=model.weights_sha256())
    report.images = [{"file": str(p.relative_to(folder)), "png_bytes": None, "by_quality": {}} for p in files]
    for q in targets:
        chosen, l1, psnr, encoder, decoder = [], [], [], [], []
        for entry, (path, x, tokens) in zip(report.images, encode_each(model, files, {"quality": q, **extra})):
            if entry["png_bytes"] is None:
                entry["png_bytes"] = png_bytes(x[0])
            errors, db = _l1_psnr(x, model.decode(tokens, **(decode_options or {})))
            chosen += kept(tokens)
            l1 += errors
            psnr += db
            encoder.append(_passes(tokens, "encoder_passes"))
            decoder.append(_passes(tokens, "decoder_passes"))
            entry["by_quality"][str(q)] = {"tokens": chosen[-1], "l1": errors[0]}
        stats = spread(chosen)
        report.rows.append({"setting": {**method, "quality": q}, "metrics": {
            **{f"tokens_{k}": v for k, v in stats.items()}, "l1": _mean(l1),
            "met_target": sum(e <= q for e in l1) / len(l1), "psnr": _mean(psnr),
            "encoder_passes": statistics.fmean(encoder), "decoder_passes": statistics.fmean(decoder)}})
    if compare is not None:
        means = [r["metrics"]["tokens_mean"] for r in report.rows]
        for k in compare_counts or default_counts(means, compare.num_tokens):
            l1, psnr = [], []
            for _, x, tokens in encode_each(compare, files, {"num_tokens": k}):
                errors, db = _l1_psnr(x, compare.decode(tokens))
                l1 += errors
                psnr += db
            report.rows.append({"setting": {"method": compare_label, "num_tokens": k},
                                "metrics": {"tokens_mean": float(k), "l1": _mean(l1), "psnr": _mean(psnr)}})
    report.notes.append("l1: mean absolute error per pixel channel (images in [0, 1]); met_target: the fraction "
                        "of images whose l1 is at most the target; passes: per image, as the tokenizer records them")
    if search is not None:
        report.notes.append(f"encoded with search={search}")
    return report


def default_counts(means: list[float], budget: int) -> list[int]:
    """Fixed token counts for the compared tokenizer: each target's mean tokens (rounded) and the powers of
    two up to its budget, within [1, budget]."""
    powers = [2 ** i for i in range(budget.bit_length()) if 2 ** i <= budget]
    return sorted({min(max(round(m), 1), budget) for m in means} | set(powers) | {budget})


def plot_adaptive(report: AdaptiveReport, path: Path) -> Path:
    """Two panels: tokens chosen against PNG size (a scatter series per target), and mean L1 against mean
    tokens (a point per target; the compared tokenizer's fixed counts as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    targets = [r for r in report.rows if "quality" in r["setting"]]
    for i, row in enumerate(targets):
        q, colour, marker = str(row["setting"]["quality"]), f"C{i % 10}", "os^Dv<>ph*"[i % 10]
        left.scatter([e["png_bytes"] for e in report.images], [e["by_quality"][q]["tokens"] for e in report.images],
                     s=30, marker=marker, facecolors="none", edgecolors=colour, label=f"target L1 {q}")
        right.scatter([row["metrics"]["tokens_mean"]], [row["metrics"]["l1"]], s=40, marker=marker, color=colour,
                      zorder=3, label=f"target L1 {q}")
        right.axhline(row["setting"]["quality"], ls=":", lw=0.8, color=colour)  # the target itself
    left.set_xscale("log")
    left.set(xlabel="PNG size at the model's input size (bytes, log)", ylabel="tokens chosen",
             title="tokens chosen against image complexity")
    fixed = [r for r in report.rows if "num_tokens" in r["setting"]]
    if fixed:
        right.plot([r["setting"]["num_tokens"] for r in fixed], [r["metrics"]["l1"] for r in fixed], marker="s",
                   color="black", label=f"{fixed[0]['setting']['method']} (fixed count)")
    right.set(xlabel="tokens per image (mean)", ylabel="mean L1 per pixel channel", title="error against tokens")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.model} on {Path(report.data).name} ({report.num_items} images)")
    return save_figure(fig, path)
