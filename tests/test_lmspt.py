"""LM-SPT: frame rates of the registered models, the converter from the released layout, semantic-only
encoding and decoding, and the training pass. Parity with the official code: tests/parity_lmspt.py."""
import math
import re

import pytest
import torch

import zoo
from zoo.errors import CheckpointError, TokenizerError
from zoo.hub import WeightSource
from zoo.hub.audio_lmspt import convert_official_lmspt
from zoo.models.audio.lmspt import LMSPT, LMSPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(encoder_channels=2, encoder_strides=(4, 6, 10), latent_dim=16, decoder_channels=16, decoder_rates=(10, 6, 4),
            semantic_codebook_size=64, acoustic_codebook_size=32, acoustic_quantizers=3, codebook_dim=4,
            aux_decoder_channels=16, aux_decoder_rates=(8, 5, 4))  # 240 samples a frame at 24 kHz (160 at 16 kHz)


def tiny(seed: int = 0) -> LMSPT:
    torch.manual_seed(seed)
    model = LMSPT(LMSPTConfig(**TINY)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):  # Snake starts at ones: make it live
                p.add_(0.2 * torch.randn_like(p)).abs_().add_(0.1)
    return model


def speech_like(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 24000
    return 0.3 * torch.sin(2 * math.pi * (150 + 100 * torch.rand(batch, 1, 1, generator=g)) * t) \
        + 0.05 * torch.randn(batch, 1, samples, generator=g)


@pytest.mark.parametrize("name", zoo.list_models("lmspt-*"))
def test_each_model_codes_its_named_frame_rate(name):
    rate = float(re.search(r"-([\d.]+)hz$", name).group(1))
    with torch.device("meta"):
        info = zoo.model_entry(name).build().info()
    assert info["frames_per_second"] == rate and info["sample_rate"] == 24000
    assert info["codebook_sizes"] == [16384] + [4096] * 7 and info["bits_per_second"] == rate * (14 + 7 * 12)


def official_layout(model: LMSPT) -> dict[str, torch.Tensor]:
    """Our state dict in the released file's names (legacy weight-norm keys, the quantizer's statistics)."""
    out = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        key = key.replace("semantic_quantizer.", "quantizer.rvq_first.").replace("acoustic_quantizer.", "quantizer.rvq_rest.")
        out[key] = value
    out["quantizer.semantic_vocab_usage"] = torch.rand(1, model.config.semantic_codebook_size)
    out["quantizer.acoustic_vocab_usage"] = torch.rand(model.config.acoustic_quantizers, model.config.acoustic_codebook_size)
    return out


def test_the_released_layout_converts_to_the_same_codes_and_audio(tmp_path):
    from safetensors.torch import save_file

    source = tiny(seed=1)
    official = official_layout(source)
    assert "quantizer.rvq_rest.quantizers.2.in_proj.weight_g" in official
    save_file({k: v.contiguous() for k, v in official.items()}, str(tmp_path / "released.safetensors"))
    zoo.register("test-tiny-lmspt", LMSPT, LMSPTConfig(**TINY), description="", license="",
                 source=WeightSource("test-org/tiny-lmspt", "released.safetensors"), converter=convert_official_lmspt)
    loaded = zoo.load("test-tiny-lmspt", checkpoint=tmp_path / "released.safetensors")
    wav = speech_like(2, 24000 + 77)
    tokens, expected = loaded.encode(wav), source.encode(wav)
    assert torch.equal(tokens.codes, expected.codes) and tokens.codes.shape == (2, 4, math.ceil(wav.shape[-1] / 240))
    assert all(len(tokens.codes[:, k].unique()) > 1 for k in range(4))
    torch.testing.assert_close(loaded.decode(tokens), source.decode(expected), rtol=0, atol=0)
    official["generator.conv_pre.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"keys \['generator.conv_pre.weight'\] that are not in the official LM-SPT"):
        convert_official_lmspt(official, LMSPTConfig(**TINY))


def test_semantic_tokens_alone_decode_through_the_auxiliary_decoder():
    model = tiny(seed=2)
    wav = speech_like(2, 24000, seed=3)
    whole, semantic = model.encode(wav), model.encode(wav, semantic_only=True)
    assert semantic.codes.shape == (2, 1, whole.codes.shape[-1]) and torch.equal(semantic.codes, whole.codes[:, :1])
    assert torch.equal(model.encode(wav, n_q=2).codes, whole.codes[:, :2])  # prefixes are the same codes
    speech = model.decode(semantic)
    assert speech.shape == wav.shape and torch.isfinite(speech).all()
    # the auxiliary decoder's 16 kHz speech, resampled: not the main decoder's output from the semantic layer
    main_decoder = model._decode_latent(model.decoder, model.semantic_quantizer.codes_to_latents(
        semantic.codes.transpose(1, 2)), wav.shape[-1])
    assert (speech - main_decoder).abs().max() > 1e-3
    assert model.decode(whole).shape == wav.shape
    with pytest.raises(TokenizerError, match="n_q must be between 1 and 4, got 5"):
        model.encode(wav, n_q=5)


def test_the_training_pass_feeds_both_decoders_and_every_codebook():
    model = tiny(seed=4).train()
    wav = speech_like(4, 4800, seed=5)
    out = model(wav)
    frames = 4800 // 240
    assert out.reconstruction.shape == wav.shape and out.codes.shape == (4, 4, frames)
    assert out.layer_quantized.shape == (4, 4, frames, 16) and out.semantic_features.shape == (4, frames, 16)
    assert out.semantic_reconstruction.shape == (4, 1, 3200)  # the same 0.2 s at 16 kHz
    loss = out.reconstruction.abs().mean() + out.semantic_reconstruction.abs().mean() + out.aux_loss
    loss.backward()
    for part in ("semantic_encoder", "acoustic_encoder", "decoder", "aux_decoder"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part + ".")]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), part
    codebooks = [model.semantic_quantizer.quantizers[0].codebook.weight.grad,
                 *(q.codebook.weight.grad for q in model.acoustic_quantizer.quantizers)]
    assert all(g is not None and g.abs().sum() > 0 for g in codebooks)  # the codebook losses reach every codebook


