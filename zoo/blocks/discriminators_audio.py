"""Waveform discriminators for codec training: multi-period (HiFi-GAN), multi-scale (MelGAN /
HiFi-GAN) and multi-scale STFT (EnCodec).

Each discriminator returns a `DiscriminatorOutput`: one logit map per sub-discriminator and, for
feature matching, the list of its hidden activations. `AudioDiscriminators` runs any
combination of the three on the same batch and concatenates their outputs.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DiscriminatorOutput(NamedTuple):
    """Logit maps of each sub-discriminator and their hidden activations (for feature matching)."""

    logits: list[torch.Tensor]             # one per sub-discriminator, any shape (B, ...)
    features: list[list[torch.Tensor]]     # hidden activations of each sub-discriminator


def _merge(outputs: list[DiscriminatorOutput]) -> DiscriminatorOutput:
    return DiscriminatorOutput([x for o in outputs for x in o.logits], [f for o in outputs for f in o.features])


class PeriodDiscriminator(nn.Module):
    """Folds the waveform into (T / period, period) and runs 2D convs along time only, so each
    column sees every `period`-th sample (HiFi-GAN)."""

    def __init__(self, period: int, channels: int = 32, max_channels: int = 512, num_layers: int = 4,
                 kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        layers, c_in = [], 1
        for i in range(num_layers):
            c_out = min(channels * 4 ** i, max_channels)
            layers.append(weight_norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride, 1), (kernel_size // 2, 0))))
            c_in = c_out
        layers.append(weight_norm(nn.Conv2d(c_in, c_in, (kernel_size, 1), 1, (kernel_size // 2, 0))))
        self.convs = nn.ModuleList(layers)
        self.to_logits = weight_norm(nn.Conv2d(c_in, 1, (3, 1), 1, (1, 0)))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:  # wav: (B, 1, T)
        """wav (B, 1, T) folded into (B, 1, T / period, period) -> logits and activations."""
        pad = (-wav.shape[-1]) % self.period
        x = F.pad(wav, (0, pad), mode="reflect" if pad < wav.shape[-1] else "constant")
        x = rearrange(x, "b c (t p) -> b c t p", p=self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return DiscriminatorOutput([self.to_logits(x)], [features])


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's multi-period discriminator: one PeriodDiscriminator per period."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: int = 32, max_channels: int = 512,
                 num_layers: int = 4):
        super().__init__()
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(p, channels, max_channels, num_layers) for p in periods)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        """wav (B, 1, T) -> the outputs of every period, concatenated."""
        return _merge([d(wav) for d in self.discriminators])


class ScaleDiscriminator(nn.Module):
    """Strided, grouped 1D convs over the raw waveform (MelGAN / HiFi-GAN's MSD)."""

    def __init__(self, channels: int = 16, max_channels: int = 1024, num_downsamples: int = 4,
                 groups: int = 4, downsample: int = 4):
        super().__init__()
        layers = [weight_norm(nn.Conv1d(1, channels, 15, 1, 7))]
        c_in = channels
        for _ in range(num_downsamples):
            c_out = min(c_in * downsample, max_channels)
            g = min(groups, c_in)
            while c_in % g or c_out % g:
                g -= 1
            layers.append(weight_norm(nn.Conv1d(c_in, c_out, 41, downsample, 20, groups=g)))
            c_in = c_out
        layers.append(weight_norm(nn.Conv1d(c_in, c_in, 5, 1, 2)))
        self.convs = nn.ModuleList(layers)
        self.to_logits = weight_norm(nn.Conv1d(c_in, 1, 3, 1, 1))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        """wav (B, 1, T) -> logits and activations of the strided 1D conv stack."""
        x, features = wav, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return DiscriminatorOutput([self.to_logits(x)], [features])


class MultiScaleDiscriminator(nn.Module):
    """The same discriminator on the waveform average-pooled by 1, 2, 4, ... (`num_scales` scales)."""

    def __init__(self, num_scales: int = 3, channels: int = 16, max_channels: int = 1024, num_downsamples: int = 4):
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(channels, max_channels, num_downsamples) for _ in range(num_scales))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        """wav (B, 1, T) -> outputs at the full rate and at each 2x average-pooled rate."""
        outputs = []
        for i, d in enumerate(self.discriminators):
            x = F.avg_pool1d(wav, 2 ** i, 2 ** i, ceil_mode=True) if i else wav
            outputs.append(d(x))
        return _merge(outputs)


class STFTDiscriminator(nn.Module):
    """2D convs over the complex STFT (real and imaginary parts as two channels), dilated in time
    and strided in frequency (EnCodec)."""

    def __init__(self, n_fft: int, hop_length: int, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), 1, (1, 4)))]
        for d in dilations:
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), (d, 4), dilation=(d, 1))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, 3, 1, 1)))
        self.convs = nn.ModuleList(layers)
        self.to_logits = weight_norm(nn.Conv2d(channels, 1, 3, 1, 1))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        """wav (B, 1, T) -> logits and activations of a 2D conv stack over the complex STFT."""
        spec = torch.stft(wav.squeeze(1), self.n_fft, self.hop_length, window=self.window,
                          normalized=True, return_complex=True)  # (B, F, T)
        x = rearrange(torch.view_as_real(spec), "b f t c -> b c t f")
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return DiscriminatorOutput([self.to_logits(x)], [features])


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's multi-scale STFT discriminator: one STFTDiscriminator per FFT size."""

    def __init__(self, n_ffts: tuple[int, ...] = (1024, 2048, 512), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, n // 4, channels) for n in n_ffts)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        """wav (B, 1, T) -> the outputs of every FFT size, concatenated."""
        return _merge([d(wav) for d in self.discriminators])


class AudioDiscriminators(nn.Module):
    """Any combination of the three families; an empty tuple / 0 leaves one out."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), num_scales: int = 3,
                 stft_n_ffts: tuple[int, ...] = (1024, 2048, 512), period_channels: int = 32,
                 scale_channels: int = 16, stft_channels: int = 32, max_channels: int = 512):
        super().__init__()
        members = []
        if periods:
            members.append(MultiPeriodDiscriminator(tuple(periods), period_channels, max_channels))
        if num_scales:
            members.append(MultiScaleDiscriminator(num_scales, scale_channels, max_channels))
        if stft_n_ffts:
            members.append(MultiScaleSTFTDiscriminator(tuple(stft_n_ffts), stft_channels))
        if not members:
            raise ValueError("AudioDiscriminators needs at least one of periods, num_scales, stft_n_ffts.")
        self.members = nn.ModuleList(members)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:  # wav: (B, 1, T)
        """wav (B, 1, T) -> the outputs of every member discriminator, concatenated."""
        return _merge([m(wav) for m in self.members])
