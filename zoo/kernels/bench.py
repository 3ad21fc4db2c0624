"""Benchmark of the fused kernels: `python -m zoo.kernels.bench [--device cpu|cuda] [--quick]`.

For each op: time and peak memory of the torch reference and of the path the dispatcher runs
(Triton on CUDA), and their ratio; on CUDA also the effective bandwidth of the fused kernel (bytes
it must read and write / time). Then the quantizer: vector-quantize-pytorch's `VectorQuantize`
eval forward against `nearest_code` on the same codebook (the search `zoo.quantize.VectorQuantizer.encode`
runs; this module stays below zoo.quantize), N = 16,384, D = 16, K = 1,024 / 16,384 / 65,536, with
the share of equal codes. All numbers come from this
one run. On CPU the Triton kernels do not run (they need CUDA), so the CPU table compares the
naive unchunked torch search with our chunked CPU path, and times the references of the others.

Peak memory: CUDA allocator peak on GPU; on CPU the rise of the process's peak resident set
during one extra call (Linux VmHWM, reset before it), so it counts pages actually touched.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import re
import time
from typing import Callable, NamedTuple

import torch

from zoo.kernels import activations, norms
from zoo.kernels.dispatch import kernel_mode
from zoo.kernels.nearest_code import nearest_code, nearest_code_reference, residual_nearest_codes

MiB = 1 << 20


class Measure(NamedTuple):
    """Best time of the repeats and the peak memory of one call."""

    seconds: float  # best of the repeats
    peak_bytes: int


def _cpu_hwm() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024


def _cpu_peak(fn: Callable[[], object]) -> int:
    """Rise of the peak resident set during one call of fn (Linux), else 0. Freed heap pages are
    handed back first, so that tensors reusing them count; glibc mmaps blocks above its threshold
    (at most 32 MiB) afresh anyway. Blocks below it that stay cached are missed: a lower bound."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        base = _cpu_hwm()
        fn()
        return _cpu_hwm() - base
    except (OSError, AttributeError):
        return 0


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: bool = True) -> Measure:
    """Time `fn` (best of `repeats`, after a warm-up) and its peak memory on `device`."""
    cuda = device.type == "cuda"
    if not cuda and repeats == 1 and not warmup:  # one call only: time it and take its peak together
        start = time.perf_counter()
        peak = _cpu_peak(fn)
        return Measure(time.perf_counter() - start, peak)
    if warmup:
        fn()
    best = float("inf")
    peak = 0
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
        best = min(best, time.perf_counter() - start)
    if not cuda:
        peak = _cpu_peak(fn)
    return Measure(best, peak)


def describe_device(device: torch.device) -> str:
    """The device as the benchmark header names it (GPU name, or CPU model and whether a GPU exists)."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    gpu = "none available" if not torch.cuda.is_available() else "present but not used (--device cpu)"
    return f"CPU: {cpu}, {torch.get_num_threads()} torch threads; GPU: {gpu}"


def _ratio(a: int, b: int) -> str:
    # Below 1 MiB the resident-set method cannot tell sizes apart.
    return f"{a / b:.1f}x" if b >= MiB else (f">{a / MiB:.0f}x" if a >= MiB else "-")


def _row(name: str, shape: str, a: Measure, b: Measure | None, bytes_moved: int | None = None) -> str:
    mem = lambda m: f"{m.peak_bytes / MiB:8.1f}"  # noqa: E731
    line = f"{name:<28} {shape:<22} {a.seconds * 1e3:10.2f} {mem(a)}"
    if b is None:
        return line + f" {'n/a':>10} {'n/a':>8} {'-':>7} {'-':>7}"
    line += f" {b.seconds * 1e3:10.2f} {mem(b)} {a.seconds / b.seconds:6.1f}x"
    line += f" {_ratio(a.peak_bytes, b.peak_bytes):>7}"
    if bytes_moved is not None:
        line += f"  {bytes_moved / b.seconds / 1e9:7.1f} GB/s"
    return line


def _train_step(fn: Callable[..., object], *inputs: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of fn on leaf copies of inputs (the training cost)."""
    leaves = [t.detach().requires_grad_() for t in inputs]

    def step():
        out = fn(*leaves)
        out = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(out.float().sum(), leaves)
    return step


