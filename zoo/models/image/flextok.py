"""FlexTok: "Resampling Images into 1D Token Sequences of Flexible Length" (Bachmann et al., 2025).

A frozen KL VAE turns the image into latents (16 channels at 1/8 size). The encoder, a
transformer over the latent patches and N learned register tokens, lets the registers read the
patches (registers attend causally among themselves, patches only to patches), and a head maps
each register to 6 channels that FSQ rounds ([8, 8, 8, 5, 5, 5]: 64,000 codes). Training drops
the tail of the register sequence at random (nested dropout), so the first tokens hold the
coarse content and any prefix of 1..N tokens is a valid encoding.

The decoder is a rectified-flow model over VAE latents: it reads the noised latent patches and
the N registers (the kept prefix, then a learned mask token in every dropped position) and
predicts the velocity noise - latents, conditioned on the flow time by adaLN (one modulation for
the patches, one for the registers). Decoding integrates from pure noise at t = 1 to t = 0 with
Euler steps, with classifier-free guidance against a "null" register sequence, optionally in
the normalized (APG) form. Images in and out are in [0, 1]; the VAE works in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.flow_transformer import FlowTransformer, init_flow_transformer, modulate, plain_layer_norm
from zoo.blocks.vae_kl import KLAutoencoder
from zoo.errors import TokenizerError
from zoo.models.image.flow_sampling import VelocityFn, sample_rectified_flow
from zoo.quantize import FiniteScalarQuantizer
from zoo.tokenizer import ImageTokenizer, TokenizerConfig
from zoo.tokens import Tokens, lengths_to_mask

NumTokens = Annotated[int | torch.Tensor | None,
                      "leading tokens to keep per image, 1 to num_tokens: an int, or a (B,) integer tensor of "
                      "per-image lengths (default: all)"]
Steps = Annotated[int, "Euler steps of the rectified-flow sampler"]
GuidanceScale = Annotated[float, "classifier-free guidance scale (1: no guidance)"]
NormGuidance = Annotated[bool, "normalized guidance (APG, Sadat et al. 2024) instead of plain CFG"]
Seed = Annotated[int | None, "seed of the sampler's initial noise, drawn per image in batch order as the official "
                             "pipeline does (ignored when noise is given)"]
Noise = Annotated[torch.Tensor | None, "the sampler's initial noise (B, C, h, w) in VAE-latent space"]
Progress = Annotated[bool, "show a progress bar over the sampler's steps"]


@dataclass
class FlexTokConfig(TokenizerConfig):
    """FlexTok's architecture: VAE, patching, registers, FSQ, encoder and flow-decoder sizes."""

    image_size: int = 256
    # KL VAE (diffusers' AutoencoderKL layout); latents are multiplied by the scaling factor
    vae_latent_channels: int = 16
    vae_block_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    vae_norm_groups: int = 32
    vae_scaling_factor: float = 1.0
    patch_size: int = 2                # in VAE-latent cells
    num_tokens: int = 256              # register tokens
    fsq_levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    encoder_width: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    decoder_width: int = 768
    decoder_depth: int = 12
    decoder_heads: int = 12
    mlp_ratio: float = 4.0
    register_attention: str = "causal"    # encoder registers: "causal" among themselves, or "full"
    encoder_patch_position: str = "sincos"  # "sincos" (fixed) or "learned" (sum of row and column tables)
    decoder_patch_position: str = "sincos"
    position_grid: int = 16            # side of the largest patch grid the position tables cover
    null_condition: str = "learned"    # the unconditional registers: "learned" vector or "zero"
    null_single_token: bool = False    # the null condition is one token instead of N
    condition_segments: int = 2        # adaLN modulations in the decoder: 2 (patches, registers) or 1
    time_frequencies: int = 256        # width of the sinusoidal time embedding
    time_max: float = 1.0              # flow time runs in [0, time_max]


