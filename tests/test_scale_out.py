"""Recipes run unchanged under DDP on several processes (gloo on the CPU). Exact resumes, mid-epoch
included: tests/test_training_faults.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scale_probe import state_fingerprint

import zoo

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "onedpiece" / "tiny.yaml"


def fit(tmp: Path, photo_dir: Path, *args: str) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    extra = tmp / "extra.yaml"
    extra.write_text(
        "trainer:\n"
        "  callbacks:\n"
        f"    - {{class_path: scale_probe.Probe, init_args: {{out_dir: '{tmp / 'probe'}'}}}}\n"
        "    - {class_path: zoo.training.callbacks.ResumableRandomState}\n"
        f"    - {{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {{dirpath: '{tmp / 'ckpt'}',"
        " save_last: true, every_n_train_steps: 4, save_top_k: 0}}\n"
        "  enable_checkpointing: true\n"
        "  deterministic: true\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "zoo.cli", "fit", "--config", str(RECIPE), "--config", str(extra),
               "--data.init_args.train_dir", str(photo_dir), "--data.init_args.repeat", "8",
               "--data.init_args.num_val_images", "0", "--trainer.default_root_dir", str(tmp), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def probes(tmp: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp / "probe").glob("rank*.json"))]


@pytest.mark.slow
def test_ddp_two_processes_see_different_data_and_save_one_model(tmp_path, photo_dir):
    fit(tmp_path, photo_dir, "--trainer.strategy", "ddp_find_unused_parameters_true", "--trainer.devices", "2", "--trainer.max_steps", "4")
    ranks = probes(tmp_path)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 4
    assert not set(ranks[0]["batches"]) & set(ranks[1]["batches"])  # each rank its own shard
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were averaged
    from zoo.hub.export import export_checkpoint

    folder = export_checkpoint(tmp_path / "ckpt" / "last.ckpt", tmp_path / "hub", use_ema=False)
    assert state_fingerprint(zoo.load(folder)) == ranks[0]["weights"]
