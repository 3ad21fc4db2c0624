"""Tokenizer base: a config dataclass, encode/decode, save_pretrained/from_pretrained.

A family subclasses `ImageTokenizer` or `AudioTokenizer`, names its `architecture` and
`config_class`, builds its modules from the config's fields in `__init__`, and implements
`_encode`, `_decode` and `forward` (the training pass). The keyword parameters of `_encode` and
`_decode` are the family's encode / decode options (see zoo.options): `encode(x, **options)` and
`decode(tokens, **options)` check them by name and type first. Input checks, metadata, no-grad
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
from zoo.inputs import check_audio_batch, check_image_batch
from zoo.io import load_state_dict_checked, read_safetensors, state_dict_sha256
from zoo.options import (DIRECTIONS, OptionSpec, check_option_values, describe_value, fits_type, options_of, type_name,
                         unknown_options_message)
from zoo.tokens import Tokens

ZOO_VERSION = "0.1.0"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

# architecture name -> Tokenizer subclass; filled by Tokenizer.__init_subclass__ when zoo.models is
# imported (zoo/__init__.py does that, before the hub)
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

    `moved_keys` names the keys that older config.json files (and checkpoints' overrides) hold but
    that are no longer architecture, each with where it went (an encode / decode option, a training
    option): `from_dict` drops them, so those files still load; `replace` with one names its new place."""

    moved_keys: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _tuplify(getattr(self, f.name)))

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (what config.json holds, beside the architecture name)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TokenizerConfig":
        """The config from config.json values: unknown keys and missing required keys are errors,
        `moved_keys` are dropped."""
        values = {k: v for k, v in values.items() if k not in cls.moved_keys}
        names = {f.name for f in dataclasses.fields(cls)}
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
        """A copy with some fields changed; a name that is not a field is an error (one that moved out
        of the config says where it went)."""
        moved = sorted(set(changes) & set(self.moved_keys))
        if moved:
            places = "; ".join(f"{k} is {self.moved_keys[k]} now" for k in moved)
            raise TokenizerError(
                f"{places}, not part of {type(self).__name__}: pass encode / decode options to encode() / decode(), "
                "and set training options with tokenizer.set_training_options(...) or a recipe's training_options.")
        bad = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if bad:
            raise TokenizerError(f"{type(self).__name__} has no fields {bad}.")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainingOptions:
    """Base of a family's training options: knobs of the training pass, not of the architecture
    (they are not saved in config.json). Subclasses add fields with defaults and check values in
    `__post_init__` (raising TokenizerError)."""


class TokenizerOutput(NamedTuple):
    """What a tokenizer's training forward returns."""

    reconstruction: torch.Tensor
    codes: torch.Tensor
    aux_loss: torch.Tensor  # quantizer commitment / codebook losses, already weighted


