"""Kernel references and dispatch on CPU: the references agree with vector-quantize-pytorch and
with plain formulas; the switch forces the reference; CPU tensors never load Triton code."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from vector_quantize_pytorch import FSQ, LFQ, ResidualVQ, VectorQuantize

import zoo.kernels as K
from zoo.errors import TokenizerError
from zoo.kernels.nearest_code import nearest_code_reference, residual_nearest_codes_reference


@pytest.mark.parametrize("cosine", [False, True])
def test_nearest_code_matches_vector_quantize_pytorch(cosine):
    torch.manual_seed(0)
    vq = VectorQuantize(dim=8, codebook_size=300, use_cosine_sim=cosine).eval()
    z = torch.randn(2, 257, 8)
    _, want, _ = vq(z)
    flat = z.reshape(-1, 8)
    flat = F.normalize(flat, dim=-1) if cosine else flat
    got = K.nearest_code(flat, vq.codebook, cosine=cosine).view(2, 257)
    assert torch.equal(got, want)
    # Chunking (here 7 rows at a time) changes nothing.
    assert torch.equal(nearest_code_reference(flat, vq.codebook, cosine, max_elements=7 * 300).view(2, 257), want)


@pytest.mark.parametrize("cosine", [False, True])
def test_residual_nearest_codes_match_residual_vq(cosine):
    torch.manual_seed(1)
    rvq = ResidualVQ(dim=6, num_quantizers=3, codebook_size=40, use_cosine_sim=cosine).eval()
    z = torch.randn(1, 77, 6)
    _, want, _ = rvq(z)
    codebooks = torch.stack([layer.codebook for layer in rvq.layers])
    assert torch.equal(K.residual_nearest_codes(z[0], codebooks, cosine=cosine).unsqueeze(0), want)
    assert torch.equal(residual_nearest_codes_reference(z[0], codebooks, cosine=cosine).unsqueeze(0), want)


def test_fsq_and_lfq_round_match_the_library():
    torch.manual_seed(2)
    levels = (8, 5, 5, 3)
    z = torch.randn(2, 50, 4) * 3
    quantized, codes = FSQ(levels=list(levels))(z)
    got = K.fsq_round(z, levels)
    assert torch.equal(got.codes, codes.long()) and torch.equal(got.quantized, quantized)
    z = torch.randn(2, 50, 10)
    quantized, codes, _ = LFQ(dim=10, codebook_size=1024).eval()(z)
    got = K.lfq_round(z)
    assert torch.equal(got.codes, codes.long()) and torch.equal(got.quantized, quantized)


def test_add_norm_adaln_matches_formula():
    torch.manual_seed(3)
    x, res = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    w, b, shift, scale = torch.randn(16), torch.randn(16), torch.randn(2, 16), torch.randn(2, 16)
    normed, h = K.add_layer_norm(x, res, w, b, 1e-5, shift, scale)
    s = x + res
    ln = (s - s.mean(-1, keepdim=True)) / torch.sqrt(s.var(-1, unbiased=False, keepdim=True) + 1e-5) * w + b
    torch.testing.assert_close(normed, ln * (1 + scale[:, None]) + shift[:, None])
    torch.testing.assert_close(h, s)
    normed, h = K.add_rms_norm(x, None, w, 1e-6)
    assert h is x
    torch.testing.assert_close(normed, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
    with pytest.raises(TokenizerError):
        K.add_layer_norm(x, res, w, b, 1e-5, shift[:1])


def test_activation_references():
    torch.manual_seed(4)
    x, alpha = torch.randn(2, 3, 10), torch.rand(3) + 0.1
    torch.testing.assert_close(K.snake(x, alpha), x + torch.sin(alpha[:, None] * x) ** 2 / (alpha[:, None] + 1e-9))
    torch.testing.assert_close(K.snake(x, alpha.view(1, 3, 1)), K.snake(x, alpha))
    gate, up = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(K.swiglu(gate, up), gate * torch.sigmoid(gate) * up)
    bias = torch.randn(6)
    torch.testing.assert_close(K.gelu(gate, bias), F.gelu(gate + bias))
    with pytest.raises(TokenizerError):
        K.snake(x, torch.rand(4))


def test_switch_forces_reference(monkeypatch):
    cpu = torch.zeros(1)
    assert K.current_mode() == "auto" and not K.use_triton(cpu)
    with K.force_reference():
        assert K.current_mode() == "reference"
        with K.kernel_mode("triton"):
            assert K.current_mode() == "triton"
        assert K.current_mode() == "reference"
    assert K.current_mode() == "auto"
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert K.current_mode() == "reference"
    monkeypatch.setenv("ZOO_KERNELS", "fastest")
    with pytest.raises(TokenizerError, match="ZOO_KERNELS"):
        K.current_mode()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU route")
def test_cpu_tensors_never_load_triton_kernels():
    K.nearest_code(torch.randn(3, 4), torch.randn(5, 4))
    K.snake(torch.randn(1, 2, 3), torch.rand(2))
    assert not [m for m in sys.modules if m.startswith("zoo.kernels._") and m.endswith("_triton")]


def test_zoo_works_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
            "import torch, zoo, zoo.kernels as K\n"
            "from zoo.quantize import VectorQuantizer\n"
            "print(VectorQuantizer(4, 8).eval().encode(torch.randn(1, 3, 4)).shape, K.dispatch.triton_available())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["torch.Size([1,", "3])", "False"]
