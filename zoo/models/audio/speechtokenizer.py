"""SpeechTokenizer (Zhang et al. 2023, arXiv:2308.16692): a SEANet + RVQ codec whose first
RVQ layer is distilled toward HuBERT features (averaged over layers for the released
models), so that its codes carry content and the later layers the acoustic residual.

The network is the shared `RVQCodec`; the distillation (semantic_head(first layer) vs the
teacher, "D-axis" cosine loss) lives in the training module.
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo.models.audio.rvq_codec import RVQCodec, RVQCodecConfig


@dataclass
class SpeechTokenizerConfig(RVQCodecConfig):
    """Defaults are the released 16 kHz model (speechtokenizer_hubert_avg)."""


class SpeechTokenizer(RVQCodec):
    """SpeechTokenizer: the shared RVQ codec under its own name and released weights."""

    architecture = "speechtokenizer"
    config_class = SpeechTokenizerConfig
