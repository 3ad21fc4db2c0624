"""The GPU report: `python -m zoo.eval.gpu_report [--out DIR]` (on a CUDA machine, a few minutes).

Three steps, all numbers from this one run, written to DIR/gpu_report.json and DIR/gpu_report.md:
1. every Triton kernel against its torch reference: correctness first (codes equal, max difference
   against a tolerance), then the time of both and the ratio;
2. the nearest-code search's bandwidth (the bytes it must read and write / its time) as a fraction of
   the device's copy bandwidth measured here, at K = 16,384 and 65,536 codes;
3. each family's encode and decode throughput at its registered size, random weights, fp32 and bf16
   (autocast), batch 8. The official implementations are not timed here yet: `zoo bench --vs` does
   that per family where an adapter exists.

`--dry-run` runs the same steps with tiny shapes and models, on the CPU: the report's plumbing, for
the test suite. With TRITON_INTERPRET=1 in the environment the dry run sends the "fused" side
through the Triton interpreter, so the kernels themselves are checked too; without it both sides
are the torch reference and the report says so.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from zoo.kernels import activations, norms, scalar_quant
from zoo.kernels.bench import describe_device, measure
from zoo.kernels.dispatch import kernel_mode
from zoo.kernels.nearest_code import (nearest_code, nearest_code_reference, residual_nearest_codes,
                                      residual_nearest_codes_reference)

FAMILIES = ("titok-s-128", "titok-l-32", "onedpiece-s-256", "flextok-d12-d12-in1k", "speechtokenizer-hubert-avg",
            "dmcodec-lm", "wavtokenizer-small-75-24k", "lmspt-12.5hz")

def _close(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, max |b|) in float32."""
    return float((a.float() - b.float()).abs().max()), float(b.float().abs().max())


