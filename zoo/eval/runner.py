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
from zoo.eval.baselines import CANNOT_REACH
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
        setting_keys = list(dict.fromkeys(k for r in self.rows for k in r["setting"]))
        metric_keys = list(dict.fromkeys(k for r in self.rows for k in r["metrics"]))
        header = setting_keys + metric_keys
        body = [[_cell(r["setting"].get(k)) for k in setting_keys] + [_cell(r["metrics"].get(k)) for k in metric_keys]
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
                    progress: bool = True, decode_options: dict | None = None, baselines=()) -> EvalReport:
    """Reconstruction quality (PSNR, SSIM, usage, optional LPIPS / rFID) and bits per image, per token
    count; `decode_options` go to every decode (a flow decoder's steps and seed). Each of `baselines`
    (zoo.eval.baselines) adds a row per token count at that row's bits per image."""
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
            recon = model.decode(tokens, **(decode_options or {})).clamp(0, 1)
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
        setting = {"method": "tokenizer", "tokens": tokens_per_image} if baselines else {"tokens": tokens_per_image}
        report.rows.append({"setting": setting, "metrics": metrics})
        budget = tokens_per_image * model.bits_per_token
        for baseline in baselines:
            report.rows.append(_image_baseline_row(baseline, images, budget, tokens_per_image, batch_size, model.device,
                                                   lpips, fid_weights, progress))
    if decode_options:
        report.notes.append("decoded with " + ", ".join(f"{k}={v}" for k, v in sorted(decode_options.items())))
    if lpips is None:
        report.notes.append("LPIPS not computed: pass --lpips-vgg and --lpips-linear weight files")
    if fid_weights is None:
        report.notes.append("rFID not computed: pass --inception weights (a local file)")
    return report


def _image_baseline_row(baseline, images, budget, tokens, batch_size, device, lpips, fid_weights, progress) -> dict:
    """One baseline at `budget` bits per image over the images, scored as the tokenizer rows are."""
    from zoo.eval.image_metrics import ReconstructionFID, psnr, ssim

    size = images.shape[-2] * images.shape[-1]
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
    used, settings, fid = [], [], None
    for start in tqdm(range(0, len(images), batch_size), desc=f"{baseline.name} at {budget:g} bits", disable=not progress):
        x = images[start:start + batch_size]
        result = baseline.reconstruct(x, budget)
        keep = torch.tensor(result.reached)
        settings += result.settings
        used += [b for b in result.bits_used if b is not None]
        if not keep.any():
            continue
        x, recon = x[keep].to(device), result.reconstruction[keep].to(device)
        scores["psnr"] += psnr(x, recon).tolist()
        scores["ssim"] += ssim(x, recon).tolist()
        if lpips is not None:
            scores["lpips"] += lpips(x, recon).tolist()
        if fid_weights is not None:
            fid = fid or ReconstructionFID.from_path(fid_weights)
            fid.update(x, recon)
    reached = [s for s in settings if s != CANNOT_REACH]
    codec = _setting_range(reached) if reached else CANNOT_REACH
    if reached and len(reached) < len(settings):
        codec += f" ({len(reached)}/{len(settings)} reached)"
    setting = {"method": baseline.name, "tokens": tokens, "budget_bits": budget, "codec": codec}
    keys = ["psnr", "ssim"] + (["lpips"] if lpips is not None else []) + (["rfid"] if fid_weights is not None else [])
    if not reached:
        return {"setting": setting, "metrics": {**{k: None for k in keys}, "bits_per_pixel": None, "reached": 0.0}}
    metrics = {k: _mean(scores[k]) for k in keys if k != "rfid"}
    if fid_weights is not None:
        metrics["rfid"] = fid.compute() if len(reached) >= 2 else None
    bits = sum(used) / len(used)
    metrics |= {"bits_per_pixel": bits / size, "reached": len(reached) / len(settings)}
    return {"setting": setting, "metrics": metrics}


def _setting_range(settings: list[str]) -> str:
    """Per-image settings in one cell: 'quality 12' .. 'quality 40' -> 'quality 12-40'."""
    distinct = sorted(set(settings))
    if len(distinct) == 1:
        return distinct[0]
    words = [d.rpartition(" ") for d in distinct]
    if all(w[0] == words[0][0] and w[2].isdigit() for w in words):
        numbers = sorted(int(w[2]) for w in words)
        return f"{words[0][0]} {numbers[0]}-{numbers[-1]}"
    return ", ".join(distinct)


