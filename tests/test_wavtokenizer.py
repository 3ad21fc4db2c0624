"""WavTokenizer: the registered releases' token rates, the converter from the official Lightning checkpoint,
and the blocks (iSTFT head, chunked encoding). Parity with the official code: tests/parity_wavtokenizer.py."""
import math
import re

import pytest
import torch

import zoo
from zoo.errors import CheckpointError
from zoo.hub import WeightSource
from zoo.hub.audio_wavtokenizer import convert_official_wavtokenizer
from zoo.models.audio.wavtokenizer import WavTokenizer, WavTokenizerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(n_filters=4, dimension=32, lstm_layers=1, codebook_size=16, backbone_dim=64, backbone_intermediate_dim=64,
            backbone_layers=2)


def tiny(seed: int = 0, **fields) -> WavTokenizer:
    torch.manual_seed(seed)
    model = WavTokenizer(WavTokenizerConfig(**{**TINY, **fields})).eval()
    with torch.no_grad():  # live adaptive-norm tables (they start at constants), a codebook near real latents
        latents = model.encode_latent(speech_like(2, 24000, seed=seed + 100)).reshape(-1, model.latent_dimension)
        rows = latents[torch.randperm(latents.shape[0])[:model.config.codebook_size]]
        model.quantizer.vq._codebook.embed.copy_(rows + 0.1 * latents.std() * torch.randn_like(rows))
        for name, p in model.backbone.named_parameters():
            if "norm.scale" in name or "norm.shift" in name or name.endswith("gamma"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def speech_like(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 24000
    return 0.3 * torch.sin(2 * math.pi * (120 + 80 * torch.rand(batch, 1, 1, generator=g)) * t) \
        + 0.05 * torch.randn(batch, 1, samples, generator=g)


@pytest.mark.parametrize("name", zoo.list_models("wavtokenizer-*"))
def test_each_release_codes_its_named_tokens_per_second(name):
    rate = int(re.search(r"-(\d+)-24k$", name).group(1))
    with torch.device("meta"):
        info = zoo.model_entry(name).build().info()
    assert info["tokens_per_second"] == info["frames_per_second"] == rate and info["sample_rate"] == 24000
    assert info["codebook_sizes"] == [4096] and info["bits_per_second"] == rate * 12
    config = zoo.model_entry(name).config
    model = tiny(strides=config.strides, n_fft=config.n_fft)  # the release's strides, a tiny rest
    tokens = model.encode(speech_like(1, 24000))
    assert tokens.codes.shape == (1, 1, rate) and model.decode(tokens).shape == (1, 1, 24000)


def official_layout(model: WavTokenizer) -> dict[str, torch.Tensor]:
    """Our state dict written back in the official checkpoint's names, with its training-only parts."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("encoder.layers."):
            index, rest = key.removeprefix("encoder.layers.").split(".", 1)
            rest = (rest.replace("conv.parametrizations.weight.original0", "conv.weight_g")
                    .replace("conv.parametrizations.weight.original1", "conv.weight_v"))
            rest = re.sub(r"(^|\.)conv\.(weight_g|weight_v|bias)$", r"\1conv.conv.\2", rest)
            out[f"feature_extractor.encodec.encoder.model.{index}.{rest}"] = value
        elif key.startswith("quantizer."):
            name = {"codebook": "embed", "code_sum": "embed_avg", "code_usage": "cluster_size", "initialised": "inited"}
            value = value.reshape(1).float() if key.endswith("initialised") else value
            out[f"feature_extractor.encodec.quantizer.vq.layers.0._codebook.{name[key.split('.')[-1]]}"] = value
        else:
            out[key] = value
    out.update({"feature_extractor.encodec.decoder.model.0.conv.conv.weight_v": torch.zeros(2, 1, 7),
                "multiperioddisc.discriminators.0.convs.0.weight": torch.zeros(3),
                "multiresddisc.discriminators.0.convs.0.weight": torch.zeros(3),
                "dac.discriminators.0.weight": torch.zeros(3), "melspec_loss.mel_spec.mel_scale.fb": torch.zeros(3)})
    return out


def test_the_official_lightning_checkpoint_converts_to_the_same_codes_and_audio(tmp_path):
    source = tiny(seed=1)
    assert not any(k.startswith("feature_extractor.encodec.quantizer") for k in source.state_dict())
    official = official_layout(source)
    # a Lightning 1.x checkpoint: the weights under 'state_dict', beside plain training facts
    torch.save({"state_dict": official, "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.8.6",
                "hyper_parameters": {"sample_rate": 24000, "mel_loss_coeff": 45}}, tmp_path / "official.ckpt")
    zoo.register("test-tiny-wavtokenizer", WavTokenizer, WavTokenizerConfig(**TINY), description="", license="",
                 source=WeightSource("test-org/tiny-wavtokenizer", "official.ckpt"),
                 converter=convert_official_wavtokenizer)
    loaded = zoo.load("test-tiny-wavtokenizer", checkpoint=tmp_path / "official.ckpt")
    wav = speech_like(2, 24000 + 123)
    tokens, expected = loaded.encode(wav), source.encode(wav)
    assert torch.equal(tokens.codes, expected.codes) and len(tokens.codes.unique()) > 1
    torch.testing.assert_close(loaded.decode(tokens), source.decode(expected), rtol=0, atol=0)
    assert loaded.decode(tokens).shape == wav.shape


def test_a_checkpoint_of_another_layout_is_refused_naming_its_keys():
    official = official_layout(tiny())
    official["generator.conv_pre.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"keys \['generator.conv_pre.weight'\] that are not in the official "
                                              "WavTokenizer layout"):
        convert_official_wavtokenizer(official, WavTokenizerConfig(**TINY))


def test_chunked_encoding_gives_the_whole_clip_codes_and_decode_trims_to_the_input():
    model = tiny(seed=2)
    wav = speech_like(2, 5 * 320 * 7 + 77, seed=3)
    whole = model.encode(wav)
    assert whole.codes.shape == (2, 1, math.ceil(wav.shape[-1] / 320))
    assert len(whole.codes.unique()) > 1
    assert torch.equal(model.encode(wav, chunk_seconds=3 * 320 / 24000).codes, whole.codes)
    assert torch.equal(model.encode(wav[1:]).codes, whole.codes[1:])
    assert model.decode(whole).shape == wav.shape


def test_the_istft_head_inverts_an_stft_with_same_padding():
    """The head's inverse STFT undoes torch.stft (Hann window, hop n_fft / 4) away from the edges."""
    from zoo.blocks.vocos import inverse_stft_same

    n_fft, hop = 64, 16
    signal = torch.randn(2, 40 * hop, generator=torch.Generator().manual_seed(0))
    window = torch.hann_window(n_fft)
    pad = (n_fft - hop) // 2
    spectrum = torch.stft(torch.nn.functional.pad(signal, (pad, pad)), n_fft, hop, window=window, center=False,
                          return_complex=True)
    rebuilt = inverse_stft_same(spectrum, window, hop)
    assert rebuilt.shape == (2, spectrum.shape[-1] * hop)
    torch.testing.assert_close(rebuilt[:, n_fft:-n_fft], signal[:, n_fft:rebuilt.shape[-1] - n_fft], atol=1e-5, rtol=0)


def test_the_codebook_search_is_the_fused_nearest_code():
    """The encode's search is zoo.kernels.nearest_code (no N x K distance matrix), equal to the argmin."""
    model = tiny(seed=4)
    latent = model.encode_latent(speech_like(1, 24000))
    codes = model.quantizer.encode(latent)
    reference = torch.cdist(latent[0], model.quantizer.codebook).argmin(-1)
    assert torch.equal(codes[0], reference)
