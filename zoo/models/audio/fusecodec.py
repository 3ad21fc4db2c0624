"""FuseCodec (Ahasan et al. 2025, arXiv:2509.11425): the SEANet + RVQ codec with
(i) latent representation fusion: semantic (speech SSL, e.g. HuBERT) and contextual (text LM
on the transcript, e.g. BERT) features are fused into the encoder latent before quantization;
(ii) global semantic-contextual supervision (pooled, broadcast teacher targets) and
(iii) temporally aligned contextual supervision, both losses of the training module.

The fusion here follows the paper's description (the official repository could not be read
from this workplace): each feature stream is projected to the latent width and read by the
latent through cross-attention; the results are added to the latent. In training each stream
is dropped per example with probability `modality_dropout`, so the codec also works without
them: encoding without features (plain `encode(wav)`) leaves the latent as the encoder made it.
`modality_dropout` is a training option (`set_training_options(modality_dropout=...)`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from zoo.errors import TokenizerError
from zoo.models.audio.rvq_codec import (DEFAULT_CHUNK_SECONDS, ChunkSeconds, CodecOutput, NumQuantizers, RVQCodec,
                                        RVQCodecConfig, RVQCodecTrainingOptions)
from zoo.tokens import Tokens

# encode options beside the RVQ codec's
SemanticFeatures = Annotated[torch.Tensor | None, "speech-SSL features (B, M, semantic_dimension) of the clip, fused "
                                                  "into the latent (the clip is then encoded whole, not in chunks)"]
ContextFeatures = Annotated[torch.Tensor | None, "text-LM features (B, L, context_dimension) of the transcript, fused "
                                                 "into the latent (the clip is then encoded whole, not in chunks)"]


@dataclass
class FuseCodecConfig(RVQCodecConfig):
    """The RVQ codec's architecture plus the fusion's feature size and heads."""

    context_dimension: int = 768   # text-LM feature size (BERT-base)
    fusion_heads: int = 8

    moved_keys = {**RVQCodecConfig.moved_keys, "modality_dropout": "a training option"}


@dataclass(frozen=True)
class FuseCodecTrainingOptions(RVQCodecTrainingOptions):
    """The RVQ codec's training options plus the dropout of the fused feature streams."""

    modality_dropout: float = 0.1  # per-example chance, in training, that a feature stream is left out

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.modality_dropout <= 1:
            raise TokenizerError(f"modality_dropout must lie in [0, 1], got {self.modality_dropout}.")


class CrossModalFusion(nn.Module):
    """latent (B, N, D) reads one feature stream (B, M, F) by cross-attention; returns (B, N, D)."""

    def __init__(self, dim: int, feature_dim: int, num_heads: int):
        super().__init__()
        self.project = nn.Linear(feature_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, latent: torch.Tensor, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """latent (B, N, D), features (B, M, F), mask (B, M) True where valid -> (B, N, D)."""
        keys = self.norm(self.project(features))
        padding = None if mask is None else ~mask.bool()  # True where a feature frame is padding
        out, _ = self.attention(latent, keys, keys, key_padding_mask=padding, need_weights=False)
        return out


class LatentFusion(nn.Module):
    """latent + attend(semantic) + attend(context), each stream optional."""

    def __init__(self, dim: int, semantic_dim: int, context_dim: int, num_heads: int, modality_dropout: float):
        super().__init__()
        self.semantic = CrossModalFusion(dim, semantic_dim, num_heads)
        self.context = CrossModalFusion(dim, context_dim, num_heads)
        self.modality_dropout = modality_dropout

    def forward(self, latent: torch.Tensor, semantic: torch.Tensor | None = None,
                context: torch.Tensor | None = None, semantic_mask: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """latent (B, N, D) plus what it reads from each given stream; streams left out add nothing."""
        fused = latent
        for branch, features, mask in ((self.semantic, semantic, semantic_mask), (self.context, context, context_mask)):
            if features is None:
                continue
            if features.ndim != 3 or features.shape[0] != latent.shape[0]:
                raise TokenizerError(f"fusion features must be (B, M, F) with B = {latent.shape[0]}, "
                                     f"got {tuple(features.shape)}.")
            added = branch(latent, features, mask)
            if self.training and self.modality_dropout > 0:
                keep = torch.rand(latent.shape[0], 1, 1, device=latent.device) >= self.modality_dropout
                added = added * keep
            fused = fused + added
        return fused


class FuseCodec(RVQCodec):
    """The RVQ codec whose latent reads speech-SSL and text-LM features before quantization."""

    architecture = "fusecodec"
    config_class = FuseCodecConfig
    training_options_class = FuseCodecTrainingOptions

    def __init__(self, config: FuseCodecConfig):
        super().__init__(config)
        self.fusion = LatentFusion(config.dimension, config.semantic_dimension, config.context_dimension,
                                   config.fusion_heads, self.training_options.modality_dropout)

    def _apply_training_options(self, options: FuseCodecTrainingOptions, changed: set[str]) -> None:
        super()._apply_training_options(options, changed)
        self.fusion.modality_dropout = options.modality_dropout

    def fused_latent(self, wav: torch.Tensor, semantic: torch.Tensor | None = None,
                     context: torch.Tensor | None = None, semantic_mask: torch.Tensor | None = None,
                     context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, T) + optional semantic (B, M, semantic_dimension) and context (B, L, context_dimension)
        features -> the latent to quantize (B, N, D)."""
        return self.fusion(self.encode_latent(wav), semantic, context, semantic_mask, context_mask)

    def forward(self, wav: torch.Tensor, n_q: int | None = None, semantic: torch.Tensor | None = None,
                context: torch.Tensor | None = None, semantic_mask: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> CodecOutput:
        """The training pass, with the optional feature streams fused into the latent."""
        latent = self.fused_latent(wav, semantic, context, semantic_mask, context_mask)
        return self.forward_latent(wav, latent, n_q)

    def _encode(self, wav: torch.Tensor, *, n_q: NumQuantizers = None,
                chunk_seconds: ChunkSeconds = DEFAULT_CHUNK_SECONDS, semantic: SemanticFeatures = None,
                context: ContextFeatures = None) -> Tokens:
        if semantic is None and context is None:
            return super()._encode(wav, n_q=n_q, chunk_seconds=chunk_seconds)
        # Features span the whole clip (the context is not frame-aligned), so no chunking here.
        wav = wav if isinstance(wav, torch.Tensor) else wav[..., :]  # a streamed file (encode_file) is read whole
        n_q = self.quantizer.check_n_q(n_q)
        codes = self.quantizer.encode(self.fused_latent(wav, semantic, context), n_q).transpose(1, 2)
        return Tokens(codes, meta={"num_samples": wav.shape[-1]})
