"""Multi-resolution spectral reconstruction losses for waveform codecs.

`MultiResolutionSTFTLoss` (Parallel WaveGAN): spectral convergence + L1 of log magnitudes at
several FFT sizes. `MultiResolutionMelLoss` (EnCodec / SpeechTokenizer style): L1 (+ L2) of
mel spectrograms at window sizes 2^i, on a log scale. Both accept a length mask so that the
zero padding of variable-length batches does not count.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from zoo.tokens import lengths_to_mask


def _frame_mask(lengths: torch.Tensor | None, hop_length: int, num_frames: int) -> torch.Tensor | None:
    """(B, 1, frames) float mask of STFT frames whose centre lies inside the valid samples."""
    if lengths is None:
        return None
    frames = torch.div(lengths + hop_length - 1, hop_length, rounding_mode="floor").clamp(max=num_frames)
    return lengths_to_mask(frames, num_frames).float()[:, None]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    mask = mask.expand_as(x)
    return (x * mask).sum() / mask.sum().clamp(min=1)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence plus log-magnitude L1, averaged over several FFT sizes."""

    def __init__(self, n_ffts: tuple[int, ...] = (512, 1024, 2048), hop_ratio: float = 0.25, eps: float = 1e-7):
        super().__init__()
        self.n_ffts, self.hop_ratio, self.eps = tuple(n_ffts), hop_ratio, eps
        for n in self.n_ffts:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """reconstruction, target: (B, 1, T); lengths: valid samples (B,) or None."""
        total = reconstruction.new_zeros(())
        for n in self.n_ffts:
            hop = max(1, int(n * self.hop_ratio))
            window = getattr(self, f"window_{n}")
            x = torch.stft(reconstruction.squeeze(1).float(), n, hop, window=window, return_complex=True).abs()
            y = torch.stft(target.squeeze(1).float(), n, hop, window=window, return_complex=True).abs()
            mask = _frame_mask(lengths, hop, x.shape[-1])  # (B, 1, frames)
            m = 1.0 if mask is None else mask
            convergence = ((y - x) * m).norm() / ((y * m).norm() + self.eps)
            log_mag = _masked_mean((torch.log(y + self.eps) - torch.log(x + self.eps)).abs(), mask)
            total = total + convergence + log_mag
        return total / len(self.n_ffts)


class MultiResolutionMelLoss(nn.Module):
    """Mel spectrograms with windows 2^i for i in `log2_windows` (hop = window / 4, `n_mels`
    bands each, capped at window / 4 bands for small windows, so that no band is empty): L1 of log-mel plus, with
    `l2_weight`, the mean squared error of log-mel. Averaged over resolutions."""

    def __init__(self, sample_rate: int, log2_windows: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11),
                 n_mels: int = 64, l2_weight: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.l2_weight, self.eps = l2_weight, eps
        self.hops = []
        specs = []
        for i in log2_windows:
            n = 2 ** i
            hop = n // 4
            self.hops.append(hop)
            with warnings.catch_warnings():  # small windows leave the lowest mel bands empty: harmless here
                warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
                specs.append(torchaudio.transforms.MelSpectrogram(
                    sample_rate=sample_rate, n_fft=n, win_length=n, hop_length=hop,
                    n_mels=min(n_mels, n // 4), normalized=False, center=True, power=1.0))
        self.specs = nn.ModuleList(specs)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel L1 (plus weighted L2) averaged over the window sizes, on valid frames only."""
        total = reconstruction.new_zeros(())
        for hop, spec in zip(self.hops, self.specs):
            x = torch.log(spec(reconstruction.squeeze(1).float()) + self.eps)  # (B, M, frames)
            y = torch.log(spec(target.squeeze(1).float()) + self.eps)
            mask = _frame_mask(lengths, hop, x.shape[-1])
            total = total + _masked_mean((x - y).abs(), mask)
            if self.l2_weight:
                total = total + self.l2_weight * _masked_mean((x - y).pow(2), mask)
        return total / len(self.specs)


def waveform_l1_loss(reconstruction: torch.Tensor, target: torch.Tensor,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
    """L1 in time, over valid samples only."""
    if lengths is None:
        return F.l1_loss(reconstruction, target)
    mask = lengths_to_mask(lengths, target.shape[-1]).float()[:, None]
    return _masked_mean((reconstruction - target).abs(), mask)
