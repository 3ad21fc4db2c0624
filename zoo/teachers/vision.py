"""Frozen vision teachers: images -> patch features, for semantic regularization of image tokenizers
(ReTok's hierarchical semantic regularization, REPA-style alignment).

`VisionTeacher` wraps any module that maps normalized images (B, 3, S, S) to patch features,
either (B, M, D) tokens or a (B, D, h, w) map; it resizes and normalizes the [0, 1] input and
drops leading tokens (a class token, registers) when asked. `local_dinov2(folder)` opens a DINOv2
(or any Hugging Face vision backbone with `last_hidden_state`) from local files; `RandomVisionTeacher`
is a small seeded conv net for tests and smoke runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import TokenizerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionTeacher(nn.Module):
    """A frozen image backbone giving patch features (B, M, dim) for images in [0, 1]."""

    def __init__(self, backbone: nn.Module, dim: int, image_size: int = 224, skip_tokens: int = 0,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.__dict__["backbone"] = backbone.requires_grad_(False).eval()  # frozen, outside the module tree
        self.dim, self.image_size, self.skip_tokens = dim, image_size, skip_tokens
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VisionTeacher":
        return super().train(False)  # a teacher never leaves eval mode

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> patch features (B, M, dim)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise TokenizerError(f"a vision teacher takes images (B, 3, H, W), got {tuple(images.shape)}.")
        self.backbone.to(images.device)
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        out = self.backbone((x - self.mean.to(x.device)) / self.std.to(x.device))
        out = getattr(out, "last_hidden_state", out)
        if out.ndim == 4:
            out = out.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, hw, D)
        out = out[:, self.skip_tokens:]
        if out.ndim != 3 or out.shape[-1] != self.dim:
            raise TokenizerError(f"the teacher backbone returned {tuple(out.shape)}, not (B, M, {self.dim}) patch features.")
        return out


class RandomVisionTeacher(VisionTeacher):
    """A seeded random conv net (patch features of `dim` channels on a 4x4 grid): tests and smoke runs."""

    def __init__(self, dim: int = 16, image_size: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, dim, 4, stride=2, padding=1), nn.GELU(),
                            nn.Conv2d(dim, dim, 3, padding=1), nn.AdaptiveAvgPool2d(4))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.1))
        super().__init__(net, dim, image_size)


def local_dinov2(folder: str, image_size: int = 224) -> VisionTeacher:
    """A DINOv2 (or other Hugging Face vision backbone) from a local folder of config.json + weights;
    its class token (and register tokens, when the model has them) are dropped."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise TokenizerError("local_dinov2 needs transformers: pip install 'tokenizer-zoo[text]'.") from None
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    skip = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
    return VisionTeacher(model, int(model.config.hidden_size), image_size, skip_tokens=skip)
