"""One quantizer interface over vector-quantize-pytorch.

Every quantizer takes latents z of shape (B, N, D) and returns
`QuantizerOutput(quantized, codes, aux_loss)`; `codes_to_latents(codes)` gives back the
quantized latents those codes name. Training runs the library's own forward (EMA updates,
k-means init, dead-code restarts, commitment losses). Encoding and evaluation run our
nearest-code search (`zoo.kernels.nearest_code`), which never builds the full (N x K)
distance matrix and gives the library's codes.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import FSQ, LFQ, ResidualVQ, VectorQuantize
from vector_quantize_pytorch import vector_quantize_pytorch as vq_library

from zoo.errors import TokenizerError
from zoo.kernels import fsq_round, lfq_round, nearest_code, residual_nearest_codes

DISTANCES = ("euclidean", "cosine")
NOT_INITIALISED = ("this quantizer's codebook is not initialised yet (k-means init runs on the first training "
                   "step); train it or load trained weights before encoding.")


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (B, N, D), same space as the input
    codes: torch.Tensor      # (B, N) long; (B, N, n_q) for residual quantizers
    aux_loss: torch.Tensor   # scalar: commitment / codebook / entropy losses, already weighted


class CodebookUsage(NamedTuple):
    used_fraction: float  # share of codebook entries used at least once
    perplexity: float     # exp(entropy) of the code histogram; equals K when use is uniform


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> CodebookUsage:
    """Usage and perplexity of one codebook over a batch of codes (any shape)."""
    counts = torch.bincount(codes.reshape(-1).long(), minlength=codebook_size).double()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return CodebookUsage(float((counts > 0).double().mean()), float(entropy.exp()))


def _sync_across_processes_when_distributed(codebook: nn.Module, args) -> None:
    """Forward pre-hook on each library codebook. The library decides once, when a codebook is built,
    whether to all-reduce its EMA statistics and k-means / dead-code samples across processes; a
    LightningModule builds its model before DDP starts, so every rank's codebook would drift on its
    own. Deciding at each call keeps the ranks' codebooks identical."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1
    sample = vq_library.sample_vectors_distributed if distributed else vq_library.batched_sample_vectors
    reduce = torch.distributed.all_reduce if distributed else vq_library.noop
    codebook.sample_fn = codebook.replace_sample_fn = sample
    codebook.all_reduce_fn = codebook.kmeans_all_reduce_fn = reduce


def _sync_codebooks_at_run_time(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, vq_library.Codebook):
            m.register_forward_pre_hook(_sync_across_processes_when_distributed)


def _check_latents(z: torch.Tensor, dim: int, who: str) -> None:
    if z.ndim != 3 or z.shape[-1] != dim:
        raise TokenizerError(f"{who} takes latents of shape (B, N, {dim}), got {tuple(z.shape)}.")


