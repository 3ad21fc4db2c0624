"""KARL: registered names, the official checkpoint reader and the converter from the official key layout
(ShivamDuggal4/karl, `kolmogorov_tokenizers.karl_vqgan` / `karl_vae` built by `karl_small`).

The released .pth files are the official training checkpoints: {'model': state dict, 'ema': state dict,
'args': argparse.Namespace of the training arguments, 'epoch', 'optimizer', ...}. They are read with
weights_only=True, allowing argparse.Namespace and nothing else beyond tensors and plain values; the
arguments are read as data (the base tokenizer and the latent quantization they name must be the
registered model's), and the EMA weights are preferred over 'model'. They are published on Dropbox,
not on the Hugging Face hub: download one and pass it, `zoo.load(NAME, checkpoint=PATH)`.

Official layout -> ours:
  patch_embed, latent_tokens, rec_loss_embeddings, encoder_positional_embedding (W, 64, 64)
                                       -> encoder.{patch_embed, latent_tokens, quality_embeddings, position_grid}
  encoder_ln_pre, encoder.transformer.{i}.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}
      -> encoder.{norm_pre, transformer.blocks.{i}.{norm1, attn.*, norm2, mlp.fc1, mlp.fc2}}
  encoder_ln_post_halt, halting_mlp.{0,2}, encoder_ln_post, pre_quantizer_mlp
                                       -> encoder.{halting_norm, halting_head.{0,2}, token_norm, to_token}
  quantize.embedding.weight (4096, 12) -> quantizer.codebook (l2-normalized; quantized releases only)
  decoder_embed, decoder_latent_tokens_timestep_embed, decoder_mask_token, decoder_positional_embedding
                                       -> decoder.{token_embed, token_positions, mask_token, position_grid}
  decoder.{ln_pre, transformer.{i}..., ln_post, ffn.{0,2}}
                                       -> decoder.{norm_pre, transformer.blocks.{i}..., norm_post, head.{0,2}}
  base_tokenizer.vqgan.encoder.{conv_in, down.{i}.block.{j}, mid.block_{1,2}, norm_out, conv_out}
                                       -> vqgan_encoder.{conv_in, down.{i}.blocks.{j}, mid.{0,1}, norm_out, conv_out}
  base_tokenizer.vqgan.decoder.{conv_in, mid.block_{1,2}, up.{i}.block.{j}, up.{i}.upsample.conv, norm_out, conv_out}
                                       -> vqgan_decoder.decoder.{conv_in, mid.{0,1}, up.{i}.blocks.{j}, up.{i}.upsample_conv, ...}
      (resnet blocks' nin_shortcut -> output_shortcut)
  base_tokenizer.vqgan.quantize.embedding.weight (1024, 256) -> vqgan_decoder.codebook.weight
  base_tokenizer.vae.{encoder, decoder, quant_conv, post_quant_conv} (LDM's names, MAR's KL-16)
                                       -> vae.* (zoo.blocks.vae_kl): block.{j} -> blocks.{j}, nin_shortcut -> shortcut,
      downsample.conv / upsample.conv -> resample_conv, mid.block_{1,2} / attn_1 -> mid.resnet{1,2} / attention,
      encoder.down.{i}.attn.{j} -> encoder.down.{i}.attentions.{j}, attention q / k / v / proj_out (1x1 convs)
      -> to_q / to_k / to_v / to_out (linear), and the decoder's levels in reverse order (LDM's up.{i} works
      at level i, ours up.{i} is the i-th run).
Training-only tensors are dropped: the full-finetuning stage's discriminators and LPIPS (gan_losses.*).

sha256 of the released files: none recorded (they could not be downloaded where this was written).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import NamedTuple

import torch

from zoo.errors import CheckpointError
from zoo.hub.image_titok import (CODEBOOK_STATISTICS, OPENAI_VIT_BLOCK_KEYS, renamed_official_state,
                                 with_codebook_statistics)
from zoo.hub.registry import register
from zoo.models.image.karl import KARL, KARLConfig

StateDict = dict[str, torch.Tensor]
PAPER = ("Single-pass Adaptive Image Tokenization for Minimum Program Search (Duggal et al., 2025), "
         "arXiv:2507.07995")
LICENSE = ("unknown: ShivamDuggal4/karl states no licence (no LICENSE file); its base VQGAN and VAE come from "
           "LTH14/mage and LTH14/mar, both MIT")
TRAINING_ONLY = ("gan_losses.",)

# (our key pattern, official replacement), applied in order to our key names
_OUR_TO_OFFICIAL = [
    (r"^encoder\.patch_embed\.", "patch_embed."),
    (r"^encoder\.latent_tokens$", "latent_tokens"),
    (r"^encoder\.quality_embeddings$", "rec_loss_embeddings"),
    (r"^encoder\.position_grid$", "encoder_positional_embedding"),
    (r"^encoder\.norm_pre\.", "encoder_ln_pre."),
    (r"^encoder\.halting_norm\.", "encoder_ln_post_halt."),
    (r"^encoder\.halting_head\.", "halting_mlp."),
    (r"^encoder\.token_norm\.", "encoder_ln_post."),
    (r"^encoder\.to_token\.", "pre_quantizer_mlp."),
    (r"^decoder\.token_embed\.", "decoder_embed."),
    (r"^decoder\.token_positions$", "decoder_latent_tokens_timestep_embed"),
    (r"^decoder\.mask_token$", "decoder_mask_token"),
    (r"^decoder\.position_grid$", "decoder_positional_embedding"),
    (r"^decoder\.norm_pre\.", "decoder.ln_pre."),
    (r"^decoder\.norm_post\.", "decoder.ln_post."),
    (r"^decoder\.head\.", "decoder.ffn."),
    *OPENAI_VIT_BLOCK_KEYS,
    (r"^quantizer\.codebook$", "quantize.embedding.weight"),
]
# the base tokenizers' modules (KARL's and ALIT's alike): ours -> the official base_tokenizer.*
BASE_TOKENIZER_KEYS = [
    # the VQGAN
    (r"^vqgan_decoder\.codebook\.weight$", "base_tokenizer.vqgan.quantize.embedding.weight"),
    (r"^vqgan_decoder\.decoder\.", "base_tokenizer.vqgan.decoder."),
    (r"^vqgan_encoder\.", "base_tokenizer.vqgan.encoder."),
    (r"^(base_tokenizer\.vqgan\.\w+)\.mid\.(\d+)\.", lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}."),
    (r"\.(down|up)\.(\d+)\.blocks\.", r".\1.\2.block."),
    (r"\.up\.(\d+)\.upsample_conv\.", r".up.\1.upsample.conv."),
    (r"\.output_shortcut\.", ".nin_shortcut."),
    # the VAE (LDM's names; the decoder's level order is reversed by official_key_map)
    (r"^vae\.", "base_tokenizer.vae."),
    (r"\.down\.(\d+)\.attentions\.", r".down.\1.attn."),
    (r"\.down\.(\d+)\.resample_conv\.", r".down.\1.downsample.conv."),
    (r"\.up\.(\d+)\.resample_conv\.", r".up.\1.upsample.conv."),
    (r"\.mid\.resnet1\.", ".mid.block_1."),
    (r"\.mid\.resnet2\.", ".mid.block_2."),
    (r"\.mid\.attention\.", ".mid.attn_1."),
    (r"\.shortcut\.", ".nin_shortcut."),
    (r"(\.attn(?:_1|\.\d+))\.to_([qkv])\.", r"\1.\2."),
    (r"(\.attn(?:_1|\.\d+))\.to_out\.", r"\1.proj_out."),
]
_LDM_DECODER_LEVEL = re.compile(r"^base_tokenizer\.vae\.decoder\.up\.(\d+)\.")
_ATTENTION_WEIGHT = re.compile(r"^base_tokenizer\.vae\..*\.attn(?:_1|\.\d+)\.(q|k|v|proj_out)\.weight$")


def _meta_model(config: KARLConfig) -> KARL:
    with torch.device("meta"):
        return KARL(config)


def renamed_keys(expected: StateDict, table, vae_levels: int) -> dict[str, str]:
    """Our key -> official key for every key of `expected` but the codebook's EMA statistics (which the
    official quantizer does not have): `table`'s (pattern, replacement) pairs in order, then the LDM VAE
    decoder's levels reversed (`vae_levels` of them)."""
    mapping = {}
    for ours in expected:
        if ours in CODEBOOK_STATISTICS:  # our codebook's EMA statistics: not in the official file
            continue
        official = ours
        for pattern, replacement in table:
            official = re.sub(pattern, replacement, official)
        official = _LDM_DECODER_LEVEL.sub(lambda m: f"base_tokenizer.vae.decoder.up.{vae_levels - 1 - int(m.group(1))}.",
                                          official)
        mapping[ours] = official
    return mapping


