"""Registry of named tokenizers (timm's pattern: a name is a config plus a builder) and `load`.

Weight sources, in order: a local folder or file, the Hugging Face cache (HF_HUB_OFFLINE is
respected), a download through huggingface_hub. Files with a recorded sha256 are checked.
Official checkpoints are read in their own key layout and converted by the entry's converter.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.hub.sources import fetch_file, fetch_pretrained_folder
from zoo.io import load_state_dict_checked, read_checkpoint
from zoo.quantize import upgrade_library_keys
from zoo.tokenizer import CONFIG_NAME, Tokenizer, TokenizerConfig

StateDict = dict[str, torch.Tensor]
# official state dict + our config -> state dict in our key layout
Converter = Callable[[StateDict, TokenizerConfig], StateDict]


@dataclass(frozen=True)
class WeightSource:
    """Where a named model's official or released weights live."""

    repo_id: str               # Hugging Face repo id
    filename: str              # file inside the repo
    sha256: str | None = None  # checked after download / cache hit when recorded
    revision: str | None = None
    official_layout: bool = True  # True: the upstream key layout, read through the entry's converter
    config_filename: str | None = None  # the official config beside the weights, fetched with them


@dataclass(frozen=True)
class ModelEntry:
    """A registered name: the architecture, its config, where its weights are, what they are."""

    name: str
    model_class: type[Tokenizer]
    config: TokenizerConfig
    description: str
    license: str                              # licence of the weights (and code) at the source
    source: WeightSource | None = None        # None: no released weights (random init only)
    converter: Converter | None = None        # needed when source.official_layout
    embedded: Path | None = None              # a save_pretrained folder shipped inside the package
    paper: str = ""
    download_page: str | None = None          # weights published outside the hub (fetch by hand, pass checkpoint=)
    # official checkpoint path -> model, for families whose architecture is read from the official
    # config that comes with the weights (the registered config serves `create` only), or whose official
    # files hold more than tensors (KARL's training arguments), which the family's reader opens
    official_loader: Callable[[Path], Tokenizer] | None = None

    def build(self, **overrides) -> Tokenizer:
        """The registered architecture (config fields overridden), random weights, with the entry's facts."""
        config = self.config.replace(**overrides) if overrides else self.config
        return self.describe(self.model_class(config))

    def describe(self, model: Tokenizer) -> Tokenizer:
        """Attach this entry's name, licence and description to `model` (its card reads them)."""
        model.name, model.license, model.description = self.name, self.license, self.description
        return model


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, model_class: type[Tokenizer], config: TokenizerConfig, *, description: str,
             license: str, source: WeightSource | None = None, converter: Converter | None = None,
             embedded: str | Path | None = None, paper: str = "", download_page: str | None = None,
             official_loader: Callable[[Path], Tokenizer] | None = None) -> ModelEntry:
    """Register `name`. Names are lower-case words joined by '-' (e.g. 'titok-l-32')."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", name):
        raise ValueError(f"model name {name!r} must be lower-case letters, digits, '-' and '.'")
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice")
    if not isinstance(config, model_class.config_class):
        raise TypeError(f"{name}: config is a {type(config).__name__}, {model_class.__name__} needs {model_class.config_class.__name__}")
    if source is not None and source.official_layout and converter is None and official_loader is None:
        raise TypeError(f"{name}: an official-layout weight source needs a converter or an official loader")
    entry = ModelEntry(name, model_class, config, description, license, source, converter,
                       Path(embedded) if embedded else None, paper, download_page, official_loader)
    _REGISTRY[name] = entry
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registered entry of `name`; an unknown name is an error suggesting close ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " `zoo list` shows the registered names."
        raise TokenizerError(f"no model named {name!r} is registered.{hint}")
    return _REGISTRY[name]


# Config fields shrunk, wherever a family has them, so that every registered model builds and runs in a
# blink on a CPU (the suite, dry runs); a family with none of these runs at its registered size.
TINY_FIELDS = dict(
    encoder_width=32, encoder_depth=1, encoder_heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2,
    pixel_decoder_channels=32, pixel_decoder_res_blocks=1, proxy_code_dim=16, n_filters=4, dimension=32,
    lstm_layers=0, semantic_dimension=16, context_dimension=16, fusion_heads=2,
    vae_block_channels=(8, 8, 8, 8), vae_layers_per_block=1, vae_norm_groups=4,
    backbone_dim=64, backbone_intermediate_dim=64, backbone_layers=1,
    encoder_channels=4, latent_dim=32, decoder_channels=64, aux_decoder_channels=32)


def tiny_overrides(name: str, **more) -> dict:
    """Overrides that make registered `name` tiny (random weights): TINY_FIELDS and `more` (e.g.
    image_size=32), each where the family's config has the field; `create(name, **tiny_overrides(name))`."""
    config = model_entry(name).config
    fields = {f.name for f in dataclasses.fields(config)}
    overrides = {k: v for k, v in {**TINY_FIELDS, **more}.items() if k in fields}
    if "pixel_decoder_channel_mult" in fields:  # one level per upsampling step, all at the narrow width
        overrides["pixel_decoder_channel_mult"] = tuple(1 for _ in config.pixel_decoder_channel_mult)
    return overrides


