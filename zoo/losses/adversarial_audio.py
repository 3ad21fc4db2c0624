"""GAN losses over the many sub-discriminators of an audio codec (MPD, MSD, MS-STFT) and the
feature-matching loss. Each takes the lists a `DiscriminatorOutput` carries and averages the
per-discriminator terms, so the weights in a recipe do not depend on how many there are.

Hinge terms are the shared ones in `zoo.losses.adversarial`; LSGAN (HiFi-GAN, SpeechTokenizer)
is the least-squares form: D pushes real logits to 1 and fakes to 0, G pushes fakes to 1.
"""
from __future__ import annotations

from typing import Literal

import torch

from zoo.losses.adversarial import hinge_discriminator_loss, hinge_generator_loss

GanLoss = Literal["hinge", "lsgan"]


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor],
                       kind: GanLoss = "hinge") -> torch.Tensor:
    """Mean over sub-discriminators; pass fake logits computed on detached reconstructions."""
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError(f"need matching, non-empty logit lists, got {len(real_logits)} and {len(fake_logits)}.")
    terms = []
    for real, fake in zip(real_logits, fake_logits):
        if kind == "hinge":
            terms.append(hinge_discriminator_loss(real, fake))
        elif kind == "lsgan":
            terms.append((1 - real).pow(2).mean() + fake.pow(2).mean())
        else:
            raise ValueError(f"unknown GAN loss {kind!r}; use 'hinge' or 'lsgan'.")
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake_logits: list[torch.Tensor], kind: GanLoss = "hinge") -> torch.Tensor:
    """Mean generator loss over the sub-discriminators' logits (hinge or least squares)."""
    if not fake_logits:
        raise ValueError("need a non-empty list of logits.")
    if kind == "hinge":
        terms = [hinge_generator_loss(f) for f in fake_logits]
    elif kind == "lsgan":
        terms = [(1 - f).pow(2).mean() for f in fake_logits]
    else:
        raise ValueError(f"unknown GAN loss {kind!r}; use 'hinge' or 'lsgan'.")
    return torch.stack(terms).mean()


def feature_matching_loss(real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]],
                          relative: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """L1 between the discriminator's hidden activations on real and reconstructed audio, mean
    over layers and sub-discriminators. `relative` divides each layer's L1 by the mean |real|
    activation of that layer (EnCodec), so layers of different scale weigh alike. The real
    activations are treated as targets (detached)."""
    terms = []
    for real_layers, fake_layers in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_layers, fake_layers, strict=True):
            real = real.detach()
            term = (real - fake).abs().mean()
            if relative:
                term = term / (real.abs().mean() + eps)
            terms.append(term)
    if not terms:
        raise ValueError("need non-empty feature lists.")
    return torch.stack(terms).mean()
