"""Classical codecs to measure a tokenizer against, on the same files at the same bit budget.

One interface: `baseline.reconstruct(x, bits, sample_rate=None) -> BaselineResult`. Images (x float
(B, 3, H, W) in [0, 1]): `bits` is the budget per image; `thumbnail` (k x k RGB at 8 bits a value,
the largest k that fits, upsampled back), `jpeg` and `webp` (the whole file, at the highest quality
whose file fits; an image where even the lowest quality is larger "cannot reach" the budget).
Speech (x float (B, 1, T)): `bits` is the codec's own mode in bit/s, one of `baseline.bitrates`;
`codec2` (c2enc / c2dec of the Debian package codec2) and `opus` (opusenc / opusdec of opus-tools).
"""
from __future__ import annotations

import io
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.errors import TokenizerError

CANNOT_REACH = "cannot reach"


@dataclass
class BaselineResult:
    """A batch through one baseline: `reconstruction` has the input's shape (items that cannot reach the
    budget are NaN there), `bits_used` per item (None where it cannot reach), `settings` per item
    ("4x4", "quality 37", "3200 bit/s" or "cannot reach")."""

    reconstruction: torch.Tensor
    bits_used: list[float | None]
    settings: list[str]

    @property
    def reached(self) -> list[bool]:
        """Per item: whether the baseline fitted the budget."""
        return [b is not None for b in self.bits_used]


class Baseline:
    """A classical codec: its name, its modality ("image" or "audio"), the command-line tools it needs
    (with the Debian package that has them) and, for speech, the bitrates it runs at."""

    name = ""
    modality = "image"
    tools: tuple[str, ...] = ()
    package = ""
    bitrates: tuple[int, ...] = ()
    note = ""  # what a reader of its rows should know

    def check(self) -> None:
        """One clear sentence naming the package to install when a tool is missing."""
        if any(shutil.which(t) is None for t in self.tools):
            raise TokenizerError(f"{self.name} baseline needs {' and '.join(self.tools)}: apt-get install {self.package}")

    def reconstruct(self, x: torch.Tensor, bits: float, sample_rate: int | None = None) -> BaselineResult:
        """`x` encoded and decoded within `bits` (per image) or at `bits` bit/s (speech)."""
        raise NotImplementedError


# ---- images ----------------------------------------------------------------------------------

def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise TokenizerError(f"image baselines take (B, 3, H, W) images, got shape {tuple(x.shape)}.")


