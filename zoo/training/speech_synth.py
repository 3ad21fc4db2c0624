"""A small transcribed speech set made offline from text with Debian's espeak-ng voices, so every
speech recipe can run on a machine with no data: `<out>/<NNNN>.wav` + `<out>/<NNNN>.txt`.

    python -m zoo.training.speech_synth data/espeak --count 64

Each utterance cycles through voices (variants of several English accents), speaking rates
and pitches, so the set has some speaker and prosody variety. Needs the `espeak-ng` binary
(`apt-get install espeak-ng`)."""
from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import tempfile
from pathlib import Path

from zoo.errors import TokenizerError
from zoo.io import read_audio, write_audio

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland+m3", "en-gb-x-rp+f2", "en-us+m7", "en-029+f4")
SPEEDS = (130, 160, 190)  # words per minute
PITCHES = (30, 50, 70)    # espeak-ng's 0-99 scale

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer turns speech into a short sequence of discrete codes.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "The rainbow is a division of white light into many beautiful colors.",
    "She sells sea shells by the sea shore every summer morning.",
    "We measured the error rate on a small held out set of recordings.",
    "Open the window, the room is getting warm.",
    "Numbers like seven, twelve and forty two are easy to say.",
    "Every codec trades bits for quality in its own way.",
    "The teacher model stays frozen while the student learns.",
    "Good morning, how are you doing today?",
    "Turn left at the next corner and walk two blocks north.",
    "Music and speech share many acoustic properties.",
    "The train to the coast leaves at half past nine.",
    "Small models train quickly on a laptop processor.",
)


def espeak_available() -> bool:
    """Whether the espeak-ng binary is on the PATH."""
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, path: str | Path, voice: str = "en-us", speed: int = 160, pitch: int = 50,
               sample_rate: int = 16000) -> Path:
    """Speak `text` into a mono 16-bit WAV at `sample_rate`."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise TokenizerError("the espeak-ng binary is not installed; install it with `apt-get install espeak-ng`.")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        result = subprocess.run([binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0 or not raw.is_file():
            raise TokenizerError(f"espeak-ng failed for voice {voice!r}: {result.stderr.strip() or 'no output file'}.")
        wav, _ = read_audio(raw, sample_rate=sample_rate, mix_to_mono=True)
    peak = wav.abs().max().clamp(min=1e-6)
    return write_audio(path, wav * (0.9 / peak if peak > 0.9 else 1.0), sample_rate)


def make_speech_set(out_dir: str | Path, count: int = 32, sample_rate: int = 16000,
                    sentences: tuple[str, ...] = SENTENCES, voices: tuple[str, ...] = VOICES,
                    speeds: tuple[int, ...] = SPEEDS, pitches: tuple[int, ...] = PITCHES) -> list[Path]:
    """Write `count` utterances (audio + transcript) into `out_dir`; returns the audio paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    styles = itertools.cycle(itertools.product(voices, speeds, pitches))
    paths = []
    for i, (text, (voice, speed, pitch)) in enumerate(zip(itertools.cycle(sentences), styles)):
        if i >= count:
            break
        path = synthesize(text, out / f"{i:04d}.wav", voice, speed, pitch, sample_rate)
        (out / f"{i:04d}.txt").write_text(text + "\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command line: speak a transcribed set into a folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args(argv)
    paths = make_speech_set(args.out_dir, args.count, args.sample_rate)
    print(f"wrote {len(paths)} utterances to {args.out_dir}")


if __name__ == "__main__":
    main()
