"""TiTok: "An Image is Worth 32 Tokens for Reconstruction and Generation" (Yu et al., 2024).

A ViT encoder reads the image patches together with N learned latent tokens; only the latent
tokens leave the encoder, projected to a small token dimension and quantized, which gives a 1D
sequence of N codes that does not follow the 2D patch grid. A ViT decoder reads the tokens with
one mask token per patch and rebuilds the image at the mask tokens.

Released variants differ in three switches:
- `bottleneck`: "vq" (discrete codes; l2-normalized "cosine" VQ with 12-dim tokens for the
  two-stage models, plain euclidean VQ with 64-dim tokens for BL/SL) or "vae" (continuous
  Gaussian latents; the token is the posterior mode, `Tokens.latents`, and codes are (B, 0)).
- `decoder_output`: "proxy_codes" (two-stage L-32/B-64/S-128 and One-D-Piece: the decoder
  predicts logits over MaskGIT-VQGAN's 1024 codes per patch, decoded to pixels by the VQGAN
  decoder) or "pixels" (single-stage BL/SL/LL: a linear patch head plus a 3x3 conv).
- `latent_reshape_without_permute`: the older checkpoints (L-32, B-64, S-128, all One-D-Piece)
  reshape the encoder's (B, N, width) output to (B, width, N) in memory order, without
  permuting, before the token projection; their weights only work with that same reshape.

Any prefix of the sequence decodes (the decoder simply reads fewer tokens); One-D-Piece trains
for it (tail token drop), TiTok does not, so TiTok prefixes decode to poor images.
Images in and out are in [0, 1], as in the official code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from zoo.blocks.vit import Transformer, init_vit_weights, reinit_vit_weights
from zoo.blocks.vqgan import ProxyCodePixelDecoder
from zoo.errors import TokenizerError
from zoo.quantize import VectorQuantizer
from zoo.tokenizer import ImageTokenizer, TokenizerConfig, TokenizerOutput, TrainingOptions
from zoo.tokens import Tokens, lengths_to_mask

# ViT sizes of the paper: width, depth, heads
VIT_SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}

# encode option
NumTokens = Annotated[int | torch.Tensor | None,
                      "leading tokens to keep per image, 1 to num_tokens: an int, or a (B,) integer tensor of "
                      "per-image lengths (default: all)"]


@dataclass
class TiTokConfig(TokenizerConfig):
    """TiTok's architecture: image and patch size, token count, ViT sizes, bottleneck, decoder output."""

    image_size: int = 256
    patch_size: int = 16
    num_tokens: int = 32               # latent tokens per image
    encoder_width: int = 1024
    encoder_depth: int = 24
    encoder_heads: int = 16
    decoder_width: int = 1024
    decoder_depth: int = 24
    decoder_heads: int = 16
    mlp_ratio: float = 4.0
    bottleneck: str = "vq"             # "vq" or "vae"
    token_dim: int = 12                # channels of one token (the VAE's mean has this many)
    codebook_size: int = 4096
    codebook_distance: str = "cosine"  # "cosine": l2-normalized VQ; "euclidean": plain VQ
    decoder_output: str = "proxy_codes"  # "proxy_codes" (MaskGIT-VQGAN pixel decoder) or "pixels"
    proxy_codebook_size: int = 1024
    proxy_code_dim: int = 256
    pixel_decoder_channels: int = 128
    pixel_decoder_channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    pixel_decoder_res_blocks: int = 2
    latent_reshape_without_permute: bool = False

    moved_keys = dict.fromkeys(("commitment_weight", "kmeans_init", "threshold_ema_dead_code", "kl_weight"),
                               "a training option")


@dataclass(frozen=True)
class TiTokTrainingOptions(TrainingOptions):
    """How TiTok / One-D-Piece train (defaults: as the released models were trained)."""

    commitment_weight: float = 0.25    # weight of the VQ commitment loss in aux_loss
    kmeans_init: bool = False          # from scratch only: codebook set by k-means of the first training batch
    threshold_ema_dead_code: float = 0  # codes whose EMA usage per batch falls below this restart from batch latents
    kl_weight: float = 1e-6            # weight of the VAE's KL term in aux_loss
    init_std: float = 0.02             # from scratch only: std of the ViTs' linear/conv init (see reinit_vit_weights)

    def __post_init__(self):
        if self.commitment_weight < 0 or self.threshold_ema_dead_code < 0 or self.kl_weight < 0:
            raise TokenizerError("commitment_weight, threshold_ema_dead_code and kl_weight must be >= 0, got "
                                 f"{self.commitment_weight}, {self.threshold_ema_dead_code}, {self.kl_weight}.")
        if not self.init_std > 0:
            raise TokenizerError(f"init_std must be > 0, got {self.init_std}.")


