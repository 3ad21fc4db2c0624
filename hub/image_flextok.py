"""FlexTok: registered names, the official (apple/ml-flextok) config reader and key converter.

The official checkpoints are hydra configs plus a state dict. The config lives in the repo's
config.json (written by huggingface_hub's mixin, under "config") and, as Python literals, in the
safetensors metadata (one entry per top-level part: vae, encoder, decoder, regularizer, ...).
It is read here as data, never instantiated: each part of the encoder / decoder is found by its
`_target_` class, its arguments become our config's fields, and its name in `module_dict` gives
the official key prefix. Settings our modules do not implement are refused by name.

Official layout (prefixes are module_dict names from the config):
  vae.vae.*                                   diffusers AutoencoderKL (converted by zoo.hub.vae_kl)
  encoder.module_dict.<PatchEmbedder>.patch_proj.{weight,bias}
  encoder.module_dict.<PositionalEmbeddingAdder>.posembs   (1, D, G, G) sincos / (2, 1, D, G) learned
  encoder.module_dict.<Registers1D>.registers              (N, D)
  encoder.module_dict.<FlexTransformer>.blocks.{i}.attn.{wq,wk,wv,proj}.weight, .mlp.{fc1,fc2,fc3}.weight
  encoder.module_dict.<LinearHead>.proj.{weight,bias}
  decoder.module_dict.<LinearLayer>.proj.*, <register PositionalEmbeddingAdder>.posembs (1, 1, D, N),
      <MaskedNestedDropout>.dropout_mask_token, <LearnedNullCond>.nullcond, <PatchEmbedder>.patch_proj.*,
      <patch PositionalEmbeddingAdder>.posembs, <TimestepEmbedder>.mlp.{0,2}.*,
      <FlexTransformer>.blocks.{i}.(... + adaLN_modulation.1.*), <ToPatchesLinearHead>.{adaLN_modulation.1, proj}.*

sha256 of the released files: none recorded (they could not be downloaded where this was written).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import torch

from zoo.errors import CheckpointError
from zoo.hub.registry import WeightSource, register
from zoo.hub.sources import fetch_file
from zoo.hub.vae_kl import diffusers_to_ours, vae_config_from_diffusers
from zoo.models.image.flextok import FlexTok, FlexTokConfig

StateDict = dict[str, torch.Tensor]
LICENSE = ("Apple Machine Learning Research Model License (weights: research use only, no commercial use); "
           "code of the original: Apple Sample Code License")
PAPER = "FlexTok: Resampling Images into 1D Token Sequences of Flexible Length (Bachmann et al., 2025), arXiv:2502.13967"

# diffusers' AutoencoderKL layout every FlexTok VAE uses (ml-flextok's VAE_BASE_CFG)
_VAE_BASE = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32)

# ---- reading the official config ------------------------------------------------------------

def read_official_config(path: str | Path) -> dict:
    """The hydra config of an official checkpoint: from the safetensors metadata, else from the
    config.json beside the weights (huggingface_hub's layout: {"config": {...}} or the dict itself)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / "model.safetensors"
    if weights.suffix == ".safetensors" and weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            metadata = f.metadata() or {}
        if "encoder" in metadata and "decoder" in metadata:
            config = {}
            for key, text in metadata.items():
                try:
                    config[key] = ast.literal_eval(text)  # literals only: never evaluates code
                except (ValueError, SyntaxError):
                    config[key] = text
            return config
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{weights} carries no FlexTok config in its metadata and {config_file} does not exist; "
                              "download the config.json of the official repo next to the weights.")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file} is not valid JSON ({e}).") from None
    config = config.get("config", config) if isinstance(config, dict) else config
    if not isinstance(config, dict) or "encoder" not in config or "decoder" not in config:
        raise CheckpointError(f"{config_file} is not an official FlexTok config (no encoder / decoder parts).")
    return config


def _target(part: dict) -> str:
    return str(part.get("_target_", "")).rsplit(".", 1)[-1]


def _modules(config: dict, side: str) -> dict[str, dict]:
    try:
        modules = config[side]["module_dict"]
    except (KeyError, TypeError):
        raise CheckpointError(f"the FlexTok config has no {side}.module_dict; is it an official FlexTok config?") from None
    return {name: part for name, part in modules.items() if isinstance(part, dict)}


