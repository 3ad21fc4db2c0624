"""The shared RVQ speech codec: SEANet encoder -> residual vector quantizer -> SEANet decoder,
plus the linear semantic head through which the first RVQ layer is distilled toward a teacher.

SpeechTokenizer, DM-Codec and FuseCodec are this network; they differ in what the training
pass distils into the quantized latents (HuBERT; a text LM; both, fused into the latent) and
in their released weights. Codes are (B, n_q, N) with N = ceil(T / hop_length) frames; the
first layer's codes are the "semantic tokens", the later ones the acoustic residual.

Long audio is encoded (and decoded) with the sample-rate convolutions run in chunks with
overlapping context (a chunk's outer frames are dropped) and the LSTM over the whole frame
sequence, so memory grows with the number of frames only (320x less than with samples) and
the codes equal the whole-clip pass, with or without an LSTM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Iterator, NamedTuple

import torch
from einops import rearrange
from torch import nn
from torch.nn.utils import parametrize

from zoo.blocks.seanet import PAD_MODES, SEANetDecoder, SEANetEncoder, SkipLSTM, lecun_init_, receptive_field_of
from zoo.errors import TokenizerError
from zoo.quantize import ResidualVectorQuantizer
from zoo.tokenizer import AudioTokenizer, TokenizerConfig, TrainingOptions
from zoo.tokens import Tokens

# encode / decode options (FuseCodec declares the same ones)
DEFAULT_CHUNK_SECONDS = 5.0  # 10 min of SpeechTokenizer: 5 s chunks are faster than one pass (zoo.eval.long_audio)
QUANTIZE_BLOCK_FRAMES = 512  # frames per nearest-code search on long audio (see encode_in_blocks)
NumQuantizers = Annotated[int | None, "leading RVQ layers to encode, 1 to num_quantizers (1: the semantic "
                                      "tokens only; default: all)"]
ChunkSeconds = Annotated[float, "clips longer than this many seconds run through the network in chunks "
                                "of this length (the same result, less memory)"]


@dataclass
class RVQCodecConfig(TokenizerConfig):
    """The codec's architecture: SEANet backbone, residual quantizer, distillation head."""

    sample_rate: int = 16000
    # SEANet backbone (EnCodec's names); strides are given in decoder order
    n_filters: int = 64
    strides: tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 1024
    n_residual_layers: int = 1
    residual_kernel_size: int = 3
    dilation_base: int = 2
    kernel_size: int = 7
    last_kernel_size: int = 7
    compress: int = 2
    true_skip: bool = False          # False: the residual skip is a 1x1 conv (as released)
    activation: str = "ELU"          # "ELU" or "Snake"
    lstm_layers: int = 2             # 0: no LSTM (finite receptive field, exact chunking)
    bidirectional_encoder_lstm: bool = True  # the decoder's LSTM is always unidirectional
    causal: bool = False
    pad_mode: str = "reflect"
    # residual vector quantizer (EnCodec-style EMA codebooks)
    num_quantizers: int = 8
    codebook_size: int = 1024
    # distillation head: first-layer quantized latent -> teacher feature size
    semantic_dimension: int = 768

    # what older config.json files hold that is no longer architecture
    moved_keys = {"chunk_seconds": "an encode / decode option",
                  **dict.fromkeys(("codebook_decay", "kmeans_init", "kmeans_iters", "threshold_ema_dead_code",
                                   "commitment_weight", "conv_init"), "a training option")}

    def __post_init__(self):
        super().__post_init__()
        if self.activation not in ("ELU", "Snake"):
            raise TokenizerError(f"activation must be 'ELU' or 'Snake', got {self.activation!r}.")
        if self.pad_mode not in PAD_MODES:
            raise TokenizerError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}.")


@dataclass(frozen=True)
class RVQCodecTrainingOptions(TrainingOptions):
    """How the SEANet + RVQ codecs train (defaults: as the released SpeechTokenizer was trained)."""

    codebook_decay: float = 0.99        # EMA decay of the codebook statistics
    kmeans_init: bool = False           # from scratch only: codebooks set by k-means of the first training batch
    kmeans_iters: int = 50              # k-means iterations of that init
    threshold_ema_dead_code: float = 2  # codes whose EMA usage per batch falls below this restart from the batch
    commitment_weight: float = 1.0      # weight of the commitment loss of each RVQ layer in aux_loss
    # Initialisation of the SEANet convs, applied when set (from scratch only: it replaces their weights).
    # "torch": PyTorch's default conv init (what the released models were trained from). "lecun":
    # normal(0, 1/fan_in) weights and zero biases; with the default init the signal shrinks ~0.6x per
    # layer while the biases add up, so a fresh encoder's latent is almost constant over time and
    # training from scratch stalls before it starts.
    conv_init: str = "torch"

    def __post_init__(self):
        if self.conv_init not in ("torch", "lecun"):
            raise TokenizerError(f"conv_init must be 'torch' or 'lecun', got {self.conv_init!r}.")
        if not 0 <= self.codebook_decay <= 1:
            raise TokenizerError(f"codebook_decay must lie in [0, 1], got {self.codebook_decay}.")
        if self.kmeans_iters < 1 or self.threshold_ema_dead_code < 0 or self.commitment_weight < 0:
            raise TokenizerError("kmeans_iters must be >= 1 and threshold_ema_dead_code, commitment_weight >= 0, got "
                                 f"{self.kmeans_iters}, {self.threshold_ema_dead_code}, {self.commitment_weight}.")


