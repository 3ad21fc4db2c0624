"""Precompute a teacher's features for a whole dataset once, store them as one .safetensors file
per utterance, and read them back as a teacher (`CachedTeacher`, input_kind 'key').

Layout: `<folder>/teacher.json` (dim, frame_rate, sample_rate, modality of the teacher) and
`<folder>/<key>.safetensors` with 'features' (T, D) and, for text teachers, 'durations' (T,).
Keys are utterance ids such as the audio file's path relative to the data root, without suffix."""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import torch

from zoo.errors import TokenizerError
from zoo.io import AUDIO_SUFFIXES, read_safetensors
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features

META_NAME = "teacher.json"


def _key_path(folder: Path, key: str) -> Path:
    if key.startswith("/") or ".." in Path(key).parts:
        raise TokenizerError(f"cache key {key!r} must be a relative path inside the cache folder.")
    return folder / f"{key}.safetensors"


def precompute_features(teacher: Teacher, items: Iterable[tuple[str, object]], folder: str | Path,
                        overwrite: bool = False) -> int:
    """items: (key, input) pairs, input a (1, T) waveform at teacher.sample_rate for speech
    teachers or a transcript for text teachers. Runs one item at a time (no padding effects).
    Returns the number of files written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"dim": teacher.dim, "frame_rate": teacher.frame_rate, "sample_rate": teacher.sample_rate,
            "modality": teacher.modality, "teacher": type(teacher).__name__}
    (folder / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    written = 0
    for key, value in items:
        path = _key_path(folder, key)
        if path.is_file() and not overwrite:
            continue
        if teacher.input_kind == "audio":
            wav = torch.as_tensor(value).reshape(1, 1, -1)
            device = next(itertools.chain(teacher.parameters(), teacher.buffers()), torch.zeros(())).device
            out = teacher.features(wav.to(device))
        else:
            out = teacher.features([str(value)])
        n = int(out.lengths[0])
        tensors = {"features": out.features[0, :n].float().cpu().contiguous()}
        if out.durations is not None:
            tensors["durations"] = out.durations[0, :n].float().cpu().contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"key": key})
        written += 1
    return written


def precompute_folder(teacher: Teacher, root: str | Path, folder: str | Path, overwrite: bool = False) -> int:
    """`precompute_features` over every audio file under `root` (its transcript `<name>.txt` for
    text teachers), keyed as the speech datamodule keys them: the path relative to `root`
    without suffix. Speech is read at the teacher's sample rate."""
    from zoo.io import read_audio

    root = Path(root).expanduser()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise TokenizerError(f"{root} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}).")

    def items():
        for path in files:
            key = str(path.relative_to(root).with_suffix(""))
            if teacher.input_kind == "audio":
                yield key, read_audio(path, sample_rate=teacher.sample_rate, mix_to_mono=True)[0]
            else:
                transcript = path.with_suffix(".txt")
                if not transcript.is_file():
                    raise TokenizerError(f"{path.name} has no transcript {transcript.name}; the text teacher needs one.")
                yield key, transcript.read_text().strip()

    return precompute_features(teacher, items(), folder, overwrite)


class CachedTeacher(Teacher):
    """Features written by `precompute_features`, looked up by utterance key. They cover whole
    utterances (the training module crops them to the audio crop)."""

    input_kind = "key"

    def __init__(self, folder: str):
        self.folder = Path(folder).expanduser()
        meta_path = self.folder / META_NAME
        if not meta_path.is_file():
            raise TokenizerError(f"{self.folder} has no {META_NAME}; fill it with zoo.teachers.precompute_features first.")
        meta = json.loads(meta_path.read_text())
        super().__init__(meta["dim"], frame_rate=meta["frame_rate"], sample_rate=meta["sample_rate"])
        self.modality = meta["modality"]
        self.register_buffer("_device_marker", torch.zeros(()), persistent=False)

    def _features(self, keys: list[str], lengths=None) -> TeacherFeatures:
        rows, durations = [], []
        for key in keys:
            path = _key_path(self.folder, key)
            if not path.is_file():
                raise TokenizerError(f"no cached teacher features for {key!r} in {self.folder}; "
                                     "run precompute_features over the whole dataset.")
            tensors, _ = read_safetensors(path)
            rows.append(tensors["features"].to(self._device_marker.device))
            if "durations" in tensors:
                durations.append(tensors["durations"].to(self._device_marker.device))
        return pad_features(rows, durations if len(durations) == len(rows) else None)