class Tokenizer(nn.Module):
    """Base of every tokenizer: a config, encode/decode with declared options, the hub folder format."""

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
        for direction in DIRECTIONS:  # a malformed option declaration fails when the family is defined
            cls.declared_options(direction)

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TokenizerError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config
        # facts the hub attaches when it builds the model from a registered entry (the card reads them)
        self.name: str | None = None          # registered name
        self.license: str | None = None       # licence of the weights
        self.description: str | None = None   # one paragraph on what the model is
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
            if not fits_type(value, hints[name]):
                raise TokenizerError(f"training option {name} of {type(self).__name__} takes {type_name(hints[name])}, "
                                     f"got {describe_value(value)}.")
            if hints[name] is float:
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
        """Token budget and size facts (modality, tokens, codebooks, bits, parameters) as JSON values."""
        raise NotImplementedError

    def weights_sha256(self) -> str:
        """The sha256 of the weights (zoo.io.state_dict_sha256): what token files and eval reports record
        to say which model made them."""
        return state_dict_sha256(self)

    # ---- options ------------------------------------------------------------------------
    @classmethod
    def declared_options(cls, direction: str) -> dict[str, OptionSpec]:
        """The options `encode` (direction "encode") or `decode` ("decode") takes, by name."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        return options_of(cls._encode if direction == "encode" else cls._decode)

    @classmethod
    def options_summary(cls) -> dict[str, dict[str, dict]]:
        """{"encode": {name: {type, default, help}}, "decode": {...}}, as `zoo info` prints it."""
        return {d: {n: s.summary() for n, s in cls.declared_options(d).items()} for d in DIRECTIONS}

    def check_options(self, direction: str, options: dict) -> dict:
        """`options` checked against what `direction` declares: an unknown name or a value of the
        wrong type is a TokenizerError; returns them unchanged."""
        declared = self.declared_options(direction)
        unknown = [n for n in options if n not in declared]
        if unknown:
            raise TokenizerError(self._unknown_options_message(direction, unknown))
        check_option_values(self._label, direction, options, declared)
        return options

    def split_options(self, options: dict) -> tuple[dict, dict]:
        """Options for `reconstruct` -> (encode options, decode options); one that both declare goes to both."""
        encode_names, decode_names = self.declared_options("encode"), self.declared_options("decode")
        unknown = [n for n in options if n not in encode_names and n not in decode_names]
        if unknown:
            raise TokenizerError(self._unknown_options_message("reconstruct", unknown))
        return ({k: v for k, v in options.items() if k in encode_names},
                {k: v for k, v in options.items() if k in decode_names})

    @property
    def _label(self) -> str:
        return self.name or self.architecture or type(self).__name__

    def _unknown_options_message(self, asked: str, unknown: list[str]) -> str:
        families = {arch: (cls.modality, {n for d in DIRECTIONS for n in cls.declared_options(d)})
                    for arch, cls in ARCHITECTURES.items()}
        return unknown_options_message(self._label, self.modality, asked, unknown,
                                       {d: self.declared_options(d) for d in DIRECTIONS}, families)

    # ---- the API ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, **options) -> Tokens:
        """Input batch -> Tokens; `options` are those this family's encode declares (`zoo info NAME`)."""
        options = self.check_options("encode", options)
        return self._stamp(self._encode(self._as_model_input(self.check_input(x)), **options))

    @torch.no_grad()
    def decode(self, tokens: Tokens | torch.Tensor, *, other_model_ok: bool = False, **options) -> torch.Tensor:
        """Tokens (or a bare codes tensor) -> output batch; `options` are those this family's decode declares.
        Tokens whose meta names another model (or modality) are refused: decoding them gives garbage
        that looks like output; `other_model_ok=True` decodes them anyway (e.g. a fine-tuned copy)."""
        options = self.check_options("decode", options)
        if isinstance(tokens, torch.Tensor):
            tokens = Tokens(tokens)
        if not isinstance(tokens, Tokens):
            raise TokenizerError(f"decode takes Tokens or a codes tensor, got {type(tokens).__name__}.")
        if not other_model_ok:
            self.check_made_here(tokens)
        if tokens.codes.dtype.is_floating_point or tokens.codes.dtype.is_complex or tokens.codes.dtype == torch.bool:
            raise TokenizerError(f"codes must be an integer tensor, got {tokens.codes.dtype}.")
        if tokens.codes.dtype != torch.long:  # int8 / int16 / int32 / uint8 codes hold the same values
            tokens = Tokens(tokens.codes.long(), tokens.lengths, tokens.latents, tokens.meta)
        self.check_codes(tokens)
        latents = tokens.latents
        if latents is not None and latents.is_floating_point() and not bool(torch.isfinite(latents).all()):
            bad = int((~torch.isfinite(latents)).sum())
            raise TokenizerError(f"the tokens' latents hold {bad} NaN or infinite values of {latents.numel()}; "
                                 "they would decode to a NaN image: encode the input again, or check what wrote them.")
        return self._checked_output(self._decode(tokens.to(self.device), **options))

    def reconstruct(self, x: torch.Tensor, **options) -> torch.Tensor:
        """decode(encode(x)): each option goes to the direction(s) that declare it."""
        encode_options, decode_options = self.split_options(options)
        return self.decode(self.encode(x, **encode_options), **decode_options)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the weights (float32 when the model has none)."""
        for p in self.parameters():
            if p.dtype.is_floating_point:
                return p.dtype
        return torch.float32

    def _as_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input on the model's device and in its dtype: another float dtype (float64, float16,
        bfloat16 into a float32 model) is converted, with a warning, instead of failing deep in a layer."""
        if x.dtype != self.dtype:
            warnings.warn(f"{self._label}: converting {x.dtype} input to the model's {self.dtype}", stacklevel=3)
        return x.to(device=self.device, dtype=self.dtype)

    def _checked_output(self, out: torch.Tensor) -> torch.Tensor:
        """A decoded batch, refused when it holds NaN or infinity (non-finite weights or latents)."""
        if not torch.isfinite(out).all():
            raise TokenizerError(f"{self._label} decoded to NaN or infinite values: its weights or the tokens' latents "
                                 "are not finite (check the checkpoint with zoo.load and the Tokens you passed).")
        return out

    def _stamp(self, tokens: Tokens) -> Tokens:
        if self.name:
            tokens.meta.setdefault("model", self.name)
        tokens.meta.setdefault("modality", self.modality)
        return tokens

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input batch, checked (a TokenizerError naming the problem otherwise)."""
        raise NotImplementedError

    def check_made_here(self, tokens: Tokens) -> None:
        """Raise a TokenizerError when `tokens.meta` says another modality or another registered model made them."""
        modality, made_by = tokens.meta.get("modality"), tokens.meta.get("model")
        if modality is not None and modality != self.modality:
            raise TokenizerError(f"these tokens were made by an {modality} model ({made_by or 'unnamed'}) and "
                                 f"{self._label} is an {self.modality} model; decode them with the model that made them.")
        if (self.name and isinstance(made_by, str) and made_by != self.name
                and made_by in _registered_names()):
            raise TokenizerError(f"these tokens were made by {made_by}, not {self.name}: decode them with "
                                 f"zoo.load({made_by!r}), or pass other_model_ok=True (--other-model on the command "
                                 "line) when the other model is meant, e.g. a fine-tuned copy.")

    def check_codes(self, tokens: Tokens) -> None:
        """Raise a TokenizerError when codes do not fit this model's codebooks."""
        codes = tokens.codes
        if codes.numel() and (codes.min() < 0 or codes.max() >= max(self.codebook_sizes)):
            raise TokenizerError(
                f"codes must lie in [0, {max(self.codebook_sizes)}) for this tokenizer, got "
                f"[{int(codes.min())}, {int(codes.max())}]; were they made by another model?"
            )

    def _encode(self, x: torch.Tensor) -> Tokens:
        raise NotImplementedError  # families add their options as keyword parameters

    # ---- what training uses ---------------------------------------------------------------
    def last_decoder_layer(self) -> torch.Tensor:
        """The weight an adaptive GAN loss weight is measured on (the gradients of the
        reconstruction and adversarial losses there are compared). Default: the last trainable
        matrix or conv weight in registration order; a family whose decoder is not registered
        last names its own."""
        weights = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        if not weights:
            raise TokenizerError(f"{type(self).__name__} has no trainable weight matrix for the adaptive GAN weight.")
        return weights[-1]

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the parameters are (the CPU for a model without any)."""
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

    def push_to_hub(self, repo_id: str, private: bool = True, token: str | None = None,
                    commit_message: str | None = None, model_card: str | None = None) -> str:
        """save_pretrained into a temporary folder and upload it to Hugging Face repo `repo_id`
        (zoo.hfhub.push_folder: created private unless private=False; token from HF_TOKEN or
        `hf auth login` unless given). Returns the commit's URL."""
        import tempfile

        from zoo.hfhub import push_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / repo_id.rpartition("/")[2], model_card=model_card)
            return push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        """Open a folder written by `save_pretrained`."""
        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{folder} has no {CONFIG_NAME}; pass a folder written by save_pretrained or `zoo export`.")
        try:
            values = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{config_path} is not valid UTF-8 JSON ({e}); re-export the model.") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{config_path} holds a JSON {type(values).__name__}, not the object of config "
                                  "fields save_pretrained writes; re-export the model.")
        model_cls = tokenizer_class(values.pop("architecture", None), source=str(config_path))
        values.pop("zoo_version", None)
        if cls is not Tokenizer and not issubclass(model_cls, cls):
            raise CheckpointError(f"{folder} holds a {model_cls.__name__}, not a {cls.__name__}.")
        try:
            config = model_cls.config_class.from_dict(values)
        except TypeError as e:  # a field's dataclass check on a value of the wrong kind
            raise CheckpointError(f"{config_path} has a value of the wrong kind ({e}); re-export the model.") from None
        weights = folder / WEIGHTS_NAME
        check_buildable(model_cls, config, str(config_path), weights.stat().st_size if weights.is_file() else None)
        try:
            model = model_cls(config)
        except TokenizerError:
            raise
        except Exception as e:  # a layer given a value of the wrong kind or size (0 heads, width 0, ...)
            raise CheckpointError(f"{config_path} describes a {model_cls.__name__} that cannot be built "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); re-export the model.") from None
        state, _ = read_safetensors(folder / WEIGHTS_NAME)
        load_state_dict_checked(model, state, source=str(folder / WEIGHTS_NAME))
        return model.eval()


