"""Typed encode / decode options: declared by each family's `_encode` / `_decode`, checked by name
and type in `encode` / `decode`, split by `reconstruct`, listed by `zoo info`, moved out of configs."""
import json
from typing import Annotated
from unittest import mock

import pytest
import torch
from tiny_models import TinyAudioConfig, TinyAudioTokenizer, TinyImageConfig, TinyImageTokenizer

import zoo
from zoo import TokenizerError
from zoo.models.audio.fusecodec import FuseCodec, FuseCodecConfig
from zoo.models.audio.rvq_codec import RVQCodecConfig
from zoo.models.audio.speechtokenizer import SpeechTokenizer, SpeechTokenizerConfig
from zoo.models.image.onedpiece import OneDPiece
from zoo.models.image.titok import TiTok, TiTokConfig
from zoo.options import OptionSpec
from zoo.tokenizer import ARCHITECTURES, Tokenizer

TINY_CODEC = dict(n_filters=4, strides=(4, 2), dimension=16, semantic_dimension=8, num_quantizers=3,
                  codebook_size=32, lstm_layers=0, bidirectional_encoder_lstm=False)
TINY_TITOK = dict(image_size=32, patch_size=8, num_tokens=8, encoder_width=32, encoder_depth=1, encoder_heads=2,
                  decoder_width=32, decoder_depth=1, decoder_heads=2, token_dim=4, codebook_size=16,
                  decoder_output="pixels", codebook_distance="euclidean")


def image_model():
    return TinyImageTokenizer(TinyImageConfig()).eval()


def audio_model():
    return TinyAudioTokenizer(TinyAudioConfig()).eval()


def codec():
    torch.manual_seed(0)
    return SpeechTokenizer(SpeechTokenizerConfig(**TINY_CODEC)).eval()


def wave(samples=1600):
    return torch.randn(1, 1, samples, generator=torch.Generator().manual_seed(0)) * 0.1


# ---- declarations ---------------------------------------------------------------------------

def test_families_declare_their_options_with_types_defaults_and_help():
    encode, decode = SpeechTokenizer.declared_options("encode"), SpeechTokenizer.declared_options("decode")
    assert list(encode) == ["n_q", "chunk_seconds"] and list(decode) == ["chunk_seconds"]
    assert encode["n_q"].type_name == "int | None" and encode["n_q"].default is None
    assert encode["chunk_seconds"].type_name == "float" and encode["chunk_seconds"].default == 5.0
    assert list(FuseCodec.declared_options("encode")) == ["n_q", "chunk_seconds", "semantic", "context"]
    assert FuseCodec.declared_options("encode")["context"].type_name == "Tensor | None"
    assert TiTok.declared_options("encode")["num_tokens"].type_name == "int | Tensor | None"
    assert OneDPiece.declared_options("encode") == TiTok.declared_options("encode")
    assert TiTok.declared_options("decode") == {}
    # every family of the zoo explains every option it declares
    for arch in ("titok", "onedpiece", "speechtokenizer", "dmcodec", "fusecodec"):
        for direction in ("encode", "decode"):
            for spec in ARCHITECTURES[arch].declared_options(direction).values():
                assert spec.help and spec.type_name != "any", (arch, spec)


def test_a_malformed_declaration_fails_when_the_family_is_defined():
    with pytest.raises(TypeError, match=r"\*\*opts.*keyword parameter"):
        class Loose(TinyImageTokenizer):
            def _encode(self, x, **opts):
                return super()._encode(x)
    with pytest.raises(TypeError, match="'steps' needs a default"):
        class NoDefault(TinyImageTokenizer):
            def _decode(self, tokens, *, steps: int):
                return super()._decode(tokens)


def test_option_values_are_parsed_from_text_with_the_declared_type():
    n_q = OptionSpec("n_q", int | None, None, "")
    assert n_q.parse("2") == 2 and n_q.parse("none") is None
    with pytest.raises(TokenizerError, match=r"'n_q' takes int \| None, got '2.5'"):
        n_q.parse("2.5")
    assert OptionSpec("s", float, 1.0, "").parse("0.5") == 0.5
    assert OptionSpec("b", bool, False, "").parse("yes") is True
    with pytest.raises(TokenizerError, match="cannot be written on the command line"):
        OptionSpec("context", torch.Tensor | None, None, "").parse("1")