def kernel_table(device: torch.device, quick: bool) -> list[str]:
    """Rows comparing each kernel's torch reference with the dispatched (fused) path."""
    cuda = device.type == "cuda"
    reps = 3 if quick else 5
    lines = [f"{'op':<28} {'shape':<22} {'ref ms':>10} {'ref MiB':>8} {'fused ms':>10} {'fused MiB':>8}"
             f" {'speed':>7} {'memory':>7}" + ("  bandwidth" if cuda else "")]

    def both(name, shape, ref_fn, fused_fn, bytes_moved=None):
        with kernel_mode("reference"):
            a = measure(ref_fn, device, reps)
        b = measure(fused_fn, device, reps) if cuda else None
        lines.append(_row(name, shape, a, b, bytes_moved))

    gen = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=gen).to(device)  # noqa: E731

    # Nearest code: on CPU, naive (full N x K matrix, one argmin) vs our chunked path.
    n, k, d = (4096, 16384, 16) if quick else (16384, 16384, 16)
    x, cb = rand(n, d), rand(k, d)
    naive = lambda: torch.cdist(x, cb).argmin(-1)  # noqa: E731
    if cuda:
        both("nearest_code (euclid)", f"N{n} K{k} D{d}", lambda: nearest_code_reference(x, cb),
             lambda: nearest_code(x, cb), (n + k) * d * 4 + n * 8)
    else:
        a = measure(naive, device, reps)
        b = measure(lambda: nearest_code(x, cb), device, reps)
        lines.append(_row("nearest_code naive->chunked", f"N{n} K{k} D{d}", a, b))
    cbs = rand(8, 1024, d)
    res_ref = lambda: residual_nearest_codes(x, cbs)  # noqa: E731
    both("residual_codes (L=8)", f"N{n} K1024 D{d}", res_ref, res_ref, (n * d + cbs.numel()) * 4 + n * 64)

    # Encoder blocks, forward + backward (what training runs).
    b_, t_, c_ = (4, 256, 512) if quick else (8, 1024, 768)
    h, r, w, bias = rand(b_, t_, c_), rand(b_, t_, c_), rand(c_), rand(c_)
    shift, scale = rand(b_, c_) * 0.1, rand(b_, c_) * 0.1
    act_bytes = h.numel() * 4
    ln = _train_step(lambda h, r, w, bb, s, c: norms.add_layer_norm(h, r, w, bb, 1e-5, s, c), h, r, w, bias, shift,
                     scale)
    both("add_layer_norm+adaLN f+b", f"{b_}x{t_}x{c_}", ln, ln, act_bytes * 7)
    rms = _train_step(lambda h, r, w: norms.add_rms_norm(h, r, w), h, r, w)
    both("add_rms_norm f+b", f"{b_}x{t_}x{c_}", rms, rms, act_bytes * 7)
    big = rand(b_, t_, 4 * c_)
    gl = _train_step(lambda x, bb: activations.gelu(x, bb), big, rand(4 * c_))
    both("bias+gelu f+b", f"{b_}x{t_}x{4 * c_}", gl, gl, big.numel() * 4 * 4)
    sw = _train_step(lambda h: activations.swiglu(*h.chunk(2, -1)), big)
    both("swiglu f+b", f"{b_}x{t_}x{4 * c_}", sw, sw, big.numel() * 4 * 3)
    sb, sc, st = (2, 64, 8000) if quick else (4, 128, 24000)
    sx, alpha = rand(sb, sc, st), rand(sc).abs() + 0.1
    sn = _train_step(activations.snake, sx, alpha)
    both("snake f+b", f"{sb}x{sc}x{st}", sn, sn, sx.numel() * 4 * 4)
    return lines


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            return int(re.search(r"MemAvailable:\s+(\d+)", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return 1 << 62  # unknown: do not skip


def quantizer_table(device: torch.device, quick: bool) -> list[str]:
    """Rows comparing vector-quantize-pytorch's VectorQuantize with nearest_code on the same codebook."""
    from vector_quantize_pytorch import VectorQuantize

    n, d = 16384, 16
    sizes = (1024, 16384) if quick else (1024, 16384, 65536)
    lines = [f"{'K':>7} {'N':>6} {'vq-pytorch ms':>14} {'MiB':>8} {'zoo encode ms':>14} {'MiB':>8} "
             f"{'speed':>7} {'memory':>7} {'codes equal':>12}"]
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, n, d, generator=gen).to(device)
    for k in sizes:
        # The library holds about four fp32 (N x K) matrices at once (measured: 4 GiB at K = 16,384).
        # Where that would crowd a shared machine, feed it N in equal batches (its work is linear in N).
        batches = 1
        while device.type == "cpu" and 16 * n * k / batches > 0.5 * _available_memory() and batches < 16:
            batches *= 2
        library = VectorQuantize(dim=d, codebook_size=k).eval().to(device)
        codebook = library.codebook.detach()
        with torch.no_grad():
            slow = k >= 16384 and device.type == "cpu"  # 10-80 s a call here: time it once, no warm-up
            parts = z.chunk(batches, dim=1)
            library_codes: list[torch.Tensor] = []
            run_library = lambda: library_codes.append(torch.cat([library(p)[1] for p in parts], 1))  # noqa: E731
            a = measure(run_library, device, repeats=1 if slow else 3, warmup=False)
            our_codes: list[torch.Tensor] = []
            b = measure(lambda: our_codes.append(nearest_code(z.reshape(-1, d), codebook).view(1, n)), device,
                        repeats=2 if slow else 3)
            agree = (our_codes[-1] == library_codes[-1]).float().mean().item()
        lines.append(f"{k:>7} {n:>6} {a.seconds * 1e3:14.1f} {a.peak_bytes / MiB:8.1f} {b.seconds * 1e3:14.1f} "
                     f"{b.peak_bytes / MiB:8.1f} {a.seconds / b.seconds:6.1f}x "
                     f"{_ratio(a.peak_bytes, b.peak_bytes):>7} {agree:12.6f}"
                     + (f"  (library fed {batches} batches of {n // batches} rows, to fit in memory)"
                        if batches > 1 else ""))
        del library, codebook
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the kernel benchmark (`zoo bench kernels`) and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, no K = 65,536 (a smoke run)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    print(f"zoo.kernels benchmark  torch {torch.__version__}  {describe_device(device)}")
    if os.environ.get("ZOO_KERNELS"):
        print(f"note: ZOO_KERNELS={os.environ['ZOO_KERNELS']} is set")
    if device.type != "cuda":
        print("No CUDA: the Triton kernels are not timed (they need a GPU; the interpreter is for tests). "
              "Ratios are reference / fused; on CPU, naive / chunked.")
    print("\n== kernels (best of repeats; peak = memory above the start of the call) ==")
    print("\n".join(kernel_table(device, args.quick)))
    print(f"\n== quantizer: vector-quantize-pytorch VectorQuantize(dim=16).eval() forward vs "
          f"zoo nearest_code (VectorQuantizer.encode's search), same codebook ==")
    print("\n".join(quantizer_table(device, args.quick)))
    print(f"\ntotal benchmark time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
