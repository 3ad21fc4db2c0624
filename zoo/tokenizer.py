"""Tokenizer base: a config dataclass, encode/decode, save_pretrained/from_pretrained.

A family subclasses `ImageTokenizer` or `AudioTokenizer`, names its `architecture` and
`config_class`, builds its modules from the config's fields in `__init__`, and implements
`_encode`, `_decode` and `forward` (the training pass). Input checks, metadata, no-grad
inference and the hub folder format live here once.

The config (config.json) holds the architecture only. How a model is trained (loss weights,
codebook EMA decay, k-means init, ...) is a family's `training_options_class`, a small frozen
dataclass set with `set_training_options(**options)` (recipes pass theirs through the training
module); a fresh model starts with that dataclass's defaults.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from zoo.errors import CheckpointError, TokenizerError
from zoo.tokens import Tokens

ZOO_VERSION = "0.1.0"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

# architecture name -> Tokenizer subclass; filled by Tokenizer.__init_subclass__
ARCHITECTURES: dict[str, type["Tokenizer"]] = {}


def _tuplify(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuplify(v) for k, v in value.items()}
    return value


@dataclass
class TokenizerConfig:
    """Base of every family config. Fields hold JSON values only; sequences are stored as tuples
    so that a config read back from config.json compares equal to the one written.

    `training_keys` names the keys that older config.json files (and checkpoints' overrides) hold
    but that are training options now: reading a config drops them with a warning; `replace` with
    one of them is an error that says where it went."""

    training_keys: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _tuplify(getattr(self, f.name)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TokenizerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        moved = sorted(set(values) & set(cls.training_keys) - names)
        if moved:
            warnings.warn(f"config has training options {moved}, which config.json no longer holds; they are "
                          "ignored (set them with set_training_options; save the model again to drop them).",
                          stacklevel=2)
            values = {k: v for k, v in values.items() if k not in moved}
        unknown = sorted(set(values) - names)
        if unknown:
            raise CheckpointError(
                f"config has keys {unknown} that {cls.__name__} does not know; "
                "the folder was written for another model or a newer zoo version."
            )
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise CheckpointError(f"config lacks required keys {missing} for {cls.__name__}.")
        return cls(**values)

    def replace(self, **changes) -> "TokenizerConfig":
        moved = sorted(set(changes) & set(self.training_keys))
        if moved:
            raise TokenizerError(
                f"{', '.join(moved)} {'is a training option' if len(moved) == 1 else 'are training options'} now, "
                f"not part of {type(self).__name__}; set {'it' if len(moved) == 1 else 'them'} with "
                f"tokenizer.set_training_options({', '.join(f'{k}=...' for k in moved)}) or a recipe's training_options.")
        bad = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if bad:
            raise TokenizerError(f"{type(self).__name__} has no fields {bad}.")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainingOptions:
    """Base of a family's training options: knobs of the training pass, not of the architecture
    (they are not saved in config.json). Subclasses add fields with defaults and check values in
    `__post_init__` (raising TokenizerError)."""


def _type_error(name: str, expected, value) -> str | None:
    """None when `value` fits the annotation `expected` (bool, int, float, str or a tuple of them)."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind is str and isinstance(value, str):
            return None
    wanted = " or ".join(("an " if k.__name__[0] in "aeiou" else "a ") + k.__name__ for k in kinds)
    return f"training option {name} must be {wanted}, got {value!r} ({type(value).__name__})."


class TokenizerOutput(NamedTuple):
    """What a tokenizer's training forward returns."""

    reconstruction: torch.Tensor
    codes: torch.Tensor
    aux_loss: torch.Tensor  # quantizer commitment / codebook losses, already weighted


class Tokenizer(nn.Module):
    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[TokenizerConfig]] = TokenizerConfig
    training_options_class: ClassVar[type[TrainingOptions]] = TrainingOptions
    modality: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("architecture")
        if name:
            if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
                raise TypeError(f"architecture {name!r} is already taken by {ARCHITECTURES[name].__name__}")
            ARCHITECTURES[name] = cls

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TokenizerError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config
        self.name: str | None = None  # registered name, set by the hub when built from one
        self._training_options = self.training_options_class()  # subclasses build their modules with these

    # ---- training options -----------------------------------------------------------------
    @property
    def training_options(self) -> TrainingOptions:
        """The training options in force (the family's `training_options_class`)."""
        return self._training_options

    def set_training_options(self, **options) -> None:
        """Set some of the family's training options (the others keep their values) and apply them
        to the model, e.g. `codec.set_training_options(kmeans_init=True, codebook_decay=0.95)`.
        An unknown name or a value of the wrong type is a TokenizerError."""
        cls = self.training_options_class
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            known = ", ".join(sorted(fields)) or "none"
            raise TokenizerError(f"{type(self).__name__} has no training option {', '.join(unknown)}; "
                                 f"its training options are: {known}.")
        hints = typing.get_type_hints(cls)
        for name, value in options.items():
            expected = typing.get_args(hints[name]) or hints[name]
            if (problem := _type_error(name, expected, value)) is not None:
                raise TokenizerError(problem)
            if expected is float:
                options[name] = float(value)
        self._training_options = dataclasses.replace(self._training_options, **options)
        self._apply_training_options(self._training_options, set(options))

    def _apply_training_options(self, options: TrainingOptions, changed: set[str]) -> None:
        """Family hook: make the model use `options`; `changed` names those just set (one-off
        actions, such as an initialisation, run only for those)."""

    # ---- metadata -----------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codebook size of each quantizer (one entry per residual layer / codebook)."""
        raise NotImplementedError

    @property
    def bits_per_token(self) -> float:
        """Bits of one token position, summed over the quantizer layers that share it."""
        return float(sum(math.log2(k) for k in self.codebook_sizes))

    def info(self) -> dict:
        raise NotImplementedError

    # ---- the API ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, **opts) -> Tokens:
        x = self.check_input(x)
        tokens = self._encode(x, **opts)
        if self.name:
            tokens.meta.setdefault("model", self.name)
        return tokens

    @torch.no_grad()
    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        if isinstance(tokens, torch.Tensor):
            tokens = Tokens(tokens)
        if not isinstance(tokens, Tokens):
            raise TokenizerError(f"decode takes Tokens or a codes tensor, got {type(tokens).__name__}.")
        if tokens.codes.dtype.is_floating_point:
            raise TokenizerError(f"codes must be an integer tensor, got {tokens.codes.dtype}.")
        self.check_codes(tokens)
        return self._decode(tokens.to(self.device))

    def reconstruct(self, x: torch.Tensor, **opts) -> torch.Tensor:
        return self.decode(self.encode(x, **opts))

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_codes(self, tokens: Tokens) -> None:
        codes = tokens.codes
        if codes.numel() and (codes.min() < 0 or codes.max() >= max(self.codebook_sizes)):
            raise TokenizerError(
                f"codes must lie in [0, {max(self.codebook_sizes)}) for this tokenizer, got "
                f"[{int(codes.min())}, {int(codes.max())}]; were they made by another model?"
            )

    def _encode(self, x: torch.Tensor, **opts) -> Tokens:
        raise NotImplementedError

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ---- hub folder format --------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, model_card: str | None = None,
                        metrics: dict | None = None) -> Path:
        """Write config.json + model.safetensors + README.md (a model card) into `folder`."""
        from safetensors.torch import save_model

        from zoo.card import make_model_card

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"architecture": self.architecture, "zoo_version": ZOO_VERSION, **self.config.to_dict()}
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_model(self, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "architecture": self.architecture})
        card = model_card if model_card is not None else make_model_card(self, metrics=metrics)
        (folder / CARD_NAME).write_text(card)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        """Open a folder written by `save_pretrained`."""
        from zoo.io import read_safetensors

        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{folder} has no {CONFIG_NAME}; pass a folder written by save_pretrained or `zoo export`.")
        try:
            values = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_path} is not valid JSON ({e}); re-export the model.") from None
        model_cls = tokenizer_class(values.pop("architecture", None), source=str(config_path))
        values.pop("zoo_version", None)
        if cls is not Tokenizer and not issubclass(model_cls, cls):
            raise CheckpointError(f"{folder} holds a {model_cls.__name__}, not a {cls.__name__}.")
        model = model_cls(model_cls.config_class.from_dict(values))
        state, _ = read_safetensors(folder / WEIGHTS_NAME)
        load_state_dict_checked(model, state, source=str(folder / WEIGHTS_NAME))
        return model.eval()