def titok_config(encoder_size: str, decoder_size: str, num_tokens: int, **fields) -> TiTokConfig:
    """A config from the paper's size names ("small", "base", "large")."""
    ew, ed, eh = VIT_SIZES[encoder_size]
    dw, dd, dh = VIT_SIZES[decoder_size]
    sizes = dict(encoder_width=ew, encoder_depth=ed, encoder_heads=eh, decoder_width=dw, decoder_depth=dd, decoder_heads=dh)
    return TiTokConfig(num_tokens=num_tokens, **{**sizes, **fields})


class TiTokEncoder(nn.Module):
    """Image (B, 3, H, W) -> per-token features (B, N, out_dim)."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_tokens: int, out_dim: int, latent_reshape_without_permute: bool):
        super().__init__()
        self.grid_size = image_size // patch_size
        self.latent_reshape_without_permute = latent_reshape_without_permute
        scale = width ** -0.5
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(scale * torch.randn(1, width))
        self.position_embedding = nn.Parameter(scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.latent_tokens = nn.Parameter(scale * torch.randn(num_tokens, width))
        self.latent_position_embedding = nn.Parameter(scale * torch.randn(num_tokens, width))
        self.norm_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, num_heads, mlp_ratio)
        self.norm_post = nn.LayerNorm(width)
        self.to_token = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> token features (B, N, out_dim)."""
        b = x.shape[0]
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, G*G, W)
        patches = torch.cat([self.cls_token.expand(b, 1, -1), patches], dim=1) + self.position_embedding
        latents = (self.latent_tokens + self.latent_position_embedding).expand(b, -1, -1)  # (B, N, W)
        h = self.transformer(self.norm_pre(torch.cat([patches, latents], dim=1)))
        latents = self.norm_post(h[:, 1 + self.grid_size ** 2:])  # (B, N, W)
        if self.latent_reshape_without_permute:
            n, w = latents.shape[1:]
            latents = latents.reshape(b, w, n).transpose(1, 2)  # what the old checkpoints were trained with
        return self.to_token(latents)  # (B, N, out_dim)


