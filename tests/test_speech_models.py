"""SEANet blocks, the shared RVQ codec (SpeechTokenizer / DM-Codec / FuseCodec), chunked
encoding, and the converter from the official SpeechTokenizer / DM-Codec key layout."""
from __future__ import annotations

import math
import re

import pytest
import torch

import zoo
from zoo.blocks.activations import Snake, make_activation
from zoo.blocks.seanet import PaddedConvTranspose1d, SEANetDecoder, SEANetEncoder
from zoo.errors import CheckpointError, TokenizerError
from zoo.hub.audio_rvq import convert_official_rvq_codec
from zoo.models.audio.dmcodec import DMCodec, DMCodecConfig
from zoo.models.audio.fusecodec import FuseCodec, FuseCodecConfig
from zoo.models.audio.rvq_codec import CodecOutput
from zoo.models.audio.speechtokenizer import SpeechTokenizer, SpeechTokenizerConfig
from zoo.tokenizer import TokenizerOutput, load_state_dict_checked

TINY = dict(n_filters=4, strides=(4, 2), dimension=16, semantic_dimension=8, num_quantizers=3,
            codebook_size=32, lstm_layers=0, bidirectional_encoder_lstm=False)


def backbone(**changes):
    args = dict(channels=1, dimension=16, n_filters=4, ratios=(4, 2), n_residual_layers=1, activation="ELU",
                kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_base=2, causal=False,
                pad_mode="reflect", true_skip=False, compress=2, lstm_layers=0)
    args.update(changes)
    return args


def tiny_codec(cls=SpeechTokenizer, config_cls=SpeechTokenizerConfig, **changes):
    torch.manual_seed(0)
    return cls(config_cls(**{**TINY, **changes})).eval()


def wave(batch=2, samples=1000, seed=0):
    return torch.randn(batch, 1, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


# ---- blocks ---------------------------------------------------------------------------------

def test_snake_matches_formula_with_per_channel_alpha():
    act = Snake(3)
    with torch.no_grad():
        act.alpha.copy_(torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1))
    x = torch.randn(2, 3, 5)
    alpha = act.alpha.detach()
    assert torch.allclose(act(x), x + torch.sin(alpha * x) ** 2 / alpha, atol=1e-6)
    with pytest.raises(TokenizerError):
        make_activation("GELU", 3)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 37, 64, 1001])
def test_seanet_frame_counts(causal, length):
    encoder = SEANetEncoder(**backbone(causal=causal), bidirectional=False)
    decoder = SEANetDecoder(**backbone(causal=causal))
    z = encoder(torch.randn(1, 1, length))
    assert z.shape == (1, 16, math.ceil(length / 8))
    assert decoder(z).shape == (1, 1, z.shape[-1] * 8)


def test_causal_encoder_ignores_the_future():
    encoder = SEANetEncoder(**backbone(causal=True), bidirectional=False).eval()
    x = torch.randn(1, 1, 400)
    y = x.clone()
    y[..., 200:] = torch.randn(1, 1, 200)
    with torch.no_grad():
        a, b = encoder(x), encoder(y)
    assert torch.equal(a[..., :25], b[..., :25])  # frames whose windows end before sample 200
    assert not torch.equal(a[..., 26:], b[..., 26:])


def test_receptive_field_is_unbounded_with_an_lstm():
    assert SEANetEncoder(**backbone(), bidirectional=False).receptive_field > 0
    assert SEANetEncoder(**backbone(lstm_layers=1), bidirectional=True).receptive_field is None


def test_weight_norm_uses_parametrizations():
    keys = SEANetEncoder(**backbone(), bidirectional=False).state_dict()
    assert "layers.0.conv.parametrizations.weight.original0" in keys
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)


# ---- codec API --------------------------------------------------------------------------------

