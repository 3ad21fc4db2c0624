"""`zoo bench --vs official`: finding the official code, the adapter registry, timing in turn with a
stand-in official package, and our weights in the official layout and back.

The tests at the end run the real official code and are skipped unless ZOO_OFFICIAL_TITOK,
ZOO_OFFICIAL_SPEECHTOKENIZER or ZOO_OFFICIAL_DMCODEC name a checkout."""
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import zoo
import zoo.eval.bench as bench_module
import zoo.eval.official as official
from zoo.cli import main
from zoo.errors import TokenizerError
from zoo.eval.bench import bench, format_results
from zoo.eval.official import rvq_codec, titok
from zoo.hub.audio_rvq import convert_official_rvq_codec
from zoo.hub.image_titok import CODEBOOK_STATISTICS, convert_official_titok, official_shapes
from zoo.hub.registry import register
from zoo.models.audio.speechtokenizer import SpeechTokenizer, SpeechTokenizerConfig
from zoo.models.image.titok import TiTok, TiTokConfig

TINY_CODEC = "test-bench-official-speechtokenizer"
TINY_CODEC_CONFIG = SpeechTokenizerConfig(n_filters=4, strides=(4, 2), dimension=8, lstm_layers=1, num_quantizers=2,
                                          codebook_size=16, semantic_dimension=6)
if TINY_CODEC not in zoo.list_models():
    register(TINY_CODEC, SpeechTokenizer, TINY_CODEC_CONFIG, description="tiny codec for the official bench tests",
             license="test")

# A stand-in for the official SpeechTokenizer package: the same API (SpeechTokenizer(config), load_state_dict,
# encode -> (n_q, B, T), decode), computed by our model rebuilt from the official-layout weights through our
# converter (which refuses keys outside the official layout). Its __init__ imports a trainer that is not
# installed, as the real package's does; every call is logged to calls.log. SHIFT / OFFSET make it differ.
STAND_IN = '''
from pathlib import Path

import torch
from torch import nn

from zoo.hub.audio_rvq import convert_official_rvq_codec
from zoo.models.audio.speechtokenizer import SpeechTokenizer as Ours, SpeechTokenizerConfig
from zoo.tokens import Tokens

SHIFT, OFFSET = {shift}, {offset}
LOG = Path(__file__).parents[2] / "calls.log"


class SpeechTokenizer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = SpeechTokenizerConfig(
            n_filters=config["n_filters"], strides=tuple(config["strides"]), dimension=config["dimension"],
            semantic_dimension=config["semantic_dimension"], bidirectional_encoder_lstm=config["bidirectional"],
            dilation_base=config["dilation_base"], residual_kernel_size=config["residual_kernel_size"],
            n_residual_layers=config["n_residual_layers"], lstm_layers=config["lstm_layers"],
            activation=config["activation"], codebook_size=config["codebook_size"], num_quantizers=config["n_q"],
            sample_rate=config["sample_rate"])

    def load_state_dict(self, state, strict=True):
        self.inner = Ours(self.config).eval()
        self.inner.inside_stand_in = True
        self.inner.load_state_dict(convert_official_rvq_codec(state, self.config))
        return [], []

    def encode(self, x, n_q=None):
        with LOG.open("a") as f:
            f.write("theirs encode\\n")
        codes = self.inner.encode(x).codes.transpose(0, 1)
        return (codes + SHIFT) % self.config.codebook_size

    def decode(self, codes):
        with LOG.open("a") as f:
            f.write("theirs decode\\n")
        return self.inner.decode(Tokens(codes.transpose(0, 1))) + OFFSET
'''


def stand_in(tmp_path, name="same", shift=0, offset=0.0):
    root = tmp_path / name
    (root / "speechtokenizer").mkdir(parents=True)
    (root / "speechtokenizer" / "__init__.py").write_text("import a_trainer_that_is_not_installed\n")
    (root / "speechtokenizer" / "model.py").write_text(STAND_IN.format(shift=shift, offset=offset))
    return root


@pytest.fixture
def call_log(tmp_path, monkeypatch, one_thread):
    """Every encode / decode of ours and of the stand-in, in call order."""
    log = tmp_path / "calls.log"
    for phase in ("encode", "decode"):
        real = getattr(SpeechTokenizer, phase)

        def logged(self, *args, _real=real, _phase=phase, **kwargs):
            if not getattr(self, "inside_stand_in", False):
                with log.open("a") as f:
                    f.write(f"ours {_phase}\n")
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(SpeechTokenizer, phase, logged)
    return log


