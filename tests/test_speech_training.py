"""Speech data, the espeak-ng set generator and codec training through `zoo fit` (the tiny
SpeechTokenizer, DM-Codec and FuseCodec recipes)."""
from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml

from zoo.errors import TokenizerError
from zoo.io import write_audio
from zoo.training import speech_synth
from zoo.training.speech_data import SpeechDataModule, SpeechFolder, collate_speech

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "speech"
WORDS = "the quick brown fox jumps over a lazy dog while seven small birds sing".split()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _write_fallback_set(folder: Path, count: int, sample_rate: int = 16000) -> None:
    """Without espeak-ng: voiced-like tones with noise and varying pitch, plus word transcripts."""
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        n = int(sample_rate * (1.0 + 0.25 * (i % 3)))
        t = torch.arange(n) / sample_rate
        f0 = 110 + 40 * i + 30 * torch.sin(2 * torch.pi * 3 * t)
        phase = 2 * torch.pi * torch.cumsum(f0, 0) / sample_rate
        wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.2 + 0.02 * torch.randn(n, generator=g)
        write_audio(folder / f"{i:04d}.wav", wav * (0.5 + 0.5 * torch.sin(2 * torch.pi * 2 * t) ** 2), sample_rate)
        (folder / f"{i:04d}.txt").write_text(" ".join(WORDS[i % 5: i % 5 + 4 + i % 3]) + "\n")


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("speech")
    if speech_synth.espeak_available():
        speech_synth.make_speech_set(folder, count=8)
    else:
        _write_fallback_set(folder, 8)
    return folder


# ---- data ----------------------------------------------------------------------------------

def test_speech_folder_crops_pads_and_reads_transcripts(speech_dir, tmp_path):
    data = SpeechFolder(speech_dir, 16000, crop_seconds=0.5)
    items = [data[i] for i in range(3)]
    assert all(it.wav.shape == (8000,) and it.text for it in items)
    assert all(0 <= it.offset <= it.full_length - 8000 for it in items)
    whole = SpeechFolder(speech_dir, 8000, crop_seconds=None)[0]  # resampled, not cropped
    assert whole.offset == 0 and whole.wav.shape[0] == whole.full_length
    assert abs(whole.full_length - items[0].full_length / 2) <= 1
    batch = collate_speech([whole, items[1]])
    assert batch.wav.shape == (2, 1, whole.full_length) and batch.lengths.tolist() == [whole.full_length, 8000]
    assert batch.wav[1, 0, 8000:].abs().sum() == 0 and batch.keys == ["0000", "0001"]
    # transcripts: required ones must exist
    (tmp_path / "a").mkdir()
    write_audio(tmp_path / "a" / "x.wav", torch.zeros(1600), 16000)
    assert SpeechFolder(tmp_path / "a", 16000)[0].text == ""
    with pytest.raises(TokenizerError, match="no transcript"):
        SpeechFolder(tmp_path / "a", 16000, require_transcripts=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no audio files"):
        SpeechFolder(tmp_path / "empty", 16000)
    with pytest.raises(TokenizerError, match="does not exist"):
        SpeechFolder(tmp_path / "missing", 16000)


def test_datamodule_batches(speech_dir):
    dm = SpeechDataModule(str(speech_dir), str(speech_dir), crop_seconds=0.25, batch_size=3, random_crop=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.wav.shape == (3, 1, 4000) and batch.offsets.tolist() == [0, 0, 0]
    val = next(iter(dm.val_dataloader()))
    assert val.lengths.max() == val.full_lengths.max()  # validation keeps clips whole


@pytest.mark.skipif(not speech_synth.espeak_available(), reason="the espeak-ng binary is not installed")
def test_espeak_generator_varies_voices(tmp_path):
    paths = speech_synth.make_speech_set(tmp_path, count=2, sample_rate=16000,
                                         voices=("en-us", "en-gb+f3"), speeds=(150,), pitches=(40,))
    assert [p.name for p in paths] == ["0000.wav", "0001.wav"]
    assert (tmp_path / "0001.txt").read_text().strip() == speech_synth.SENTENCES[1]
    from zoo.io import read_audio
    wav, rate = read_audio(paths[0])
    assert rate == 16000 and wav.shape[1] > 8000 and wav.abs().max() > 0.05


# ---- recipes -------------------------------------------------------------------------------

def test_every_speech_recipe_names_real_arguments():
    from zoo.training.codec import CodecTraining
    from zoo.training.skeleton import AdversarialTraining

    model_args = set(inspect.signature(CodecTraining.__init__).parameters) | set(
        inspect.signature(AdversarialTraining.__init__).parameters)
    data_args = set(inspect.signature(SpeechDataModule.__init__).parameters)
    recipes = sorted(RECIPES.glob("*.yaml"))
    assert len(recipes) >= 6
    for path in recipes:
        cfg = yaml.safe_load(path.read_text())
        assert cfg["model"]["class_path"] == "zoo.training.codec.CodecTraining", path.name
        assert set(cfg["model"]["init_args"]) <= model_args, (path.name, set(cfg["model"]["init_args"]) - model_args)
        assert set(cfg["data"]["init_args"]) <= data_args, path.name


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_speech_recipes_parse(recipe, capsys):
    """Every speech recipe's terms and teachers parse (--print_config instantiates nothing)."""
    from zoo.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(RECIPES / recipe), "--print_config"])
    assert e.value.code == 0, capsys.readouterr().err[-2000:]


