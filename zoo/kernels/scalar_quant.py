"""Bound-and-round of the scalar quantizers, for encode and eval (training runs the library).

`fsq_round(z, levels)`: FSQ (Mentzer et al. 2023) as vector-quantize-pytorch computes it
(`FSQ.bound` with eps 1e-3 and tanh, then round to the nearest level, halves to even): returns the
quantized values in [-1, 1] and the integer code of each vector (channel 0 is the fastest digit).
`lfq_round(z)`: LFQ (Yu et al. 2023): each channel to +-scale by its sign; the code reads the
signs as bits, channel 0 the most significant (the library's order).
On CUDA each is one Triton kernel; elsewhere the torch reference.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from zoo.errors import TokenizerError
from zoo.kernels.dispatch import triton_module, use_triton

FSQ_EPS = 1e-3


class ScalarQuantized(NamedTuple):
    """Quantized values (input dtype) and their packed integer codes."""

    quantized: torch.Tensor  # (..., C), dtype of the input
    codes: torch.Tensor      # (...,) long


class FSQTables(NamedTuple):
    """Per-channel constants of FSQ's bound, fp32 (C,) each, computed as the library does."""
    shift: torch.Tensor       # atanh(offset / half_l), added before tanh
    half_l: torch.Tensor      # (levels - 1) * (1 + eps) / 2
    offset: torch.Tensor      # 0.5 for even levels, 0 for odd
    half_width: torch.Tensor  # levels // 2, divides the rounded value
    basis: torch.Tensor       # cumulative product of the levels before each channel (int64)


def fsq_tables(levels: tuple[int, ...], device: torch.device | str = "cpu") -> FSQTables:
    """Per-channel constants of FSQ with these levels: shift, half range, offset, half width, code basis."""
    lv = torch.tensor(levels, dtype=torch.int32, device=device)
    half_l = (lv - 1) * (1 + FSQ_EPS) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(device)
    shift = torch.atanh(offset / half_l)
    basis = torch.cumprod(torch.tensor((1,) + tuple(levels[:-1]), dtype=torch.int64, device=device), dim=0)
    return FSQTables(shift.float(), half_l.float(), offset.float(), (lv // 2).float(), basis)


def _check_levels(z: torch.Tensor, levels: tuple[int, ...]) -> None:
    if z.shape[-1] != len(levels):
        raise TokenizerError(f"fsq_round got {z.shape[-1]} channels for {len(levels)} levels; they must match.")
    if any(level < 3 for level in levels):
        raise TokenizerError(f"fsq_round needs every level >= 3 (the library's bound), got {levels}.")


def fsq_round_reference(z: torch.Tensor, levels: tuple[int, ...]) -> ScalarQuantized:
    """FSQ in plain torch: bound with tanh, round, pack the per-channel levels into one code."""
    _check_levels(z, levels)
    t = fsq_tables(tuple(levels), z.device)
    bounded = torch.tanh(z.float() + t.shift) * t.half_l - t.offset
    rounded = bounded.round()
    codes = ((rounded + t.half_width).long() * t.basis).sum(-1)
    return ScalarQuantized((rounded / t.half_width).to(z.dtype), codes)


def fsq_round(z: torch.Tensor, levels: tuple[int, ...]) -> ScalarQuantized:
    """z (..., C) with C = len(levels) -> (quantized (..., C) in [-1, 1], codes (...,) long)."""
    _check_levels(z, levels)
    if use_triton(z):
        return ScalarQuantized(*triton_module("_scalar_quant_triton").fsq_round_triton(z, tuple(levels)))
    return fsq_round_reference(z, levels)


def lfq_round_reference(z: torch.Tensor, scale: float = 1.0) -> ScalarQuantized:
    """LFQ in plain torch: +-scale by sign, the signs packed as bits into one code."""
    positive = z > 0
    bits = 2 ** torch.arange(z.shape[-1] - 1, -1, -1, device=z.device)
    quantized = torch.where(positive, scale, -scale).to(z.dtype)
    return ScalarQuantized(quantized, (positive.long() * bits).sum(-1))


def lfq_round(z: torch.Tensor, scale: float = 1.0) -> ScalarQuantized:
    """z (..., C), C <= 62 -> (quantized (..., C) in {-scale, +scale}, codes (...,) long)."""
    if z.shape[-1] > 62:
        raise TokenizerError(f"lfq_round packs the signs into int64 codes, so C must be <= 62; got {z.shape[-1]}.")
    if use_triton(z):
        return ScalarQuantized(*triton_module("_scalar_quant_triton").lfq_round_triton(z, scale))
    return lfq_round_reference(z, scale)
