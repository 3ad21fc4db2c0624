"""The interface of distillation and regularization terms, and the teacher targets they read.

A term is one loss of codec training: `term(out, targets) -> scalar`, where `out` is the codec's
training output and `targets` the batch's teacher features. It carries its own teacher (frozen,
kept out of the module tree so it is neither optimised nor saved) and its own `weight`; recipes
list terms by `class_path`. A term that needs trainable parameters (a projection into the
teacher's space) builds them in `bind(codec)`; they train with the codec and are saved in the
training checkpoints, not in the exported codec.

What a term may read of the codec output (the training-forward protocol, see zoo.training.codec):
`semantic_features` (B, N, semantic_dimension) and `layer_quantized` (B, n_q, N, D).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torchaudio.functional as AF
from torch import nn

from zoo.errors import TokenizerError
from zoo.losses import distillation as D
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features
from zoo.tokens import lengths_to_mask


class Term(nn.Module):
    """Base of every term: a teacher of `teacher_modality`, a weight, a log name."""

    teacher_modality: ClassVar[str] = "speech"  # 'speech' (frames in time) or 'text' (tokens)
    default_name: ClassVar[str] = ""

    def __init__(self, teacher: Teacher, weight: float = 1.0, name: str | None = None):
        super().__init__()
        if not isinstance(teacher, Teacher):
            raise TokenizerError(f"{type(self).__name__} needs a Teacher, got {type(teacher).__name__}.")
        if teacher.modality != self.teacher_modality:
            raise TokenizerError(f"{type(self).__name__} distils toward {self.teacher_modality} features, got a "
                                 f"{teacher.modality} teacher ({type(teacher).__name__}).")
        self.__dict__["teacher"] = teacher  # frozen and not trained: outside the module tree
        self.weight = weight
        self.name = name or self.default_name

    def bind(self, codec) -> None:
        """Check that the codec fits this term and build any parameters that depend on it."""

    def forward(self, out, targets: "TeacherTargets") -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}, teacher={type(self.teacher).__name__}"


class ContextProjection(nn.Module):
    """The codec's quantized latents, averaged over its quantizer layers, projected into a text
    teacher's space (DM-Codec, FuseCodec): (B, n_q, N, D) -> (B, N, D_text)."""

    def __init__(self, codec_dim: int, teacher_dim: int):
        super().__init__()
        self.project = nn.Linear(codec_dim, teacher_dim)

    def forward(self, layer_quantized: torch.Tensor) -> torch.Tensor:
        return self.project(layer_quantized.mean(1))


def latent_dimension_of(codec) -> int:
    """D of a codec's per-layer quantized latents (the training-forward protocol)."""
    dim = getattr(codec, "latent_dimension", None)
    if not isinstance(dim, int):
        raise TokenizerError(f"{type(codec).__name__} does not name its latent_dimension, which a text term needs "
                             "to project the quantized latents; see the training-forward protocol in zoo.training.codec.")
    return dim


class TeacherTargets:
    """One batch's teacher features: each teacher runs once, whatever the number of terms that use
    it, and speech features are brought to the codec's frames on request.

    batch: a SpeechBatch (wav (B, 1, T), lengths, offsets, full_lengths, texts, keys)."""

    def __init__(self, batch, sample_rate: int, hop_length: int, num_frames: int):
        self.batch, self.sample_rate, self.hop_length, self.num_frames = batch, sample_rate, hop_length, num_frames
        self.frame_lengths = torch.div(batch.lengths + hop_length - 1, hop_length, rounding_mode="floor")
        self.frame_mask = lengths_to_mask(self.frame_lengths, num_frames)  # (B, N) valid codec frames
        self._features: dict[int, TeacherFeatures] = {}
        self._frames: dict[int, torch.Tensor] = {}

    def features(self, teacher: Teacher) -> TeacherFeatures:
        """The teacher's features of the batch: speech frames of the crop at the teacher's own rate,
        or the tokens of each whole transcript."""
        if id(teacher) not in self._features:
            self._features[id(teacher)] = self._run(teacher)
        return self._features[id(teacher)]

    def frames(self, teacher: Teacher) -> torch.Tensor:
        """A speech teacher's features interpolated onto the codec's frames: (B, N, D)."""
        if id(teacher) not in self._frames:
            feats = self.features(teacher)
            self._frames[id(teacher)] = D.resample_frames(feats.features, feats.lengths, self.frame_lengths,
                                                          self.num_frames)
        return self._frames[id(teacher)]

    def frame_positions(self) -> torch.Tensor:
        """(B, N) relative position in [0, 1) of each codec frame within its whole utterance."""
        hop, batch = self.hop_length, self.batch
        total = torch.div(batch.full_lengths + hop - 1, hop, rounding_mode="floor")
        return D.frame_positions(self.num_frames, torch.div(batch.offsets, hop, rounding_mode="floor"), total)

    def _run(self, teacher: Teacher) -> TeacherFeatures:
        batch = self.batch
        teacher.to(batch.wav.device)
        if teacher.input_kind == "key":
            feats = teacher.features(batch.keys)
            return self._crop(feats, teacher.frame_rate) if teacher.modality == "speech" else feats
        if teacher.input_kind == "text":
            if any(not t for t in batch.texts):
                raise TokenizerError("a text teacher needs a transcript (<name>.txt) for every audio file; "
                                     f"none for {[k for k, t in zip(batch.keys, batch.texts) if not t][:3]}.")
            return teacher.features(batch.texts)
        wav, lengths = batch.wav, batch.lengths
        if teacher.sample_rate != self.sample_rate:
            wav = AF.resample(wav, self.sample_rate, teacher.sample_rate)
            lengths = (lengths * teacher.sample_rate) // self.sample_rate
        return teacher.features(wav, lengths)

    def _crop(self, feats: TeacherFeatures, frame_rate: float) -> TeacherFeatures:
        """Cached speech features cover whole utterances: keep the frames of the crop."""
        rate = frame_rate / self.sample_rate
        rows = []
        for i in range(feats.features.shape[0]):
            start = min(int(round(int(self.batch.offsets[i]) * rate)), int(feats.lengths[i]) - 1)
            n = max(1, min(int(round(int(self.batch.lengths[i]) * rate)), int(feats.lengths[i]) - start))
            rows.append(feats.features[i, start: start + n])
        return pad_features(rows)


def same_teacher(a: Teacher, b: Teacher) -> bool:
    """Whether two teachers are built alike (same class, settings and weights): recipes give each term
    its own teacher, and terms that share one in effect run it once."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    plain = lambda t: {k: v for k, v in vars(t).items() if not k.startswith("_") and k != "training"}  # noqa: E731
    if plain(a) != plain(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)
