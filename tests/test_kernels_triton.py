"""Runs tests/test_kernels_interpret_cases.py (every Triton kernel vs its reference) in a
subprocess under the Triton interpreter, so the kernels are tested on machines without a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("test_kernels_interpret_cases.py")


def test_triton_kernels_match_references_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", ZOO_KERNELS="triton")
    run = subprocess.run([sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"interpreter tests failed:\n{run.stdout[-8000:]}\n{run.stderr[-4000:]}"
