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
    assert (tmp_path / "dec" / "a.png").is_file()
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
    # inference needs no training machinery
    code = "import sys, zoo; zoo.list_models(); assert 'lightning' not in sys.modules, 'lightning imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


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
