"""MaskGIT's VQGAN (f16, 1024 codes of 256 channels, no attention layers): its pixel decoder and its encoder.

Two-stage TiTok models (L-32, B-64, S-128) and One-D-Piece do not predict pixels: their ViT
decoder predicts, for each 16x16 patch, a distribution over the 1024 codes of MaskGIT's VQGAN
("proxy codes"); the soft code embedding goes through this conv decoder to make pixels. KARL
does the same over MAGE's release of that VQGAN, and also reads the VQGAN encoder's latents
(before the codebook lookup): `VQGANEncoder`.

Layout facts that the released weights depend on:
- every conv is "same" padded (odd kernels, stride 1), so plain symmetric padding k // 2;
- resnet-block convs have no bias, the others do; GroupNorm has 32 groups and eps 1e-6;
- when a resnet block changes width, its 1x1 shortcut is applied to the block's *output*, not to
  its input (MaskGIT's own definition, kept by the PyTorch port the weights were converted with);
- upsampling is nearest x2 followed by a 3x3 conv, at every level but the first;
- the encoder's first conv has no bias, its downsampling is a 2x2 average pool (no conv) after
  every level but the last, and its last conv is 1x1 (with a bias) to the latent channels;
- the resnet blocks at the lowest resolution ("mid") are `num_res_blocks` of them, in the encoder
  as in the decoder (two in every release).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Two GroupNorm-SiLU-conv layers with a residual (MaskGIT-VQGAN's decoder block)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        # 1x1 conv on the block's output when the width changes (see the module docstring)
        self.output_shortcut = (nn.Conv2d(out_channels, out_channels, 1, bias=False)
                                if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        residual = x if self.output_shortcut is None else self.output_shortcut(h)
        return h + residual


class UpBlock(nn.Module):
    """`num_res_blocks` resnet blocks, then (optionally) nearest x2 upsampling and a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, upsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_res_blocks))
        self.upsample_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) through the resnet blocks, then 2x nearest upsampling and a conv when it has one."""
        for block in self.blocks:
            x = block(x)
        if self.upsample_conv is not None:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class DownBlock(nn.Module):
    """`num_res_blocks` resnet blocks, then (optionally) 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_res_blocks))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) through the resnet blocks, then halved by average pooling when it downsamples."""
        for block in self.blocks:
            x = block(x)
        return F.avg_pool2d(x, kernel_size=2, stride=2) if self.downsample else x


class VQGANEncoder(nn.Module):
    """(B, in_channels, H, W) -> latents (B, z_channels, H / 2^(levels-1), W / 2^(levels-1)), before the
    codebook lookup. `down[i]` works at level i (0 = full resolution)."""

    def __init__(self, z_channels: int = 256, hidden_channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2, in_channels: int = 3):
        super().__init__()
        widths = [hidden_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            DownBlock(widths[i - 1] if i else hidden_channels, widths[i], num_res_blocks, downsample=i != len(widths) - 1)
            for i in range(len(widths)))
        self.mid = nn.ModuleList(ResnetBlock(widths[-1], widths[-1]) for _ in range(num_res_blocks))
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> latents (B, z_channels, h, w)."""
        x = self.conv_in(x)
        for block in self.down:
            x = block(x)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class VQGANDecoder(nn.Module):
    """(B, z_channels, h, w) -> (B, out_channels, h * 2^(levels-1), w * 2^(levels-1)).

    `up[i]` works at level i (0 = full resolution) and runs from the deepest level up."""

    def __init__(self, z_channels: int = 256, hidden_channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2, out_channels: int = 3):
        super().__init__()
        widths = [hidden_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(z_channels, widths[-1], 3, padding=1)
        self.mid = nn.ModuleList(ResnetBlock(widths[-1], widths[-1]) for _ in range(num_res_blocks))
        self.up = nn.ModuleList(
            UpBlock(widths[min(i + 1, len(widths) - 1)], widths[i], num_res_blocks, upsample=i != 0)
            for i in range(len(widths)))
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Code embeddings (B, D, h, w) -> image (B, 3, H, W)."""
        x = self.conv_in(z)
        for block in self.mid:
            x = block(x)
        for block in reversed(self.up):
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class ProxyCodePixelDecoder(nn.Module):
    """Logits over the VQGAN codebook at each grid cell -> pixels.

    The softmax of the logits weights the codebook rows (a soft code embedding, differentiable),
    which the VQGAN decoder turns into an image. `decode_codes` does the same for hard codes."""

    def __init__(self, codebook_size: int = 1024, code_dim: int = 256, hidden_channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, code_dim)
        self.decoder = VQGANDecoder(code_dim, hidden_channels, tuple(channel_mult), num_res_blocks, 3)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, K, h, w) -> image (B, 3, 16h, 16w), not clamped."""
        soft_codes = torch.einsum("bkhw,kd->bdhw", logits.softmax(dim=1), self.codebook.weight)
        return self.decoder(soft_codes)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long -> image (B, 3, 16h, 16w), not clamped."""
        return self.decoder(self.codebook(codes).permute(0, 3, 1, 2))