def _straight_through(z: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    # Exact codebook rows when no gradient is needed; the usual estimator when one is.
    return z + (quantized - z).detach() if z.requires_grad else quantized


def _encode_with(vq: VectorQuantize, z: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Codes that `vq` (one head, no image fmap) would give for z: (B, N, D) -> (B, N)."""
    if not bool(vq._codebook.initted):  # False only while a k-means init is pending
        raise TokenizerError(NOT_INITIALISED)
    x = vq.project_in(z)
    if cosine:
        x = F.normalize(x, dim=-1)
    flat = x.reshape(-1, x.shape[-1])
    return nearest_code(flat, vq.codebook, cosine=cosine).view(x.shape[:-1])


class VectorQuantizer(nn.Module):
    """A single codebook. `distance="cosine"` is l2-normalized VQ (inputs and codes on the sphere);
    `codebook_dim` < `dim` adds factorized in/out projections."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int | None = None,
                 distance: str = "euclidean", commitment_weight: float = 1.0, decay: float = 0.8,
                 kmeans_init: bool = False, kmeans_iters: int = 10, threshold_ema_dead_code: float = 0,
                 learnable_codebook: bool = False, rotation_trick: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise TokenizerError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        self.dim, self.codebook_size, self.distance = dim, codebook_size, distance
        self.vq = VectorQuantize(
            dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim,
            use_cosine_sim=distance == "cosine", commitment_weight=commitment_weight, decay=decay,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
            learnable_codebook=learnable_codebook, ema_update=not learnable_codebook,
            rotation_trick=rotation_trick,
        )
        _sync_codebooks_at_run_time(self.vq)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,)

    @property
    def codebook(self) -> torch.Tensor:
        """(K, codebook_dim) codebook rows as searched."""
        return self.vq.codebook

    @property
    def is_initialised(self) -> bool:
        """False only while a k-means initialisation waits for the first training batch."""
        return bool(self.vq._codebook.initted)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_latents(z, self.dim, "VectorQuantizer")
        if self.training:
            quantized, codes, loss = self.vq(z)
            return QuantizerOutput(quantized, codes, loss.sum())
        codes = self.encode(z)
        return QuantizerOutput(_straight_through(z, self.codes_to_latents(codes)), codes, z.new_zeros(()))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> codes (B, N), without building the (N x K) distance matrix."""
        _check_latents(z, self.dim, "VectorQuantizer")
        return _encode_with(self.vq, z, self.distance == "cosine")

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> quantized latents (B, N, D)."""
        return self.vq.get_output_from_indices(codes.long())


class ResidualVectorQuantizer(nn.Module):
    """`num_quantizers` codebooks, each quantizing what the previous ones left. Any number of
    leading layers can encode or decode (bitrate control). The residual passed to the next layer
    is detached from the previous layer's output (the library's behaviour)."""

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, codebook_dim: int | None = None,
                 distance: str = "euclidean", commitment_weight: float = 1.0, decay: float = 0.8,
                 kmeans_init: bool = False, kmeans_iters: int = 10, threshold_ema_dead_code: float = 0,
                 quantize_dropout: bool = False, rotation_trick: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise TokenizerError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        self.dim, self.num_quantizers, self.codebook_size, self.distance = dim, num_quantizers, codebook_size, distance
        self.rvq = ResidualVQ(
            dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, codebook_dim=codebook_dim,
            use_cosine_sim=distance == "cosine", commitment_weight=commitment_weight, decay=decay,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            quantize_dropout=quantize_dropout, rotation_trick=rotation_trick,
        )
        _sync_codebooks_at_run_time(self.rvq)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_quantizers

    @property
    def is_initialised(self) -> bool:
        """False only while a k-means initialisation waits for the first training batch."""
        return all(bool(layer._codebook.initted) for layer in self.rvq.layers)

    def check_n_q(self, n_q: int | None) -> int:
        n_q = self.num_quantizers if n_q is None else n_q
        if not 1 <= n_q <= self.num_quantizers:
            raise TokenizerError(f"n_q must be between 1 and {self.num_quantizers}, got {n_q}.")
        return n_q

    def forward(self, z: torch.Tensor, n_q: int | None = None) -> QuantizerOutput:
        _check_latents(z, self.dim, "ResidualVectorQuantizer")
        if self.training and n_q is None:
            quantized, codes, losses = self.rvq(z)
            return QuantizerOutput(quantized, codes, losses.sum())
        codes = self.encode(z, n_q)
        return QuantizerOutput(_straight_through(z, self.codes_to_latents(codes)), codes, z.new_zeros(()))

    def encode(self, z: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """(B, N, D) -> codes (B, N, n_q)."""
        _check_latents(z, self.dim, "ResidualVectorQuantizer")
        n_q = self.check_n_q(n_q)
        layers = self.rvq.layers[:n_q]
        if not self.is_initialised:
            raise TokenizerError(NOT_INITIALISED)
        residual = self.rvq.project_in(z)  # the layers themselves have no projections
        codebooks = torch.stack([layer.codebook for layer in layers])  # (n_q, K, D)
        codes = residual_nearest_codes(residual.reshape(-1, residual.shape[-1]), codebooks,
                                       cosine=self.distance == "cosine")
        return codes.view(*residual.shape[:-1], n_q)

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N, n_q) with n_q <= num_quantizers -> summed quantized latents (B, N, D)."""
        n_q = self.check_n_q(codes.shape[-1])
        codes = codes.long()
        total = sum(layer.get_output_from_indices(codes[..., i]) for i, layer in enumerate(self.rvq.layers[:n_q]))
        return self.rvq.project_out(total)


class FiniteScalarQuantizer(nn.Module):
    """FSQ: each of len(levels) channels is bounded and rounded to `levels[i]` values; no codebook
    to learn and no auxiliary loss. Codebook size is prod(levels)."""

    def __init__(self, dim: int, levels: tuple[int, ...]):
        super().__init__()
        if any(level < 3 for level in levels):
            raise TokenizerError(f"FSQ levels must each be at least 3, got {tuple(levels)}.")
        self.dim, self.levels = dim, tuple(levels)
        self.fsq = FSQ(levels=list(levels), dim=dim)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (math.prod(self.levels),)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_latents(z, self.dim, "FiniteScalarQuantizer")
        quantized, codes = self.fsq(z)
        return QuantizerOutput(quantized, codes.long(), z.new_zeros(()))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        _check_latents(z, self.dim, "FiniteScalarQuantizer")
        return fsq_round(self.fsq.project_in(z), self.levels).codes

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        return self.fsq.indices_to_codes(codes.long())


class LookupFreeQuantizer(nn.Module):
    """LFQ: log2(codebook_size) channels, each quantized to its sign; trained with an entropy loss."""

    def __init__(self, dim: int, codebook_size: int, entropy_loss_weight: float = 0.1,
                 commitment_loss_weight: float = 0.25, diversity_gamma: float = 1.0):
        super().__init__()
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise TokenizerError(f"LFQ needs a power-of-two codebook_size, got {codebook_size}.")
        self.dim, self.codebook_size = dim, codebook_size
        self.lfq = LFQ(dim=dim, codebook_size=codebook_size, entropy_loss_weight=entropy_loss_weight,
                       commitment_loss_weight=commitment_loss_weight, diversity_gamma=diversity_gamma)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_latents(z, self.dim, "LookupFreeQuantizer")
        quantized, codes, aux_loss = self.lfq(z)
        return QuantizerOutput(quantized, codes.long(), aux_loss)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        _check_latents(z, self.dim, "LookupFreeQuantizer")
        return lfq_round(self.lfq.project_in(z)).codes

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        return self.lfq.indices_to_codes(codes.long())
