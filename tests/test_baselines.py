"""Classical baselines for `zoo eval --baseline`: thumbnail, JPEG, WebP at a bit budget; Codec2, Opus at their bitrates."""
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.errors import TokenizerError
from zoo.eval import baselines as bl
from zoo.eval.image_metrics import psnr
from zoo.io import read_audio, write_image


@pytest.fixture(scope="module")
def photos():
    """Real photos (skimage's samples) at 64x64, (4, 3, 64, 64) in [0, 1]."""
    from skimage import data

    images = [torch.from_numpy(np.ascontiguousarray(getattr(data, n)())).permute(2, 0, 1)[None].float() / 255
              for n in ("astronaut", "coffee", "chelsea", "rocket")]
    return torch.cat([torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic", antialias=True)
                      for x in images]).clamp(0, 1)


def test_a_known_budget_gives_a_known_thumbnail(photos):
    assert bl.Thumbnail.side(384, 64, 64) == 4 and bl.Thumbnail.side(383, 64, 64) == 3
    assert bl.Thumbnail.side(10**9, 64, 64) == 64
    result = bl.Thumbnail().reconstruct(photos, 384)
    assert result.reconstruction.shape == photos.shape and result.settings == ["4x4"] * 4
    assert result.bits_used == [384.0] * 4
    tiny = bl.Thumbnail().reconstruct(photos[:1], 23)
    assert tiny.settings == [bl.CANNOT_REACH] and tiny.reached == [False]


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_pillow_codecs_fit_the_budget_and_improve_with_it(photos, name):
    codec = bl.BASELINES[name]()
    low, high = codec.reconstruct(photos, 12_000), codec.reconstruct(photos, 40_000)
    assert all(low.reached) and all(high.reached)
    assert max(low.bits_used) <= 12_000 and max(high.bits_used) <= 40_000
    assert all(s.startswith("quality ") for s in low.settings)
    assert low.reconstruction.shape == photos.shape
    assert psnr(photos, high.reconstruction).mean() > psnr(photos, low.reconstruction).mean()


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_a_budget_below_the_lowest_quality_is_reported_not_raised(photos, name):
    result = bl.BASELINES[name]().reconstruct(photos[:2], 200)  # 25 bytes: not even the headers fit
    assert result.reached == [False, False] and result.settings == [bl.CANNOT_REACH] * 2
    assert torch.isnan(result.reconstruction).all()


def test_missing_codec2_is_one_sentence_naming_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(TokenizerError, match=r"codec2 baseline needs c2enc and c2dec: apt-get install codec2"):
        bl.get_baselines("codec2", "audio")
    with pytest.raises(TokenizerError, match="apt-get install opus-tools"):
        bl.get_baselines(["opus"], "audio")
    with pytest.raises(TokenizerError, match="not a baseline for image"):
        bl.get_baselines("codec2", "image")
    with pytest.raises(TokenizerError, match="unknown baseline 'png'"):
        bl.get_baselines("jpeg,png", "image")


