"""The embedded default tokenizers (hub/weights/): they load by name offline, their folders are
complete and small, the demo runs on them, and their model cards' held-out metrics reproduce
from a fresh evaluation on data rebuilt the way the card says."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.hub.defaults import DEFAULT_IMAGE_MODEL, DEFAULT_SPEECH_MODEL, WEIGHTS
from zoo.hub.export import report_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
DEFAULTS = (DEFAULT_IMAGE_MODEL, DEFAULT_SPEECH_MODEL)
IMAGE_HELD_OUT_SKIMAGE = "held-out scikit-image photos"  # the part of the held-out set any machine rebuilds
SPEECH_HELD_OUT = "held-out voices and sentences"


def _reports(name: str) -> dict:
    return json.loads((WEIGHTS / name / "metrics.json").read_text())


def _row(report: dict, **setting) -> dict:
    return next(r["metrics"] for r in report["rows"] if all(r["setting"][k] == v for k, v in setting.items()))


@pytest.mark.parametrize("name", DEFAULTS)
def test_embedded_default_loads_offline_and_its_folder_is_complete(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = WEIGHTS / name
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    model = zoo.load(name)
    assert model.name == name and not model.training
    assert zoo.model_entry(name).embedded == folder
    card = (folder / "README.md").read_text()
    for fact in ("| steps |", "| data |", "| recipe |", "| hardware |"):
        assert fact in card, fact
    # every number of the card's measured table comes from the eval reports kept beside it
    for key, value in report_metrics(_reports(name)).items():
        assert f"| {key} | " in card, key
    steps = int(re.search(r"\| steps \| (\d+) \|", card).group(1))
    assert steps >= 1000


@pytest.mark.parametrize("name", DEFAULTS)
def test_embedded_folders_hold_our_weight_names_and_the_architecture_only(name):
    from safetensors.torch import load_file

    keys = list(load_file(WEIGHTS / name / "model.safetensors"))
    private = [k for k in keys if "_codebook" in k or ".vq." in k or ".rvq." in k or k.startswith(("vq.", "rvq."))
               or re.search(r"\.(embed|embed_avg|cluster_size|initted)$", k)]
    assert private == []
    assert {"quantizer.codebook", "quantizer.layers.7.codebook"} & set(keys)
    config = json.loads((WEIGHTS / name / "config.json").read_text())
    model_class = zoo.model_entry(name).model_class
    assert model_class.config_class.moved_keys and not set(model_class.config_class.moved_keys) & set(config)


# sha256 of the codes of the bundled samples, recorded with the folders as trained (in
# vector-quantize-pytorch's weight names), before they were saved again in ours
RECORDED_CODES = {
    DEFAULT_IMAGE_MODEL: "6039cac495333f20a1dfc2c42901df42648acc8f0f19cdd95f3f56707459aa40",  # astronaut.jpg, 64 codes
    DEFAULT_SPEECH_MODEL: "d039241309dd7bc873eeb10bce7941cbfb4096cf70a908d42a90fdad0c5835e4",  # speech.flac, 8 x 273
}


@pytest.mark.parametrize("name", DEFAULTS)
def test_embedded_defaults_give_the_codes_recorded_before_the_rename(name):
    import hashlib

    from zoo.demo import samples_dir
    from zoo.io import read_audio, read_image

    model = zoo.load(name)
    if model.modality == "image":
        codes = model.encode(read_image(samples_dir() / "astronaut.jpg", size=model.image_size)[None]).codes
    else:
        codes = model.encode(read_audio(samples_dir() / "speech.flac", sample_rate=model.sample_rate)[0][None]).codes
    assert hashlib.sha256(codes.numpy().astype("int64").tobytes()).hexdigest() == RECORDED_CODES[name]


def test_embedded_image_tokenizer_prefixes_improve_with_tokens():
    """The first tokens carry the most (tail token drop); this short CPU training gains nothing
    past 16 tokens, and the later tokens must at least not hurt."""
    for label in ("held-out photos", IMAGE_HELD_OUT_SKIMAGE):
        rows = sorted(_reports(DEFAULT_IMAGE_MODEL)[label]["rows"], key=lambda r: r["setting"]["tokens"])
        psnr = {int(r["setting"]["tokens"]): r["metrics"]["psnr"] for r in rows}
        assert psnr[1] + 1 < psnr[4] < psnr[16] and psnr[64] > psnr[16] - 0.1, (label, psnr)


def test_demo_runs_on_the_embedded_defaults(tmp_path, capsys):
    import soundfile as sf

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RANDOM" not in out and out.count("(embedded weights)") == 2
    assert f"{DEFAULT_IMAGE_MODEL}" in out and f"{DEFAULT_SPEECH_MODEL}" in out
    psnr = {int(k): float(v) for k, v in re.findall(r"(\d+) tokens: PSNR ([\d.]+) dB", out)}
    assert set(psnr) == {1, 4, 16, 64} and psnr[1] < psnr[64]
    assert (tmp_path / "astronaut.recon.png").is_file() and sf.info(str(tmp_path / "speech.recon.wav")).duration > 5
    mel = float(re.search(r"mel_distance ([\d.]+)", out).group(1))
    assert mel < 2 * _row(_reports(DEFAULT_SPEECH_MODEL)[SPEECH_HELD_OUT], n_q=8)["mel_distance"]


@pytest.mark.slow
def test_image_card_metrics_reproduce_on_the_rebuilt_held_out_photos(tmp_path, monkeypatch):
    pytest.importorskip("skimage", reason="scikit-image is not installed")
    from zoo.eval.runner import evaluate_images
    from zoo.training import image_set

    card = _reports(DEFAULT_IMAGE_MODEL)[IMAGE_HELD_OUT_SKIMAGE]
    monkeypatch.setattr(image_set, "WALLPAPER_DIR", tmp_path / "none")  # scikit-image's photos only, as in CI
    monkeypatch.setattr(image_set, "SKIMAGE_PHOTOS", ("astronaut", "coffee", "chelsea", "rocket"))
    # as the card's data line says: zoo data images --size 128 --crops 40 (the held-out crops of a photo
    # do not depend on which other photos are installed)
    image_set.build_image_set(tmp_path / "set", size=128, crops_per_image=40, progress=False)
    counts = [int(r["setting"]["tokens"]) for r in card["rows"]]
    fresh = evaluate_images(zoo.load(DEFAULT_IMAGE_MODEL), tmp_path / "set" / "val", counts, progress=False)
    assert fresh.num_items == card["num_items"]
    for k in counts:
        for metric, tolerance in (("psnr", 0.05), ("ssim", 0.002)):
            assert abs(_row(fresh.__dict__, tokens=k)[metric] - _row(card, tokens=k)[metric]) < tolerance, (k, metric)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pystoi") is None, reason="pystoi is not installed")
def test_speech_card_metrics_reproduce_on_the_rebuilt_held_out_set(tmp_path):
    from zoo.eval.runner import evaluate_speech
    from zoo.training import speech_synth

    if not speech_synth.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    card = _reports(DEFAULT_SPEECH_MODEL)[SPEECH_HELD_OUT]
    assert main(["data", "speech", "--out", str(tmp_path), "--train", "0", "--val", str(card["num_items"])]) == 0
    torch.manual_seed(0)
    fresh = evaluate_speech(zoo.load(DEFAULT_SPEECH_MODEL), tmp_path / "val", [8], progress=False,
                            speaker_similarity=importlib.util.find_spec("resemblyzer") is not None)
    ours, theirs = _row(fresh.__dict__, n_q=8), _row(card, n_q=8)
    # espeak-ng's exact samples may differ between its versions: "within noise" is a few percent
    assert abs(ours["mel_distance"] - theirs["mel_distance"]) < 0.05 * theirs["mel_distance"]
    assert abs(ours["stoi"] - theirs["stoi"]) < 0.02
    if "pesq_wb" in ours:
        assert abs(ours["pesq_wb"] - theirs["pesq_wb"]) < 0.1
    if "speaker_similarity" in ours:
        assert abs(ours["speaker_similarity"] - theirs["speaker_similarity"]) < 0.02