def kernel_cases(device: torch.device, dry: bool) -> list[tuple]:
    """(name, shape, reference fn, fused fn, compare(reference out, fused out) -> (ok, detail), bytes moved)."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    n, k, d = (64, 128, 8) if dry else (16384, 16384, 16)
    b, t, c = (2, 8, 32) if dry else (8, 1024, 768)
    x, codebook, codebooks = rand(n, d), rand(k, d), rand(4, 256 if not dry else 16, d)
    h, r, w, bias, shift, scale = rand(b, t, c), rand(b, t, c), rand(c), rand(c), rand(b, c) * .1, rand(b, c) * .1
    wide, snake_x, alpha = rand(b, t, 4 * c), rand(b, 16 if dry else 128, t * 8), rand(16 if dry else 128).abs() + .1
    fsq_z, lfq_z, levels, gelu_bias = rand(b, t, 4), rand(b, t, 12), (8, 5, 5, 5), rand(4 * c)

    def same_codes(a, f):
        share = float((a == f).float().mean())
        return share == 1.0, f"codes equal {share:.6f}"

    def within(tol):
        def compare(a, f):
            a, f = (a[0], f[0]) if isinstance(a, tuple) else (a, f)
            diff, peak = _close(f, a)
            return diff <= tol * max(1.0, peak), f"max |diff| {diff:.2e} (tolerance {tol * max(1.0, peak):.1e})"
        return compare

    def scalar(a, f):
        return bool(torch.equal(a.codes, f.codes)), f"codes equal {float((a.codes == f.codes).float().mean()):.6f}"

    return [
        ("nearest_code euclidean", f"N{n} K{k} D{d}", lambda: nearest_code_reference(x, codebook),
         lambda: nearest_code(x, codebook), same_codes, (n + k) * d * 4 + n * 8),
        ("nearest_code cosine", f"N{n} K{k} D{d}", lambda: nearest_code_reference(x, codebook, cosine=True),
         lambda: nearest_code(x, codebook, cosine=True), same_codes, (n + k) * d * 4 + n * 8),
        ("residual_nearest_codes", f"N{n} L4 K{codebooks.shape[1]} D{d}",
         lambda: residual_nearest_codes_reference(x, codebooks), lambda: residual_nearest_codes(x, codebooks),
         same_codes, (n * d + codebooks.numel()) * 4 + n * 32),
        ("add_layer_norm + adaLN", f"{b}x{t}x{c}", lambda: norms.add_layer_norm_reference(h, r, w, bias, 1e-5, shift, scale),
         lambda: norms.add_layer_norm(h, r, w, bias, 1e-5, shift, scale), within(1e-4), h.numel() * 4 * 4),
        ("add_rms_norm", f"{b}x{t}x{c}", lambda: norms.add_rms_norm_reference(h, r, w),
         lambda: norms.add_rms_norm(h, r, w), within(1e-4), h.numel() * 4 * 4),
        ("bias + gelu", f"{b}x{t}x{4 * c}", lambda: activations.gelu_reference(wide, gelu_bias),
         lambda: activations.gelu(wide, gelu_bias), within(1e-5), wide.numel() * 4 * 2),
        ("swiglu", f"{b}x{t}x{2 * c}", lambda: activations.swiglu_reference(*wide.chunk(2, -1)),
         lambda: activations.swiglu(*wide.chunk(2, -1)), within(1e-5), wide.numel() * 4 * 3 // 2),
        ("snake", "x".join(map(str, snake_x.shape)), lambda: activations.snake_reference(snake_x, alpha),
         lambda: activations.snake(snake_x, alpha), within(1e-5), snake_x.numel() * 4 * 2),
        ("fsq_round", f"{b}x{t}x4 levels {levels}", lambda: scalar_quant.fsq_round_reference(fsq_z, levels),
         lambda: scalar_quant.fsq_round(fsq_z, levels), scalar, fsq_z.numel() * 4 * 2),
        ("lfq_round", f"{b}x{t}x12", lambda: scalar_quant.lfq_round_reference(lfq_z),
         lambda: scalar_quant.lfq_round(lfq_z), scalar, lfq_z.numel() * 4 * 2),
    ]


def kernel_rows(device: torch.device, dry: bool, fused_mode: str) -> list[dict]:
    """Step 1: correctness, then time, of every kernel against its reference."""
    rows = []
    for name, shape, reference, fused, compare, moved in kernel_cases(device, dry):
        with kernel_mode("reference"):
            expected = reference()
            ref_time = measure(reference, device, repeats=1 if dry else 5).seconds
        with kernel_mode(fused_mode):
            got = fused()
            fused_time = measure(fused, device, repeats=1 if dry else 5).seconds
        correct, detail = compare(expected, got)
        rows.append({"op": name, "shape": shape, "correct": correct, "check": detail, "reference_ms": ref_time * 1e3,
                     "fused_ms": fused_time * 1e3, "speedup": ref_time / fused_time,
                     "fused_GB_per_s": moved / fused_time / 1e9})
    return rows


def bandwidth_rows(device: torch.device, dry: bool, fused_mode: str) -> tuple[float, list[dict]]:
    """Step 2: (copy GB/s, the nearest-code search's GB/s at K = 16,384 and 65,536 and its share of it)."""
    size = (16 << 20) if dry else (1 << 30)
    src = torch.empty(size // 4, device=device).normal_()
    dst = torch.empty_like(src)
    copy = 2 * size / measure(lambda: dst.copy_(src), device, repeats=1 if dry else 5).seconds / 1e9
    rows = []
    n, d = (256, 16) if dry else (16384, 16)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g).to(device)
    for k in ((256, 1024) if dry else (16384, 65536)):
        codebook = torch.randn(k, d, generator=g).to(device)
        with kernel_mode(fused_mode):
            seconds = measure(lambda: nearest_code(x, codebook), device, repeats=1 if dry else 10).seconds
        moved = (n + k) * d * 4 + n * 8
        rows.append({"K": k, "N": n, "D": d, "ms": seconds * 1e3, "GB_per_s": moved / seconds / 1e9,
                     "share_of_copy": moved / seconds / 1e9 / copy})
    return copy, rows


def family_rows(device: torch.device, dry: bool) -> list[dict]:
    """Step 3: encode / decode throughput of each family, fp32 and bf16 autocast, random weights."""
    import zoo
    from zoo.hub.registry import tiny_overrides

    rows = []
    batch = 1 if dry else 8
    for name in FAMILIES:
        overrides = tiny_overrides(name, image_size=32) if dry else {}  # dry run: seconds on a CPU
        torch.manual_seed(0)
        model = zoo.create(name, **overrides).to(device)
        if model.modality == "image":
            x, unit = torch.rand(batch, 3, model.image_size, model.image_size, device=device), "images"
        else:
            x, unit = 0.1 * torch.randn(batch, 1, model.sample_rate * (1 if dry else 10), device=device), "clips"
        options = {"steps": 2 if dry else 25} if model.architecture == "flextok" else {}
        for dtype in ("fp32", "bf16"):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                tokens = model.encode(x)
                encode = measure(lambda: model.encode(x), device, repeats=1 if dry else 3).seconds
                decode = measure(lambda: model.decode(tokens, **options), device, repeats=1 if dry else 3).seconds
            rows.append({"model": name, "dtype": dtype, "batch": batch, "encode_ms": encode * 1e3,
                         "decode_ms": decode * 1e3, f"{unit}_per_s": batch / (encode + decode),
                         "official": "not timed here (zoo bench --vs)"})
        del model
    return rows


def markdown(report: dict) -> str:
    """The report as markdown tables."""
    lines = ["# zoo GPU report", "", f"{report['device']}; torch {report['torch']}; {report['mode']}", "",
             "| op | shape | correct | check | reference ms | fused ms | speed-up | fused GB/s |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['shape']} | {'yes' if r['correct'] else '**NO**'} | {r['check']} | {r['reference_ms']:.3f} "
              f"| {r['fused_ms']:.3f} | {r['speedup']:.2f}x | {r['fused_GB_per_s']:.1f} |" for r in report["kernels"]]
    lines += ["", f"Copy bandwidth measured: {report['copy_GB_per_s']:.1f} GB/s", "",
              "| K | N | D | nearest_code ms | GB/s | share of copy |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['K']} | {r['N']} | {r['D']} | {r['ms']:.3f} | {r['GB_per_s']:.1f} | {r['share_of_copy']:.1%} |"
              for r in report["nearest_code_bandwidth"]]
    lines += ["", "| model | dtype | batch | encode ms | decode ms | per s | official |", "|---|---|---|---|---|---|---|"]
    for r in report["families"]:
        per_s = next(v for k, v in r.items() if k.endswith("_per_s"))
        lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} "
                     f"| {per_s:.2f} | {r['official']} |")
    lines += ["", f"total {report['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Run the report, write DIR/gpu_report.json and .md, print the markdown; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-report", help="folder for gpu_report.json and gpu_report.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes and models on the CPU (the suite's check)")
    args = parser.parse_args(argv)
    from zoo.errors import TokenizerError

    if not args.dry_run and not torch.cuda.is_available():
        raise TokenizerError("the GPU report needs a CUDA device and none is available; run it on a GPU machine, "
                             "or pass --dry-run to check its steps on the CPU.")
    device = torch.device("cpu" if args.dry_run else "cuda")
    interpreted = args.dry_run and os.environ.get("TRITON_INTERPRET") == "1"
    fused_mode = "triton" if interpreted else "auto"
    mode = ("full run" if not args.dry_run else "dry run: tiny shapes on the CPU, "
            + ("the fused side through the Triton interpreter" if interpreted
               else "both sides the torch reference (set TRITON_INTERPRET=1 to interpret the kernels)"))
    began = time.perf_counter()
    report = {"device": describe_device(device), "torch": torch.__version__, "mode": mode,
              "kernels": kernel_rows(device, args.dry_run, fused_mode)}
    report["copy_GB_per_s"], report["nearest_code_bandwidth"] = bandwidth_rows(device, args.dry_run, fused_mode)
    report["families"] = family_rows(device, args.dry_run)
    report["seconds"] = time.perf_counter() - began
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_report.md").write_text(markdown(report))
    print(markdown(report), end="")
    return report


if __name__ == "__main__":
    main()
