"""Two tiny tokenizers used by the foundation tests: small enough to build in milliseconds,
real enough to exercise encode/decode, save/load, the registry and the CLI."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from einops import rearrange
from torch import nn

from zoo import AudioTokenizer, ImageTokenizer, TokenizerConfig, TokenizerOutput, Tokens
from zoo.quantize import ResidualVectorQuantizer, VectorQuantizer


@dataclass
class TinyImageConfig(TokenizerConfig):
    image_size: int = 32
    patch_size: int = 8
    width: int = 16
    codebook_size: int = 64
    channel_mults: tuple = (1, 2)


class TinyImageTokenizer(ImageTokenizer):
    architecture = "test-tiny-image"
    config_class = TinyImageConfig

    def __init__(self, config: TinyImageConfig):
        super().__init__(config)
        self.encoder = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size)
        self.quantizer = VectorQuantizer(config.width, config.codebook_size)
        self.decoder = nn.ConvTranspose2d(config.width, 3, config.patch_size, stride=config.patch_size)

    @property
    def num_tokens(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    @property
    def codebook_sizes(self):
        return (self.config.codebook_size,)

    def _latents(self, x):
        return rearrange(self.encoder(x), "b d h w -> b (h w) d")

    def _pixels(self, z):
        side = self.config.image_size // self.config.patch_size
        return self.decoder(rearrange(z, "b (h w) d -> b d h w", h=side)).sigmoid()

    def _encode(self, x):
        return Tokens(self.quantizer.encode(self._latents(x)))

    # a sampling decoder's options (a stand-in for a flow decoder's steps / seed / noise)
    def _decode(self, tokens, *, noise_scale: Annotated[float, "std of the noise added to the latents"] = 0.0,
                seed: Annotated[int | None, "seed of that noise (default: the global generator)"] = None):
        z = self.quantizer.codes_to_latents(tokens.codes)
        if noise_scale:
            generator = None if seed is None else torch.Generator(z.device).manual_seed(seed)
            z = z + noise_scale * torch.randn(z.shape, generator=generator, device=z.device)
        return self._pixels(z)

    def forward(self, x):
        quantized, codes, aux_loss = self.quantizer(self._latents(x))
        return TokenizerOutput(self._pixels(quantized), codes, aux_loss)


@dataclass
class TinyAudioConfig(TokenizerConfig):
    sample_rate: int = 16000
    stride: int = 160
    width: int = 8
    num_quantizers: int = 3
    codebook_size: int = 32


class TinyAudioTokenizer(AudioTokenizer):
    architecture = "test-tiny-audio"
    config_class = TinyAudioConfig

    def __init__(self, config: TinyAudioConfig):
        super().__init__(config)
        self.encoder = nn.Conv1d(1, config.width, config.stride, stride=config.stride)
        self.quantizer = ResidualVectorQuantizer(config.width, config.num_quantizers, config.codebook_size)
        self.decoder = nn.ConvTranspose1d(config.width, 1, config.stride, stride=config.stride)

    @property
    def hop_length(self) -> int:
        return self.config.stride

    @property
    def codebook_sizes(self):
        return (self.config.codebook_size,) * self.config.num_quantizers

    def _encode(self, wav, *, n_q: Annotated[int | None, "leading quantizers to use (default: all)"] = None):
        z = rearrange(self.encoder(wav), "b d t -> b t d")
        return Tokens(rearrange(self.quantizer.encode(z, n_q), "b t q -> b q t"))

    def _decode(self, tokens):
        z = self.quantizer.codes_to_latents(rearrange(tokens.codes, "b q t -> b t q"))
        return self.decoder(rearrange(z, "b t d -> b d t")).tanh()

    def forward(self, wav):
        quantized, codes, aux_loss = self.quantizer(rearrange(self.encoder(wav), "b d t -> b t d"))
        return TokenizerOutput(self.decoder(rearrange(quantized, "b t d -> b d t")).tanh(), codes, aux_loss)


def official_to_ours(state, config):
    """A toy 'official layout' for converter tests: our keys behind a 'net.' prefix."""
    state["net.encoder.weight"]  # an official checkpoint always has it: KeyError otherwise
    return {k.removeprefix("net."): v for k, v in state.items()}


class _Reference:
    """A stand-in 'other implementation' for `zoo bench --vs`: the same model called directly."""

    def __init__(self, name, device):
        import zoo

        torch.manual_seed(0)
        self.model = zoo.create(name).to(device)

    def encode(self, x):
        return self.model.encode(x)

    def decode(self, tokens):
        return self.model.decode(tokens)


def reference_factory(name, device):
    return _Reference(name, device)


def fake_asr(wav, sample_rate):
    """An 'ASR' that hears the same words whatever it is given."""
    return "the quick brown fox"
