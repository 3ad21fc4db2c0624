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


class SemanticResynthesis(Term):
    """LM-SPT's distillation through resynthesis: speech rebuilt from the semantic tokens alone (the codec's
    auxiliary decoder: `semantic_reconstruction` of its training forward, at its `aux_sample_rate`) must
    give the frozen teacher (an ASR encoder) the features the original speech gives. The teacher's
    gradients reach the codec through the rebuilt audio (`Teacher.features_with_grad`), so the semantic
    encoder and codebook learn what the ASR encoder hears. Per-frame L1 + cosine (the 't'-axis loss) over
    the original's valid frames."""

    default_name = "resynthesis"

    def bind(self, codec) -> None:
        if not self.teacher.passes_gradients:
            raise TokenizerError(f"{self.name} needs a teacher that passes gradients to its input; "
                                 f"{type(self.teacher).__name__} does not (use zoo.teachers.TorchWhisperEncoderTeacher or "
                                 "SpeechSSLTeacher, or RandomSpeechTeacher in tests).")
        rate = getattr(getattr(codec, "config", None), "aux_sample_rate", None)
        if not isinstance(rate, int):
            raise TokenizerError(f"{self.name} needs a codec whose training forward rebuilds speech from its semantic "
                                 f"tokens alone (semantic_reconstruction, as LM-SPT's does); {type(codec).__name__} "
                                 "does not.")
        self.aux_sample_rate = rate

    def forward(self, out, targets: TeacherTargets) -> torch.Tensor:
        import torchaudio.functional as AF

        from zoo.tokens import lengths_to_mask

        teacher = self.teacher
        original = targets.features(teacher)  # (B, T, D) of the input, no gradient
        rebuilt = out.semantic_reconstruction
        if self.aux_sample_rate != teacher.sample_rate:
            rebuilt = AF.resample(rebuilt, self.aux_sample_rate, teacher.sample_rate)
        lengths = torch.div(targets.batch.lengths * teacher.sample_rate, targets.sample_rate, rounding_mode="floor")
        heard = teacher.features_with_grad(rebuilt, lengths.clamp(max=rebuilt.shape[-1]).to(rebuilt.device))
        frames = min(heard.features.shape[1], original.features.shape[1])
        mask = lengths_to_mask(original.lengths.clamp(max=frames).to(rebuilt.device), frames)
        return D.t_axis_loss(heard.features[:, :frames], original.features[:, :frames], mask)
