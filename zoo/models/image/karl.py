"""KARL: "Single-pass Adaptive Image Tokenization for Minimum Program Search" (Duggal et al., 2025).

A 1D tokenizer over a frozen 2D base tokenizer that decides, in one forward pass, how many tokens an
image needs for a target reconstruction error (an estimate of the image's Kolmogorov complexity).

Encoder. The image is cut into patches whose embedding is laid beside the base tokenizer's latents
at the same grid cell (base_latents: MAGE's VQGAN encoder output before its codebook lookup, or
0.2325 x the mode of MAR's KL-16 VAE posterior, where the official code draws a sample at every
encode; both bases take the [0, 1] images as they are, as in the official code); a learned 2D
position grid (64 x 64, sampled to the latent grid by nearest-neighbour interpolation) is added. A
ViT reads, in this order, one condition token (the learned embedding of the target error's bin), the
2D tokens and the first `k` learned latent tokens (k: the token budget). Each latent token's output
gives a `token_dim` token (quantized by an l2-normalized codebook, or kept continuous) and, through
a small halting head, the probability that the image no longer needs it.

Halting. The target error `quality` (mean absolute error per pixel channel, images in [0, 1]) is
binned to the smallest of the 19 trained bins (0.005 ... 0.38) that is at least it, computed in
float32 as the official code does. A token whose halting probability exceeds 0.75 is halted; the
image keeps `k - halted` tokens (at least one). The official decoder hides each halted token
wherever it sits; here an image keeps the leading `k - halted` tokens, which is the same whenever
the halted tokens are the trailing ones (what KARL is trained to predict). Without a target, a
budget `num_tokens=k` keeps exactly k tokens (the halting head is not consulted; the encoder is
conditioned on the smallest bin); with neither, the official defaults (0.05 within 256 tokens).

Decoder. A ViT reads one mask token per grid cell (plus a second learned position grid) and the kept
tokens (embedded, plus a learned embedding per token position); tokens past an image's length are
hidden from attention, so a batch decodes each image as it would alone. (The official decoder
repeats its (B, L, L) halting mask head-major where nn.MultiheadAttention reads it batch-major, so
in a batch of several images some heads see another image's mask; its evaluation runs one image at a
time.) From the grid cells it predicts logits over the VQGAN's 1024 codes, whose softmax weights the
VQGAN codebook for the VQGAN decoder (as TiTok's proxy codes do), or the VAE latents for the VAE
decoder. Images in and out are in [0, 1].

Training. `forward(x, num_tokens, bins)` is one differentiable pass over the first num_tokens latent
tokens at the given target-error bins: the decoder's output (code logits or VAE latents), the
halting logits, the quantizer's loss and, on request, the pixels; with `hide_halted` the decoder does
not see the tokens the head halts. The two-pass halting objective and both stages are a training
regime: zoo.training.adaptive.KARLTraining.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.vit import Transformer, init_vit_weights
from zoo.errors import TokenizerError
from zoo.models.image.over_base import OverBaseConfig, OverBaseTokenizer
from zoo.quantize import VectorQuantizer
from zoo.tokens import Tokens, lengths_to_mask

# the target reconstruction errors KARL was trained with (each has its learned condition embedding)
QUALITY_BINS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.09, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.24,
                0.28, 0.32, 0.38)
DEFAULT_QUALITY = 0.05        # the official encode's default target
HALTING_THRESHOLD = 0.75      # a token whose halting probability exceeds this is halted
TOKEN_SLOTS = 512             # rows of the learned latent tokens and of the decoder's token positions
POSITION_GRID = 64            # side of the learned 2D position grids
HALTING_HIDDEN = 512          # hidden width of the halting head

# encode options
NumTokens = Annotated[int | torch.Tensor | None,
                      "token budget per image, 1 to num_tokens: an int, or a (B,) integer tensor. Alone: exactly "
                      "that many tokens; with quality: the halting head keeps what the target needs within it"]
Quality = Annotated[float | torch.Tensor | None,
                    "target reconstruction error, mean absolute error per pixel channel of images in [0, 1], from 0 to "
                    "0.38 (a float, or a (B,) tensor), binned as the official code bins it; the halting head keeps "
                    "the tokens it needs (default 0.05, within 256 tokens, when num_tokens is not given either)"]


@dataclass
class KARLConfig(OverBaseConfig):
    """KARL's architecture: OverBaseConfig's fields (image size, ViT sizes, token bottleneck, base
    tokenizer; the defaults are the released "karl_small") and the largest token budget."""

    num_tokens: int = 256              # the largest token budget


def sample_position_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A learned (C, G, G) position grid sampled (nearest) to `size` = (h, w) -> (1, h * w, C), row-major."""
    return F.interpolate(grid[None], size=size).flatten(2).transpose(1, 2)


