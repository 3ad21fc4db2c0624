"""The Vocos decoder (Siuzdak 2023) as WavTokenizer extends it: a frame-rate backbone of ConvNeXt blocks
conditioned through adaptive LayerNorm on a bandwidth id, after a small stack of GroupNorm residual
blocks around one full self-attention block, and a head that predicts an STFT (log-magnitude and
phase per bin) which an inverse STFT with "same" padding turns into hop_length samples per frame.

Everything runs at the frame rate (75 or 40 Hz for WavTokenizer): only the head's inverse STFT works
at the sample rate. Layer names follow the official modules, so converted weights load by prefix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock1d(nn.Module):
    """x + conv(swish(norm(conv(swish(norm(x)))))), kernel 3, channels kept (B, C, N)."""

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(channels), nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = _group_norm(channels), nn.Conv1d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, N)."""
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(self.dropout(F.silu(self.norm2(h))))


class AttentionBlock1d(nn.Module):
    """One-head self-attention over all frames with 1x1-conv projections and a residual (B, C, N)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q, self.k, self.v = (nn.Conv1d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, N)."""
        h = self.norm(x)
        q, k, v = (rearrange(proj(h), "b c n -> b 1 n c") for proj in (self.q, self.k, self.v))
        attended = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        return x + self.proj_out(rearrange(attended, "b 1 n c -> b c n"))


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine weights, then a scale and shift looked up by a condition id (B,)."""

    def __init__(self, num_conditions: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.scale = nn.Embedding(num_conditions, dim)
        self.shift = nn.Embedding(num_conditions, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x (B, N, C), condition (B,) long -> (B, N, C)."""
        normed = F.layer_norm(x, (self.dim,), eps=self.eps)
        return normed * self.scale(condition)[:, None] + self.shift(condition)[:, None]


class ConvNeXtBlock1d(nn.Module):
    """Depthwise conv (kernel 7) -> adaptive LayerNorm -> Linear, GELU, Linear -> layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float, num_conditions: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(num_conditions, dim)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, intermediate_dim), nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x (B, C, N), condition (B,) -> (B, C, N)."""
        h = self.norm(rearrange(self.dwconv(x), "b c n -> b n c"), condition)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + rearrange(h, "b n c -> b c n")


class VocosBackbone(nn.Module):
    """Quantized latent (B, input_channels, N) and condition id (B,) -> hidden (B, N, dim)."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int,
                 num_conditions: int, layer_scale: float | None = None):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.pos_net = nn.Sequential(ResnetBlock1d(dim), ResnetBlock1d(dim), AttentionBlock1d(dim),
                                     ResnetBlock1d(dim), ResnetBlock1d(dim), _group_norm(dim))
        self.norm = AdaLayerNorm(num_conditions, dim)
        scale = layer_scale if layer_scale is not None else 1 / num_layers
        self.convnext = nn.ModuleList(ConvNeXtBlock1d(dim, intermediate_dim, scale, num_conditions)
                                      for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        for module in [self.embed, *self.convnext.modules()]:  # Vocos's init; pos_net keeps torch's
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, input_channels, N), (B,) -> (B, N, dim)."""
        h = self.pos_net(self.embed(x))
        h = rearrange(self.norm(rearrange(h, "b c n -> b n c"), condition), "b n c -> b c n")
        for block in self.convnext:
            h = block(h, condition)
        return self.final_layer_norm(rearrange(h, "b c n -> b n c"))


class ISTFTHead(nn.Module):
    """Hidden (B, N, dim) -> waveform (B, N * hop_length): a Linear predicts n_fft/2 + 1 log-magnitudes
    (exponentiated, clipped at 100) and phases per frame, and an inverse STFT with a Hann window and
    "same" padding (the first and last (n_fft - hop) / 2 samples of the overlap-add are dropped) makes
    exactly hop_length samples of each frame."""

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        if (n_fft - hop_length) % 2:
            raise ValueError(f"n_fft - hop_length must be even for 'same' padding, got {n_fft} - {hop_length}.")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = _HannWindow(n_fft)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) -> (B, N * hop_length)."""
        log_magnitude, phase = rearrange(self.out(x), "b n f -> b f n").chunk(2, dim=1)
        spectrum = torch.polar(log_magnitude.exp().clamp(max=1e2), phase)  # (B, n_fft / 2 + 1, N)
        return inverse_stft_same(spectrum, self.istft.window, self.hop_length)


class _HannWindow(nn.Module):
    """Holds the window as the buffer `window` (the official head's `istft.window`)."""

    def __init__(self, n_fft: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(n_fft))


def inverse_stft_same(spectrum: torch.Tensor, window: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Complex (B, n_fft / 2 + 1, N) -> (B, N * hop_length): windowed inverse FFT of each frame,
    overlap-added, divided by the summed squared window, with (n_fft - hop) / 2 samples cut off each end
    (torch.istft's center padding cannot do this: its NOLA check fails at the cut edges)."""
    n_fft = window.shape[0]
    frames = torch.fft.irfft(spectrum, n_fft, dim=1) * window[None, :, None]  # (B, n_fft, N)
    num_frames = frames.shape[-1]
    total = (num_frames - 1) * hop_length + n_fft
    overlap_add = F.fold(frames, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop_length))
    envelope = F.fold(window.square()[None, :, None].expand(1, n_fft, num_frames), output_size=(1, total),
                      kernel_size=(1, n_fft), stride=(1, hop_length))
    cut = (n_fft - hop_length) // 2
    return overlap_add[:, 0, 0, cut:total - cut] / envelope[:, 0, 0, cut:total - cut]