def renamed_shapes(mapping: dict[str, str], expected: StateDict) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape for `mapping` (ours -> official): ours, but the VAE attention's 1x1 convs."""
    shapes = {}
    for ours, official in mapping.items():
        shape = tuple(expected[ours].shape)
        shapes[official] = shape + (1, 1) if _ATTENTION_WEIGHT.match(official) else shape  # theirs 1x1 convs
    return shapes


def official_key_map(config: KARLConfig, expected: StateDict | None = None) -> dict[str, str]:
    """Our key -> official key, for every tensor of the official layout (the codebook's EMA statistics,
    which the official quantizer does not have, are left out). `expected`: our state dict for `config`
    (shapes only), when the caller has it already."""
    expected = _meta_model(config).state_dict() if expected is None else expected
    return renamed_keys(expected, _OUR_TO_OFFICIAL + BASE_TOKENIZER_KEYS, len(config.vae_block_channels))


def official_shapes(config: KARLConfig, expected: StateDict | None = None) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape, as the official code builds the model for `config`."""
    expected = _meta_model(config).state_dict() if expected is None else expected
    return renamed_shapes(official_key_map(config, expected), expected)


def convert_official_karl(state: StateDict, config: KARLConfig) -> StateDict:
    """An official KARL state dict ('model' or 'ema' of a release) -> ours. The l2-normalized codebook is
    stored normalized, which is what the official quantizer looks up."""
    expected = _meta_model(config).state_dict()
    ours = renamed_official_state(state, official_key_map(config, expected), official_shapes(config, expected),
                                  expected, "KARL", "another KARL variant or model", dropped=TRAINING_ONLY)
    return with_codebook_statistics(ours, expected, normalize=True) if config.quantize else ours


# ---- reading the official file ---------------------------------------------------------------

class OfficialCheckpoint(NamedTuple):
    """What an official KARL file holds that the zoo reads."""

    weights: StateDict  # the EMA weights when the file has them, else 'model', else the file itself
    part: str           # which of them: "ema", "model" or "state dict"
    args: dict          # the training arguments (argparse.Namespace) as plain values; {} when absent


def _plain(value):
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def read_official_checkpoint(path: str | Path, family: str = "KARL") -> OfficialCheckpoint:
    """An official KARL (or ALIT: `family` names it in the errors) .pth read with weights_only=True,
    argparse.Namespace (its training arguments) being the one class allowed beyond tensors and plain
    containers; safetensors files and folders are read by zoo.io.read_checkpoint."""
    from zoo.io import read_checkpoint

    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return OfficialCheckpoint(read_checkpoint(path), "state dict", {})
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            saved = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} could not be read as PyTorch weights with weights_only=True, argparse.Namespace allowed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the zoo loads tensors and the training "
            "arguments only, never arbitrary pickles.") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} holds a {type(saved).__name__}, not the dictionary of an official {family} checkpoint.")
    args = saved.get("args")
    args = {k: _plain(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace) else {}
    for part in ("ema", "model"):
        if isinstance(saved.get(part), dict):
            weights = saved[part]
            break
    else:
        part, weights = "state dict", saved
    if not weights or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise CheckpointError(f"{path}'s {part!r} is not a flat dictionary of tensors (a state dict).")
    return OfficialCheckpoint(weights, part, args)


def check_official_args(args: dict, config: KARLConfig, source: str) -> None:
    """Refuse training arguments that name another base tokenizer, latent quantization or model size
    than `config` (arguments a file does not carry are not checked)."""
    wanted = {"base_tokenizer": config.base_tokenizer, "quantize_latent": config.quantize, "model": "karl_small"}
    refuse_other_variant(args, wanted, source, "KARL", "karl-*")


def refuse_other_variant(args: dict, wanted: dict, source: str, family: str, names: str) -> None:
    """A CheckpointError when training arguments `args` differ from `wanted` (key -> value) where they
    have the key; `names` is the wildcard of the family's registered names."""
    wrong = [f"{key}={args[key]!r} (this model: {value!r})" for key, value in wanted.items()
             if key in args and args[key] != value]
    if wrong:
        raise CheckpointError(f"{source} was trained with {', '.join(wrong)}; load it with the registered {family} "
                              f"name of that variant (`zoo list '{names}'`).")


