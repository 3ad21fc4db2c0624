"""ALIT: registered names, the official checkpoint reader and the converter from the official key layout
(ShivamDuggal4/adaptive-length-tokenizer, `adaptive_tokenizers.adaptive_vqgan` / `adaptive_vae`
`AdaptiveLengthImageTokenizer`, built by `alit_small`, `alit_base` or `alit_semilarge`).

The released .pth files are the official training checkpoints, laid out as KARL's are ({'model', 'ema',
'args': argparse.Namespace, 'epoch', 'optimizer', ...}) and read by KARL's reader
(zoo.hub.image_karl.read_official_checkpoint: weights_only=True, argparse.Namespace allowed, the EMA
weights preferred, as the official evaluation loads them). They are published on Dropbox, not on the
Hugging Face hub: download one and pass it, `zoo.load(NAME, checkpoint=PATH)`.

Official layout -> ours:
  patch_embed, encoder_class_embedding, encoder_positional_embedding (h*w + 1, W), encoder_mask_token,
  latent_tokens, latent_token_positional_embedding, timestep_embedding (8, 32, W)
      -> encoder.{patch_embed, class_embedding, position_embedding, mask_token, latent_tokens,
         latent_positions, rollout_embedding}
  encoder_ln_pre, encoder_ln_recursive, encoder_ln_post, pre_quantizer_mlp
      -> encoder.{norm_pre, norm_recursive, norm_post, to_token}
  encoder.transformer.{i}.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}
      -> encoder.transformer.blocks.{i}.{norm1, attn.*, norm2, mlp.fc1, mlp.fc2} (the decoder's alike)
  decoder_class_embedding, decoder_mask_token, decoder_positional_embedding
      -> decoder.{class_embedding, mask_token, position_embedding}
  decoder.{decoder_embed, latent_token_positional_embedding (256, W), ln_pre, ln_post, ffn.{0,2}}
      -> decoder.{token_embed, token_positions, norm_pre, norm_post, head.{0,2}}
  quantize.embedding.weight (4096, 12) -> quantizer.codebook (l2-normalized; quantized releases only)
  base_tokenizer.{vqgan, vae}.* -> vqgan_encoder / vqgan_decoder / vae, as for KARL (the same bases).
Training-only tensors are dropped: the full-finetuning stage's discriminators and LPIPS (gan_losses.*).
Every release factorizes its tokens (`factorize_latent`: the 12-channel bottleneck); the unfactorized
layout (the decoder reading the encoder's width) is not supported.

sha256 of the released files: none recorded (they could not be downloaded where this was written).
"""
from __future__ import annotations

from pathlib import Path

import torch

from zoo.hub.image_karl import (BASE_TOKENIZER_KEYS, read_official_checkpoint, refuse_other_variant, renamed_keys,
                                renamed_shapes)
from zoo.hub.image_titok import OPENAI_VIT_BLOCK_KEYS, renamed_official_state, with_codebook_statistics
from zoo.hub.registry import register
from zoo.models.image.alit import ALIT, ALITConfig

StateDict = dict[str, torch.Tensor]
PAPER = "Adaptive Length Image Tokenization via Recurrent Allocation (Duggal et al., ICLR 2025), arXiv:2411.02393"
LICENSE = ("unknown: ShivamDuggal4/adaptive-length-tokenizer states no licence (no LICENSE file); its base VQGAN "
           "and VAE come from LTH14/mage and LTH14/mar, both MIT")
TRAINING_ONLY = ("gan_losses.",)
# the official model sizes (adaptive_tokenizers/__init__.py): name -> (width, layers, heads), both sides
SIZES = {"alit_small": (1024, 8, 8), "alit_base": (768, 12, 12), "alit_semilarge": (1024, 16, 16)}