def no_official_code(monkeypatch):
    for code in (titok.CODE, *rvq_codec.CODES.values()):
        monkeypatch.delenv(code.env, raising=False)
    real = official.importlib.util.find_spec
    monkeypatch.setattr(official.importlib.util, "find_spec",
                        lambda name, *a: None if name == "speechtokenizer" else real(name, *a))


# ---- finding the official code ------------------------------------------------------------------

def test_missing_official_code_names_what_to_install(monkeypatch, tmp_path, capsys):
    no_official_code(monkeypatch)
    with pytest.raises(TokenizerError, match="official TiTok / One-D-Piece code was not found") as e:
        bench("titok-l-32", vs="official", isolate=False, progress=False)
    assert "git clone https://github.com/bytedance/1d-tokenizer" in str(e.value)
    assert "--official-path 1d-tokenizer" in str(e.value) and "ZOO_OFFICIAL_TITOK" in str(e.value)
    assert "pip install omegaconf einops huggingface_hub" in str(e.value)
    with pytest.raises(TokenizerError, match="pip install speechtokenizer") as e:
        bench(TINY_CODEC, vs="official", isolate=False, progress=False)
    assert "git clone https://github.com/ZhangXInFD/SpeechTokenizer" in str(e.value)
    # a folder that is not a checkout, given or in the environment
    with pytest.raises(TokenizerError, match=r"does not hold the official DM-Codec code \(no codec/model.py\)"):
        bench("dmcodec-lm-sm", vs="official", official_path=str(tmp_path), isolate=False, progress=False)
    monkeypatch.setenv("ZOO_OFFICIAL_DMCODEC", str(tmp_path))
    with pytest.raises(TokenizerError, match="ZOO_OFFICIAL_DMCODEC .* does not hold"):
        bench("dmcodec-lm-sm", vs="official", isolate=False, progress=False)
    # a checkout whose code imports a package that is not installed
    broken = stand_in(tmp_path, "broken")
    (broken / "speechtokenizer" / "model.py").write_text("import a_package_that_is_not_installed\n")
    with pytest.raises(TokenizerError, match="needs the package 'a_package_that_is_not_installed'.*"
                                             "pip install a_package_that_is_not_installed"):
        bench(TINY_CODEC, vs="official", official_path=str(broken), isolate=False, progress=False)
    assert "speechtokenizer" not in sys.modules
    # the command: one sentence, exit code 1, nothing timed
    assert main(["bench", "--model", "titok-s-128", "--vs", "official"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error: the official TiTok") and len(err.splitlines()) == 1
    assert main(["bench", "--model", "titok-s-128", "--official-path", str(tmp_path)]) == 1
    assert "--official-path is read by `--vs official` only" in capsys.readouterr().err


def test_registry_maps_each_covered_family_and_refuses_others():
    expected = {"titok-l-32": "TiTok / One-D-Piece", "titok-s-128": "TiTok / One-D-Piece",
                "onedpiece-s-256": "TiTok / One-D-Piece", "speechtokenizer-hubert-avg": "SpeechTokenizer",
                "speechtokenizer-snake": "SpeechTokenizer", "dmcodec-lm-sm": "DM-Codec"}
    for name, family in expected.items():
        architecture = zoo.model_entry(name).model_class.architecture
        assert official.adapter_module(architecture).official_code(architecture).family == family
    assert official.covered_architectures() == ["dmcodec", "onedpiece", "speechtokenizer", "titok"]
    for name in ("karl-small-vqgan-in1k", "flextok-d12-d12-in1k", "fusecodec-16k"):
        architecture = zoo.model_entry(name).model_class.architecture
        with pytest.raises(TokenizerError, match=f"no official adapter for this family yet \\('{architecture}'\\)"):
            official.adapter_module(architecture)
        with pytest.raises(TokenizerError, match="no official adapter for this family yet"):
            bench(name, vs="official", isolate=False, progress=False)


def test_a_config_the_official_code_cannot_build_is_refused():
    with pytest.raises(TokenizerError, match="builds only the small/base/large ViTs"):
        titok.official_config(TiTokConfig(encoder_width=64, encoder_depth=2, encoder_heads=2,
                                          latent_reshape_without_permute=True))
    with pytest.raises(TokenizerError, match="has {'causal': True}"):
        rvq_codec.official_config(SpeechTokenizerConfig(causal=True))
    config = titok.official_config(zoo.model_entry("titok-l-32").config)["model"]["vq_model"]
    assert config["vit_enc_model_size"] == "large" and config["finetune_decoder"] and config["is_legacy"]
    assert config["num_latent_tokens"] == 32 and config["use_l2_norm"] and config["token_size"] == 12


# ---- timing in turn, with a stand-in official package ---------------------------------------------

def test_ours_and_theirs_are_timed_in_turn_and_compared(tmp_path, call_log):
    repeats = 2
    results = bench(TINY_CODEC, batch_sizes=[1, 2], repeats=repeats, audio_seconds=0.05, isolate=False,
                    vs="official", official_path=str(stand_in(tmp_path)), progress=False)
    for r in results:
        for phase in ("encode", "decode"):
            calls = [who for who, p, seconds in r.vs_timeline if p == phase]
            assert calls == ["ours", "theirs"] * repeats
        assert all(seconds > 0 for _, _, seconds in r.vs_timeline)
        assert r.vs_encode_ratio > 0 and r.vs_decode_ratio > 0
        assert r.vs_codes_identical == 1.0 and r.vs_output_max_diff == 0.0  # the same computation
    # what the two sides really did, per setting: ours alone once (its peak memory), then a warm-up each and
    # strictly alternating calls, encode before decode
    one_setting = ["ours encode", "ours decode"] + [f"{who} {phase}" for phase in ("encode", "decode")
                                                    for _ in range(repeats + 1) for who in ("ours", "theirs")]
    assert call_log.read_text().splitlines() == one_setting * 2
    table = format_results(results)
    header = table.splitlines()[0]
    for column in ("vs encode x", "vs decode x", "codes same", "max |d| output"):
        assert column in header
    assert table.splitlines()[1].split()[-2:] == ["1.0000", "0.00e+00"]
    assert "speechtokenizer" not in sys.modules  # the stand-in's package went away with the import context


def test_a_different_official_output_is_reported(tmp_path, call_log):
    root = stand_in(tmp_path, "different", shift=1, offset=0.25)
    (r,) = bench(TINY_CODEC, batch_sizes=[2], repeats=1, audio_seconds=0.05, isolate=False, vs="official",
                 official_path=str(root), progress=False)
    assert r.vs_codes_identical == 0.0  # every code moved by one
    assert r.vs_output_max_diff == pytest.approx(0.25, abs=1e-5)  # decoded from our codes, then offset


def test_the_command_prints_and_writes_the_comparison(tmp_path, monkeypatch, capsys, call_log):
    monkeypatch.setattr(bench_module, "_run_isolated", bench_module.run_setting)  # the stand-in model is registered here
    out = tmp_path / "r.json"
    assert main(["bench", "--model", TINY_CODEC, "--vs", "official", "--official-path", str(stand_in(tmp_path)),
                 "--batch-sizes", "1", "--repeats", "1", "--seconds", "0.05", "--json", str(out)]) == 0
    assert "codes same" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert row["vs_codes_identical"] == 1.0 and row["setting"]["vs"] == "official"
    assert [w for w, _, _ in row["vs_timeline"]] == ["ours", "theirs", "ours", "theirs"]


# ---- our weights in the official layout and back (no official code needed) -----------------------

TINY_TITOK = dict(image_size=32, patch_size=8, num_tokens=4, encoder_width=16, encoder_depth=1, encoder_heads=2,
                  decoder_width=16, decoder_depth=1, decoder_heads=2, token_dim=4, codebook_size=8)


@pytest.mark.parametrize("kind", ["two-stage", "vq-pixels", "vae"])
def test_titok_weights_round_trip_through_the_official_layout(kind):
    fields = {"two-stage": dict(codebook_distance="cosine", decoder_output="proxy_codes",
                                latent_reshape_without_permute=True, proxy_codebook_size=16, proxy_code_dim=8,
                                pixel_decoder_channels=32, pixel_decoder_channel_mult=(1, 1, 1, 1),
                                pixel_decoder_res_blocks=1),
              "vq-pixels": dict(codebook_distance="euclidean", decoder_output="pixels"),
              "vae": dict(bottleneck="vae", decoder_output="pixels")}[kind]
    torch.manual_seed(0)
    model = TiTok(TiTokConfig(**TINY_TITOK, **fields))
    state = titok.official_state(model)
    assert {k: tuple(v.shape) for k, v in state.items()} == official_shapes(model.config)
    assert state["encoder.conv_out.weight"].shape[-2:] == (1, 1)  # our Linear as the official 1x1 conv
    back = convert_official_titok(state, model.config)
    ours = model.state_dict()
    for key, value in ours.items():
        if key in CODEBOOK_STATISTICS:
            continue
        if key == "quantizer.codebook" and kind == "two-stage":  # stored normalized, what the official code looks up
            assert torch.equal(back[key], F.normalize(value, dim=-1))
        else:
            assert torch.equal(back[key], value), key
    assert set(back) == set(ours)


def test_speechtokenizer_weights_round_trip_through_the_official_layout(one_thread):
    torch.manual_seed(0)
    for config in (TINY_CODEC_CONFIG, SpeechTokenizerConfig(**{**TINY_CODEC_CONFIG.__dict__, "activation": "Snake"})):
        model = SpeechTokenizer(config)
        state = rvq_codec.official_state(model)
        assert "decoder.model.3.convtr.convtr.weight_g" in state and "encoder.model.0.conv.conv.weight_v" in state
        assert "encoder.model.1.shortcut.conv.conv.bias" in state and "transform.weight" in state
        assert state["quantizer.vq.layers.1._codebook.inited"].item() == 1.0
        back = convert_official_rvq_codec(state, config)
        ours = model.state_dict()
        assert set(back) == set(ours)
        for key, value in ours.items():
            if not key.endswith(".initialised"):
                assert torch.equal(back[key], value), key
        assert all(bool(back[f"quantizer.layers.{k}.initialised"]) for k in range(config.num_quantizers))
    assert any(k.endswith(".alpha") for k in state)  # Snake's parameters kept their names


# ---- the real official code (skipped unless a checkout is named) ---------------------------------

def real_code(env):
    return pytest.mark.skipif(not os.environ.get(env), reason=f"set {env} to a checkout of the official code")


@real_code("ZOO_OFFICIAL_TITOK")
def test_official_titok_gives_our_codes_and_images(one_thread):
    torch.manual_seed(0)
    model = zoo.create("titok-s-128")
    adapter = official.official_adapter(model)
    x = torch.rand(2, 3, 256, 256)
    tokens = model.encode(x)
    encoded = adapter.encode(x)
    assert tokens.codes.unique().numel() > 10  # codes that say something
    assert torch.equal(adapter.codes(encoded), tokens.codes)
    assert (adapter.decode(adapter.from_tokens(tokens)) - model.decode(tokens)).abs().max() < 1e-3
    assert not any(name.split(".")[0] in ("modeling", "accelerate") for name in sys.modules)


@pytest.mark.parametrize("env, model_class", [("ZOO_OFFICIAL_SPEECHTOKENIZER", "SpeechTokenizer"),
                                              ("ZOO_OFFICIAL_DMCODEC", "DMCodec")])
def test_official_rvq_codecs_give_our_codes_and_audio(env, model_class, one_thread):
    if not os.environ.get(env):
        pytest.skip(f"set {env} to a checkout of the official code")
    from zoo.models.audio import dmcodec

    cls = SpeechTokenizer if model_class == "SpeechTokenizer" else dmcodec.DMCodec
    for activation in ("ELU", "Snake"):
        torch.manual_seed(0)
        config = cls.config_class(**{**TINY_CODEC_CONFIG.__dict__, "activation": activation, "codebook_size": 64})
        model = cls(config).eval()
        adapter = official.official_adapter(model)
        x = 0.1 * torch.randn(2, 1, 1600)
        tokens = model.encode(x)
        assert tokens.codes.unique().numel() > 2  # not one code everywhere
        assert torch.equal(adapter.codes(adapter.encode(x)), tokens.codes)
        assert (adapter.decode(adapter.from_tokens(tokens)) - model.decode(tokens)).abs().max() < 1e-5
