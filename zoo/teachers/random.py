"""Tiny frozen random teachers for tests and smoke runs: deterministic from a seed, no weights
to download, features that do depend on the input (so distillation has something to learn)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.teachers.base import Teacher, TeacherFeatures, pad_features


class RandomSpeechTeacher(Teacher):
    """tanh of a random strided conv over the waveform: one `dim`-vector per `hop_length` samples."""

    input_kind = "audio"
    modality = "speech"
    passes_gradients = True

    def __init__(self, dim: int = 16, sample_rate: int = 16000, hop_length: int = 320, seed: int = 0):
        super().__init__(dim, frame_rate=sample_rate / hop_length, sample_rate=sample_rate)
        self.hop_length = hop_length
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv1d(1, dim, 2 * hop_length, stride=hop_length, padding=hop_length // 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) / (2 * hop_length) ** 0.5 * 8)
            self.conv.bias.zero_()
        self.freeze()

    def _features(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherFeatures:
        x = torch.tanh(self.conv(wav)).transpose(1, 2)  # (B, T, D)
        frames = torch.div(lengths, self.hop_length, rounding_mode="floor").clamp(1, x.shape[1]).to(x.device)
        x = x * (torch.arange(x.shape[1], device=x.device)[None] < frames[:, None])[..., None]
        return TeacherFeatures(x, frames)


class RandomTextTeacher(Teacher):
    """One token per whitespace-separated word: the mean of fixed random byte embeddings of the
    word plus a little of its neighbours (a stand-in for context); duration = its length."""

    input_kind = "text"
    modality = "text"

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__(dim)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("byte_embedding", torch.randn(256, dim, generator=generator))
        self.freeze()

    def _features(self, texts: list[str], lengths=None) -> TeacherFeatures:
        rows, durations = [], []
        for text in texts:
            words = text.split() or [""]
            vectors = torch.stack([
                self.byte_embedding[torch.tensor(list(w.encode()) or [0], device=self.byte_embedding.device)].mean(0)
                for w in words])  # (N, D)
            context = F.avg_pool1d(vectors.T[None], 3, 1, 1, count_include_pad=False)[0].T
            rows.append(vectors + 0.5 * context)
            durations.append(torch.tensor([max(1, len(w)) for w in words], dtype=torch.float32, device=vectors.device))
        return pad_features(rows, durations)
