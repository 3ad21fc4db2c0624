"""Training options (what config.json no longer holds): set_training_options checks, stores and
applies them; old folders and configs that still carry them load; folders written with
vector-quantize-pytorch's weight names load."""
from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo.errors import TokenizerError
from zoo.models.audio.fusecodec import FuseCodecConfig, FuseCodecTrainingOptions
from zoo.models.audio.rvq_codec import RVQCodecTrainingOptions
from zoo.models.audio.speechtokenizer import SpeechTokenizer, SpeechTokenizerConfig
from zoo.models.image.onedpiece import OneDPiece, OneDPieceConfig
from zoo.models.image.titok import TiTokConfig, TiTokTrainingOptions

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CODEC = dict(n_filters=4, strides=(4, 2), dimension=16, semantic_dimension=8, num_quantizers=3,
                  codebook_size=32, lstm_layers=0, bidirectional_encoder_lstm=False)
TINY_IMAGE = dict(image_size=32, patch_size=8, num_tokens=8, encoder_width=32, encoder_depth=1, encoder_heads=2,
                  decoder_width=32, decoder_depth=1, decoder_heads=2, token_dim=4, codebook_size=16,
                  decoder_output="pixels", codebook_distance="euclidean")


def tiny_codec():
    return SpeechTokenizer(SpeechTokenizerConfig(**TINY_CODEC)).eval()


def tiny_image(**fields):
    return OneDPiece(OneDPieceConfig(**{**TINY_IMAGE, **fields})).eval()


def wave(batch=2, samples=800):
    return torch.randn(batch, 1, samples, generator=torch.Generator().manual_seed(0)) * 0.1


# ---- set_training_options ------------------------------------------------------------------------

def test_defaults_are_the_released_training_and_no_kmeans():
    assert tiny_codec().training_options == RVQCodecTrainingOptions()
    assert RVQCodecTrainingOptions() == RVQCodecTrainingOptions(
        codebook_decay=0.99, kmeans_init=False, kmeans_iters=50, threshold_ema_dead_code=2, commitment_weight=1.0,
        conv_init="torch")
    assert TiTokTrainingOptions() == TiTokTrainingOptions(commitment_weight=0.25, kmeans_init=False,
                                                          threshold_ema_dead_code=0, kl_weight=1e-6)
    assert zoo.create("fusecodec-16k", **TINY_CODEC, context_dimension=12, fusion_heads=2).training_options \
        == FuseCodecTrainingOptions(modality_dropout=0.1)


def test_unknown_names_and_wrong_types_are_clear_errors():
    codec = tiny_codec()
    with pytest.raises(TokenizerError, match=r"no training option kmeans_int; its training options are: "
                                             r"codebook_decay, commitment_weight, conv_init, kmeans_init, "
                                             r"kmeans_iters, threshold_ema_dead_code\."):
        codec.set_training_options(kmeans_int=True)
    with pytest.raises(TokenizerError, match="training option kmeans_init of .* takes bool, got str 'yes'"):
        codec.set_training_options(kmeans_init="yes")
    with pytest.raises(TokenizerError, match="training option kmeans_iters of .* takes int, got float 2.5"):
        codec.set_training_options(kmeans_iters=2.5)
    with pytest.raises(TokenizerError, match="codebook_decay must lie in"):
        codec.set_training_options(codebook_decay=1.5)
    assert codec.training_options == RVQCodecTrainingOptions()  # nothing was stored by the failed calls
    codec.set_training_options(codebook_decay=1)  # an int is a fine float (1: a frozen codebook)
    assert codec.training_options.codebook_decay == 1.0 and type(codec.training_options.codebook_decay) is float
    assert codec.training_options.kmeans_iters == 50  # the others keep their values
    from tiny_models import TinyImageConfig, TinyImageTokenizer

    with pytest.raises(TokenizerError, match="no training option lr; its training options are: none"):
        TinyImageTokenizer(TinyImageConfig()).set_training_options(lr=1e-3)


def test_a_created_model_encodes_at_once_and_kmeans_init_marks_its_codebooks():
    torch.manual_seed(0)
    codec = zoo.create("speechtokenizer-hubert-avg")  # the released architecture, random weights
    assert codec.quantizer.is_initialised
    assert codec.encode(wave(batch=1, samples=3200)).codes.shape == (1, 8, 10)
    small = tiny_codec()
    trained = {k: v.clone() for k, v in small.state_dict().items()}
    small.set_training_options(kmeans_init=True, kmeans_iters=3)
    assert not small.quantizer.is_initialised
    with pytest.raises(TokenizerError, match="not initialised"):
        small.encode(wave())
    small.train()(wave(batch=4, samples=1600))  # the first training batch runs k-means
    assert small.quantizer.is_initialised
    assert not torch.equal(small.state_dict()["quantizer.layers.0.codebook"], trained["quantizer.layers.0.codebook"])
    assert small.eval().encode(wave()).codes.shape == (2, 3, 100)
    # state loaded after marking (resuming a checkpoint) overrides the mark as usual
    resumed = tiny_codec()
    resumed.set_training_options(kmeans_init=True)
    resumed.load_state_dict(trained)
    assert resumed.quantizer.is_initialised and resumed.training_options.kmeans_init


