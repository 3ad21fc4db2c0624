import json
import shutil

import pytest
import soundfile as sf

from zoo.cli import main
from zoo.io import read_image
from zoo.training import image_set


def test_image_set_split_is_by_source_photo(tmp_path, monkeypatch):
    # scikit-image's photos only (the wallpapers are large and slow to decode in a test)
    monkeypatch.setattr(image_set, "WALLPAPER_DIR", tmp_path / "none")
    assert main(["data", "images", "--out", str(tmp_path / "set"), "--size", "64", "--crops", "2"]) == 0
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    sources = lambda files: {f.split("/")[1].rsplit("-", 1)[0] for f in files}  # noqa: E731
    assert sources(manifest["val"]) == {"skimage-astronaut", "skimage-coffee"}
    assert not sources(manifest["train"]) & sources(manifest["val"])
    assert len(manifest["train"]) == 2 * (len(image_set.SKIMAGE_PHOTOS) - 2)
    image = read_image(tmp_path / "set" / manifest["train"][0])
    assert image.shape == (3, 64, 64) and image.std() > 0.02  # a photo, not a blank
    # a held-out photo gives the same crops whichever other sources are installed
    monkeypatch.setattr(image_set, "SKIMAGE_PHOTOS", ("astronaut", "coffee", "rocket", "chelsea"))
    assert main(["data", "images", "--out", str(tmp_path / "fewer"), "--size", "64", "--crops", "2"]) == 0
    for name in manifest["val"]:
        assert read_image(tmp_path / "fewer" / name).equal(read_image(tmp_path / "set" / name))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_speech_set_holds_out_voices_and_sentences(tmp_path):
    assert main(["data", "speech", "--out", str(tmp_path), "--train", "3", "--val", "2"]) == 0
    train_text = {p.read_text() for p in (tmp_path / "train").glob("*.txt")}
    val_text = {p.read_text() for p in (tmp_path / "val").glob("*.txt")}
    assert len(list((tmp_path / "train").glob("*.wav"))) == 3 and len(val_text) == 2
    assert not train_text & val_text
    info = sf.info(str(tmp_path / "val" / "0000.wav"))
    assert info.samplerate == 16000 and info.duration > 1
