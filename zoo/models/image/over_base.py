"""What KARL and ALIT share: a 1D tokenizer over a frozen 2D base tokenizer.

The base is MAGE's VQGAN (its encoder's latents before the codebook lookup; its decoder reads a
softmax-weighted mix of its codebook, so the 1D decoder predicts logits over the VQGAN's codes) or MAR's
KL-16 VAE (0.2325 x the mode of its posterior, where the official code draws a sample; the 1D decoder
predicts its latents). Both take the [0, 1] images as they are. The encoder reads a patch embedding of
the image beside the base latents at each grid cell, so one patch per cell: the patch size is the base's
downsampling factor. This module holds the config fields, the base's parts and the checks both families
make; each family file holds its own encoder, decoder and halting.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.blocks.vae_kl import KLAutoencoder
from zoo.blocks.vit import reinit_vit_weights
from zoo.blocks.vqgan import ProxyCodePixelDecoder, VQGANEncoder
from zoo.errors import TokenizerError
from zoo.kernels import nearest_code
from zoo.tokenizer import ImageTokenizer, TokenizerConfig, TrainingOptions
from zoo.tokens import Tokens

BASES = ("vqgan", "vae")


@dataclass
class OverBaseConfig(TokenizerConfig):
    """The fields KARL and ALIT share: image size, ViT sizes, token bottleneck, base tokenizer. The defaults
    are the released "small" models (width 1024, 8 layers of 8 heads on both sides).

    The base VQGAN's fields carry TiTok's names (TiTok's decoder predicts the same VQGAN's codes); its
    encoder and decoder share their widths."""

    image_size: int = 256
    encoder_width: int = 1024
    encoder_depth: int = 8
    encoder_heads: int = 8
    decoder_width: int = 1024
    decoder_depth: int = 8
    decoder_heads: int = 8
    mlp_ratio: float = 4.0
    quantize: bool = True              # tokens from an l2-normalized codebook (False: continuous tokens)
    token_dim: int = 12
    codebook_size: int = 4096
    base_tokenizer: str = "vqgan"      # "vqgan" (MAGE's VQGAN) or "vae" (MAR's KL-16 VAE)
    proxy_codebook_size: int = 1024    # the VQGAN: codes, code channels (= its latent channels), widths
    proxy_code_dim: int = 256
    pixel_decoder_channels: int = 128
    pixel_decoder_channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    pixel_decoder_res_blocks: int = 2
    vae_latent_channels: int = 16      # the VAE: latent channels, widths, the scale of its latents
    vae_block_channels: tuple[int, ...] = (128, 128, 256, 256, 512)
    vae_layers_per_block: int = 2
    vae_norm_groups: int = 32
    vae_scaling_factor: float = 0.2325


@dataclass(frozen=True)
class ViTInitOptions(TrainingOptions):
    """How KARL and ALIT train from scratch."""

    init_std: float = 0.02  # std of the encoder's and decoder's linear/conv init (see reinit_vit_weights)

    def __post_init__(self):
        if not self.init_std > 0:
            raise TokenizerError(f"init_std must be > 0, got {self.init_std}.")


class OverBaseTokenizer(ImageTokenizer):
    """The base tokenizer's parts and what is read through them; a subclass builds `encoder`, `decoder`
    and `quantizer` (None for continuous tokens) after calling this __init__, and sets `max_quality`."""

    training_options_class = ViTInitOptions
    max_quality: float = 1.0     # the largest target error encode takes
    quality_note: str = ""       # said after the range when a target lies outside it

    def __init__(self, config: OverBaseConfig):
        super().__init__(config)
        c, family = config, type(self).__name__
        if c.base_tokenizer not in BASES:
            raise TokenizerError(f"{family} base_tokenizer must be one of {BASES}, got {c.base_tokenizer!r}.")
        levels = c.pixel_decoder_channel_mult if c.base_tokenizer == "vqgan" else c.vae_block_channels
        self.patch_size = 2 ** (len(levels) - 1)  # one patch per cell of the base latent grid
        if c.image_size % self.patch_size:
            raise TokenizerError(f"image_size {c.image_size} is not a multiple of the base tokenizer's downsampling "
                                 f"factor {self.patch_size}.")
        self.base_channels = c.proxy_code_dim if c.base_tokenizer == "vqgan" else c.vae_latent_channels
        if c.encoder_width <= self.base_channels:
            raise TokenizerError(f"encoder_width {c.encoder_width} must exceed the base latents' {self.base_channels} "
                                 "channels (the patch embedding fills the rest).")
        self.vqgan_encoder = self.vqgan_decoder = self.vae = None
        if c.base_tokenizer == "vqgan":
            self.vqgan_encoder = VQGANEncoder(c.proxy_code_dim, c.pixel_decoder_channels, c.pixel_decoder_channel_mult,
                                              c.pixel_decoder_res_blocks)
            self.vqgan_decoder = ProxyCodePixelDecoder(c.proxy_codebook_size, c.proxy_code_dim, c.pixel_decoder_channels,
                                                       c.pixel_decoder_channel_mult, c.pixel_decoder_res_blocks)
            self.decoded_dim = c.proxy_codebook_size  # the 1D decoder's output per cell: code logits
        else:
            self.vae = KLAutoencoder(latent_channels=c.vae_latent_channels, block_channels=c.vae_block_channels,
                                     layers_per_block=c.vae_layers_per_block, norm_groups=c.vae_norm_groups,
                                     encoder_lowest_level_attention=True)
            self.decoded_dim = c.vae_latent_channels  # ... or VAE latents

    def _apply_training_options(self, options: ViTInitOptions, changed: set[str]) -> None:
        if "init_std" in changed:
            reinit_vit_weights(self.encoder, self.decoder, std=options.init_std)

    @property
    def grid_size(self) -> int:
        """Side of the base latent grid (and of the decoder's grid of mask tokens)."""
        return self.config.image_size // self.patch_size

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(codebook_size,) for quantized tokens, () for continuous ones."""
        return (self.config.codebook_size,) if self.config.quantize else ()

    # ---- the base tokenizer ------------------------------------------------------------------
    def base_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> the base latents (B, C_base, h, w): the VQGAN encoder's output
        before its codebook, or the VAE posterior's mode times vae_scaling_factor."""
        if self.vqgan_encoder is not None:
            return self.vqgan_encoder(images)
        return self.vae.encode(images) * self.config.vae_scaling_factor

    def base_targets(self, base_latents: torch.Tensor) -> torch.Tensor:
        """Base latents -> what the 1D decoder learns to predict: the VQGAN's codes (B, h*w) (its nearest code
        by squared distance), or the VAE latents (B, h*w, C_base); no gradient."""
        cells = base_latents.detach().flatten(2).transpose(1, 2)
        if self.vqgan_decoder is None:
            return cells
        codes = nearest_code(cells.reshape(-1, cells.shape[-1]), self.vqgan_decoder.codebook.weight.detach())
        return codes.view(cells.shape[:2])

    def base_decode(self, decoded: torch.Tensor) -> torch.Tensor:
        """The 1D decoder's output (B, h*w, decoded_dim) -> image (B, 3, H, W), not clamped."""
        g = self.grid_size
        maps = decoded.transpose(1, 2).reshape(decoded.shape[0], -1, g, g)
        if self.vqgan_decoder is not None:
            return self.vqgan_decoder(maps)  # softmax over the VQGAN codes weights its codebook
        return self.vae.decode(maps)

    def base_tokenizer_modules(self) -> list[nn.Module]:
        """The base tokenizer's parts (the VQGAN's encoder and decoder, or the VAE): what stage 1 freezes."""
        return [m for m in (self.vqgan_encoder, self.vqgan_decoder, self.vae) if m is not None]

    @property
    def base_codebook(self) -> torch.Tensor | None:
        """The VQGAN's codebook (K, C_base) that the decoder's code logits weight; None for the VAE base."""
        return self.vqgan_decoder.codebook.weight if self.vqgan_decoder is not None else None

    def last_decoder_layer(self) -> torch.Tensor:
        """The base decoder's output conv: where the adaptive GAN weight compares gradients."""
        decoder = self.vqgan_decoder.decoder if self.vqgan_decoder is not None else self.vae.decoder
        return decoder.conv_out.weight

    # ---- checks ------------------------------------------------------------------------------
    def check_quality(self, quality: float | torch.Tensor, batch_size: int) -> torch.Tensor:
        """A target error (a number, or (B,) per image) -> (B,) float32, checked to lie in [0, max_quality]."""
        top = self.max_quality
        if isinstance(quality, torch.Tensor):
            if quality.shape != (batch_size,) or not quality.dtype.is_floating_point:
                raise TokenizerError(f"quality as a tensor must be (B,) = ({batch_size},) floats, got "
                                     f"{tuple(quality.shape)} {quality.dtype}.")
            values = quality.detach().to(device=self.device, dtype=torch.float32)
        else:
            values = torch.full((batch_size,), float(quality), dtype=torch.float32, device=self.device)
        bad = ~torch.isfinite(values) | (values < 0) | (values > top)
        if bool(bad.any()):
            raise TokenizerError(f"quality (the target mean absolute error per pixel, images in [0, 1]) must lie in "
                                 f"[0, {top}]{self.quality_note}, got {float(values[bad][0]):.6g}.")
        return values

    def token_latents(self, tokens: Tokens) -> torch.Tensor:
        """What decode reads of Tokens -> the decoder's token latents (B, n, token_dim): the codebook rows of the
        codes (quantized tokens) or the continuous latents, their shapes checked."""
        family = type(self).__name__
        if self.quantizer is not None:
            if tokens.codes.ndim != 2:
                raise TokenizerError(f"{family} codes must be (B, n), got {tuple(tokens.codes.shape)}.")
            latents = self.quantizer.codes_to_latents(tokens.codes)
        else:
            latents = tokens.latents.to(self.decoder.token_embed.weight.dtype)
        if latents.ndim != 3 or latents.shape[-1] != self.config.token_dim:
            raise TokenizerError(f"{family} latents must be (B, n, {self.config.token_dim}), got {tuple(latents.shape)}.")
        return latents

    def check_codes(self, tokens: Tokens) -> None:
        """Quantized tokens: codes (B, n) in the codebook; continuous tokens: Tokens must carry latents."""
        if self.quantizer is None:
            if tokens.latents is None:
                raise TokenizerError(f"this {type(self).__name__} has continuous tokens: decode needs Tokens.latents "
                                     "(what encode returned), not codes.")
            return
        super().check_codes(tokens)
