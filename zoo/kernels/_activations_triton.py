"""Triton kernels for bias + GELU, SwiGLU and Snake, forward and backward. Element-wise kernels
work on a (rows, H) view with its own strides, so chunked halves and transposed inputs are read
in place; outputs are contiguous."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_math import next_pow2, tanh

# Globals read inside @triton.jit code must be constexpr (compiled mode rejects plain floats).
SQRT1_2 = tl.constexpr(0.7071067811865476)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])  # a view whenever the leading dims collapse


def _blocks(h: int) -> tuple[int, int]:
    block_c = min(next_pow2(h, 16), 256)
    return max(1, 2048 // block_c), block_c


@triton.jit
def _gelu_grad(h, TANH: tl.constexpr):
    if TANH:
        inner = SQRT_2_OVER_PI * (h + 0.044715 * h * h * h)
        t = tanh(inner)
        return 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * h * h)
    cdf = 0.5 * (1.0 + tl.math.erf(h * SQRT1_2))
    return cdf + h * INV_SQRT_2PI * tl.exp(-0.5 * h * h)


@triton.jit
def _gelu_kernel(x_ptr, b_ptr, dy_ptr, out_ptr, R, H, stride_xr, stride_xc,
                 HAS_BIAS: tl.constexpr, TANH: tl.constexpr, BACKWARD: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < R)[:, None] & (cols < H)[None, :]
    h = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        h += tl.load(b_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)[None, :]
    out_off = rows[:, None] * H + cols[None, :]
    if BACKWARD:  # out = dy * gelu'(h)
        dy = tl.load(dy_ptr + out_off, mask=mask, other=0.0).to(tl.float32)
        out = dy * _gelu_grad(h, TANH)
    elif TANH:
        out = 0.5 * h * (1.0 + tanh(SQRT_2_OVER_PI * (h + 0.044715 * h * h * h)))
    else:
        out = 0.5 * h * (1.0 + tl.math.erf(h * SQRT1_2))
    tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=mask)


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, tanh_approx):
        x2 = _rows(x)
        out = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
        _gelu_launch(x2, bias, None, out, tanh_approx)
        ctx.save_for_backward(x, bias)
        ctx.tanh_approx = tanh_approx
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        x2 = _rows(x)
        dx = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
        _gelu_launch(x2, bias, dy.reshape(x2.shape).contiguous(), dx, ctx.tanh_approx)
        dbias = dx.float().sum(0).to(bias.dtype) if bias is not None and ctx.needs_input_grad[1] else None
        return dx.view(x.shape), dbias, None


def _gelu_launch(x2, bias, dy, out, tanh_approx):
    r, h = x2.shape
    if r == 0 or h == 0:
        return
    block_r, block_c = _blocks(h)
    grid = (triton.cdiv(r, block_r), triton.cdiv(h, block_c))
    _gelu_kernel[grid](x2, bias, dy, out, r, h, x2.stride(0), x2.stride(1), HAS_BIAS=bias is not None,
                       TANH=tanh_approx, BACKWARD=dy is not None, BLOCK_R=block_r, BLOCK_C=block_c)


def gelu_triton(x, bias=None, approximate: str = "none"):
    """GELU(x + bias) in one Triton pass, differentiable (tanh approximation when asked)."""
    return _Gelu.apply(x, bias, approximate == "tanh")


@triton.jit
def _swiglu_kernel(g_ptr, u_ptr, dy_ptr, out_ptr, dg_ptr, R, H, stride_gr, stride_gc, stride_ur, stride_uc,
                   BACKWARD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < R)[:, None] & (cols < H)[None, :]
    g = tl.load(g_ptr + rows[:, None] * stride_gr + cols[None, :] * stride_gc, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + rows[:, None] * stride_ur + cols[None, :] * stride_uc, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    out_off = rows[:, None] * H + cols[None, :]
    if BACKWARD:  # out_ptr <- d up, dg_ptr <- d gate
        dy = tl.load(dy_ptr + out_off, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + out_off, (dy * silu).to(out_ptr.dtype.element_ty), mask=mask)
        dg = dy * u * sig * (1.0 + g * (1.0 - sig))
        tl.store(dg_ptr + out_off, dg.to(dg_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + out_off, (silu * u).to(out_ptr.dtype.element_ty), mask=mask)


def _swiglu_launch(g2, u2, dy, out, dg):
    r, h = g2.shape
    if r == 0 or h == 0:
        return
    block_r, block_c = _blocks(h)
    grid = (triton.cdiv(r, block_r), triton.cdiv(h, block_c))
    _swiglu_kernel[grid](g2, u2, dy, out, dg, r, h, g2.stride(0), g2.stride(1), u2.stride(0), u2.stride(1),
                         BACKWARD=dy is not None, BLOCK_R=block_r, BLOCK_C=block_c)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        g2, u2 = _rows(gate), _rows(up)
        out = torch.empty(g2.shape, dtype=torch.result_type(gate, up), device=gate.device)
        _swiglu_launch(g2, u2, None, out, None)
        ctx.save_for_backward(gate, up)
        return out.view(gate.shape)

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        g2, u2 = _rows(gate), _rows(up)
        dup = torch.empty(g2.shape, dtype=up.dtype, device=up.device)
        dgate = torch.empty(g2.shape, dtype=gate.dtype, device=gate.device)
        _swiglu_launch(g2, u2, dy.reshape(g2.shape).contiguous(), dup, dgate)
        return dgate.view(gate.shape), dup.view(up.shape)


def swiglu_triton(gate, up):
    """silu(gate) * up in one Triton pass, differentiable."""
    return _SwiGLU.apply(gate, up)


@triton.jit
def _snake_kernel(x_ptr, a_ptr, dy_ptr, out_ptr, da_part_ptr, C, T, n_t_blocks, stride_b, stride_c, stride_t,
                  eps, BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr):
    row = tl.program_id(0)  # one (sample, channel) pair
    t_block = tl.program_id(1)
    b = row // C
    c = row % C
    ts = t_block * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = ts < T
    x = tl.load(x_ptr + b * stride_b + c * stride_c + ts * stride_t, mask=ok, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + c).to(tl.float32)
    inv = 1.0 / (a + eps)
    s = tl.sin(a * x)
    if BACKWARD:  # out_ptr <- dx; da_part_ptr[row, t_block] <- this block's share of d alpha
        dy = tl.load(dy_ptr + row * T + ts, mask=ok, other=0.0).to(tl.float32)
        sin2 = 2.0 * s * tl.cos(a * x)  # sin(2 a x)
        tl.store(out_ptr + row * T + ts, (dy * (1.0 + sin2 * a * inv)).to(out_ptr.dtype.element_ty), mask=ok)
        da = tl.where(ok, dy * (sin2 * x * inv - s * s * inv * inv), 0.0)
        tl.store(da_part_ptr + row * n_t_blocks + t_block, tl.sum(da, axis=0))
    else:
        tl.store(out_ptr + row * T + ts, (x + inv * s * s).to(out_ptr.dtype.element_ty), mask=ok)


def _snake_launch(x, alpha, dy, out, da_part, block_t):
    bsz, c, t = x.shape
    if out.numel() == 0:
        return
    _snake_kernel[(bsz * c, triton.cdiv(t, block_t))](x, alpha, dy, out, da_part, c, t, triton.cdiv(t, block_t),
                                                      x.stride(0), x.stride(1), x.stride(2), 1e-9,
                                                      BACKWARD=dy is not None, BLOCK_T=block_t)


class _Snake(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        a = alpha.reshape(-1).contiguous()
        out = torch.empty(x.shape, dtype=torch.result_type(x, alpha), device=x.device)
        block_t = min(next_pow2(x.shape[2]), 1024)
        _snake_launch(x, a, None, out, None, block_t)
        ctx.save_for_backward(x, a)
        ctx.alpha_shape, ctx.block_t = alpha.shape, block_t
        return out

    @staticmethod
    def backward(ctx, dy):
        x, a = ctx.saved_tensors
        bsz, c, t = x.shape
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        da_part = torch.zeros(bsz, c, triton.cdiv(t, ctx.block_t), dtype=torch.float32, device=x.device)
        _snake_launch(x, a, dy.contiguous(), dx, da_part, ctx.block_t)
        dalpha = da_part.sum((0, 2)).to(a.dtype).view(ctx.alpha_shape) if ctx.needs_input_grad[1] else None
        return dx, dalpha


def snake_triton(x, alpha):
    """Snake x + sin^2(alpha x) / alpha in one Triton pass, differentiable."""
    return _Snake.apply(x, alpha)
