"""Residual add + LayerNorm / RMSNorm (+ adaLN modulation), fused.

A pre-norm transformer block does `h = x + residual; y = norm(h)` (and with adaLN,
`y = y * (1 + scale) + shift` per sample, as in DiT). Unfused that is three or four passes over
the activations; the Triton kernel reads x and residual once and writes y and h once, and its
backward is one pass as well. Both functions return `(normed, new_residual)` with
new_residual = x + residual (x itself when residual is None).

Shapes: x, residual (B, ..., D); weight, bias (D,) or None; shift, scale (B, D) or None (adaLN:
one row per sample, broadcast over the tokens of that sample).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from zoo.errors import TokenizerError
from zoo.kernels.dispatch import triton_module, use_triton


class AddNormOutput(NamedTuple):
    """The normalized sum and the sum itself (the residual stream the next block adds to)."""

    normed: torch.Tensor        # (B, ..., D)
    new_residual: torch.Tensor  # (B, ..., D): x + residual, the stream the next block adds to


def _check(x, residual, weight, bias, shift, scale) -> None:
    d = x.shape[-1]
    if residual is not None and residual.shape != x.shape:
        raise TokenizerError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}.")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (d,):
            raise TokenizerError(f"{name} must have shape ({d},), got {tuple(p.shape)}.")
    for name, p in (("shift", shift), ("scale", scale)):
        if p is not None and (x.ndim < 2 or p.shape != (x.shape[0], d)):
            raise TokenizerError(f"{name} must have shape (B, D) = ({x.shape[0]}, {d}) for x of shape "
                                 f"{tuple(x.shape)}, got {tuple(p.shape)}.")


def _modulate(y: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
    view = (y.shape[0],) + (1,) * (y.ndim - 2) + (y.shape[-1],)
    if scale is not None:
        y = y * (1 + scale.view(view))
    if shift is not None:
        y = y + shift.view(view)
    return y


def add_layer_norm_reference(x, residual=None, weight=None, bias=None, eps: float = 1e-5, shift=None,
                             scale=None) -> AddNormOutput:
    """LayerNorm(x + residual) (optionally modulated by shift / scale) in plain torch."""
    _check(x, residual, weight, bias, shift, scale)
    h = x if residual is None else x + residual
    return AddNormOutput(_modulate(F.layer_norm(h, (h.shape[-1],), weight, bias, eps), shift, scale), h)


def add_rms_norm_reference(x, residual=None, weight=None, eps: float = 1e-6, shift=None, scale=None) -> AddNormOutput:
    """RMSNorm(x + residual) (optionally modulated by shift / scale) in plain torch."""
    _check(x, residual, weight, None, shift, scale)
    h = x if residual is None else x + residual
    return AddNormOutput(_modulate(F.rms_norm(h, (h.shape[-1],), weight, eps), shift, scale), h)


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, eps: float = 1e-5, shift: torch.Tensor | None = None,
                   scale: torch.Tensor | None = None) -> AddNormOutput:
    """(normed, new_residual): new_residual = x + residual; normed = LayerNorm(new_residual) * weight + bias,
    then * (1 + scale) + shift when given (adaLN). Differentiable in every tensor argument."""
    _check(x, residual, weight, bias, shift, scale)
    if use_triton(x, residual, weight, bias, shift, scale):
        return AddNormOutput(*triton_module("_norms_triton").add_norm_triton(
            x, residual, weight, bias, shift, scale, eps, is_rms=False))
    return add_layer_norm_reference(x, residual, weight, bias, eps, shift, scale)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                 eps: float = 1e-6, shift: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None) -> AddNormOutput:
    """(normed, new_residual) as `add_layer_norm`, with RMSNorm (no centring, no bias)."""
    _check(x, residual, weight, None, shift, scale)
    if use_triton(x, residual, weight, shift, scale):
        return AddNormOutput(*triton_module("_norms_triton").add_norm_triton(
            x, residual, weight, None, shift, scale, eps, is_rms=True))
    return add_rms_norm_reference(x, residual, weight, eps, shift, scale)