class CodecOutput(NamedTuple):
    """The training pass. N = ceil(T / hop_length) frames, D = `dimension`, n_q layers used.

    The first three fields are those of every tokenizer's TokenizerOutput."""

    reconstruction: torch.Tensor     # (B, 1, T) decoded audio, cut to the input length
    codes: torch.Tensor              # (B, n_q, N) long
    aux_loss: torch.Tensor           # scalar: quantizer commitment losses summed over layers, weighted
    latent: torch.Tensor             # (B, N, D) encoder output that is quantized (after fusion, for FuseCodec)
    quantized: torch.Tensor          # (B, N, D) sum of the n_q layer outputs: the decoder's input
    layer_quantized: torch.Tensor    # (B, n_q, N, D) each layer's codebook rows; gradient straight through to `latent`
    semantic_features: torch.Tensor  # (B, N, semantic_dimension) semantic_head(layer_quantized[:, 0]), the distilled feature


class ChunkSpan(NamedTuple):
    """Which frames one chunk of a chunked pass reads, and which of its output frames are kept."""

    keep_start: int   # frames [keep_start, keep_end) of the whole clip come from this chunk
    keep_end: int
    read_start: int   # frames [read_start, read_end) are fed to the network (keep +- context)
    read_end: int


def chunk_spans(num_frames: int, chunk_frames: int, context_frames: int) -> Iterator[ChunkSpan]:
    """Cover `num_frames` with chunks of `chunk_frames`, each read with `context_frames` more on each side."""
    for start in range(0, num_frames, chunk_frames):
        end = min(num_frames, start + chunk_frames)
        yield ChunkSpan(start, end, max(0, start - context_frames), min(num_frames, end + context_frames))


