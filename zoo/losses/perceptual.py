"""Perceptual (feature-space) distance between images, LPIPS-style (Zhang et al. 2018).

    d(x, y) = sum_l mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 )

f_l are feature maps of a frozen backbone, unit-normalised along channels; w_l are the LPIPS
linear weights (non-negative, one per channel), or a plain channel mean when none are given.
Any backbone works: an nn.Module taking images in [0, 1] and returning a list of feature maps.
The standard one is torchvision's VGG16 cut at relu1_2 .. relu5_3, with its ImageNet weights and
the LPIPS linear weights read from local files (nothing is downloaded)."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.io import read_checkpoint

# LPIPS input scaling, applied to images in [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
VGG16_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # up to relu1_2, 2_2, 3_3, 4_3, 5_3
BACKBONES = ("vgg16",)


class VGG16Features(nn.Module):
    """torchvision VGG16 `features`, returning the five LPIPS feature maps. `weights`: a local
    file holding torchvision's VGG16 state dict (vgg16-397923af.pth; the `classifier` part
    is ignored) or just its `features.*` tensors."""

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models import vgg16

        features = vgg16(weights=None).features
        state = read_checkpoint(weights)
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        try:
            features.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{weights} is not a torchvision VGG16 state dict ({str(e).splitlines()[0]}); "
                "pass torchvision's vgg16-397923af.pth."
            ) from None
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in VGG16_SLICES)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> the VGG16 feature map after each slice."""
        h = ((images * 2 - 1) - self.shift) / self.scale
        feats = []
        for block in self.slices:
            h = block(h)
            feats.append(h)
        return feats


def read_lpips_linear_weights(path: str | Path) -> list[torch.Tensor]:
    """The per-layer channel weights of an LPIPS file (keys `lin{i}.model.1.weight` of shape
    (1, C, 1, 1), as in the LPIPS release and taming-transformers' vgg.pth) as a list of (C,)."""
    state = read_checkpoint(path)
    found = {}
    for key, value in state.items():
        m = re.fullmatch(r"(?:.*\.)?lin(\d+)\.(?:model\.1\.)?weight", key)
        if m:
            found[int(m.group(1))] = value.reshape(-1).float()
    if not found or sorted(found) != list(range(len(found))):
        raise CheckpointError(
            f"{path} holds no LPIPS linear weights (keys lin0.model.1.weight, lin1...); pass the LPIPS "
            "weights file of the backbone (e.g. the LPIPS release's weights/v0.1/vgg.pth)."
        )
    return [found[i] for i in range(len(found))]


class PerceptualLoss(nn.Module):
    """Frozen-backbone feature distance. `forward(x, y)` -> scalar mean over the batch;
    `distance(x, y)` -> (B,) one value per image pair. Images in [0, 1]."""

    def __init__(self, backbone: nn.Module, linear_weights: str | Path | None = None):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.layer_weights = nn.ParameterList()
        if linear_weights is not None:
            for w in read_lpips_linear_weights(linear_weights):
                self.layer_weights.append(nn.Parameter(w, requires_grad=False))

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Set the mode; the frozen backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()  # frozen: batch norm / dropout statistics never move
        return self

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS-style distance (B,) of two image batches of one shape."""
        if x.shape != y.shape:
            raise TokenizerError(f"perceptual distance needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
        fx, fy = self.backbone(x), self.backbone(y)
        if self.layer_weights and len(self.layer_weights) != len(fx):
            raise CheckpointError(
                f"the LPIPS weights have {len(self.layer_weights)} layers but the backbone gives {len(fx)} feature maps."
            )
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for i, (a, b) in enumerate(zip(fx, fy)):
            a, b = _unit_channels(a.float()), _unit_channels(b.float())
            diff = (a - b).pow(2)  # (B, C, H, W)
            if self.layer_weights:
                w = self.layer_weights[i]
                if w.numel() != diff.shape[1]:
                    raise CheckpointError(
                        f"LPIPS weights of layer {i} have {w.numel()} channels, the backbone gives {diff.shape[1]}."
                    )
                per_pixel = torch.einsum("bchw,c->bhw", diff, w)
            else:
                per_pixel = diff.mean(1)
            total = total + per_pixel.mean((1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch mean of `distance(x, y)`."""
        return self.distance(x, y).mean()


def _unit_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def build_perceptual_loss(backbone: str | nn.Module = "vgg16", backbone_weights: str | Path | None = None,
                          linear_weights: str | Path | None = None) -> PerceptualLoss:
    """A PerceptualLoss from a backbone name and weight paths, or from any feature module."""
    if isinstance(backbone, nn.Module):
        return PerceptualLoss(backbone, linear_weights)
    if backbone not in BACKBONES:
        raise TokenizerError(f"perceptual backbone must be one of {BACKBONES} or an nn.Module, got {backbone!r}.")
    if backbone_weights is None:
        raise WeightsUnavailableError(
            "the perceptual loss needs the VGG16 ImageNet weights as a local file (nothing is downloaded): "
            "pass perceptual_backbone_weights=PATH/vgg16-397923af.pth (and perceptual_linear_weights="
            "PATH/vgg.pth for LPIPS), or set perceptual_weight to 0."
        )
    return PerceptualLoss(VGG16Features(backbone_weights), linear_weights)
