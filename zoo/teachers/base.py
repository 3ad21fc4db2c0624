"""One interface for the frozen feature providers that codecs distil from.

A teacher turns a batch of audio or text into `TeacherFeatures`: features (B, T, D) with the
valid length of each item, never (B, 1, T, D). Speech teachers produce frames at `frame_rate`
per second; text teachers produce one vector per token and a `durations` weight per token
(its number of characters) that the distillation losses use to spread tokens over frames.

Teachers are frozen: no parameter needs a gradient, they stay in eval mode whatever `train()`
is asked, and `features` runs under no_grad. Torch speech teachers also offer `features_with_grad`,
through which gradients reach the input (for a loss on audio the codec produced).
"""
from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn

from zoo.errors import TokenizerError


class TeacherFeatures(NamedTuple):
    """A teacher's output: padded features, their lengths and (text) token durations."""

    features: torch.Tensor                  # (B, T, D), zero past each item's length
    lengths: torch.Tensor                   # (B,) long: valid frames / tokens per item
    durations: torch.Tensor | None = None   # (B, T) relative spoken duration of each token (text)


def pad_features(rows: list[torch.Tensor], durations: list[torch.Tensor] | None = None) -> TeacherFeatures:
    """Per-item (T_i, D) tensors -> one zero-padded `TeacherFeatures`."""
    lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    out = rows[0].new_zeros(len(rows), max(1, int(lengths.max())), rows[0].shape[-1])
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    dur = None
    if durations is not None:
        dur = out.new_zeros(out.shape[:2])
        for i, d in enumerate(durations):
            dur[i, : d.shape[0]] = d
    return TeacherFeatures(out, lengths, dur)


class Teacher(nn.Module):
    """Base of every teacher. Subclasses set `dim` and implement `_features`.

    input_kind: what `features` takes: 'audio' (wav (B, 1, T), lengths (B,)), 'text' (list of
    str) or 'key' (list of utterance keys, for features cached on disk).
    modality: what the features describe, 'speech' (frames in time) or 'text' (tokens)."""

    input_kind: ClassVar[Literal["audio", "text", "key"]] = "audio"
    modality: str = "speech"
    # True: `features_with_grad` lets gradients reach the input (a torch network; the weights stay frozen)
    passes_gradients: ClassVar[bool] = False

    def __init__(self, dim: int, frame_rate: float | None = None, sample_rate: int | None = None):
        super().__init__()
        self.dim, self.frame_rate, self.sample_rate = dim, frame_rate, sample_rate

    def freeze(self) -> "Teacher":
        """Call at the end of a subclass __init__, once its modules exist."""
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """A teacher stays in eval mode whatever mode is asked for."""
        return super().train(False)  # a teacher never leaves eval mode (dropout, batch norm)

    @torch.no_grad()
    def features(self, inputs, lengths: torch.Tensor | None = None) -> TeacherFeatures:
        """Audio (B, 1, T) or a list of strings -> TeacherFeatures, inputs and output checked."""
        return self._checked_features(inputs, lengths)

    def features_with_grad(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> TeacherFeatures:
        """`features` of audio with gradients flowing back into `wav` (the teacher's weights stay frozen):
        for terms that judge what the codec itself made, as LM-SPT's resynthesis does."""
        if not self.passes_gradients or self.input_kind != "audio":
            raise TokenizerError(f"{type(self).__name__} cannot pass gradients to its input (it is not a torch network "
                                 "on audio); use a torch speech teacher such as zoo.teachers.SpeechSSLTeacher.")
        return self._checked_features(wav, lengths)

    def _checked_features(self, inputs, lengths: torch.Tensor | None) -> TeacherFeatures:
        if self.input_kind == "audio":
            if not isinstance(inputs, torch.Tensor) or inputs.ndim != 3 or inputs.shape[1] != 1:
                raise TokenizerError(f"{type(self).__name__} takes audio of shape (B, 1, T) at "
                                     f"{self.sample_rate} Hz, got {getattr(inputs, 'shape', type(inputs).__name__)}.")
            if lengths is None:
                lengths = torch.full((inputs.shape[0],), inputs.shape[-1], dtype=torch.long, device=inputs.device)
        elif isinstance(inputs, str) or not all(isinstance(s, str) for s in inputs):
            raise TokenizerError(f"{type(self).__name__} takes a list of strings (one per item).")
        out = self._features(inputs, lengths)
        if out.features.ndim != 3 or out.features.shape[-1] != self.dim:
            raise AssertionError(f"{type(self).__name__} returned {tuple(out.features.shape)}, not (B, T, {self.dim}).")
        return out

    def _features(self, inputs, lengths: torch.Tensor | None) -> TeacherFeatures:
        raise NotImplementedError

    def extra_repr(self) -> str:
        """Feature size, frame rate and input kind, for print(teacher)."""
        return f"dim={self.dim}, frame_rate={self.frame_rate}, input={self.input_kind}"
