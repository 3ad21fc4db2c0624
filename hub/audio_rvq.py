"""Named SEANet + RVQ speech codecs (SpeechTokenizer, DM-Codec, FuseCodec), their official
weight sources and the converter from the official key layout.

The official layout (EnCodec's modules, copied by SpeechTokenizer and DM-Codec unchanged):
  encoder.model.{i}.conv.conv.weight_g / weight_v / bias     -> encoder.layers.{i}.conv.parametrizations.weight.original0 / original1, .conv.bias
  encoder.model.{i}.block.{j}.conv.conv.*, .shortcut.conv.conv.* (residual blocks), .lstm.* (SLSTM)
  encoder.model.{i}.alpha                                    -> encoder.layers.{i}.alpha (Snake)
  decoder.model.{i}.convtr.convtr.weight_g / weight_v / bias -> decoder.layers.{i}.conv.parametrizations.weight.original0 / ...
  quantizer.vq.layers.{k}._codebook.embed (K, D), embed_avg (K, D), cluster_size (K,), inited (1,)
                                                             -> quantizer.layers.{k}.codebook (K, D), code_sum (K, D),
                                                                code_usage (K,), initialised () = True
  transform.weight / bias (Linear, absent when dimension == semantic_dimension) -> semantic_head.weight / bias
Module indices are the same because our SEANet builds its layers in the official order.
"""
from __future__ import annotations

import re

import torch

from zoo.errors import CheckpointError
from zoo.hub.registry import WeightSource, register
from zoo.models.audio.dmcodec import DMCodec, DMCodecConfig
from zoo.models.audio.fusecodec import FuseCodec, FuseCodecConfig
from zoo.models.audio.rvq_codec import RVQCodecConfig
from zoo.models.audio.speechtokenizer import SpeechTokenizer, SpeechTokenizerConfig

_SEANET_KEY = re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(.+)$")
_CODEBOOK_KEY = re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.(embed|embed_avg|cluster_size|inited)$")
_CODEBOOK_NAMES = {"embed": "codebook", "embed_avg": "code_sum", "cluster_size": "code_usage"}  # official -> ours
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def seanet_key(part: str, index: str, rest: str) -> str:
    """An EnCodec SEANet key (`{part}.model.{index}.{rest}`, SConv1d's nested `conv.conv` and legacy
    weight_g / weight_v) -> ours."""
    rest = rest.replace("conv.conv.", "conv.").replace("convtr.convtr.", "conv.")
    head, _, leaf = rest.rpartition(".")
    leaf = _WEIGHT_NORM.get(leaf, leaf)
    return f"{part}.layers.{index}.{head + '.' if head else ''}{leaf}"


def convert_official_rvq_codec(state: dict[str, torch.Tensor], config: RVQCodecConfig) -> dict[str, torch.Tensor]:
    """An official SpeechTokenizer / DM-Codec state dict -> ours. Codebooks are marked
    initialised (an EnCodec-style codebook left un-initialised would run k-means on first use)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if m := _SEANET_KEY.match(key):
            out[seanet_key(*m.groups())] = value
        elif m := _CODEBOOK_KEY.match(key):
            layer, name = m.groups()
            if name != "inited":  # set below for every layer
                out[f"quantizer.layers.{layer}.{_CODEBOOK_NAMES[name]}"] = value
        elif key.startswith("transform."):
            out["semantic_head." + key.removeprefix("transform.")] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"the checkpoint has keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that are not in the official "
            "SpeechTokenizer / DM-Codec layout; is it the checkpoint of another model?")
    for layer in range(config.num_quantizers):
        out[f"quantizer.layers.{layer}.initialised"] = torch.tensor(True)
    return out


_ST_PAPER = "SpeechTokenizer: Unified Speech Tokenizer for Speech Language Models (arXiv:2308.16692)"
_DM_PAPER = "DM-Codec: Distilling Multimodal Representations for Speech Tokenization (arXiv:2410.15017)"
_FUSE_PAPER = "FuseCodec: Semantic-Contextual Fusion and Supervision for Neural Codecs (arXiv:2509.11425)"

register(
    "speechtokenizer-hubert-avg", SpeechTokenizer, SpeechTokenizerConfig(),
    description="SpeechTokenizer 16 kHz, 8 x 1024-entry RVQ at 50 Hz; first layer distilled toward the "
                "layer-averaged HuBERT-base (LibriSpeech).",
    license="Apache-2.0 (code: ZhangXInFD/SpeechTokenizer LICENSE; weights: fnlp/SpeechTokenizer model card)",
    source=WeightSource("fnlp/SpeechTokenizer", "speechtokenizer_hubert_avg/SpeechTokenizer.pt"),
    converter=convert_official_rvq_codec, paper=_ST_PAPER,
)
register(
    "speechtokenizer-snake", SpeechTokenizer, SpeechTokenizerConfig(activation="Snake"),
    description="SpeechTokenizer 16 kHz with Snake activations (LibriSpeech + Common Voice), the AnyGPT speech "
                "tokenizer; otherwise as speechtokenizer-hubert-avg.",
    license="Apache-2.0 code (ZhangXInFD/SpeechTokenizer); weights: see the fnlp/AnyGPT-speech-modules model card",
    source=WeightSource("fnlp/AnyGPT-speech-modules", "speechtokenizer/ckpt.dev"),
    converter=convert_official_rvq_codec, paper=_ST_PAPER,
)
register(
    "dmcodec-lm-sm", DMCodec, DMCodecConfig(),
    description="DM-Codec 16 kHz, combined LM (BERT) + speech-model (HuBERT) guided distillation.",
    license="Apache-2.0 (mubtasimahasan/DM-Codec LICENSE)",
    converter=convert_official_rvq_codec, paper=_DM_PAPER,
    download_page="https://drive.google.com/file/d/1pvrPcbUTUAlo2_iGLIIf7IFNJPfzmHbh",
)
register(
    "dmcodec-lm", DMCodec, DMCodecConfig(),
    description="DM-Codec 16 kHz, LM (BERT) guided distillation.",
    license="Apache-2.0 (mubtasimahasan/DM-Codec LICENSE)",
    converter=convert_official_rvq_codec, paper=_DM_PAPER,
    download_page="https://drive.google.com/file/d/14DMrDzIssP-8qzXBG8v65ctF4WPA_Uyv",
)
register(
    "fusecodec-16k", FuseCodec, FuseCodecConfig(),
    description="FuseCodec 16 kHz: SpeechTokenizer-size codec with semantic (HuBERT) + contextual (BERT) latent "
                "fusion; no official checkpoint is registered (github.com/mubtasimahasan/FuseCodec could not be "
                "read here).",
    license="unknown: the official repository's licence could not be read from this workplace",
    paper=_FUSE_PAPER,
)
