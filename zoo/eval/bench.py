"""`zoo bench`: encode / decode speed and peak memory of one tokenizer, per dtype and batch size.

Images report images per second, audio the real-time factor (seconds of compute per second of
audio; below 1 is faster than real time). Batch 1 gives the latency. On the CPU each setting runs
in a fresh process so that its peak resident memory is its own; on CUDA the allocator's peak is
read. `--vs package.module:factory` times another implementation on the same inputs in the same
run and prints the ratio: `factory(model_name, device)` returns an object with `encode(x)` and
`decode(encoded)`. `--vs official` builds the family's official implementation with the same weights
(zoo.eval.official; the code found through `--official-path`, ZOO_OFFICIAL_<FAMILY> or an installed
package), decodes our codes with both decoders, and adds how far the outputs are apart: the fraction of
identical codes (or the largest latent difference) and the largest reconstruction difference.
The two implementations are called in turn (ours, theirs, ours, theirs, ...) so that machine noise
hits both alike.
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
    official_path: str | None = None  # --vs official: a checkout of the official code


@dataclass
class BenchResult:
    """Times, throughput and peak memory of one BenchSetting, and the ratios against --vs."""

    setting: BenchSetting
    encode_s: float           # median seconds per call
    decode_s: float
    items_per_s: float        # images (or clips) per second through encode + decode
    real_time_factor: float | None  # audio only: (encode + decode) seconds per second of audio
    peak_memory_mib: float    # CPU: peak RSS of the process; CUDA: peak allocated (with --vs: before the other is built)
    vs_encode_ratio: float | None = None  # their encode time / ours (> 1: ours is faster)
    vs_decode_ratio: float | None = None
    vs_codes_identical: float | None = None    # fraction of their codes equal to ours
    vs_latents_max_diff: float | None = None   # continuous tokens: largest |theirs - ours|
    vs_output_max_diff: float | None = None    # largest |their reconstruction - ours|
    vs_timeline: list | None = None            # [who, phase, seconds] of every timed call, in call order


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


def _seconds(fn, device: str) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def _timed(fn, repeats: int, device: str) -> tuple[float, object]:
    out = fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        seconds, out = _seconds(fn, device)
        times.append(seconds)
    return statistics.median(times), out


def _timed_in_turn(ours, theirs, repeats: int, device: str, phase: str, timeline: list):
    """Median seconds of `ours` and `theirs` and their last outputs, the two called in turn after one
    warm-up each; every timed call is appended to `timeline` as [who, phase, seconds]."""
    our_out, their_out = ours(), theirs()  # warm-up (and compilation)
    times = {"ours": [], "theirs": []}
    for _ in range(repeats):
        for who, fn in (("ours", ours), ("theirs", theirs)):
            seconds, out = _seconds(fn, device)
            times[who].append(seconds)
            timeline.append([who, phase, seconds])
            our_out, their_out = (out, their_out) if who == "ours" else (our_out, out)
    return statistics.median(times["ours"]), statistics.median(times["theirs"]), our_out, their_out


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over the overlap of the two shapes (a decoder may give a few more samples); inf when the
    ranks differ."""
    if a.ndim != b.ndim:
        return float("inf")
    overlap = tuple(slice(0, min(i, j)) for i, j in zip(a.shape, b.shape))
    return float((a[overlap].float() - b[overlap].float()).abs().max())


