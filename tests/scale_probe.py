"""Test-only callbacks: Probe records, per rank, a fingerprint of every training batch and of the
final weights, so tests can check what each DDP rank saw and what was saved; KillAt ends the process
abruptly (SIGKILL: no hook runs, nothing is saved) when a given batch is done."""
import hashlib
import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


def fingerprint(tensors) -> str:
    digest = hashlib.sha1()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


def state_fingerprint(module: torch.nn.Module) -> str:
    state = module.state_dict()
    return fingerprint(state[k] for k in sorted(state))


class Probe(Callback):
    def __init__(self, out_dir: str):
        self.out_dir, self.batches = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(fingerprint([batch]))

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "batches": self.batches,
                  "weights": state_fingerprint(pl_module.tokenizer), "step": trainer.global_step,
                  "everything": state_fingerprint(pl_module)}  # with the weight average and the discriminator
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class KillAt(Callback):
    def __init__(self, batches_done: int):
        self.batches_done = batches_done

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if int(pl_module.batches_seen) == self.batches_done:
            os.kill(os.getpid(), signal.SIGKILL)