class TiTokDecoder(nn.Module):
    """Tokens (B, n, token_dim), n <= N -> proxy-code logits (B, K, G, G) or pixels (B, 3, H, W).

    `padding` (B, n) bool marks token positions past an image's length; they are hidden from
    attention, so each image decodes as if only its own prefix had been given."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_tokens: int, token_dim: int, output: str, proxy_codebook_size: int):
        super().__init__()
        self.grid_size = image_size // patch_size
        self.patch_size = patch_size
        self.output = output
        scale = width ** -0.5
        self.token_embed = nn.Linear(token_dim, width)
        self.cls_token = nn.Parameter(scale * torch.randn(1, width))
        self.position_embedding = nn.Parameter(scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.mask_token = nn.Parameter(scale * torch.randn(1, 1, width))
        self.latent_position_embedding = nn.Parameter(scale * torch.randn(num_tokens, width))
        self.norm_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, num_heads, mlp_ratio)
        self.norm_post = nn.LayerNorm(width)
        if output == "proxy_codes":
            self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, proxy_codebook_size))
            self.conv_out = None
        else:
            self.head = nn.Linear(width, patch_size * patch_size * 3)
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, n, token_dim), padding (B, n) bool or None -> logits (B, K, G, G) or pixels (B, 3, H, W)."""
        b, n, _ = tokens.shape
        g = self.grid_size
        x = self.token_embed(tokens) + self.latent_position_embedding[:n]  # (B, n, W)
        queries = torch.cat([self.cls_token, self.mask_token[0].expand(g * g, -1)]) + self.position_embedding
        h = torch.cat([queries.expand(b, -1, -1), x], dim=1)  # (B, 1 + G*G + n, W)
        if padding is not None:
            padding = torch.cat([padding.new_zeros(b, 1 + g * g), padding], dim=1)
        h = self.transformer(self.norm_pre(h), padding)
        h = self.head(self.norm_post(h[:, 1:1 + g * g]))  # (B, G*G, K) or (B, G*G, p*p*3)
        if self.output == "proxy_codes":
            return h.transpose(1, 2).reshape(b, -1, g, g)
        p = self.patch_size
        pixels = h.reshape(b, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(b, 3, g * p, g * p)
        return self.conv_out(pixels)


class TiTok(ImageTokenizer):
    """ViT encoder with latent tokens -> VQ (or VAE) bottleneck -> ViT decoder (-> VQGAN pixel decoder)."""

    architecture = "titok"
    config_class = TiTokConfig
    training_options_class = TiTokTrainingOptions

    def __init__(self, config: TiTokConfig):
        super().__init__(config)
        c = config
        if c.bottleneck not in ("vq", "vae"):
            raise TokenizerError(f"TiTok bottleneck must be 'vq' or 'vae', got {c.bottleneck!r}.")
        if c.decoder_output not in ("proxy_codes", "pixels"):
            raise TokenizerError(f"TiTok decoder_output must be 'proxy_codes' or 'pixels', got {c.decoder_output!r}.")
        if c.image_size % c.patch_size:
            raise TokenizerError(f"image_size {c.image_size} is not a multiple of patch_size {c.patch_size}.")
        upsampling = 2 ** (len(c.pixel_decoder_channel_mult) - 1)
        if c.decoder_output == "proxy_codes" and upsampling != c.patch_size:
            raise TokenizerError(f"the proxy-code pixel decoder upsamples x{upsampling} "
                                 f"({len(c.pixel_decoder_channel_mult)} levels) but patches are {c.patch_size} pixels; "
                                 "give pixel_decoder_channel_mult log2(patch_size) + 1 entries.")
        encoder_out = c.token_dim * (2 if c.bottleneck == "vae" else 1)  # the VAE predicts mean and log-variance
        self.encoder = TiTokEncoder(c.image_size, c.patch_size, c.encoder_width, c.encoder_depth, c.encoder_heads,
                                    c.mlp_ratio, c.num_tokens, encoder_out, c.latent_reshape_without_permute)
        self.decoder = TiTokDecoder(c.image_size, c.patch_size, c.decoder_width, c.decoder_depth, c.decoder_heads,
                                    c.mlp_ratio, c.num_tokens, c.token_dim, c.decoder_output, c.proxy_codebook_size)
        self.apply(init_vit_weights)
        self.quantizer = None
        if c.bottleneck == "vq":
            t = self.training_options
            self.quantizer = VectorQuantizer(c.token_dim, c.codebook_size, distance=c.codebook_distance,
                                             commitment_weight=t.commitment_weight, kmeans_init=t.kmeans_init,
                                             threshold_ema_dead_code=t.threshold_ema_dead_code)
        self.pixel_decoder = None
        if c.decoder_output == "proxy_codes":
            self.pixel_decoder = ProxyCodePixelDecoder(c.proxy_codebook_size, c.proxy_code_dim, c.pixel_decoder_channels,
                                                       c.pixel_decoder_channel_mult, c.pixel_decoder_res_blocks)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(codebook_size,) for the VQ bottleneck, () for the VAE (continuous tokens)."""
        return (self.config.codebook_size,) if self.config.bottleneck == "vq" else ()

    def _apply_training_options(self, options: TiTokTrainingOptions, changed: set[str]) -> None:
        if "init_std" in changed:
            reinit_vit_weights(self.encoder, self.decoder, std=options.init_std)
        if self.quantizer is not None:  # kl_weight is read by forward
            self.quantizer.configure_training(commitment_weight=options.commitment_weight,
                                              threshold_ema_dead_code=options.threshold_ema_dead_code,
                                              kmeans_init=options.kmeans_init if "kmeans_init" in changed else None)

    # ---- pieces --------------------------------------------------------------------------
    def split_posterior(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE encoder output (B, N, 2C) -> mean, log-variance (clamped to [-30, 20]), each (B, N, C)."""
        mean, logvar = z.chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_latents(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Quantized latents (B, n, C) -> image (B, 3, H, W), not clamped. `lengths` (B,) marks
        how many leading tokens of each image are valid; the rest are ignored."""
        out = self.decoder_output(latents, lengths)
        return self.pixel_decoder(out) if self.pixel_decoder is not None else out

    def decoder_output(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The ViT decoder's output for latents (B, n, C): proxy-code logits (B, K, G, G) or pixels;
        positions past `lengths` (B,) are hidden from attention."""
        padding = None
        if lengths is not None and bool((lengths < latents.shape[1]).any()):
            padding = ~lengths_to_mask(lengths, latents.shape[1])
        return self.decoder(latents, padding)

    def proxy_code_logits(self, x: torch.Tensor, num_tokens: int | torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass of a two-stage model's first stage, up to its ViT decoder: the logits over
        the proxy VQGAN's codes at every patch (B, proxy_codebook_size, G, G) and the quantizer's
        aux loss, keeping the first `num_tokens` tokens of each image."""
        if self.config.decoder_output != "proxy_codes":
            raise TokenizerError("proxy_code_logits needs a two-stage TiTok (decoder_output 'proxy_codes').")
        z = self.encoder(x)
        latents, _, aux_loss = self.quantizer(z)
        lengths = self.kept_lengths(num_tokens, x.shape[0])
        if lengths is not None:
            latents = latents[:, :int(lengths.max())]
        return self.decoder_output(latents, lengths), aux_loss

    # ---- the API ---------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, *, num_tokens: NumTokens = None) -> Tokens:
        z = self.encoder(x)  # (B, N, C) or (B, N, 2C)
        b = x.shape[0]
        lengths = self.kept_lengths(num_tokens, b)
        if self.quantizer is not None:
            codes, latents = self.quantizer.encode(z), None
        else:
            codes, latents = torch.zeros(b, 0, dtype=torch.long, device=z.device), self.split_posterior(z)[0]
        if lengths is not None:
            width = int(lengths.max())
            past = ~lengths_to_mask(lengths, width)  # (B, width) padding
            if self.quantizer is not None:
                codes = codes[:, :width].masked_fill(past, 0)
            else:
                latents = latents[:, :width].masked_fill(past[..., None], 0.0)
        return Tokens(codes, lengths, latents, {"image_size": self.config.image_size})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        if self.quantizer is not None:
            if tokens.codes.ndim != 2:
                raise TokenizerError(f"TiTok codes must be (B, n), got {tuple(tokens.codes.shape)}.")
            latents = self.quantizer.codes_to_latents(tokens.codes)
        else:
            if tokens.latents is None:
                raise TokenizerError("this TiTok is a VAE: decode needs Tokens.latents (what encode returned).")
            latents = tokens.latents.to(self.decoder.token_embed.weight.dtype)
        if latents.ndim != 3 or latents.shape[-1] != self.config.token_dim:
            raise TokenizerError(f"TiTok latents must be (B, n, {self.config.token_dim}), got {tuple(latents.shape)}.")
        n = latents.shape[1]
        if not 1 <= n <= self.config.num_tokens:
            raise TokenizerError(f"TiTok decodes 1 to {self.config.num_tokens} tokens per image, got {n}.")
        lengths = tokens.lengths
        if lengths is not None and (int(lengths.min()) < 1 or int(lengths.max()) > n):
            raise TokenizerError(f"Tokens.lengths must lie in [1, {n}] (the codes' width), got "
                                 f"[{int(lengths.min())}, {int(lengths.max())}].")
        return self.decode_latents(latents, lengths).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, num_tokens: int | torch.Tensor | None = None) -> TokenizerOutput:
        """Training pass. num_tokens: keep only that many leading tokens (an int, or a (B,) tensor
        of per-image lengths: tail token drop); codes are returned at full length.
        The reconstruction is not clamped."""
        z = self.encoder(x)
        b = x.shape[0]
        if self.quantizer is not None:
            latents, codes, aux_loss = self.quantizer(z)
        else:
            mean, logvar = self.split_posterior(z)
            latents = mean + (0.5 * logvar).exp() * torch.randn_like(mean) if self.training else mean
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
            codes, aux_loss = torch.zeros(b, 0, dtype=torch.long, device=z.device), self.training_options.kl_weight * kl
        lengths = self.kept_lengths(num_tokens, b)
        if lengths is not None:
            latents = latents[:, :int(lengths.max())]
        return TokenizerOutput(self.decode_latents(latents, lengths), codes, aux_loss)