# ---- speech ----------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_speech(model, folder: str | Path, quantizer_counts: list[int] | None = None, limit: int | None = None,
                    asr=None, speaker_similarity: bool = True, progress: bool = True,
                    decode_options: dict | None = None, baselines=()) -> EvalReport:
    """Reconstruction quality (mel distance, STOI, PESQ, SI-SDR, speaker, WER) and bitrate, per quantizer count;
    each of `baselines` (zoo.eval.baselines) adds a row per bitrate it runs at, with the bitrate it used."""
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

    def score(reconstruct, desc: str) -> dict:
        scores: dict[str, list[float]] = {}
        hypotheses = []
        for wav in tqdm(clips, desc=desc, disable=not progress):
            recon = reconstruct(wav)
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
        return metrics

    depth = len(model.codebook_sizes)
    counts = quantizer_counts or [depth]
    if "n_q" not in model.declared_options("encode") and counts != [depth]:
        raise TokenizerError(f"{model.name or type(model).__name__} codes every frame with its {depth} codebook(s) "
                             "and takes no n_q; leave out the quantizer sweep (--n-q).")
    for n_q in counts:
        def through_model(wav, n_q=n_q):
            depth_option = {"n_q": n_q} if n_q != depth else {}  # single-codebook models declare no n_q
            return model.decode(model.encode(wav[None].to(model.device), **depth_option), **(decode_options or {}))[0].cpu()

        metrics = score(through_model, f"eval n_q={n_q}")
        bits = model.frame_rate * sum(math.log2(k) for k in model.codebook_sizes[:n_q])
        metrics |= {"tokens_per_second": model.frame_rate * n_q, "bitrate_bps": bits}
        setting = {"method": "tokenizer", "n_q": n_q} if baselines else {"n_q": n_q}
        report.rows.append({"setting": setting, "metrics": metrics})
    seconds = sum(wav.shape[-1] for wav in clips) / rate
    for baseline in baselines:
        if baseline.note:
            report.notes.append(baseline.note)
        for bitrate in baseline.bitrates:
            used = []

            def through_baseline(wav, baseline=baseline, bitrate=bitrate, used=used):
                result = baseline.reconstruct(wav[None], bitrate, rate)
                used.append(result.bits_used[0])
                return result.reconstruction[0]

            metrics = score(through_baseline, f"{baseline.name} {bitrate} bit/s")
            metrics["bitrate_bps"] = sum(used) / seconds  # the encoded files' size over the audio's length
            report.rows.append({"setting": {"method": baseline.name, "codec": f"{bitrate} bit/s"}, "metrics": metrics})
    return report


def plot_sweep(report: EvalReport, path: str | Path) -> Path:
    """One panel per metric against the swept setting (tokens per image or quantizers); with baselines,
    against bits per pixel or bit/s, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def finite(value) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value)

    methods = list(dict.fromkeys(r["setting"].get("method") for r in report.rows))
    if methods == [None]:
        setting = next(iter(report.rows[0]["setting"]))
        x_of = lambda r: r["setting"][setting]  # noqa: E731
    else:
        setting = "bits_per_pixel" if report.modality == "image" else "bitrate_bps"
        x_of = lambda r: r["metrics"].get(setting)  # noqa: E731
    first = [r for r in report.rows if r["setting"].get("method") == methods[0]]
    keys = [k for k in first[0]["metrics"] if k != setting and all(finite(r["metrics"].get(k)) for r in first)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for method in methods:
            points = sorted((x_of(r), r["metrics"].get(key)) for r in report.rows if r["setting"].get("method") == method
                            and finite(x_of(r)) and finite(r["metrics"].get(key)))
            if points:
                ax.plot(*zip(*points), marker="o" if method in (None, "tokenizer") else "s", label=method)
        ax.set_xlabel(setting)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if len(methods) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"{report.model} on {Path(report.data).name} ({report.num_items} items)")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG at `path` (its folder made) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
