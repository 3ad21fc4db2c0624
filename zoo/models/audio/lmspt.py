"""LM-SPT (kakao/lmspt): 24 kHz speech -> one semantic codebook plus residual acoustic codebooks at a low
frame rate (12.5 Hz released; 25 and 6.25 Hz in the paper) -> speech.

Two DAC encoders read the same audio: the semantic one feeds the first codebook (16,384 codes), the
acoustic one the 7 residual codebooks (4,096 each) after the semantic code's latent is subtracted from
its output ("semantic subtraction"). Every codebook is factorized and l2-normalized
(zoo.quantize.FactorizedVectorQuantizer). The main DAC decoder rebuilds 24 kHz audio from the summed
latents; an auxiliary decoder rebuilds 16 kHz speech from the semantic latent alone: in training its
output is what the frozen ASR encoder compares with the input (semantics distilled through
resynthesis), and decoding semantic tokens alone goes through it.

Codes are (B, n_q, N) with N = ceil(T / hop_length) (the clip is zero-padded to whole frames): layer 0
is the semantic token, layers 1.. the acoustic residual.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.nn.utils import parametrize

from zoo.blocks.dac import DACDecoder, DACEncoder
from zoo.errors import TokenizerError
from zoo.quantize import ResidualFactorizedQuantizer
from zoo.tokenizer import AudioTokenizer, TokenizerConfig
from zoo.tokens import Tokens

NumQuantizers = Annotated[int | None, "leading codebooks to encode, 1 to num_quantizers (1: the semantic token "
                                      "only; default: all)"]
SemanticOnly = Annotated[bool, "encode the semantic token alone (the same as n_q=1); such tokens decode "
                               "through the auxiliary semantic decoder"]


@dataclass
class LMSPTConfig(TokenizerConfig):
    """Defaults: the released 12.5 Hz model (lmspt_12d5hz_16384_4096)."""

    sample_rate: int = 24000
    encoder_channels: int = 32
    encoder_strides: tuple[int, ...] = (4, 5, 6, 8, 2)   # 1,920 samples a frame: 12.5 Hz
    latent_dim: int = 1024
    decoder_channels: int = 1536
    decoder_rates: tuple[int, ...] = (2, 8, 6, 5, 4)
    semantic_codebook_size: int = 16384
    acoustic_codebook_size: int = 4096
    acoustic_quantizers: int = 7
    codebook_dim: int = 8
    semantic_subtraction: bool = True
    # the auxiliary decoder: the semantic latent alone -> speech at aux_sample_rate
    aux_sample_rate: int = 16000
    aux_decoder_channels: int = 128
    aux_decoder_rates: tuple[int, ...] = (8, 8, 5, 4)

    def __post_init__(self):
        super().__post_init__()
        hop = math.prod(self.encoder_strides)
        if math.prod(self.decoder_rates) != hop:
            raise TokenizerError(f"decoder_rates must multiply to the encoder's hop ({hop}), got "
                                 f"{math.prod(self.decoder_rates)}.")
        if math.prod(self.aux_decoder_rates) * self.sample_rate != hop * self.aux_sample_rate:
            raise TokenizerError(f"aux_decoder_rates must give one frame per {hop / self.sample_rate * 1000:g} ms at "
                                 f"{self.aux_sample_rate} Hz, got a hop of {math.prod(self.aux_decoder_rates)}.")


class LMSPTOutput(NamedTuple):
    """The training pass (the codec training regime's protocol plus the semantic resynthesis)."""

    reconstruction: torch.Tensor           # (B, 1, T) from all codebooks, cut to the input length
    codes: torch.Tensor                    # (B, n_q, N)
    aux_loss: torch.Tensor                 # scalar: commitment + codebook losses of every codebook
    latent: torch.Tensor                   # (B, N, D) the acoustic encoder's output, quantized by layers 1..
    quantized: torch.Tensor                # (B, N, D) the decoder's input
    layer_quantized: torch.Tensor          # (B, n_q, N, D) each codebook's latent, gradient straight through
    semantic_features: torch.Tensor        # (B, N, D) the semantic codebook's latent
    semantic_reconstruction: torch.Tensor  # (B, 1, T_aux) the auxiliary decoder's speech at aux_sample_rate


class LMSPT(AudioTokenizer):
    """Semantic and acoustic DAC encoders -> factorized codebooks -> DAC decoder (+ auxiliary decoder)."""

    architecture = "lmspt"
    config_class = LMSPTConfig

    def __init__(self, config: LMSPTConfig):
        super().__init__(config)
        c = config
        self.semantic_encoder = DACEncoder(c.encoder_channels, c.encoder_strides, c.latent_dim)
        self.acoustic_encoder = DACEncoder(c.encoder_channels, c.encoder_strides, c.latent_dim)
        self.semantic_quantizer = ResidualFactorizedQuantizer(c.latent_dim, 1, c.semantic_codebook_size, c.codebook_dim)
        self.acoustic_quantizer = ResidualFactorizedQuantizer(c.latent_dim, c.acoustic_quantizers,
                                                              c.acoustic_codebook_size, c.codebook_dim,
                                                              quantizer_dropout=0.5)
        self.decoder = DACDecoder(c.latent_dim, c.decoder_channels, c.decoder_rates)
        self.aux_decoder = DACDecoder(c.latent_dim, c.aux_decoder_channels, c.aux_decoder_rates)

    # ---- metadata -----------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """The semantic codebook, then the acoustic ones."""
        return self.semantic_quantizer.codebook_sizes + self.acoustic_quantizer.codebook_sizes

    @property
    def hop_length(self) -> int:
        """Samples per code frame (the product of the encoder strides)."""
        return self.semantic_encoder.hop_length

    @property
    def latent_dimension(self) -> int:
        """Channels of the latents the codebooks quantize."""
        return self.config.latent_dim

    @property
    def semantic_dimension(self) -> int:
        """Channels of `semantic_features` (the semantic codebook's latent)."""
        return self.config.latent_dim

    # ---- the passes ---------------------------------------------------------------------
    def _padded(self, wav: torch.Tensor) -> torch.Tensor:
        return F.pad(wav, (0, -wav.shape[-1] % self.hop_length))

    def _latents(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, T) -> semantic and acoustic latents, each (B, N, D)."""
        wav = self._padded(wav)
        return (rearrange(self.semantic_encoder(wav), "b d n -> b n d"),
                rearrange(self.acoustic_encoder(wav), "b d n -> b n d"))

    def _decode_latent(self, decoder, latent: torch.Tensor, length: int) -> torch.Tensor:
        return _to_length(decoder(rearrange(latent, "b n d -> b d n")), length)

    def forward(self, wav: torch.Tensor) -> LMSPTOutput:
        """The training pass over (B, 1, T)."""
        semantic_latent, acoustic_latent = self._latents(wav)
        semantic = self.semantic_quantizer(semantic_latent)
        if self.config.semantic_subtraction:
            acoustic_latent = acoustic_latent - semantic.quantized
        acoustic = self.acoustic_quantizer(acoustic_latent)
        quantized = semantic.quantized + acoustic.quantized
        layers = torch.cat([semantic.quantized[:, None], self.acoustic_quantizer.layer_outputs(acoustic_latent,
                                                                                                acoustic.codes)], 1)
        aux_length = round(wav.shape[-1] * self.config.aux_sample_rate / self.sample_rate)
        aux_loss = semantic.commitment_loss + semantic.codebook_loss + acoustic.commitment_loss + acoustic.codebook_loss
        return LMSPTOutput(self._decode_latent(self.decoder, quantized, wav.shape[-1]),
                           rearrange(torch.cat([semantic.codes, acoustic.codes], -1), "b n q -> b q n"), aux_loss,
                           acoustic_latent, quantized, layers, semantic.quantized,
                           self._decode_latent(self.aux_decoder, semantic.quantized, aux_length))

    def _encode(self, wav: torch.Tensor, *, n_q: NumQuantizers = None, semantic_only: SemanticOnly = False) -> Tokens:
        layers = len(self.codebook_sizes)
        n_q = 1 if semantic_only else (layers if n_q is None else n_q)
        if not 1 <= n_q <= layers:
            raise TokenizerError(f"n_q must be between 1 and {layers}, got {n_q}.")
        with parametrize.cached():
            semantic_latent, acoustic_latent = self._latents(wav)
            semantic_codes = self.semantic_quantizer.encode(semantic_latent)  # (B, N, 1)
            codes = [semantic_codes]
            if n_q > 1:
                if self.config.semantic_subtraction:
                    acoustic_latent = acoustic_latent - self.semantic_quantizer.codes_to_latents(semantic_codes)
                codes.append(self.acoustic_quantizer.encode(acoustic_latent, n_q - 1))
        return Tokens(rearrange(torch.cat(codes, -1), "b n q -> b q n"), meta={"num_samples": wav.shape[-1]})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        codes = rearrange(tokens.codes, "b q n -> b n q")
        num_samples = tokens.meta.get("num_samples") or codes.shape[1] * self.hop_length
        with parametrize.cached():
            semantic = self.semantic_quantizer.codes_to_latents(codes[..., :1])
            if codes.shape[-1] == 1:  # the semantic token alone: the auxiliary decoder, resampled to the model's rate
                import torchaudio.functional as AF

                aux_length = math.ceil(num_samples * self.config.aux_sample_rate / self.sample_rate)
                speech = self._decode_latent(self.aux_decoder, semantic, aux_length)
                return _to_length(AF.resample(speech, self.config.aux_sample_rate, self.sample_rate), num_samples)
            latent = semantic + self.acoustic_quantizer.codes_to_latents(codes[..., 1:])
            return self._decode_latent(self.decoder, latent, num_samples)


def _to_length(audio: torch.Tensor, length: int) -> torch.Tensor:
    """(..., T) cut or zero-padded on the right to `length` (a decoder's transposed convs with odd strides
    give a few samples fewer than frames x hop)."""
    return F.pad(audio, (0, max(0, length - audio.shape[-1])))[..., :length]
