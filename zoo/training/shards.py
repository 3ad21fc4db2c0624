"""Streaming samples from WebDataset-style tar shards, for data that does not fit on one machine.

A shard is a plain tar file; the files of one sample share a key (the member name up to its first
dot after the last '/'), e.g. `0001.flac` + `0001.txt` or `cat/42.jpg`. Shards are named by a list,
a glob, or WebDataset's brace pattern `train-{000000..000099}.tar`; a name `pipe:CMD` streams the
tar from a command's stdout (`pipe:aws s3 cp s3://bucket/train-000001.tar -`), so shards can live
on any store a command line can read.

Each training process (rank) and each of its loader workers reads its own share: whole shards
when there are at least as many shards as readers, else every n-th sample of every shard. Training
streams repeat forever, the shard order reshuffled each pass (seeded, so every run sees the same
order) and samples mixed through a shuffle buffer; training length is the trainer's `max_steps`.
"""
from __future__ import annotations

import glob
import io
import random
import re
import shlex
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from zoo.errors import TokenizerError

Sample = dict[str, bytes]   # extension ('jpg', 'txt', ...) -> file bytes, plus '__key__'


def expand_shards(shards: str | list[str]) -> list[str]:
    """'a-{000..009}.tar' -> ten names; a glob -> the sorted matches; a list -> each expanded."""
    if isinstance(shards, (list, tuple)):
        return [name for item in shards for name in expand_shards(item)]
    if shards.startswith("pipe:"):
        return [shards]
    match = re.search(r"\{(\d+)\.\.(\d+)\}", shards)
    if match:
        first, last = match.group(1), match.group(2)
        names = [shards[: match.start()] + str(i).zfill(len(first)) + shards[match.end():]
                 for i in range(int(first), int(last) + 1)]
        return [name for item in names for name in expand_shards(item)]
    if glob.has_magic(shards):
        found = sorted(glob.glob(str(Path(shards).expanduser())))
        if not found:
            raise TokenizerError(f"no shard matches {shards!r}; check the path and pattern.")
        return found
    if not Path(shards).expanduser().is_file():
        raise TokenizerError(f"shard {shards} does not exist; give tar files, a glob or a {{000..009}} pattern.")
    return [str(Path(shards).expanduser())]


def _open_shard(name: str):
    if name.startswith("pipe:"):
        process = subprocess.Popen(shlex.split(name[len("pipe:"):]), stdout=subprocess.PIPE)
        return process.stdout
    return open(name, "rb")


def read_shard(name: str) -> Iterator[Sample]:
    """The samples of one tar shard, in order, each a dict of extension -> bytes plus '__key__'."""
    sample: Sample = {}
    with _open_shard(name) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, dot, extension = base.partition(".")
            if not dot:
                continue
            key = f"{folder}/{stem}" if folder else stem
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            sample[extension.lower()] = tar.extractfile(member).read()
    if sample:
        yield sample


def _reader_slot() -> tuple[int, int]:
    """(this reader's index, number of readers) over all ranks and loader workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return rank * workers + worker, world * workers


class ShardStream(IterableDataset):
    """Samples of tar shards, shared out among ranks and workers (see the module docstring).

    repeat: loop forever, reshuffling shards each pass (training); False: one pass in order
    (validation). shuffle_buffer: samples mixed at a time (0 keeps shard order)."""

    def __init__(self, shards: str | list[str], repeat: bool = True, shuffle_buffer: int = 1000, seed: int = 0):
        self.shards = expand_shards(shards)
        self.repeat, self.shuffle_buffer, self.seed = repeat, shuffle_buffer if repeat else 0, seed

    def _passes(self) -> Iterator[Sample]:
        slot, readers = _reader_slot()
        by_shard = len(self.shards) >= readers
        epoch = 0
        while True:
            order = list(self.shards)
            if self.repeat:
                random.Random(self.seed + epoch).shuffle(order)
            mine = order[slot::readers] if by_shard else order
            index = 0
            for name in mine:
                for sample in read_shard(name):
                    if by_shard or index % readers == slot:
                        yield sample
                    index += 1
            epoch += 1
            if not self.repeat:
                return

    def __iter__(self) -> Iterator[Sample]:
        if self.shuffle_buffer <= 1:
            yield from self._passes()
            return
        slot, _ = _reader_slot()
        rng = random.Random(self.seed * 1_000_003 + slot)
        buffer: list[Sample] = []
        for sample in self._passes():
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer


class MappedStream(IterableDataset):
    """A ShardStream with a function applied to each sample (decoding, cropping)."""

    def __init__(self, stream: ShardStream, fn):
        self.stream, self.fn = stream, fn

    def __iter__(self):
        return (self.fn(sample) for sample in self.stream)


def pick(sample: Sample, extensions: tuple[str, ...] | set[str], what: str) -> tuple[str, bytes]:
    """The first member of `sample` with one of `extensions` (without dots)."""
    for extension, data in sample.items():
        if extension in extensions:
            return extension, data
    raise TokenizerError(f"shard sample {sample['__key__']!r} has no {what} file "
                         f"(members: {sorted(k for k in sample if k != '__key__')}).")


def decode_image(data: bytes) -> torch.Tensor:
    """Image file bytes -> float (3, H, W) in [0, 1]."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def decode_audio(data: bytes, sample_rate: int) -> torch.Tensor:
    """Audio file bytes -> float (T,) mono at `sample_rate`."""
    import soundfile as sf
    import torchaudio.functional as AF

    wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    wav = torch.from_numpy(wav.mean(1))
    return AF.resample(wav, rate, sample_rate) if rate != sample_rate else wav


def write_shards(files: list[tuple[str, list[Path]]], pattern: str, samples_per_shard: int = 1000) -> list[str]:
    """Pack samples into tar shards. files: (key, [paths]) per sample, each path stored as
    `<key><suffix>`. pattern: a name with one '{}' for the shard number, e.g. 'out/train-{}.tar'
    (numbers are six digits). Returns the shard names."""
    if "{}" not in pattern:
        raise TokenizerError(f"shard pattern {pattern!r} needs a '{{}}' where the shard number goes.")
    names = []
    for start in range(0, len(files), samples_per_shard):
        name = pattern.format(f"{start // samples_per_shard:06d}")
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(name, "w") as tar:
            for key, paths in files[start: start + samples_per_shard]:
                for path in paths:
                    tar.add(str(path), arcname=f"{key}{Path(path).suffix}")
        names.append(name)
    return names


def shard_folder(folder: str | Path, pattern: str, samples_per_shard: int = 1000) -> list[str]:
    """Pack every image or audio file under `folder` (with its `<name>.txt` when there is one)
    into shards named by `pattern` (see write_shards), keyed by the path relative to `folder`
    without suffix: the keys SpeechFolder gives, so cached teacher features still line up."""
    from zoo.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TokenizerError(f"{root} is not a folder of images or audio.")
    media = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | AUDIO_SUFFIXES)
    if not media:
        raise TokenizerError(f"{root} holds no image or audio files to pack.")
    samples = []
    for path in media:
        transcript = path.with_suffix(".txt")
        samples.append((str(path.relative_to(root).with_suffix("")), [path] + ([transcript] if transcript.is_file() else [])))
    return write_shards(samples, pattern, samples_per_shard)
