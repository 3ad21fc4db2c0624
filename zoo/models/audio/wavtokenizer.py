"""WavTokenizer (Ji et al. 2024, arXiv:2408.16532): 24 kHz audio -> one 4,096-entry codebook at 40 or 75
tokens per second -> audio.

Encoder: EnCodec's SEANet (32 filters, a 2-layer unidirectional LSTM, 512 channels), strided to 600
(40 Hz) or 320 (75 Hz) samples a frame. Quantizer: one EMA codebook, euclidean. Decoder: a Vocos
backbone (attention + ConvNeXt blocks, adaptive LayerNorm on a bandwidth id) and an inverse-STFT head
(zoo.blocks.vocos) whose hop is the encoder's stride. Codes are (B, 1, N), N = ceil(T / hop_length).

Encoding runs the convolutions before the LSTM in chunks (as the RVQ codecs do: the same codes, memory
that grows with frames, not samples); the decoder attends over all frames, so it decodes a clip whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch.nn.utils import parametrize

from zoo.blocks.seanet import PAD_MODES, SEANetEncoder
from zoo.blocks.vocos import ISTFTHead, VocosBackbone
from zoo.errors import TokenizerError
from zoo.models.audio.rvq_codec import (DEFAULT_CHUNK_SECONDS, ChunkSeconds, CodecOutput, chunk_frames_of,
                                        encode_in_blocks, seanet_latent_in_chunks)
from zoo.quantize import VectorQuantizer
from zoo.tokenizer import AudioTokenizer, TokenizerConfig, TrainingOptions
from zoo.tokens import Tokens


@dataclass
class WavTokenizerConfig(TokenizerConfig):
    """Defaults: the released 75-token-per-second small model (WavTokenizer_small_320_24k_4096)."""

    sample_rate: int = 24000
    # SEANet encoder (EnCodec's names); strides in decoder order, their product is the hop
    n_filters: int = 32
    strides: tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 512
    lstm_layers: int = 2
    activation: str = "ELU"
    pad_mode: str = "reflect"
    # the single codebook
    codebook_size: int = 4096
    # Vocos backbone and iSTFT head
    backbone_dim: int = 768
    backbone_intermediate_dim: int = 2304
    backbone_layers: int = 12
    bandwidth_conditions: int = 4  # rows of the adaptive LayerNorm tables; the released models use id 0
    bandwidth_id: int = 0
    n_fft: int = 1280

    def __post_init__(self):
        super().__post_init__()
        if self.pad_mode not in PAD_MODES:
            raise TokenizerError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}.")
        if not 0 <= self.bandwidth_id < self.bandwidth_conditions:
            raise TokenizerError(f"bandwidth_id must lie in [0, {self.bandwidth_conditions}), got {self.bandwidth_id}.")
        if self.backbone_dim % 32 or self.backbone_dim < 64:  # a group of one channel has no variance on one frame
            raise TokenizerError(f"backbone_dim must be a multiple of 32 and at least 64 (GroupNorm's 32 groups need two "
                                 f"channels each), got {self.backbone_dim}.")
        hop = math.prod(self.strides)
        if self.n_fft < hop or (self.n_fft - hop) % 2:
            raise TokenizerError(f"n_fft must be at least the hop ({hop}) and differ from it by an even number, "
                                 f"got {self.n_fft}.")


@dataclass(frozen=True)
class WavTokenizerTrainingOptions(TrainingOptions):
    """How WavTokenizer trains (defaults: the official recipe's EnCodec codebook)."""

    codebook_decay: float = 0.99        # EMA decay of the codebook statistics
    kmeans_init: bool = False           # from scratch only: the codebook set by k-means of the first batch
    kmeans_iters: int = 200             # the official recipe's k-means iterations
    threshold_ema_dead_code: float = 2  # codes used less than this (EMA, per batch) restart from the batch
    commitment_weight: float = 1.0

    def __post_init__(self):
        if not 0 <= self.codebook_decay <= 1 or self.kmeans_iters < 1 or self.threshold_ema_dead_code < 0 \
                or self.commitment_weight < 0:
            raise TokenizerError("codebook_decay must lie in [0, 1], kmeans_iters be >= 1 and threshold_ema_dead_code, "
                                 f"commitment_weight >= 0, got {self.codebook_decay}, {self.kmeans_iters}, "
                                 f"{self.threshold_ema_dead_code}, {self.commitment_weight}.")


class WavTokenizer(AudioTokenizer):
    """SEANet encoder -> one codebook -> Vocos backbone + iSTFT head (see the module docstring)."""

    streams_from_disk = True  # _encode slices its input chunk by chunk (an AudioFileSource works)

    architecture = "wavtokenizer"
    config_class = WavTokenizerConfig
    training_options_class = WavTokenizerTrainingOptions

    def __init__(self, config: WavTokenizerConfig):
        super().__init__(config)
        c, t = config, self.training_options
        self.encoder = SEANetEncoder(
            channels=1, dimension=c.dimension, n_filters=c.n_filters, ratios=c.strides, n_residual_layers=1,
            activation=c.activation, kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_base=2,
            causal=False, pad_mode=c.pad_mode, true_skip=False, compress=2, lstm_layers=c.lstm_layers,
            bidirectional=False)
        self.quantizer = VectorQuantizer(c.dimension, c.codebook_size, decay=t.codebook_decay,
                                         commitment_weight=t.commitment_weight, kmeans_init=t.kmeans_init,
                                         kmeans_iters=t.kmeans_iters, threshold_ema_dead_code=t.threshold_ema_dead_code)
        self.backbone = VocosBackbone(c.dimension, c.backbone_dim, c.backbone_intermediate_dim, c.backbone_layers,
                                      c.bandwidth_conditions)
        self.head = ISTFTHead(c.backbone_dim, c.n_fft, self.encoder.hop_length)

    def _apply_training_options(self, options: WavTokenizerTrainingOptions, changed: set[str]) -> None:
        self.quantizer.configure_training(
            decay=options.codebook_decay, commitment_weight=options.commitment_weight,
            kmeans_iters=options.kmeans_iters, threshold_ema_dead_code=options.threshold_ema_dead_code,
            kmeans_init=options.kmeans_init if "kmeans_init" in changed else None)

    # ---- metadata -----------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(codebook_size,): one codebook."""
        return self.quantizer.codebook_sizes

    @property
    def hop_length(self) -> int:
        """Samples per code frame (the product of the strides)."""
        return self.encoder.hop_length

    @property
    def latent_dimension(self) -> int:
        """Channels of the latent the codebook quantizes."""
        return self.config.dimension

    @property
    def semantic_dimension(self) -> int:
        """WavTokenizer distils nothing: a speech term would read the quantized latent itself."""
        return self.config.dimension

    # ---- the training pass --------------------------------------------------------------
    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> the latent to quantize, (B, N, D)."""
        return rearrange(self.encoder(wav), "b d n -> b n d")

    def decode_latent(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantized latent (B, N, D) -> audio (B, 1, N * hop_length)."""
        condition = torch.full((quantized.shape[0],), self.config.bandwidth_id, dtype=torch.long,
                               device=quantized.device)
        hidden = self.backbone(rearrange(quantized, "b n d -> b d n"), condition)
        return self.head(hidden)[:, None]

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """The training pass over (B, 1, T) (the codec training regime's protocol)."""
        latent = self.encode_latent(wav)
        quantized, codes, aux_loss = self.quantizer(latent)  # codes (B, N)
        reconstruction = self.decode_latent(quantized)[..., :wav.shape[-1]]
        layer_quantized = quantized[:, None]  # (B, 1, N, D), gradient straight through to the latent
        return CodecOutput(reconstruction, codes[:, None], aux_loss, latent, quantized, layer_quantized, quantized)

    # ---- inference ----------------------------------------------------------------------
    def _encode(self, wav: torch.Tensor, *, chunk_seconds: ChunkSeconds = DEFAULT_CHUNK_SECONDS) -> Tokens:
        chunk_frames = chunk_frames_of(chunk_seconds, self.sample_rate, self.hop_length)
        with parametrize.cached():  # weight-norm weights computed once per encode, not once per chunk
            codes = encode_in_blocks(self.quantizer.encode, seanet_latent_in_chunks(self.encoder, wav, chunk_frames))
        return Tokens(codes[:, None], meta={"num_samples": wav.shape[-1]})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        wav = self.decode_latent(self.quantizer.codes_to_latents(tokens.codes[:, 0]))
        num_samples = tokens.meta.get("num_samples")  # Tokens.meta is optional metadata, not config
        return wav if num_samples is None else wav[..., :num_samples]
