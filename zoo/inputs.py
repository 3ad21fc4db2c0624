"""Input checks shared by every tokenizer: a clear error for each way an image or audio batch
can be wrong, before any layer sees it."""
from __future__ import annotations

import torch

from zoo.errors import TokenizerError


def check_image_batch(x, image_size: int | None = None) -> torch.Tensor:
    """x checked as float (B, 3, H, W) in [0, 1], finite, non-empty (and image_size square when given)."""
    if not isinstance(x, torch.Tensor):
        raise TokenizerError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}.")
    if x.ndim == 3 and x.shape[0] == 3:
        raise TokenizerError(f"images must be a batch (B, 3, H, W), got one image {tuple(x.shape)}; use x[None].")
    if x.ndim != 4 or x.shape[1] != 3:
        raise TokenizerError(f"images must have shape (B, 3, H, W) (RGB, channels first), got {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise TokenizerError("the image batch is empty (B = 0).")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise TokenizerError(f"the images have no pixels ({x.shape[-2]}x{x.shape[-1]}).")
    if not x.dtype.is_floating_point:
        raise TokenizerError(f"images must be float in [0, 1], got {x.dtype}; convert with x.float() / 255.")
    if not torch.isfinite(x).all():
        raise TokenizerError("images contain NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise TokenizerError(
            f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
            "images in [-1, 1] convert with (x + 1) / 2, 8-bit ones with x / 255."
        )
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        raise TokenizerError(
            f"this tokenizer takes {image_size}x{image_size} images, got {x.shape[-2]}x{x.shape[-1]}; "
            f"resize or crop first (zoo.io.read_image(path, size={image_size}) does both)."
        )
    return x


def check_audio_batch(wav) -> torch.Tensor:
    """wav checked as float mono (B, 1, T), finite and non-empty."""
    if not isinstance(wav, torch.Tensor):
        raise TokenizerError(f"audio must be a torch.Tensor of shape (B, 1, T), got {type(wav).__name__}.")
    if wav.ndim != 3:
        hint = " use wav[None, None] for one mono clip." if wav.ndim == 1 else \
            " use wav[:, None] for a batch of mono clips." if wav.ndim == 2 else ""
        raise TokenizerError(f"audio must have shape (B, 1, T), got {tuple(wav.shape)};{hint}")
    if wav.shape[1] != 1:
        raise TokenizerError(
            f"audio must be mono (B, 1, T), got {wav.shape[1]} channels; mix down with "
            "wav.mean(1, keepdim=True) or pick one channel."
        )
    if wav.shape[0] == 0 or wav.shape[-1] == 0:
        raise TokenizerError(f"the audio batch is empty (shape {tuple(wav.shape)}).")
    if not wav.dtype.is_floating_point:
        raise TokenizerError(f"audio must be float in [-1, 1], got {wav.dtype}; 16-bit PCM converts with x / 32768.")
    if not torch.isfinite(wav).all():
        raise TokenizerError("audio contains NaN or infinite values.")
    peak = float(wav.abs().max())
    if peak > 2.0:  # a little above 1 is common after resampling; far above is a unit mistake
        import warnings

        warnings.warn(f"audio peaks at {peak:.3g}, far outside [-1, 1] (16-bit PCM converts with x / 32768); "
                      "the codecs were trained on [-1, 1] and will clip or distort it.", stacklevel=3)
    return wav