def _one(modules: dict[str, dict], target: str, side: str, where=None) -> tuple[str, dict]:
    found = [(n, p) for n, p in modules.items() if _target(p) == target and (where is None or where(p))]
    if len(found) != 1:
        raise CheckpointError(f"the FlexTok {side} config has {len(found)} {target} modules, expected one; "
                              "this variant is not supported.")
    return found[0]


def _check_order(modules: dict[str, dict], targets: tuple[str, ...], side: str) -> None:
    """The first module of each target class must come in this order (the order the modules run in)."""
    order = [_target(p) for p in modules.values()]
    found = [order.index(t) for t in targets if t in order]
    if found != sorted(found):
        raise CheckpointError(f"the FlexTok {side} runs its modules in the order {order}; the zoo's FlexTok "
                              f"runs {list(targets)} in that order and supports no other.")


def _require(part: dict, key: str, expected, what: str) -> None:
    value = part.get(key, expected)
    if value != expected:
        raise CheckpointError(f"{what} has {key}={value!r}; the zoo's FlexTok supports only {expected!r}.")


def _check_transformer(part: dict, what: str) -> int:
    """Heads of a FlexTransformer config, after refusing settings our blocks do not have."""
    for key, value in (("qkv_bias", False), ("proj_bias", False), ("mlp_bias", False), ("gated_mlp", True),
                       ("qk_norm", True), ("drop", 0.0)):
        _require(part, key, value, what)
    norm = part.get("norm_layer")
    if isinstance(norm, dict) and (norm.get("elementwise_affine", False) or norm.get("bias", False)):
        raise CheckpointError(f"{what} uses LayerNorms with weights; the zoo's FlexTok supports weightless ones only.")
    act = part.get("act_layer")
    if act is not None and "SiLU" not in str(act.get("_target_", act) if isinstance(act, dict) else act):
        raise CheckpointError(f"{what} uses activation {act!r}; the zoo's FlexTok supports SiLU (SwiGLU) only.")
    dim, head_dim = int(part.get("dim", 768)), int(part.get("head_dim", 64))
    return dim // head_dim


def _position_kind(part: dict, what: str) -> str:
    kind = part.get("posemb_type", "sincos")
    _require(part, "posemb_scaling", "absolute", what)
    if kind == "sincos":
        return "sincos"
    if kind == "learnable_sum":
        return "learned"
    raise CheckpointError(f"{what} has posemb_type {kind!r}; the zoo's FlexTok supports 'sincos' and 'learnable_sum'.")


