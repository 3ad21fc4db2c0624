"""The GPU report (zoo.eval.gpu_report) in its dry run: the same steps on the CPU with tiny shapes, the
kernels through the Triton interpreter, writing the JSON and the markdown a GPU run writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.errors import TokenizerError
from zoo.eval import gpu_report

HERE = Path(__file__).resolve().parent


def test_the_dry_run_checks_every_kernel_and_times_every_family(tmp_path):
    pytest.importorskip("triton")
    code = ("import triton_interpreter_shim; from zoo.eval.gpu_report import main; "
            f"main(['--dry-run', '--out', {str(tmp_path)!r}])")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert "the fused side through the Triton interpreter" in report["mode"]
    ops = {r["op"]: r for r in report["kernels"]}
    assert set(ops) == {"nearest_code euclidean", "nearest_code cosine", "residual_nearest_codes", "add_layer_norm + adaLN",
                        "add_rms_norm", "bias + gelu", "swiglu", "snake", "fsq_round", "lfq_round"}
    assert all(r["correct"] for r in ops.values()), [r for r in ops.values() if not r["correct"]]
    assert any(not r["check"].startswith(("codes equal", "max |diff| 0.00e+00")) for r in ops.values())  # interpreted
    assert [r["K"] for r in report["nearest_code_bandwidth"]] == [256, 1024] and report["copy_GB_per_s"] > 0
    assert {(r["model"], r["dtype"]) for r in report["families"]} == {(m, d) for m in gpu_report.FAMILIES
                                                                       for d in ("fp32", "bf16")}
    assert all(r["encode_ms"] > 0 and r["decode_ms"] > 0 for r in report["families"])
    table = (tmp_path / "gpu_report.md").read_text()
    assert table.startswith("# zoo GPU report") and "| nearest_code euclidean |" in table and "share of copy" in table


def test_a_full_run_without_cuda_says_what_to_do(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the full run would start")
    with pytest.raises(TokenizerError, match="needs a CUDA device and none is available; run it on a GPU machine, "
                                             "or pass --dry-run"):
        gpu_report.main(["--out", str(tmp_path)])
    assert not (tmp_path / "gpu_report.json").exists()
