"""Semantic regularization terms of flexible image tokenizers (ReTok), on the flow decoder's features.

- `HierarchicalSemantic` (ReTok's Hierarchical Semantic Regularization): decoder features of the
  register tokens, projected into a frozen vision teacher's space, are pulled (cosine) toward the
  teacher's global image embedding (the mean of its patch features); the strength falls along the
  sequence by a named schedule, so that the first tokens carry the image's semantics and the tail
  is left free for detail. Dropped registers (past the kept prefix) are left out.
- `PatchAlignment` (REPA): decoder features of the latent patches, projected, are pulled toward
  the teacher's patch features brought to the same grid.

Each term has its own weight, is bound to the tokenizer (`bind`) to build its projection (trained
with the tokenizer, kept out of the exported model) and reads the tokenizer's `FlowPass`
(`register_features`, `patch_features`: one entry, the block the regime was asked to keep).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import TokenizerError
from zoo.teachers.vision import VisionTeacher
from zoo.tokens import lengths_to_mask

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


class HierarchicalSemantic(_SemanticTerm):
    """ReTok's hierarchical semantic regularization (see the module docstring)."""

    def __init__(self, teacher: VisionTeacher, weight: float = 1.0, strength_schedule: str = "linear",
                 min_strength: float = 0.0, name: str = "semantic"):
        super().__init__(teacher, weight, name)
        strength_along_sequence(strength_schedule, 2, min_strength)  # check the arguments now
        self.strength_schedule, self.min_strength = strength_schedule, min_strength

    def forward(self, out, images: torch.Tensor) -> torch.Tensor:
        """out: the tokenizer's FlowPass (register_features [(B, N, D)], keep (B,)); images in [0, 1]."""
        target = self.teacher.patch_features(images).mean(1)  # (B, Dt)
        features = out.register_features[-1]
        b, n, _ = features.shape
        cosine = F.cosine_similarity(self.project(features), target[:, None].to(features.dtype), dim=-1)  # (B, N)
        strength = strength_along_sequence(self.strength_schedule, n, self.min_strength).to(features.device)
        weights = strength[None] * lengths_to_mask(out.keep, n)
        return ((1.0 - cosine) * weights).sum() / weights.sum().clamp_min(1e-8)


class PatchAlignment(_SemanticTerm):
    """REPA: projected decoder patch features toward the teacher's patch features (see the module docstring)."""

    def __init__(self, teacher: VisionTeacher, weight: float = 1.0, name: str = "repa"):
        super().__init__(teacher, weight, name)

    def forward(self, out, images: torch.Tensor) -> torch.Tensor:
        features = out.patch_features[-1]  # (B, P, D)
        b, p, _ = features.shape
        side = int(round(p ** 0.5))
        target = self.teacher.patch_features(images)  # (B, M, Dt)
        m = int(round(target.shape[1] ** 0.5))
        if side * side != p or m * m != target.shape[1]:
            raise TokenizerError(f"PatchAlignment needs square grids, got {p} decoder and {target.shape[1]} teacher patches.")
        grid = target.transpose(1, 2).reshape(b, -1, m, m)
        target = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        return (1.0 - F.cosine_similarity(self.project(features), target.to(features.dtype), dim=-1)).mean()
