"""`zoo eval`: reconstruction quality and bitrate of one tokenizer over a folder of files.

Images: PSNR, SSIM, codebook usage and perplexity, bits per pixel; LPIPS and rFID when their
backbone weights are given by path. Speech: mel distance, STOI, wide-band PESQ, SI-SDR, speaker
similarity, WER / WIL of a pluggable ASR against transcripts (`<clip>.txt` beside each clip),
bitrate. Flexible-length models are swept over token counts, RVQ codecs over quantizer counts.
The report is a table, a JSON file with a stable layout, and a PNG plot for sweeps.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoo.errors import TokenizerError
from zoo.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES, read_audio, read_image
from zoo.quantize import codebook_usage


@dataclass
class EvalReport:
    """Metrics of one model over one folder: a row per setting (token or quantizer count)."""

    model: str
    modality: str
    data: str
    num_items: int
    rows: list[dict] = field(default_factory=list)  # {"setting": {...}, "metrics": {...}}
    notes: list[str] = field(default_factory=list)
    weights_sha256: str = ""  # the weights measured (Tokenizer.weights_sha256): export checks it

    def to_json(self) -> str:
        """Deterministic text: sorted keys, floats rounded to 6 significant digits, inf as a string."""
        return json.dumps(_rounded(self.__dict__), indent=2, sort_keys=True) + "\n"

    def table(self) -> str:
        """The rows as an aligned text table, settings first."""
        if not self.rows:
            return "(no rows)"
        setting_keys = list(self.rows[0]["setting"])
        metric_keys = list(self.rows[0]["metrics"])
        header = setting_keys + metric_keys
        body = [[_cell(r["setting"][k]) for k in setting_keys] + [_cell(r["metrics"].get(k)) for k in metric_keys]
                for r in self.rows]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _rounded(value):
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def list_files(folder: str | Path, suffixes: set[str], limit: int | None = None) -> list[Path]:
    """Files under `folder` with one of `suffixes`, sorted, at most `limit`; none is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizerError(f"data folder {folder} does not exist.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise TokenizerError(f"{folder} holds no files ending in {', '.join(sorted(suffixes))}.")
    return files[:limit] if limit else files


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.inf if values else math.nan
    return sum(finite) / len(finite)


# ---- images ----------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_images(model, folder: str | Path, token_counts: list[int] | None = None, batch_size: int = 8,
                    limit: int | None = None, lpips=None, fid_weights: str | Path | None = None,
                    progress: bool = True) -> EvalReport:
    """Reconstruction quality (PSNR, SSIM, usage, optional LPIPS / rFID) and bits per image, per token count."""
    from zoo.eval.image_metrics import ReconstructionFID, psnr, ssim

    files = list_files(folder, IMAGE_SUFFIXES, limit)
    report = EvalReport(model.name or model.architecture, "image", str(folder), len(files),
                        weights_sha256=model.weights_sha256())
    size = model.image_size
    images = torch.stack([read_image(f, size=size) for f in tqdm(files, desc="reading images", disable=not progress)])
    for k in token_counts or [None]:
        opts = {} if k is None else {"num_tokens": k}
        per_image: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
        codes_all, kept = [], []
        fid = ReconstructionFID.from_path(fid_weights) if fid_weights else None
        for start in tqdm(range(0, len(images), batch_size), desc=f"eval tokens={k or 'all'}", disable=not progress):
            x = images[start:start + batch_size].to(model.device)
            tokens = model.encode(x, **opts)
            recon = model.decode(tokens).clamp(0, 1)
            per_image["psnr"] += psnr(x, recon).tolist()
            per_image["ssim"] += ssim(x, recon).tolist()
            if lpips is not None:
                per_image["lpips"] += lpips(x, recon).tolist()
            if fid is not None:
                fid.update(x, recon)
            lengths = tokens.lengths if tokens.lengths is not None else torch.full((x.shape[0],), tokens.codes.shape[1])
            codes_all += [c[:n] for c, n in zip(tokens.codes, lengths.tolist())]
            kept += lengths.tolist()
        tokens_per_image = sum(kept) / len(kept)
        usage = codebook_usage(torch.cat([c.reshape(-1) for c in codes_all]), max(model.codebook_sizes))
        metrics = {"psnr": _mean(per_image["psnr"]), "ssim": _mean(per_image["ssim"])}
        if lpips is not None:
            metrics["lpips"] = _mean(per_image["lpips"])
        if fid is not None:
            metrics["rfid"] = fid.compute()
        metrics |= {"codebook_usage": usage.used_fraction, "perplexity": usage.perplexity,
                    "bits_per_pixel": tokens_per_image * model.bits_per_token / (size * size)}
        report.rows.append({"setting": {"tokens": tokens_per_image}, "metrics": metrics})
    if lpips is None:
        report.notes.append("LPIPS not computed: pass --lpips-vgg and --lpips-linear weight files")
    if fid_weights is None:
        report.notes.append("rFID not computed: pass --inception weights (a local file)")
    return report