MAX_SUBMODULES = 10_000  # the largest family builds under 700; a corrupt depth asks for billions


class _TooBig(Exception):
    pass


def check_buildable(model_cls: type[Tokenizer], config: TokenizerConfig, source: str,
                    weights_bytes: int | None = None) -> None:
    """Build the model on the meta device (shapes only) and refuse, before any real allocation, a config
    whose weights would not fit in this machine's memory or far outgrow the weights file meant for them
    (`weights_bytes`), that asks for more than MAX_SUBMODULES layers, or that the family's constructor
    rejects. The build is watched as it goes, so a corrupt depth of 10**30 is refused at once."""
    import os

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    limit = memory if weights_bytes is None else min(memory or 2**62, 2 * weights_bytes + 2**28)
    counted = {"modules": 0, "bytes": 0}

    def on_module(module, name, submodule):
        counted["modules"] += 1
        if counted["modules"] > MAX_SUBMODULES:
            raise _TooBig(f"more than {MAX_SUBMODULES:,} layers")

    def on_tensor(module, name, tensor):
        if tensor is not None:
            counted["bytes"] += tensor.numel() * tensor.element_size()
        if limit is not None and counted["bytes"] > limit:
            raise _TooBig(f"more than {limit / 2**30:.1f} GiB of weights")

    from torch.nn.modules import module as torch_module

    hooks = [torch_module.register_module_module_registration_hook(on_module),
             torch_module.register_module_parameter_registration_hook(on_tensor),
             torch_module.register_module_buffer_registration_hook(on_tensor)]
    try:
        with torch.device("meta"):
            model_cls(config)
    except _TooBig as e:
        where = (f"the {weights_bytes / 2**20:.1f} MiB weights file beside it" if weights_bytes is not None
                 else f"this machine's {memory / 2**30:.1f} GiB of memory")
        raise CheckpointError(f"{source} describes a {model_cls.__name__} of {e}, far beyond {where}; the config is "
                              "corrupt or was not saved with these weights.") from None
    except TokenizerError:
        raise
    except Exception:  # a constructor that computes with its tensors cannot run on meta: the real build will say
        return
    finally:
        for hook in hooks:
            hook.remove()