class FlowPass(NamedTuple):
    """One flow-matching training pass of the decoder."""

    velocity: torch.Tensor        # (B, C, h, w) predicted
    target: torch.Tensor          # (B, C, h, w): noise - clean latents
    keep: torch.Tensor            # (B,) registers kept (nested dropout)
    codes: torch.Tensor           # (B, N) the encoder's FSQ codes at full length
    register_features: list[torch.Tensor]  # decoder register features (B, N, D) at the requested blocks
    patch_features: list[torch.Tensor]     # decoder patch features (B, n_patches, D) at the same blocks


def sincos_grid(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """FlexTok's fixed 2D position table (1, dim, height, width): [sin, cos] of one grid coordinate,
    then of the other, reproducing the released tables' layout (their meshgrid runs over (width,
    height) and is read back as (height, width))."""
    if dim % 4:
        raise TokenizerError(f"a 2D sin-cos position table needs a width divisible by 4, got {dim}.")
    first = torch.arange(width, dtype=torch.float32).repeat_interleave(height)  # flat index k -> grid value
    second = torch.arange(height, dtype=torch.float32).repeat(width)
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    a, b = first[:, None] * omega, second[:, None] * omega
    table = torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], dim=1)  # (h*w, dim)
    return table.view(height, width, dim).permute(2, 0, 1)[None]