# ---- speech ----------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_speech(model, folder: str | Path, quantizer_counts: list[int] | None = None, limit: int | None = None,
                    asr=None, speaker_similarity: bool = True, progress: bool = True) -> EvalReport:
    """Reconstruction quality (mel distance, STOI, PESQ, SI-SDR, speaker, WER) and bitrate, per quantizer count."""
    from zoo.eval import audio_metrics as am

    files = list_files(folder, AUDIO_SUFFIXES, limit)
    report = EvalReport(model.name or model.architecture, "audio", str(folder), len(files),
                        weights_sha256=model.weights_sha256())
    rate = model.sample_rate
    clips = [read_audio(f, sample_rate=rate, mix_to_mono=True)[0] for f in tqdm(files, desc="reading audio", disable=not progress)]
    transcripts = [f.with_suffix(".txt").read_text().strip() if f.with_suffix(".txt").is_file() else None for f in files]
    speaker = None
    if speaker_similarity:
        try:
            speaker = am.SpeakerSimilarity()
        except TokenizerError as e:
            report.notes.append(f"speaker similarity not computed: {e}")
    optional = {}
    for name, fn, package in (("stoi", am.stoi, "pystoi"), ("pesq_wb", am.pesq_wb, "pesq")):
        if importlib.util.find_spec(package):
            optional[name] = fn
        else:
            report.notes.append(f"{name} not computed: pip install {package}")
    use_asr = asr is not None and all(t is not None for t in transcripts)
    if asr is not None and not use_asr:
        report.notes.append("WER/WIL not computed: some clips have no transcript (<clip>.txt)")
    elif asr is None:
        report.notes.append("WER/WIL not computed: pass --asr package.module:function")
    counts = quantizer_counts or [len(model.codebook_sizes)]
    for n_q in counts:
        scores: dict[str, list[float]] = {}
        hypotheses = []
        for wav in tqdm(clips, desc=f"eval n_q={n_q}", disable=not progress):
            x = wav[None].to(model.device)
            recon = model.decode(model.encode(x, n_q=n_q))[0].cpu()
            pairs = {"mel_distance": am.mel_distance(wav, recon, rate), "si_sdr": am.si_sdr(wav, recon)}
            pairs |= {name: fn(wav, recon, rate) for name, fn in optional.items()}
            if speaker is not None:
                pairs["speaker_similarity"] = speaker(wav, recon, rate)
            for key, value in pairs.items():
                scores.setdefault(key, []).append(value)
            if use_asr:
                hypotheses.append(asr(recon.reshape(-1).numpy(), rate))
        metrics = {k: _mean(v) for k, v in scores.items()}
        if use_asr:
            metrics |= am.word_errors(transcripts, hypotheses)
        bits = model.frame_rate * sum(math.log2(k) for k in model.codebook_sizes[:n_q])
        metrics |= {"tokens_per_second": model.frame_rate * n_q, "bitrate_bps": bits}
        report.rows.append({"setting": {"n_q": n_q}, "metrics": metrics})
    return report


def plot_sweep(report: EvalReport, path: str | Path) -> Path:
    """One panel per metric against the swept setting (tokens per image or quantizers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = next(iter(report.rows[0]["setting"]))
    xs = [r["setting"][setting] for r in report.rows]
    keys = [k for k in report.rows[0]["metrics"] if all(math.isfinite(r["metrics"][k]) for r in report.rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(xs, [r["metrics"][key] for r in report.rows], marker="o")
        ax.set_xlabel(setting)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report.model} on {Path(report.data).name} ({report.num_items} items)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