def test_encode_decode_shapes_and_bitrate_control():
    codec = tiny_codec()
    wav = wave(samples=1001)
    tokens = codec.encode(wav)
    assert tokens.codes.shape == (2, 3, math.ceil(1001 / 8)) and tokens.codes.dtype == torch.long
    assert codec.decode(tokens).shape == wav.shape
    two = codec.encode(wav, n_q=2)
    assert torch.equal(two.codes, tokens.codes[:, :2])  # residual layers do not depend on later ones
    assert codec.decode(two).shape == wav.shape
    assert not torch.equal(codec.decode(two), codec.decode(tokens))
    assert torch.equal(codec.semantic_tokens(wav), tokens.codes[:, 0])
    assert codec.decode(tokens.codes[:, :1]).shape == (2, 1, tokens.codes.shape[-1] * 8)  # bare codes: no length
    with pytest.raises(TokenizerError):
        codec.encode(wav, n_q=4)
    with pytest.raises(TokenizerError):
        codec.decode(torch.zeros(2, 4, 5, dtype=torch.long))


def test_other_sample_rate_is_resampled_with_a_warning():
    codec = tiny_codec()
    with pytest.warns(UserWarning, match="resampling"):
        tokens = codec.encode(wave(batch=1, samples=400), sample_rate=8000)
    assert tokens.codes.shape[-1] == 100  # 800 samples at 16 kHz


def test_untrained_kmeans_codebooks_refuse_to_encode():
    codec = tiny_codec()
    codec.set_training_options(kmeans_init=True)
    with pytest.raises(TokenizerError, match="not initialised"):
        codec.encode(wave())


@pytest.mark.parametrize("lstm_layers", [0, 1])
def test_chunked_encode_and_decode_equal_the_whole_clip(lstm_layers):
    codec = tiny_codec(lstm_layers=lstm_layers, bidirectional_encoder_lstm=bool(lstm_layers))
    wav = wave(samples=4000 + 77)
    whole = codec.encode(wav, chunk_seconds=100.0)
    chunked = codec.encode(wav, chunk_seconds=0.0125)  # 25-frame chunks with context: 21 chunks
    assert torch.equal(whole.codes, chunked.codes)
    y_whole = codec._decode(whole, chunk_seconds=100.0)
    y_chunked = codec._decode(whole, chunk_seconds=0.0125)
    assert y_chunked.shape == y_whole.shape == wav.shape
    assert torch.allclose(y_chunked, y_whole, atol=1e-6)


def test_too_little_context_would_change_the_codes():
    """The context the chunked path reads is needed: chunks without it give other codes."""
    from zoo.models.audio.rvq_codec import _run_in_chunks

    codec = tiny_codec()
    wav = wave(samples=4000)
    with torch.no_grad():
        whole = codec.encoder(wav)
        no_context = _run_in_chunks(codec.encoder.layers, wav, 500, 25, 0, in_per_frame=8, out_per_frame=1)
    assert no_context.shape == whole.shape and not torch.allclose(no_context, whole, atol=1e-4)


def test_forward_returns_codec_output_with_distillation_features():
    codec = tiny_codec().train()
    wav = wave(samples=800)
    out = codec(wav)
    assert isinstance(out, CodecOutput)
    reconstruction, codes, aux_loss = out[:3]
    assert TokenizerOutput._fields == CodecOutput._fields[:3]
    n = 100
    assert reconstruction.shape == wav.shape and codes.shape == (2, 3, n) and aux_loss.ndim == 0
    assert out.latent.shape == out.quantized.shape == (2, n, 16)
    assert out.layer_quantized.shape == (2, 3, n, 16) and out.semantic_features.shape == (2, n, 8)
    # the layer outputs are the codebook rows of the codes
    rows = codec.quantizer.state_dict()["layers.1.codebook"][codes[:, 1]]
    assert torch.allclose(out.layer_quantized[:, 1], rows, atol=1e-6)
    # the distillation feature trains the encoder (straight-through) and the semantic head
    out.semantic_features.pow(2).mean().backward()
    assert codec.semantic_head.weight.grad.abs().sum() > 0
    assert codec.encoder.layers[0].conv.parametrizations.weight.original1.grad.abs().sum() > 0


def test_save_and_reload_gives_the_same_codes(tmp_path):
    codec = tiny_codec(DMCodec, DMCodecConfig, activation="Snake")
    wav = wave(batch=1)
    codec.save_pretrained(tmp_path / "dm")
    again = zoo.load(tmp_path / "dm")
    assert isinstance(again, DMCodec)
    assert torch.equal(again.encode(wav).codes, codec.encode(wav).codes)