def _registered_names() -> set[str]:
    """The registry's names, when the hub is loaded (a model built without it has no name to compare)."""
    import sys

    registry = sys.modules.get("zoo.hub.registry")
    return set(registry.list_models()) if registry else set()


def tokenizer_class(architecture: str | None, source: str = "config") -> type[Tokenizer]:
    """The Tokenizer subclass a config.json names (families register when zoo.models is imported)."""
    if architecture is None:
        raise CheckpointError(f"{source} names no 'architecture'; it was not written by the zoo.")
    if not isinstance(architecture, str):
        raise CheckpointError(f"{source} gives the architecture as a JSON {type(architecture).__name__}, not a name; "
                              "it is corrupt: re-export the model.")
    if architecture not in ARCHITECTURES:
        # `import zoo` loads the families on first use; one who imported only this module has not yet
        # (by name: the base API does not depend on the families, it only lets them register)
        import importlib

        importlib.import_module("zoo.models")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"{source} names architecture {architecture!r}, which this zoo does not have "
            f"(known: {sorted(ARCHITECTURES)}); upgrade the zoo or check the folder."
        )
    return ARCHITECTURES[architecture]


# ---- modality bases ---------------------------------------------------------------------

class ImageTokenizer(Tokenizer):
    """Images in: float (B, 3, H, W) in [0, 1]. Subclasses set `image_size` and `num_tokens`."""

    modality = "image"

    @property
    def image_size(self) -> int:
        """Side of the square images it takes, in pixels."""
        return self.config.image_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image at full length."""
        return self.config.num_tokens

    def info(self) -> dict:
        """Image size, tokens and bits per image, codebooks, parameters."""
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
        """Float (B, 3, image_size, image_size) in [0, 1], checked."""
        return check_image_batch(x, self.image_size)

    def check_codes(self, tokens: Tokens) -> None:
        """Codes must be (B, N) with 1 <= N <= num_tokens (VAE tokenizers, whose Tokens carry latents and no
        codes, are left to the family's own check)."""
        codes = tokens.codes
        if tokens.latents is None and codes.numel() and (codes.ndim != 2 or not 1 <= codes.shape[1] <= self.num_tokens):
            raise TokenizerError(f"codes must have shape (B, N) with 1 <= N <= {self.num_tokens} for this tokenizer, "
                                 f"got {tuple(codes.shape)}.")
        super().check_codes(tokens)

    def kept_lengths(self, num_tokens: int | torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """Flexible-length models: num_tokens (an int, or (B,) per image) -> (B,) long lengths in
        [1, num_tokens], checked; None -> None."""
        if num_tokens is None:
            return None
        n = self.num_tokens
        if isinstance(num_tokens, torch.Tensor):
            if num_tokens.shape != (batch_size,) or num_tokens.dtype.is_floating_point:
                raise TokenizerError(f"num_tokens as a tensor must be (B,) = ({batch_size},) integers, "
                                     f"got {tuple(num_tokens.shape)} {num_tokens.dtype}.")
            lengths = num_tokens.to(device=self.device, dtype=torch.long)
        else:
            lengths = torch.full((batch_size,), int(num_tokens), dtype=torch.long, device=self.device)
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > n):
            raise TokenizerError(f"num_tokens must lie in [1, {n}] for this model, got "
                                 f"[{int(lengths.min())}, {int(lengths.max())}].")
        return lengths


class AudioTokenizer(Tokenizer):
    """Audio in: float (B, 1, T) at `sample_rate`. Subclasses set `sample_rate`, `hop_length`."""

    modality = "audio"
    streams_from_disk: ClassVar[bool] = False  # True: _encode only slices its input, so a file can stream into it

    @property
    def sample_rate(self) -> int:
        """Samples per second of the audio it takes and returns."""
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        """Samples per code frame."""
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        """Code frames per second."""
        return self.sample_rate / self.hop_length

    def info(self) -> dict:
        """Sample rate, frames, tokens and bits per second, codebooks, parameters."""
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
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None, **options) -> Tokens:
        """wav: (B, 1, T). Pass `sample_rate` when it is not `self.sample_rate`: it is resampled.
        `options` are those this family's encode declares (`zoo info NAME`)."""
        options = self.check_options("encode", options)
        wav = self._as_model_input(self.check_input(wav))
        if sample_rate is not None and sample_rate != self.sample_rate:
            import torchaudio.functional as AF

            warnings.warn(f"resampling input from {sample_rate} Hz to the model's {self.sample_rate} Hz", stacklevel=2)
            wav = AF.resample(wav, sample_rate, self.sample_rate)
        tokens = self._encode(wav, **options)
        tokens.meta.setdefault("sample_rate", self.sample_rate)
        return self._stamp(tokens)

    @torch.no_grad()
    def encode_file(self, path, mix_to_mono: bool = False, **options) -> Tokens:
        """encode() of an audio file (resampled to the model's rate). Families whose encode runs in
        chunks (`streams_from_disk`) read the file chunk by chunk and never hold it whole: a recording
        of hours encodes in memory bounded by its frame-rate activations, to the same codes."""
        from zoo.io import AudioFileSource, read_audio

        if not self.streams_from_disk:
            wav, _ = read_audio(path, sample_rate=self.sample_rate, mix_to_mono=mix_to_mono)
            return self.encode(wav[None], **options)
        options = self.check_options("encode", options)
        source = AudioFileSource(path, self.sample_rate, mix_to_mono, device=self.device, dtype=self.dtype)
        if source.shape[-1] < self.hop_length:
            raise TokenizerError(f"{path} is {source.shape[-1]} samples long at {self.sample_rate} Hz, shorter than one "
                                 f"code frame ({self.hop_length} samples); give longer audio.")
        with source:
            tokens = self._encode(source, **options)
        if source.peak > 2.0:
            warnings.warn(f"{path} peaks at {source.peak:.3g}, far outside [-1, 1]; is it unscaled PCM?", stacklevel=2)
        tokens.meta.setdefault("sample_rate", self.sample_rate)
        return self._stamp(tokens)

    def reconstruct(self, wav: torch.Tensor, sample_rate: int | None = None, **options) -> torch.Tensor:
        """decode(encode(wav, sample_rate)), at the model's sample rate; options split as in Tokenizer."""
        encode_options, decode_options = self.split_options(options)
        return self.decode(self.encode(wav, sample_rate, **encode_options), **decode_options)

    def check_input(self, wav):
        """Float mono (B, 1, T) of at least one frame's samples, checked."""
        wav = check_audio_batch(wav)
        if wav.shape[-1] < self.hop_length:
            raise TokenizerError(f"the clips are {wav.shape[-1]} samples long, shorter than one code frame "
                                 f"({self.hop_length} samples at {self.sample_rate} Hz); pad them or give longer audio.")
        return wav

    def check_codes(self, tokens: Tokens) -> None:
        """Codes must be (B, n_q, frames) with 1 <= n_q <= the quantizers and at least one frame."""
        codes, layers = tokens.codes, len(self.codebook_sizes)
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= layers or codes.shape[2] == 0:
            raise TokenizerError(f"codes must have shape (B, n_q, frames) with 1 <= n_q <= {layers} and frames >= 1, "
                                 f"got {tuple(codes.shape)}.")
        super().check_codes(tokens)