class PatchPosition(nn.Module):
    """Position table of a patch grid: fixed sin-cos (stored, so weights carry it) or learned row + column."""

    def __init__(self, kind: str, dim: int, grid: int):
        super().__init__()
        if kind not in ("sincos", "learned"):
            raise TokenizerError(f"patch position must be 'sincos' or 'learned', got {kind!r}.")
        self.kind = kind
        if kind == "sincos":
            self.table = nn.Parameter(sincos_grid(grid, grid, dim), requires_grad=False)  # (1, D, G, G)
        else:
            self.table = nn.Parameter(torch.randn(2, dim, grid) * 0.02)  # row and column tables (2, D, G)

    def forward(self, h: int, w: int) -> torch.Tensor:
        """(1, h, w, D) for an h x w patch grid."""
        if self.kind == "sincos":
            table = self.table[:, :, :h, :w]
        else:
            table = (self.table[0, :, :h, None] + self.table[1, :, None, :w])[None]
        return table.permute(0, 2, 3, 1)


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p, W/p, p*p*C), each patch's cells row by row, channels fastest."""
    b, c, h, w = latents.shape
    x = latents.permute(0, 2, 3, 1).reshape(b, h // p, p, w // p, p, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)


def unpatchify(patches: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, h, w, p*p*C) -> (B, C, h*p, w*p), the inverse of `patchify`."""
    b, h, w, _ = patches.shape
    x = patches.reshape(b, h, w, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, h * p, w * p)


def time_embedding(t: torch.Tensor, dim: int, time_max: float, max_period: float = 256.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times t (B,) in [0, time_max] -> (B, dim): [cos, sin] at
    frequencies (1000 / time_max) * max_period^(-i / half)."""
    half = dim // 2
    freqs = (1000.0 / time_max) * torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class FlexTokEncoder(nn.Module):
    """VAE latents (B, C, h, w) -> register features (B, N, len(fsq_levels))."""

    def __init__(self, latent_channels: int, patch_size: int, width: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_tokens: int, token_dim: int, register_attention: str, patch_position: str,
                 position_grid: int):
        super().__init__()
        if register_attention not in ("causal", "full"):
            raise TokenizerError(f"register_attention must be 'causal' or 'full', got {register_attention!r}.")
        self.patch_size, self.register_attention = patch_size, register_attention
        self.patch_embed = nn.Linear(latent_channels * patch_size ** 2, width)
        self.position = PatchPosition(patch_position, width, position_grid)
        self.registers = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        self.transformer = FlowTransformer(width, depth, num_heads, mlp_ratio)
        self.head = nn.Linear(width, token_dim)

    def attention_mask(self, num_patches: int, device) -> torch.Tensor | None:
        """(L, L) bool, True = may attend: patches see patches; registers see every patch and the
        registers up to themselves (causal) or all of them (full)."""
        if self.register_attention == "full":
            return None
        n = num_patches + self.registers.shape[0]
        q, k = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None]
        return (k < num_patches) | (k <= q)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, N, token_dim)."""
        patches = self.patch_embed(patchify(latents, self.patch_size))  # (B, gh, gw, D)
        patches = (patches + self.position(*patches.shape[1:3])).flatten(1, 2)  # (B, P, D)
        b, num_patches = patches.shape[:2]
        x = torch.cat([patches, self.registers.expand(b, -1, -1)], dim=1)
        x, _ = self.transformer(x, self.attention_mask(num_patches, x.device))
        return self.head(plain_layer_norm(x[:, num_patches:]))


class FlexTokFlowDecoder(nn.Module):
    """(noised latents (B, C, h, w), flow time (B,), registers) -> velocity (B, C, h, w)."""

    def __init__(self, latent_channels: int, patch_size: int, width: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_tokens: int, token_dim: int, patch_position: str, position_grid: int,
                 null_condition: str, null_single_token: bool, condition_segments: int, time_frequencies: int,
                 time_max: float):
        super().__init__()
        if null_condition not in ("learned", "zero"):
            raise TokenizerError(f"null_condition must be 'learned' or 'zero', got {null_condition!r}.")
        if condition_segments not in (1, 2):
            raise TokenizerError(f"condition_segments must be 1 or 2, got {condition_segments}.")
        self.patch_size, self.latent_channels = patch_size, latent_channels
        self.null_single_token, self.time_frequencies, self.time_max = null_single_token, time_frequencies, time_max
        self.token_embed = nn.Linear(token_dim, width)
        self.register_position = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)  # in every dropped register position
        self.null_register = nn.Parameter(torch.randn(width) * 0.02) if null_condition == "learned" else None
        self.patch_embed = nn.Linear(latent_channels * patch_size ** 2, width)
        self.position = PatchPosition(patch_position, width, position_grid)
        self.time_mlp = nn.Sequential(nn.Linear(time_frequencies, width), nn.SiLU(), nn.Linear(width, width))
        self.transformer = FlowTransformer(width, depth, num_heads, mlp_ratio, condition_segments)
        self.head_modulation = nn.Linear(width, 2 * width)
        self.head = nn.Linear(width, latent_channels * patch_size ** 2)

    def registers(self, quantized: torch.Tensor | None, keep: torch.Tensor, batch_size: int) -> torch.Tensor:
        """FSQ values (B, N, token_dim) with `keep` (B,) leading ones kept -> register inputs (B, N, D);
        quantized None -> the null condition (unconditional pass)."""
        n, d = self.register_position.shape
        if quantized is None:
            null = self.null_register if self.null_register is not None else self.mask_token.new_zeros(d)
            return null.expand(batch_size, 1 if self.null_single_token else n, d)
        x = self.token_embed(quantized) + self.register_position
        dropped = ~lengths_to_mask(keep, n)  # (B, N)
        return torch.where(dropped[..., None], self.mask_token.to(x.dtype), x)

    def forward(self, noised: torch.Tensor, t: torch.Tensor, registers: torch.Tensor, keep_layers: tuple[int, ...] = ()
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """-> (velocity (B, C, h, w), register features per kept block, patch features per kept block)."""
        if float(t.max()) > self.time_max:
            raise TokenizerError(f"flow times must lie in [0, {self.time_max}], got up to {float(t.max())}.")
        patches = self.patch_embed(patchify(noised, self.patch_size))  # (B, gh, gw, D)
        gh, gw = patches.shape[1:3]
        patches = (patches + self.position(gh, gw)).flatten(1, 2)
        condition = self.time_mlp(time_embedding(t, self.time_frequencies, self.time_max).to(patches.dtype))
        x = torch.cat([patches, registers], dim=1)
        lengths = (gh * gw, registers.shape[1])
        x, kept = self.transformer(x, None, condition, lengths, keep_layers)
        shift, scale = self.head_modulation(F.silu(condition))[:, None].chunk(2, dim=-1)
        out = self.head(modulate(plain_layer_norm(x[:, :lengths[0]]), shift, scale))
        velocity = unpatchify(out.view(-1, gh, gw, out.shape[-1]), self.patch_size, self.latent_channels)
        return velocity, [h[:, lengths[0]:] for h in kept], [h[:, :lengths[0]] for h in kept]


class FlexTok(ImageTokenizer):
    """KL VAE -> register encoder -> FSQ -> rectified-flow decoder (see the module docstring)."""

    architecture = "flextok"
    config_class = FlexTokConfig

    def __init__(self, config: FlexTokConfig):
        super().__init__(config)
        c = config
        factor = 2 ** (len(c.vae_block_channels) - 1)
        if c.image_size % (factor * c.patch_size):
            raise TokenizerError(f"image_size {c.image_size} must be a multiple of the VAE's x{factor} "
                                 f"downsampling times patch_size {c.patch_size}.")
        self.vae = KLAutoencoder(in_channels=3, out_channels=3, latent_channels=c.vae_latent_channels,
                                 block_channels=tuple(c.vae_block_channels), layers_per_block=c.vae_layers_per_block,
                                 norm_groups=c.vae_norm_groups)
        token_dim = len(c.fsq_levels)
        self.encoder = FlexTokEncoder(c.vae_latent_channels, c.patch_size, c.encoder_width, c.encoder_depth,
                                      c.encoder_heads, c.mlp_ratio, c.num_tokens, token_dim, c.register_attention,
                                      c.encoder_patch_position, c.position_grid)
        self.decoder = FlexTokFlowDecoder(c.vae_latent_channels, c.patch_size, c.decoder_width, c.decoder_depth,
                                          c.decoder_heads, c.mlp_ratio, c.num_tokens, token_dim,
                                          c.decoder_patch_position, c.position_grid, c.null_condition,
                                          c.null_single_token, c.condition_segments, c.time_frequencies, c.time_max)
        self.encoder.transformer.apply(init_flow_transformer)
        self.decoder.transformer.apply(init_flow_transformer)
        for zero in (self.decoder.head_modulation, self.decoder.head):  # the velocity head starts at zero
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)
        self.quantizer = FiniteScalarQuantizer(token_dim, tuple(c.fsq_levels))

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(prod(fsq_levels),): 64,000 for the released models."""
        return self.quantizer.codebook_sizes

    @property
    def latent_size(self) -> int:
        """Side of the VAE latent grid for an image of `image_size`."""
        return self.config.image_size // 2 ** (len(self.config.vae_block_channels) - 1)

    def last_decoder_layer(self) -> torch.Tensor:
        """The velocity head's weight."""
        return self.decoder.head.weight

    # ---- pieces --------------------------------------------------------------------------
    def image_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled VAE latents (B, C, h, w): the posterior mode."""
        return self.vae.encode(images * 2.0 - 1.0) * self.config.vae_scaling_factor

    def latents_to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents -> images in [0, 1] (clamped)."""
        return ((self.vae.decode(latents / self.config.vae_scaling_factor) + 1.0) / 2.0).clamp(0.0, 1.0)

    def velocity_field(self, quantized: torch.Tensor, keep: torch.Tensor) -> VelocityFn:
        """The decoder as the sampler's velocity function, conditioned on FSQ values (B, N, 6) of
        which `keep` (B,) lead (conditional) or on the null condition (unconditional). The register
        inputs depend on neither the noised latents nor the time: they are built once here, not at
        every sampler step."""
        b = quantized.shape[0]
        conditioned = self.decoder.registers(quantized, keep, b)
        null = self.decoder.registers(None, keep, b)
        return lambda noised, t, conditional: self.decoder(noised, t, conditioned if conditional else null)[0]

    def flow_pass(self, images: torch.Tensor, keep: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  unconditional: torch.Tensor | None = None, keep_layers: tuple[int, ...] = ()) -> FlowPass:
        """Training pass: encode (VAE frozen by the caller), quantize with straight-through
        gradients, keep `keep` (B,) leading registers, noise the clean latents to
        t * noise + (1 - t) * latents and predict the velocity. `unconditional` (B,) bool rows use
        the null condition (classifier-free guidance dropout)."""
        with torch.no_grad():
            latents = self.image_latents(images)
        quantized, codes, _ = self.quantizer(self.encoder(latents))
        b = images.shape[0]
        registers = self.decoder.registers(quantized, keep, b)
        if unconditional is not None and bool(unconditional.any()):
            if self.config.null_single_token:
                raise TokenizerError("guidance dropout in training needs null_single_token False.")
            null = self.decoder.registers(None, keep, b)
            registers = torch.where(unconditional[:, None, None], null, registers)
        tt = t.view(-1, 1, 1, 1)
        noised = tt * noise + (1.0 - tt) * latents
        velocity, reg_features, patch_features = self.decoder(noised, t, registers, keep_layers)
        return FlowPass(velocity, noise - latents, keep, codes, reg_features, patch_features)

    def forward(self, images: torch.Tensor, keep: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                unconditional: torch.Tensor | None = None, keep_layers: tuple[int, ...] = ()) -> FlowPass:
        """The training pass, `flow_pass`."""
        return self.flow_pass(images, keep, t, noise, unconditional, keep_layers)

    # ---- the API ---------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, *, num_tokens: NumTokens = None) -> Tokens:
        codes = self.quantizer.encode(self.encoder(self.image_latents(x)))  # (B, N)
        lengths = self.kept_lengths(num_tokens, x.shape[0])
        if lengths is not None:
            width = int(lengths.max())
            codes = codes[:, :width].masked_fill(~lengths_to_mask(lengths, width), 0)
        return Tokens(codes, lengths, None, {"image_size": self.config.image_size})

    def _decode(self, tokens: Tokens, *, steps: Steps = 20, guidance_scale: GuidanceScale = 7.5,
                norm_guidance: NormGuidance = True, seed: Seed = 0, noise: Noise = None,
                progress: Progress = False) -> torch.Tensor:
        codes, n = tokens.codes, self.config.num_tokens
        if codes.ndim != 2 or not 1 <= codes.shape[1] <= n:
            raise TokenizerError(f"FlexTok codes must be (B, n) with 1 <= n <= {n}, got {tuple(codes.shape)}.")
        if steps < 1:
            raise TokenizerError(f"steps must be at least 1, got {steps}.")
        b, width = codes.shape
        keep = tokens.lengths if tokens.lengths is not None else torch.full((b,), width, device=codes.device)
        if int(keep.min()) < 1 or int(keep.max()) > width:
            raise TokenizerError(f"Tokens.lengths must lie in [1, {width}] (the codes' width), got "
                                 f"[{int(keep.min())}, {int(keep.max())}].")
        quantized = self.quantizer.codes_to_latents(F.pad(codes, (0, n - width)))  # (B, N, 6), tail masked below
        shape = (b, self.config.vae_latent_channels, self.latent_size, self.latent_size)
        if noise is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
            noise = torch.cat([torch.randn((1, *shape[1:]), generator=generator) for _ in range(b)])
        elif tuple(noise.shape) != shape:
            raise TokenizerError(f"noise must have shape {shape} (B, latent channels, h, w), got {tuple(noise.shape)}.")
        latents = sample_rectified_flow(self.velocity_field(quantized, keep), noise.to(self.device, quantized.dtype),
                                        steps, guidance_scale, norm_guidance, progress)
        return self.latents_to_images(latents)
