import numpy as np
import pytest
import soundfile as sf
import torch

from zoo import TokenizerError
from zoo.io import read_audio, read_checkpoint, read_image, write_audio, write_image


def test_image_round_trip_and_resize(tmp_path):
    image = torch.rand(3, 40, 60)
    write_image(tmp_path / "a.png", image)
    again = read_image(tmp_path / "a.png")
    assert again.shape == (3, 40, 60) and (again - image).abs().max() <= 0.5 / 255 + 1e-6
    square = read_image(tmp_path / "a.png", size=32)
    assert square.shape == (3, 32, 32) and 0 <= square.min() and square.max() <= 1


def test_grayscale_and_rgba_become_rgb(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "g.png").shape == (3, 8, 8)
    assert read_image(tmp_path / "rgba.png").shape == (3, 8, 8)


def test_unreadable_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(TokenizerError, match="not a readable image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(TokenizerError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "x.wav").write_bytes(b"RIFF....")
    with pytest.raises(TokenizerError, match="not a readable audio file"):
        read_audio(tmp_path / "x.wav")


def test_audio_round_trip_resample_and_channels(tmp_path):
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "mono.wav", tone, 8000)
    wav, rate = read_audio(tmp_path / "mono.wav")
    assert rate == 8000 and wav.shape == (1, 8000) and abs(wav.abs().max() - 0.5) < 1e-3
    wav16, rate16 = read_audio(tmp_path / "mono.wav", sample_rate=16000)
    assert rate16 == 16000 and wav16.shape == (1, 16000)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, -tone], 1), 8000)
    with pytest.raises(TokenizerError, match="2 channels"):
        read_audio(tmp_path / "stereo.wav")
    mixed, _ = read_audio(tmp_path / "stereo.wav", mix_to_mono=True)
    assert mixed.shape == (1, 8000) and mixed.abs().max() < 1e-4  # 16-bit rounding
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(TokenizerError, match="no audio samples"):
        read_audio(tmp_path / "empty.wav")
    write_audio(tmp_path / "out.wav", wav16[None], 16000)
    assert sf.info(str(tmp_path / "out.wav")).frames == 16000
    with pytest.raises(TokenizerError, match="one mono clip"):
        write_audio(tmp_path / "bad.wav", torch.zeros(2, 10), 16000)


def test_read_checkpoint_unwraps_nested_state_dicts(tmp_path):
    weights = {"layer.weight": torch.ones(2)}
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "lightning.ckpt")
    assert torch.equal(read_checkpoint(tmp_path / "lightning.ckpt")["layer.weight"], torch.ones(2))
    torch.save({"model": weights}, tmp_path / "nested.pt")
    assert list(read_checkpoint(tmp_path / "nested.pt")) == ["layer.weight"]
    (tmp_path / "folder").mkdir()
    torch.save(weights, tmp_path / "folder" / "pytorch_model.bin")
    assert list(read_checkpoint(tmp_path / "folder")) == ["layer.weight"]


def test_a_truncated_wav_is_read_with_a_warning_naming_both_durations(tmp_path):
    import warnings

    import numpy as np
    import soundfile as sf

    from zoo.io import read_audio

    rng = np.random.default_rng(0)
    for subtype, cut in (("PCM_16", 1000), ("FLOAT", 4000)):
        full = tmp_path / f"full-{subtype}.wav"
        sf.write(full, (0.1 * rng.standard_normal(32000)).astype("float32"), 16000, subtype=subtype)
        cut_file = tmp_path / f"cut-{subtype}.wav"
        cut_file.write_bytes(full.read_bytes()[:cut])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the whole file: no warning
            assert read_audio(full)[0].shape == (1, 32000)
        with pytest.warns(UserWarning, match=r"truncated: its header says 2\.000 s but the file holds 0\.0\d\d s"):
            wav, _ = read_audio(cut_file)
        assert 0 < wav.shape[1] < 2000


def test_load_of_a_missing_path_says_the_path_does_not_exist():
    import zoo
    from zoo.errors import TokenizerError

    for missing in ("/no/such/dir", "./no-such-folder", "no-such-folder/"):
        with pytest.raises(TokenizerError, match="does not exist"):
            zoo.load(missing)
