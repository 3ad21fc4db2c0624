"""One skeleton for adversarial tokenizer training: every training regime subclasses it and adds
only its own losses.

The skeleton owns
- the tokenizer a recipe names (`tokenizer`, `tokenizer_overrides`, `pretrained`, `checkpoint`) and
  the family's `training_options` (k-means codebook init, dead-code restarts, ...; see
  `Tokenizer.set_training_options`), kept under `self.tokenizer`;
- the generator optimizer over every trainable parameter that is not the discriminator's (the
  tokenizer and any training-only heads) and, when the regime builds one, the discriminator's own
  optimizer; linear learning-rate warm-up; gradient-norm clipping of the generator;
- the discriminator schedule: it trains, and the generator sees its adversarial terms, from batch
  `discriminator_start` on;
- an exponential moving average of the tokenizer (`ema_decay`), which validation and export use;
- resumable state: `batches_seen` is a buffer, the random states travel in each checkpoint
  (`ResumableRandomState`), and codebooks all-reduce across processes when several train;
- the export of the trained tokenizer at the end of fitting (`export_dir`).

A regime sets `self.discriminator` (or leaves it None) in its `__init__` after calling
`super().__init__(**skeleton_args)`, and implements

    generator_step(batch, adversarial: bool) -> GeneratorStep(loss, logs, real, fake)
        real / fake: what the discriminator compares next (only read when adversarial is True)
    discriminator_loss(real, fake) -> (loss, logs)

Steps: `trainer.global_step` counts optimizer steps (two per batch once the discriminator trains);
warm-up and `discriminator_start` count batches (`batches_seen`).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, ClassVar, NamedTuple

import torch
from lightning.pytorch import LightningModule
from torch import nn

from zoo.tokenizer import Tokenizer
from zoo.training.callbacks import ResumableRandomState
from zoo.training.common import build_tokenizer, codebooks_ready


class GeneratorStep(NamedTuple):
    """What a regime's generator step hands back to the skeleton."""

    loss: torch.Tensor                # the total generator loss to minimise
    logs: dict[str, torch.Tensor]     # detached values, logged as train/<name> (the loss as train/loss)
    real: Any = None                  # the discriminator's real input
    fake: Any = None                  # the discriminator's fake input (detached before the discriminator step)


class EMA(nn.Module):
    """Exponential moving average of a module's parameters; buffers (codebooks updated by EMA
    k-means, usage counters, flags) are copied as they are. With `warmup`, the decay used at
    update t is min(decay, (1 + t) / (10 + t)), so that short runs are not dominated by the
    random initialisation."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        super().__init__()
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward `model`."""
        t = int(self.updates)
        decay = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1