class Thumbnail(Baseline):
    """k x k RGB at 8 bits a value (24 bits a thumbnail pixel), the largest k with 24 k^2 <= bits:
    antialiased downsampling, bicubic upsampling back to H x W."""

    name = "thumbnail"

    @staticmethod
    def side(bits: float, height: int, width: int) -> int:
        """The thumbnail's side for a budget (0 where not even one pixel fits), at most the image's."""
        return min(math.isqrt(max(int(bits), 0) // 24), height, width)

    def reconstruct(self, x, bits, sample_rate=None):
        """The batch through the largest thumbnail that fits `bits` per image."""
        _check_images(x)
        h, w = x.shape[-2:]
        k = self.side(bits, h, w)
        if k == 0:
            return BaselineResult(torch.full_like(x, math.nan), [None] * len(x), [CANNOT_REACH] * len(x))
        small = F.interpolate(x.float(), size=(k, k), mode="bicubic", antialias=True, align_corners=False)
        small = (small.clamp(0, 1) * 255).round() / 255  # 8 bits a value
        recon = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        return BaselineResult(recon.to(x.dtype), [24.0 * k * k] * len(x), [f"{k}x{k}"] * len(x))


class PillowCodec(Baseline):
    """A Pillow image format at the highest quality whose whole file fits the budget (binary search,
    as file size grows with quality)."""

    format = ""
    qualities = (1, 95)
    save_options: dict = {}

    def encode(self, image, quality: int) -> bytes:
        """One PIL image as a whole file at `quality`."""
        buffer = io.BytesIO()
        image.save(buffer, format=self.format, quality=quality, **self.save_options)
        return buffer.getvalue()

    def reconstruct(self, x, bits, sample_rate=None):
        """Each image at the highest quality whose file fits `bits`; "cannot reach" where none does."""
        from PIL import Image

        _check_images(x)
        out, used, settings = torch.full_like(x, math.nan), [], []
        pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for i, array in enumerate(pixels):
            image = Image.fromarray(array, "RGB")
            lo, hi = self.qualities
            best = None
            while lo <= hi:
                q = (lo + hi) // 2
                data = self.encode(image, q)
                if len(data) * 8 <= bits:
                    best, lo = (q, data), q + 1
                else:
                    hi = q - 1
            if best is None:
                used.append(None)
                settings.append(CANNOT_REACH)
                continue
            q, data = best
            decoded = torch.frombuffer(bytearray(Image.open(io.BytesIO(data)).convert("RGB").tobytes()), dtype=torch.uint8)
            out[i] = decoded.view(array.shape).permute(2, 0, 1).to(x.dtype) / 255
            used.append(len(data) * 8.0)
            settings.append(f"quality {q}")
        return BaselineResult(out, used, settings)


class JPEG(PillowCodec):
    """Baseline JPEG (4:2:0, optimized Huffman tables)."""

    name, format = "jpeg", "JPEG"
    save_options = {"optimize": True}


class WebP(PillowCodec):
    """Lossy WebP at the slowest, smallest method."""

    name, format = "webp", "WEBP"
    qualities = (0, 100)
    save_options = {"method": 6}


# ---- speech ----------------------------------------------------------------------------------

def _resample(wav: torch.Tensor, source: int, target: int) -> torch.Tensor:
    if source == target:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, source, target)


def _fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    return wav[..., :length] if wav.shape[-1] >= length else F.pad(wav, (0, length - wav.shape[-1]))


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TokenizerError(f"{' '.join(command[:2])} failed: {done.stderr.strip()[-300:] or done.returncode}.")


class CommandLineCodec(Baseline):
    """A speech codec run clip by clip through its command-line encoder and decoder in a temporary folder."""

    modality = "audio"

    def code_clip(self, wav: torch.Tensor, rate: int, bitrate: int, folder: Path) -> tuple[torch.Tensor, int]:
        """One mono clip (T,) -> (decoded clip at `rate`, bits of the encoded file)."""
        raise NotImplementedError

    def reconstruct(self, x, bits, sample_rate=None):
        """Each clip through the codec at `bits` bit/s (one of `bitrates`), trimmed or padded to its length."""
        if x.ndim != 3 or x.shape[1] != 1:
            raise TokenizerError(f"speech baselines take (B, 1, T) mono audio, got shape {tuple(x.shape)}.")
        if sample_rate is None:
            raise TokenizerError(f"the {self.name} baseline needs the audio's sample rate.")
        if int(bits) not in self.bitrates:
            raise TokenizerError(f"{self.name} runs at {', '.join(map(str, self.bitrates))} bit/s, not {bits}.")
        self.check()
        out, used = torch.empty_like(x), []
        with tempfile.TemporaryDirectory(prefix=f"zoo-{self.name}-") as tmp:
            for i, clip in enumerate(x[:, 0].detach().float().cpu()):
                decoded, n_bits = self.code_clip(clip, sample_rate, int(bits), Path(tmp))
                out[i, 0] = _fit_length(decoded, clip.shape[-1]).to(x.dtype)
                used.append(float(n_bits))
        return BaselineResult(out, used, [f"{int(bits)} bit/s"] * len(x))


def envelope_lag(reference: torch.Tensor, delayed: torch.Tensor, max_lag: int, window: int = 80) -> int:
    """The delay (0..max_lag samples) at which the amplitude envelope of `delayed` best matches the
    reference's: a vocoder keeps no waveform phase, so its envelope is what lines up."""
    kernel = torch.ones(1, 1, window) / window
    smooth = lambda w: F.conv1d(w.abs()[None, None], kernel, padding=window // 2)[0, 0]  # noqa: E731
    a, b = smooth(reference), smooth(delayed)
    n = min(len(a), len(b) - max_lag)
    if n <= window:
        return 0
    a = a[:n] - a[:n].mean()
    scores = [float(a @ (b[d:d + n] - b[d:d + n].mean())) for d in range(max_lag + 1)]
    return max(range(max_lag + 1), key=scores.__getitem__)


class Codec2(CommandLineCodec):
    """Codec 2 at its 3200 / 1600 / 700 bit/s modes: 8 kHz 16-bit raw in and out, resampled around it.
    Its output lags the input by its analysis delay (about 20-30 ms, by mode); each clip is shifted back
    by the lag that best lines up the envelopes (within 50 ms), so that STOI and PESQ see aligned audio."""

    name, tools, package = "codec2", ("c2enc", "c2dec"), "codec2"
    bitrates = (3200, 1600, 700)
    note = "codec2 700 runs mode 700C, whose 28-bit frames are stored in 4 bytes (800 bit/s on file)"
    modes = {3200: "3200", 2400: "2400", 1600: "1600", 1400: "1400", 1300: "1300", 1200: "1200", 700: "700C"}

    def code_clip(self, wav, rate, bitrate, folder):
        """c2enc / c2dec on 8 kHz raw PCM, the output lined up with the input."""
        import numpy as np

        pcm = (_resample(wav, rate, 8000).clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
        raw_in, bit, raw_out = folder / "in.raw", folder / "out.bit", folder / "out.raw"
        raw_in.write_bytes(pcm.tobytes())
        mode = self.modes[bitrate]
        _run(["c2enc", mode, str(raw_in), str(bit)])
        _run(["c2dec", mode, str(bit), str(raw_out)])
        decoded = torch.from_numpy(np.frombuffer(raw_out.read_bytes(), dtype=np.int16).astype(np.float32) / 32768)
        lag = envelope_lag(torch.from_numpy(pcm.astype(np.float32) / 32768), decoded, max_lag=400)
        return _resample(decoded[lag:], 8000, rate), bit.stat().st_size * 8


class Opus(CommandLineCodec):
    """Opus (opusenc / opusdec) at 6, 8 and 12 kbit/s target; bits used are the whole Ogg file's."""

    name, tools, package = "opus", ("opusenc", "opusdec"), "opus-tools"
    bitrates = (6000, 8000, 12000)
    note = "opus bitrate_bps counts the whole Ogg file, headers included: short clips read above the target"

    def code_clip(self, wav, rate, bitrate, folder):
        """opusenc at the target bitrate from 16-bit WAV, opusdec to 48 kHz WAV (pre-skip removed)."""
        import soundfile as sf

        wav_in, coded, wav_out = folder / "in.wav", folder / "out.opus", folder / "out.wav"
        sf.write(wav_in, wav.clamp(-1, 1).numpy(), rate, subtype="PCM_16")
        _run(["opusenc", "--quiet", "--bitrate", f"{bitrate / 1000:g}", str(wav_in), str(coded)])
        _run(["opusdec", "--quiet", "--rate", "48000", "--force-wav", str(coded), str(wav_out)])
        decoded, decoded_rate = sf.read(wav_out, dtype="float32", always_2d=True)
        return _resample(torch.from_numpy(decoded.mean(axis=1)), decoded_rate, rate), coded.stat().st_size * 8


BASELINES: dict[str, type[Baseline]] = {b.name: b for b in (Thumbnail, JPEG, WebP, Codec2, Opus)}


def get_baselines(names: str | list[str], modality: str) -> list[Baseline]:
    """The baselines named (a comma list or a list) for a modality, their tools checked before any work."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    fitting = sorted(n for n, b in BASELINES.items() if b.modality == modality)
    chosen = []
    for name in names:
        if name not in BASELINES:
            raise TokenizerError(f"unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}.")
        if BASELINES[name].modality != modality:
            raise TokenizerError(f"{name} is not a baseline for {modality}; for {modality}: {', '.join(fitting)}.")
        baseline = BASELINES[name]()
        baseline.check()
        chosen.append(baseline)
    return chosen
