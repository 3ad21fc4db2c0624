"""Named WavTokenizer models, their official sources and the converter from the official checkpoint.

The official `.ckpt` files are Lightning 1.x checkpoints (read with weights_only=True; the weights are
under 'state_dict'):
  feature_extractor.encodec.encoder.model.{i}.*        -> encoder.layers.{i}.* (EnCodec's SEANet, as in audio_rvq)
  feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed / embed_avg / cluster_size
                                                       -> quantizer.codebook / code_sum / code_usage
  backbone.*, head.out.*, head.istft.window            -> the same names (zoo.blocks.vocos keeps them)
and training-only parts that are dropped: the SEANet decoder the Vocos decoder replaced
(feature_extractor.encodec.decoder.*), the discriminators (multiperioddisc, multiresddisc, dac,
dacdiscriminator) and the mel loss's filter bank (melspec_loss).

Every release has the small model's architecture (the official configs are only the small ones, and
the larger checkpoints are loaded with them); none of the files has a published sha256.
"""
from __future__ import annotations

import re

import torch

from zoo.errors import CheckpointError
from zoo.hub.audio_rvq import seanet_key
from zoo.hub.registry import WeightSource, register
from zoo.models.audio.wavtokenizer import WavTokenizer, WavTokenizerConfig

_ENCODER = "feature_extractor.encodec.encoder.model."
_CODEBOOK = re.compile(r"^feature_extractor\.encodec\.quantizer\.vq\.layers\.0\._codebook\.(embed|embed_avg|cluster_size|inited)$")
_CODEBOOK_NAMES = {"embed": "codebook", "embed_avg": "code_sum", "cluster_size": "code_usage"}
_TRAINING_ONLY = ("feature_extractor.encodec.decoder.", "multiperioddisc.", "multiresddisc.", "dac.",
                  "dacdiscriminator.", "melspec_loss.")


def convert_official_wavtokenizer(state: dict[str, torch.Tensor], config: WavTokenizerConfig) -> dict[str, torch.Tensor]:
    """An official WavTokenizer state dict -> ours (the codebook marked initialised)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(_TRAINING_ONLY):
            continue
        if key.startswith(_ENCODER):
            index, _, rest = key.removeprefix(_ENCODER).partition(".")
            out[seanet_key("encoder", index, rest)] = value
        elif m := _CODEBOOK.match(key):
            if m.group(1) != "inited":
                out[f"quantizer.{_CODEBOOK_NAMES[m.group(1)]}"] = value
        elif key.startswith(("backbone.", "head.")):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"the checkpoint has keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that are not "
                              "in the official WavTokenizer layout; is it the checkpoint of another model?")
    out["quantizer.initialised"] = torch.tensor(True)
    return out


_PAPER = "WavTokenizer: an Efficient Acoustic Discrete Codec Tokenizer for Audio Language Modeling (arXiv:2408.16532)"
_LICENSE = "MIT (code: jishengpeng/WavTokenizer LICENSE; the weights: see each repo's model card)"
AT_40_HZ = WavTokenizerConfig(strides=(6, 5, 5, 4), n_fft=2400)  # hop 600
AT_75_HZ = WavTokenizerConfig()                                  # hop 320

for name, config, repo, filename, what in (
    ("wavtokenizer-small-40-24k", AT_40_HZ, "novateur/WavTokenizer", "WavTokenizer_small_600_24k_4096.ckpt",
     "40 tokens per second, trained on LibriTTS speech"),
    ("wavtokenizer-small-75-24k", AT_75_HZ, "novateur/WavTokenizer", "WavTokenizer_small_320_24k_4096.ckpt",
     "75 tokens per second, trained on LibriTTS speech"),
    ("wavtokenizer-medium-75-24k", AT_75_HZ, "novateur/WavTokenizer-medium-speech-75token",
     "wavtokenizer_medium_speech_320_24k.ckpt", "75 tokens per second, speech (about 10,000 hours)"),
    ("wavtokenizer-medium-music-audio-75-24k", AT_75_HZ, "novateur/WavTokenizer-medium-music-audio-75token",
     "wavtokenizer_medium_music_audio_320_24k.ckpt", "75 tokens per second, music and general audio"),
    ("wavtokenizer-large-40-24k", AT_40_HZ, "novateur/WavTokenizer-large-unify-40token",
     "wavtokenizer_large_unify_600_24k.ckpt", "40 tokens per second, unified speech, music and audio (about 80,000 hours)"),
    ("wavtokenizer-large-75-24k", AT_75_HZ, "novateur/WavTokenizer-large-speech-75token",
     "wavtokenizer_large_speech_320_v2.ckpt", "75 tokens per second, speech, music and audio (about 80,000 hours; v2)"),
):
    register(name, WavTokenizer, config,
             description=f"WavTokenizer 24 kHz, one 4,096-entry codebook at {what}; Vocos decoder with attention.",
             license=_LICENSE, source=WeightSource(repo, filename), converter=convert_official_wavtokenizer,
             paper=_PAPER)
