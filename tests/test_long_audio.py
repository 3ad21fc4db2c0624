"""Long audio in bounded memory: the chunked LSTM (state carried across chunks, both directions), the
chunked codec passes built on it, and `encode_file`, which streams a file from disk (zoo.io.AudioFileSource)
to the same codes as reading it whole."""
import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from zoo.blocks.seanet import SkipLSTM
from zoo.cli import main
from zoo.errors import TokenizerError
from zoo.hub.registry import tiny_overrides
from zoo.io import AudioFileSource, read_audio
from zoo.tokens import Tokens


def speechtokenizer_with_bilstm(seed: int = 0):
    torch.manual_seed(seed)
    return zoo.create("speechtokenizer-hubert-avg", **{**tiny_overrides("speechtokenizer-hubert-avg"), "lstm_layers": 2})


@pytest.fixture(scope="module")
def long_stereo_file(tmp_path_factory):
    """7 s of speech-like stereo noise at 44.1 kHz, float WAV."""
    rng = np.random.default_rng(0)
    t = np.arange(44100 * 7) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    data = (tone[:, None] + 0.05 * rng.standard_normal((t.size, 2))).astype(np.float32)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, data, 44100, subtype="FLOAT")
    return path


@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_lstm_in_chunks_is_the_lstm(bidirectional):
    torch.manual_seed(0)
    lstm = SkipLSTM(24, 2, bidirectional).eval()
    x = torch.randn(2, 24, 157)
    with torch.no_grad():
        whole = lstm(x)
    for chunk in (1, 10, 64, 157, 1000):
        chunked = lstm.forward_in_chunks(x, chunk)
        assert chunked.shape == whole.shape == (2, 24 * (2 if bidirectional else 1), 157)
        assert (chunked - whole).abs().max() < 1e-6, chunk


def test_a_bilstm_codec_codes_the_same_in_chunks_as_whole():
    model = speechtokenizer_with_bilstm()
    torch.manual_seed(1)
    wav = torch.randn(2, 1, 320 * 73) * 0.2
    whole = model.encode(wav, chunk_seconds=100.0)
    for chunk_seconds in (320 * 4 / 16000, 320 * 25 / 16000):
        assert torch.equal(model.encode(wav, chunk_seconds=chunk_seconds).codes, whole.codes)
        decoded = model.decode(whole, chunk_seconds=chunk_seconds)
        assert (decoded - model.decode(whole, chunk_seconds=100.0)).abs().max() < 1e-5


def test_the_file_source_reads_blocks_equal_to_the_whole_file(long_stereo_file):
    for rate in (16000, 24000, 44100):
        whole, _ = read_audio(long_stereo_file, sample_rate=rate, mix_to_mono=True)
        source = AudioFileSource(long_stereo_file, rate, mix_to_mono=True)
        assert source.shape == (1, 1, whole.shape[-1])
        blocks = torch.cat([source[..., a: a + 9999] for a in range(0, source.shape[-1], 9999)], -1)
        assert (blocks[0] - whole).abs().max() < 1e-6, rate
    with pytest.raises(TokenizerError, match="has 2 channels and the codecs take mono"):
        AudioFileSource(long_stereo_file, 16000)
    with pytest.raises(TypeError, match=r"source\[\.\.\., start:end\]"):
        AudioFileSource(long_stereo_file, 16000, mix_to_mono=True)[0]


@pytest.mark.parametrize("name", ["speechtokenizer-hubert-avg", "wavtokenizer-small-75-24k", "lmspt-12.5hz"])
def test_encode_file_gives_the_codes_of_the_whole_read(name, long_stereo_file, monkeypatch):
    torch.manual_seed(0)
    model = speechtokenizer_with_bilstm() if name.startswith("speech") else zoo.create(name, **tiny_overrides(name))
    options = {"chunk_seconds": 0.5} if "chunk_seconds" in model.declared_options("encode") else {}
    wav, _ = read_audio(long_stereo_file, sample_rate=model.sample_rate, mix_to_mono=True)
    expected = model.encode(wav[None], **options).codes
    reads = []
    original = AudioFileSource._read
    monkeypatch.setattr(AudioFileSource, "_read", lambda self, a, b: reads.append(b - a) or original(self, a, b))
    tokens = model.encode_file(long_stereo_file, mix_to_mono=True, **options)
    assert torch.equal(tokens.codes, expected) and tokens.meta["sample_rate"] == model.sample_rate
    if model.streams_from_disk:  # read in blocks of about a chunk and its context, never the whole 7 s
        assert len(reads) > 5 and max(reads) < 44100 * 1.5, reads
    else:
        assert reads == []  # LM-SPT reads the file whole


def test_zoo_encode_streams_a_long_file_to_the_codes_of_the_whole_clip(long_stereo_file, tmp_path, capsys):
    model = speechtokenizer_with_bilstm()
    folder = model.save_pretrained(tmp_path / "codec")
    assert main(["encode", str(long_stereo_file), "--model", str(folder), "--mix-to-mono", "--opt",
                 "chunk_seconds=0.5", "--out", str(tmp_path / "tok")]) == 0
    saved = Tokens.load(tmp_path / "tok" / "long.tokens.safetensors")
    wav, _ = read_audio(long_stereo_file, sample_rate=16000, mix_to_mono=True)
    assert torch.equal(saved.codes, model.encode(wav[None], chunk_seconds=100.0).codes)


def test_a_bad_long_file_is_named(tmp_path):
    model = speechtokenizer_with_bilstm()
    bad = np.zeros(16000 * 3, np.float32)
    bad[30000] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(TokenizerError, match=r"nan.wav holds NaN or infinite samples \(near 1.\d s\)"):
        model.encode_file(tmp_path / "nan.wav", chunk_seconds=0.5)
    sf.write(tmp_path / "short.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(TokenizerError, match="shorter than one code frame"):
        model.encode_file(tmp_path / "short.wav")
    with pytest.raises(TokenizerError, match="does not exist"):
        model.encode_file(tmp_path / "missing.wav")
