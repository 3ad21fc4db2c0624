import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TinyAudioConfig, TinyAudioTokenizer, TinyImageConfig, TinyImageTokenizer

import zoo
from zoo import CheckpointError, TokenizerError, Tokens
from zoo.tokenizer import ARCHITECTURES


def test_config_round_trips_through_json():
    config = TinyImageConfig(width=12, channel_mults=[1, 3])
    assert config.channel_mults == (1, 3)  # sequences are stored as tuples
    again = TinyImageConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(CheckpointError, match=r"keys \['depth'\]"):
        TinyImageConfig.from_dict({**config.to_dict(), "depth": 3})
    with pytest.raises(TokenizerError, match="no fields"):
        config.replace(depth=3)


@pytest.mark.parametrize("make", [
    lambda: (TinyImageTokenizer(TinyImageConfig()).eval(), torch.rand(2, 3, 32, 32)),
    lambda: (TinyAudioTokenizer(TinyAudioConfig()).eval(), torch.randn(2, 1, 1600) * 0.1),
])
def test_save_pretrained_round_trip_is_bit_identical(tmp_path, make):
    model, x = make()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == model.architecture
    again = zoo.load(tmp_path / "m")
    assert type(again) is type(model) and again.config == model.config and not again.training
    tokens = model.encode(x)
    assert torch.equal(again.encode(x).codes, tokens.codes)
    assert torch.equal(again.decode(tokens), model.decode(tokens))