def create(name: str, **overrides) -> Tokenizer:
    """The registered architecture with random weights (config fields can be overridden)."""
    return model_entry(name).build(**overrides).eval()


def load(name_or_path: str | Path, checkpoint: str | Path | None = None) -> Tokenizer:
    """A tokenizer with weights, in eval mode.

    name_or_path: a registered name, a folder written by save_pretrained / `zoo export`, a
    Lightning checkpoint written by `zoo fit` (.ckpt: its weight average, as `zoo export` takes it),
    or a Hugging Face repo id holding such a folder.
    checkpoint: with a registered name, a weights file or folder to use instead of the
    registered source, in our layout or the model's official layout (converted).
    """
    name_or_path = str(name_or_path)
    if name_or_path in _REGISTRY:
        entry = _REGISTRY[name_or_path]
        if checkpoint is not None:
            return _load_checkpoint(entry, Path(checkpoint))
        if entry.embedded is not None:
            return entry.describe(Tokenizer.from_pretrained(entry.embedded))
        if entry.source is None and entry.download_page:
            raise WeightsUnavailableError(
                f"{entry.name}'s weights are published at {entry.download_page}, not on the Hugging Face hub; "
                f"download the file there and pass it: zoo.load({entry.name!r}, checkpoint=PATH)."
            )
        if entry.source is None:
            raise WeightsUnavailableError(
                f"{entry.name} has no released weights; use zoo.create({entry.name!r}) for random "
                f"weights, or zoo.load({entry.name!r}, checkpoint=PATH) with a trained checkpoint."
            )
        path = fetch_file(entry.source.repo_id, entry.source.filename, revision=entry.source.revision,
                          sha256=entry.source.sha256, model_name=entry.name)
        if entry.source.config_filename:  # lands beside the weights in the cache snapshot
            fetch_file(entry.source.repo_id, entry.source.config_filename, revision=entry.source.revision,
                       model_name=entry.name)
        return _load_checkpoint(entry, path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return Tokenizer.from_pretrained(path)
    if path.is_file() and path.suffix == ".ckpt":
        from zoo.hub.export import tokenizer_from_checkpoint

        return tokenizer_from_checkpoint(path)[0]
    if path.is_file():
        raise TokenizerError(
            f"{path} is a weights file; pass the model it belongs to as well: zoo.load(NAME, checkpoint={str(path)!r})."
        )
    if name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.endswith("/"):
        raise TokenizerError(f"{path} does not exist; pass a folder written by save_pretrained / `zoo export`, "
                             "a .ckpt written by `zoo fit`, a registered name or a hub repo id.")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name_or_path):
        return Tokenizer.from_pretrained(fetch_pretrained_folder(name_or_path))
    model_entry(name_or_path)  # raises with close matches
    raise AssertionError("unreachable")


def _load_checkpoint(entry: ModelEntry, path: Path) -> Tokenizer:
    if path.is_dir() and (path / CONFIG_NAME).is_file() and '"architecture"' in (path / CONFIG_NAME).read_text():
        model = Tokenizer.from_pretrained(path)  # one of our own folders
        if not isinstance(model, entry.model_class):
            raise CheckpointError(f"{path} holds a {type(model).__name__} ({model.architecture}), not the "
                                  f"{entry.model_class.__name__} that {entry.name} is; load it by itself with "
                                  f"zoo.load({str(path)!r}), or pass a checkpoint of {entry.name}.")
        return entry.describe(model)
    try:
        state = upgrade_library_keys(read_checkpoint(path))  # our layout as written before the zoo named its quantizers' tensors
    except CheckpointError:
        if entry.official_loader is None:
            raise
        # a file that only the family's own reader opens (KARL's: training arguments beside the weights);
        # that reader is as strict (weights_only=True) and says itself why it cannot read one
        return entry.describe(entry.official_loader(path))
    if entry.official_loader is not None:
        with torch.device("meta"):  # key names only: no memory for a large model's random weights
            ours = set(entry.build().state_dict())
        if not set(state) <= ours:
            return entry.describe(entry.official_loader(path))
    model = entry.build()
    ours = set(model.state_dict())
    if entry.converter is not None and not set(state) <= ours:
        try:
            state = entry.converter(state, entry.config)
        except KeyError as e:
            raise CheckpointError(
                f"{path} is neither in the zoo's layout nor in the official layout of {entry.name} "
                f"(no key {e}); is it the checkpoint of another model?"
            ) from None
    load_state_dict_checked(model, state, source=f"{path} (for {entry.name})")
    return model.eval()
