"""TiTok and One-D-Piece through the official code (bytedance/1d-tokenizer, modeling/titok.py).

One-D-Piece's release (turingmotors/One-D-Piece) is a fork of the same code: its OneDPiece class is
TiTok with tail token drop applied in training and a `length` argument on decode; at inference on
full-length codes it runs 1d-tokenizer's TiTok computation, so the 1d-tokenizer checkout serves both
(a One-D-Piece checkout has the same modeling/titok.py entry point).

Weights: our state dict renamed with zoo.hub.image_titok's key map (the converter's inverse), our
Linear token projections reshaped to the official 1x1 convs. Official calls as in its examples:
`encode(x)` (codes: result["min_encoding_indices"]; VAE: the posterior's mean, the token we encode)
and `decode_tokens(codes)` clamped to [0, 1] as its demo does.

Shim: when `accelerate` is not installed, a stand-in gives its `gather` (the official quantizer
imports it for multi-GPU training only).
"""
from __future__ import annotations

import torch
from einops import rearrange

from zoo.errors import TokenizerError
from zoo.eval.official import OfficialAdapter, OfficialCode, locate, official_imports
from zoo.hub.image_titok import CODEBOOK_STATISTICS, official_key_map, official_shapes
from zoo.models.image.titok import VIT_SIZES

CODE = OfficialCode("TiTok / One-D-Piece", "ZOO_OFFICIAL_TITOK", "modeling/titok.py",
                    "https://github.com/bytedance/1d-tokenizer", None, ("omegaconf", "einops", "huggingface_hub"))

# imported by the official quantizer for distributed training only
STUBS = {"accelerate": {}, "accelerate.utils": {}, "accelerate.utils.operations": {"gather": lambda tensor: tensor}}

# the MaskGIT-VQGAN pixel decoder the official two-stage model builds, fixed in its code
_OFFICIAL_PIXEL_DECODER = dict(proxy_codebook_size=1024, proxy_code_dim=256, pixel_decoder_channels=128,
                               pixel_decoder_channel_mult=(1, 1, 2, 2, 4), pixel_decoder_res_blocks=2)


def official_code(architecture: str) -> OfficialCode:
    """Where the official code of `architecture` ("titok" or "onedpiece") comes from."""
    return CODE


def _size_name(width: int, depth: int, heads: int, part: str) -> str:
    for name, sizes in VIT_SIZES.items():
        if sizes == (width, depth, heads):
            return name
    raise TokenizerError(f"the official TiTok code builds only the {'/'.join(VIT_SIZES)} ViTs {dict(VIT_SIZES)}; this "
                         f"model's {part} is (width, depth, heads) = {(width, depth, heads)}.")


def official_config(config) -> dict:
    """The official code's config (OmegaConf-style nested dict) for our TiTok / One-D-Piece config."""
    two_stage = config.decoder_output == "proxy_codes"
    if config.latent_reshape_without_permute != two_stage:
        raise TokenizerError("the official TiTok code ties the legacy reshape to the proxy-code decoder (is_legacy); "
                             f"this config has latent_reshape_without_permute={config.latent_reshape_without_permute} "
                             f"with decoder_output {config.decoder_output!r}.")
    if two_stage and config.bottleneck != "vq":
        raise TokenizerError("the official two-stage TiTok has a VQ bottleneck only.")
    fixed = {**_OFFICIAL_PIXEL_DECODER, "mlp_ratio": 4.0} if two_stage else {"mlp_ratio": 4.0}
    other = {k: getattr(config, k) for k, v in fixed.items() if getattr(config, k) != v}
    if other:
        raise TokenizerError(f"the official TiTok code fixes {fixed}; this config has {other}.")
    vq_model = dict(
        codebook_size=config.codebook_size, token_size=config.token_dim, commitment_cost=0.25,
        use_l2_norm=config.codebook_distance == "cosine",
        vit_enc_model_size=_size_name(config.encoder_width, config.encoder_depth, config.encoder_heads, "encoder"),
        vit_dec_model_size=_size_name(config.decoder_width, config.decoder_depth, config.decoder_heads, "decoder"),
        vit_enc_patch_size=config.patch_size, vit_dec_patch_size=config.patch_size,
        num_latent_tokens=config.num_tokens, finetune_decoder=two_stage, quantize_mode=config.bottleneck,
        is_legacy=config.latent_reshape_without_permute)
    return {"model": {"vq_model": vq_model}, "dataset": {"preprocessing": {"crop_size": config.image_size}}}


def official_state(model) -> dict[str, torch.Tensor]:
    """Our model's weights in the official layout (convert_official_titok's inverse; the codebook's EMA
    statistics, which the official quantizer does not have, are left out)."""
    ours = model.state_dict()
    shapes = official_shapes(model.config, ours)
    return {official: ours[key].detach().reshape(shapes[official]).clone()
            for key, official in official_key_map(model.config, ours).items() if key not in CODEBOOK_STATISTICS}


class TiTokAdapter(OfficialAdapter):
    """The official TiTok with our weights."""

    code = CODE

    def __init__(self, official: torch.nn.Module, vae: bool):
        self.official, self.vae = official, vae

    @torch.no_grad()
    def encode(self, x):
        """(z_quantized, result): the official TiTok.encode."""
        return self.official.encode(x)

    @torch.no_grad()
    def decode(self, encoded):
        """Images in [0, 1] from official-format codes (B, 1, N) or VAE tokens (B, C, 1, N)."""
        return self.official.decode_tokens(encoded).clamp(0.0, 1.0)

    def from_tokens(self, tokens):
        """Our codes (B, N) as (B, 1, N), or our latents (B, N, C) as (B, C, 1, N)."""
        if self.vae:
            return rearrange(tokens.latents, "b n c -> b c 1 n").contiguous()
        return tokens.codes[:, None]  # (B, 1, N), as the official encode gives them

    def codes(self, encoded):
        """The official nearest codes as (B, N); None for the VAE."""
        return None if self.vae else encoded[1]["min_encoding_indices"].reshape(encoded[0].shape[0], -1)

    def latents(self, encoded):
        """The official posterior mean as (B, N, C) (the VAE's token); None for VQ models."""
        return rearrange(encoded[1].mean, "b c 1 n -> b n c") if self.vae else None


def build(model, code: OfficialCode, official_path, device: str) -> TiTokAdapter:
    """The official TiTok (or One-D-Piece) for `model`'s config, holding `model`'s weights, on `device`."""
    root, scope = locate(code, official_path)
    config = official_config(model.config)
    with official_imports(root, scope, code, STUBS):
        from modeling.titok import TiTok as OfficialTiTok

        official = OfficialTiTok(config)
    missing, unexpected = official.load_state_dict(official_state(model), strict=False)
    if missing or unexpected:
        raise TokenizerError(f"the official TiTok at {root} does not take our weights (missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}); is it another revision of the code?")
    return TiTokAdapter(official.to(device).eval(), vae=model.config.bottleneck == "vae")
