"""Reading and writing images, audio, weights and token files, with errors a person can act on."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import torch
from torch import nn

from zoo.errors import CheckpointError, TokenizerError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"{what} {path} does not exist.")
    if not path.is_file():
        raise TokenizerError(f"{what} {path} is not a file.")
    return path


# ---- images --------------------------------------------------------------------------------

def read_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Read an image file as float (3, H, W) in [0, 1]. With `size`, resize the shorter side to
    `size` (bicubic, antialiased) and center-crop to size x size."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    path = _existing_file(path, "image")
    try:
        with Image.open(path) as im:
            if size is not None:
                im = _central_box(im)
            im = im.convert("RGB")  # drops alpha, expands grayscale and palettes
            x = pil_to_tensor(im).float() / 255.0
    except Image.DecompressionBombError:
        raise TokenizerError(f"{path} declares more pixels than Pillow decodes safely ({Image.MAX_IMAGE_PIXELS * 2:,}); "
                             "it is corrupt or hostile, or resize it first.") from None
    except TokenizerError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        # what Pillow's decoders raise on broken files: PNG chunks (SyntaxError), tiles and headers (ValueError)
        raise TokenizerError(f"{path} is not a readable image ({type(e).__name__}: {e}).") from None
    if size is not None:
        x = resize(x, size, interpolation=_bicubic(), antialias=True).clamp_(0, 1)
        x = center_crop(x, [size, size])
    return x


def _central_box(im):
    """The part of `im` that resize-then-center-crop can use, cut out before any pixel is decoded to float:
    a 40000x1 strip would otherwise become a (3, 64, 2560000) tensor before the crop. Images within 8:1
    are left whole (the same pixels as an uncut read; the float tensor is then at most 8 squares); longer
    ones keep an 8:1 central box."""
    w, h = im.size
    short = min(w, h)
    if short == 0:
        raise TokenizerError("the image is empty (0 pixels on a side).")
    keep = 8 * short
    if max(w, h) <= keep:
        return im
    if w > h:
        left = (w - keep) // 2
        return im.crop((left, 0, left + keep, h))
    top = (h - keep) // 2
    return im.crop((0, top, w, top + keep))


def _bicubic():
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC


def write_image(path: str | Path, image: torch.Tensor) -> Path:
    """Write float (3, H, W) in [0, 1] as an 8-bit image (format from the suffix)."""
    from PIL import Image

    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise TokenizerError(f"write_image takes one image (3, H, W), got {tuple(image.shape)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)
    return path


# ---- audio ---------------------------------------------------------------------------------

def read_audio(path: str | Path, sample_rate: int | None = None, mix_to_mono: bool = False) -> tuple[torch.Tensor, int]:
    """Read an audio file as float (1, T) in [-1, 1]. Returns (wav, sample_rate). With
    `sample_rate`, resample to it. Multi-channel files are refused unless `mix_to_mono`."""
    import soundfile as sf

    path = _existing_file(path, "audio file")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise TokenizerError(f"{path} is not a readable audio file ({e}).") from None
    wav = torch.from_numpy(data.T.copy())  # (C, T)
    if wav.shape[1] == 0:
        raise TokenizerError(f"{path} holds no audio samples.")
    if not bool(torch.isfinite(wav).all()):  # float WAVs can store them; every codec would turn them into NaN
        raise TokenizerError(f"{path} holds {int((~torch.isfinite(wav)).sum())} NaN or infinite samples; the file is "
                             "corrupt: export it again.")
    _warn_if_truncated(path, data.shape[0], file_rate)
    if wav.shape[0] > 1:
        if not mix_to_mono:
            raise TokenizerError(
                f"{path} has {wav.shape[0]} channels and the codecs take mono; mix it down "
                "(read_audio(..., mix_to_mono=True), or --mix-to-mono on the command line)."
            )
        wav = wav.mean(0, keepdim=True)
    if sample_rate is not None and sample_rate != file_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, file_rate, sample_rate)
        file_rate = sample_rate
    return wav, file_rate


class AudioFileSource:
    """A long audio file as a lazily read (1, 1, T) signal at `sample_rate`: `source[..., a:b]` reads
    samples [a, b) from disk (mixed to mono, resampled) and nothing else, so a chunked encoder can
    stream a recording of any length. Resampled blocks are read with enough context on each side,
    starting on the resampler's period, that they equal the same samples of the whole file resampled
    at once. Samples are checked as they are read (NaN / Inf is an error naming the file)."""

    def __init__(self, path: str | Path, sample_rate: int, mix_to_mono: bool = False, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        import soundfile as sf

        self.path = _existing_file(path, "audio file")
        try:
            info = sf.info(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise TokenizerError(f"{self.path} is not a readable audio file ({e}).") from None
        if info.frames <= 0:
            raise TokenizerError(f"{self.path} holds no audio samples.")
        if info.channels > 1 and not mix_to_mono:
            raise TokenizerError(f"{self.path} has {info.channels} channels and the codecs take mono; mix it down "
                                 "(mix_to_mono=True, or --mix-to-mono on the command line).")
        _warn_if_truncated(self.path, info.frames, info.samplerate)
        self.file_rate, self.sample_rate, self.file_frames = info.samplerate, sample_rate, info.frames
        self.device, self.dtype = device, dtype
        common = math.gcd(self.file_rate, sample_rate)
        self._file_step, self._out_step = self.file_rate // common, sample_rate // common  # the resampler's period
        # torchaudio's sinc kernel reaches `width` file samples beyond a period on each side (lowpass width 6)
        width = math.ceil(6 * self._file_step / (0.99 * min(self._file_step, self._out_step)))
        self._context_periods = math.ceil(width / self._file_step) + 2
        self.shape = (1, 1, math.ceil(self.file_frames * sample_rate / self.file_rate))
        self.peak = 0.0
        self._file = None  # open between __enter__ and __exit__: one handle for every block read

    def __enter__(self) -> "AudioFileSource":
        import soundfile as sf

        self._file = sf.SoundFile(str(self.path))
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._file = None

    def __getitem__(self, key) -> torch.Tensor:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] is Ellipsis and isinstance(key[1], slice)):
            raise TypeError("AudioFileSource is read as source[..., start:end]")
        start, end, _ = key[1].indices(self.shape[-1])
        return self._resampled(start, end).to(device=self.device, dtype=self.dtype)

    def _resampled(self, start: int, end: int) -> torch.Tensor:
        if self.file_rate == self.sample_rate:
            return self._read(start, end)
        import torchaudio.functional as AF

        first, last = start // self._out_step, -(-end // self._out_step)  # whole periods covering [start, end)
        read_from = max(0, first - self._context_periods) * self._file_step
        read_to = min(self.file_frames, (last + self._context_periods) * self._file_step)
        block = AF.resample(self._read(read_from, read_to), self.file_rate, self.sample_rate)
        offset = read_from // self._file_step * self._out_step
        return block[..., start - offset: end - offset]

    def _read(self, start: int, end: int) -> torch.Tensor:
        """File samples [start, end) as (1, 1, end - start), mono, checked."""
        import soundfile as sf

        f = self._file if self._file is not None else sf.SoundFile(str(self.path))  # outside `with`: this read alone
        try:
            f.seek(start)
            data = f.read(end - start, dtype="float32", always_2d=True)  # (T, C)
        finally:
            if f is not self._file:
                f.close()
        block = torch.from_numpy(data.mean(1) if data.shape[1] > 1 else data[:, 0].copy())[None, None]
        if not bool(torch.isfinite(block).all()):
            raise TokenizerError(f"{self.path} holds NaN or infinite samples (near {start / self.file_rate:.1f} s); "
                                 "the file is corrupt: export it again.")
        self.peak = max(self.peak, float(block.abs().max()) if block.numel() else 0.0)
        return block


def _warn_if_truncated(path: Path, frames: int, rate: int) -> None:
    declared = _wav_declared_frames(path)
    if declared is not None and declared > frames:
        import warnings

        warnings.warn(f"{path} is truncated: its header says {declared / rate:.3f} s but the file holds "
                      f"{frames / rate:.3f} s; using the {frames} samples present.", stacklevel=3)


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE file's 'data' chunk header declares (None for other files, or a header that
    says nothing usable). libsndfile reads the samples present and says nothing of a cut-off file."""

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while chunk := f.read(8):
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = f.read(size)
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                    f.seek(size % 2, 1)
                elif name == b"data":
                    # 0 and 0xFFFFFFFF mean "unknown" (streamed writers); those are not claims of a length
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + size % 2, 1)
    except OSError:
        return None
    return None


