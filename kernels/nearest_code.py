"""Nearest-code search: for each row of x, the index of the closest codebook row.

`nearest_code_reference` is the pure-torch path: it streams over rows of x in chunks so that
no (N x K) distance matrix larger than `max_elements` exists at once. Euclidean distances are
computed as (|x|^2 + |e|^2 - 2 x.e), the same formula vector-quantize-pytorch uses, so the
codes agree with that library's. Cosine search takes the largest dot product (inputs and
codebook already l2-normalized by the caller).
"""
from __future__ import annotations

import torch

# 2^24 fp32 distances = 64 MiB per chunk: large enough for BLAS to run at full speed.
DEFAULT_MAX_ELEMENTS = 1 << 24


def nearest_code_reference(x: torch.Tensor, codebook: torch.Tensor, cosine: bool = False,
                           max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """x: (N, D), codebook: (K, D) -> codes (N,) long."""
    n, k = x.shape[0], codebook.shape[0]
    x = x.float()
    codebook = codebook.float()
    rows = max(1, min(n, max_elements // max(k, 1)))
    codes = torch.empty(n, dtype=torch.long, device=x.device)
    code_sq = None if cosine else codebook.pow(2).sum(-1)  # (K,)
    # Same operation order (and eps clamp) as vector-quantize-pytorch's cdist, so that
    # near-ties round the same way and the codes match that library's exactly.
    for start in range(0, n, rows):
        chunk = x[start:start + rows]
        if cosine:
            codes[start:start + rows] = (chunk @ codebook.t()).argmax(-1)
        else:
            dist = (chunk @ codebook.t()).mul_(-2.0)
            dist = (chunk.pow(2).sum(-1, keepdim=True) + code_sq).add_(dist).clamp_(min=1e-8)
            codes[start:start + rows] = dist.argmin(-1)
    return codes
