"""Terms that distil the codec's semantic features toward a speech teacher (HuBERT, Whisper, ...)."""
from __future__ import annotations

from typing import Literal

import torch

from zoo.errors import TokenizerError
from zoo.losses import distillation as D
from zoo.teachers.base import Teacher
from zoo.training.terms.base import TeacherTargets, Term


def _check_semantic_dimension(term: Term, codec) -> None:
    dim = getattr(codec, "semantic_dimension", None)
    if dim is None:
        raise TokenizerError(f"{type(codec).__name__} names no semantic_dimension: its training forward gives no "
                             f"semantic_features for {term.name} to distil (see the training-forward protocol in "
                             "zoo.training.codec).")
    if dim != term.teacher.dim:
        raise TokenizerError(f"the speech teacher of {term.name} gives {term.teacher.dim}-d features but the codec's "
                             f"semantic_dimension is {dim}; set tokenizer_overrides.semantic_dimension to "
                             f"{term.teacher.dim}.")


class SemanticDistill(Term):
    """SpeechTokenizer's semantic distillation: the codec's semantic features (its first quantizer
    layer, projected) against the teacher's frames interpolated onto the codec's frames; the
    'd'-axis loss (cosine over time per dimension, the paper's) or the 't'-axis one (L1 + cosine
    over dimensions per frame). DM-Codec's speech-model guidance is the same term."""

    default_name = "semantic"

    def __init__(self, teacher: Teacher, weight: float = 1.0, axis: Literal["d", "t"] = "d",
                 name: str | None = None):
        super().__init__(teacher, weight, name)
        self.loss = D.SemanticDistillLoss(axis)

    def bind(self, codec) -> None:
        _check_semantic_dimension(self, codec)

    def forward(self, out, targets: TeacherTargets) -> torch.Tensor:
        return self.loss(out.semantic_features, targets.frames(self.teacher), targets.frame_mask)


class GlobalSemanticSupervision(Term):
    """FuseCodec's global semantic supervision: the teacher's features pooled over the crop,
    broadcast to every frame of the codec's semantic features (per-frame cosine)."""

    default_name = "semantic_global"

    def bind(self, codec) -> None:
        _check_semantic_dimension(self, codec)

    def forward(self, out, targets: TeacherTargets) -> torch.Tensor:
        feats = targets.features(self.teacher)
        return D.global_supervision_loss(out.semantic_features, targets.frame_mask, feats.features, feats.lengths)
