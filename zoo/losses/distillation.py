"""Distillation losses for semantic speech codecs, all over (B, T, D) features with length masks.

Conventions: the student is the codec's (projected) latent, (B, T, D); the teacher is already
aligned to the student's frames, (B, T, D); `mask` (B, T) is True on valid frames. Teachers at
another frame rate are brought to the codec's frames with `resample_frames` (speech models) or
`align_tokens_to_frames` (text models: there is no real alignment, so token positions are
spread over the utterance's frames in proportion to their durations, see below).

- SpeechTokenizer (Zhang et al. 2023): D-axis loss, -mean_d log sigmoid(cos over time of
  dimension d), the paper's and the official trainer's form; T-axis loss, L1 + per-frame
  -log sigmoid(cos over D). Unlike the official trainer, padded frames never count.
- DM-Codec: LM-guided (mean of all RVQ layers' outputs vs. the text LM) and LM+SM-guided (that,
  plus the first RVQ layer vs. the speech SSL model), both in the D-axis form.
- FuseCodec: global supervision (teacher pooled over valid frames, broadcast to every frame)
  and temporally aligned contextual supervision (each frame matched to the most similar text
  token within a local window around its proportional position).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.tokens import lengths_to_mask  # noqa: F401  (also used as D.lengths_to_mask by the training modules)


def _check(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> None:
    if student.ndim != 3 or teacher.shape != student.shape:
        raise ValueError(f"student and teacher must both be (B, T, D) of one shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}; align the teacher first.")
    if mask.shape != student.shape[:2]:
        raise ValueError(f"mask must be (B, T) = {tuple(student.shape[:2])}, got {tuple(mask.shape)}.")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


# ---- alignment ----------------------------------------------------------------------------

def resample_frames(features: torch.Tensor, lengths: torch.Tensor, frame_lengths: torch.Tensor,
                    num_frames: int) -> torch.Tensor:
    """Linear interpolation of each item's valid frames (features (B, T_in, D), `lengths` valid)
    onto `frame_lengths` frames, zero-padded to `num_frames`: (B, num_frames, D)."""
    out = features.new_zeros(features.shape[0], num_frames, features.shape[-1])
    for b in range(features.shape[0]):
        n_in, n_out = int(lengths[b]), int(min(frame_lengths[b], num_frames))
        if n_in == 0 or n_out == 0:
            continue
        x = features[b, :n_in].T[None]  # (1, D, n_in)
        out[b, :n_out] = F.interpolate(x, size=n_out, mode="linear", align_corners=False)[0].T
    return out


def frame_positions(num_frames: int, frame_offsets: torch.Tensor, total_frames: torch.Tensor) -> torch.Tensor:
    """Relative position in [0, 1) of the centre of each of `num_frames` frames of a crop that
    starts `frame_offsets` (B,) frames into an utterance of `total_frames` (B,) frames."""
    t = torch.arange(num_frames, device=total_frames.device, dtype=torch.float32)[None]
    return (frame_offsets[:, None].float() + t + 0.5) / total_frames[:, None].float().clamp(min=1)


def token_index_for_frames(positions: torch.Tensor, token_lengths: torch.Tensor,
                           durations: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the token spoken at each frame, (B, T) long.

    Without an aligner we assume the utterance's tokens are spoken in order, each taking time in
    proportion to its `durations` (B, N) weight (e.g. its number of characters; uniform when None),
    and that they span the whole utterance: token j covers relative positions
    [cum_{j-1}, cum_j) of the cumulative normalised durations."""
    b, n = positions.shape[0], int(token_lengths.max().clamp(min=1))
    valid = lengths_to_mask(token_lengths, n)
    weights = torch.ones(b, n, device=positions.device) if durations is None else durations[:, :n].float()
    weights = weights.clamp(min=1e-6) * valid
    cum = weights.cumsum(-1) / weights.sum(-1, keepdim=True).clamp(min=1e-6)  # (B, N)
    index = torch.searchsorted(cum.contiguous(), positions.contiguous(), right=True)
    return index.clamp(max=(token_lengths - 1).clamp(min=0)[:, None])


def align_tokens_to_frames(token_features: torch.Tensor, token_lengths: torch.Tensor, positions: torch.Tensor,
                           durations: torch.Tensor | None = None) -> torch.Tensor:
    """Text-LM token features (B, N, D) -> frame features (B, T, D), each frame taking the
    token `token_index_for_frames` assigns to it (`positions` (B, T) from `frame_positions`)."""
    index = token_index_for_frames(positions, token_lengths, durations)
    return torch.gather(token_features, 1, index[..., None].expand(-1, -1, token_features.shape[-1]))


# ---- SpeechTokenizer --------------------------------------------------------------------------

