"""Training faults: a run killed mid-epoch resumes with nothing lost, a NaN loss stops the run and keeps
the last good checkpoint, and a failed save leaves the previous checkpoint whole."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from zoo.errors import TokenizerError
from zoo.training.image_recon import ImageReconstruction
from zoo.training.resumable_order import ResumableShuffle

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "onedpiece" / "tiny.yaml"


def test_resumable_shuffle_reshuffles_each_epoch_and_starts_part_way():
    order = ResumableShuffle(10, seed=3)
    first = list(order)
    assert sorted(i for i, _ in first) == list(range(10)) and list(order) == first  # (seed, epoch) alone
    order.set_epoch(1)
    second = list(order)
    assert [i for i, _ in second] != [i for i, _ in first] and {s for _, s in second}.isdisjoint({s for _, s in first})
    resumed = ResumableShuffle(10, seed=3)
    resumed.start_at(1, 4)  # Lightning makes the iterator before it calls set_epoch
    assert list(resumed) == second[4:]
    assert list(resumed) == second  # the next pass over the epoch is whole again
    ended = ResumableShuffle(10, seed=3)
    ended.start_at(0, 10)  # saved at the end of epoch 0: epoch 1 comes next, whole
    assert list(ended) == second


def fit(root: Path, photo_dir: Path, *args: str) -> subprocess.CompletedProcess:
    extra = root / "extra.yaml"
    root.mkdir(parents=True, exist_ok=True)
    extra.write_text(
        "model:\n  init_args:\n    discriminator_start: 3\n"  # the discriminator joins before the kill
        "trainer:\n  deterministic: true\n  enable_progress_bar: false\n  callbacks:\n"
        f"    - {{class_path: scale_probe.Probe, init_args: {{out_dir: '{root / 'probe'}'}}}}\n"
        + "".join(f"    - {c}\n" for c in args if c.startswith("{"))
    )
    options = [a for a in args if not a.startswith("{")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "zoo.cli", "fit", "--config", str(RECIPE), "--config", str(extra),
               "--data.init_args.train_dir", str(photo_dir), "--data.init_args.repeat", "16",  # 8 batches an epoch
               "--data.init_args.num_val_images", "0", "--trainer.default_root_dir", str(root),
               "--trainer.max_steps", "17", "--save_every_n_steps", "4", *options]  # 10 batches: into epoch 1
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_average_and_discriminator(tmp_path, photo_dir):
    whole = fit(tmp_path / "whole", photo_dir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # SIGKILL after batch 7 of 8: the newest last.ckpt is from batch 6, mid-epoch, discriminator on
    killed = fit(tmp_path / "cut", photo_dir, "{class_path: scale_probe.KillAt, init_args: {batches_done: 7}}")
    assert killed.returncode == -9
    ckpt = torch.load(tmp_path / "cut/runs/onedpiece-tiny/version_0/checkpoints/last.ckpt", weights_only=True)
    position = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert ckpt["global_step"] == 9 and position["batches_done"] == 6 and position["epoch"] == ckpt["epoch"] == 0
    resumed = fit(tmp_path / "cut", photo_dir, "--ckpt_path", str(tmp_path / "cut/runs/onedpiece-tiny/version_0/checkpoints/last.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]  # a checkpoint file given (`last` finds it too: test_journey)
    assert "resuming from" in resumed.stdout and "resuming from a checkpoint that ended before" not in resumed.stderr
    end, again = (json.loads((tmp_path / d / "probe" / "rank0.json").read_text()) for d in ("whole", "cut"))
    assert again["step"] == end["step"] == 17
    assert again["batches"] == end["batches"][6:]  # the rest of epoch 0 and the start of epoch 1, crops included
    assert again["everything"] == end["everything"]  # tokenizer, weight average, discriminator


class NaNAtBatch(ImageReconstruction):
    """The tiny recipe's regime, with the generator loss made NaN at one batch (a diverging run)."""

    def __init__(self, nan_at_batch: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.nan_at_batch = nan_at_batch

    def generator_step(self, batch, adversarial):
        step = super().generator_step(batch, adversarial)
        if int(self.batches_seen) == self.nan_at_batch:
            return step._replace(loss=step.loss * float("nan"), logs={**step.logs, "reconstruction": torch.tensor(float("nan"))})
        return step


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys,
                                                                                     photo_dir, one_thread):
    from zoo.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    extra = tmp_path / "nan.yaml"
    extra.write_text("model:\n  class_path: test_training_faults.NaNAtBatch\n  init_args:\n    nan_at_batch: 5\n")
    code = main(["fit", "--config", str(RECIPE), "--config", str(extra), "--data.init_args.train_dir", str(photo_dir),
                 "--data.init_args.num_val_images", "0", "--trainer.max_steps", "20", "--save_every_n_steps", "2",
                 "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    last = Path("runs/onedpiece-tiny/version_0/checkpoints/last.ckpt")
    assert err.startswith("zoo: error: the generator loss is nan at step 5 (batch 5 of epoch 0, batch 5 of the run) "
                          "(non-finite terms: reconstruction); training stopped and the last good checkpoint, ")
    assert str(last) in err and "--ckpt_path last" in err
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 4 and not list(last.parent.glob("*.part"))
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path):
    from zoo.training.cli import LAST, LastCheckpoint

    saver = LastCheckpoint(str(tmp_path))

    def good(path, weights_only):
        Path(path).write_bytes(b"state of step 3")

    def disk_full(path, weights_only):
        Path(path).write_bytes(b"half a st")
        raise OSError(errno.ENOSPC, "No space left on device")

    saver.write(SimpleNamespace(sanity_checking=False, global_step=3, is_global_zero=True, save_checkpoint=good))
    with pytest.raises(TokenizerError, match=r"writing the checkpoint of step 4 .* No space left on device\); "
                                             r".*last.ckpt still holds the last good state: free the space"):
        saver.write(SimpleNamespace(sanity_checking=False, global_step=4, is_global_zero=True, save_checkpoint=disk_full))
    assert (tmp_path / LAST).read_bytes() == b"state of step 3" and sorted(p.name for p in tmp_path.iterdir()) == [LAST]
