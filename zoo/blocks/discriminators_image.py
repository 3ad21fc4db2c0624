"""PatchGAN discriminator for images (Isola et al. 2017, the "NLayer" form of taming-transformers).

Each output logit judges one overlapping patch: with `num_layers` = 3 and 4x4 kernels the
receptive field is 70x70 pixels. Inputs are images in [0, 1]; they are mapped to [-1, 1] inside.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.errors import TokenizerError

NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # GroupNorm keeps the discriminator independent of batch size (and of real/fake batch mixing)
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    return nn.Identity()


class NLayerDiscriminator(nn.Module):
    """(B, C, H, W) -> patch logits (B, 1, H', W'); H' = H / 2**num_layers - 2."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3,
                 norm: str = "batch", max_channel_multiplier: int = 8):
        super().__init__()
        if norm not in NORMS:
            raise TokenizerError(f"discriminator norm must be one of {NORMS}, got {norm!r}.")
        if num_layers < 1:
            raise TokenizerError(f"the discriminator needs num_layers >= 1, got {num_layers}.")
        use_bias = norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2 ** i, max_channel_multiplier)
            stride = 2 if i < num_layers else 1  # the last hidden layer keeps the resolution
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=use_bias), _norm(norm, out),
                       nn.LeakyReLU(0.2)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DCGAN initialisation (pix2pix / taming-transformers): N(0, 0.02) convs, N(1, 0.02) norm scales."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> patch logits (B, 1, H', W')."""
        return self.layers(images * 2 - 1)
