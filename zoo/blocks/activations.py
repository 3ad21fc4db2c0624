"""Activations of the convolutional audio codecs: ELU and Snake.

Snake (Ziyin et al. 2020, used by BigVGAN / DAC and the SpeechTokenizer "snake" release) is
x + sin^2(alpha * x) / alpha with one learned alpha per channel: a periodic bias that suits
waveforms better than a monotone activation. It runs through `zoo.kernels.snake`: a fused
Triton kernel on CUDA, the same formula in plain torch elsewhere.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.errors import TokenizerError
from zoo.kernels import snake

ACTIVATIONS = ("ELU", "Snake")


class Snake(nn.Module):
    """Snake with a learned per-channel frequency `alpha` of shape (1, C, 1), initialised to 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C, T)
        """(B, C, T) -> x + sin^2(alpha x) / (alpha + 1e-9), alpha per channel."""
        return snake(x, self.alpha)  # x + sin^2(alpha x) / (alpha + 1e-9); the 1e-9 keeps alpha -> 0 finite


def make_activation(name: str, channels: int) -> nn.Module:
    """The activation called `name` for a (B, `channels`, T) signal."""
    if name == "ELU":
        return nn.ELU(alpha=1.0)
    if name == "Snake":
        return Snake(channels)
    raise TokenizerError(f"activation must be one of {ACTIVATIONS}, got {name!r}.")
