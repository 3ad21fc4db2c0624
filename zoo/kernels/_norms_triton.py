"""Triton kernels for residual add + LayerNorm / RMSNorm (+ adaLN shift/scale).

Forward: one program per row reads x and residual, writes new_residual, normed, mean and rstd.
Backward: a (B, G) grid; program (b, g) walks rows g, g + G, ... of sample b, writes dx for
each, and keeps running sums for dweight, dbias, dshift and dscale, which torch adds up over G
afterwards (no atomics, so the result is deterministic).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_math import next_pow2


@triton.jit
def _add_norm_fwd(x_ptr, res_ptr, w_ptr, b_ptr, shift_ptr, scale_ptr, y_ptr, h_ptr, mean_ptr, rstd_ptr,
                  D, T, stride_x, stride_r, stride_mod, eps,
                  HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SHIFT: tl.constexpr,
                  HAS_SCALE: tl.constexpr, IS_RMS: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    ok = cols < D
    h = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        h += tl.load(res_ptr + row * stride_r + cols, mask=ok, other=0.0).to(tl.float32)
        # Normalise the stored (rounded) sum, as the unfused code would.
        h_stored = h.to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + row * D + cols, h_stored, mask=ok)
        h = h_stored.to(tl.float32)
    if IS_RMS:
        mean = 0.0
        centred = h
    else:
        mean = tl.sum(h, axis=0) / D
        centred = tl.where(ok, h - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / D + eps)
    y = centred * rstd
    if HAS_W:
        y *= tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_B:
        y += tl.load(b_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    sample = row // T
    if HAS_SCALE:
        y *= 1.0 + tl.load(scale_ptr + sample * stride_mod + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        y += tl.load(shift_ptr + sample * stride_mod + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * D + cols, y.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _add_norm_bwd(h_ptr, w_ptr, b_ptr, scale_ptr, mean_ptr, rstd_ptr, dy_ptr, dh_out_ptr, dx_ptr,
                  dw_part_ptr, db_part_ptr, dshift_part_ptr, dscale_part_ptr,
                  D, T, G, stride_h, stride_mod,
                  HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_SCALE: tl.constexpr,
                  HAS_DH: tl.constexpr, IS_RMS: tl.constexpr, BLOCK_D: tl.constexpr):
    sample = tl.program_id(0)
    group = tl.program_id(1)
    cols = tl.arange(0, BLOCK_D)
    ok = cols < D
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    else:
        w = tl.where(ok, 1.0, 0.0)
    if HAS_B:
        b = tl.load(b_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    else:
        b = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_SCALE:
        scale = tl.load(scale_ptr + sample * stride_mod + cols, mask=ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dshift_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dscale_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for t in range(group, T, G):
        row = sample * T + t
        h = tl.load(h_ptr + row * stride_h + cols, mask=ok, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row)
        if IS_RMS:
            xhat = h * rstd
        else:
            xhat = tl.where(ok, (h - tl.load(mean_ptr + row)) * rstd, 0.0)
        dy = tl.load(dy_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
        if HAS_SHIFT:
            dshift_acc += dy
        if HAS_SCALE:
            dscale_acc += dy * (xhat * w + b)
            dy = dy * (1.0 + scale)
        dw_acc += dy * xhat
        db_acc += dy
        wdy = dy * w
        c1 = tl.sum(xhat * wdy, axis=0) / D
        if IS_RMS:
            dh = (wdy - xhat * c1) * rstd
        else:
            c2 = tl.sum(wdy, axis=0) / D
            dh = (wdy - (xhat * c1 + c2)) * rstd
        if HAS_DH:
            dh += tl.load(dh_out_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(dx_ptr + row * D + cols, dh.to(dx_ptr.dtype.element_ty), mask=ok)
    part = (sample * G + group) * D + cols
    tl.store(dw_part_ptr + part, dw_acc, mask=ok)
    tl.store(db_part_ptr + part, db_acc, mask=ok)
    if HAS_SHIFT:
        tl.store(dshift_part_ptr + part, dshift_acc, mask=ok)
    if HAS_SCALE:
        tl.store(dscale_part_ptr + part, dscale_acc, mask=ok)


def _rows(t: torch.Tensor | None, d: int) -> torch.Tensor | None:
    if t is None:
        return None
    t = t.reshape(-1, d)
    return t if t.stride(1) == 1 else t.contiguous()


def _groups(n_samples: int, tokens: int, device: torch.device) -> int:
    # Enough programs to fill the GPU (a few per SM); each one sums a share of the tokens.
    target = 4 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(tokens, triton.cdiv(target, n_samples)))


class _AddNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, shift, scale, eps, is_rms):
        d = x.shape[-1]
        x2, r2 = _rows(x, d), _rows(residual, d)
        # The kernels index weight, bias, shift and scale with unit stride along D.
        weight, bias, shift, scale = (None if p is None else p.contiguous() for p in (weight, bias, shift, scale))
        n_rows = x2.shape[0]
        n_samples = x.shape[0] if shift is not None or scale is not None else 1
        tokens = n_rows // max(n_samples, 1)
        mod_stride = d
        y = torch.empty(n_rows, d, dtype=x.dtype, device=x.device)
        h = torch.empty_like(y) if residual is not None else x2
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        block_d = next_pow2(d)
        if n_rows:
            _add_norm_fwd[(n_rows,)](x2, r2, weight, bias, shift, scale, y, h, mean, rstd, d, tokens, x2.stride(0),
                                     r2.stride(0) if r2 is not None else 0, mod_stride, eps,
                                     HAS_RES=residual is not None, HAS_W=weight is not None, HAS_B=bias is not None,
                                     HAS_SHIFT=shift is not None, HAS_SCALE=scale is not None, IS_RMS=is_rms,
                                     BLOCK_D=block_d)
        ctx.save_for_backward(h, weight, bias, shift, scale, mean, rstd)
        ctx.meta = (is_rms, residual is not None, x.shape, n_samples, tokens, mod_stride)
        ctx.set_materialize_grads(False)
        if residual is None:
            return y.view(x.shape)
        return y.view(x.shape), h.view(x.shape)

    @staticmethod
    def backward(ctx, dy, dh_out=None):
        h, weight, bias, shift, scale, mean, rstd = ctx.saved_tensors
        is_rms, has_res, shape, n_samples, tokens, mod_stride = ctx.meta
        d = shape[-1]
        n_rows = h.shape[0]
        dy = torch.zeros(n_rows, d, dtype=h.dtype, device=h.device) if dy is None else dy.reshape(-1, d).contiguous()
        dh_out = None if dh_out is None else dh_out.reshape(-1, d).contiguous()
        dx = torch.empty(n_rows, d, dtype=h.dtype, device=h.device)
        groups = _groups(n_samples, tokens, h.device)
        parts = torch.zeros(4, n_samples, groups, d, dtype=torch.float32, device=h.device)
        if n_rows:
            _add_norm_bwd[(n_samples, groups)](
                h, weight, bias, scale, mean, rstd, dy, dh_out, dx, parts[0], parts[1], parts[2], parts[3],
                d, tokens, groups, h.stride(0), mod_stride, HAS_W=weight is not None, HAS_B=bias is not None,
                HAS_SHIFT=shift is not None, HAS_SCALE=scale is not None, HAS_DH=dh_out is not None,
                IS_RMS=is_rms, BLOCK_D=next_pow2(d))
        needs = ctx.needs_input_grad
        dx = dx.view(shape)
        dres = (dx.clone() if needs[0] else dx) if has_res and needs[1] else None
        dw = parts[0].sum((0, 1)).to(weight.dtype) if weight is not None and needs[2] else None
        db = parts[1].sum((0, 1)).to(bias.dtype) if bias is not None and needs[3] else None
        dshift = parts[2].sum(1).to(shift.dtype) if shift is not None and needs[4] else None
        dscale = parts[3].sum(1).to(scale.dtype) if scale is not None and needs[5] else None
        return dx if needs[0] else None, dres, dw, db, dshift, dscale, None, None


def add_norm_triton(x, residual, weight, bias, shift, scale, eps: float, is_rms: bool):
    """(normed, new_residual) for add_layer_norm (is_rms=False) or add_rms_norm (is_rms=True)."""
    out = _AddNorm.apply(x, residual, weight, bias, shift, scale, float(eps), is_rms)
    if residual is None:
        return out, x
    return out
