"""Speech data for codec training: every audio file under a folder (recursively), with its
transcript from `<name>.txt` beside it when there is one; resampled to the codec's rate,
randomly cropped, and padded into batches with lengths.

A batch also says where each crop sits in its utterance (`offsets`, `full_lengths`), so that
features of the whole utterance (cached teacher features, text tokens spread over the whole
utterance) can be cut to the crop."""
from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from zoo.errors import TokenizerError
from zoo.io import AUDIO_SUFFIXES, read_audio
from zoo.training.resumable_order import ResumableOrderData, item_rng


class SpeechItem(NamedTuple):
    """One (cropped) utterance as the folder dataset gives it."""

    wav: torch.Tensor   # (T,)
    offset: int         # crop start, samples into the (resampled) utterance
    full_length: int    # samples of the whole utterance
    text: str           # "" without a transcript
    key: str            # path relative to the root, without suffix


class SpeechBatch(NamedTuple):
    """A padded batch of utterances with what teachers and masks need."""

    wav: torch.Tensor            # (B, 1, T) zero-padded
    lengths: torch.Tensor        # (B,) valid samples
    offsets: torch.Tensor        # (B,) crop starts
    full_lengths: torch.Tensor   # (B,) utterance lengths
    texts: list[str]
    keys: list[str]


class SpeechFolder(Dataset):
    """Audio files under a folder (recursively), resampled, mono, optionally cropped, with transcripts."""

    def __init__(self, root: str | Path, sample_rate: int, crop_seconds: float | None = None,
                 random_crop: bool = True, require_transcripts: bool = False, min_seconds: float = 0.0):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise TokenizerError(f"speech data folder {self.root} does not exist.")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not self.files:
            raise TokenizerError(f"{self.root} holds no audio files ({', '.join(AUDIO_SUFFIXES)}).")
        if require_transcripts:
            missing = [p.name for p in self.files if not p.with_suffix(".txt").is_file()]
            if missing:
                raise TokenizerError(f"{len(missing)} audio files in {self.root} have no transcript "
                                     f"(<name>.txt beside them), e.g. {missing[0]}; the recipe's text teacher needs them.")
        self.sample_rate, self.random_crop, self.min_seconds = sample_rate, random_crop, min_seconds
        self.crop = None if crop_seconds is None else max(1, round(crop_seconds * sample_rate))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> SpeechItem:
        """key: an index, or ResumableShuffle's (index, crop seed)."""
        index, rng = item_rng(key)
        path = self.files[index]
        wav, _ = read_audio(path, sample_rate=self.sample_rate, mix_to_mono=True)
        wav, offset, full = crop_utterance(wav[0], self.crop, self.random_crop, rng)
        transcript = path.with_suffix(".txt")
        text = transcript.read_text().strip() if transcript.is_file() else ""
        return SpeechItem(wav, offset, full, text, str(path.relative_to(self.root).with_suffix("")))


def crop_utterance(wav: torch.Tensor, crop: int | None, random_crop: bool,
                   rng=random) -> tuple[torch.Tensor, int, int]:
    """(T,) -> (the crop, its offset, T): a random or leading window of `crop` samples (drawn by `rng`)."""
    full, offset = wav.shape[0], 0
    if crop is not None and full > crop:
        if random_crop:
            offset = rng.randint(0, full - crop)
        wav = wav[offset: offset + crop]
    return wav, offset, full


def collate_speech(items: list[SpeechItem]) -> SpeechBatch:
    """Zero-pad items to the longest and stack them into a SpeechBatch."""
    lengths = torch.tensor([it.wav.shape[0] for it in items], dtype=torch.long)
    wav = torch.zeros(len(items), 1, int(lengths.max()))
    for i, it in enumerate(items):
        wav[i, 0, : it.wav.shape[0]] = it.wav
    return SpeechBatch(wav, lengths, torch.tensor([it.offset for it in items], dtype=torch.long),
                       torch.tensor([it.full_length for it in items], dtype=torch.long),
                       [it.text for it in items], [it.key for it in items])