def test_fusecodec_fusion_changes_the_latent_only_with_features():
    codec = tiny_codec(FuseCodec, FuseCodecConfig, context_dimension=12, fusion_heads=2)
    codec.set_training_options(modality_dropout=0.0)
    wav = wave(samples=800)
    semantic, context = torch.randn(2, 100, 8), torch.randn(2, 7, 12)
    with torch.no_grad():
        plain = codec.encode_latent(wav)
        assert torch.equal(codec.fused_latent(wav), plain)
        assert not torch.allclose(codec.fused_latent(wav, semantic, context), plain)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False  # padded text tokens are ignored
    changed = context.clone()
    changed[1, 5:] = 100.0
    with torch.no_grad():
        assert torch.allclose(codec.fused_latent(wav, context=context, context_mask=mask),
                              codec.fused_latent(wav, context=changed, context_mask=mask), atol=1e-5)
    assert codec.encode(wav, semantic=semantic, context=context).codes.shape == (2, 3, 100)
    codec.train()
    codec.set_training_options(modality_dropout=1.0)  # every stream dropped: the latent is the encoder's
    out = codec(wav, semantic=semantic, context=context)
    assert torch.equal(out.latent, codec.encode_latent(wav))


# ---- official layout --------------------------------------------------------------------------

def to_official_layout(codec) -> dict[str, torch.Tensor]:
    """The codec's weights named the way the official SpeechTokenizer / DM-Codec code names them."""
    official = {}
    for key, value in codec.state_dict().items():
        if key.startswith("quantizer."):
            layer, name = re.match(r"quantizer\.layers\.(\d+)\.(\w+)", key).groups()
            name = {"codebook": "embed", "code_sum": "embed_avg", "code_usage": "cluster_size", "initialised": "inited"}[name]
            value = torch.zeros(1) if name == "inited" else value  # official: (K, D), (K,), inited (1,) float
            official[f"quantizer.vq.layers.{layer}._codebook.{name}"] = value
            continue
        part, _, index, rest = key.split(".", 3) if ".layers." in key else (None, None, None, key)
        if part is None:  # semantic head
            official[key.replace("semantic_head.", "transform.")] = value
            continue
        rest = rest.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        if isinstance(getattr(codec, part).layers[int(index)], PaddedConvTranspose1d):
            rest = rest.replace("conv.", "convtr.convtr.", 1)
        elif ".lstm." not in f".{rest}" and not rest.endswith("alpha"):
            rest = rest.replace("conv.", "conv.conv.", 1) if rest.startswith("conv.") else rest.replace(".conv.", ".conv.conv.", 1)
        official[f"{part}.model.{index}.{rest}"] = value
    return official


@pytest.mark.parametrize("activation", ["ELU", "Snake"])
def test_converter_reads_the_official_layout(activation):
    codec = tiny_codec(lstm_layers=1, bidirectional_encoder_lstm=True, activation=activation)
    ours = codec.state_dict()
    official = to_official_layout(codec)
    assert "encoder.model.0.conv.conv.weight_g" in official and "decoder.model.3.convtr.convtr.weight_v" in official
    assert "encoder.model.1.block.1.conv.conv.weight_v" in official and "encoder.model.1.shortcut.conv.conv.bias" in official
    assert all(not v for k, v in official.items() if k.endswith("inited"))  # an untrained official codebook
    converted = convert_official_rvq_codec(official, codec.config)
    assert set(converted) == set(ours)
    fresh = SpeechTokenizer(codec.config).eval()
    load_state_dict_checked(fresh, converted, source="synthetic official checkpoint")
    assert fresh.quantizer.is_initialised and all(converted[f"quantizer.layers.{i}.initialised"] for i in range(3))
    assert converted["quantizer.layers.0.codebook"].shape == (32, 16)
    assert torch.equal(converted["quantizer.layers.2.code_usage"], official["quantizer.vq.layers.2._codebook.cluster_size"])
    wav = wave(batch=1)
    assert torch.equal(fresh.encode(wav).codes, codec.encode(wav).codes)
    with pytest.raises(CheckpointError, match="official"):
        convert_official_rvq_codec({**official, "generator.extra": torch.zeros(1)}, codec.config)