def flextok_config_from_official(config: dict, vae_config: dict | None = None) -> FlexTokConfig:
    """Our FlexTokConfig from an official hydra config (read as data). `vae_config`: the diffusers
    config.json of the VAE, needed only when the FlexTok config names no scaling factor."""
    enc, dec = _modules(config, "encoder"), _modules(config, "decoder")
    vae = config.get("vae") or {}
    _, enc_patch = _one(enc, "PatchEmbedder", "encoder")
    _, enc_pos = _one(enc, "PositionalEmbeddingAdder", "encoder")
    _, registers = _one(enc, "Registers1D", "encoder")
    _, enc_packer = _one(enc, "BlockWiseSequencePacker", "encoder")
    _, enc_trunk = _one(enc, "FlexTransformer", "encoder")
    _, enc_head = _one(enc, "LinearHead", "encoder")
    _, dec_in = _one(dec, "LinearLayer", "decoder")
    _, dec_patch = _one(dec, "PatchEmbedder", "decoder")
    _, dec_pos = _one(dec, "PositionalEmbeddingAdder", "decoder", lambda p: len(p.get("max_sizes", [])) == 2)
    _, dec_packer = _one(dec, "BlockWiseSequencePacker", "decoder")
    _, time = _one(dec, "TimestepEmbedder", "decoder")
    _, dec_trunk = _one(dec, "FlexTransformer", "decoder")
    _, dec_head = _one(dec, "ToPatchesLinearHead", "decoder")
    null = [p for p in dec.values() if _target(p) in ("LearnedNullCond", "ZeroNullCond")]
    if len(null) != 1:
        raise CheckpointError(f"the FlexTok decoder config has {len(null)} null-condition modules, expected one.")
    _check_order(enc, ("PatchEmbedder", "PositionalEmbeddingAdder", "Registers1D", "BlockWiseSequencePacker",
                       "FlexTransformer", "LinearHead"), "encoder")
    # the register positions are added before nested dropout, which comes before the null condition:
    # dropped registers hold the bare mask token, and the null condition replaces everything
    _check_order(dec, ("LinearLayer", "PositionalEmbeddingAdder", "MaskedNestedDropout", _target(null[0]),
                       "PatchEmbedder", "BlockWiseSequencePacker", "FlexTransformer", "ToPatchesLinearHead"), "decoder")
    mask_mode = enc_packer.get("mask_mode", "full")
    if mask_mode not in ("causal_last", "full"):
        raise CheckpointError(f"the encoder's sequence packer has mask_mode {mask_mode!r}; supported: causal_last, full.")
    _require(dec_packer, "mask_mode", "full", "the decoder's sequence packer")
    _require(registers, "ordering_mode", "nested", "the encoder's registers")
    for head, what in ((enc_head, "the encoder's head"), (dec_head, "the decoder's head")):
        _require(head, "use_mup_readout", False, what)
    if "adaLN_emb_read_key" not in dec_trunk or dec_trunk.get("adaLN_emb_read_key") is None:
        raise CheckpointError("the decoder's transformer has no adaLN time conditioning; not a FlexTok flow decoder.")
    patch = list(enc_patch.get("patch_sizes", [2, 2]))
    if len(set(patch)) != 1 or list(dec_patch.get("patch_sizes", patch)) != patch:
        raise CheckpointError(f"FlexTok patch sizes must be square and equal in encoder and decoder, got "
                              f"{patch} and {dec_patch.get('patch_sizes')}.")
    grid = list(enc_pos.get("max_sizes", [16, 16]))
    if len(set(grid)) != 1 or list(dec_pos.get("max_sizes", grid)) != grid:
        raise CheckpointError(f"FlexTok position grids must be square and equal, got {grid} and {dec_pos.get('max_sizes')}.")
    vae_fields = dict(_VAE_BASE)
    scaling = vae.get("scaling_factor")
    if vae_config is not None:
        ours = vae_config_from_diffusers(vae_config)
        vae_fields = dict(block_out_channels=list(ours["block_channels"]), layers_per_block=ours["layers_per_block"],
                          norm_num_groups=ours["norm_groups"])
        scaling = scaling if scaling is not None else ours["scaling_factor"]
    if scaling is None:
        raise CheckpointError("the FlexTok config names no VAE scaling_factor; pass the VAE's config.json "
                              f"(repo {vae.get('hf_hub_path')!r}) as vae_config.")
    levels = tuple(int(v) for v in (config.get("regularizer") or {}).get("levels", ()))
    if not levels:
        raise CheckpointError("the FlexTok config has no regularizer.levels (the FSQ levels).")
    factor = 2 ** (len(vae_fields["block_out_channels"]) - 1)
    return FlexTokConfig(
        image_size=grid[0] * patch[0] * factor,
        vae_latent_channels=int(vae.get("latent_channels", enc_patch.get("channels_in", 16))),
        vae_block_channels=tuple(vae_fields["block_out_channels"]), vae_layers_per_block=vae_fields["layers_per_block"],
        vae_norm_groups=vae_fields["norm_num_groups"], vae_scaling_factor=float(scaling),
        patch_size=patch[0], num_tokens=int(registers["n_max"]), fsq_levels=levels,
        encoder_width=int(enc_trunk.get("dim", 768)), encoder_depth=int(enc_trunk.get("depth", 12)),
        encoder_heads=_check_transformer(enc_trunk, "the encoder's transformer"),
        decoder_width=int(dec_trunk.get("dim", 768)), decoder_depth=int(dec_trunk.get("depth", 12)),
        decoder_heads=_check_transformer(dec_trunk, "the decoder's transformer"),
        mlp_ratio=float(enc_trunk.get("mlp_ratio", 4.0)),
        register_attention="causal" if mask_mode == "causal_last" else "full",
        encoder_patch_position=_position_kind(enc_pos, "the encoder's patch positions"),
        decoder_patch_position=_position_kind(dec_pos, "the decoder's patch positions"),
        position_grid=grid[0],
        null_condition="learned" if _target(null[0]) == "LearnedNullCond" else "zero",
        null_single_token=bool(null[0].get("replace_with_single_token", False)),
        condition_segments=int(dec_trunk.get("adaLN_expansion", 1)),
        time_frequencies=int(time.get("frequency_embedding_size", 256)),
        time_max=float(time.get("max_timestep", 1000.0)),
    )