def test_options_reach_the_training_pass():
    torch.manual_seed(0)
    image = tiny_image()
    twin = copy.deepcopy(image)
    x = torch.rand(2, 3, 32, 32)
    image.set_training_options(commitment_weight=0.75)  # three times the released 0.25
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in image.state_dict().items())
    base = twin.train()(x).aux_loss.detach()
    assert base > 0 and torch.allclose(image.train()(x).aux_loss.detach(), 3 * base, rtol=1e-5)
    vae = tiny_image(bottleneck="vae", token_dim=4).eval()
    kl = vae(x).aux_loss / 1e-6
    vae.set_training_options(kl_weight=0.5)
    torch.testing.assert_close(vae(x).aux_loss, 0.5 * kl)
    codec = tiny_codec()
    codec.set_training_options(threshold_ema_dead_code=0.0, codebook_decay=0.5, commitment_weight=2.0)
    assert codec.quantizer.rvq.layers[2].commitment_weight == 2.0 and codec.quantizer.rvq.layers[0]._codebook.decay == 0.5


def test_set_training_options_keeps_the_weights_and_codes():
    codec = tiny_codec()
    wav = wave()
    codes, weights = codec.encode(wav).codes, {k: v.clone() for k, v in codec.state_dict().items()}
    codec.set_training_options(codebook_decay=0.8, threshold_ema_dead_code=0.5, kmeans_iters=5, commitment_weight=0.5)
    assert torch.equal(codec.encode(wav).codes, codes)
    assert all(torch.equal(v, weights[k]) for k, v in codec.state_dict().items())
    codec.set_training_options(conv_init="lecun")  # an initialisation: it replaces the conv weights
    assert not torch.equal(codec.state_dict()["encoder.layers.0.conv.bias"], weights["encoder.layers.0.conv.bias"])
    assert float(codec.state_dict()["encoder.layers.0.conv.bias"].abs().max()) == 0


# ---- config.json: the architecture only -------------------------------------------------------------

@pytest.mark.parametrize("config_class, key, value", [
    (TiTokConfig, "kmeans_init", True), (TiTokConfig, "kl_weight", 1e-4), (SpeechTokenizerConfig, "conv_init", "lecun"),
    (SpeechTokenizerConfig, "codebook_decay", 0.9), (FuseCodecConfig, "modality_dropout", 0.2),
])
def test_old_config_keys_are_dropped_on_read_and_refused_on_replace(config_class, key, value):
    values = config_class().to_dict()
    assert key not in values and key in config_class.moved_keys
    config = config_class.from_dict({**values, key: value})  # an old config.json still loads
    assert config == config_class()
    with pytest.raises(TokenizerError, match=rf"{key} is a training option now.*set_training_options"):
        config.replace(**{key: value})


def test_create_with_a_training_option_says_where_it_went():
    with pytest.raises(TokenizerError, match=r"kmeans_init is a training option now; threshold_ema_dead_code is a "
                                             r"training option now.*training_options"):
        zoo.create("onedpiece-s-256", kmeans_init=True, threshold_ema_dead_code=1)
    assert "kmeans_init" not in json.dumps(zoo.create("titok-s-128", encoder_depth=1, decoder_depth=1).config.to_dict())


# ---- folders written with the library's weight names ----------------------------------------------

def to_library_names(state: dict) -> dict:
    """Our quantizer names back to vector-quantize-pytorch's (how folders were written before),
    by hand, with the library's leading codebook-head axis."""
    library = {"codebook": "embed", "code_usage": "cluster_size", "code_sum": "embed_avg", "initialised": "initted"}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"quantizer\.layers\.(\d+)\.(\w+)", key):
            key = f"quantizer.rvq.layers.{m[1]}._codebook.{library[m[2]]}"
            value = value if m[2] == "initialised" else value[None]
        elif m := re.fullmatch(r"quantizer\.(codebook|code_usage|code_sum|initialised)", key):
            key = f"quantizer.vq._codebook.{library[m[1]]}"
            value = value if m[1] == "initialised" else value[None]
        out[key] = value.contiguous()
    return out


@pytest.mark.parametrize("make, x", [(tiny_codec, wave()), (tiny_image, torch.rand(2, 3, 32, 32))])
def test_a_folder_in_the_library_names_with_training_keys_still_loads(tmp_path, make, x):
    model = make()
    model.train()(x)  # move the EMA statistics
    model.eval()
    folder = model.save_pretrained(tmp_path / "new")
    assert not any("_codebook" in k or ".vq." in k or ".rvq." in k for k in load_file(folder / "model.safetensors"))
    old = tmp_path / "old"
    old.mkdir()
    save_file(to_library_names(load_file(folder / "model.safetensors")), str(old / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    moved = dict(kmeans_init=True, threshold_ema_dead_code=0.02, commitment_weight=0.25)
    (old / "config.json").write_text(json.dumps({**config, **moved}))
    again = zoo.load(old)
    assert again.config == model.config
    tokens = model.encode(x)
    assert torch.equal(again.encode(x).codes, tokens.codes)
    assert torch.equal(again.decode(tokens), model.decode(tokens))
    for (key, a), (key_b, b) in zip(again.state_dict().items(), model.state_dict().items()):
        assert key == key_b and torch.equal(a, b), key


def test_a_named_model_reads_a_weights_file_in_the_library_names(tmp_path):
    entry = zoo.model_entry("speechtokenizer-hubert-avg")
    model = tiny_codec()
    torch.save(to_library_names(model.state_dict()), tmp_path / "old.bin")
    loaded = zoo.hub.registry._load_checkpoint(dataclasses.replace(entry, config=model.config), tmp_path / "old.bin")
    assert torch.equal(loaded.encode(wave()).codes, model.encode(wave()).codes)
