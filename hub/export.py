"""Lightning checkpoint -> hub folder (config.json + model.safetensors + README.md card).

The training skeleton builds every regime's tokenizer from a registered name plus overrides and keeps
it under `tokenizer.` (and its weight average under `ema.model.`; checkpoints of the codec regime
written before the skeleton keep it under `codec.`); the checkpoint's
hyper-parameters record the name and overrides, so the tokenizer is rebuilt from them without
Lightning or the training module. The weight average is exported when present.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from zoo.card import make_model_card
from zoo.errors import CheckpointError
from zoo.io import load_state_dict_checked
from zoo.tokenizer import Tokenizer

# (name key, overrides key, state-dict prefix): the skeleton's, then the codec regime's before it
REGIMES = (("tokenizer", "tokenizer_overrides", "tokenizer."), ("codec", "codec_overrides", "codec."))
EMA_PREFIX = "ema.model."
METRICS_NAME = "metrics.json"  # the eval reports behind the card's numbers


def tokenizer_from_checkpoint(path: str | Path, use_ema: bool = True) -> tuple[Tokenizer, dict]:
    """The tokenizer a Lightning checkpoint trained, and facts about the run for the card."""
    import zoo

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} could not be read with weights_only=True ({type(e).__name__}); export reads Lightning "
            "checkpoints whose hyper-parameters are plain values."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of a zoo training module (no state_dict / hyper_parameters).")
    hparams, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    for name_key, overrides_key, prefix in REGIMES:
        if name_key in hparams:
            break
    else:
        raise CheckpointError(f"{path} names no tokenizer in its hyper-parameters (expected 'tokenizer' or 'codec').")
    name, overrides = hparams[name_key], hparams[overrides_key] or {}
    # checkpoints trained before config.json held the architecture only record training options among the
    # overrides; they shaped the run, not the model, so the model is built without them
    moved = zoo.model_entry(name).model_class.config_class.moved_keys
    model = zoo.create(name, **{k: v for k, v in overrides.items() if k not in moved})
    ema = {k.removeprefix(EMA_PREFIX): v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    weights = ema if (use_ema and ema) else {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    load_state_dict_checked(model, weights, source=f"{path} ({'weight average' if weights is ema else prefix.rstrip('.')})")
    run = {"base model": name, "overrides": overrides, "steps": ckpt.get("global_step"), "epochs": ckpt.get("epoch"),
           "weights": "exponential moving average" if weights is ema else "raw (no weight average in the run)"}
    return model.eval(), run


def report_metrics(reports: dict[str, dict]) -> dict[str, float]:
    """`zoo eval --json` reports by label -> flat card rows, e.g. 'psnr (tokens=16, held-out)'.
    An empty label adds nothing to the row name (one report)."""
    rows = {}
    for label, report in reports.items():
        for row in report["rows"]:
            setting = [f"{k}={v}" for k, v in row["setting"].items()] + ([label] if label else [])
            rows |= {f"{k} ({', '.join(setting)})": v for k, v in row["metrics"].items()}
    return rows


def export_checkpoint(path: str | Path, out: str | Path, reports: dict[str, dict] | None = None,
                      use_ema: bool = True, about: dict[str, str] | None = None,
                      description: str | None = None, license: str | None = None, name: str | None = None) -> Path:
    """Write a hub folder for the tokenizer trained in checkpoint `path`; returns the folder.

    reports: `zoo eval --json` reports by label (their metrics go into the card, and the reports
    themselves into metrics.json); about: more facts for the card's training table (data,
    recipe, hardware); name: what the card calls the model (default: the base model's name)."""
    model, run = tokenizer_from_checkpoint(path, use_ema)
    model.name = name or model.name
    reports = reports or {}
    card = make_model_card(model, metrics=report_metrics(reports), training=run | (about or {}), license=license,
                           description=description or f"{model.name} trained with the zoo's recipes ({run['steps']} steps).")
    folder = model.save_pretrained(out, model_card=card)
    if reports:
        (folder / METRICS_NAME).write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n")
    return folder