def test_options_are_listed_by_zoo_info(capsys):
    from zoo.cli import main

    assert main(["info", "zoo-speech-rvq-16k"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["encode_options"]["n_q"]["type"] == "int | None" and out["encode_options"]["n_q"]["default"] is None
    assert "leading RVQ layers" in out["encode_options"]["n_q"]["help"]
    assert out["decode_options"] == {"chunk_seconds": SpeechTokenizer.declared_options("decode")["chunk_seconds"].summary()}
    assert out["decode_options"]["chunk_seconds"]["default"] == 5.0
    assert "chunk_seconds" not in out["config"]  # an option now, not architecture


# ---- checks in encode / decode ----------------------------------------------------------------

def test_unknown_option_names_the_options_that_exist():
    with pytest.raises(TokenizerError, match=r"no encode option 'chunk_second' \(did you mean 'chunk_seconds'\?\); "
                                             r"its encode options are n_q, chunk_seconds\."):
        codec().encode(wave(), chunk_second=5.0)
    with pytest.raises(TokenizerError, match="it takes no encode options"):
        image_model().encode(torch.rand(1, 3, 32, 32), steps=4)


def test_an_option_of_the_other_modality_or_direction_says_so():
    with pytest.raises(TokenizerError, match=r"'n_q' is an option of audio tokenizers such as .*not of image ones"):
        image_model().encode(torch.rand(1, 3, 32, 32), n_q=2)
    with pytest.raises(TokenizerError, match=r"'num_tokens' is an option of image tokenizers such as \w+, \w+, \w+, not of audio"):
        audio_model().encode(wave(), num_tokens=4)
    tokens = audio_model().encode(wave())
    with pytest.raises(TokenizerError, match=r"'n_q' is an encode option here: pass it to encode\(\)"):
        audio_model().decode(tokens, n_q=2)
    with pytest.raises(TokenizerError, match=r"'semantic' is an option of fusecodec"):
        codec().encode(wave(), semantic=torch.zeros(1, 5, 8))


@pytest.mark.parametrize("make, options, message", [
    (codec, {"n_q": 2.5}, r"encode option 'n_q' of speechtokenizer takes int \| None, got float 2.5"),
    (codec, {"n_q": True}, r"takes int \| None, got bool True"),
    (codec, {"chunk_seconds": "5"}, r"'chunk_seconds' of speechtokenizer takes float, got str '5'"),
    (lambda: TiTok(TiTokConfig(**TINY_TITOK)).eval(), {"num_tokens": "16"},
     r"'num_tokens' of titok takes int \| Tensor \| None, got str '16'"),
])
def test_a_value_of_the_wrong_type_is_a_clear_error(make, options, message):
    model = make()
    x = torch.rand(1, 3, 32, 32) if model.modality == "image" else wave()
    with pytest.raises(TokenizerError, match=message):
        model.encode(x, **options)


def test_well_typed_options_reach_the_family():
    model = TiTok(TiTokConfig(**TINY_TITOK)).eval()
    tokens = model.encode(torch.rand(2, 3, 32, 32), num_tokens=torch.tensor([3, 5]))
    assert tokens.lengths.tolist() == [3, 5]
    assert codec().encode(wave(), n_q=2, chunk_seconds=1).codes.shape[1] == 2  # an int is a fine float
    assert FuseCodec(FuseCodecConfig(**TINY_CODEC, context_dimension=12, fusion_heads=2)).eval().encode(
        wave(800), context=torch.randn(1, 7, 12)).codes.shape == (1, 3, 100)


def test_a_decode_option_reaches_decode():
    model = image_model()
    tokens = model.encode(torch.rand(2, 3, 32, 32))
    plain = model.decode(tokens)
    noisy = model.decode(tokens, noise_scale=0.5, seed=3)
    assert not torch.allclose(noisy, plain)  # the option changed what _decode did
    assert torch.equal(noisy, model.decode(tokens, noise_scale=0.5, seed=3))  # and the seed made it repeatable
    with mock.patch.object(model, "_decode", wraps=model._decode) as spy:
        model.decode(tokens, seed=7)
    assert spy.call_args.kwargs == {"seed": 7}


def test_reconstruct_sends_each_option_where_it_is_declared():
    model = codec()
    with mock.patch.object(model, "_encode", wraps=model._encode) as enc, \
            mock.patch.object(model, "_decode", wraps=model._decode) as dec:
        out = model.reconstruct(wave(), n_q=2, chunk_seconds=0.05)
    assert enc.call_args.kwargs == {"n_q": 2, "chunk_seconds": 0.05}  # declared by encode only / by both
    assert dec.call_args.kwargs == {"chunk_seconds": 0.05}
    assert out.shape == wave().shape
    with pytest.raises(TokenizerError, match=r"no reconstruct option 'temperature'; its encode options are n_q, "
                                             r"chunk_seconds; its decode options are chunk_seconds\."):
        model.reconstruct(wave(), temperature=2)
    with pytest.raises(TokenizerError, match=r"'steps' is an option of image tokenizers such as flextok"):
        model.reconstruct(wave(), steps=2)
    noisy = image_model().reconstruct(torch.rand(1, 3, 32, 32), noise_scale=0.5, seed=1)
    assert noisy.shape == (1, 3, 32, 32)


def test_sample_rate_stays_an_argument_of_audio_encode():
    with pytest.warns(UserWarning, match="resampling input from 8000 Hz"):
        assert audio_model().reconstruct(wave(800), sample_rate=8000).shape == (1, 1, 1600)
    assert "sample_rate" not in Tokenizer.declared_options("encode")


# ---- chunk_seconds moved out of the config -----------------------------------------------------

def test_chunk_seconds_left_the_codec_config_and_old_files_still_load(tmp_path):
    assert "chunk_seconds" not in RVQCodecConfig().to_dict()
    old = {**RVQCodecConfig().to_dict(), "chunk_seconds": 5.0}  # what config.json held before
    assert RVQCodecConfig.from_dict(old) == RVQCodecConfig()
    assert FuseCodecConfig.moved_keys["chunk_seconds"] == "an encode / decode option"
    with pytest.raises(TokenizerError, match="chunk_seconds is an encode / decode option now"):
        RVQCodecConfig().replace(chunk_seconds=5.0)
    with pytest.raises(zoo.CheckpointError, match=r"keys \['chunk_size'\]"):
        RVQCodecConfig.from_dict({**old, "chunk_size": 3})  # other unknown keys are still errors
    folder = codec().save_pretrained(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert "chunk_seconds" not in config
    (folder / "config.json").write_text(json.dumps({**config, "chunk_seconds": 5.0}))
    assert torch.equal(zoo.load(folder).encode(wave()).codes, codec().encode(wave()).codes)
