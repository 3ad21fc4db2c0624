"""One-D-Piece: TiTok trained with "Tail Token Drop" (Miwa et al., 2025).

The architecture and checkpoint layout are those of two-stage TiTok (l2-normalized VQ with
12-dim tokens, MaskGIT-VQGAN proxy-code decoder, the old reshape-without-permute of the encoder
output) with 256 tokens. During training the decoder reads only a random prefix of the tokens,
so information concentrates at the head of the sequence and any prefix decodes to a usable image:
`encode(x, num_tokens=k)` keeps the first k codes, `decode` takes any prefix.

Dropped tokens are not filled with anything: the decoder reads a shorter sequence (with the
leading latent position embeddings). In a batch with per-image lengths the tail positions are
hidden from attention, which gives each image the same result as decoding its prefix alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo.models.image.titok import VIT_SIZES, TiTok, TiTokConfig


@dataclass
class OneDPieceConfig(TiTokConfig):
    """Two-stage TiTok's architecture with 256 tokens and the old reshape (One-D-Piece's releases)."""

    num_tokens: int = 256
    latent_reshape_without_permute: bool = True


def onedpiece_config(size: str, num_tokens: int = 256, **fields) -> OneDPieceConfig:
    """A config from the paper's size names ("small", "base", "large"); encoder and decoder match."""
    width, depth, heads = VIT_SIZES[size]
    sizes = dict(encoder_width=width, encoder_depth=depth, encoder_heads=heads,
                 decoder_width=width, decoder_depth=depth, decoder_heads=heads)
    return OneDPieceConfig(num_tokens=num_tokens, **{**sizes, **fields})


class OneDPiece(TiTok):
    """TiTok trained with tail token drop: `encode(x, num_tokens=k)` keeps a prefix that decodes on its own."""

    architecture = "onedpiece"
    config_class = OneDPieceConfig
