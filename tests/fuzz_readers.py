"""Seeded fuzzing of every reader of untrusted bytes: weights (.safetensors and PyTorch files),
config.json, token files (read and decoded through `zoo decode`), image and audio files.

Each case mutates a valid file (bit flips, truncation, inserted or overwritten bytes, spliced
chunks, numbers in a header replaced by extreme ones, JSON fields given values of another kind) or
is random bytes, and hands it to the reader. A case passes when the reader returns, or raises one
of our errors (TokenizerError and its subclasses); any other exception is a finding. Case i of a
reader is drawn from (seed, reader, i) alone, so a finding replays with --replay READER:I.

    python tests/fuzz_readers.py --seconds 2 --seed 0          # every reader, 2 s each
    python tests/fuzz_readers.py --only image --replay image:17  # one case, with its traceback

Prints one JSON line per reader ({"reader", "cases", "outcomes": {name: count}, "findings": [...]}),
then the process's peak resident memory ({"peak_resident_bytes"}), and exits 1 when there is a finding.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

EXTREME_NUMBERS = ["0", "-1", "1", "255", "65535", "2147483647", "4294967296", "9223372036854775807",
                   "18446744073709551616", "100000000000000000000", "1e308", "-1e308", "1.5"]
EXTREME_VALUES = [None, True, 0, -1, 1.5, 2**31, 2**63, 10**30, 1e308, "", "x" * 300, [], [1, -1], {}, {"a": 1}]


# ---- mutations ------------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One or a few byte-level mutations of `data`."""
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(7)
        n = len(out)
        if kind == 0 and n:  # truncate
            del out[rng.randrange(n):]
        elif kind == 1 and n:  # flip bits
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif kind == 2:  # insert random bytes
            at = rng.randint(0, n)
            out[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == 3 and n:  # overwrite a region
            at = rng.randrange(n)
            out[at:at + rng.randint(1, 32)] = rng.randbytes(rng.randint(1, 32))
        elif kind == 4 and n > 8:  # splice: copy a chunk elsewhere
            a, b = sorted(rng.sample(range(n), 2))
            at = rng.randint(0, n)
            out[at:at] = out[a:b][:4096]
        elif kind == 5 and n >= 4:  # an extreme little- or big-endian integer over 4 bytes
            at = rng.randrange(n - 3)
            out[at:at + 4] = struct.pack(rng.choice(["<I", ">I"]), rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000]))
        elif kind == 6:  # a number in a textual header replaced by an extreme one
            text = bytes(out)
            digits = [i for i in range(min(len(text), 4096)) if chr(text[i]).isdigit()]
            if digits:
                at = rng.choice(digits)
                end = at
                while end < len(text) and chr(text[end]).isdigit():
                    end += 1
                out[at:end] = rng.choice(EXTREME_NUMBERS).encode()
    return bytes(out)


def mutate_json(value, rng: random.Random):
    """A copy of a JSON value with one field deleted, retyped or given an extreme value."""
    value = json.loads(json.dumps(value))
    if not isinstance(value, (dict, list)) or not value:
        return rng.choice(EXTREME_VALUES)
    parent, key = value, None
    for _ in range(rng.randint(1, 3)):  # walk down a little
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            break
        key = rng.choice(keys)
        if isinstance(parent[key], (dict, list)) and parent[key] and rng.random() < 0.5:
            parent = parent[key]
            key = None
        else:
            break
    if key is None:
        return value
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = rng.choice(EXTREME_VALUES)
    return value


def safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    size = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + size]), data[8 + size:]


