"""KL autoencoder of latent diffusion (the layout of diffusers' `AutoencoderKL`, which Stable
Diffusion's and FlexTok's VAEs use).

Encoder: 3x3 conv in; per level `layers_per_block` resnet blocks, then (except at the last level)
a stride-2 3x3 conv after padding one row / column at the bottom / right only; a middle of resnet,
single-head self-attention, resnet; GroupNorm, SiLU, 3x3 conv to 2 x latent channels (mean and
log-variance); a 1x1 "quant" conv. Decoder: the mirror, with `layers_per_block + 1` resnet blocks
per level and nearest x2 upsampling followed by a 3x3 conv. GroupNorms have eps 1e-6; a resnet
block's 1x1 shortcut, when the width changes, acts on its input. Images are in [-1, 1].
The posterior's log-variance is clamped to [-30, 20]; `encode` returns its mode (the mean).

`encoder_lowest_level_attention` adds, in the encoder's last (lowest-resolution) level, one
self-attention after each resnet block: LDM's `attn_resolutions` at the latent resolution, as
MAR's KL-16 VAE has it (its decoder has none there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import TokenizerError

GROUP_NORM_EPS = 1e-6


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=GROUP_NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=GROUP_NORM_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class SpatialSelfAttention(nn.Module):
    """One-head self-attention over the H*W positions, GroupNorm first, added to the input."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(seq)[:, None] for proj in (self.to_q, self.to_k, self.to_v))  # (B, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.to_out(out).transpose(1, 2).reshape(b, c, h, w)


class MiddleBlock(nn.Module):
    """Resnet, self-attention (optional), resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnet1 = ResnetBlock(channels, channels, groups)
        self.attention = SpatialSelfAttention(channels, groups) if attention else None
        self.resnet2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        x = self.resnet1(x)
        if self.attention is not None:
            x = self.attention(x)
        return self.resnet2(x)


class Level(nn.Module):
    """Resnet blocks at one resolution (each followed by self-attention when `attention`), then an
    optional down- or upsampling conv."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, groups: int, resample: str | None,
                 attention: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
                                    for i in range(blocks))
        self.attentions = (nn.ModuleList(SpatialSelfAttention(out_channels, groups) for _ in range(blocks))
                           if attention else None)
        self.resample = resample
        stride = 2 if resample == "down" else 1
        self.resample_conv = nn.Conv2d(out_channels, out_channels, 3, stride=stride,
                                       padding=0 if resample == "down" else 1) if resample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W'), H' = H/2, H or 2H."""
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.resample == "down":
            x = self.resample_conv(F.pad(x, (0, 1, 0, 1)))  # pad bottom / right only, then stride 2
        elif self.resample == "up":
            x = self.resample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class KLEncoder(nn.Module):
    """Image (B, 3, H, W) -> moments (B, 2 * latent_channels, H / f, W / f), f = 2^(levels - 1)."""

    def __init__(self, in_channels: int, latent_channels: int, block_channels: tuple[int, ...], layers_per_block: int,
                 groups: int, mid_attention: bool, lowest_level_attention: bool = False):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_channels[0], 3, padding=1)
        last = len(block_channels) - 1
        self.down = nn.ModuleList(
            Level(block_channels[max(i - 1, 0)], ch, layers_per_block, groups, "down" if i < last else None,
                  attention=lowest_level_attention and i == last)
            for i, ch in enumerate(block_channels))
        self.mid = MiddleBlock(block_channels[-1], groups, mid_attention)
        self.norm_out = nn.GroupNorm(groups, block_channels[-1], eps=GROUP_NORM_EPS)
        self.conv_out = nn.Conv2d(block_channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 2L, h, w)."""
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class KLDecoder(nn.Module):
    """Latents (B, latent_channels, h, w) -> image (B, 3, h * f, w * f)."""

    def __init__(self, out_channels: int, latent_channels: int, block_channels: tuple[int, ...], layers_per_block: int,
                 groups: int, mid_attention: bool):
        super().__init__()
        widths = tuple(reversed(block_channels))
        self.conv_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.mid = MiddleBlock(widths[0], groups, mid_attention)
        last = len(widths) - 1
        self.up = nn.ModuleList(
            Level(widths[max(i - 1, 0)], ch, layers_per_block + 1, groups, "up" if i < last else None)
            for i, ch in enumerate(widths))
        self.norm_out = nn.GroupNorm(groups, widths[-1], eps=GROUP_NORM_EPS)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, h, w) -> (B, 3, H, W)."""
        x = self.mid(self.conv_in(z))
        for level in self.up:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class KLAutoencoder(nn.Module):
    """KL VAE: `encode` -> posterior mode (or a sample), `decode` -> image (see the module docstring)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 4,
                 block_channels: tuple[int, ...] = (128, 256, 512, 512), layers_per_block: int = 2, norm_groups: int = 32,
                 mid_attention: bool = True, use_quant_conv: bool = True, use_post_quant_conv: bool = True,
                 encoder_lowest_level_attention: bool = False):
        super().__init__()
        if any(ch % norm_groups for ch in block_channels):
            raise TokenizerError(f"every VAE width must be divisible by norm_groups {norm_groups}, got {block_channels}.")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.downsample_factor = 2 ** (len(block_channels) - 1)
        self.encoder = KLEncoder(in_channels, latent_channels, block_channels, layers_per_block, norm_groups, mid_attention,
                                 encoder_lowest_level_attention)
        self.decoder = KLDecoder(out_channels, latent_channels, block_channels, layers_per_block, norm_groups, mid_attention)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [-1, 1] -> posterior mean and log-variance, each (B, L, H / f, W / f)."""
        f = self.downsample_factor
        if images.ndim != 4 or images.shape[1] != self.in_channels or images.shape[-1] % f or images.shape[-2] % f:
            raise TokenizerError(f"the VAE takes (B, {self.in_channels}, H, W) with H and W multiples of {f}, "
                                 f"got {tuple(images.shape)}.")
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> latents: the posterior mode, or a draw from it with `sample`."""
        mean, logvar = self.encode_moments(images)
        if not sample:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * noise

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, L, h, w) -> images (B, 3, h * f, w * f), about [-1, 1], not clamped."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise TokenizerError(f"the VAE decodes (B, {self.latent_channels}, h, w) latents, got {tuple(latents.shape)}.")
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)

    def last_decoder_layer(self) -> torch.Tensor:
        """The final conv's weight (what an adaptive GAN weight is measured on)."""
        return self.decoder.conv_out.weight
