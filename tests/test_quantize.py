import os
import socket

import pytest
import torch
from vector_quantize_pytorch import VectorQuantize

from zoo.errors import TokenizerError
from zoo.kernels import nearest_code_reference
from zoo.quantize import (FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer,
                          VectorQuantizer, codebook_usage, sync_codebooks_across_processes, upgrade_library_keys)


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


# ---- our weight names ---------------------------------------------------------------------------

def library_names(quantizer, prefix=""):
    """The quantizer's state as vector-quantize-pytorch names it (what folders held before the
    zoo named its own): written out by hand, independently of zoo.quantize's table."""
    attr = {VectorQuantizer: "vq", ResidualVectorQuantizer: "rvq", FiniteScalarQuantizer: "fsq",
            LookupFreeQuantizer: "lfq"}[type(quantizer)]
    return {f"{prefix}{attr}.{k}": v.clone() for k, v in getattr(quantizer, attr).state_dict().items()}


def test_state_dict_names_are_ours_and_shapes_drop_the_head_axis():
    vq = VectorQuantizer(8, 16, codebook_dim=4)
    state = vq.state_dict()
    assert list(state) == ["codebook", "code_usage", "code_sum", "initialised", "project_in.weight",
                           "project_in.bias", "project_out.weight", "project_out.bias"]
    assert state["codebook"].shape == (16, 4) and state["code_usage"].shape == (16,) and state["code_sum"].shape == (16, 4)
    assert state["initialised"].dtype == torch.bool and state["initialised"].shape == ()
    assert torch.equal(state["codebook"], vq.codebook)
    rvq = ResidualVectorQuantizer(8, 3, 16)
    assert sorted(rvq.state_dict()) == sorted(f"layers.{i}.{n}" for i in range(3)
                                              for n in ("codebook", "code_usage", "code_sum", "initialised"))
    assert list(FiniteScalarQuantizer(6, (8, 5, 5)).state_dict()) == ["project_in.weight", "project_in.bias",
                                                                       "project_out.weight", "project_out.bias"]
    assert list(FiniteScalarQuantizer(3, (8, 5, 5)).state_dict()) == []
    assert list(LookupFreeQuantizer(8, 256).state_dict()) == []  # the bit weights are a constant, not stored
    assert list(LookupFreeQuantizer(12, 256).state_dict())[0] == "project_in.weight"
    for q in (vq, rvq):
        assert not any("_codebook" in k or "vq." in k or "embed" in k for k in q.state_dict())


@pytest.mark.parametrize("make", [
    lambda: VectorQuantizer(8, 16, codebook_dim=4), lambda: VectorQuantizer(8, 16, distance="cosine"),
    lambda: ResidualVectorQuantizer(8, 3, 16), lambda: ResidualVectorQuantizer(8, 2, 16, codebook_dim=4),
    lambda: FiniteScalarQuantizer(6, (8, 5, 5)), lambda: LookupFreeQuantizer(12, 256),
])
def test_our_names_round_trip_and_the_library_names_upgrade(make):
    torch.manual_seed(1)
    trained = make().train()
    trained(torch.randn(2, 40, trained.dim))  # EMA statistics move away from their initial values
    trained.eval()
    z = torch.randn(2, 30, trained.dim)
    fresh = make().eval()
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.encode(z), trained.encode(z))
    for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)
    # a state dict in the library's names, as folders and checkpoints were written before
    old = {"encoder.weight": torch.zeros(2), **library_names(trained, prefix="quantizer.")}
    upgraded = upgrade_library_keys(old)
    assert list(upgraded) == ["encoder.weight"] + [f"quantizer.{k}" for k in upgrade_library_keys(
        library_names(trained))]
    ours = {f"quantizer.{k}": v for k, v in trained.state_dict().items()}
    assert set(upgraded) - {"encoder.weight"} == set(ours)
    assert all(torch.equal(upgraded[k], v) for k, v in ours.items())
    assert upgrade_library_keys(ours).keys() == ours.keys()  # our names pass unchanged
    # plain torch loading reads the library's names too (a Lightning resume of an old checkpoint)
    again = make().eval()
    again.load_state_dict(library_names(trained))
    assert torch.equal(again.encode(z), trained.encode(z))


