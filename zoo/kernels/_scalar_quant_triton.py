"""Triton kernels for FSQ / LFQ bound-and-round: one pass over z writes both the quantized
values and the integer codes."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_math import next_pow2, round_half_even, tanh
from zoo.kernels.scalar_quant import fsq_tables


@triton.jit
def _fsq_kernel(z_ptr, q_ptr, code_ptr, shift_ptr, half_l_ptr, offset_ptr, half_w_ptr, basis_ptr,
                M, C, stride_zm, stride_zc, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    chans = tl.arange(0, BLOCK_C)
    row_ok, chan_ok = rows < M, chans < C
    mask = row_ok[:, None] & chan_ok[None, :]
    z = tl.load(z_ptr + rows[:, None] * stride_zm + chans[None, :] * stride_zc, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(shift_ptr + chans, mask=chan_ok, other=0.0)
    half_l = tl.load(half_l_ptr + chans, mask=chan_ok, other=0.0)
    offset = tl.load(offset_ptr + chans, mask=chan_ok, other=0.0)
    half_w = tl.load(half_w_ptr + chans, mask=chan_ok, other=1.0)
    basis = tl.load(basis_ptr + chans, mask=chan_ok, other=0)
    rounded = round_half_even(tanh(z + shift[None, :]) * half_l[None, :] - offset[None, :])
    tl.store(q_ptr + rows[:, None] * C + chans[None, :], (rounded / half_w[None, :]).to(q_ptr.dtype.element_ty),
             mask=mask)
    digits = (rounded + half_w[None, :]).to(tl.int64) * basis[None, :]
    tl.store(code_ptr + rows, tl.sum(tl.where(mask, digits, 0), axis=1), mask=row_ok)


def _rows(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(-1, z.shape[-1])  # a view whenever the leading dims collapse


def fsq_round_triton(z: torch.Tensor, levels: tuple[int, ...], block_m: int = 128):
    """FSQ rounding and code packing of z (..., C) in one Triton pass -> (quantized, codes)."""
    flat = _rows(z)
    m, c = flat.shape
    t = fsq_tables(levels, z.device)
    quantized = torch.empty(m, c, dtype=z.dtype, device=z.device)
    codes = torch.empty(m, dtype=torch.long, device=z.device)
    if m:
        _fsq_kernel[(triton.cdiv(m, block_m),)](flat, quantized, codes, t.shift, t.half_l, t.offset, t.half_width,
                                                t.basis, m, c, flat.stride(0), flat.stride(1), BLOCK_M=block_m,
                                                BLOCK_C=next_pow2(c, 2))
    return quantized.view(z.shape), codes.view(z.shape[:-1])


@triton.jit
def _lfq_kernel(z_ptr, q_ptr, code_ptr, M, C, scale, stride_zm, stride_zc,
                BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    chans = tl.arange(0, BLOCK_C)
    row_ok, chan_ok = rows < M, chans < C
    mask = row_ok[:, None] & chan_ok[None, :]
    z = tl.load(z_ptr + rows[:, None] * stride_zm + chans[None, :] * stride_zc, mask=mask, other=0.0).to(tl.float32)
    positive = z > 0
    tl.store(q_ptr + rows[:, None] * C + chans[None, :],
             tl.where(positive, scale, -scale).to(q_ptr.dtype.element_ty), mask=mask)
    place = (C - 1 - chans).to(tl.int64)  # channel 0 is the most significant bit
    bits = tl.where(positive & mask, tl.full((BLOCK_M, BLOCK_C), 1, tl.int64) << place[None, :], 0)
    tl.store(code_ptr + rows, tl.sum(bits, axis=1), mask=row_ok)


def lfq_round_triton(z: torch.Tensor, scale: float = 1.0, block_m: int = 128):
    """LFQ sign quantization and bit packing of z (..., C) in one Triton pass -> (quantized, codes)."""
    flat = _rows(z)
    m, c = flat.shape
    quantized = torch.empty(m, c, dtype=z.dtype, device=z.device)
    codes = torch.empty(m, dtype=torch.long, device=z.device)
    if m:
        _lfq_kernel[(triton.cdiv(m, block_m),)](flat, quantized, codes, m, c, float(scale), flat.stride(0),
                                                flat.stride(1), BLOCK_M=block_m, BLOCK_C=next_pow2(c, 2))
    return quantized.view(z.shape), codes.view(z.shape[:-1])
