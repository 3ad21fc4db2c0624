"""Fused activations: bias + GELU, SwiGLU, and the Snake activation of the audio codecs.

- `gelu(x, bias=None, approximate="none")` = GELU(x + bias): the bias add of the MLP's first
  Linear (when run without bias) folded into the activation.
- `swiglu(gate, up)` = SiLU(gate) * up (Shazeer 2020). gate and up may be the two halves of one
  projection (`gate, up = h.chunk(2, -1)`): the kernel reads those strided views in place.
- `snake(x, alpha)` = x + 1 / (alpha + 1e-9) * sin(alpha * x)^2 over x (B, C, T) with one alpha
  per channel, as BigVGAN and DAC define it (pass exp(log_alpha) for BigVGAN's log-scale alphas).

Each has forward and backward; CUDA tensors run Triton kernels, others the torch reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.errors import TokenizerError
from zoo.kernels.dispatch import triton_module, use_triton

SNAKE_EPS = 1e-9
APPROXIMATIONS = ("none", "tanh")


def gelu_reference(x: torch.Tensor, bias: torch.Tensor | None = None, approximate: str = "none") -> torch.Tensor:
    """GELU(x + bias) in plain torch."""
    return F.gelu(x if bias is None else x + bias, approximate=approximate)


def gelu(x: torch.Tensor, bias: torch.Tensor | None = None, approximate: str = "none") -> torch.Tensor:
    """GELU(x + bias), x (..., H), bias (H,) or None; approximate "none" (erf) or "tanh"."""
    if approximate not in APPROXIMATIONS:
        raise TokenizerError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}.")
    if bias is not None and bias.shape != x.shape[-1:]:
        raise TokenizerError(f"bias must have shape ({x.shape[-1]},), got {tuple(bias.shape)}.")
    if use_triton(x, bias):
        return triton_module("_activations_triton").gelu_triton(x, bias, approximate)
    return gelu_reference(x, bias, approximate)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up in plain torch."""
    return F.silu(gate) * up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up; gate and up (..., H) of the same shape."""
    if gate.shape != up.shape:
        raise TokenizerError(f"swiglu needs gate and up of one shape, got {tuple(gate.shape)} and {tuple(up.shape)}.")
    if use_triton(gate, up):
        return triton_module("_activations_triton").swiglu_triton(gate, up)
    return swiglu_reference(gate, up)


def _snake_alpha(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    if x.ndim != 3 or alpha.numel() != x.shape[1] or alpha.ndim not in (1, 3):
        raise TokenizerError(f"snake takes x (B, C, T) and alpha (C,) or (1, C, 1), got {tuple(x.shape)} and "
                             f"{tuple(alpha.shape)}.")
    return alpha.reshape(-1)


def snake_reference(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Snake x + sin^2(alpha x) / (alpha + eps) in plain torch, alpha per channel of (B, C, T)."""
    a = _snake_alpha(x, alpha).view(1, -1, 1)
    return x + (a + SNAKE_EPS).reciprocal() * torch.sin(a * x).pow(2)


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x + 1 / (alpha + 1e-9) * sin(alpha * x)^2; x (B, C, T), alpha (C,) or (1, C, 1)."""
    _snake_alpha(x, alpha)
    if use_triton(x, alpha):
        return triton_module("_activations_triton").snake_triton(x, alpha)
    return snake_reference(x, alpha)