# (our key pattern, official replacement), applied in order to our key names
_OUR_TO_OFFICIAL = [
    (r"^encoder\.patch_embed\.", "patch_embed."),
    (r"^encoder\.class_embedding$", "encoder_class_embedding"),
    (r"^encoder\.position_embedding$", "encoder_positional_embedding"),
    (r"^encoder\.mask_token$", "encoder_mask_token"),
    (r"^encoder\.latent_tokens$", "latent_tokens"),
    (r"^encoder\.latent_positions$", "latent_token_positional_embedding"),
    (r"^encoder\.rollout_embedding$", "timestep_embedding"),
    (r"^encoder\.norm_pre\.", "encoder_ln_pre."),
    (r"^encoder\.norm_recursive\.", "encoder_ln_recursive."),
    (r"^encoder\.norm_post\.", "encoder_ln_post."),
    (r"^encoder\.to_token\.", "pre_quantizer_mlp."),
    (r"^decoder\.class_embedding$", "decoder_class_embedding"),
    (r"^decoder\.mask_token$", "decoder_mask_token"),
    (r"^decoder\.position_embedding$", "decoder_positional_embedding"),
    (r"^decoder\.token_embed\.", "decoder.decoder_embed."),
    (r"^decoder\.token_positions$", "decoder.latent_token_positional_embedding"),
    (r"^decoder\.norm_pre\.", "decoder.ln_pre."),
    (r"^decoder\.norm_post\.", "decoder.ln_post."),
    (r"^decoder\.head\.", "decoder.ffn."),
    *OPENAI_VIT_BLOCK_KEYS,
    (r"^quantizer\.codebook$", "quantize.embedding.weight"),
    *BASE_TOKENIZER_KEYS,
]


def _meta_model(config: ALITConfig) -> ALIT:
    with torch.device("meta"):
        return ALIT(config)


def official_key_map(config: ALITConfig, expected: StateDict | None = None) -> dict[str, str]:
    """Our key -> official key, for every tensor of the official layout (our codebook's EMA statistics
    left out). `expected`: our state dict for `config` (shapes only), when the caller has it already."""
    expected = _meta_model(config).state_dict() if expected is None else expected
    return renamed_keys(expected, _OUR_TO_OFFICIAL, len(config.vae_block_channels))


def official_shapes(config: ALITConfig, expected: StateDict | None = None) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape, as the official code builds the model for `config`."""
    expected = _meta_model(config).state_dict() if expected is None else expected
    return renamed_shapes(official_key_map(config, expected), expected)


def convert_official_alit(state: StateDict, config: ALITConfig) -> StateDict:
    """An official ALIT state dict ('model' or 'ema' of a release) -> ours; the l2-normalized codebook is
    stored normalized, which is what the official quantizer looks up."""
    expected = _meta_model(config).state_dict()
    ours = renamed_official_state(state, official_key_map(config, expected), official_shapes(config, expected),
                                  expected, "ALIT", "another ALIT size or variant", dropped=TRAINING_ONLY)
    return with_codebook_statistics(ours, expected, normalize=True) if config.quantize else ours


def model_name(config: ALITConfig) -> str | None:
    """The official model name (`--model`) of `config`'s sizes, None for sizes of no release."""
    sizes = (config.encoder_width, config.encoder_depth, config.encoder_heads)
    same = sizes == (config.decoder_width, config.decoder_depth, config.decoder_heads)
    return next((name for name, s in SIZES.items() if same and s == sizes), None)


def check_official_args(args: dict, config: ALITConfig, source: str) -> None:
    """Refuse training arguments naming another base tokenizer, latent quantization or model size than
    `config`, or unfactorized tokens (arguments a file does not carry are not checked)."""
    wanted = {"base_tokenizer": config.base_tokenizer, "quantize_latent": config.quantize}
    if model_name(config) is not None:
        wanted["model"] = model_name(config)
    if not config.quantize:  # quantized releases factorize whatever the flag says
        wanted["factorize_latent"] = True
    refuse_other_variant(args, wanted, source, "ALIT", "alit-*")