# ---- converting the state dict --------------------------------------------------------------

def _block_map(official: str, ours: str, depth: int, conditioned: bool) -> dict[str, str]:
    mapping = {}
    for i in range(depth):
        o, u = f"{official}.blocks.{i}", f"{ours}.blocks.{i}"
        for a, b in (("wq", "to_q"), ("wk", "to_k"), ("wv", "to_v"), ("proj", "to_out")):
            mapping[f"{o}.attn.{a}.weight"] = f"{u}.attention.{b}.weight"
        for a, b in (("fc1", "gate_proj"), ("fc3", "up_proj"), ("fc2", "down_proj")):
            mapping[f"{o}.mlp.{a}.weight"] = f"{u}.mlp.{b}.weight"
        if conditioned:
            mapping[f"{o}.adaLN_modulation.1.weight"] = f"{u}.modulation.weight"
            mapping[f"{o}.adaLN_modulation.1.bias"] = f"{u}.modulation.bias"
    return mapping


def _linear(official: str, ours: str) -> dict[str, str]:
    return {f"{official}.weight": f"{ours}.weight", f"{official}.bias": f"{ours}.bias"}


def official_key_map(official_config: dict, config: FlexTokConfig) -> dict[str, str]:
    """Official key -> our key for every FlexTok tensor outside the VAE."""
    enc, dec = _modules(official_config, "encoder"), _modules(official_config, "decoder")
    e, d = "encoder.module_dict", "decoder.module_dict"
    name = lambda modules, target, side, where=None: _one(modules, target, side, where)[0]  # noqa: E731
    reg_pos = name(dec, "PositionalEmbeddingAdder", "decoder", lambda p: len(p.get("max_sizes", [])) == 1)
    mapping = {
        **_linear(f"{e}.{name(enc, 'PatchEmbedder', 'encoder')}.patch_proj", "encoder.patch_embed"),
        f"{e}.{name(enc, 'PositionalEmbeddingAdder', 'encoder')}.posembs": "encoder.position.table",
        f"{e}.{name(enc, 'Registers1D', 'encoder')}.registers": "encoder.registers",
        **_block_map(f"{e}.{name(enc, 'FlexTransformer', 'encoder')}", "encoder.transformer", config.encoder_depth, False),
        **_linear(f"{e}.{name(enc, 'LinearHead', 'encoder')}.proj", "encoder.head"),
        **_linear(f"{d}.{name(dec, 'LinearLayer', 'decoder')}.proj", "decoder.token_embed"),
        f"{d}.{reg_pos}.posembs": "decoder.register_position",
        f"{d}.{name(dec, 'MaskedNestedDropout', 'decoder')}.dropout_mask_token": "decoder.mask_token",
        **_linear(f"{d}.{name(dec, 'PatchEmbedder', 'decoder')}.patch_proj", "decoder.patch_embed"),
        f"{d}.{name(dec, 'PositionalEmbeddingAdder', 'decoder', lambda p: len(p.get('max_sizes', [])) == 2)}.posembs":
            "decoder.position.table",
        **_linear(f"{d}.{name(dec, 'TimestepEmbedder', 'decoder')}.mlp.0", "decoder.time_mlp.0"),
        **_linear(f"{d}.{name(dec, 'TimestepEmbedder', 'decoder')}.mlp.2", "decoder.time_mlp.2"),
        **_block_map(f"{d}.{name(dec, 'FlexTransformer', 'decoder')}", "decoder.transformer", config.decoder_depth, True),
        **_linear(f"{d}.{name(dec, 'ToPatchesLinearHead', 'decoder')}.adaLN_modulation.1", "decoder.head_modulation"),
        **_linear(f"{d}.{name(dec, 'ToPatchesLinearHead', 'decoder')}.proj", "decoder.head"),
    }
    if config.null_condition == "learned":
        null = [n for n, p in dec.items() if _target(p) == "LearnedNullCond"][0]
        mapping[f"{d}.{null}.nullcond"] = "decoder.null_register"
    return mapping