def test_upgrade_renames_residual_layers_and_projections_exactly():
    old = {"codec.quantizer.rvq.layers.11._codebook.embed": torch.zeros(1, 4, 2),
           "codec.quantizer.rvq.layers.11._codebook.cluster_size": torch.zeros(1, 4),
           "codec.quantizer.rvq.layers.11._codebook.initted": torch.tensor(True),
           "codec.quantizer.rvq.project_in.weight": torch.zeros(2, 3),
           "quantizer.vq._codebook.embed_avg": torch.zeros(1, 4, 2), "quantizer.lfq.mask": torch.ones(8),
           "decoder.vq_head.weight": torch.zeros(1)}
    new = upgrade_library_keys(old)
    assert {k: tuple(v.shape) for k, v in new.items()} == {
        "codec.quantizer.layers.11.codebook": (4, 2), "codec.quantizer.layers.11.code_usage": (4,),
        "codec.quantizer.layers.11.initialised": (), "codec.quantizer.project_in.weight": (2, 3),
        "quantizer.code_sum": (4, 2), "decoder.vq_head.weight": (1,)}


def test_layer_outputs_are_each_layers_rows_with_a_straight_through_gradient():
    q = ResidualVectorQuantizer(8, 3, 32).eval()
    z = torch.randn(2, 20, 8, requires_grad=True)
    codes = q.encode(z.detach())
    outputs = q.layer_outputs(z, codes)
    assert outputs.shape == (2, 3, 20, 8)
    for i in range(3):  # the rows, up to the rounding of the straight-through z + (rows - z)
        rows = q.state_dict()[f"layers.{i}.codebook"][codes[..., i]]
        torch.testing.assert_close(outputs[:, i], rows, rtol=0, atol=1e-6)
        assert torch.equal(rows, q.rvq.layers[i].get_output_from_indices(codes[..., i]))
    torch.testing.assert_close(outputs.sum(1), q.codes_to_latents(codes), rtol=0, atol=1e-5)
    outputs[:, 2].sum().backward()  # the third layer's residual is z minus (detached) earlier rows
    assert torch.equal(z.grad, torch.ones_like(z))
    two = q.layer_outputs(z, codes[..., :2])
    assert two.shape == (2, 2, 20, 8) and torch.equal(two, outputs[:, :2])
    with pytest.raises(TokenizerError, match="do not fit latents"):
        q.layer_outputs(z, codes[:1])


# ---- training knobs and the sync decision: rebuilt through the library's constructor --------------

def test_configure_training_rebuilds_with_the_knobs_and_keeps_the_codebook():
    q = VectorQuantizer(8, 16, commitment_weight=1.0).train()
    q(torch.randn(2, 50, 8))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(2, 30, 8)
    codes = q.eval().encode(z)
    q.configure_training(commitment_weight=3.0, decay=0.5, threshold_ema_dead_code=1.0)
    assert torch.equal(q.encode(z), codes)
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    twin = VectorQuantizer(8, 16, commitment_weight=1.0).eval()
    twin.load_state_dict(before)
    x = torch.randn(2, 30, 8)
    assert float(q.train()(x).aux_loss.detach()) == pytest.approx(3 * float(twin.train()(x).aux_loss.detach()),
                                                                  rel=1e-5)
    rows = q.codebook.clone()
    q.configure_training(kmeans_init=True)
    assert not q.is_initialised
    with pytest.raises(TokenizerError, match="not initialised"):
        q.eval().encode(z)
    q.configure_training(kmeans_init=False)  # a pending k-means init is cancelled: the rows are kept
    assert q.is_initialised and torch.equal(q.codebook, rows)


def test_rebuild_keeps_tensors_gradients_modes_and_the_random_state():
    q = ResidualVectorQuantizer(8, 2, 16, codebook_dim=4).train()
    params = list(q.parameters())
    q.rvq.project_in.weight.requires_grad_(False)
    rng = torch.get_rng_state()
    sync_codebooks_across_processes(q, enabled=False)
    assert torch.equal(torch.get_rng_state(), rng)  # building the replacement drew no random numbers
    assert [p is o for p, o in zip(q.parameters(), params)] == [True] * len(params)
    assert not q.rvq.project_in.weight.requires_grad and q.rvq.project_out.weight.requires_grad
    assert q.training and q.rvq.training


