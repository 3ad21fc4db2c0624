"""SpeechTokenizer and DM-Codec through their official code (ZhangXInFD/SpeechTokenizer, the
`speechtokenizer` package on PyPI; mubtasimahasan/DM-Codec, its `codec` package). Both are EnCodec's
SEANet + RVQ under another class name, built from the same JSON config.

Weights: our state dict in the EnCodec layout (zoo.hub.audio_rvq's converter, inverted): SConv1d's
nested `conv.conv` / `convtr.convtr`, legacy weight_g / weight_v, `quantizer.vq.layers.{k}._codebook`
with `inited` set. Official calls as in its README: `encode(wav)` -> codes (n_q, B, T),
`decode(codes)` -> wav (B, 1, T).

Shim: the `speechtokenizer` package imports its trainer on import (beartype, accelerate, tensorboard);
it is made importable without running its __init__, and only its model module is imported.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.errors import TokenizerError
from zoo.eval.official import OfficialAdapter, OfficialCode, locate, official_imports

CODES = {
    "speechtokenizer": OfficialCode("SpeechTokenizer", "ZOO_OFFICIAL_SPEECHTOKENIZER", "speechtokenizer/model.py",
                                    "https://github.com/ZhangXInFD/SpeechTokenizer", "speechtokenizer", ("einops",)),
    "dmcodec": OfficialCode("DM-Codec", "ZOO_OFFICIAL_DMCODEC", "codec/model.py",
                            "https://github.com/mubtasimahasan/DM-Codec", None, ("einops",)),
}
# (package, module, class) of each official model
ENTRY = {"speechtokenizer": ("speechtokenizer", "speechtokenizer.model", "SpeechTokenizer"),
         "dmcodec": ("codec", "codec.model", "Model")}

# SEANet arguments the official model leaves at EnCodec's defaults
_FIXED = dict(kernel_size=7, last_kernel_size=7, compress=2, true_skip=False, causal=False, pad_mode="reflect")
_CODEBOOK = {"codebook": "embed", "code_sum": "embed_avg", "code_usage": "cluster_size"}  # ours -> official
_WEIGHT_NORM = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


def official_code(architecture: str) -> OfficialCode:
    """Where the official code of `architecture` ("speechtokenizer" or "dmcodec") comes from."""
    return CODES[architecture]


def official_config(config) -> dict:
    """The official JSON config for our RVQ codec config."""
    other = {k: getattr(config, k) for k, v in _FIXED.items() if getattr(config, k) != v}
    if other:
        raise TokenizerError(f"the official SEANet leaves {_FIXED} at these values; this config has {other}.")
    return {"n_filters": config.n_filters, "strides": list(config.strides), "dimension": config.dimension,
            "semantic_dimension": config.semantic_dimension, "bidirectional": config.bidirectional_encoder_lstm,
            "dilation_base": config.dilation_base, "residual_kernel_size": config.residual_kernel_size,
            "n_residual_layers": config.n_residual_layers, "lstm_layers": config.lstm_layers,
            "activation": config.activation, "codebook_size": config.codebook_size, "n_q": config.num_quantizers,
            "sample_rate": config.sample_rate}


def _official_key(model: nn.Module, key: str) -> str:
    part, _, rest = key.partition(".layers.")
    for ours, theirs in _WEIGHT_NORM.items():
        if rest.endswith(ours):
            rest = rest[: -len(ours)] + theirs
    path, _, leaf = rest.rpartition(".")
    module = model.get_submodule(f"{part}.layers.{path}")
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):  # SConv1d / SConvTranspose1d nest it twice
        nested = "convtr.convtr" if isinstance(module, nn.ConvTranspose1d) else "conv.conv"
        head, _, last = path.rpartition(".")
        if last != "conv":
            raise TokenizerError(f"unexpected convolution {key!r} in the SEANet layout")
        path = f"{head}.{nested}" if head else nested
    return f"{part}.model.{path}.{leaf}"


def official_state(model) -> dict[str, torch.Tensor]:
    """Our codec's weights in the official EnCodec layout (convert_official_rvq_codec's inverse)."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if key.startswith(("encoder.layers.", "decoder.layers.")):
            out[_official_key(model, key)] = value
        elif key.startswith("quantizer.layers."):
            _, _, layer, name = key.split(".")
            prefix = f"quantizer.vq.layers.{layer}._codebook."
            if name == "initialised":
                out[prefix + "inited"] = torch.ones(1)  # never k-means-initialised again on first use
            else:
                out[prefix + _CODEBOOK[name]] = value
        elif key.startswith("semantic_head."):
            out["transform." + key.removeprefix("semantic_head.")] = value
        else:
            raise TokenizerError(f"our codec key {key!r} has no place in the official layout")
    return out


class RVQCodecAdapter(OfficialAdapter):
    """The official SpeechTokenizer / DM-Codec with our weights."""

    def __init__(self, official: nn.Module, code: OfficialCode):
        self.official, self.code = official, code

    @torch.no_grad()
    def encode(self, x):
        """Official codes (n_q, B, T)."""
        return self.official.encode(x)

    @torch.no_grad()
    def decode(self, encoded):
        """The official decode of codes (n_q, B, T): wav (B, 1, samples)."""
        return self.official.decode(encoded)

    def from_tokens(self, tokens):
        """Our codes (B, n_q, T) as the official (n_q, B, T)."""
        return tokens.codes.transpose(0, 1)  # (B, n_q, T) -> (n_q, B, T)

    def codes(self, encoded):
        """Official codes in our layout (B, n_q, T)."""
        return encoded.transpose(0, 1)


def build(model, code: OfficialCode, official_path, device: str) -> RVQCodecAdapter:
    """The official codec of `model`'s architecture for its config, holding its weights, on `device`."""
    root, scope = locate(code, official_path)
    config = official_config(model.config)
    package, module_name, class_name = ENTRY[model.architecture]
    with official_imports(root, scope, code, bare_packages=(package,)):
        import importlib

        official = getattr(importlib.import_module(module_name), class_name)(config)
    missing, unexpected = official.load_state_dict(official_state(model), strict=False)
    if missing or unexpected:
        raise TokenizerError(f"the official {code.family} at {root} does not take our weights (missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}); is it another revision of the code?")
    return RVQCodecAdapter(official.to(device).eval(), code)