def tokenizer_class(architecture: str | None, source: str = "config") -> type[Tokenizer]:
    if architecture is None:
        raise CheckpointError(f"{source} names no 'architecture'; it was not written by the zoo.")
    import zoo.models  # noqa: F401  (registers every family)

    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"{source} names architecture {architecture!r}, which this zoo does not have "
            f"(known: {sorted(ARCHITECTURES)}); upgrade the zoo or check the folder."
        )
    return ARCHITECTURES[architecture]


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with one readable error listing what does not fit.

    Keys absent from `state` are accepted when they alias a present tensor (tied weights,
    which safetensors' save_model stores once). Quantizer tensors under vector-quantize-pytorch's
    names (folders and checkpoints written before the zoo named them) are renamed to ours first."""
    from zoo.quantize import upgrade_library_keys

    state = upgrade_library_keys(state)
    expected = module.state_dict(keep_vars=True)
    by_storage: dict[int, list[str]] = {}
    for k, v in expected.items():
        by_storage.setdefault(v.data_ptr(), []).append(k)
    missing = [k for k in expected if k not in state
               and not any(alias in state for alias in by_storage[expected[k].data_ptr()])]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__} ({'; '.join(parts)}); "
            "it was saved for another model or configuration."
        )
    full = dict(state)
    for k in expected:
        if k not in full:
            full[k] = next(state[a] for a in by_storage[expected[k].data_ptr()] if a in state)
    module.load_state_dict(full, strict=True)


# ---- modality bases ---------------------------------------------------------------------

class ImageTokenizer(Tokenizer):
    """Images in: float (B, 3, H, W) in [0, 1]. Subclasses set `image_size` and `num_tokens`."""

    modality = "image"

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image at full length."""
        return self.config.num_tokens

    def info(self) -> dict:
        return {
            "architecture": self.architecture,
            "modality": self.modality,
            "image_size": self.image_size,
            "tokens_per_image": self.num_tokens,
            "codebook_sizes": list(self.codebook_sizes),
            "bits_per_image": self.num_tokens * self.bits_per_token,
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    def check_input(self, x):
        return check_image_batch(x, self.image_size)


class AudioTokenizer(Tokenizer):
    """Audio in: float (B, 1, T) at `sample_rate`. Subclasses set `sample_rate`, `hop_length`."""

    modality = "audio"

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        """Samples per code frame."""
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def info(self) -> dict:
        return {
            "architecture": self.architecture,
            "modality": self.modality,
            "sample_rate": self.sample_rate,
            "frames_per_second": self.frame_rate,
            "num_quantizers": len(self.codebook_sizes),
            "tokens_per_second": self.frame_rate * len(self.codebook_sizes),
            "codebook_sizes": list(self.codebook_sizes),
            "bits_per_second": self.frame_rate * self.bits_per_token,
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None, **opts) -> Tokens:
        """wav: (B, 1, T). Pass `sample_rate` when it is not `self.sample_rate`: it is resampled."""
        wav = self.check_input(wav)
        if sample_rate is not None and sample_rate != self.sample_rate:
            import torchaudio.functional as AF

            warnings.warn(f"resampling input from {sample_rate} Hz to the model's {self.sample_rate} Hz", stacklevel=2)
            wav = AF.resample(wav, sample_rate, self.sample_rate)
        tokens = self._encode(wav, **opts)
        tokens.meta.setdefault("sample_rate", self.sample_rate)
        if self.name:
            tokens.meta.setdefault("model", self.name)
        return tokens

    def check_input(self, wav):
        return check_audio_batch(wav)


def check_image_batch(x, image_size: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TokenizerError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}.")
    if x.ndim == 3 and x.shape[0] == 3:
        raise TokenizerError(f"images must be a batch (B, 3, H, W), got one image {tuple(x.shape)}; use x[None].")
    if x.ndim != 4 or x.shape[1] != 3:
        raise TokenizerError(f"images must have shape (B, 3, H, W) (RGB, channels first), got {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise TokenizerError("the image batch is empty (B = 0).")
    if not x.dtype.is_floating_point:
        raise TokenizerError(f"images must be float in [0, 1], got {x.dtype}; convert with x.float() / 255.")
    if not torch.isfinite(x).all():
        raise TokenizerError("images contain NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise TokenizerError(
            f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
            "images in [-1, 1] convert with (x + 1) / 2, 8-bit ones with x / 255."
        )
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        raise TokenizerError(
            f"this tokenizer takes {image_size}x{image_size} images, got {x.shape[-2]}x{x.shape[-1]}; "
            f"resize or crop first (zoo.io.read_image(path, size={image_size}) does both)."
        )
    return x


def check_audio_batch(wav) -> torch.Tensor:
    if not isinstance(wav, torch.Tensor):
        raise TokenizerError(f"audio must be a torch.Tensor of shape (B, 1, T), got {type(wav).__name__}.")
    if wav.ndim != 3:
        hint = " use wav[None, None] for one mono clip." if wav.ndim == 1 else \
            " use wav[:, None] for a batch of mono clips." if wav.ndim == 2 else ""
        raise TokenizerError(f"audio must have shape (B, 1, T), got {tuple(wav.shape)};{hint}")
    if wav.shape[1] != 1:
        raise TokenizerError(
            f"audio must be mono (B, 1, T), got {wav.shape[1]} channels; mix down with "
            "wav.mean(1, keepdim=True) or pick one channel."
        )
    if wav.shape[0] == 0 or wav.shape[-1] == 0:
        raise TokenizerError(f"the audio batch is empty (shape {tuple(wav.shape)}).")
    if not wav.dtype.is_floating_point:
        raise TokenizerError(f"audio must be float in [-1, 1], got {wav.dtype}; 16-bit PCM converts with x / 32768.")
    if not torch.isfinite(wav).all():
        raise TokenizerError("audio contains NaN or infinite values.")
    return wav
