"""The embedded default tokenizers: trained here with the project's own recipes and shipped inside
the package (hub/weights/<name>/, each a save_pretrained folder with its model card and the eval
reports behind the card's numbers), so that a machine with no network can tokenize at once.

  zoo-image-onedpiece-64  recipes/onedpiece/zoo-image.yaml  64x64 images, up to 64 tokens (any prefix)
  zoo-speech-rvq-16k      recipes/speech/zoo-speech.yaml    16 kHz speech, 8 x 50 tokens per second
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from zoo.hub.registry import register
from zoo.tokenizer import CONFIG_NAME, tokenizer_class

WEIGHTS = Path(__file__).resolve().parent / "weights"
DEFAULT_IMAGE_MODEL = "zoo-image-onedpiece-64"
DEFAULT_SPEECH_MODEL = "zoo-speech-rvq-16k"
_DESCRIPTIONS = {
    DEFAULT_IMAGE_MODEL: "A small One-D-Piece (1D tokens, tail token drop: any prefix of the 64 tokens decodes) "
                         "for 64x64 images, trained from scratch on a CPU on the zoo's offline photo set.",
    DEFAULT_SPEECH_MODEL: "A small SpeechTokenizer-style RVQ codec (16 kHz, 8 codebooks of 1024 at 50 frames/s) "
                          "whose first layer is distilled toward Whisper tiny.en's encoder, trained from scratch "
                          "on a CPU on the zoo's espeak-ng speech set.",
}


def _register_embedded(name: str) -> None:
    folder = WEIGHTS / name
    if not (folder / CONFIG_NAME).is_file():  # a partial checkout or install: the rest of the zoo still works
        warnings.warn(f"the embedded default {name} is missing from {folder}; reinstall tokenizer-zoo to get it.")
        return
    values = json.loads((folder / CONFIG_NAME).read_text())
    model_class = tokenizer_class(values.pop("architecture"), source=str(folder / CONFIG_NAME))
    values.pop("zoo_version", None)
    register(name, model_class, model_class.config_class.from_dict(values), description=_DESCRIPTIONS[name],
             license="Apache-2.0", embedded=folder, paper="trained here: see the model card in the folder")


for _name in _DESCRIPTIONS:
    _register_embedded(_name)
