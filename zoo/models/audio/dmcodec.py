"""DM-Codec (Ahasan et al. 2024, arXiv:2410.15017): the SpeechTokenizer network trained with
LM-guided distillation (BERT states of the transcript, averaged over layers) or combined LM +
speech-model (HuBERT) guided distillation into the quantized representation.

The released code builds exactly SpeechTokenizer's network (same modules and key layout), so
this family is the shared `RVQCodec` under its own name; which teacher(s) are distilled into
which RVQ layer is the training module's business (`CodecOutput.layer_quantized` gives every
layer, `RVQCodec.project_semantic` their projection).
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo.models.audio.rvq_codec import RVQCodec, RVQCodecConfig


@dataclass
class DMCodecConfig(RVQCodecConfig):
    """Defaults are the released checkpoints' config (the repository's config.json)."""


class DMCodec(RVQCodec):
    """DM-Codec: the shared RVQ codec under its own name and released weights."""

    architecture = "dmcodec"
    config_class = DMCodecConfig