def d_axis_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-mean over items and dimensions d of log sigmoid(cos(student[:, :, d], teacher[:, :, d])),
    the cosine taken over each item's valid frames."""
    _check(student, teacher, mask)
    m = mask[..., None].to(student.dtype)
    cos = F.cosine_similarity(student * m, teacher * m, dim=1, eps=1e-6)  # (B, D)
    return -F.logsigmoid(cos).mean()


def t_axis_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                lambda_sim: float = 1.0) -> torch.Tensor:
    """L1 + lambda_sim * -log sigmoid(cos over D), both averaged over valid frames."""
    _check(student, teacher, mask)
    l1 = _masked_mean((student - teacher).abs().mean(-1), mask)
    sim = _masked_mean(-F.logsigmoid(F.cosine_similarity(student, teacher, dim=-1, eps=1e-6)), mask)
    return l1 + lambda_sim * sim


class SemanticDistillLoss(nn.Module):
    """SpeechTokenizer's semantic distillation of the first RVQ layer, `axis` 'd' or 't'."""

    def __init__(self, axis: Literal["d", "t"] = "d", lambda_sim: float = 1.0):
        super().__init__()
        if axis not in ("d", "t"):
            raise ValueError(f"axis must be 'd' or 't', got {axis!r}.")
        self.axis, self.lambda_sim = axis, lambda_sim

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked distillation loss between student and teacher (B, T, D) along the configured axis."""
        if self.axis == "d":
            return d_axis_loss(student, teacher, mask)
        return t_axis_loss(student, teacher, mask, self.lambda_sim)


# ---- DM-Codec -----------------------------------------------------------------------------------

def lm_guided_loss(all_layers_mean: torch.Tensor, lm_frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DM-Codec LM-guided distillation: mean of the RVQ layers' quantized outputs (projected)
    against the frame-aligned text-LM features."""
    return d_axis_loss(all_layers_mean, lm_frames, mask)


def lm_sm_guided_loss(all_layers_mean: torch.Tensor, first_layer: torch.Tensor, lm_frames: torch.Tensor,
                      sm_frames: torch.Tensor, mask: torch.Tensor, lm_weight: float = 1.0,
                      sm_weight: float = 1.0) -> torch.Tensor:
    """DM-Codec LM+SM-guided distillation: the LM term on the mean of all layers plus the
    speech-model term on the first layer."""
    return (lm_weight * d_axis_loss(all_layers_mean, lm_frames, mask)
            + sm_weight * d_axis_loss(first_layer, sm_frames, mask))


# ---- FuseCodec ----------------------------------------------------------------------------------

def pooled(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over each item's valid positions: (B, T, D) -> (B, D)."""
    mask = lengths_to_mask(lengths, features.shape[1])[..., None].to(features.dtype)
    return (features * mask).sum(1) / mask.sum(1).clamp(min=1)


def global_supervision_loss(student: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor,
                            teacher_lengths: torch.Tensor) -> torch.Tensor:
    """FuseCodec global supervision: the teacher pooled over its valid positions, broadcast to
    every student frame; -log sigmoid of the per-frame cosine, mean over valid frames. Works for
    any teacher length (speech frames or text tokens), so no alignment is needed."""
    target = pooled(teacher, teacher_lengths)[:, None].expand_as(student)
    return _masked_mean(-F.logsigmoid(F.cosine_similarity(student, target, dim=-1, eps=1e-6)), mask)


def windowed_alignment_loss(student: torch.Tensor, mask: torch.Tensor, token_features: torch.Tensor,
                            token_lengths: torch.Tensor, positions: torch.Tensor,
                            durations: torch.Tensor | None = None, window: int = 2) -> torch.Tensor:
    """FuseCodec temporally aligned contextual supervision: each frame is matched to the text
    token, within `window` tokens either side of the one its position predicts
    (`token_index_for_frames`), whose features are most similar to the frame's; the choice is
    not differentiated. Loss: -log sigmoid(cos) with that token, mean over valid frames."""
    centre = token_index_for_frames(positions, token_lengths, durations)  # (B, T)
    offsets = torch.arange(-window, window + 1, device=student.device)
    candidates = centre[..., None] + offsets  # (B, T, K)
    in_range = (candidates >= 0) & (candidates < token_lengths[:, None, None])
    candidates = candidates.clamp(min=0).clamp(max=(token_lengths - 1).clamp(min=0)[:, None, None])
    b, t, k = candidates.shape
    gathered = torch.gather(token_features, 1, candidates.reshape(b, t * k, 1).expand(-1, -1, token_features.shape[-1]))
    gathered = gathered.reshape(b, t, k, -1)
    cos = F.cosine_similarity(student[:, :, None], gathered, dim=-1, eps=1e-6)  # (B, T, K)
    best = cos.detach().masked_fill(~in_range, -2.0).argmax(-1, keepdim=True)
    return _masked_mean(-F.logsigmoid(torch.gather(cos, -1, best)[..., 0]), mask)
