"""Lightning checkpoint -> hub folder (config.json + model.safetensors + README.md card).

The training skeleton builds every regime's tokenizer from a registered name plus overrides and keeps
it under `tokenizer.` (and its weight average under `ema.model.`; checkpoints of the codec regime
written before the skeleton keep it under `codec.`); the checkpoint's
hyper-parameters record the name and overrides, so the tokenizer is rebuilt from them without
Lightning or the training module. The weight average is exported when present.

The card is titled with the exported name (default: the output folder's name) and states the base
model, the recipe, the steps and the data (`zoo fit` records the recipe and data folders in its
checkpoints under `zoo_run`). A `zoo eval --json` report goes into the card only when it was measured
on the exported weights (its `weights_sha256`), unless `metrics_from_other_model` says otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from zoo.card import make_model_card
from zoo.errors import CheckpointError, TokenizerError
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
    recorded = ckpt.get("zoo_run") if isinstance(ckpt.get("zoo_run"), dict) else {}
    started = (f"the weights in {hparams['checkpoint']}" if hparams.get("checkpoint") else
               f"the released weights of {name}" if hparams.get("pretrained") else "random weights")
    run = {"base model": name, "started from": started, "recipe": recorded.get("recipe", "not recorded"),
           "data": recorded.get("data", "not recorded"), "overrides": overrides, "steps": ckpt.get("global_step"),
           "epochs": ckpt.get("epoch"),
           "weights": "exponential moving average" if weights is ema else "raw (no weight average in the run)"}
    return model.eval(), run


def check_reports(reports: dict[str, dict], weights_sha256: str, metrics_from_other_model: bool = False) -> dict[str, dict]:
    """The reports, each checked to be measured on the weights whose sha256 is `weights_sha256`; a report
    measured on other weights (or recording none) is an error, or with `metrics_from_other_model` kept
    and labelled with the model it was measured on."""
    checked = {}
    for label, report in reports.items():
        made_by = report.get("weights_sha256")
        if made_by == weights_sha256:
            checked[label] = report
            continue
        which = f"model {report.get('model', '?')!r}" + (f" (weights sha256 {made_by[:12]}...)" if made_by else
                                                           " (the report records no weights hash)")
        if not metrics_from_other_model:
            raise TokenizerError(
                f"the metrics report{f' {label!r}' if label else ''} was measured on {which}, not on the weights "
                f"being exported (sha256 {weights_sha256[:12]}...); evaluate this checkpoint (zoo eval --model "
                "CHECKPOINT ... --json REPORT), or pass --metrics-from-other-model to put it in the card as "
                "another model's numbers.")
        other = f"measured on another model: {report.get('model', 'unknown')}"
        checked[f"{label}, {other}" if label else other] = report
    return checked


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
                      description: str | None = None, license: str | None = None, name: str | None = None,
                      metrics_from_other_model: bool = False) -> Path:
    """Write a hub folder for the tokenizer trained in checkpoint `path`; returns the folder.

    reports: `zoo eval --json` reports by label (their metrics go into the card, and the reports
    themselves into metrics.json), each measured on these weights (see check_reports); about: more
    facts for the card's training table (hardware, ...; a key the run records, such as data, replaces
    it); name: the card's title (default: the name of the folder `out`)."""
    model, run = tokenizer_from_checkpoint(path, use_ema)
    reports = check_reports(reports or {}, model.weights_sha256(), metrics_from_other_model)
    base = model.name
    model.name = name or Path(out).resolve().name
    training = run | (about or {})
    if description is None:
        how = (f" with the recipe {training['recipe']} on {training['data']}" if training["recipe"] != "not recorded" else "")
        description = f"{model.name}: {base} trained from {training['started from']}{how} for {training['steps']} steps."
    card = make_model_card(model, metrics=report_metrics(reports), training=training, license=license,
                           description=description)
    folder = model.save_pretrained(out, model_card=card)
    if reports:
        (folder / METRICS_NAME).write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n")
    return folder
