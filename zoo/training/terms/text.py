"""Terms that distil the codec's quantized latents toward a text LM's features of the transcript
(DM-Codec's LM guidance, FuseCodec's contextual supervision).

Text has no real alignment to audio: an utterance's tokens are spread over its frames in proportion
to their character counts (`alignment: duration`) or evenly (`uniform`), then cut to the crop. Each
term projects the mean of the codec's quantizer layers into the teacher's space with a linear
`projection` of its own (trained with the codec, not exported with it)."""
from __future__ import annotations

from typing import Literal

import torch

from zoo.errors import TokenizerError
from zoo.losses import distillation as D
from zoo.teachers.base import Teacher
from zoo.training.terms.base import ContextProjection, TeacherTargets, Term, latent_dimension_of

ALIGNMENTS = ("duration", "uniform")


class _TextTerm(Term):
    """A term toward a text teacher through a projection of the mean of the quantizer layers."""

    teacher_modality = "text"

    def __init__(self, teacher: Teacher, weight: float = 1.0, alignment: Literal["duration", "uniform"] = "duration",
                 name: str | None = None):
        super().__init__(teacher, weight, name)
        if alignment not in ALIGNMENTS:
            raise TokenizerError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}.")
        self.alignment = alignment
        self.projection: ContextProjection | None = None

    def bind(self, codec) -> None:
        self.projection = ContextProjection(latent_dimension_of(codec), self.teacher.dim)

    def student(self, out) -> torch.Tensor:
        """(B, N, D_text): the projected mean of the codec's quantizer layers."""
        return self.projection(out.layer_quantized)

    def durations(self, targets: TeacherTargets) -> torch.Tensor | None:
        """Per-token duration weights for the alignment (None: tokens spread evenly)."""
        return targets.features(self.teacher).durations if self.alignment == "duration" else None


class ContextDistill(_TextTerm):
    """DM-Codec's LM-guided distillation: the projected latents against the text tokens aligned to
    the codec's frames, in the D-axis form."""

    default_name = "context"

    def forward(self, out, targets: TeacherTargets) -> torch.Tensor:
        text = targets.features(self.teacher)
        frames = D.align_tokens_to_frames(text.features, text.lengths, targets.frame_positions(), self.durations(targets))
        return D.lm_guided_loss(self.student(out), frames, targets.frame_mask)


class GlobalContextSupervision(_TextTerm):
    """FuseCodec's global contextual supervision: the transcript's tokens pooled, broadcast to every
    frame of the projected latents (per-frame cosine)."""

    default_name = "context_global"

    def forward(self, out, targets: TeacherTargets) -> torch.Tensor:
        text = targets.features(self.teacher)
        return D.global_supervision_loss(self.student(out), targets.frame_mask, text.features, text.lengths)


class AlignedContextDistill(_TextTerm):
    """FuseCodec's temporally aligned contextual supervision: each frame of the projected latents
    against the most similar text token within `window` tokens of its proportional position."""

    default_name = "context_aligned"

    def __init__(self, teacher: Teacher, weight: float = 1.0, window: int = 2,
                 alignment: Literal["duration", "uniform"] = "duration", name: str | None = None):
        super().__init__(teacher, weight, alignment, name)
        self.window = window

    def forward(self, out, targets: TeacherTargets) -> torch.Tensor:
        text = targets.features(self.teacher)
        return D.windowed_alignment_loss(self.student(out), targets.frame_mask, text.features, text.lengths,
                                         targets.frame_positions(), self.durations(targets), self.window)