def _codes_identical(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    if ours.shape != theirs.shape:
        return 0.0
    return float((ours == theirs.to(ours.device)).float().mean()) if ours.numel() else 1.0


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
    peak_mib = None
    if setting.vs:  # ours runs once alone first, so that the peak memory is ours only
        with autocast:
            decode(encode(x))
        peak_mib = _peak_memory_mib(setting.device)
    other = _other_implementation(setting, model)  # built before any timing: its set-up is not timed
    timeline: list = []
    with autocast:
        if other is None:
            encode_s, tokens = _timed(lambda: encode(x), setting.repeats, setting.device)
            decode_s, _ = _timed(lambda: decode(tokens), setting.repeats, setting.device)
        else:
            encode_s, their_encode, tokens, encoded = _timed_in_turn(
                lambda: encode(x), lambda: other.encode(x), setting.repeats, setting.device, "encode", timeline)
            # the official decoder reads our codes, so that both decode the same input
            their_input = other.from_tokens(tokens) if setting.vs == "official" else encoded
            decode_s, their_decode, recon, their_recon = _timed_in_turn(
                lambda: decode(tokens), lambda: other.decode(their_input), setting.repeats, setting.device,
                "decode", timeline)
    total = encode_s + decode_s
    result = BenchResult(
        setting, encode_s, decode_s, setting.batch_size / total,
        total / (setting.batch_size * setting.audio_seconds) if model.modality == "audio" else None,
        _peak_memory_mib(setting.device) if peak_mib is None else peak_mib,
    )
    if other is not None:
        result.vs_encode_ratio, result.vs_decode_ratio = their_encode / encode_s, their_decode / decode_s
        result.vs_timeline = timeline
        if isinstance(their_recon, torch.Tensor):
            result.vs_output_max_diff = _max_difference(recon, their_recon)
        if setting.vs == "official":
            their_codes, their_latents = other.codes(encoded), other.latents(encoded)
        else:  # another implementation that returns Tokens (or anything with .codes / .latents)
            their_codes, their_latents = getattr(encoded, "codes", None), getattr(encoded, "latents", None)
        if their_codes is not None and tokens.codes.numel():
            result.vs_codes_identical = _codes_identical(tokens.codes, their_codes)
        if their_latents is not None and tokens.latents is not None:
            result.vs_latents_max_diff = _max_difference(tokens.latents, their_latents)
    return result


def _other_implementation(setting: BenchSetting, model):
    """The implementation to time beside ours: None, the official one (--vs official) or a factory's."""
    if not setting.vs:
        return None
    if setting.vs == "official":
        from zoo.eval.official import official_adapter

        return official_adapter(model, setting.official_path, setting.device)
    from zoo.eval import import_object

    return import_object(setting.vs, "--vs")(setting.model, setting.device)


def _run_isolated(setting: BenchSetting) -> BenchResult:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(run_setting, (setting,))


def bench(model: str, device: str = "cpu", dtypes=("fp32",), batch_sizes=(1, 4), compile: bool = False,
          repeats: int = 3, audio_seconds: float = 4.0, weights: bool = False, vs: str | None = None,
          isolate: bool | None = None, progress: bool = True, official_path: str | None = None) -> list[BenchResult]:
    """Every (dtype, batch size) setting once; see the module docstring."""
    from tqdm.auto import tqdm

    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        raise TokenizerError(f"dtypes must be among {sorted(DTYPES)}, got {sorted(unknown)}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TokenizerError("--device cuda was asked for but no CUDA device is available.")
    if official_path is not None and vs != "official":
        raise TokenizerError("--official-path is read by `--vs official` only.")
    if vs == "official":  # a missing official code or an uncovered family: one sentence before any work
        _check_official(model, official_path)
    isolate = (not device.startswith("cuda")) if isolate is None else isolate
    settings = [BenchSetting(model, device, d, b, compile, repeats, audio_seconds, weights, vs,
                             None if official_path is None else str(official_path))
                for d in dtypes for b in batch_sizes]
    run = _run_isolated if isolate else run_setting
    return [run(s) for s in tqdm(settings, desc=f"bench {model}", disable=not progress)]


def _check_official(model: str, official_path) -> None:
    import zoo
    from zoo.eval.official import adapter_module, locate

    architecture = zoo.model_entry(model).model_class.architecture if model in zoo.list_models() else \
        zoo.load(model).architecture
    module = adapter_module(architecture)
    locate(module.official_code(architecture), official_path)


def format_results(results: list[BenchResult]) -> str:
    """The results as an aligned text table."""
    audio = results and results[0].real_time_factor is not None
    header = ["dtype", "batch", "compile", "encode ms", "decode ms", "items/s"] + (["RTF"] if audio else []) + ["peak MiB"]
    has_vs = any(r.vs_encode_ratio is not None for r in results)
    if has_vs:
        header += ["vs encode x", "vs decode x"]
    optional = [(label, field, fmt) for label, field, fmt in
                (("codes same", "vs_codes_identical", "{:.4f}"), ("max |d| latents", "vs_latents_max_diff", "{:.2e}"),
                 ("max |d| output", "vs_output_max_diff", "{:.2e}"))
                if any(getattr(r, field) is not None for r in results)]
    header += [label for label, _, _ in optional]
    rows = []
    for r in results:
        s = r.setting
        row = [s.dtype, str(s.batch_size), "yes" if s.compile else "no", f"{r.encode_s * 1e3:.1f}",
               f"{r.decode_s * 1e3:.1f}", f"{r.items_per_s:.2f}"]
        row += [f"{r.real_time_factor:.3f}"] if audio else []
        row += [f"{r.peak_memory_mib:.0f}"]
        if has_vs:
            row += [f"{r.vs_encode_ratio:.2f}", f"{r.vs_decode_ratio:.2f}"]
        row += ["-" if getattr(r, field) is None else fmt.format(getattr(r, field)) for _, field, fmt in optional]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def results_as_dicts(results: list[BenchResult]) -> list[dict]:
    """The results as JSON-able dicts."""
    return [asdict(r) for r in results]