def _reshape(ours_key: str, tensor: torch.Tensor, config: FlexTokConfig) -> torch.Tensor:
    if ours_key == "decoder.register_position":  # official (1, 1, D, N) learned 1D table
        return tensor.reshape(tensor.shape[-2], tensor.shape[-1]).T
    if ours_key.endswith("position.table") and tensor.ndim == 4 and tensor.shape[0] == 2:  # (2, 1, D, G) learned
        return tensor[:, 0]
    return tensor


def convert_official_flextok(state: StateDict, config: FlexTokConfig, official_config: dict) -> StateDict:
    """Official FlexTok state dict (VAE included) -> ours, for the config read from `official_config`."""
    mapping = official_key_map(official_config, config)
    vae_state = {k[len("vae.vae."):]: v for k, v in state.items() if k.startswith("vae.vae.")}
    rest = {k: v for k, v in state.items() if not k.startswith("vae.")}
    missing = sorted(set(mapping) - set(rest))
    unexpected = sorted(set(rest) - set(mapping))
    if missing or unexpected or not vae_state:
        parts = [f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        if not vae_state:
            parts.append("no vae.vae.* tensors")
        raise CheckpointError(f"the checkpoint does not fit the official FlexTok layout of its config ({'; '.join(parts)}); "
                              "is it the checkpoint of another model?")
    ours = {mapping[k]: _reshape(mapping[k], v.detach().float(), config).contiguous() for k, v in rest.items()}
    ours.update({f"vae.{k}": v for k, v in diffusers_to_ours(vae_state).items()})
    return ours


def _official_vae_config(official_config: dict) -> dict | None:
    """The diffusers config of the VAE an official config names, when it names no scaling factor."""
    vae = official_config.get("vae") or {}
    if vae.get("scaling_factor") is not None or not vae.get("hf_hub_path"):
        return None
    return json.loads(fetch_file(vae["hf_hub_path"], "config.json").read_text())


def load_official_flextok(path: str | Path, vae_config: dict | None = None) -> FlexTok:
    """An official FlexTok checkpoint (a model.safetensors, or its folder, with the config in the
    metadata or a config.json beside it) as our FlexTok, in eval mode. `vae_config`: the VAE's
    diffusers config.json, read from the hub cache when needed and not given."""
    from zoo.io import load_state_dict_checked, read_checkpoint

    official_config = read_official_config(path)
    vae_config = vae_config if vae_config is not None else _official_vae_config(official_config)
    config = flextok_config_from_official(official_config, vae_config)
    model = FlexTok(config)
    state = convert_official_flextok(read_checkpoint(path), config, official_config)
    load_state_dict_checked(model, state, source=str(path))
    return model.eval()


# ---- registrations ----------------------------------------------------------------------------

# The released sizes (paper, Table 8): width 64 x depth, head dim 64; FSQ [8, 8, 8, 5, 5, 5]; the
# 16-channel f8 VAE. These configs serve zoo.create(); a load reads the official config itself.
for enc_depth, dec_depth, data, data_name in ((12, 12, "in1k", "ImageNet-1k"), (18, 18, "in1k", "ImageNet-1k"),
                                              (18, 28, "in1k", "ImageNet-1k"), (18, 28, "dfn", "DFN")):
    register(
        f"flextok-d{enc_depth}-d{dec_depth}-{data}", FlexTok,
        FlexTokConfig(encoder_width=64 * enc_depth, encoder_depth=enc_depth, encoder_heads=enc_depth,
                      decoder_width=64 * dec_depth, decoder_depth=dec_depth, decoder_heads=dec_depth),
        description=f"FlexTok d{enc_depth}-d{dec_depth} ({data_name}): 1 to 256 ordered tokens (64,000 FSQ codes) per "
                    "256x256 image, decoded by a rectified-flow model; encode(x, num_tokens=k), "
                    "decode(tokens, steps=, guidance_scale=, seed=).",
        license=LICENSE, paper=PAPER, official_loader=load_official_flextok,
        source=WeightSource(f"EPFL-VILAB/flextok_d{enc_depth}_d{dec_depth}_{data}", "model.safetensors",
                            config_filename="config.json"),
    )