class RVQCodec(AudioTokenizer):
    """Base of the SEANet + RVQ codecs; families subclass it with their architecture name."""

    config_class = RVQCodecConfig
    training_options_class = RVQCodecTrainingOptions
    streams_from_disk = True  # _encode slices its input chunk by chunk (an AudioFileSource works)

    def __init__(self, config: RVQCodecConfig):
        super().__init__(config)
        c = config
        backbone = dict(channels=1, dimension=c.dimension, n_filters=c.n_filters, ratios=c.strides,
                        n_residual_layers=c.n_residual_layers, activation=c.activation,
                        kernel_size=c.kernel_size, last_kernel_size=c.last_kernel_size,
                        residual_kernel_size=c.residual_kernel_size, dilation_base=c.dilation_base,
                        causal=c.causal, pad_mode=c.pad_mode, true_skip=c.true_skip,
                        compress=c.compress, lstm_layers=c.lstm_layers)
        self.encoder = SEANetEncoder(**backbone, bidirectional=c.bidirectional_encoder_lstm)
        t = self.training_options
        self.quantizer = ResidualVectorQuantizer(
            c.dimension, c.num_quantizers, c.codebook_size, decay=t.codebook_decay,
            commitment_weight=t.commitment_weight, kmeans_init=t.kmeans_init, kmeans_iters=t.kmeans_iters,
            threshold_ema_dead_code=t.threshold_ema_dead_code)
        self.semantic_head = (nn.Linear(c.dimension, c.semantic_dimension)
                              if c.dimension != c.semantic_dimension else nn.Identity())
        self.decoder = SEANetDecoder(**backbone)

    def _apply_training_options(self, options: RVQCodecTrainingOptions, changed: set[str]) -> None:
        self.quantizer.configure_training(
            decay=options.codebook_decay, commitment_weight=options.commitment_weight,
            kmeans_iters=options.kmeans_iters, threshold_ema_dead_code=options.threshold_ema_dead_code,
            kmeans_init=options.kmeans_init if "kmeans_init" in changed else None)
        if "conv_init" in changed and options.conv_init == "lecun":  # "torch": the convs were built that way
            lecun_init_(self.encoder)
            lecun_init_(self.decoder)

    # ---- metadata -----------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """One codebook size per RVQ layer."""
        return self.quantizer.codebook_sizes

    @property
    def hop_length(self) -> int:
        """Samples per code frame (the product of the strides)."""
        return self.encoder.hop_length

    @property
    def latent_dimension(self) -> int:
        """Channels of the latent each quantizer layer quantizes."""
        return self.config.dimension

    @property
    def semantic_dimension(self) -> int:
        """Channels of `semantic_features`, the projection of the first layer that is distilled."""
        return self.config.semantic_dimension

    def num_frames(self, num_samples: int) -> int:
        """Code frames of a clip of `num_samples` samples."""
        return math.ceil(num_samples / self.hop_length)

    # ---- the training pass --------------------------------------------------------------
    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> the latent to quantize, (B, N, D)."""
        return rearrange(self.encoder(wav), "b d n -> b n d")

    def forward(self, wav: torch.Tensor, n_q: int | None = None) -> CodecOutput:
        """The training pass over (B, 1, T) with the first `n_q` layers (default all)."""
        return self.forward_latent(wav, self.encode_latent(wav), n_q)

    def forward_latent(self, wav: torch.Tensor, latent: torch.Tensor, n_q: int | None = None) -> CodecOutput:
        """Quantize and decode `latent` (B, N, D) computed from `wav` (B, 1, T)."""
        quantized, codes, aux_loss = self.quantizer(latent, n_q)  # codes (B, N, n_q)
        layer_quantized = self.layer_outputs(latent, codes)
        reconstruction = self.decoder(rearrange(quantized, "b n d -> b d n"))[..., :wav.shape[-1]]
        return CodecOutput(reconstruction, rearrange(codes, "b n q -> b q n"), aux_loss, latent, quantized,
                           layer_quantized, self.semantic_head(layer_quantized[:, 0]))

    def layer_outputs(self, latent: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Each layer's codebook rows for `codes` (B, N, n_q), as (B, n_q, N, D), passing the
        gradient straight through to the residual that layer quantized."""
        return self.quantizer.layer_outputs(latent, codes)

    def project_semantic(self, layer_output: torch.Tensor) -> torch.Tensor:
        """(B, N, D) quantized latent of any layer -> (B, N, semantic_dimension)."""
        return self.semantic_head(layer_output)

    # ---- inference ----------------------------------------------------------------------
    # Long audio: the sample-rate convolutions run chunk by chunk, each chunk read with context
    # equal to their (finite) receptive field, so the stitched result equals the whole-clip
    # pass; an LSTM runs chunk by chunk too, its state carried from each chunk to the next (the
    # reverse direction's from the end), so the result stays exact with a BiLSTM as well.

    def _encode(self, wav: torch.Tensor, *, n_q: NumQuantizers = None,
                chunk_seconds: ChunkSeconds = DEFAULT_CHUNK_SECONDS) -> Tokens:
        n_q = self.quantizer.check_n_q(n_q)
        with parametrize.cached():  # weight-norm weights computed once per encode, not once per chunk
            latent = self._encode_latent_chunked(wav, self._chunk_frames(chunk_seconds))
            codes = encode_in_blocks(lambda block: self.quantizer.encode(block, n_q), latent)
        return Tokens(rearrange(codes, "b n q -> b q n"), meta={"num_samples": wav.shape[-1]})

    def _encode_latent_chunked(self, wav: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """encode_latent(wav) with the convolutions before the LSTM run chunk by chunk: (B, N, D)."""
        return seanet_latent_in_chunks(self.encoder, wav, chunk_frames)

    def semantic_tokens(self, wav: torch.Tensor, **opts) -> torch.Tensor:
        """The first RVQ layer's codes alone (content), (B, N)."""
        return self.encode(wav, n_q=1, **opts).codes[:, 0]

    def _decode(self, tokens: Tokens, *, chunk_seconds: ChunkSeconds = DEFAULT_CHUNK_SECONDS) -> torch.Tensor:
        codes = tokens.codes  # (B, n_q, N): any number of leading layers
        recurrent, convolutions = self.decoder.split_at_lstm()
        with parametrize.cached():
            latent = self.quantizer.codes_to_latents(rearrange(codes, "b q n -> b n q"))
            hidden = frame_rate_layers_in_chunks(recurrent, rearrange(latent, "b n d -> b d n"),
                                                 self._chunk_frames(chunk_seconds))
            context = math.ceil(receptive_field_of(convolutions)) + 1
            wav = _run_in_chunks(convolutions, hidden, codes.shape[-1], self._chunk_frames(chunk_seconds), context,
                                 in_per_frame=1, out_per_frame=self.hop_length)
        num_samples = tokens.meta.get("num_samples")  # Tokens.meta is optional metadata, not config
        return wav if num_samples is None else wav[..., :num_samples]

    def _chunk_frames(self, chunk_seconds: float) -> int:
        return chunk_frames_of(chunk_seconds, self.sample_rate, self.hop_length)


def encode_in_blocks(encode, latent: torch.Tensor, block_frames: int = QUANTIZE_BLOCK_FRAMES) -> torch.Tensor:
    """encode(latent) for a frame-wise nearest-code search, latent (B, N, D) -> codes (B, N, ...), run on
    blocks of `block_frames` frames: the distance tables stay a block's size on long audio. The blocks do
    not depend on chunk_seconds, so every chunking gives the same matrix products and the same codes (a
    search over 30,000 frames at once and one over 250 can round a near tie differently)."""
    return torch.cat([encode(latent[:, s: s + block_frames]) for s in range(0, latent.shape[1], block_frames)], dim=1)


def chunk_frames_of(chunk_seconds: float, sample_rate: int, hop_length: int) -> int:
    """The chunk_seconds option as a whole number of frames (at least one); > 0 checked."""
    if not chunk_seconds > 0:
        raise TokenizerError(f"chunk_seconds must be > 0, got {chunk_seconds}.")
    return max(1, round(chunk_seconds * sample_rate / hop_length))


def seanet_latent_in_chunks(encoder: SEANetEncoder, wav: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """encoder(wav) as (B, N, D), with the convolutions before the LSTM run `chunk_frames` frames at a
    time (with their receptive field as context) and the LSTM over the whole frame sequence."""
    convolutions, recurrent = encoder.split_at_lstm()
    context = math.ceil(receptive_field_of(convolutions) / encoder.hop_length) + 1
    # no name holds the convolutions' output: the LSTM pass frees it once it is done with it
    return rearrange(frame_rate_layers_in_chunks(recurrent, _run_in_chunks(
        convolutions, wav, math.ceil(wav.shape[-1] / encoder.hop_length), chunk_frames, context,
        in_per_frame=encoder.hop_length, out_per_frame=1), chunk_frames), "b d n -> b n d")


def frame_rate_layers_in_chunks(layers: nn.Sequential, x: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """layers(x) for frame-rate layers, x (B, C, N), in memory bounded by `chunk_frames` beside the
    frame-rate activations themselves: an LSTM runs in chunks with its state carried
    (SkipLSTM.forward_in_chunks), the convolutions around it in chunks with their receptive field as
    context. The same numbers as the whole pass: the recurrence and every conv see the same inputs."""
    if x.shape[-1] <= chunk_frames or len(layers) == 0:
        return layers(x)
    frames = x.shape[-1]
    for part in _split_around_lstm(layers):
        if isinstance(part, SkipLSTM):
            x = part.forward_in_chunks(x, chunk_frames)
        else:
            x = _run_in_chunks(part, x, frames, chunk_frames, math.ceil(receptive_field_of(part)) + 1, 1, 1)
    return x


def _split_around_lstm(layers: nn.Sequential) -> list[nn.Module]:
    """The layers as [convolutions before, SkipLSTM, convolutions after], leaving out empty parts."""
    index = next((i for i, layer in enumerate(layers) if isinstance(layer, SkipLSTM)), None)
    if index is None:
        return [layers]
    return [part for part in (layers[:index], layers[index], layers[index + 1:])
            if isinstance(part, SkipLSTM) or len(part)]


def _run_in_chunks(layers: nn.Module, x: torch.Tensor, num_frames: int, chunk_frames: int, context_frames: int,
                   in_per_frame: int, out_per_frame: int) -> torch.Tensor:
    """layers(x) for x (B, C, L) with L ~ num_frames * in_per_frame, computed on chunks of
    `chunk_frames` frames read with `context_frames` more on each side, whose outer frames are
    dropped. Exact when context_frames covers the layers' receptive field: chunks start on
    frame boundaries, so every strided conv sees the same sample grid as in the whole pass."""
    if num_frames <= chunk_frames:
        return layers(x if isinstance(x, torch.Tensor) else x[..., :])  # x may be a zoo.io.AudioFileSource
    out = None  # filled chunk by chunk: no list of pieces and concatenated copy side by side
    for span in chunk_spans(num_frames, chunk_frames, context_frames):
        piece = layers(x[..., span.read_start * in_per_frame: span.read_end * in_per_frame])
        offset = span.read_start * out_per_frame
        kept = piece[..., span.keep_start * out_per_frame - offset: span.keep_end * out_per_frame - offset]
        if out is None:
            out = kept.new_empty(*kept.shape[:-1], num_frames * out_per_frame)
        out[..., span.keep_start * out_per_frame: span.keep_start * out_per_frame + kept.shape[-1]] = kept
        end = span.keep_start * out_per_frame + kept.shape[-1]
    return out[..., :end]
