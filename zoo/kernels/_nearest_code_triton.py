"""Triton kernels for nearest-code search (imported only when a CUDA tensor, or the
interpreter, needs them). Each program owns BLOCK_N rows of x and streams the codebook through in
BLOCK_K tiles, keeping a running (best distance, best index) pair per row: the (N x K) distance
matrix exists one (BLOCK_N x BLOCK_K) tile at a time, in registers."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_math import next_pow2


@triton.jit
def _nearest_code_kernel(x_ptr, cb_ptr, cb_sq_ptr, out_ptr, N, K, D,
                         stride_xn, stride_xd, stride_ck, stride_cd,
                         COSINE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)
    x_sq = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + dims
        xd = tl.load(x_ptr + rows[:, None] * stride_xn + d[None, :] * stride_xd,
                     mask=row_ok[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
        x_sq += tl.sum(xd * xd, axis=1)
    best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    best_idx = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        dot = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + dims
            xd = tl.load(x_ptr + rows[:, None] * stride_xn + d[None, :] * stride_xd,
                         mask=row_ok[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
            e = tl.load(cb_ptr + cols[None, :] * stride_ck + d[:, None] * stride_cd,
                        mask=col_ok[None, :] & (d < D)[:, None], other=0.0).to(tl.float32)  # (BLOCK_D, BLOCK_K)
            dot += tl.dot(xd, e, input_precision="ieee")
        if COSINE:
            score = -dot
        else:
            e_sq = tl.load(cb_sq_ptr + cols, mask=col_ok, other=0.0)
            score = (x_sq[:, None] + e_sq[None, :]) - 2.0 * dot
        score = tl.where(col_ok[None, :], score, float("inf"))
        tile_best = tl.min(score, axis=1)
        tile_idx = tl.argmin(score, axis=1).to(tl.int32) + k0
        better = tile_best < best  # strict: the earlier index keeps a tie, like torch.argmin
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, tile_idx, best_idx)
    tl.store(out_ptr + rows, best_idx.to(tl.int64), mask=row_ok)


def nearest_code_triton(x: torch.Tensor, codebook: torch.Tensor, cosine: bool = False,
                        block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """x (N, D), codebook (K, D) -> codes (N,) int64. Any strides, fp32/fp16/bf16 in, fp32 math."""
    n, d = x.shape
    k = codebook.shape[0]
    out = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    cb_sq = codebook.float().pow(2).sum(-1).contiguous()
    grid = (triton.cdiv(n, block_n),)
    _nearest_code_kernel[grid](x, codebook, cb_sq, out, n, k, d, x.stride(0), x.stride(1),
                               codebook.stride(0), codebook.stride(1), COSINE=cosine, BLOCK_N=block_n,
                               BLOCK_K=block_k, BLOCK_D=min(next_pow2(d), 64))
    return out


@triton.jit
def _residual_codes_kernel(x_ptr, cb_ptr, cb_sq_ptr, out_ptr, N, K, D, L,
                           stride_xn, stride_xd, stride_cl, stride_ck, stride_cd, stride_on, stride_ol,
                           COSINE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    residual = tl.load(x_ptr + rows[:, None] * stride_xn + dims[None, :] * stride_xd,
                       mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)  # (BLOCK_N, BLOCK_D)
    for layer in range(0, L):
        if COSINE:
            norm = tl.sqrt(tl.sum(residual * residual, axis=1))
            query = residual / tl.maximum(norm, 1e-12)[:, None]
        else:
            query = residual
        q_sq = tl.sum(query * query, axis=1)
        best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
        best_idx = tl.zeros((BLOCK_N,), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            col_ok = cols < K
            e = tl.load(cb_ptr + layer * stride_cl + cols[None, :] * stride_ck + dims[:, None] * stride_cd,
                        mask=col_ok[None, :] & dim_ok[:, None], other=0.0).to(tl.float32)  # (BLOCK_D, BLOCK_K)
            dot = tl.dot(query, e, input_precision="ieee")
            if COSINE:
                score = -dot
            else:
                e_sq = tl.load(cb_sq_ptr + layer * K + cols, mask=col_ok, other=0.0)
                score = (q_sq[:, None] + e_sq[None, :]) - 2.0 * dot
            score = tl.where(col_ok[None, :], score, float("inf"))
            tile_best = tl.min(score, axis=1)
            tile_idx = tl.argmin(score, axis=1).to(tl.int32) + k0
            better = tile_best < best
            best = tl.where(better, tile_best, best)
            best_idx = tl.where(better, tile_idx, best_idx)
        tl.store(out_ptr + rows * stride_on + layer * stride_ol, best_idx.to(tl.int64), mask=row_ok)
        chosen = tl.load(cb_ptr + layer * stride_cl + best_idx[:, None] * stride_ck + dims[None, :] * stride_cd,
                         mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        residual = residual - chosen


# The residual of a row lives in registers for all layers, so D must fit in one block.
RESIDUAL_MAX_DIM = 512


def residual_nearest_codes_triton(x: torch.Tensor, codebooks: torch.Tensor, cosine: bool = False,
                                  block_n: int = 32, block_k: int = 64) -> torch.Tensor:
    """x (N, D), codebooks (L, K, D) -> codes (N, L) int64, every layer in one launch."""
    n, d = x.shape
    n_layers, k, _ = codebooks.shape
    if d > RESIDUAL_MAX_DIM:  # too wide for registers: one fused search per layer instead
        residual, codes = x.float(), []
        for codebook in codebooks:
            query = torch.nn.functional.normalize(residual, dim=-1) if cosine else residual
            codes.append(nearest_code_triton(query, codebook, cosine=cosine))
            residual = residual - codebook[codes[-1]].float()
        return torch.stack(codes, dim=-1)
    out = torch.empty(n, n_layers, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    cb_sq = codebooks.float().pow(2).sum(-1).contiguous()  # (L, K)
    grid = (triton.cdiv(n, block_n),)
    _residual_codes_kernel[grid](x, codebooks, cb_sq, out, n, k, d, n_layers, x.stride(0), x.stride(1),
                                 codebooks.stride(0), codebooks.stride(1), codebooks.stride(2),
                                 out.stride(0), out.stride(1), COSINE=cosine, BLOCK_N=block_n,
                                 BLOCK_K=block_k, BLOCK_D=next_pow2(d))
    return out