def bin_quality(quality: torch.Tensor) -> torch.Tensor:
    """Target errors (B,) -> indices (B,) of the smallest bin of QUALITY_BINS that is at least each,
    compared in float32 (the last bin for a target above every bin)."""
    bins = torch.tensor(QUALITY_BINS, dtype=torch.float32, device=quality.device)
    below = (bins[None] < quality.to(torch.float32)[:, None]).sum(dim=1)
    return below.clamp(max=len(QUALITY_BINS) - 1)


def halted(halting_logits: torch.Tensor) -> torch.Tensor:
    """Halting logits -> bool, True where the halting probability exceeds HALTING_THRESHOLD."""
    return torch.sigmoid(halting_logits) > HALTING_THRESHOLD


class KARLEncoderOutput(NamedTuple):
    """What the encoder gives for each of the k latent tokens."""

    tokens: torch.Tensor          # (B, k, token_dim), before quantization
    halting_logits: torch.Tensor  # (B, k): sigmoid -> probability that the image no longer needs the token


class BaseTargets(NamedTuple):
    """The frozen base tokenizer's view of a batch, computed once per training step."""

    latents: torch.Tensor  # (B, C_base, h, w): what the encoder reads beside the patches
    target: torch.Tensor   # VQGAN: its codes (B, h*w) long; VAE: its latents (B, h*w, C_base)


class KARLTrainingOutput(NamedTuple):
    """One training pass of KARL over k latent tokens."""

    decoded: torch.Tensor         # (B, h*w, out_dim): logits over the VQGAN's codes, or VAE latents
    halting_logits: torch.Tensor  # (B, k)
    aux_loss: torch.Tensor        # the quantizer's loss (0 for continuous tokens)
    reconstruction: torch.Tensor | None  # (B, 3, H, W), not clamped; None unless decode_pixels


class KARLEncoder(nn.Module):
    """Image patches beside the base latents, a target-error condition and k latent tokens -> per-token
    features and halting probabilities."""

    def __init__(self, width: int, depth: int, num_heads: int, mlp_ratio: float, patch_size: int,
                 base_channels: int, token_dim: int):
        super().__init__()
        scale = width ** -0.5
        self.patch_embed = nn.Conv2d(3, width - base_channels, patch_size, stride=patch_size)
        self.position_grid = nn.Parameter(scale * torch.randn(width, POSITION_GRID, POSITION_GRID))
        self.latent_tokens = nn.Parameter(scale * torch.randn(TOKEN_SLOTS, width))
        # one condition per bin, initialised (as in the official code) to the bin's value in every channel
        self.quality_embeddings = nn.Parameter(torch.tensor(QUALITY_BINS)[:, None].repeat(1, width))
        self.norm_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, num_heads, mlp_ratio)
        self.halting_norm = nn.LayerNorm(width)
        self.halting_head = nn.Sequential(nn.Linear(width, HALTING_HIDDEN), nn.Tanh(), nn.Linear(HALTING_HIDDEN, 1))
        self.token_norm = nn.LayerNorm(width)
        self.to_token = nn.Linear(width, token_dim)

    def forward(self, images: torch.Tensor, base_latents: torch.Tensor, bins: torch.Tensor,
                num_tokens: int) -> KARLEncoderOutput:
        """images (B, 3, H, W), base_latents (B, C_base, h, w), bins (B,) long, num_tokens k -> KARLEncoderOutput."""
        b = images.shape[0]
        patches = self.patch_embed(images)  # (B, width - C_base, h, w)
        grid = tuple(patches.shape[-2:])
        cells = torch.cat([patches, base_latents], dim=1).flatten(2).transpose(1, 2)  # (B, h*w, width)
        cells = cells + sample_position_grid(self.position_grid, grid)
        condition = self.quality_embeddings[bins][:, None]  # (B, 1, width)
        latents = self.latent_tokens[:num_tokens].expand(b, -1, -1)
        h = self.transformer(self.norm_pre(torch.cat([condition, cells, latents], dim=1)))
        h = h[:, 1 + cells.shape[1]:]  # (B, k, width)
        halting_logits = self.halting_head(self.halting_norm(h))[..., 0]
        return KARLEncoderOutput(self.to_token(self.token_norm(h)), halting_logits)