def _fit(recipe: str, speech_dir: Path, log_dir: Path, *extra: str) -> dict[str, list[float]]:
    from zoo.training.cli import main

    main(["fit", "--config", str(RECIPES / recipe), "--data.init_args.train_dir", str(speech_dir),
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir",
          str(log_dir), "--trainer.default_root_dir", str(log_dir), *extra])
    rows = list(csv.DictReader(next(log_dir.rglob("metrics.csv")).open()))
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in rows[0] if k.startswith("train/")}


def _went_down(values: list[float], k: int = 5, margin: float = 0.0) -> bool:
    return sum(values[-k:]) / k < sum(values[:k]) / k - margin


@pytest.mark.parametrize("recipe, distill_terms", [
    ("speechtokenizer-tiny.yaml", ["train/semantic"]),
    ("dmcodec-tiny.yaml", ["train/context", "train/semantic"]),
    ("fusecodec-tiny.yaml", ["train/semantic_global", "train/context_global", "train/context_aligned"]),
    ("wavtokenizer-tiny.yaml", []),  # one codebook, Vocos decoder: the codec losses alone
    ("lmspt-tiny.yaml", ["train/resynthesis"]),  # the semantic tokens' speech, judged by a frozen encoder
])
def test_tiny_recipe_trains_and_losses_go_down(recipe, distill_terms, speech_dir, tmp_path):
    """The recipe's own step count; mean of the first five batches against the last five."""
    logs = _fit(recipe, speech_dir, tmp_path)
    assert len(logs["train/loss"]) >= 50  # 10 generator-only batches, then two optimizer steps per batch
    assert len(logs["train/discriminator"]) >= 40  # the discriminators trained
    assert _went_down(logs["train/loss"], margin=1.0), logs["train/loss"]
    assert _went_down(logs["train/mel"], margin=1.0), logs["train/mel"]
    for term in distill_terms:
        assert len(logs[term]) == len(logs["train/loss"]), term
        assert _went_down(logs[term], margin=0.05), (term, logs[term])


def test_training_from_cached_teacher_features_and_export(speech_dir, tmp_path):
    """Speech-teacher features precomputed for whole utterances are cut to each crop; validation
    runs on whole clips of different lengths; the trained codec is exported and loads back."""
    import zoo
    from zoo.io import read_audio
    from zoo.teachers import RandomSpeechTeacher, RandomTextTeacher, precompute_folder

    teacher = RandomSpeechTeacher(dim=16, sample_rate=16000, hop_length=320)
    assert precompute_folder(teacher, speech_dir, tmp_path / "cache") == 8
    assert precompute_folder(RandomTextTeacher(dim=4), speech_dir, tmp_path / "text") == 8
    assert (tmp_path / "text" / "0003.safetensors").is_file()
    export = tmp_path / "export"
    logs = _fit("speechtokenizer-tiny.yaml", speech_dir, tmp_path / "logs", "--trainer.max_steps", "4",
                "--data.init_args.random_crop", "true", "--data.init_args.val_dir", str(speech_dir),
                "--trainer.limit_val_batches", "1",
                "--model.init_args.terms", json.dumps([{"class_path": "zoo.training.terms.SemanticDistill", "init_args": {
                    "weight": 50.0, "teacher": {"class_path": "zoo.teachers.CachedTeacher",
                                                "init_args": {"folder": str(tmp_path / "cache")}}}}]),
                "--model.init_args.export_dir", str(export))
    assert len(logs["train/semantic"]) == 4
    rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
    val = [float(r["val/semantic"]) for r in rows if r.get("val/semantic")]
    assert val and all(0 < v < 10 for v in val)  # whole, padded validation clips
    codec = zoo.load(str(export))
    wav = read_audio(next(speech_dir.glob("*.wav")), 16000)[0][None, :, :4000]
    assert codec.encode(wav).codes.shape == (1, 2, 13)
    # fine-tuning starts from such a folder (with the recipe's overrides, which must fit it)
    from zoo.training.common import build_tokenizer
    overrides = yaml.safe_load((RECIPES / "speechtokenizer-tiny.yaml").read_text())["model"]["init_args"]["tokenizer_overrides"]
    again = build_tokenizer("speechtokenizer-hubert-avg", overrides, checkpoint=str(export))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in codec.state_dict().items())
    with pytest.raises(TokenizerError):
        build_tokenizer("speechtokenizer-hubert-avg", dict(overrides, dimension=8), checkpoint=str(export))


