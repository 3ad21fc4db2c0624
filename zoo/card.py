"""Model cards: the README.md written beside config.json and model.safetensors."""
from __future__ import annotations

import json


def make_model_card(tokenizer, metrics: dict | None = None, training: dict | None = None,
                    license: str | None = None, description: str | None = None) -> str:
    """A Hugging Face style card: YAML front matter, what the model is, how to load it,
    its token budget, and (when given) how it was trained and what it measured.

    license / description default to what the hub attached to the model when it built it from a
    registered entry (`tokenizer.license`, `tokenizer.description`)."""
    info = tokenizer.info()
    name = tokenizer.name or tokenizer.architecture
    license = license or tokenizer.license or "unknown"
    description = description or tokenizer.description or f"A {tokenizer.architecture} {tokenizer.modality} tokenizer."
    lines = [
        "---",
        "library_name: tokenizer-zoo",
        f"license: {_licence_id(license)}",
        "tags:",
        f"- {tokenizer.modality}-tokenizer",
        f"- {tokenizer.architecture}",
        "---",
        "",
        f"# {name}",
        "",
        description,
        "",
        "## Use",
        "",
        "```python",
        "import zoo",
        "tok = zoo.load(\"path/to/this/folder\")",
        "tokens = tok.encode(x)      # " + ("images: float (B, 3, H, W) in [0, 1]" if tokenizer.modality == "image"
                                           else f"audio: float (B, 1, T) at {info.get('sample_rate')} Hz"),
        "x_hat = tok.decode(tokens)",
        "```",
        "",
        "## Tokens",
        "",
        "| property | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in info.items()]
    if training:
        lines += ["", "## Training", "", "| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in training.items()]
    if metrics:
        lines += ["", "## Measured", "", "| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    lines += ["", f"Licence of these weights: {license}.", ""]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _licence_id(licence: str) -> str:
    known = {"apache-2.0": "apache-2.0", "mit": "mit", "cc-by-4.0": "cc-by-4.0", "cc-by-nc-4.0": "cc-by-nc-4.0"}
    return known.get(licence.lower().split()[0] if licence else "", "other")