class SpeechDataModule(ResumableOrderData, LightningDataModule):
    """train_dir / val_dir: folders of audio (+ transcripts). Training clips are cropped at random
    (`random_crop`; False crops every clip from its start, for overfitting smoke tests);
    validation clips from their start, `val_crop_seconds` None keeps them whole. A training folder that
    holds a held-out folder (`val/`, `test/`) or val_dir is refused. The training order resumes
    mid-epoch (zoo.training.resumable_order)."""

    def __init__(self, train_dir: str, val_dir: str | None = None, sample_rate: int = 16000,
                 crop_seconds: float = 1.0, val_crop_seconds: float | None = None, batch_size: int = 8,
                 num_workers: int = 0, require_transcripts: bool = False, random_crop: bool = True):
        super().__init__()
        self.train_dir, self.val_dir = train_dir, val_dir
        self.sample_rate, self.crop_seconds, self.val_crop_seconds = sample_rate, crop_seconds, val_crop_seconds
        self.batch_size, self.num_workers, self.require_transcripts = batch_size, num_workers, require_transcripts
        self.random_crop = random_crop

    def setup(self, stage: str | None = None) -> None:
        from zoo.training.common import check_held_out

        check_held_out(self.train_dir, self.val_dir)
        self.train_set = SpeechFolder(self.train_dir, self.sample_rate, self.crop_seconds, self.random_crop,
                                     self.require_transcripts)
        self.val_set = (SpeechFolder(self.val_dir, self.sample_rate, self.val_crop_seconds, False, self.require_transcripts)
                        if self.val_dir else None)

    def train_dataloader(self) -> DataLoader:
        return self.resumable_train_loader(self.train_set, self.batch_size, num_workers=self.num_workers,
                                           collate_fn=collate_speech, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_speech)


def _shard_utterance(sample, sample_rate: int, crop: int | None, random_crop: bool) -> SpeechItem:
    from zoo.training.shards import decode_audio, pick

    _, data = pick(sample, {s.lstrip(".") for s in AUDIO_SUFFIXES}, "audio")
    wav, offset, full = crop_utterance(decode_audio(data, sample_rate), crop, random_crop)
    text = sample["txt"].decode("utf-8").strip() if "txt" in sample else ""
    return SpeechItem(wav, offset, full, text, sample["__key__"])


class SpeechShardData(LightningDataModule):
    """Speech streamed from WebDataset-style tar shards (zoo.training.shards): each sample's audio
    member (.flac, .wav, ...) and its transcript (.txt) when present, keyed like SpeechFolder keys
    files (so cached teacher features line up). Crops as SpeechDataModule crops; each rank and
    loader worker reads its own share of the shards; validation reads its shards once, in order."""

    def __init__(self, train_shards: str | list[str], val_shards: str | list[str] | None = None, sample_rate: int = 16000,
                 crop_seconds: float = 1.0, val_crop_seconds: float | None = None, batch_size: int = 8,
                 num_workers: int = 0, shuffle_buffer: int = 1000, seed: int = 0):
        super().__init__()
        self.train_shards, self.val_shards, self.sample_rate = train_shards, val_shards, sample_rate
        self.crop_seconds, self.val_crop_seconds, self.batch_size = crop_seconds, val_crop_seconds, batch_size
        self.num_workers, self.shuffle_buffer, self.seed = num_workers, shuffle_buffer, seed

    def _stream(self, shards, seconds: float | None, train: bool):
        from zoo.training.shards import MappedStream, ShardStream

        crop = None if seconds is None else max(1, round(seconds * self.sample_rate))
        decode = partial(_shard_utterance, sample_rate=self.sample_rate, crop=crop, random_crop=train)
        return MappedStream(ShardStream(shards, repeat=train, shuffle_buffer=self.shuffle_buffer, seed=self.seed), decode)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._stream(self.train_shards, self.crop_seconds, True)
        self.val_set = self._stream(self.val_shards, self.val_crop_seconds, False) if self.val_shards else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, num_workers=self.num_workers, collate_fn=collate_speech,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, self.batch_size, num_workers=self.num_workers, collate_fn=collate_speech)