class _NoDistributed(Exception):
    pass


def _refuse(*args, **kwargs):
    raise _NoDistributed("a torch.distributed function was called")


def test_sync_rebuild_keeps_codes_and_disabled_calls_nothing_distributed(monkeypatch):
    for fn in ("all_reduce", "broadcast", "all_gather", "barrier", "get_rank", "get_world_size"):
        monkeypatch.setattr(torch.distributed, fn, _refuse)
    model = torch.nn.ModuleDict({"a": VectorQuantizer(8, 16, kmeans_init=True, threshold_ema_dead_code=2.0),
                                 "b": ResidualVectorQuantizer(8, 2, 16, threshold_ema_dead_code=2.0),
                                 "c": FiniteScalarQuantizer(8, (5, 5))})
    model.train()
    model["a"](torch.randn(2, 64, 8))  # k-means init
    z = torch.randn(2, 30, 8)
    before = {k: m.eval().encode(z) for k, m in model.items()}
    library = {k: getattr(model[k], attr) for k, attr in (("a", "vq"), ("b", "rvq"))}
    sync_codebooks_across_processes(model, enabled=False)
    assert model["a"].vq is not library["a"] and model["b"].rvq is not library["b"]  # rebuilt
    assert all(torch.equal(model[k].encode(z), codes) for k, codes in before.items())
    model.train()
    for _ in range(3):  # EMA updates and dead-code restarts, all local
        model["a"](torch.randn(2, 64, 8))
        model["b"](torch.randn(2, 64, 8))
        model["a"].configure_training(kmeans_init=True)
        model["a"](torch.randn(2, 64, 8))  # k-means again, local too


def test_sync_enabled_all_reduces_the_codebook_statistics(monkeypatch):
    reduced = []

    def identity_all_reduce(tensor, *args, **kwargs):  # one process: the sum over ranks is the tensor itself
        reduced.append(tuple(tensor.shape))

    monkeypatch.setattr(torch.distributed, "all_reduce", identity_all_reduce)
    torch.manual_seed(0)
    synced = VectorQuantizer(8, 16, decay=0.5)
    local = VectorQuantizer(8, 16, decay=0.5)
    local.load_state_dict(synced.state_dict())
    sync_codebooks_across_processes(synced, enabled=True)
    x = torch.randn(2, 40, 8)
    synced.train()(x)
    assert (16,) in [s[-1:] for s in reduced] and any(s[-1:] == (8,) for s in reduced)  # usage and sums
    local.train()(x)
    for (k, a), b in zip(synced.state_dict().items(), local.state_dict().values()):
        assert torch.equal(a, b), k
    sync_codebooks_across_processes(synced, enabled=False)
    reduced.clear()
    synced(x)
    assert reduced == []


def _two_rank_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        quantizers = {}
        for enabled in (True, False):
            torch.manual_seed(0)  # the same model on every rank, as DDP starts
            q = VectorQuantizer(8, 16, decay=0.5, kmeans_init=True, kmeans_iters=3, threshold_ema_dead_code=1.0)
            sync_codebooks_across_processes(q, enabled=enabled)
            quantizers[enabled] = q.train()
        torch.manual_seed(100 + rank)  # each rank sees other data
        for _ in range(3):
            x = torch.randn(2, 32, 8) + rank
            for q in quantizers.values():
                q(x)
        torch.save({enabled: q.state_dict() for enabled, q in quantizers.items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_synced_codebooks_stay_identical_across_two_processes(tmp_path):
    """Two gloo processes on the CPU, each with its own data: k-means init, EMA updates and dead-code
    restarts give the same codebooks on both ranks when synced, different ones when not."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_two_rank_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("codebook", "code_usage", "code_sum", "initialised"):
        assert torch.equal(ranks[0][True][key], ranks[1][True][key]), key
    assert bool(ranks[0][True]["initialised"])
    assert not torch.equal(ranks[0][False]["codebook"], ranks[1][False]["codebook"])