def load_official_karl(path: str | Path, config: KARLConfig) -> KARL:
    """An official KARL checkpoint (its EMA weights) as our KARL of `config`, in eval mode."""
    from zoo.io import load_state_dict_checked

    checkpoint = read_official_checkpoint(path)
    check_official_args(checkpoint.args, config, str(path))
    model = KARL(config)
    load_state_dict_checked(model, convert_official_karl(checkpoint.weights, config),
                            source=f"{path} ({checkpoint.part})")
    return model.eval()


def _official_loader(config: KARLConfig):
    def load(path: Path) -> KARL:
        return load_official_karl(path, config)

    return load


# ---- registrations ----------------------------------------------------------------------------

_DROPBOX = "https://www.dropbox.com/scl/fi/"
for name, base, quantize, data, link in (
    ("karl-small-vqgan-in1k", "vqgan", True, "ImageNet-1k",
     "4a2zwpceavl92ij56ja3m/karl_small_vqgan_quantized_latents.pth?rlkey=lc49wt2igsdhzfrqwvl62q30z&st=j3f9up9q&dl=0"),
    ("karl-small-vqgan-in100", "vqgan", True, "ImageNet-100",
     "60plmx9s1jsu5axqb1frj/karl_small_vqgan_quantized_latents.pth?rlkey=v0y3fsureyfijy5m28ba4vpl7&st=haisv8qx&dl=0"),
    ("karl-small-vqgan-continuous-in100", "vqgan", False, "ImageNet-100",
     "ipvxil7ubb41wxs25du5p/karl_small_vqgan_continuous_latents.pth?rlkey=opmua15uarn2yt60yo9j7v5uo&st=bii053ux&dl=0"),
    ("karl-small-vae-in100", "vae", True, "ImageNet-100",
     "gynbn6onb5tm1t8pmca0x/karl_small_vae_quantized_latents.pth?rlkey=93nz1j334ex57myea0qdxu7y5&st=9hjwvyc2&dl=0"),
    ("karl-small-vae-continuous-in100", "vae", False, "ImageNet-100",
     "v5t6trgczpaprvoow58zk/karl_small_vae_continuous_latents.pth?rlkey=0tldlcy8ir0lrectdk1o42tch&st=qzfw7g1h&dl=0"),
):
    config = KARLConfig(base_tokenizer=base, quantize=quantize)
    tokens = "tokens from a 4096-code l2-normalized codebook" if quantize else "continuous 12-channel tokens"
    over = "MAGE's VQGAN (f16, 1024 codes)" if base == "vqgan" else "MAR's KL-16 VAE (16 channels)"
    register(
        name, KARL, config,
        description=f"KARL small over {over}, trained on {data}: 1 to 256 {tokens} per 256x256 image, as many as the "
                    "halting head predicts the image needs for a target error in one pass; "
                    "encode(x, quality=0.05) (mean absolute error per pixel), encode(x, num_tokens=k), or both.",
        license=LICENSE, paper=PAPER, download_page=_DROPBOX + link, official_loader=_official_loader(config),
    )
