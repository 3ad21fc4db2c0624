"""Signal-level quality numbers used by the CLI and the demo (the full metric suite is zoo.eval)."""
from __future__ import annotations

import math

import torch


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch; inf when x == y."""
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Signal-to-noise ratio of `estimate` against `reference` in dB; inf when equal."""
    noise = torch.sum((reference.double() - estimate.double()) ** 2).item()
    signal = torch.sum(reference.double() ** 2).item()
    return math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-20) / noise)
