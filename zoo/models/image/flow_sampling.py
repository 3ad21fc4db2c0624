"""Rectified-flow sampling with classifier-free guidance, plain or normalized (APG).

The flow runs from noise at t = 1 to data at t = 0; the model predicts the velocity
v = noise - data, and each Euler step is x <- x - dt * v at t = 1, 1 - dt, ..., dt.

Guidance mixes a conditional velocity v_c with an unconditional one v_u:
- plain CFG: v = v_u + w (v_c - v_u);
- APG ("Eliminating Oversaturation and Artifacts of High Guidance Scales in Diffusion Models",
  Sadat et al., 2024), as FlexTok uses it: the difference d = v_c - v_u is averaged with momentum
  -0.5 over the steps, clipped to an L2 norm of at most 2.5 per image, and only its part orthogonal
  to v_c is added: v = v_c + (w - 1) d_orth. Norms and projections are per image, over (C, h, w);
  the projection runs in float64.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

APG_MOMENTUM = -0.5
APG_NORM_THRESHOLD = 2.5

# (x (B, C, h, w), t (B,), conditional) -> velocity (B, C, h, w)
VelocityFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def plain_guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """v_u + scale * (v_c - v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


def normalized_guidance(v_cond: torch.Tensor, diff: torch.Tensor, scale: float,
                        norm_threshold: float = APG_NORM_THRESHOLD, parallel_weight: float = 0.0) -> torch.Tensor:
    """APG's update from the (momentum-averaged) difference `diff`, per image over (C, h, w)."""
    dims = tuple(range(1, diff.ndim))
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), norm_threshold / norm)
    direction = F.normalize(v_cond.double(), dim=dims)
    parallel = (diff.double() * direction).sum(dim=dims, keepdim=True) * direction
    orthogonal = diff.double() - parallel
    update = (orthogonal + parallel_weight * parallel).to(diff.dtype)
    return v_cond + (scale - 1.0) * update


@torch.no_grad()
def sample_rectified_flow(velocity: VelocityFn, noise: torch.Tensor, steps: int, guidance_scale: float = 1.0,
                          norm_guidance: bool = False, progress: bool = False) -> torch.Tensor:
    """Integrate from `noise` (B, C, h, w) at t = 1 to t = 0 in `steps` Euler steps -> samples."""
    x = noise
    dt = 1.0 / steps
    guided = guidance_scale != 1.0
    running = torch.zeros_like(x)  # APG's momentum average of v_c - v_u
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="flow decoding", unit="step")
    for i in range(steps, 0, -1):
        t = torch.full((x.shape[0],), i / steps, device=x.device)
        v = velocity(x, t, True)
        if guided:
            v_uncond = velocity(x, t, False)
            if norm_guidance:
                running = (v - v_uncond) + APG_MOMENTUM * running
                v = normalized_guidance(v, running, guidance_scale)
            else:
                v = plain_guidance(v, v_uncond, guidance_scale)
        x = x - dt * v
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return x
