"""Pieces every training regime uses: building the tokenizer a recipe names, knowing when its
codebooks are ready, and keeping held-out data out of training."""
from __future__ import annotations

from pathlib import Path

import torch

import zoo
from zoo.errors import TokenizerError
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


HELD_OUT_NAMES = ("val", "test", "held-out", "heldout")  # folders `zoo data` (and most data sets) keep out of training


def check_held_out(train_dir: str | Path, val_dir: str | Path | None = None) -> None:
    """Refuse a training folder that would read held-out files: the folders are read recursively, so
    a `train_dir` holding a `val/` (or `test/`) folder, or `val_dir` inside it, would train on the data
    meant to measure the model. The same folder for both is allowed (validation on the training data)."""
    train = Path(train_dir).expanduser().resolve()
    held = [train / n for n in HELD_OUT_NAMES if (train / n).is_dir()]
    if held:
        hint = f" --data.init_args.train_dir {Path(train_dir) / 'train'}" if (train / "train").is_dir() else " a folder of training files only"
        raise TokenizerError(
            f"train_dir {train_dir} holds the held-out folder {held[0].name}/ and training reads folders recursively; "
            f"give{hint} (and --data.init_args.val_dir {Path(train_dir) / held[0].name} to validate on it).")
    if val_dir is not None:
        val = Path(val_dir).expanduser().resolve()
        if train in val.parents:  # the same folder for both is a choice in plain sight (smoke tests): allowed
            raise TokenizerError(f"val_dir {val_dir} lies inside train_dir {train_dir}, so training would read its "
                                 "held-out files; give two separate folders.")