class KARLDecoder(nn.Module):
    """Tokens (B, n, token_dim) -> one output per grid cell (B, h * w, out_dim): logits over the VQGAN's
    codes, or VAE latents. `padding` (B, n) bool marks tokens past an image's length (hidden)."""

    def __init__(self, width: int, depth: int, num_heads: int, mlp_ratio: float, token_dim: int, out_dim: int,
                 init_scale: float):
        super().__init__()
        self.token_embed = nn.Linear(token_dim, width)
        self.token_positions = nn.Parameter(init_scale * torch.randn(TOKEN_SLOTS, width))
        self.mask_token = nn.Parameter(init_scale * torch.randn(1, 1, width))
        self.position_grid = nn.Parameter(init_scale * torch.randn(width, POSITION_GRID, POSITION_GRID))
        self.norm_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, num_heads, mlp_ratio)
        self.norm_post = nn.LayerNorm(width)
        self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, out_dim))

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], padding: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, n, token_dim), grid (h, w), padding (B, n) or None -> (B, h * w, out_dim)."""
        b, n, _ = tokens.shape
        x = self.token_embed(tokens) + self.token_positions[:n]
        cells = self.mask_token + sample_position_grid(self.position_grid, grid)  # (1, h*w, width)
        h = torch.cat([cells.expand(b, -1, -1), x], dim=1)
        if padding is not None:
            padding = torch.cat([padding.new_zeros(b, cells.shape[1]), padding], dim=1)
        h = self.transformer(self.norm_pre(h), padding)
        return self.head(self.norm_post(h[:, :cells.shape[1]]))


class KARL(OverBaseTokenizer):
    """Frozen 2D base tokenizer -> KARL encoder with halting -> (quantized) tokens -> KARL decoder -> base decoder."""

    architecture = "karl"
    config_class = KARLConfig
    max_quality = QUALITY_BINS[-1]
    quality_note = ", the range KARL was trained on"

    def __init__(self, config: KARLConfig):
        super().__init__(config)
        c = config
        if not 1 <= c.num_tokens <= TOKEN_SLOTS:
            raise TokenizerError(f"num_tokens must lie in [1, {TOKEN_SLOTS}], got {c.num_tokens}.")
        self.encoder = KARLEncoder(c.encoder_width, c.encoder_depth, c.encoder_heads, c.mlp_ratio, self.patch_size,
                                   self.base_channels, c.token_dim)
        self.decoder = KARLDecoder(c.decoder_width, c.decoder_depth, c.decoder_heads, c.mlp_ratio, c.token_dim,
                                   self.decoded_dim, init_scale=c.encoder_width ** -0.5)
        self.encoder.apply(init_vit_weights)
        self.decoder.apply(init_vit_weights)
        self.quantizer = VectorQuantizer(c.token_dim, c.codebook_size, distance="cosine") if c.quantize else None

    def info(self) -> dict:
        """Image size, the largest budget and its bits, codebooks, parameters, and the target error it takes."""
        return {**super().info(),
                "quality": {"metric": "target reconstruction error: mean absolute error (L1) per pixel channel, "
                                      "images in [0, 1]; lower asks for more tokens",
                            "range": [0.0, QUALITY_BINS[-1]], "default": DEFAULT_QUALITY, "bins": list(QUALITY_BINS)}}

    # ---- pieces --------------------------------------------------------------------------
    def decode_latents(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Token latents (B, n, token_dim) -> image (B, 3, H, W), not clamped; tokens past `lengths` (B,) are hidden."""
        padding = None
        if lengths is not None and bool((lengths < latents.shape[1]).any()):
            padding = ~lengths_to_mask(lengths, latents.shape[1])
        g = self.grid_size
        return self.base_decode(self.decoder(latents, (g, g), padding))

    # ---- the API ---------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, *, num_tokens: NumTokens = None, quality: Quality = None) -> Tokens:
        b = x.shape[0]
        halting = quality is not None or num_tokens is None
        if quality is None:
            quality = DEFAULT_QUALITY if num_tokens is None else 0.0
        bins = bin_quality(self.check_quality(quality, b))
        budgets = self.kept_lengths(num_tokens, b)
        if budgets is None:
            budgets = torch.full((b,), self.config.num_tokens, dtype=torch.long, device=x.device)
        base = self.base_latents(x)
        lengths = torch.empty_like(budgets)
        features = [None] * b
        for k in sorted(set(budgets.tolist())):  # the encoder reads k latent tokens: one pass per budget
            rows = (budgets == k).nonzero()[:, 0]
            out = self.encoder(x[rows], base[rows], bins[rows], k)
            kept = k - halted(out.halting_logits).sum(dim=1) if halting else torch.full_like(rows, k)
            lengths[rows] = kept.clamp(min=1)
            for i, row in enumerate(rows.tolist()):
                features[row] = out.tokens[i]
        width = int(lengths.max())
        tokens = torch.stack([f[:width] if f.shape[0] >= width else F.pad(f, (0, 0, 0, width - f.shape[0]))
                              for f in features])  # (B, width, token_dim)
        past = ~lengths_to_mask(lengths, width)
        if self.quantizer is not None:
            codes, latents = self.quantizer.encode(tokens).masked_fill(past, 0), None
        else:
            codes, latents = torch.zeros(b, 0, dtype=torch.long, device=x.device), tokens.masked_fill(past[..., None], 0.0)
        return Tokens(codes, lengths, latents, {"image_size": self.config.image_size})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        latents = self.token_latents(tokens)
        n = latents.shape[1]
        if not 1 <= n <= self.config.num_tokens:
            raise TokenizerError(f"KARL decodes 1 to {self.config.num_tokens} tokens per image, got {n}.")
        lengths = tokens.lengths
        if lengths is not None and (int(lengths.min()) < 1 or int(lengths.max()) > n):
            raise TokenizerError(f"Tokens.lengths must lie in [1, {n}] (the codes' width), got "
                                 f"[{int(lengths.min())}, {int(lengths.max())}].")
        return self.decode_latents(latents, lengths).clamp(0.0, 1.0)

    # ---- training ------------------------------------------------------------------------------
    def base_pass(self, x: torch.Tensor) -> BaseTargets:
        """The base tokenizer's view of a batch: the latents the encoder reads and the decoder's targets (no
        gradient reaches the base tokenizer through the targets)."""
        latents = self.base_latents(x)
        return BaseTargets(latents, self.base_targets(latents))

    def forward(self, x: torch.Tensor, num_tokens: int, bins: torch.Tensor, *, hide_halted: bool = False,
                base: BaseTargets | None = None, decode_pixels: bool = True) -> KARLTrainingOutput:
        """The training pass: images x (B, 3, H, W) in [0, 1], the first `num_tokens` latent tokens, target-error
        bins (B,) long (see bin_quality). hide_halted: the decoder does not see tokens the halting head halts
        (hard threshold, no gradient through it), as in KARL's halting pass; otherwise it sees all of them.
        `base`: base_pass(x), when the caller has it already."""
        base = self.base_pass(x) if base is None else base
        grid = tuple(base.latents.shape[-2:])
        encoded = self.encoder(x, base.latents, bins, num_tokens)
        if self.quantizer is not None:
            quantized = self.quantizer(encoded.tokens)
            tokens, aux_loss = quantized.quantized, quantized.aux_loss
        else:
            tokens, aux_loss = encoded.tokens, encoded.tokens.new_zeros(())
        padding = halted(encoded.halting_logits.detach()) if hide_halted else None
        decoded = self.decoder(tokens, grid, padding)  # (B, h*w, out_dim)
        reconstruction = self.base_decode(decoded) if decode_pixels else None
        return KARLTrainingOutput(decoded, encoded.halting_logits, aux_loss, reconstruction)