def resynthesis_loss(model, teacher) -> torch.Tensor:
    """SemanticResynthesis through `teacher` on a batch of two speech-like clips (0.2 s and 0.15 s)."""
    from zoo.training.speech_data import SpeechBatch
    from zoo.training.terms import SemanticResynthesis, TeacherTargets

    term = SemanticResynthesis(teacher)
    term.bind(model)
    wav = speech_like(2, 4800, seed=7)
    lengths = torch.tensor([4800, 3600])
    batch = SpeechBatch(wav, lengths, torch.zeros(2, dtype=torch.long), lengths, ["", ""], ["a", "b"])
    return term(model(wav), TeacherTargets(batch, 24000, model.hop_length, 4800 // 240))


def test_the_resynthesis_term_trains_the_semantic_path_only_through_the_frozen_teacher():
    from zoo.teachers import RandomSpeechTeacher

    model = tiny(seed=6).train()
    teacher = RandomSpeechTeacher(dim=8, sample_rate=16000, hop_length=320)
    loss = resynthesis_loss(model, teacher)
    assert loss.ndim == 0 and loss > 0
    loss.backward()
    grads = lambda part: [p.grad for n, p in model.named_parameters() if n.startswith(part + ".")]  # noqa: E731
    assert any(g is not None and g.abs().sum() > 0 for g in grads("semantic_encoder"))
    assert any(g is not None and g.abs().sum() > 0 for g in grads("aux_decoder"))
    assert all(g is None or g.abs().sum() == 0 for g in grads("acoustic_encoder") + grads("decoder"))
    assert all(p.grad is None for p in teacher.parameters())  # frozen: gradients pass through, never into it


def test_the_resynthesis_term_says_what_it_needs():
    from zoo.teachers import RandomSpeechTeacher
    from zoo.training.terms import SemanticResynthesis

    class NoGradients(RandomSpeechTeacher):
        passes_gradients = False

    with pytest.raises(TokenizerError, match="needs a teacher that passes gradients to its input; NoGradients does not"):
        SemanticResynthesis(NoGradients()).bind(tiny())
    codec = zoo.create("speechtokenizer-hubert-avg", n_filters=4, dimension=32, lstm_layers=0, semantic_dimension=16)
    with pytest.raises(TokenizerError, match="rebuilds speech from its semantic tokens alone .* SpeechTokenizer does not"):
        SemanticResynthesis(RandomSpeechTeacher()).bind(codec)