def write_audio(path: str | Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write mono float audio ((T,), (1, T) or (1, 1, T)) as 16-bit PCM (format from the suffix)."""
    import soundfile as sf

    wav = wav.detach().float().cpu().reshape(-1) if wav.numel() == wav.shape[-1] else None
    if wav is None:
        raise TokenizerError("write_audio takes one mono clip: (T,), (1, T) or (1, 1, T).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.clamp(-1, 1).numpy(), sample_rate, subtype="PCM_16")
    return path


# ---- weights -------------------------------------------------------------------------------

def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a .safetensors file, or one clear error if it cannot be read."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types, and OSError for short files
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or not safetensors: {e}); download or export it again."
        ) from None
    return tensors, metadata


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from a weights file or folder: .safetensors, or a PyTorch file
    (.bin / .pt / .pth / .ckpt) loaded with weights_only=True. Lightning checkpoints and files
    that nest the weights under 'state_dict' or 'model' are unwrapped."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.bin", "model.pt"):
            if (path / name).is_file():
                return read_checkpoint(path / name)
        candidates = sorted(p.name for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"})
        if len(candidates) == 1:
            return read_checkpoint(path / candidates[0])
        raise CheckpointError(
            f"{path} holds no model.safetensors or pytorch_model.bin"
            + (f" and several weight files {candidates}; pass the file itself." if candidates else "; pass a weights file or folder.")
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} could not be read as PyTorch weights with weights_only=True ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); the zoo loads tensors only, never arbitrary pickles."
        ) from None
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in ("state_dict", "model", "generator") if isinstance(state.get(k), dict)]
        if not nested:
            break
        state = state[nested[0]]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dictionary of tensors (a state dict).")
    return state


def state_dict_sha256(module_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """The sha256 of a model's weights: every tensor of its state dict (name, dtype, shape and bytes, in
    name order). It names the weights, not a file: a folder written by save_pretrained, the checkpoint it
    was exported from and the model in memory give the same hash; any changed value gives another."""
    import hashlib

    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with one readable error listing what does not fit.

    Keys absent from `state` are accepted when they alias a present tensor (tied weights,
    which safetensors' save_model stores once). Quantizer tensors under vector-quantize-pytorch's
    names (folders and checkpoints written before the zoo named them) are renamed to ours first."""
    from zoo.quantize import upgrade_library_keys

    state = upgrade_library_keys(state)
    expected = module.state_dict(keep_vars=True)
    by_storage: dict[int, list[str]] = {}
    for k, v in expected.items():
        by_storage.setdefault(v.data_ptr(), []).append(k)
    missing = [k for k in expected if k not in state
               and not any(alias in state for alias in by_storage[expected[k].data_ptr()])]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__} ({'; '.join(parts)}); "
            "it was saved for another model or configuration."
        )
    full = dict(state)
    for k in expected:
        if k not in full:
            full[k] = next(state[a] for a in by_storage[expected[k].data_ptr()] if a in state)
    module.load_state_dict(full, strict=True)
