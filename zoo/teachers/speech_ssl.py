"""Self-supervised speech models (HuBERT, wav2vec 2.0, WavLM) from torchaudio's pipelines as
frozen teachers. Weights are never downloaded here: they are read from `weights_path`, or from
the torch hub cache where torchaudio would have put them (`<torch.hub.get_dir()>/checkpoints/`)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zoo.errors import TokenizerError, WeightsUnavailableError
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features


def _bundle(name: str):
    import torchaudio

    bundle = getattr(torchaudio.pipelines, name, None)
    if bundle is None or not hasattr(bundle, "_params"):
        known = [n for n in dir(torchaudio.pipelines) if n.startswith(("HUBERT", "WAV2VEC2", "WAVLM"))]
        raise TokenizerError(f"{name!r} is not a torchaudio speech SSL pipeline; choose one of {known}.")
    return bundle


def default_weights_path(bundle_name: str) -> Path:
    """Where torchaudio caches the bundle's weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_bundle(bundle_name)._path).name


class SpeechSSLTeacher(Teacher):
    """Hidden states of a torchaudio wav2vec2-family model, (B, T, D) at 50 frames per second.

    bundle: a torchaudio.pipelines name, e.g. 'HUBERT_BASE', 'WAV2VEC2_BASE', 'WAVLM_BASE'.
    layer: transformer layer to take (1-based); None averages all layers (SpeechTokenizer and
    DM-Codec distil from the average of HuBERT's layers).
    weights_path: the bundle's .pth file; default: the torch hub cache."""

    input_kind = "audio"
    modality = "speech"
    passes_gradients = True

    def __init__(self, bundle: str = "HUBERT_BASE", layer: int | None = None, weights_path: str | None = None):
        from torchaudio.pipelines._wav2vec2 import utils as pipeline_utils

        from zoo.io import read_checkpoint

        spec = _bundle(bundle)
        path = Path(weights_path).expanduser() if weights_path else default_weights_path(bundle)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"the {bundle} weights are not at {path} and cannot be downloaded here; copy "
                f"{Path(spec._path).name} (from https://download.pytorch.org/torchaudio/models/) there "
                "or pass weights_path.")
        model = pipeline_utils._get_model(spec._model_type, spec._params)
        model.load_state_dict(read_checkpoint(path))
        self._setup(model, spec.sample_rate, layer, bool(getattr(spec, "_normalize_waveform", False)))

    @classmethod
    def from_model(cls, model: nn.Module, sample_rate: int = 16000, layer: int | None = None,
                   normalize_waveform: bool = False) -> "SpeechSSLTeacher":
        """Wrap an already built torchaudio Wav2Vec2Model (e.g. a tiny random one in tests)."""
        teacher = cls.__new__(cls)
        teacher._setup(model, sample_rate, layer, normalize_waveform)
        return teacher

    def _setup(self, model: nn.Module, sample_rate: int, layer: int | None, normalize_waveform: bool) -> None:
        num_layers = len(model.encoder.transformer.layers)
        if layer is not None and not 1 <= layer <= num_layers:
            raise TokenizerError(f"layer must lie in [1, {num_layers}] for this model, got {layer}.")
        stride = 1
        for conv in model.feature_extractor.conv_layers:
            stride *= conv.conv.stride[0]
        dim = model.encoder.transformer.layers[0].attention.k_proj.out_features
        Teacher.__init__(self, dim, frame_rate=sample_rate / stride, sample_rate=sample_rate)
        self.model, self.layer, self.normalize_waveform = model, layer, normalize_waveform
        self.freeze()

    def _features(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherFeatures:
        if bool((lengths == wav.shape[-1]).all()):
            return self._run(wav[:, 0], lengths)
        # The base models' feature extractor normalises over all samples (group norm) and the
        # positional conv sees neighbours, so zero padding would change the valid frames: run
        # items of different lengths one by one.
        rows = [self._run(wav[i:i + 1, 0, : int(lengths[i])], lengths[i:i + 1]) for i in range(wav.shape[0])]
        return pad_features([r.features[0, : int(r.lengths[0])] for r in rows])

    def _run(self, x: torch.Tensor, lengths: torch.Tensor) -> TeacherFeatures:
        """x: (B, T) of equal-length clips."""
        if self.normalize_waveform:  # the large models were trained on per-utterance normalised audio
            x = torch.nn.functional.layer_norm(x, x.shape[-1:])
        layers, _ = self.model.extract_features(x, None, num_layers=self.layer)
        out = layers[-1] if self.layer is not None else torch.stack(layers).mean(0)
        frames = torch.full((x.shape[0],), out.shape[1], dtype=torch.long, device=x.device)
        return TeacherFeatures(out, frames)
