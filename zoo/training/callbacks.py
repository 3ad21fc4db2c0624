"""Callbacks the recipes add to every run."""
from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class ResumableRandomState(Callback):
    """Keeps the Python, NumPy and torch random states in each checkpoint and restores them on
    resume, so a run resumed from a checkpoint draws the same random numbers (crops, token drops,
    quantizer dropout) as one that was never interrupted. Stored as plain tensors and lists, so
    checkpoints stay readable with weights_only=True."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["random_state"] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": _to_lists(random.getstate()),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        state = checkpoint.get("random_state")
        if state is None:  # a checkpoint written without this callback
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_to_tuples(state["python"]))
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
