"""WebDataset-style tar shards: naming, packing and reading back, sharing among ranks and
workers, and the image and speech datamodules over them (one short `zoo fit` on shards)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from zoo.cli import main
from zoo.errors import TokenizerError
from zoo.io import write_audio
from zoo.training import shards
from zoo.training.image_data import ImageShardData
from zoo.training.speech_data import SpeechShardData

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _image_folder(folder: Path, count: int, size: int = 40) -> Path:
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = (torch.rand(size, size + 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        (folder / f"group{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"group{i % 2}" / f"img{i:03d}.png")
    return folder


def _speech_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        t = torch.arange(8000 + 800 * i) / 16000
        write_audio(folder / f"{i:03d}.wav", 0.3 * torch.sin(2 * torch.pi * (200 + 20 * i) * t), 16000)
        (folder / f"{i:03d}.txt").write_text(f"utterance number {i}\n")
    return folder


def _keys(stream) -> list[str]:
    return [sample["__key__"] for sample in stream]


def test_shard_names_expand_from_patterns_globs_and_lists(tmp_path):
    for i in range(3):
        (tmp_path / f"s-{i:03d}.tar").write_bytes(b"")
    pattern = str(tmp_path / "s-{000..002}.tar")
    assert shards.expand_shards(pattern) == [str(tmp_path / f"s-{i:03d}.tar") for i in range(3)]
    assert shards.expand_shards(str(tmp_path / "s-*.tar")) == shards.expand_shards(pattern)
    assert len(shards.expand_shards([pattern, str(tmp_path / "s-001.tar")])) == 4
    assert shards.expand_shards("pipe:cat x.tar") == ["pipe:cat x.tar"]
    with pytest.raises(TokenizerError, match="does not exist"):
        shards.expand_shards(str(tmp_path / "s-{000..003}.tar"))
    with pytest.raises(TokenizerError, match="no shard matches"):
        shards.expand_shards(str(tmp_path / "none-*.tar"))


def test_packed_samples_read_back_whole_and_in_order(tmp_path):
    src = _speech_folder(tmp_path / "speech", 5)
    names = shards.shard_folder(src, str(tmp_path / "out" / "train-{}.tar"), samples_per_shard=2)
    assert [Path(n).name for n in names] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    samples = [s for name in names for s in shards.read_shard(name)]
    assert [s["__key__"] for s in samples] == [f"{i:03d}" for i in range(5)]
    for i, sample in enumerate(samples):
        assert sample["wav"] == (src / f"{i:03d}.wav").read_bytes()
        assert sample["txt"].decode() == f"utterance number {i}\n"
    # a command's stdout streams the same shard
    assert _keys(shards.read_shard(f"pipe:cat {names[0]}")) == ["000", "001"]
    with pytest.raises(TokenizerError, match="needs a"):
        shards.write_shards([], str(tmp_path / "no-number.tar"))


@pytest.mark.parametrize("num_shards", [4, 1])
def test_readers_share_out_samples_without_overlap(tmp_path, monkeypatch, num_shards):
    """Four shards over two readers go shard by shard; one shard goes sample by sample."""
    src = _speech_folder(tmp_path / "speech", 8)
    names = shards.shard_folder(src, str(tmp_path / "train-{}.tar"), samples_per_shard=8 // num_shards)
    seen = []
    for slot in range(2):
        monkeypatch.setattr(shards, "_reader_slot", lambda slot=slot: (slot, 2))
        seen.append(_keys(shards.ShardStream(names, repeat=False)))
    assert seen[0] and seen[1]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"{i:03d}" for i in range(8)]


def test_training_stream_repeats_reshuffled_and_seeded(tmp_path):
    src = _speech_folder(tmp_path / "speech", 8)
    names = shards.shard_folder(src, str(tmp_path / "train-{}.tar"), samples_per_shard=2)
    stream = shards.ShardStream(names, repeat=True, shuffle_buffer=4, seed=3)
    first = _keys(itertools.islice(stream, 24))
    assert sorted(first[:8]) != first[:8] or sorted(first[8:16]) != first[8:16]  # mixed, not file order
    assert len(set(first)) == 8 and all(first.count(k) == 3 for k in set(first))  # three whole passes
    assert _keys(itertools.islice(shards.ShardStream(names, repeat=True, shuffle_buffer=4, seed=3), 24)) == first
    assert _keys(itertools.islice(shards.ShardStream(names, repeat=True, shuffle_buffer=4, seed=4), 24)) != first


def test_image_shard_data_batches_and_workers_split(tmp_path):
    src = _image_folder(tmp_path / "images", 8)
    assert main(["data", "shards", "--src", str(src), "--out", str(tmp_path / "img-{}.tar"), "--per-shard", "2"]) == 0
    data = ImageShardData(str(tmp_path / "img-{000000..000003}.tar"), val_shards=str(tmp_path / "img-*.tar"),
                          crop_size=32, batch_size=3, val_batch_size=8, num_workers=2, shuffle_buffer=2)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (3, 3, 32, 32) and 0 <= float(batch.min()) and float(batch.max()) <= 1
    # validation is one ordered pass; two workers each read their own shards, together all 8 images
    val = list(data.val_dataloader())
    assert sum(b.shape[0] for b in val) == 8
    centre = torch.cat(val)
    assert len({tuple(x.flatten()[:16].tolist()) for x in centre}) == 8


def test_speech_shard_data_keeps_keys_texts_and_crops(tmp_path):
    src = _speech_folder(tmp_path / "speech", 6)
    names = shards.shard_folder(src, str(tmp_path / "sp-{}.tar"), samples_per_shard=3)
    data = SpeechShardData(names, val_shards=names, crop_seconds=0.5, batch_size=4, shuffle_buffer=0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.wav.shape == (4, 1, 8000) and batch.lengths.tolist() == [8000] * 4
    assert all(text == f"utterance number {int(key)}" for key, text in zip(batch.keys, batch.texts))
    assert batch.full_lengths.tolist() == [8000 + 800 * int(k) for k in batch.keys]
    assert all(0 <= o <= f - 8000 for o, f in zip(batch.offsets.tolist(), batch.full_lengths.tolist()))
    val = [b for b in data.val_dataloader()]
    assert [k for b in val for k in b.keys] == [f"{i:03d}" for i in range(6)]
    assert val[0].offsets.tolist() == [0, 0, 0, 0]


def test_image_without_an_image_member_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("no picture")
    names = shards.write_shards([("a", [tmp_path / "a.txt"])], str(tmp_path / "t-{}.tar"))
    data = ImageShardData(names, crop_size=8, batch_size=1, shuffle_buffer=0)
    data.setup("fit")
    with pytest.raises(TokenizerError, match="has no image file"):
        next(iter(data.train_dataloader()))


def test_tiny_recipe_fits_from_shards(tmp_path):
    """recipes/onedpiece/tiny.yaml with its folder data swapped for tar shards, through `zoo fit`."""
    src = _image_folder(tmp_path / "images", 8, size=64)
    shards.shard_folder(src, str(tmp_path / "img-{}.tar"), samples_per_shard=4)
    code = main(["fit", "--config", str(RECIPES / "onedpiece" / "tiny.yaml"),
                 "--data", "zoo.training.image_data.ImageShardData",
                 "--data.init_args.train_shards", str(tmp_path / "img-*.tar"),
                 "--data.init_args.crop_size", "64", "--data.init_args.batch_size", "4",
                 "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0",
                 "--trainer.default_root_dir", str(tmp_path)])
    assert code == 0
