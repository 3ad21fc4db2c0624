"""Named LM-SPT models, the released weights' source and the converter from their key layout.

The released file (kakaocorp/lmspt, lmspt_12d5hz_16384_4096.safetensors) holds the official module's
state dict:
  {semantic,acoustic}_encoder.block.*, decoder.model.*, aux_decoder.model.*  -> the same names (zoo.blocks.dac)
  quantizer.rvq_first.quantizers.0.*                 -> semantic_quantizer.quantizers.0.*
  quantizer.rvq_rest.quantizers.{k}.*                -> acoustic_quantizer.quantizers.{k}.*
  every weight-normalised conv's weight_g / weight_v -> parametrizations.weight.original0 / original1
  quantizer.{semantic,acoustic}_vocab_usage (training statistics)  -> dropped
The 25 and 6.25 Hz models of the paper have no released weights or configs: their strides here are
the zoo's choice (the 12.5 Hz ones with the last stride doubled or removed).
"""
from __future__ import annotations

import re

import torch

from zoo.errors import CheckpointError
from zoo.hub.registry import WeightSource, register
from zoo.models.audio.lmspt import LMSPT, LMSPTConfig

_PARTS = re.compile(r"^(semantic_encoder\.block|acoustic_encoder\.block|decoder\.model|aux_decoder\.model)\.")
_QUANTIZERS = {"quantizer.rvq_first.": "semantic_quantizer.", "quantizer.rvq_rest.": "acoustic_quantizer."}
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_DROPPED = {"quantizer.semantic_vocab_usage", "quantizer.acoustic_vocab_usage"}


def convert_official_lmspt(state: dict[str, torch.Tensor], config: LMSPTConfig) -> dict[str, torch.Tensor]:
    """The official LM-SPT state dict -> ours."""
    out, unknown = {}, []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        prefix = next((p for p in _QUANTIZERS if key.startswith(p)), None)
        if prefix is not None:
            key = _QUANTIZERS[prefix] + key.removeprefix(prefix)
        elif not _PARTS.match(key):
            unknown.append(key)
            continue
        head, _, leaf = key.rpartition(".")
        out[f"{head}.{_WEIGHT_NORM.get(leaf, leaf)}"] = value
    if unknown:
        raise CheckpointError(f"the checkpoint has keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that are not "
                              "in the official LM-SPT layout; is it the checkpoint of another model?")
    return out


_PAPER = "LM-SPT: LM-Aligned Semantic Distillation for Speech Tokenization (kakao/lmspt)"
register("lmspt-12.5hz", LMSPT, LMSPTConfig(),
         description="LM-SPT 24 kHz at 12.5 Hz: one 16,384-entry semantic codebook (distilled through resynthesis "
                     "by a frozen Whisper encoder) and 7 residual 4,096-entry acoustic codebooks.",
         license="CC-BY-NC-4.0 (weights, kakaocorp/lmspt model card); code: kakao/lmspt",
         source=WeightSource("kakaocorp/lmspt", "lmspt_12d5hz_16384_4096.safetensors"),
         converter=convert_official_lmspt, paper=_PAPER)
register("lmspt-25hz", LMSPT, LMSPTConfig(encoder_strides=(4, 5, 6, 8), decoder_rates=(8, 6, 5, 4),
                                          aux_decoder_rates=(8, 5, 4, 4)),
         description="LM-SPT at 25 Hz: the 12.5 Hz architecture without its last stride; no released weights.",
         license="Apache-2.0 (the zoo's configuration; no weights)", paper=_PAPER)
register("lmspt-6.25hz", LMSPT, LMSPTConfig(encoder_strides=(4, 5, 6, 8, 4), decoder_rates=(4, 8, 6, 5, 4),
                                            aux_decoder_rates=(8, 8, 5, 4, 2)),
         description="LM-SPT at 6.25 Hz: the 12.5 Hz architecture with its last stride doubled; no released weights.",
         license="Apache-2.0 (the zoo's configuration; no weights)", paper=_PAPER)