def test_official_key_names_of_the_released_config_map_onto_ours():
    with torch.device("meta"):
        model = zoo.hub.model_entry("speechtokenizer-hubert-avg").build()
    ours = set(model.state_dict())
    official = {  # names read from the official code for n_filters=64, strides (8,5,4,2), 2 LSTM layers
        "encoder.model.0.conv.conv.weight_g": (64, 1, 1), "encoder.model.1.block.1.conv.conv.weight_v": (32, 64, 3),
        "encoder.model.1.shortcut.conv.conv.bias": (64,), "encoder.model.12.conv.conv.weight_g": (1024, 1, 1),
        "encoder.model.13.lstm.weight_ih_l1_reverse": (4096, 2048), "encoder.model.15.conv.conv.weight_v": (1024, 2048, 7),
        "decoder.model.1.lstm.weight_hh_l0": (4096, 1024), "decoder.model.3.convtr.convtr.weight_g": (1024, 1, 1),
        "decoder.model.13.block.3.conv.conv.bias": (64,), "decoder.model.15.conv.conv.weight_v": (1, 64, 7),
        "quantizer.vq.layers.7._codebook.embed": (1024, 1024), "transform.weight": (768, 1024),
    }
    state = {k: torch.zeros(shape) for k, shape in official.items()}
    converted = convert_official_rvq_codec(state, model.config)
    expected = model.state_dict()
    for key, value in converted.items():
        assert key in ours, key
        assert value.shape == expected[key].shape, key


# ---- registered names -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["speechtokenizer-hubert-avg", "speechtokenizer-snake", "dmcodec-lm",
                                  "dmcodec-lm-sm", "fusecodec-16k"])
def test_registered_names_encode_and_decode_one_second(name):
    assert name in zoo.list_models()
    torch.manual_seed(0)
    codec = zoo.create(name)  # random but initialised codebooks: usable at once
    wav = wave(batch=1, samples=16000)
    tokens = codec.encode(wav)
    assert tokens.codes.shape == (1, 8, 50)
    assert codec.decode(tokens).shape == (1, 1, 16000)


def test_every_speech_name_is_registered_with_licence_and_converter():
    for name in ["speechtokenizer-hubert-avg", "speechtokenizer-snake", "dmcodec-lm", "dmcodec-lm-sm"]:
        entry = zoo.hub.model_entry(name)
        assert entry.converter is convert_official_rvq_codec and entry.license
    assert zoo.hub.model_entry("speechtokenizer-hubert-avg").source.filename == "speechtokenizer_hubert_avg/SpeechTokenizer.pt"
    with pytest.raises(zoo.errors.WeightsUnavailableError):
        zoo.load("fusecodec-16k")


@pytest.mark.slow
def test_load_named_model_from_an_official_checkpoint_file(tmp_path):
    torch.manual_seed(0)
    codec = zoo.create("dmcodec-lm")
    path = tmp_path / "Model_best_dev.pt"
    torch.save(to_official_layout(codec), path)
    loaded = zoo.load("dmcodec-lm", checkpoint=path)
    wav = wave(batch=1, samples=3200)
    assert torch.equal(loaded.encode(wav).codes, codec.encode(wav).codes)


def test_lecun_conv_init_keeps_a_fresh_latent_informative():
    """With PyTorch's default init a fresh SEANet's latent is ~1% signal on top of a bias-made
    constant (training from scratch stalls); conv_init='lecun' keeps the signal on top."""
    t = torch.arange(16000) / 16000
    wav = (0.1 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t))[None, None]
    ratios = {}
    for init in ("torch", "lecun"):
        torch.manual_seed(0)
        codec = zoo.create("speechtokenizer-hubert-avg", n_filters=8, dimension=32, lstm_layers=0,
                           semantic_dimension=32)
        codec.set_training_options(conv_init=init)
        with torch.no_grad():
            z = codec.encoder(wav)  # (1, D, N)
            y = codec.decoder(z)
        ratios[init] = float(z.std(-1).mean() / z.mean(-1).abs().mean())
        assert torch.isfinite(y).all()
    assert ratios["torch"] < 0.1 < 1 < ratios["lecun"], ratios
    convs = [m for m in codec.modules() if isinstance(m, torch.nn.Conv1d)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in convs)
    with pytest.raises(TokenizerError, match="conv_init must be 'torch' or 'lecun'"):
        codec.set_training_options(conv_init="xavier")
