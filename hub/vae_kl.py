"""diffusers' AutoencoderKL checkpoints (config.json + diffusion_pytorch_model.safetensors) as our
`zoo.blocks.vae_kl.KLAutoencoder`: the config read as data, the keys renamed both ways.

diffusers layout -> ours:
  {encoder,decoder}.conv_in / conv_norm_out / conv_out   -> conv_in / norm_out / conv_out
  encoder.down_blocks.i.resnets.j.{norm1,conv1,norm2,conv2,conv_shortcut} -> encoder.down.i.blocks.j.{..., shortcut}
  encoder.down_blocks.i.downsamplers.0.conv               -> encoder.down.i.resample_conv
  decoder.up_blocks.i.resnets.j / upsamplers.0.conv       -> decoder.up.i.blocks.j / resample_conv
  *.mid_block.resnets.{0,1}                               -> *.mid.resnet{1,2}
  *.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}  -> *.mid.attention.{norm,to_q,to_k,to_v,to_out}
      (older files: query / key / value / proj_attn, some with (C, C, 1, 1) conv-shaped weights)
  quant_conv / post_quant_conv                            -> the same
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from zoo.blocks.vae_kl import KLAutoencoder
from zoo.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

# (diffusers pattern, our replacement), applied in order
_TO_OURS = [
    (r"\.down_blocks\.(\d+)\.resnets\.", r".down.\1.blocks."),
    (r"\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r".down.\1.resample_conv."),
    (r"\.up_blocks\.(\d+)\.resnets\.", r".up.\1.blocks."),
    (r"\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.", r".up.\1.resample_conv."),
    (r"\.mid_block\.resnets\.0\.", ".mid.resnet1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.resnet2."),
    (r"\.mid_block\.attentions\.0\.group_norm\.", ".mid.attention.norm."),
    (r"\.mid_block\.attentions\.0\.(?:to_q|query)\.", ".mid.attention.to_q."),
    (r"\.mid_block\.attentions\.0\.(?:to_k|key)\.", ".mid.attention.to_k."),
    (r"\.mid_block\.attentions\.0\.(?:to_v|value)\.", ".mid.attention.to_v."),
    (r"\.mid_block\.attentions\.0\.(?:to_out\.0|proj_attn)\.", ".mid.attention.to_out."),
    (r"\.conv_shortcut\.", ".shortcut."),
    (r"\.conv_norm_out\.", ".norm_out."),
]
_TO_DIFFUSERS = [
    (r"\.down\.(\d+)\.blocks\.", r".down_blocks.\1.resnets."),
    (r"\.down\.(\d+)\.resample_conv\.", r".down_blocks.\1.downsamplers.0.conv."),
    (r"\.up\.(\d+)\.blocks\.", r".up_blocks.\1.resnets."),
    (r"\.up\.(\d+)\.resample_conv\.", r".up_blocks.\1.upsamplers.0.conv."),
    (r"\.mid\.resnet1\.", ".mid_block.resnets.0."),
    (r"\.mid\.resnet2\.", ".mid_block.resnets.1."),
    (r"\.mid\.attention\.norm\.", ".mid_block.attentions.0.group_norm."),
    (r"\.mid\.attention\.to_out\.", ".mid_block.attentions.0.to_out.0."),
    (r"\.mid\.attention\.to_([qkv])\.", r".mid_block.attentions.0.to_\1."),
    (r"\.shortcut\.", ".conv_shortcut."),
    (r"\.norm_out\.", ".conv_norm_out."),
]
_SUPPORTED_BLOCKS = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}


def _rename(key: str, table) -> str:
    for pattern, replacement in table:
        key = re.sub(pattern, replacement, key)
    return key


def diffusers_to_ours(state: StateDict) -> StateDict:
    """diffusers AutoencoderKL state dict -> ours (attention weights stored as 1x1 convs are flattened)."""
    out = {}
    for key, value in state.items():
        ours = _rename(key, _TO_OURS)
        if ".mid.attention.to_" in ours and ours.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[ours] = value
    return out


def ours_to_diffusers(state: StateDict) -> StateDict:
    """Our KLAutoencoder state dict -> diffusers' current AutoencoderKL names."""
    return {_rename(key, _TO_DIFFUSERS): value for key, value in state.items()}


def vae_config_from_diffusers(config: dict) -> dict:
    """Our KLAutoencoder arguments (plus `scaling_factor`) from a diffusers AutoencoderKL config.json."""
    if not isinstance(config, dict) or config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise CheckpointError(f"the VAE config is not an AutoencoderKL config (_class_name "
                              f"{config.get('_class_name') if isinstance(config, dict) else type(config).__name__!r}).")
    for field, supported in _SUPPORTED_BLOCKS.items():
        kinds = set(config.get(field, [supported]))
        if kinds != {supported}:
            raise CheckpointError(f"the VAE config has {field} {sorted(kinds)}; only {supported} is supported.")
    for field in ("shift_factor", "latents_mean", "latents_std"):  # latent normalizations beyond one scale
        if config.get(field) is not None:
            raise CheckpointError(f"the VAE config sets {field}; only a scaling_factor is supported.")
    if config.get("act_fn", "silu") != "silu":
        raise CheckpointError(f"the VAE config has act_fn {config.get('act_fn')!r}; only 'silu' is supported.")
    channels = tuple(int(c) for c in config.get("block_out_channels", (64,)))
    return dict(
        in_channels=int(config.get("in_channels", 3)), out_channels=int(config.get("out_channels", 3)),
        latent_channels=int(config.get("latent_channels", 4)), block_channels=channels,
        layers_per_block=int(config.get("layers_per_block", 1)), norm_groups=int(config.get("norm_num_groups", 32)),
        mid_attention=bool(config.get("mid_block_add_attention", True)),
        use_quant_conv=bool(config.get("use_quant_conv", True)),
        use_post_quant_conv=bool(config.get("use_post_quant_conv", True)),
        scaling_factor=float(config.get("scaling_factor", 0.18215)),
    )


def load_diffusers_vae(folder: str | Path) -> tuple[KLAutoencoder, float]:
    """(our VAE with the folder's weights, its scaling factor) from a diffusers AutoencoderKL folder."""
    from zoo.io import load_state_dict_checked, read_safetensors

    folder = Path(folder)
    config_path, weights = folder / "config.json", folder / "diffusion_pytorch_model.safetensors"
    for path in (config_path, weights):
        if not path.is_file():
            raise CheckpointError(f"{folder} has no {path.name}; pass a diffusers AutoencoderKL folder.")
    try:
        args = vae_config_from_diffusers(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path} is not valid JSON ({e}).") from None
    scaling = args.pop("scaling_factor")
    model = KLAutoencoder(**args)
    state, _ = read_safetensors(weights)
    load_state_dict_checked(model, diffusers_to_ours(state), source=str(weights))
    return model.eval(), scaling
