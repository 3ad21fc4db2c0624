import pytest
import torch
from vector_quantize_pytorch import VectorQuantize

from zoo.errors import TokenizerError
from zoo.kernels import nearest_code_reference
from zoo.quantize import (FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer,
                          VectorQuantizer, codebook_usage)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("codebook_dim", [None, 8])
def test_vq_codes_equal_library(distance, codebook_dim):
    q = VectorQuantizer(32, 512, codebook_dim=codebook_dim, distance=distance).eval()
    z = torch.randn(3, 200, 32)
    lib_quantized, lib_codes, _ = q.vq(z)
    out = q(z)
    assert out.codes.shape == (3, 200)
    assert torch.equal(out.codes, lib_codes)
    torch.testing.assert_close(out.quantized, lib_quantized, rtol=0, atol=1e-6)


def test_vq_codes_equal_library_large_codebook():
    # The shape of the benchmark (K = 65,536), at fewer vectors.
    lib = VectorQuantize(dim=16, codebook_size=65536).eval()
    ours = VectorQuantizer(16, 65536).eval()
    ours.vq.load_state_dict(lib.state_dict())
    z = torch.randn(1, 512, 16)
    assert torch.equal(ours.encode(z), lib(z)[1])


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_codes_to_latents_inverts_encode(distance):
    q = VectorQuantizer(16, 128, distance=distance).eval()
    z = torch.randn(2, 50, 16)
    codes = q.encode(z)
    latents = q.codes_to_latents(codes)
    assert torch.equal(q.encode(latents), codes)  # a codebook entry's nearest code is itself
    assert torch.equal(latents, q(z).quantized)
    factorized = VectorQuantizer(16, 128, codebook_dim=4).eval()
    assert torch.equal(factorized.codes_to_latents(factorized.encode(z)), factorized(z).quantized)


def test_nearest_code_chunking_gives_same_codes():
    x, codebook = torch.randn(1000, 8), torch.randn(300, 8)
    whole = nearest_code_reference(x, codebook, max_elements=10**9)
    chunked = nearest_code_reference(x, codebook, max_elements=300 * 7)  # 7 rows at a time
    assert torch.equal(whole, chunked)
    assert torch.equal(whole, torch.cdist(x, codebook).argmin(-1))


@pytest.mark.parametrize("cosine", [False, True])
def test_nearest_code_streams_bounded_memory(monkeypatch, cosine):
    seen = []
    for method in ("argmin", "argmax"):
        real = getattr(torch.Tensor, method)

        def spy(t, *args, _real=real, **kwargs):
            seen.append(t.numel())  # the distance chunk being reduced
            return _real(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, spy)
    x, codebook = torch.randn(4096, 4), torch.randn(4096, 4)
    codes = nearest_code_reference(x, codebook, cosine=cosine, max_elements=1 << 20)
    assert seen and max(seen) <= 1 << 20  # never the full 4096 x 4096 = 16.8M matrix
    expected = (x @ codebook.t()).argmax(-1) if cosine else torch.cdist(x, codebook).argmin(-1)
    assert (codes == expected).float().mean() > 0.999


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_rvq_codes_equal_library_and_prefix(distance):
    q = ResidualVectorQuantizer(16, 4, 64, distance=distance).eval()
    z = torch.randn(2, 40, 16)
    lib_quantized, lib_codes, _ = q.rvq(z)
    out = q(z)
    assert out.codes.shape == (2, 40, 4)
    assert torch.equal(out.codes, lib_codes)
    torch.testing.assert_close(out.quantized, lib_quantized, rtol=0, atol=1e-5)
    two = q.encode(z, n_q=2)
    assert torch.equal(two, out.codes[..., :2])
    # decoding fewer layers leaves a larger residual
    err2 = (q.codes_to_latents(two) - z).pow(2).mean()
    err4 = (q.codes_to_latents(out.codes) - z).pow(2).mean()
    assert err4 < err2
    with pytest.raises(TokenizerError, match="n_q must be between 1 and 4"):
        q.encode(z, n_q=5)


def test_training_forward_uses_library_and_returns_loss():
    q = ResidualVectorQuantizer(8, 2, 32, commitment_weight=1.0).train()
    z = torch.randn(2, 30, 8, requires_grad=True)
    out = q(z)
    assert out.aux_loss.ndim == 0 and out.aux_loss > 0
    out.quantized.sum().backward()  # straight-through estimator passes gradients to z
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_kmeans_codebook_must_be_initialised_before_encoding():
    q = VectorQuantizer(8, 16, kmeans_init=True).eval()
    with pytest.raises(TokenizerError, match="not initialised"):
        q.encode(torch.randn(1, 4, 8))
    q.train()(torch.randn(2, 64, 8))  # the first training step runs k-means
    assert q.eval().encode(torch.randn(1, 4, 8)).shape == (1, 4)


def test_fsq_and_lfq_round_trip():
    fsq = FiniteScalarQuantizer(6, (8, 5, 5))
    out = fsq(torch.randn(2, 10, 6))
    assert fsq.codebook_sizes == (200,) and out.codes.max() < 200
    torch.testing.assert_close(fsq.codes_to_latents(out.codes), out.quantized)
    lfq = LookupFreeQuantizer(8, 256).eval()
    out = lfq(torch.randn(2, 10, 8))
    assert out.codes.max() < 256
    torch.testing.assert_close(lfq.codes_to_latents(out.codes), out.quantized)
    with pytest.raises(TokenizerError, match="power-of-two"):
        LookupFreeQuantizer(8, 100)


def test_wrong_latent_shape_is_a_clear_error():
    q = VectorQuantizer(8, 16)
    with pytest.raises(TokenizerError, match=r"\(B, N, 8\)"):
        q(torch.randn(2, 4, 7))
    with pytest.raises(TokenizerError, match="distance must be one of"):
        VectorQuantizer(8, 16, distance="manhattan")


def test_codebook_usage_and_perplexity():
    uniform = codebook_usage(torch.arange(8).repeat(10), 16)
    assert uniform.used_fraction == 0.5
    assert abs(uniform.perplexity - 8) < 1e-9
    one = codebook_usage(torch.zeros(100, dtype=torch.long), 16)
    assert one.used_fraction == 1 / 16 and abs(one.perplexity - 1) < 1e-9


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (7, 5, 3)])
def test_fsq_encode_equals_library_forward(levels):
    fsq = FiniteScalarQuantizer(12, levels)
    z = torch.randn(2, 50, 12) * 3
    _, library_codes = fsq.fsq(z)
    assert torch.equal(fsq.encode(z), library_codes.long())


def test_lfq_encode_equals_library_forward():
    lfq = LookupFreeQuantizer(16, 1024).eval()
    z = torch.randn(2, 50, 16)
    assert torch.equal(lfq.encode(z), lfq.lfq(z).indices.long())
