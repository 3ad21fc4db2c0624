"""DAC's convolutional encoder and decoder (Kumar et al. 2023, the Descript Audio Codec), as LM-SPT uses
them: weight-normalised convs with Snake activations; each encoder block is three dilated residual units
(dilations 1, 3, 9) then a strided conv that doubles the channels, each decoder block a transposed conv
that halves them then three residual units; the decoder ends in a conv to one channel and tanh.

Layer names follow the official modules (`block` in the encoder, `model` in the decoder), so converted
weights load by position. Weight norm is torch's parametrization (`parametrizations.weight.original0 /
original1`; the official files store `weight_g` / `weight_v`).

Lengths: a strided conv (kernel 2s, padding ceil(s / 2)) maps T samples to T / s when s divides T, so a
clip whose length is a multiple of the hop gives exactly T / hop frames (the model pads to one).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from zoo.blocks.activations import Snake


def wn_conv1d(*args, **kwargs) -> nn.Module:
    """A weight-normalised Conv1d."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args, **kwargs) -> nn.Module:
    """A weight-normalised ConvTranspose1d."""
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class ResidualUnit(nn.Module):
    """x + conv1x1(snake(conv_k,dilated(snake(x)))), with x's ends cut when the convs shortened y."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 7):
        super().__init__()
        pad = (kernel_size - 1) * dilation // 2
        self.block = nn.Sequential(Snake(channels), wn_conv1d(channels, channels, kernel_size, dilation=dilation, padding=pad),
                                   Snake(channels), wn_conv1d(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T')."""
        y = self.block(x)
        cut = (x.shape[-1] - y.shape[-1]) // 2
        return (x[..., cut:x.shape[-1] - cut] if cut > 0 else x) + y


class EncoderBlock(nn.Module):
    """Three residual units at `channels // 2`, Snake, then a conv of stride `stride` to `channels`."""

    def __init__(self, channels: int, stride: int, dilations: tuple[int, ...] = (1, 3, 9), kernel_size: int = 7):
        super().__init__()
        half = channels // 2
        self.block = nn.Sequential(
            *(ResidualUnit(half, d, kernel_size) for d in dilations), Snake(half),
            wn_conv1d(half, channels, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels / 2, T) -> (B, channels, T / stride)."""
        return self.block(x)


class DACEncoder(nn.Module):
    """Audio (B, 1, T) -> latent (B, latent_dim, T / prod(strides)); channels double at every stride."""

    def __init__(self, width: int, strides: tuple[int, ...], latent_dim: int, dilations: tuple[int, ...] = (1, 3, 9),
                 kernel_size: int = 7):
        super().__init__()
        layers: list[nn.Module] = [wn_conv1d(1, width, kernel_size=7, padding=3)]
        for stride in strides:
            width *= 2
            layers.append(EncoderBlock(width, stride, dilations, kernel_size))
        layers += [Snake(width), wn_conv1d(width, latent_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)
        self.hop_length = math.prod(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, latent_dim, T / hop_length)."""
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv of stride `stride` from `in_channels` to `out_channels`, three residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilations: tuple[int, ...] = (1, 3, 9),
                 kernel_size: int = 7):
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_channels),
            wn_conv_transpose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                padding=math.ceil(stride / 2)),
            *(ResidualUnit(out_channels, d, kernel_size) for d in dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, N) -> (B, out_channels, about N * stride)."""
        return self.block(x)


class DACDecoder(nn.Module):
    """Latent (B, latent_dim, N) -> audio (B, 1, about N * prod(rates)) in [-1, 1]; `width` channels
    after the first conv, halved at every rate."""

    def __init__(self, latent_dim: int, width: int, rates: tuple[int, ...], dilations: tuple[int, ...] = (1, 3, 9),
                 kernel_size: int = 7):
        super().__init__()
        layers: list[nn.Module] = [wn_conv1d(latent_dim, width, kernel_size=7, padding=3)]
        for i, rate in enumerate(rates):
            layers.append(DecoderBlock(width // 2 ** i, width // 2 ** (i + 1), rate, dilations, kernel_size))
        out = width // 2 ** len(rates)
        layers += [Snake(out), wn_conv1d(out, 1, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.hop_length = math.prod(rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, 1, about N * hop_length)."""
        return self.model(x)