def load_official_alit(path: str | Path, config: ALITConfig) -> ALIT:
    """An official ALIT checkpoint (its EMA weights) as our ALIT of `config`, in eval mode."""
    from zoo.io import load_state_dict_checked

    checkpoint = read_official_checkpoint(path, family="ALIT")
    check_official_args(checkpoint.args, config, str(path))
    model = ALIT(config)
    load_state_dict_checked(model, convert_official_alit(checkpoint.weights, config),
                            source=f"{path} ({checkpoint.part})")
    return model.eval()


def _official_loader(config: ALITConfig):
    def load(path: Path) -> ALIT:
        return load_official_alit(path, config)

    return load


# ---- registrations ----------------------------------------------------------------------------

_DROPBOX = "https://www.dropbox.com/scl/fi/"
for name, size, base, quantize, data, link in (
    ("alit-small-vqgan-in1k", "alit_small", "vqgan", True, "ImageNet-1k",
     "u8jyro5wysttp5mvs6gir/alit_vqgan_small_quantized_latent.pth?rlkey=1py1s9755gjhdyw5ifd9h2wff&st=swdbevjk&dl=0"),
    ("alit-small-vqgan-in100", "alit_small", "vqgan", True, "ImageNet-100",
     "iszluhiop09z3afo2gw5f/alit_small_vqgan_quantized_latents.pth?rlkey=klt0zgeunb60l1snuzhjdzdq2&st=zgwzgc2r&dl=0"),
    ("alit-base-vqgan-in100", "alit_base", "vqgan", True, "ImageNet-100",
     "6cygifz37knpqtkxgfj81/alit_base_vqgan_quantized_latents.pth?rlkey=r8hn0d4d8j8eg2wjorzl9c67s&st=c5iv7wor&dl=0"),
    ("alit-semilarge-vqgan-in100", "alit_semilarge", "vqgan", True, "ImageNet-100",
     "wcp7s6w86slh1yy4m3egc/alit_semilarge_vqgan_quantized_latents.pth?rlkey=cf2s13c6ah3ru4ly9tb911gi7&st=d11uoq0i"
     "&dl=0"),
    ("alit-small-vqgan-continuous-in100", "alit_small", "vqgan", False, "ImageNet-100",
     "twbxjch2hutxjsy3sd85y/alit_small_vqgan_continuous_latents.pth?rlkey=68ycbjp6upkrxt22w5rm58cjv&st=5nyk6uvu"
     "&dl=0"),
    ("alit-small-vae-in100", "alit_small", "vae", True, "ImageNet-100",
     "svykasoyyoapfzlghjuz2/alit_small_vae_quantized_latents.pth?rlkey=dtvyj74zq593zc7c63miwkhs3&st=dwm9w2sp&dl=0"),
    ("alit-small-vae-continuous-in100", "alit_small", "vae", False, "ImageNet-100",
     "bq2yzr7dufvrpnycb856b/alit_small_vae_continuous_latents.pth?rlkey=hjx6jpr6vvfzhtgkp1cc1rnrs&st=4aa1vyh9&dl=0"),
):
    width, depth, heads = SIZES[size]
    config = ALITConfig(base_tokenizer=base, quantize=quantize, encoder_width=width, encoder_depth=depth,
                        encoder_heads=heads, decoder_width=width, decoder_depth=depth, decoder_heads=heads)
    tokens = "tokens from a 4096-code l2-normalized codebook" if quantize else "continuous 12-channel tokens"
    over = "MAGE's VQGAN (f16, 1024 codes)" if base == "vqgan" else "MAR's KL-16 VAE (16 channels)"
    register(
        name, ALIT, config,
        description=f"ALIT {size.removeprefix('alit_')} over {over}, trained on {data}: 32 to 256 {tokens} per "
                    "256x256 image, 32 more at each recurrent rollout; encode(x, num_tokens=k) for k / 32 rollouts, "
                    "or encode(x, quality=0.05) for the fewest that reach a target error (mean absolute error per "
                    "pixel), searched linearly or by bisection.",
        license=LICENSE, paper=PAPER, download_page=_DROPBOX + link, official_loader=_official_loader(config),
    )
