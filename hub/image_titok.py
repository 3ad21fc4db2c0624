"""TiTok and One-D-Piece: registered names, official weight sources, and the converter from the
official key layout (bytedance/1d-tokenizer, which One-D-Piece shares).

Official layout, for a model built from the official config:
  latent_tokens                                       (N, W)
  encoder.{patch_embed, class_embedding, positional_embedding, latent_token_positional_embedding,
           ln_pre, transformer.{i}.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj},
           ln_post, conv_out (1x1 conv)}
  decoder.{decoder_embed, class_embedding, positional_embedding, mask_token,
           latent_token_positional_embedding, ln_pre, transformer.{i}..., ln_post,
           ffn.0 / ffn.2 (1x1 convs; proxy-code head) or ffn.0 + conv_out (pixel head)}
  quantize.embedding.weight                           (K, C)      VQ models only
  pixel_quantize.embedding.weight, pixel_decoder.{conv_in, mid.{j}, up.{i}.block.{j}
           (nin_shortcut), up.{i}.upsample_conv, norm_out, conv_out}  two-stage models only

sha256 of the released files: none recorded (the files could not be downloaded where this was
written); `zoo.load` still works and checks nothing for them.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from zoo.errors import CheckpointError
from zoo.hub.registry import WeightSource, register
from zoo.models.image.onedpiece import OneDPiece, OneDPieceConfig, onedpiece_config
from zoo.models.image.titok import TiTok, TiTokConfig, titok_config

StateDict = dict[str, torch.Tensor]

# our codebook (K, C) and its EMA statistics, which the official quantizer does not have
_CODEBOOK = "quantizer.codebook"
CODEBOOK_STATISTICS = ("quantizer.code_usage", "quantizer.code_sum", "quantizer.initialised")

# zoo.blocks.vit's block names -> the OpenAI CLIP-style ViT blocks that TiTok's (and KARL's) code uses
OPENAI_VIT_BLOCK_KEYS = [
    (r"\.transformer\.blocks\.(\d+)\.norm1\.", r".transformer.\1.ln_1."),
    (r"\.transformer\.blocks\.(\d+)\.norm2\.", r".transformer.\1.ln_2."),
    (r"\.transformer\.blocks\.(\d+)\.", r".transformer.\1."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
]

# (our key pattern, official replacement), applied in order to our key names
_OUR_TO_OFFICIAL = [
    (r"^encoder\.latent_tokens$", "latent_tokens"),
    (r"\.cls_token$", ".class_embedding"),
    (r"\.latent_position_embedding$", ".latent_token_positional_embedding"),
    (r"\.position_embedding$", ".positional_embedding"),
    (r"\.norm_pre\.", ".ln_pre."),
    (r"\.norm_post\.", ".ln_post."),
    *OPENAI_VIT_BLOCK_KEYS,
    (r"^encoder\.to_token\.", "encoder.conv_out."),
    (r"^decoder\.token_embed\.", "decoder.decoder_embed."),
    (r"^decoder\.head\.(\d)\.", r"decoder.ffn.\1."),
    (r"^decoder\.head\.", "decoder.ffn.0."),
    (r"^quantizer\.codebook$", "quantize.embedding.weight"),
    (r"^pixel_decoder\.codebook\.weight$", "pixel_quantize.embedding.weight"),
    (r"^pixel_decoder\.decoder\.", "pixel_decoder."),
    (r"\.up\.(\d+)\.blocks\.", r".up.\1.block."),
    (r"\.output_shortcut\.", ".nin_shortcut."),
]


# official 1x1 convs that act on tokens; ours are Linear layers
_CONV_1X1 = {"encoder.conv_out.weight", "decoder.ffn.0.weight", "decoder.ffn.2.weight"}


def _meta_model(config: TiTokConfig) -> TiTok:
    model_class = OneDPiece if isinstance(config, OneDPieceConfig) else TiTok
    with torch.device("meta"):
        return model_class(config)


def official_key_map(config: TiTokConfig, expected: StateDict | None = None) -> dict[str, str]:
    """Our key -> official key, for every tensor of the official layout (the codebook's EMA
    statistics, which the official quantizer does not have, are left out). `expected`: our
    state dict for `config` (shapes only), when the caller has it already."""
    expected = _meta_model(config).state_dict() if expected is None else expected
    mapping = {}
    for ours in expected:
        if ours in CODEBOOK_STATISTICS:
            continue
        official = ours
        for pattern, replacement in _OUR_TO_OFFICIAL:
            official = re.sub(pattern, replacement, official)
        mapping[ours] = official
    return mapping


def official_shapes(config: TiTokConfig, expected: StateDict | None = None) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape, as the official code builds the model for `config`."""
    expected = _meta_model(config).state_dict() if expected is None else expected
    shapes = {}
    for ours, official in official_key_map(config, expected).items():
        shape = tuple(expected[ours].shape)
        if official in _CONV_1X1:
            shape = shape + (1, 1)            # ours a Linear, theirs a 1x1 conv
        shapes[official] = shape
    return shapes


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def renamed_official_state(state: StateDict, mapping: dict[str, str], shapes: dict[str, tuple[int, ...]],
                           expected: StateDict, family: str, other: str, dropped: tuple[str, ...] = ()) -> StateDict:
    """The official tensors under our names (`mapping`: ours -> official), float32 in our shapes, after
    checking that the file holds exactly the official keys (`shapes`: official key -> shape) with those
    shapes; keys starting with `dropped` (training-only parts) are left out first. `family` names the
    layout in the errors, `other` what the file may be instead ("another TiTok / One-D-Piece variant")."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from a DDP wrapper
    state = {k: v for k, v in state.items() if not k.startswith(dropped)} if dropped else state
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    if missing or unexpected:
        found = (("missing keys", missing), ("unexpected keys", unexpected))
        parts = [f"{label}: {_listing(keys)}" for label, keys in found if keys]
        raise CheckpointError(f"the checkpoint does not fit the official {family} layout for this configuration "
                              f"({'; '.join(parts)}); is it the checkpoint of {other}?")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs expected {shape}" for k, shape in shapes.items()
             if tuple(state[k].shape) != shape]
    if wrong:
        raise CheckpointError(f"the checkpoint's tensor shapes do not fit this {family} configuration "
                              f"({_listing(wrong)}); is it the checkpoint of {other}?")
    return {key: state[official].detach().to(torch.float32).reshape(expected[key].shape).clone()
            for key, official in mapping.items()}


def with_codebook_statistics(ours: StateDict, expected: StateDict, normalize: bool) -> StateDict:
    """`ours` with the codebook l2-normalized when `normalize` (what an l2-normalized official quantizer
    looks up) and EMA statistics consistent with its rows (sum / usage = codebook), marked initialised."""
    codebook = F.normalize(ours[_CODEBOOK], dim=-1) if normalize else ours[_CODEBOOK]
    code_usage, code_sum, initialised = CODEBOOK_STATISTICS
    ours[_CODEBOOK] = codebook
    ours[code_sum] = codebook.clone()
    ours[code_usage] = torch.ones(expected[code_usage].shape)
    ours[initialised] = torch.tensor(True)
    return ours


def convert_official_titok(state: StateDict, config: TiTokConfig) -> StateDict:
    """Official TiTok / One-D-Piece state dict -> ours. The l2-normalized ("cosine") codebook is
    stored normalized, which is what the official quantizer looks up."""
    expected = _meta_model(config).state_dict()
    ours = renamed_official_state(state, official_key_map(config, expected), official_shapes(config, expected),
                                  expected, "TiTok", "another TiTok / One-D-Piece variant")
    if config.bottleneck == "vq":
        ours = with_codebook_statistics(ours, expected, normalize=config.codebook_distance == "cosine")
    return ours


# ---- registrations ----------------------------------------------------------------------------

_TITOK_PAPER = "An Image is Worth 32 Tokens for Reconstruction and Generation (Yu et al., 2024), arXiv:2406.07550"
_ONEDPIECE_PAPER = ("One-D-Piece: Image Tokenizer Meets Quality-Controllable Compression (Miwa et al., 2025), "
                    "arXiv:2501.10064")
_SIZES = {"s": "small", "b": "base", "l": "large"}

# two-stage: l2-normalized VQ, 12-dim tokens, 4096 codes, MaskGIT-VQGAN proxy-code decoder
_TWO_STAGE = dict(bottleneck="vq", token_dim=12, codebook_size=4096, codebook_distance="cosine",
                  decoder_output="proxy_codes", latent_reshape_without_permute=True)
for size, tokens in (("l", 32), ("b", 64), ("s", 128)):
    register(
        f"titok-{size}-{tokens}", TiTok, titok_config(_SIZES[size], _SIZES[size], tokens, **_TWO_STAGE),
        description=f"TiTok-{size.upper()}-{tokens}: {tokens} tokens from a 4096-code l2-normalized codebook per "
                    "256x256 image; two-stage model whose decoder predicts MaskGIT-VQGAN codes (ImageNet).",
        license="Apache-2.0", paper=_TITOK_PAPER, converter=convert_official_titok,
        source=WeightSource(f"yucornetto/tokenizer_titok_{size}{tokens}_imagenet", "model.safetensors"),
    )

# single-stage VQ: 64-dim tokens, 8192 codes, plain euclidean VQ, pixel decoder head
_SINGLE_STAGE_VQ = dict(bottleneck="vq", token_dim=64, codebook_size=8192, codebook_distance="euclidean",
                        decoder_output="pixels")
for enc, dec, tokens in (("b", "l", 64), ("b", "l", 128), ("s", "l", 256)):
    register(
        f"titok-{enc}{dec}-{tokens}-vq", TiTok, titok_config(_SIZES[enc], _SIZES[dec], tokens, **_SINGLE_STAGE_VQ),
        description=f"TiTok-{(enc + dec).upper()}-{tokens} VQ: {_SIZES[enc]} encoder, {_SIZES[dec]} decoder, "
                    f"{tokens} tokens from an 8192-code codebook per 256x256 image; single-stage (ImageNet).",
        license="Apache-2.0", paper=_TITOK_PAPER, converter=convert_official_titok,
        source=WeightSource(f"yucornetto/tokenizer_titok_{enc}{dec}{tokens}_vq8k_imagenet", "model.safetensors"),
    )

# single-stage VAE: 16-channel continuous tokens (Tokens.latents holds the posterior mode)
_SINGLE_STAGE_VAE = dict(bottleneck="vae", token_dim=16, decoder_output="pixels")
for enc, dec, tokens in (("l", "l", 32), ("b", "l", 64), ("b", "l", 128)):
    register(
        f"titok-{enc}{dec}-{tokens}-vae", TiTok, titok_config(_SIZES[enc], _SIZES[dec], tokens, **_SINGLE_STAGE_VAE),
        description=f"TiTok-{(enc + dec).upper()}-{tokens} VAE: {tokens} continuous 16-channel tokens per 256x256 "
                    "image (the posterior mode); single-stage (ImageNet).",
        license="Apache-2.0", paper=_TITOK_PAPER, converter=convert_official_titok,
        source=WeightSource(f"yucornetto/tokenizer_titok_{enc}{dec}{tokens}_vae_c16_imagenet", "model.safetensors"),
    )

for size in ("s", "b", "l"):
    register(
        f"onedpiece-{size}-256", OneDPiece, onedpiece_config(_SIZES[size], 256, **_TWO_STAGE),
        description=f"One-D-Piece-{size.upper()}-256: up to 256 tokens (4096 codes) per 256x256 image, trained "
                    "with tail token drop so that any prefix decodes; encode(x, num_tokens=k) (ImageNet).",
        license="Apache-2.0", paper=_ONEDPIECE_PAPER, converter=convert_official_titok,
        source=WeightSource(f"turing-motors/One-D-Piece-{size.upper()}-256", "pytorch_model.bin"),
    )
