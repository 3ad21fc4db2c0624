"""GAN losses for tokenizer training: hinge losses, the adaptive generator weight of VQGAN
(Esser et al. 2021) and LeCam regularisation (Tseng et al. 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))), halved as in VQGAN."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: -mean(D(fake))."""
    return -fake_logits.mean()


def adaptive_generator_weight(reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor,
                              last_layer: torch.Tensor, max_weight: float = 1e4, eps: float = 1e-4) -> torch.Tensor:
    """||grad rec|| / ||grad gan|| at the decoder's last layer: balances the two gradients
    there so that the GAN term neither swamps nor vanishes next to the reconstruction term.
    Both losses must still hold their graphs; the result is detached."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


class LeCamRegularizer(nn.Module):
    """LeCam regulariser: keeps the discriminator's logits on real images near the running mean
    of its logits on fakes and vice versa, which stabilises GAN training with little data."""

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("real_mean", torch.zeros(()))
        self.register_buffer("fake_mean", torch.zeros(()))

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """LeCam penalty of this batch's logits against the EMA of the other side's mean logit."""
        if self.training:
            with torch.no_grad():
                self.real_mean.lerp_(real_logits.float().mean(), 1 - self.decay)
                self.fake_mean.lerp_(fake_logits.float().mean(), 1 - self.decay)
        return (F.relu(real_logits - self.fake_mean).pow(2).mean()
                + F.relu(self.real_mean - fake_logits).pow(2).mean())
