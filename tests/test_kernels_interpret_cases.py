"""Every Triton kernel against its torch reference, on CPU under the Triton interpreter.

Run by tests/test_kernels_triton.py in a subprocess with TRITON_INTERPRET=1 and ZOO_KERNELS=triton
(the interpreter flag must be set before the kernels are decorated, and must not leak into the
rest of the test run); skipped when collected in the normal run. Sizes are odd and tiny on purpose.
"""
import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("runs in a subprocess started by tests/test_kernels_triton.py", allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

import zoo.kernels as K  # noqa: E402
from zoo.kernels import activations, norms, scalar_quant  # noqa: E402
from zoo.kernels.nearest_code import nearest_code_reference, residual_nearest_codes_reference  # noqa: E402

import triton_interpreter_shim  # noqa: E402,F401  (numpy >= 2.4 under triton 3.5's interpreter)

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def test_dispatch_sends_cpu_tensors_to_triton_here():
    assert K.current_mode() == "triton" and K.use_triton(torch.zeros(1))
    with K.force_reference():
        assert not K.use_triton(torch.zeros(1))


def _grads(fn, inputs, seed=0):
    """Output(s) of fn and the gradients of a random projection of them w.r.t. each input."""
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    return list(outs) + list(torch.autograd.grad(loss, [i for i in inputs if i is not None]))


def _assert_close_to_fp32_reference(fused, reference, inputs, dtype):
    """fused on `inputs` vs reference on the same values in fp32: for bf16 that is the error that
    matters (the kernels compute in fp32), and it is independent of the reference's own rounding."""
    leaf = lambda t: None if t is None else t.detach().to(dtype).requires_grad_()  # noqa: E731
    ins = [leaf(t) for t in inputs]
    ref_ins = [None if t is None else t.detach().float().requires_grad_() for t in ins]
    got = _grads(fused, ins)
    want = _grads(reference, ref_ins)
    for g, w in zip(got, want):
        assert g.dtype == dtype or g.dtype == torch.long
        scale = w.abs().max().clamp(min=1.0)
        torch.testing.assert_close(g.float() / scale, w / scale, **TOL[dtype])


@pytest.mark.parametrize("cosine", [False, True])
def test_nearest_code(cosine):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 71, generator=gen).t()  # (71, 24), non-contiguous
    codebook = torch.randn(133, 24, generator=gen)
    if cosine:
        x, codebook = F.normalize(x, dim=-1), F.normalize(codebook, dim=-1)
    got = K.nearest_code(x, codebook, cosine=cosine)
    assert got.dtype == torch.long and got.shape == (71,)
    assert torch.equal(got, nearest_code_reference(x, codebook, cosine=cosine))


def test_nearest_code_wide_dim_and_bf16():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(19, 80, generator=gen).to(torch.bfloat16)  # D > one 64-wide block
    codebook = torch.randn(70, 80, generator=gen).to(torch.bfloat16)
    assert torch.equal(K.nearest_code(x, codebook), nearest_code_reference(x, codebook))


@pytest.mark.parametrize("cosine", [False, True])
def test_residual_nearest_codes(cosine):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(45, 20, generator=gen)
    codebooks = torch.randn(3, 50, 20, generator=gen) * torch.tensor([1.0, 0.5, 0.25]).view(3, 1, 1)
    if cosine:
        codebooks = F.normalize(codebooks, dim=-1)
    got = K.residual_nearest_codes(x, codebooks.transpose(1, 2).contiguous().transpose(1, 2), cosine=cosine)
    assert got.shape == (45, 3)
    assert torch.equal(got, residual_nearest_codes_reference(x, codebooks, cosine=cosine))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fsq_and_lfq_round(dtype):
    gen = torch.Generator().manual_seed(3)
    z = (torch.randn(2, 5, 33, generator=gen) * 2).to(dtype).transpose(1, 2)  # (2, 33, 5), non-contiguous
    levels = (8, 5, 5, 3, 7)
    got, want = K.fsq_round(z, levels), scalar_quant.fsq_round_reference(z, levels)
    assert torch.equal(got.codes, want.codes) and got.quantized.dtype == dtype
    # The interpreter truncates fp32 -> bf16 (the GPU rounds to nearest): allow one bf16 step.
    torch.testing.assert_close(got.quantized, want.quantized, atol=0, rtol=0 if dtype == torch.float32 else 2 ** -7)
    got, want = K.lfq_round(z, 0.5), scalar_quant.lfq_round_reference(z, 0.5)
    assert torch.equal(got.codes, want.codes) and torch.equal(got.quantized, want.quantized)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("residual,adaln", [(True, True), (True, False), (False, True)])
def test_add_norm_forward_backward(dtype, rms, residual, adaln):
    gen = torch.Generator().manual_seed(4)
    b, t, d = 2, 5, 37
    x = torch.randn(b, d, t, generator=gen).transpose(1, 2)  # (B, T, D), non-contiguous
    res = torch.randn(b, t, d, generator=gen) if residual else None
    weight = 1 + 0.1 * torch.randn(d, generator=gen)
    bias = None if rms else 0.1 * torch.randn(d, generator=gen)
    shift = 0.1 * torch.randn(b, d, generator=gen) if adaln else None
    scale = 0.1 * torch.randn(b, d, generator=gen) if adaln else None
    if rms:
        fused = lambda x, r, w, s, c: tuple(K.add_rms_norm(x, r, w, 1e-5, s, c))  # noqa: E731
        ref = lambda x, r, w, s, c: tuple(norms.add_rms_norm_reference(x, r, w, 1e-5, s, c))  # noqa: E731
        inputs = [x, res, weight, shift, scale]
    else:
        fused = lambda x, r, w, bb, s, c: tuple(K.add_layer_norm(x, r, w, bb, 1e-5, s, c))  # noqa: E731
        ref = lambda x, r, w, bb, s, c: tuple(norms.add_layer_norm_reference(x, r, w, bb, 1e-5, s, c))  # noqa: E731
        inputs = [x, res, weight, bias, shift, scale]
    _assert_close_to_fp32_reference(fused, ref, inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_forward_backward(dtype, approximate):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, 60, generator=gen)[:, :, 5:52]  # (3, 7, 47), strided rows
    bias = torch.randn(47, generator=gen)
    _assert_close_to_fp32_reference(lambda x, b: K.gelu(x, b, approximate),
                                    lambda x, b: activations.gelu_reference(x, b, approximate), [x, bias], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_forward_backward_on_chunked_halves(dtype):
    gen = torch.Generator().manual_seed(6)
    h = torch.randn(3, 5, 2 * 45, generator=gen)
    _assert_close_to_fp32_reference(lambda h: K.swiglu(*h.chunk(2, -1)),
                                    lambda h: activations.swiglu_reference(*h.chunk(2, -1)), [h], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("alpha_shape", [(7,), (1, 7, 1)])
def test_snake_forward_backward(dtype, alpha_shape):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 1100, 7, generator=gen).transpose(1, 2)  # (2, 7, 1100): 2 time blocks, non-contiguous
    alpha = 0.2 + torch.rand(alpha_shape, generator=gen)
    _assert_close_to_fp32_reference(K.snake, activations.snake_reference, [x, alpha], dtype)
