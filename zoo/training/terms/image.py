"""Semantic regularization terms of flexible image tokenizers (ReTok, REPA), on the flow decoder's features.

- `PatchAlignment` (REPA): the decoder's features of the latent patches at one block, projected by a
  small MLP, are pulled (cosine) toward a frozen vision teacher's patch features brought to the
  same grid.
- `HierarchicalSemantic` (ReTok's Hierarchical Semantic Regularization): the same alignment,
  weighted per image by how many tokens it decoded from: full strength for the shortest prefixes,
  falling by a named schedule to `min_strength` at the full sequence, so that the early tokens carry
  the image's semantics and the tail is left free for low-level detail. (ReTok's released code is
  GigaTok-based and its training code is not public; it aligns the decoder's patch queries at one
  depth with DINOv2 features. The schedule over the kept length is our reading of the paper.)

Each term has its own weight, is bound to the tokenizer (`bind`) to build its projection (trained
with the tokenizer, kept out of the exported model) and reads the tokenizer's `FlowPass`
(`patch_features`: one entry, the block the regime was asked to keep, and `keep`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import TokenizerError
from zoo.teachers.vision import VisionTeacher

SCHEDULES = ("linear", "cosine", "exponential", "constant")


def strength_along_sequence(schedule: str, length: int, min_strength: float) -> torch.Tensor:
    """(length,) weights from 1 at the first token down to `min_strength` at the last."""
    if schedule not in SCHEDULES:
        raise TokenizerError(f"strength schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if not 0.0 <= min_strength <= 1.0:
        raise TokenizerError(f"min_strength must lie in [0, 1], got {min_strength}.")
    pos = torch.arange(length, dtype=torch.float32) / max(1, length - 1)  # 0 .. 1
    if schedule == "constant":
        return torch.ones(length)
    if schedule == "linear":
        falloff = 1.0 - pos
    elif schedule == "cosine":
        falloff = 0.5 * (1.0 + torch.cos(math.pi * pos))
    else:  # exponential: halves every tenth of the sequence
        falloff = torch.pow(0.5, 10.0 * pos)
    return min_strength + (1.0 - min_strength) * falloff


def _projection(width: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, dim))


class _SemanticTerm(nn.Module):
    def __init__(self, teacher: VisionTeacher, weight: float, name: str):
        super().__init__()
        if not isinstance(teacher, VisionTeacher):
            raise TokenizerError(f"{type(self).__name__} needs a VisionTeacher (zoo.teachers.vision), "
                                 f"got {type(teacher).__name__}.")
        self.__dict__["teacher"] = teacher  # frozen, outside the module tree
        self.weight, self.name = weight, name
        self.project: nn.Module | None = None

    def bind(self, tokenizer) -> None:
        width = getattr(getattr(tokenizer, "config", None), "decoder_width", None)
        if not isinstance(width, int):
            raise TokenizerError(f"{type(self).__name__} needs a flow-decoder tokenizer (FlexTok), "
                                 f"got {type(tokenizer).__name__}.")
        self.project = _projection(width, self.teacher.dim)


def _alignment(term: "_SemanticTerm", out, images: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - cosine of projected decoder patch features and teacher patch features, per image."""
    features = out.patch_features[-1]  # (B, P, D)
    b, p, _ = features.shape
    side = int(round(p ** 0.5))
    target = term.teacher.patch_features(images)  # (B, M, Dt)
    m = int(round(target.shape[1] ** 0.5))
    if side * side != p or m * m != target.shape[1]:
        raise TokenizerError(f"{type(term).__name__} needs square grids, got {p} decoder and {target.shape[1]} "
                             "teacher patches.")
    grid = target.transpose(1, 2).reshape(b, -1, m, m)
    target = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    return (1.0 - F.cosine_similarity(term.project(features), target.to(features.dtype), dim=-1)).mean(1)


class PatchAlignment(_SemanticTerm):
    """REPA: projected decoder patch features toward the teacher's patch features (see the module docstring)."""

    def __init__(self, teacher: VisionTeacher, weight: float = 1.0, name: str = "repa"):
        super().__init__(teacher, weight, name)

    def forward(self, out, images: torch.Tensor) -> torch.Tensor:
        """out: the tokenizer's FlowPass; images (B, 3, H, W) in [0, 1]."""
        return _alignment(self, out, images).mean()


class HierarchicalSemantic(_SemanticTerm):
    """ReTok's hierarchical semantic regularization (see the module docstring)."""

    def __init__(self, teacher: VisionTeacher, weight: float = 1.0, strength_schedule: str = "linear",
                 min_strength: float = 0.0, name: str = "semantic"):
        super().__init__(teacher, weight, name)
        strength_along_sequence(strength_schedule, 2, min_strength)  # check the arguments now
        self.strength_schedule, self.min_strength = strength_schedule, min_strength

    def forward(self, out, images: torch.Tensor) -> torch.Tensor:
        """out: the tokenizer's FlowPass (patch_features, keep (B,)); images (B, 3, H, W) in [0, 1]."""
        n = out.codes.shape[1]
        strength = strength_along_sequence(self.strength_schedule, n, self.min_strength).to(images.device)
        weights = strength[out.keep.long() - 1]  # (B,): by the number of tokens each image decoded from
        return (weights * _alignment(self, out, images)).sum() / weights.sum().clamp_min(1e-8)