def test_model_card_names_the_token_budget(tmp_path):
    model = TinyImageTokenizer(TinyImageConfig())
    card = (model.save_pretrained(tmp_path, metrics={"psnr": 21.5}) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tokenizer-zoo")
    assert "| tokens_per_image | 16 |" in card and "| bits_per_image | 96 |" in card
    assert "| psnr | 21.5 |" in card


def test_metadata():
    image = TinyImageTokenizer(TinyImageConfig())
    assert image.info()["tokens_per_image"] == 16 and image.info()["bits_per_image"] == 16 * 6
    audio = TinyAudioTokenizer(TinyAudioConfig())
    info = audio.info()
    assert info["frames_per_second"] == 100 and info["tokens_per_second"] == 300
    assert info["bits_per_second"] == 100 * 3 * 5


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    TinyImageTokenizer(TinyImageConfig()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        zoo.load(tmp_path)


def test_foreign_weights_file_lists_what_does_not_fit(tmp_path):
    TinyImageTokenizer(TinyImageConfig()).save_pretrained(tmp_path)
    save_file({"encoder.weight": torch.zeros(2, 2), "other.bias": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        zoo.load(tmp_path)
    message = str(info.value)
    assert "missing keys: " in message and "decoder.weight" in message
    assert "unexpected keys: other.bias" in message
    assert "shape mismatches: encoder.weight: file (2, 2)" in message


def test_folder_for_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "nope"}))
    with pytest.raises(CheckpointError, match="architecture 'nope'"):
        zoo.load(tmp_path)
    assert "test-tiny-image" in ARCHITECTURES


@pytest.mark.parametrize("x, message", [
    ("not a tensor", "must be a torch.Tensor"),
    (torch.rand(3, 32, 32), r"use x\[None\]"),
    (torch.rand(2, 1, 32, 32), r"\(B, 3, H, W\)"),
    (torch.rand(0, 3, 32, 32), "empty"),
    ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "must be float"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    (torch.rand(1, 3, 32, 32) * 2 - 1, r"\[0, 1\]"),
    (torch.rand(1, 3, 64, 64), "takes 32x32 images"),
    (torch.rand(1, 3, 0, 0), "no pixels"),
])
def test_bad_images_get_clear_errors(x, message):
    with pytest.raises(TokenizerError, match=message):
        TinyImageTokenizer(TinyImageConfig()).encode(x)


@pytest.mark.parametrize("wav, message", [
    (torch.randn(1600), r"wav\[None, None\]"),
    (torch.randn(2, 1600), r"wav\[:, None\]"),
    (torch.randn(1, 2, 1600), "must be mono"),
    (torch.randn(1, 1, 0), "empty"),
    (torch.zeros(1, 1, 1600, dtype=torch.int16), "must be float"),
    (torch.zeros(1, 1, 100), "shorter than one code frame"),
])
def test_bad_audio_gets_clear_errors(wav, message):
    with pytest.raises(TokenizerError, match=message):
        TinyAudioTokenizer(TinyAudioConfig()).encode(wav)


def test_audio_at_another_rate_is_resampled_with_a_note():
    codec = TinyAudioTokenizer(TinyAudioConfig()).eval()
    with pytest.warns(UserWarning, match="resampling input from 8000 Hz"):
        tokens = codec.encode(torch.randn(1, 1, 800) * 0.1, sample_rate=8000)
    assert tokens.codes.shape == (1, 3, 10)  # 0.1 s at 100 frames per second


def test_decode_checks_codes():
    model = TinyImageTokenizer(TinyImageConfig()).eval()
    with pytest.raises(TokenizerError, match=r"codes must lie in \[0, 64\)"):
        model.decode(torch.full((1, 16), 64))
    with pytest.raises(TokenizerError, match="integer"):
        model.decode(torch.zeros(1, 16))
    with pytest.raises(TokenizerError, match="integer"):
        model.decode(torch.zeros(1, 16, dtype=torch.bool))
    with pytest.raises(TokenizerError, match=r"\(B, N\) with 1 <= N <= 16"):
        model.decode(torch.zeros(1, 17, dtype=torch.long))
    codes = torch.randint(0, 64, (2, 16))
    assert torch.equal(model.decode(codes.to(torch.int16)), model.decode(codes))  # narrow integers are widened
    codec = TinyAudioTokenizer(TinyAudioConfig()).eval()
    for bad in (torch.zeros(1, 2, 0, dtype=torch.long), torch.zeros(5, dtype=torch.long),
                torch.zeros(1, 4, 10, dtype=torch.long)):
        with pytest.raises(TokenizerError, match=r"\(B, n_q, frames\) with 1 <= n_q <= 3 and frames >= 1"):
            codec.decode(bad)


def test_audio_far_outside_unit_range_is_warned():
    import warnings

    codec = TinyAudioTokenizer(TinyAudioConfig()).eval()
    with pytest.warns(UserWarning, match="peaks at 50"):
        codec.encode(torch.full((1, 1, 1600), 50.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codec.encode(torch.full((1, 1, 1600), 1.5))  # resampling overshoot is not a unit mistake


def test_tokens_save_and_load(tmp_path):
    tokens = Tokens(torch.randint(0, 9, (2, 5)), lengths=torch.tensor([5, 3]), meta={"model": "x"})
    tokens.save(tmp_path / "t.safetensors")
    again = Tokens.load(tmp_path / "t.safetensors")
    assert torch.equal(again.codes, tokens.codes) and torch.equal(again.lengths, tokens.lengths)
    assert again.meta == {"model": "x"} and again.latents is None
    with pytest.raises(TokenizerError, match=r"lengths must have shape \(B,\)"):
        Tokens(torch.zeros(2, 5, dtype=torch.long), lengths=torch.tensor([1, 2, 3]))


def _tiny_titok():
    import zoo

    torch.manual_seed(0)
    return zoo.create("titok-bl-64-vq", image_size=32, patch_size=8, num_tokens=4, encoder_width=32, encoder_depth=1,
                      encoder_heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2, codebook_size=16)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_converted_with_a_warning(dtype):
    model = _tiny_titok()
    x = torch.rand(2, 3, 32, 32).to(dtype)
    with pytest.warns(UserWarning, match=f"converting {dtype} input"):
        codes = model.encode(x).codes
    assert torch.equal(codes, model.encode(x.float()).codes)


def test_audio_in_float64_is_converted_with_a_warning():
    import zoo

    codec = zoo.create("speechtokenizer-hubert-avg", n_filters=4, strides=(4, 2), dimension=16, semantic_dimension=8,
                       num_quantizers=2, codebook_size=16, lstm_layers=0, bidirectional_encoder_lstm=False)
    wav = 0.1 * torch.randn(1, 1, 800, dtype=torch.float64)
    with pytest.warns(UserWarning, match="converting torch.float64"):
        codes = codec.encode(wav).codes
    assert torch.equal(codes, codec.encode(wav.float()).codes)


def test_non_finite_weights_decode_to_a_clear_error_not_nan_images():
    model = _tiny_titok()
    tokens = model.encode(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        model.decoder.head.weight.fill_(float("nan"))
    with pytest.raises(TokenizerError, match="NaN or infinite values: its weights"):
        model.decode(tokens)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_vae_latents_are_refused_before_decoding(bad):
    import zoo
    from zoo.tokens import Tokens

    torch.manual_seed(0)
    model = zoo.create("titok-bl-64-vae", image_size=32, patch_size=8, num_tokens=4, encoder_width=32, encoder_depth=1,
                       encoder_heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2)
    tokens = model.encode(torch.rand(2, 3, 32, 32))
    assert tokens.latents is not None and model.decode(tokens).shape == (2, 3, 32, 32)
    latents = tokens.latents.clone()
    latents[1, 0, 0] = bad
    with pytest.raises(TokenizerError, match=r"^the tokens' latents hold 1 NaN or infinite values of \d+; they would "):
        model.decode(Tokens(tokens.codes, tokens.lengths, latents, tokens.meta))


def test_corrupt_or_oversized_config_json_is_a_checkpoint_error(tmp_path):
    """Issue 17 rows: a config.json that is a JSON list, not UTF-8, of the wrong kind, or asks for more
    memory than the machine has is one clear CheckpointError, never a raw error or a huge allocation."""
    import dataclasses
    import json

    import zoo
    from zoo.errors import CheckpointError
    from zoo.tokenizer import check_buildable

    folder = TinyImageTokenizer(TinyImageConfig()).save_pretrained(tmp_path / "m")
    good = json.loads((folder / "config.json").read_text())
    cases = {
        "a JSON list": json.dumps([good]).encode(),
        "not UTF-8": b'{"architecture": "test-tiny-image", "width": "\xff\xfe"}',
        "wrong kind": json.dumps({**good, "patch_size": "eight"}).encode(),
        "48 TB": json.dumps({**good, "codebook_size": 3 * 10**12}).encode(),
        "2 GB": json.dumps({**good, "codebook_size": 10**7}).encode(),  # fits the machine, not the file
    }
    expected = {"a JSON list": "holds a JSON list", "not UTF-8": "not valid UTF-8 JSON",
                "wrong kind": "cannot be built", "48 TB": "GiB of weights, far beyond the 0.0 MiB weights file",
                "2 GB": "GiB of weights, far beyond the 0.0 MiB weights file"}
    for label, raw in cases.items():
        (folder / "config.json").write_bytes(raw)
        with pytest.raises(CheckpointError, match=expected[label]):
            zoo.load(folder)
    with pytest.raises(CheckpointError, match="GiB of weights, far beyond this machine's"):  # no file to compare with
        check_buildable(TinyImageTokenizer, TinyImageConfig(codebook_size=3 * 10**12), "a config")
    titok = _tiny_titok()
    deep = dataclasses.replace(titok.config, decoder_depth=10**30)
    with pytest.raises(CheckpointError, match="describes a TiTok of more than 10,000 layers, far beyond this machine's"):
        check_buildable(type(titok), deep, "a config")  # refused while the layers are counted, not after 10**30
    folder = titok.save_pretrained(tmp_path / "titok")
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), "decoder_depth": 10**30}))
    with pytest.raises(CheckpointError, match=r"describes a TiTok of more than (10,000 layers|0.3 GiB of weights), far "
                                              r"beyond the 0.2 MiB weights file beside it"):
        zoo.load(folder)


def test_token_file_with_garbage_metadata_or_float_codes_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    from zoo.tokens import Tokens

    save_file({"codes": torch.zeros(1, 4, dtype=torch.long)}, str(tmp_path / "a.safetensors"),
              metadata={"zoo_tokens": "{not json"})
    with pytest.raises(TokenizerError, match="metadata is not valid JSON"):
        Tokens.load(tmp_path / "a.safetensors")
    save_file({"codes": torch.zeros(1, 4, dtype=torch.long)}, str(tmp_path / "b.safetensors"),
              metadata={"zoo_tokens": "[1, 2]"})
    with pytest.raises(TokenizerError, match="holds a JSON list"):
        Tokens.load(tmp_path / "b.safetensors")
    save_file({"codes": torch.zeros(1, 4)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(TokenizerError, match="not integers"):
        Tokens.load(tmp_path / "c.safetensors")