def test_zoo_eval_with_baselines_on_real_photos(tmp_path, photos, capsys):
    for i, x in enumerate(photos):
        write_image(tmp_path / "photos" / f"{i}.png", x)
    model = zoo.create("onedpiece-l-256", image_size=64, patch_size=8, num_tokens=16, encoder_width=32, encoder_depth=1,
                       encoder_heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2, token_dim=8, codebook_size=64,
                       codebook_distance="euclidean", decoder_output="pixels", latent_reshape_without_permute=False)
    folder = model.save_pretrained(tmp_path / "model")
    report_path, plot_path = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["eval", "--model", str(folder), "--data", str(tmp_path / "photos"), "--num-tokens", "4,16",
                 "--baseline", "thumbnail,jpeg", "--json", str(report_path), "--plot", str(plot_path)]) == 0
    out = capsys.readouterr().out
    assert "thumbnail" in out and "cannot reach" in out  # 4 tokens x 6 bits: no JPEG file is that small
    rows = json.loads(report_path.read_text())["rows"]
    assert [(r["setting"]["method"], r["setting"]["tokens"]) for r in rows] == [
        ("tokenizer", 4), ("thumbnail", 4), ("jpeg", 4), ("tokenizer", 16), ("thumbnail", 16), ("jpeg", 16)]
    for tokenizer, thumbnail, jpeg in (rows[:3], rows[3:]):
        budget = tokenizer["metrics"]["bits_per_pixel"] * 64 * 64
        assert thumbnail["setting"]["budget_bits"] == pytest.approx(budget)
        assert thumbnail["metrics"]["bits_per_pixel"] <= tokenizer["metrics"]["bits_per_pixel"]
        assert math.isfinite(thumbnail["metrics"]["psnr"]) and 0 < thumbnail["metrics"]["ssim"] <= 1
        assert jpeg["setting"]["codec"] == "cannot reach" and jpeg["metrics"]["psnr"] is None
    assert rows[4]["setting"]["codec"] == "2x2"  # 16 tokens x 6 bits = 96 bits = 4 pixels of 24 bits
    assert plot_path.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory):
    """Two seconds of speech: espeak-ng where installed, else the bundled sample."""
    path = tmp_path_factory.mktemp("speech") / "clip.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "the quick brown fox jumps over the lazy dog"], check=True)
        wav, rate = read_audio(path, sample_rate=16000)
    else:
        wav, rate = read_audio(zoo.__file__.replace("zoo/__init__.py", "hub/samples/speech.flac"), sample_rate=16000)
    return wav[:, : 2 * rate], rate


@pytest.mark.skipif(shutil.which("c2enc") is None or shutil.which("c2dec") is None,
                    reason="codec2 not installed (apt-get install codec2)")
def test_codec2_3200_through_the_speech_runner(tmp_path, speech_clip):
    import soundfile as sf
    from tiny_models import TinyAudioConfig, TinyAudioTokenizer

    from zoo.eval.runner import evaluate_speech

    wav, rate = speech_clip
    direct = bl.Codec2().reconstruct(wav[None], 3200, rate)
    assert direct.reconstruction.shape == (1, 1, wav.shape[-1])
    assert direct.bits_used[0] / (wav.shape[-1] / rate) == pytest.approx(3200, rel=0.05)
    (tmp_path / "speech").mkdir()
    sf.write(tmp_path / "speech" / "0.wav", wav[0].numpy(), rate)
    codec2 = bl.Codec2()
    codec2.bitrates = (3200,)
    report = evaluate_speech(TinyAudioTokenizer(TinyAudioConfig()), tmp_path / "speech", speaker_similarity=False,
                             progress=False, baselines=[codec2])
    row = report.rows[-1]
    assert row["setting"] == {"method": "codec2", "codec": "3200 bit/s"}
    assert row["metrics"]["bitrate_bps"] == pytest.approx(3200, rel=0.05)
    for key in ("mel_distance", "stoi", "pesq_wb", "si_sdr"):
        assert math.isfinite(row["metrics"][key]), key
    assert row["metrics"]["stoi"] > 0.8  # aligned for codec2's analysis delay (unaligned: about 0.7)


@pytest.mark.skipif(shutil.which("opusenc") is None or shutil.which("opusdec") is None,
                    reason="opus-tools not installed (apt-get install opus-tools)")
def test_opus_reports_the_bits_on_file(speech_clip):
    wav, rate = speech_clip
    result = bl.Opus().reconstruct(wav[None], 12000, rate)
    assert result.reconstruction.shape == (1, 1, wav.shape[-1]) and torch.isfinite(result.reconstruction).all()
    assert 12000 * 2 * 0.8 < result.bits_used[0] < 12000 * 2 + 8 * 2000  # the target plus the Ogg headers
