import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from test_registry import official_state  # noqa: F401  (registers the test models)

import zoo
from zoo.cli import main
from zoo.io import write_image


def test_list_and_info(capsys):
    assert main(["list", "test-tiny-*"]) == 0
    out = capsys.readouterr().out
    assert "test-tiny-image-a" in out and "test-tiny-audio" in out and "licence" in out
    assert main(["list", "no-such-*"]) == 1
    assert main(["info", "test-tiny-audio"]) == 0
    out = capsys.readouterr().out
    assert '"tokens_per_second": 300.0' in out and '"sample_rate": 16000' in out


def test_unknown_model_is_one_line_error(capsys):
    assert main(["info", "test-tiny-imag-a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: no model named") and len(err.strip().splitlines()) == 1


def test_encode_decode_reconstruct_files(tmp_path, capsys):
    folder = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "img-model")
    write_image(tmp_path / "a.png", torch.rand(3, 48, 40))
    assert main(["encode", "--model", str(folder), str(tmp_path / "a.png"), "--out", str(tmp_path / "tok")]) == 0
    assert (tmp_path / "tok" / "a.tokens.safetensors").is_file()
    # decode finds the model in the token file's metadata
    assert main(["decode", str(tmp_path / "tok" / "a.tokens.safetensors"), "--out", str(tmp_path / "dec")]) == 0
    assert (tmp_path / "dec" / "a.decoded.png").is_file()  # never a.png: that may be the input
    assert main(["reconstruct", "--model", str(folder), str(tmp_path / "a.png"), "--out", str(tmp_path / "rec")]) == 0
    assert "PSNR" in capsys.readouterr().out and (tmp_path / "rec" / "a.recon.png").is_file()

    codec = zoo.create("test-tiny-audio").save_pretrained(tmp_path / "codec")
    sf.write(tmp_path / "s.wav", (0.1 * np.random.randn(8000, 2)).astype(np.float32), 8000)
    assert main(["reconstruct", "--model", str(codec), str(tmp_path / "s.wav"), "--out", str(tmp_path / "rec")]) == 1
    assert "--mix-to-mono" in capsys.readouterr().err
    assert main(["reconstruct", "--model", str(codec), str(tmp_path / "s.wav"), "--mix-to-mono", "--n-q", "2",
                 "--out", str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    assert "codes (1, 2, 100)" in out and sf.info(str(tmp_path / "rec" / "s.recon.wav")).samplerate == 16000


def test_console_script_and_light_import():
    done = subprocess.run(["zoo", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "reconstruct" in done.stdout
    # inference needs no training machinery: build, load, encode and decode both embedded defaults
    code = """
import sys, torch, zoo
zoo.create("titok-s-128")
image = zoo.load("zoo-image-onedpiece-64")
assert image.decode(image.encode(torch.rand(1, 3, 64, 64))).shape == (1, 3, 64, 64)
codec = zoo.load("zoo-speech-rvq-16k")
assert codec.decode(codec.encode(0.1 * torch.randn(1, 1, 8000))).shape == (1, 1, 8000)
flex = zoo.create("flextok-d12-d12-in1k", image_size=32, vae_block_channels=(8, 16), vae_norm_groups=4, num_tokens=4,
                  encoder_width=32, encoder_depth=1, encoder_heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2)
assert flex.decode(flex.encode(torch.rand(1, 3, 32, 32), num_tokens=2), steps=1).shape == (1, 3, 32, 32)
heavy = ["lightning", "pytorch_lightning", "zoo.training", "zoo.losses", "zoo.blocks.discriminators_audio",
         "zoo.blocks.discriminators_image", "diffusers", "zoo.teachers.vision"]
loaded = [m for m in heavy if m in sys.modules]
assert not loaded, f"inference imported {loaded}"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_opt_passes_typed_options_to_encode_decode_and_reconstruct(tmp_path, capsys):
    from zoo.models.audio.speechtokenizer import SpeechTokenizer, SpeechTokenizerConfig

    torch.manual_seed(0)
    codec = SpeechTokenizer(SpeechTokenizerConfig(n_filters=4, strides=(4, 2), dimension=16, semantic_dimension=8,
                                                  num_quantizers=3, codebook_size=32, lstm_layers=0,
                                                  bidirectional_encoder_lstm=False))
    folder = codec.save_pretrained(tmp_path / "codec")
    sf.write(tmp_path / "s.wav", (0.1 * np.random.randn(1600)).astype(np.float32), 16000)
    common = ["--model", str(folder), str(tmp_path / "s.wav"), "--out", str(tmp_path / "o")]
    assert main(["reconstruct", *common, "--opt", "n_q=2", "--opt", "chunk_seconds=0.01"]) == 0
    assert "codes (1, 2, 200)" in capsys.readouterr().out
    assert main(["encode", *common, "--opt", "n_q=1"]) == 0
    assert "codes (1, 1, 200)" in capsys.readouterr().out
    tokens = str(tmp_path / "o" / "s.tokens.safetensors")
    assert main(["decode", "--model", str(folder), tokens, "--opt", "chunk_seconds=0.01", "--out", str(tmp_path / "d")]) == 0
    assert sf.info(str(tmp_path / "d" / "s.decoded.wav")).frames == 1600
    image = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "img")
    write_image(tmp_path / "a.png", torch.rand(3, 32, 32))
    assert main(["reconstruct", "--model", str(image), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--opt", "noise_scale=0.2", "--opt", "seed=1"]) == 0


@pytest.mark.parametrize("command, opts, message", [
    ("reconstruct", ["--opt", "n_q=2.5"], "--opt n_q=2.5: option 'n_q' takes int | None, got '2.5'."),
    ("reconstruct", ["--opt", "steps=4"], "has no reconstruct option 'steps'"),
    ("encode", ["--opt", "n_q"], "--opt 'n_q' is not KEY=VALUE"),
    ("encode", ["--n-q", "1", "--opt", "n_q=2"], "option 'n_q' is given twice"),
    ("encode", ["--num-tokens", "4"], "'num_tokens' is an option of image tokenizers"),
    ("decode", ["--opt", "n_q=1"], "'n_q' is an encode option here: pass it to encode()"),
])
def test_bad_opt_is_a_one_line_error(tmp_path, capsys, command, opts, message):
    folder = zoo.create("test-tiny-audio").save_pretrained(tmp_path / "codec")
    sf.write(tmp_path / "s.wav", (0.1 * np.random.randn(1600)).astype(np.float32), 16000)
    target = str(tmp_path / "s.wav")
    if command == "decode":
        zoo.load(folder).encode(torch.randn(1, 1, 1600) * 0.1).save(tmp_path / "s.tokens.safetensors")
        target = str(tmp_path / "s.tokens.safetensors")
    assert main([command, "--model", str(folder), target, *opts, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_bench_kernels_command(capsys):
    assert main(["bench", "kernels", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "zoo.kernels benchmark" in out and "codes equal" in out and "1.000000" in out


@pytest.mark.slow
def test_reconstruct_a_registered_image_model_writes_a_png(tmp_path, capsys):
    # Released weights cannot be downloaded here: a random-weight copy stands in as the checkpoint.
    zoo.create("titok-s-128").save_pretrained(tmp_path / "weights")
    write_image(tmp_path / "photo.png", torch.rand(3, 300, 280))
    assert main(["reconstruct", "--model", "titok-s-128", "--checkpoint", str(tmp_path / "weights"),
                 str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")]) == 0
    assert "codes (1, 128)" in capsys.readouterr().out
    from zoo.io import read_image

    assert read_image(tmp_path / "out" / "photo.recon.png").shape == (3, 256, 256)


def test_foreign_tokens_batches_and_other_checkpoints_are_never_silent(tmp_path, capsys):
    """Issue 17 rows: tokens of another model or modality are refused (with an explicit override), a
    token file holding a batch decodes every item, and checkpoint= of another architecture is refused."""
    from zoo.errors import CheckpointError, TokenizerError
    from zoo.tokens import Tokens

    torch.manual_seed(0)
    a, b = zoo.create("test-tiny-image-a"), zoo.create("test-tiny-image-b")
    a.name, b.name = "test-tiny-image-a", "test-tiny-image-b"  # as zoo.load names them
    x = torch.rand(3, 3, 32, 32)
    tokens = a.encode(x)
    assert tokens.meta["model"] == "test-tiny-image-a" and tokens.meta["modality"] == "image"
    with pytest.raises(TokenizerError, match="made by test-tiny-image-a, not test-tiny-image-b"):
        b.decode(tokens)
    assert b.decode(tokens, other_model_ok=True).shape == x.shape  # the explicit override
    codec = zoo.create("test-tiny-audio")
    with pytest.raises(TokenizerError, match="made by an image model"):
        codec.decode(Tokens(torch.zeros(1, 2, 5, dtype=torch.long), meta={"modality": "image"}))

    # a file holding a batch of 3 writes three images, each the decode of its own item
    tokens.save(tmp_path / "batch.tokens.safetensors")
    folder = a.save_pretrained(tmp_path / "a")
    assert main(["decode", "--model", str(folder), str(tmp_path / "batch.tokens.safetensors"),
                 "--out", str(tmp_path / "dec")]) == 0
    written = sorted(p.name for p in (tmp_path / "dec").iterdir())
    assert written == ["batch.decoded.0.png", "batch.decoded.1.png", "batch.decoded.2.png"]
    from zoo.io import read_image

    one = read_image(tmp_path / "dec" / "batch.decoded.1.png")
    assert (one - a.decode(Tokens(tokens.codes[1:2])).clamp(0, 1)[0]).abs().max() <= 1 / 255 + 1e-6

    # the CLI: --model naming another registered model is refused unless --other-model
    b_folder = b.save_pretrained(tmp_path / "b")
    err_argv = ["decode", "--model", "test-tiny-image-b", "--checkpoint", str(b_folder),
                str(tmp_path / "batch.tokens.safetensors"),
                "--out", str(tmp_path / "dec-b")]
    capsys.readouterr()
    assert main(err_argv) == 1 and "--other-model" in capsys.readouterr().err
    assert not (tmp_path / "dec-b").exists() or not any((tmp_path / "dec-b").iterdir())
    assert main([*err_argv, "--other-model"]) == 0 and len(list((tmp_path / "dec-b").iterdir())) == 3

    # checkpoint= a folder of another architecture (a speech codec for an image name)
    speech = codec.save_pretrained(tmp_path / "speech")
    with pytest.raises(CheckpointError, match="holds a TinyAudioTokenizer"):
        zoo.load("test-tiny-image-a", checkpoint=speech)


def test_out_naming_a_file_and_token_files_naming_a_hub_repo(tmp_path, capsys, monkeypatch):
    """--out that is an existing file is one clear error before anything is written; a token file whose
    metadata names a hub repo is not fetched unless --allow-download (no network attempt is made)."""
    from zoo.tokens import Tokens

    folder = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "m")
    write_image(tmp_path / "a.png", torch.rand(3, 32, 32))
    (tmp_path / "taken").write_text("not a folder")
    capsys.readouterr()
    assert main(["encode", "--model", str(folder), str(tmp_path / "a.png"), "--out", str(tmp_path / "taken")]) == 1
    assert "is a file" in capsys.readouterr().err and (tmp_path / "taken").read_text() == "not a folder"

    import zoo.hub.sources as sources

    def no_network(*args, **kwargs):
        raise AssertionError("a token file made the command contact the hub")

    monkeypatch.setattr(sources, "hub_unreachable", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    Tokens(torch.zeros(1, 16, dtype=torch.long), meta={"model": "some-org/some-model", "modality": "image"}).save(
        tmp_path / "x.tokens.safetensors")
    assert main(["decode", str(tmp_path / "x.tokens.safetensors"), "--out", str(tmp_path / "dec")]) == 1
    err = capsys.readouterr().err
    assert "some-org/some-model" in err and "--allow-download" in err
    import os

    assert "HF_HUB_OFFLINE" not in os.environ  # restored after the command


def test_an_extreme_aspect_ratio_image_is_read_in_bounded_memory(tmp_path):
    """A 40000x1 PNG is cut to its central box before decoding to float (it took 2.6 GB before)."""
    import textwrap

    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 40000, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    script = textwrap.dedent(f"""
        import resource
        from zoo.io import read_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        x = read_image({str(tmp_path / 'strip.png')!r}, size=64)
        assert tuple(x.shape) == (3, 64, 64), x.shape
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) < 300  # MiB above the interpreter; the uncut resize needs ~2,600


def test_reading_an_image_within_8_to_1_is_unchanged_by_the_central_box(tmp_path):
    from torchvision.transforms.functional import center_crop, resize

    from zoo.io import _bicubic, read_image

    torch.manual_seed(0)
    for i, shape in enumerate([(3, 40, 90), (3, 33, 100), (3, 20, 160), (3, 150, 19)]):
        write_image(tmp_path / f"{i}.png", torch.rand(*shape))
        whole = read_image(tmp_path / f"{i}.png")
        old = center_crop(resize(whole, 32, interpolation=_bicubic(), antialias=True).clamp(0, 1), [32, 32])
        assert torch.equal(read_image(tmp_path / f"{i}.png", size=32), old), shape