TINY_CODEC = dict(n_filters=4, dimension=16, lstm_layers=0, num_quantizers=2, codebook_size=16, semantic_dimension=16)
SMALL_DISCRIMINATORS = dict(discriminator_channels=4, discriminator_max_channels=16)


def test_codec_training_refuses_mismatched_terms_and_teachers():
    from zoo.teachers import RandomSpeechTeacher, RandomTextTeacher
    from zoo.training.codec import CodecTraining
    from zoo.training.terms import ContextDistill, SemanticDistill

    def module(name="speechtokenizer-hubert-avg", overrides=TINY_CODEC, **kwargs):
        return CodecTraining(tokenizer=name, tokenizer_overrides=overrides, **SMALL_DISCRIMINATORS, **kwargs)

    with pytest.raises(TokenizerError, match="semantic_dimension"):
        module(terms=[SemanticDistill(RandomSpeechTeacher(dim=8))])
    with pytest.raises(TokenizerError, match="distils toward speech features"):
        SemanticDistill(RandomTextTeacher(dim=16))
    with pytest.raises(TokenizerError, match="distils toward text features"):
        ContextDistill(RandomSpeechTeacher(dim=16))
    with pytest.raises(TokenizerError, match="distinct names"):
        module(terms=[SemanticDistill(RandomSpeechTeacher(16)), SemanticDistill(RandomSpeechTeacher(16))])
    with pytest.raises(TokenizerError, match="not an audio tokenizer"):
        module("onedpiece-l-256", dict(image_size=32, patch_size=8, num_tokens=4, encoder_width=16, encoder_depth=1,
                                       decoder_width=16, decoder_depth=1, encoder_heads=2, decoder_heads=2,
                                       decoder_output="pixels"))
    plain = module()
    assert len(plain.terms) == 0 and plain.discriminator is not None
    with pytest.raises(TokenizerError, match="FuseCodec"):
        module("dmcodec-lm-sm", fuse_features=True,
               terms=[SemanticDistill(RandomSpeechTeacher(16)), ContextDistill(RandomTextTeacher(16))])


def test_terms_with_alike_teachers_share_one_and_run_it_once(monkeypatch):
    """Two terms built with the same teacher settings run that teacher once a batch; a teacher with
    other weights (another seed) stays separate."""
    from zoo.teachers import RandomSpeechTeacher, RandomTextTeacher
    from zoo.training.codec import CodecTraining
    from zoo.training.speech_data import SpeechBatch
    from zoo.training.terms import AlignedContextDistill, GlobalContextSupervision, GlobalSemanticSupervision, SemanticDistill

    terms = [SemanticDistill(RandomSpeechTeacher(16)), GlobalSemanticSupervision(RandomSpeechTeacher(16)),
             GlobalContextSupervision(RandomTextTeacher(24)), AlignedContextDistill(RandomTextTeacher(24, seed=1))]
    module = CodecTraining(tokenizer="fusecodec-16k", tokenizer_overrides=dict(TINY_CODEC, context_dimension=24),
                           terms=terms, **SMALL_DISCRIMINATORS)
    assert terms[0].teacher is terms[1].teacher and terms[2].teacher is not terms[3].teacher
    calls = []
    for teacher in {id(t.teacher): t.teacher for t in terms}.values():
        original = teacher._features
        monkeypatch.setattr(teacher, "_features", lambda *a, _f=original: calls.append(1) or _f(*a))
    wav = torch.randn(2, 1, 3200) * 0.1
    batch = SpeechBatch(wav, torch.tensor([3200, 1600]), torch.zeros(2, dtype=torch.long), torch.tensor([3200, 1600]),
                        ["a few words here", "two words"], ["a", "b"])
    out, recon, rec, losses = module.losses(batch)
    assert len(calls) == 3  # one speech teacher (shared), two text teachers (different seeds)
    assert list(losses) == ["semantic", "semantic_global", "context_global", "context_aligned"]
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    # each text term trains a projection of its own; the exported codec holds none of them
    assert {n.split(".")[1] for n, _ in module.named_parameters() if n.startswith("terms.")} == {"2", "3"}
    assert not any("projection" in k for k in module.tokenizer.state_dict())


def test_noise_floor_fills_digital_silence_but_not_padding():
    from zoo.training.codec import CodecTraining
    from zoo.training.speech_data import SpeechBatch

    wav = torch.zeros(2, 1, 16000)
    wav[0, 0, :100] = 0.5
    batch = SpeechBatch(wav, torch.tensor([16000, 8000]), torch.zeros(2, dtype=torch.long),
                        torch.tensor([16000, 8000]), ["", ""], ["a", "b"])
    noisy = CodecTraining.with_noise_floor(batch, 1e-3)
    assert noisy.wav[1, 0, 8000:].abs().max() == 0  # padding stays silent (it is masked in the losses)
    assert 0.8e-3 < noisy.wav[0, 0, 100:].std() < 1.2e-3 and 0.8e-3 < noisy.wav[1, 0, :8000].std() < 1.2e-3
    assert batch.wav[1].abs().max() == 0 and noisy.keys == batch.keys  # the input batch is unchanged
