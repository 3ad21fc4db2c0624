"""Every reader of untrusted bytes, fuzzed for a bounded time (tests/fuzz_readers.py): only our error
types come out, and the process's peak memory stays bounded."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
READERS = ["weights", "checkpoint", "config", "tokens", "image", "audio", "whisper"]
PEAK_MEMORY_LIMIT = 1.5 * 2**30  # torch and the tiny models take about a third of it


def fuzz(tmp_path: Path, seconds: float, seed: int) -> tuple[list[dict], float]:
    done = subprocess.run([sys.executable, str(HERE / "fuzz_readers.py"), "--seconds", str(seconds), "--seed", str(seed)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    results = [r for r in lines if "reader" in r]
    findings = [(r["reader"], f) for r in results for f in r["findings"]]
    assert done.returncode == 0 and not findings, (findings[:5], done.stderr[-2000:])
    peak = next(r["peak_resident_bytes"] for r in lines if "peak_resident_bytes" in r)
    if peak is None:
        pytest.skip("no /proc/self/status here to read the peak memory from")
    return results, peak


def check(results: list[dict], peak: float, min_cases: int) -> None:
    assert [r["reader"] for r in results] == READERS
    for r in results:
        assert r["cases"] >= min_cases, r
        assert set(r["outcomes"]) <= {"read", "TokenizerError", "CheckpointError"}, r
        assert r["outcomes"].get("read", 0) > 0 and r["cases"] - r["outcomes"].get("read", 0) > 0, r  # both kinds met
    assert peak < PEAK_MEMORY_LIMIT, f"peak memory {peak / 2**20:.0f} MiB"


def test_readers_of_untrusted_bytes_raise_only_our_errors_in_bounded_memory(tmp_path):
    results, peak = fuzz(tmp_path, seconds=1.0, seed=0)
    check(results, peak, min_cases=10)


@pytest.mark.slow
def test_readers_fuzzed_longer_on_another_seed(tmp_path):
    results, peak = fuzz(tmp_path, seconds=2, seed=1)
    check(results, peak, min_cases=25)