def safetensors_bytes(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    """A header-aware mutation (dtype, shape, offsets, metadata) or a byte-level one."""
    if rng.random() < 0.5:
        return mutate_bytes(data, rng)
    header, body = safetensors_parts(data)
    if "__metadata__" in header and rng.random() < 0.4:
        meta = header["__metadata__"]
        key = rng.choice(list(meta))
        try:
            inner = json.loads(meta[key])
            meta[key] = json.dumps(mutate_json(inner, rng)) if rng.random() < 0.8 else meta[key][: rng.randrange(len(meta[key]) + 1)]
        except json.JSONDecodeError:
            meta[key] = rng.choice(["", "{", "[]", "null", "x" * 100])
        return safetensors_bytes(header, body)
    names = [k for k in header if k != "__metadata__"]
    entry = header[rng.choice(names)]
    field = rng.choice(["dtype", "shape", "data_offsets"])
    if field == "dtype":
        entry["dtype"] = rng.choice(["F16", "BF16", "F64", "I8", "U8", "BOOL", "I64", "F8_E4M3", "Q4", ""])
    elif field == "shape":
        entry["shape"] = rng.choice([[], [0], [2**31], [2**40, 2**40], [-1], [1] * 40, list(reversed(entry["shape"]))])
    else:
        entry["data_offsets"] = rng.choice([[0, 0], [0, 2**62], [5, 3], [0, len(body) + 8], [-1, 4]])
    return safetensors_bytes(header, body)


# ---- readers --------------------------------------------------------------------------------------

class Reader:
    """name, a few valid files to start from (write_seeds), and what reading one means (read)."""

    name = ""
    suffix = ""

    def __init__(self, work: Path):
        self.work = work
        self.seeds = self.write_seeds()

    def write_seeds(self) -> list[bytes]:
        raise NotImplementedError

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return mutate_bytes(data, rng)

    def case(self, rng: random.Random) -> bytes:
        if rng.random() < 0.05:
            return rng.randbytes(rng.randint(0, 2048))
        return self.mutate(rng.choice(self.seeds), rng)

    def read(self, path: Path) -> None:
        raise NotImplementedError


def tiny_model():
    import zoo

    torch.manual_seed(0)
    return zoo.create("onedpiece-l-256", image_size=32, patch_size=8, num_tokens=4, encoder_width=16, encoder_depth=1,
                      encoder_heads=2, decoder_width=16, decoder_depth=1, decoder_heads=2, token_dim=4, codebook_size=16,
                      decoder_output="pixels")


class FolderFileReader(Reader):
    """One file of a zoo folder (`filename`, the folder's other files valid), opened with zoo.load."""

    filename = ""

    def write_seeds(self):
        self.folder = tiny_model().save_pretrained(self.work / "model")
        return [(self.folder / self.filename).read_bytes()]

    def read(self, path):
        import zoo

        (self.folder / self.filename).write_bytes(path.read_bytes())
        zoo.load(str(self.folder))


class WeightsReader(FolderFileReader):
    """model.safetensors of a zoo folder."""

    name, filename = "weights", "model.safetensors"

    def mutate(self, data, rng):
        return mutate_safetensors(data, rng)


class PytorchCheckpointReader(Reader):
    """An official-style PyTorch checkpoint (zip and legacy formats), read with weights_only=True."""

    name = "checkpoint"
    suffix = ".pth"

    def write_seeds(self):
        state = {k: v for k, v in tiny_model().state_dict().items()}
        seeds = []
        for zipped in (True, False):
            buffer = io.BytesIO()
            torch.save({"model": state, "epoch": 3}, buffer, _use_new_zipfile_serialization=zipped)
            seeds.append(buffer.getvalue())
        return seeds

    def read(self, path):
        from zoo.io import read_checkpoint

        read_checkpoint(path)


class ConfigReader(FolderFileReader):
    """config.json of a zoo folder."""

    name, filename = "config", "config.json"

    def write_seeds(self):
        seeds = super().write_seeds()
        self.config = json.loads(seeds[0])
        return seeds

    def mutate(self, data, rng):
        if rng.random() < 0.7:
            return json.dumps(mutate_json(self.config, rng)).encode()
        return mutate_bytes(data, rng)


class TokenFileReader(Reader):
    """A token file, decoded by `zoo decode --model FOLDER` (the CLI reads its metadata too)."""

    name = "tokens"
    suffix = ".safetensors"

    def write_seeds(self):
        model = tiny_model()
        self.folder = model.save_pretrained(self.work / "model")
        seeds = []
        for batch in (1, 2):
            tokens = model.encode(torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)))
            tokens.meta.update(model=str(self.folder.resolve()), weights_sha256=model.weights_sha256())
            tokens.save(self.work / "seed.safetensors")
            seeds.append((self.work / "seed.safetensors").read_bytes())
        return seeds

    def mutate(self, data, rng):
        return mutate_safetensors(data, rng)

    def read(self, path):
        from zoo.cli import main
        from zoo.errors import TokenizerError

        out = self.work / "decoded"
        for old in out.glob("*") if out.exists() else []:
            old.unlink()
        import contextlib

        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
            code = main(["decode", str(path), "--model", str(self.folder), "--out", str(out)])
        if code not in (0, 1):
            raise AssertionError(f"zoo decode exited {code}")
        if code == 1:  # the CLI caught one of ours: its last line (a note may come before it)
            last = err.getvalue().strip().splitlines()[-1]
            if not last.startswith("zoo: error: "):
                raise AssertionError(f"zoo decode exited 1 saying {last!r}")
            raise TokenizerError(last)


