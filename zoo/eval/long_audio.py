"""Long audio in bounded memory: time and peak memory of one codec's encode of a long clip three ways,
each in a fresh process:

- whole:   the clip read whole and encoded in one pass (chunk_seconds longer than the clip);
- chunked: the clip read whole, encoded chunk by chunk (convolutions with their receptive field as
           context, the LSTM with its state carried from chunk to chunk);
- stream:  `encode_file`, which also reads the file from disk chunk by chunk (what `zoo encode` does).

The clip is the bundled speech sample repeated to the length asked (random weights: the memory and
time are the architecture's). Each process builds the model (and reads the clip, for whole and
chunked), then resets its peak-memory mark (Linux's clear_refs) and encodes: the table gives its
resident memory before encode, the peak during encode, the difference (what encoding the clip costs
above the model and the process), and whether its codes equal the whole pass's.

    python -m zoo.eval.long_audio --model speechtokenizer-hubert-avg --minutes 10
"""
from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import tempfile
import time
from pathlib import Path

PATHS = ("whole", "chunked", "stream")


def _status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    """Set this process's peak resident mark (VmHWM) to its current size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _run(path: str, model_name: str, wav_file: str, chunk_seconds: float, threads: int, queue) -> None:
    import gc

    import torch

    import zoo
    from zoo.io import read_audio

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo.create(model_name)
    result = {"path": path, "params_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}
    if path != "stream":
        wav, _ = read_audio(wav_file, sample_rate=model.sample_rate)
        options = {"chunk_seconds": wav.shape[-1] / model.sample_rate + 1.0 if path == "whole" else chunk_seconds}
    gc.collect()
    _reset_peak()
    result["before_mib"] = _status_mib("VmRSS")
    start = time.perf_counter()
    if path == "stream":
        tokens = model.encode_file(wav_file, chunk_seconds=chunk_seconds)
    else:
        tokens = model.encode(wav[None], **options)
    result["seconds"] = time.perf_counter() - start
    result["peak_mib"] = _status_mib("VmHWM")
    result["codes_sha1"] = hashlib.sha1(tokens.codes.numpy().tobytes()).hexdigest()
    queue.put(result)


def run_path(path: str, model_name: str, wav_file: str, chunk_seconds: float, threads: int) -> dict:
    """One path in a fresh (spawned) process, so that its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(path, model_name, wav_file, chunk_seconds, threads, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def write_long_clip(folder: Path, minutes: float, sample_rate: int) -> Path:
    """The bundled speech sample, repeated to `minutes`, as a 16-bit WAV at `sample_rate`."""
    import torch

    from zoo.io import read_audio, write_audio

    sample = Path(__file__).resolve().parents[1] / "hub" / "samples" / "speech.flac"
    if not sample.is_file():  # an editable install keeps hub/ beside zoo/
        sample = Path(__file__).resolve().parents[2] / "hub" / "samples" / "speech.flac"
    wav, _ = read_audio(sample, sample_rate=sample_rate)
    samples = int(minutes * 60 * sample_rate)
    return write_audio(folder / "long.wav", wav.repeat(1, -(-samples // wav.shape[-1]))[:, :samples], sample_rate)


def main(argv: list[str] | None = None) -> int:
    """Run the paths asked (each in its own process) and print the table."""
    import zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="speechtokenizer-hubert-avg")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--chunk-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paths", default=",".join(PATHS), help="which of whole,chunked,stream to run")
    args = parser.parse_args(argv)
    sample_rate = zoo.create(args.model).sample_rate
    with tempfile.TemporaryDirectory() as folder:
        wav_file = str(write_long_clip(Path(folder), args.minutes, sample_rate))
        results = [run_path(p, args.model, wav_file, args.chunk_seconds, args.threads) for p in args.paths.split(",")]
    reference = next((r["codes_sha1"] for r in results if r["path"] == "whole"), None)
    print(f"{args.model}, {args.minutes:g} min at {sample_rate} Hz, chunk_seconds {args.chunk_seconds:g}, "
          f"{args.threads} threads; weights {results[0]['params_mib']:.0f} MiB")
    print("| path | encode seconds | resident before (MiB) | peak during encode (MiB) | encode's own (MiB) "
          "| codes equal the whole pass's |")
    print("|---|---|---|---|---|---|")
    for r in results:
        same = "-" if reference is None else ("yes" if r["codes_sha1"] == reference else "NO")
        print(f"| {r['path']} | {r['seconds']:.1f} | {r['before_mib']:.0f} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - r['before_mib']:.0f} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