@contextlib.contextmanager
def frozen(module: nn.Module | None):
    """The generator's adversarial terms must not leave gradients in the discriminator."""
    if module is None:
        yield
        return
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class AdversarialTraining(LightningModule):
    """Base of every training regime (see the module docstring)."""

    # init arguments that may be modules (teachers, terms, backbones): kept out of the checkpoint's
    # hyper-parameters, which stay plain values that export reads with weights_only=True
    unsaved_arguments: ClassVar[tuple[str, ...]] = ()
    # step logs (names as the regime's generator_step / discriminator_loss give them) shown in the progress
    # bar beside the total loss
    progress_bar_logs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        tokenizer: str,
        tokenizer_overrides: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint: str | None = None,
        training_options: dict[str, Any] | None = None,
        # optimisation
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        discriminator_lr: float | None = None,
        warmup_steps: int = 0,
        grad_clip: float = 0.0,
        discriminator_start: int = 0,
        # weight average of the tokenizer, used for validation and export
        ema_decay: float | None = None,
        ema_warmup: bool = True,
        export_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=list(self.unsaved_arguments))
        self.automatic_optimization = False
        self.tokenizer = build_tokenizer(tokenizer, tokenizer_overrides, pretrained, checkpoint)
        if training_options:
            self.tokenizer.set_training_options(**training_options)
        self.discriminator: nn.Module | None = None
        self.ema = EMA(self.tokenizer, ema_decay, ema_warmup) if ema_decay else None
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    # ---- what the regimes and export use ------------------------------------------------------
    def trained_tokenizer(self) -> Tokenizer:
        """The tokenizer to evaluate and export: the weight average when there is one."""
        return self.ema.model if self.ema is not None else self.tokenizer

    def codebooks_ready(self) -> bool:
        """False before the first training batch has initialised k-means codebooks (e.g. during
        Lightning's sanity check), when validation would have no codes to look at."""
        return codebooks_ready(self.trained_tokenizer())

    def checkpoint_metric(self) -> tuple[str, str] | None:
        """(validation metric, 'max' or 'min') that `zoo fit` keeps the best checkpoint by; None: none."""
        return None

    def adversarial_on(self) -> bool:
        """Whether the discriminator trains, and the generator sees its terms, in this batch."""
        return self.discriminator is not None and int(self.batches_seen) >= self.hparams.discriminator_start

    def lr_factor(self) -> float:
        """Linear warm-up of the learning rate over `warmup_steps` batches."""
        warmup = self.hparams.warmup_steps
        return min(1.0, (int(self.batches_seen) + 1) / warmup) if warmup > 0 else 1.0

    # ---- Lightning hooks ------------------------------------------------------------------------
    def configure_callbacks(self):
        return [ResumableRandomState()]

    def setup(self, stage: str) -> None:
        from zoo.quantize import sync_codebooks_across_processes

        # decided here, once the processes exist: the model was built before DDP started
        sync_codebooks_across_processes(self.tokenizer, enabled=self.trainer.world_size > 1)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("discriminator.")]
        opt_g = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if self.discriminator is None:
            return opt_g
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=hp.discriminator_lr or hp.lr,
                                  betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        return [opt_g, opt_d]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ema is not None:
            self.ema.model.eval()
        return self

    def on_train_start(self) -> None:
        self.train()  # zoo.create / zoo.load return eval-mode models, and Lightning keeps modules' modes

    def training_step(self, batch, batch_idx: int):
        hp = self.hparams
        optimizers = self.optimizers()
        opt_g, opt_d = optimizers if isinstance(optimizers, list) else (optimizers, None)
        for opt, base_lr in ((opt_g, hp.lr), (opt_d, hp.discriminator_lr or hp.lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base_lr * self.lr_factor()
        adversarial = self.adversarial_on()
        with frozen(self.discriminator if adversarial else None):
            step = self.generator_step(batch, adversarial)
        self.stop_if_not_finite("generator", step.loss, step.logs, batch_idx)
        self.optimizer_step_of(opt_g, step.loss, hp.grad_clip)
        logs = dict(step.logs)
        if adversarial:
            d_loss, d_logs = self.discriminator_loss(_detached(step.real), _detached(step.fake))
            self.stop_if_not_finite("discriminator", d_loss, d_logs, batch_idx)
            self.optimizer_step_of(opt_d, d_loss)
            logs.update(d_logs)
        batch_size = self.batch_size_of(batch)
        self.log("train/loss", step.loss.detach(), on_step=True, prog_bar=True, batch_size=batch_size)
        shown = {f"train/{k}": v for k, v in logs.items() if k in self.progress_bar_logs}
        self.log_dict(shown, on_step=True, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in logs.items() if k not in self.progress_bar_logs}, on_step=True,
                      batch_size=batch_size)
        self.batches_seen += 1
        if self.ema is not None:
            self.ema.update(self.tokenizer)
        return step.loss.detach()

    def stop_if_not_finite(self, which: str, loss: torch.Tensor, logs: dict, batch_idx: int) -> None:
        """Raise TrainingDiverged, naming the step, the batch and the terms at fault, when `loss` is NaN
        or infinite: before the optimizer step, so the weights and every checkpoint stay those of the
        last good step (LastCheckpoint writes nothing on an error)."""
        if bool(torch.isfinite(loss.detach()).all()):
            return
        from zoo.errors import TrainingDiverged

        bad = [k for k, v in logs.items() if isinstance(v, torch.Tensor) and not bool(torch.isfinite(v).all())]
        terms = f" (non-finite terms: {', '.join(bad)})" if bad else ""
        saved = [c.last_model_path for c in self.trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")]
        kept = (f"the last good checkpoint, {saved[0]}, is kept" if saved else "no checkpoint had been written yet")
        raise TrainingDiverged(
            f"the {which} loss is {float(loss.detach().float().reshape(-1)[0])} at step {self.trainer.global_step} "
            f"(batch {batch_idx} of epoch {self.trainer.current_epoch}, batch {int(self.batches_seen)} of the run)"
            f"{terms}; training stopped and {kept}: lower the learning rate, set grad_clip, or check that batch's "
            "data, then resume with --ckpt_path last.")

    def optimizer_step_of(self, optimizer, loss: torch.Tensor, grad_clip: float | None = None) -> None:
        """zero_grad, backward (through Lightning, so precision and DDP apply), optional norm clipping, step."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.trained_tokenizer().save_pretrained(self.hparams.export_dir)

    # ---- what a regime implements ---------------------------------------------------------------
    def generator_step(self, batch, adversarial: bool) -> GeneratorStep:
        raise NotImplementedError

    def discriminator_loss(self, real, fake) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    @staticmethod
    def batch_size_of(batch) -> int:
        """Items in a batch, for Lightning's per-epoch averages."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        return int(first.shape[0])


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value
