"""Speech data for codec training: every audio file under a folder (recursively), with its
transcript from `<name>.txt` beside it when there is one; resampled to the codec's rate,
randomly cropped, and padded into batches with lengths.

A batch also says where each crop sits in its utterance (`offsets`, `full_lengths`), so that
features of the whole utterance (cached teacher features, text tokens spread over the whole
utterance) can be cut to the crop."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from zoo.errors import TokenizerError
from zoo.io import read_audio
from zoo.teachers.cache import AUDIO_SUFFIXES


class SpeechItem(NamedTuple):
    wav: torch.Tensor   # (T,)
    offset: int         # crop start, samples into the (resampled) utterance
    full_length: int    # samples of the whole utterance
    text: str           # "" without a transcript
    key: str            # path relative to the root, without suffix


class SpeechBatch(NamedTuple):
    wav: torch.Tensor            # (B, 1, T) zero-padded
    lengths: torch.Tensor        # (B,) valid samples
    offsets: torch.Tensor        # (B,) crop starts
    full_lengths: torch.Tensor   # (B,) utterance lengths
    texts: list[str]
    keys: list[str]


class SpeechFolder(Dataset):
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

    def __getitem__(self, index: int) -> SpeechItem:
        path = self.files[index]
        wav, _ = read_audio(path, sample_rate=self.sample_rate, mix_to_mono=True)
        wav = wav[0]
        full = wav.shape[0]
        offset = 0
        if self.crop is not None and full > self.crop:
            if self.random_crop:
                offset = int(torch.randint(0, full - self.crop + 1, ()).item())
            wav = wav[offset: offset + self.crop]
        transcript = path.with_suffix(".txt")
        text = transcript.read_text().strip() if transcript.is_file() else ""
        return SpeechItem(wav, offset, full, text, str(path.relative_to(self.root).with_suffix("")))


def collate_speech(items: list[SpeechItem]) -> SpeechBatch:
    lengths = torch.tensor([it.wav.shape[0] for it in items], dtype=torch.long)
    wav = torch.zeros(len(items), 1, int(lengths.max()))
    for i, it in enumerate(items):
        wav[i, 0, : it.wav.shape[0]] = it.wav
    return SpeechBatch(wav, lengths, torch.tensor([it.offset for it in items], dtype=torch.long),
                       torch.tensor([it.full_length for it in items], dtype=torch.long),
                       [it.text for it in items], [it.key for it in items])


class SpeechDataModule(LightningDataModule):
    """train_dir / val_dir: folders of audio (+ transcripts). Training clips are cropped at random
    (`random_crop`; False crops every clip from its start, for overfitting smoke tests);
    validation clips from their start, `val_crop_seconds` None keeps them whole."""

    def __init__(self, train_dir: str, val_dir: str | None = None, sample_rate: int = 16000,
                 crop_seconds: float = 1.0, val_crop_seconds: float | None = None, batch_size: int = 8,
                 num_workers: int = 0, require_transcripts: bool = False, random_crop: bool = True):
        super().__init__()
        self.train_dir, self.val_dir = train_dir, val_dir
        self.sample_rate, self.crop_seconds, self.val_crop_seconds = sample_rate, crop_seconds, val_crop_seconds
        self.batch_size, self.num_workers, self.require_transcripts = batch_size, num_workers, require_transcripts
        self.random_crop = random_crop

    def setup(self, stage: str | None = None) -> None:
        self.train_set = SpeechFolder(self.train_dir, self.sample_rate, self.crop_seconds, self.random_crop,
                                     self.require_transcripts)
        self.val_set = (SpeechFolder(self.val_dir, self.sample_rate, self.val_crop_seconds, False, self.require_transcripts)
                        if self.val_dir else None)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=collate_speech, drop_last=len(self.train_set) > self.batch_size,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_speech)