class ImageReader(Reader):
    """Image files of every suffix we read, through read_image as encode uses it (resized)."""

    name = "image"

    def write_seeds(self):
        from PIL import Image

        rng = np.random.default_rng(0)
        pixels = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
        seeds = []
        for fmt, mode in (("PNG", "RGB"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGB"), ("BMP", "RGB"),
                          ("GIF", "P"), ("TIFF", "RGB"), ("PNG", "L")):
            buffer = io.BytesIO()
            Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
            seeds.append(buffer.getvalue())
        return seeds

    def read(self, path):
        from zoo.io import read_image

        x = read_image(path, size=32)
        assert x.shape == (3, 32, 32) and bool(torch.isfinite(x).all()), f"read_image gave {tuple(x.shape)}"


class AudioReader(Reader):
    """Audio files (WAV of several sample formats, FLAC, OGG), through read_audio as encode uses it."""

    name = "audio"

    def write_seeds(self):
        import soundfile as sf

        rng = np.random.default_rng(0)
        wav = (rng.standard_normal(1600) * 0.1).astype(np.float32)
        seeds = []
        for fmt, subtype, channels in (("WAV", "PCM_16", 1), ("WAV", "FLOAT", 1), ("WAV", "PCM_24", 2),
                                       ("WAV", "PCM_U8", 1), ("FLAC", "PCM_16", 1), ("OGG", "VORBIS", 1)):
            buffer = io.BytesIO()
            sf.write(buffer, np.stack([wav] * channels, 1), 16000, format=fmt, subtype=subtype)
            seeds.append(buffer.getvalue())
        return seeds

    def read(self, path):
        from zoo.io import read_audio

        wav, rate = read_audio(path, sample_rate=16000, mix_to_mono=True)
        assert wav.ndim == 2 and wav.shape[0] == 1 and rate == 16000 and bool(torch.isfinite(wav).all()), \
            f"read_audio gave {tuple(wav.shape)} at {rate} Hz"


def ct2_model_bin(variables: dict[str, torch.Tensor]) -> bytes:
    """`variables` in CTranslate2's model.bin layout (version 6; zoo.teachers.whisper_weights reads it)."""
    dtypes = {torch.float32: 0, torch.int16: 2, torch.float16: 4}

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        raw = value.contiguous().numpy().tobytes()
        out += [string(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<BI", dtypes[value.dtype], len(raw)), raw]
    return b"".join(out + [struct.pack("<I", 0)])


class WhisperCT2Reader(Reader):
    """A CTranslate2 Whisper model.bin, built into the torch encoder teacher and run on 0.1 s of audio."""

    name = "whisper"
    suffix = ".bin"

    def write_seeds(self):
        from zoo.blocks.whisper_encoder import WhisperAudioEncoder

        torch.manual_seed(0)
        ours = WhisperAudioEncoder(n_mels=8, width=8, heads=2, layers=1, positions=1500).state_dict()
        names = {"conv1": "conv1", "conv2": "conv2", "norm": "encoder/layer_norm", "blocks.0.attn_norm":
                 "layer_0/self_attention/layer_norm", "blocks.0.qkv": "layer_0/self_attention/linear_0",
                 "blocks.0.attn_out": "layer_0/self_attention/linear_1", "blocks.0.mlp_norm": "layer_0/ffn/layer_norm",
                 "blocks.0.mlp_in": "layer_0/ffn/linear_0", "blocks.0.mlp_out": "layer_0/ffn/linear_1"}
        variables = {"encoder/num_heads": torch.tensor(2, dtype=torch.int16),
                     "encoder/position_encodings/encodings": ours["positions"]}
        for key, stem in names.items():
            stem = stem if stem.startswith("encoder/") else f"encoder/{stem}"
            norm = "norm" in key
            variables[f"{stem}/{'gamma' if norm else 'weight'}"] = ours[f"{key}.weight"].half()
            variables[f"{stem}/{'beta' if norm else 'bias'}"] = ours[f"{key}.bias"].half()
        self.folder = self.work / "whisper"
        self.folder.mkdir(exist_ok=True)
        return [ct2_model_bin(variables)]

    def read(self, path):
        from zoo.teachers import TorchWhisperEncoderTeacher

        (self.folder / "model.bin").write_bytes(path.read_bytes())
        teacher = TorchWhisperEncoderTeacher(model_path=str(self.folder), full_window=False)
        out = teacher.features(torch.zeros(1, 1, 1600))
        assert out.features.shape[:2] == (1, 5), f"features of shape {tuple(out.features.shape)}"


READERS = {r.name: r for r in (WeightsReader, PytorchCheckpointReader, ConfigReader, TokenFileReader, ImageReader,
                               AudioReader, WhisperCT2Reader)}


def case_rng(seed: int, reader: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{reader}:{index}")


def run_reader(reader: Reader, seed: int, seconds: float, max_cases: int, replay: int | None = None,
               verbose: bool = False) -> dict:
    from zoo.errors import TokenizerError

    outcomes: dict[str, int] = {}
    findings, slowest = [], [None, 0.0]
    began, index = time.monotonic(), 0
    indices = [replay] if replay is not None else None
    while True:
        if indices is not None:
            if not indices:
                break
            index = indices.pop()
        elif index >= max_cases or time.monotonic() - began > seconds:
            break
        data = reader.case(case_rng(seed, reader.name, index))
        path = reader.work / f"case{reader.suffix or '.bin'}"
        path.write_bytes(data)
        case_began = time.monotonic()
        if verbose:
            print(f"case {index}", file=sys.stderr, flush=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a documented, warned correction is an accepted outcome
                reader.read(path)
            outcome = "read"
        except TokenizerError as e:
            outcome = type(e).__name__
            if "\n" in str(e).strip():
                findings.append({"case": index, "error": "a multi-line message", "message": str(e)[:300]})
        except Exception as e:  # a finding: an error that is not ours
            outcome = "not ours: " + type(e).__name__
            findings.append({"case": index, "error": type(e).__name__, "message": str(e)[:300],
                             "where": traceback.format_exc().strip().splitlines()[-3][:300]})
            if replay is not None:
                traceback.print_exc()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        took = time.monotonic() - case_began
        if took > slowest[1]:
            slowest = [index, round(took, 3)]
        index += 1
    return {"reader": reader.name, "cases": sum(outcomes.values()), "outcomes": outcomes, "slowest_case": slowest,
            "findings": findings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per reader")
    parser.add_argument("--max-cases", type=int, default=100_000, help="cases per reader at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated readers (default: all)")
    parser.add_argument("--replay", default=None, help="READER:CASE, one case with its traceback")
    parser.add_argument("--verbose", action="store_true", help="name each case on stderr as it starts")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(READERS)
    replay = None
    if args.replay:
        name, _, case = args.replay.partition(":")
        names, replay = [name], int(case)
    found = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            result = run_reader(READERS[name](work), args.seed, args.seconds, args.max_cases, replay, args.verbose)
            print(json.dumps(result), flush=True)
            found |= bool(result["findings"])
    print(json.dumps({"peak_resident_bytes": peak_resident_bytes()}), flush=True)
    return 1 if found else 0


def peak_resident_bytes() -> int | None:
    """This process's peak resident memory since it started (VmHWM: after exec, unlike getrusage's
    ru_maxrss, which keeps the peak of the process it was forked from); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
