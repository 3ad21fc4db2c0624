"""Pieces every training regime uses: building the tokenizer a recipe names, and knowing when its
codebooks are ready."""
from __future__ import annotations

import torch

import zoo
from zoo.tokenizer import Tokenizer, load_state_dict_checked


def build_tokenizer(name: str, overrides: dict | None = None, pretrained: bool = False,
                    checkpoint: str | None = None) -> Tokenizer:
    """A registered tokenizer: random (zoo.create) or with weights (zoo.load; `checkpoint` replaces the
    registered weight source). Overrides apply on top; loaded weights must still fit."""
    overrides = dict(overrides or {})
    if not pretrained and checkpoint is None:
        return zoo.create(name, **overrides)
    loaded = zoo.load(name, checkpoint=checkpoint)
    if not overrides:
        return loaded
    model = zoo.create(name, **overrides)
    load_state_dict_checked(model, loaded.state_dict(), source=f"{checkpoint or name} with overrides {overrides}")
    return model


def codebooks_ready(module: torch.nn.Module) -> bool:
    """False while any quantizer inside waits for its k-means init (its first training batch):
    validation before that, e.g. Lightning's sanity check, would have no codes to look at."""
    return all(m.is_initialised for m in module.modules() if hasattr(m, "is_initialised"))
