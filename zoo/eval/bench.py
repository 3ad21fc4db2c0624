"""`zoo bench`: encode / decode speed and peak memory of one tokenizer, per dtype and batch size.

Images report images per second, audio the real-time factor (seconds of compute per second of
audio; below 1 is faster than real time). Batch 1 gives the latency. On the CPU each setting runs
in a fresh process so that its peak resident memory is its own; on CUDA the allocator's peak is
read. `--vs package.module:factory` times another implementation on the same inputs in the same
run and prints the ratio: `factory(model_name, device)` returns an object with `encode(x)` and
`decode(encoded)`.
"""
from __future__ import annotations

import multiprocessing
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from zoo.errors import TokenizerError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class BenchSetting:
    """One benchmark configuration: model, device, dtype, batch size, compile, repeats, input length."""

    model: str
    device: str
    dtype: str
    batch_size: int
    compile: bool
    repeats: int
    audio_seconds: float
    weights: bool
    vs: str | None


@dataclass
class BenchResult:
    """Times, throughput and peak memory of one BenchSetting, and the ratios against --vs."""

    setting: BenchSetting
    encode_s: float           # median seconds per call
    decode_s: float
    items_per_s: float        # images (or clips) per second through encode + decode
    real_time_factor: float | None  # audio only: (encode + decode) seconds per second of audio
    peak_memory_mib: float    # CPU: peak RSS of the process; CUDA: peak allocated
    vs_encode_ratio: float | None = None  # their encode time / ours (> 1: ours is faster)
    vs_decode_ratio: float | None = None


def device_name(device: str) -> str:
    """A readable name of the device: the GPU's name, or the CPU model and thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _timed(fn, repeats: int, device: str) -> tuple[float, object]:
    out = fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _inputs(model, batch_size: int, audio_seconds: float, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if model.modality == "image":
        return torch.rand(batch_size, 3, model.image_size, model.image_size, generator=g).to(device)
    return (0.1 * torch.randn(batch_size, 1, int(audio_seconds * model.sample_rate), generator=g)).to(device)


def _peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_setting(setting: BenchSetting) -> BenchResult:
    """Build the model and time its encode and decode (and the --vs implementation's) for one setting."""
    import zoo

    torch.manual_seed(0)
    model = (zoo.load if setting.weights else zoo.create)(setting.model).to(setting.device)
    if setting.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(setting.device))
    x = _inputs(model, setting.batch_size, setting.audio_seconds, setting.device)
    encode, decode = model.encode, model.decode
    if setting.compile:
        # The tokenizer's inner passes are compiled; the checks around them stay eager.
        model._encode = torch.compile(model._encode, dynamic=False)
        model._decode = torch.compile(model._decode, dynamic=False)
    autocast = torch.autocast(setting.device.split(":")[0], dtype=DTYPES[setting.dtype],
                              enabled=setting.dtype != "fp32")
    with autocast:
        encode_s, tokens = _timed(lambda: encode(x), setting.repeats, setting.device)
        decode_s, _ = _timed(lambda: decode(tokens), setting.repeats, setting.device)
    total = encode_s + decode_s
    result = BenchResult(
        setting, encode_s, decode_s, setting.batch_size / total,
        total / (setting.batch_size * setting.audio_seconds) if model.modality == "audio" else None,
        _peak_memory_mib(setting.device),
    )
    if setting.vs:
        from zoo.eval import import_object

        other = import_object(setting.vs, "--vs")(setting.model, setting.device)
        with autocast:
            their_encode, encoded = _timed(lambda: other.encode(x), setting.repeats, setting.device)
            their_decode, _ = _timed(lambda: other.decode(encoded), setting.repeats, setting.device)
        result.vs_encode_ratio, result.vs_decode_ratio = their_encode / encode_s, their_decode / decode_s
    return result


def _run_isolated(setting: BenchSetting) -> BenchResult:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(run_setting, (setting,))


def bench(model: str, device: str = "cpu", dtypes=("fp32",), batch_sizes=(1, 4), compile: bool = False,
          repeats: int = 3, audio_seconds: float = 4.0, weights: bool = False, vs: str | None = None,
          isolate: bool | None = None, progress: bool = True) -> list[BenchResult]:
    """Every (dtype, batch size) setting once; see the module docstring."""
    from tqdm.auto import tqdm

    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        raise TokenizerError(f"dtypes must be among {sorted(DTYPES)}, got {sorted(unknown)}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TokenizerError("--device cuda was asked for but no CUDA device is available.")
    isolate = (not device.startswith("cuda")) if isolate is None else isolate
    settings = [BenchSetting(model, device, d, b, compile, repeats, audio_seconds, weights, vs)
                for d in dtypes for b in batch_sizes]
    run = _run_isolated if isolate else run_setting
    return [run(s) for s in tqdm(settings, desc=f"bench {model}", disable=not progress)]


def format_results(results: list[BenchResult]) -> str:
    """The results as an aligned text table."""
    audio = results and results[0].real_time_factor is not None
    header = ["dtype", "batch", "compile", "encode ms", "decode ms", "items/s"] + (["RTF"] if audio else []) + ["peak MiB"]
    has_vs = any(r.vs_encode_ratio is not None for r in results)
    if has_vs:
        header += ["vs encode x", "vs decode x"]
    rows = []
    for r in results:
        s = r.setting
        row = [s.dtype, str(s.batch_size), "yes" if s.compile else "no", f"{r.encode_s * 1e3:.1f}",
               f"{r.decode_s * 1e3:.1f}", f"{r.items_per_s:.2f}"]
        row += [f"{r.real_time_factor:.3f}"] if audio else []
        row += [f"{r.peak_memory_mib:.0f}"]
        if has_vs:
            row += [f"{r.vs_encode_ratio:.2f}", f"{r.vs_decode_ratio:.2f}"]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def results_as_dicts(results: list[BenchResult]) -> list[dict]:
    """The results as JSON-able dicts."""
    return [asdict(r) for r in results]
