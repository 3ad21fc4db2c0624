"""Adaptive-length image tokenizer training: KARL's halting objective (Duggal et al., 2025) and ALIT's
recurrent rollouts (Duggal et al., ICLR 2025), over a base tokenizer that stage 1 keeps frozen.

KARL.

KARL learns to halt tokens the way upside-down reinforcement learning learns a policy: it is told the
outcome it achieved and learns the action that led there. Every batch makes two passes.

1. Estimate the image's complexity. The encoder reads the first T latent tokens, T drawn from the
   multiples of `token_count_step` (up to 23/16 of the budget, below), conditioned on a target error drawn from a
   distribution over the bins (at first uniform over bins <= `initial_target_max`; each batch scales
   the bins at or above the lowest error reached by `target_decay`, so targets move toward what the
   model cannot yet reach). Every token is told to stay (halting BCE towards 0), the reconstruction is
   trained, and each image's achieved L1 error is measured (no gradient).
2. Learn to halt. The encoder reads the full budget K, conditioned on the bin of the error pass 1
   achieved: with T tokens the image reached that error, so the last K - T tokens are told to halt
   (BCE towards 1) and the first T to stay; the decoder does not see the tokens the head halts (hard
   threshold), and this reconstruction is trained too. With probability `condition_jitter`, a pass
   that used every token is conditioned on a random stricter bin (still every token), and a pass that
   used the fewest tokens on a random looser one (still the fewest), as in the official code.

The two stages:
- "latent_distillation": the base tokenizer is frozen and no pixel is decoded for the gradient: the
  decoder learns the VQGAN's codes (label-smoothed cross-entropy plus the squared error of the
  softmax-weighted code embedding against the true code's) or the VAE's latents (squared error).
- "finetune": every parameter trains on pixels through the base decoder with ImageReconstruction's
  losses (L1/L2, perceptual, quantizer, adaptive-weighted hinge GAN). The official code keeps one
  discriminator per 32-token bucket; here one discriminator sees both passes' reconstructions.

T is drawn up to 23/16 of the budget, as the official draws up to 368 for K = 256: a draw past K is a
pass in which every token stays. One deviation: the looser-target jitter applies to the fewest tokens
drawn (the official applies it at T = 32, its second-smallest draw).

ALIT. Every batch runs the recurrent encoder's rollouts (32 tokens more at each). Stage
"latent_distillation" trains every rollout's output at once against the frozen base's targets,
weighted by `rollout_weights` (the official 2.5, 2, 1.5, 1.25, then 1: the first rollouts, which must
say the most with the fewest tokens, weigh more; the VQGAN's cross-entropy is weighted, its code error
is not). Stage "finetune" trains, on pixels with ImageReconstruction's losses, one rollout per batch,
cycling through them as the official code does (one discriminator for all, where it keeps one per
rollout).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import TokenizerError
from zoo.eval.image_metrics import psnr
from zoo.models.image.alit import ALIT
from zoo.models.image.karl import KARL, QUALITY_BINS, TOKEN_SLOTS, bin_quality, halted
from zoo.training.image_recon import ImageReconstruction
from zoo.training.skeleton import GeneratorStep

STAGES = ("latent_distillation", "finetune")


class PixelPass:
    """What ImageReconstruction.generator_losses reads of a training forward."""

    def __init__(self, reconstruction: torch.Tensor, aux_loss: torch.Tensor):
        self.reconstruction, self.aux_loss = reconstruction, aux_loss


def distillation_terms(decoded: torch.Tensor, target: torch.Tensor, codebook: torch.Tensor | None,
                       label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's terms of a decoder output against the frozen base's targets. VQGAN (target: codes
    (B, h*w) long): the label-smoothed cross-entropy of the code logits (B, h*w, K), and the squared error of
    the softmax-weighted code embedding against the true code's. VAE (target: latents): (0, squared error)."""
    if target.dtype != torch.long:
        return decoded.new_zeros(()), F.mse_loss(decoded.float(), target.float())
    logits = decoded.float()
    ce = F.cross_entropy(logits.transpose(1, 2), target, label_smoothing=label_smoothing)
    codebook = codebook.detach().float()
    return ce, F.mse_loss(logits.softmax(dim=-1) @ codebook, codebook[target])


class BaseTokenizerStages(ImageReconstruction):
    """What KARL and ALIT training share: the stage, a base tokenizer frozen (and kept in eval mode) in
    stage 1, stage 1's targets, and stage 2's pixel (+ GAN) losses of one reconstruction."""

    tokenizer_class: type = nn.Module

    def __init__(self, stage: str = "latent_distillation", label_smoothing: float = 0.1, **image_reconstruction):
        if stage not in STAGES:
            raise TokenizerError(f"stage must be one of {STAGES}, got {stage!r}.")
        super().__init__(**image_reconstruction)
        if not isinstance(self.tokenizer, self.tokenizer_class):
            name = self.tokenizer_class.__name__
            raise TokenizerError(f"{self.hparams.tokenizer!r} is not a {name} tokenizer; "
                                 f"{type(self).__name__} trains {name}.")
        if stage == "latent_distillation":
            for module in self.tokenizer.base_tokenizer_modules():
                module.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        # (ImageReconstruction calls train() before __init__ here has checked the tokenizer's family)
        if mode and self.hparams.stage == "latent_distillation" and isinstance(self.tokenizer, self.tokenizer_class):
            for module in self.tokenizer.base_tokenizer_modules():  # a frozen base keeps its eval-mode behaviour
                module.eval()
        return self

    def distillation_terms(self, decoded: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """distillation_terms with the tokenizer's VQGAN codebook and the regime's label smoothing."""
        return distillation_terms(decoded, target, self.tokenizer.base_codebook, self.hparams.label_smoothing)

    def pixel_losses(self, x: torch.Tensor, reconstruction: torch.Tensor, aux_loss: torch.Tensor,
                     adversarial: bool) -> tuple[torch.Tensor, dict]:
        """Stage 2: ImageReconstruction's losses of one reconstruction, plus the adaptive-weighted GAN term."""
        from zoo.losses.adversarial import adaptive_generator_weight, hinge_generator_loss

        hp = self.hparams
        losses = self.generator_losses(x, PixelPass(reconstruction, aux_loss))
        total, logs = losses.total, {"reconstruction": losses.reconstruction.detach()}
        if adversarial:
            g_loss = hinge_generator_loss(self.discriminator(reconstruction.float()))
            d_weight = (adaptive_generator_weight(losses.reconstruction, g_loss, self.tokenizer.last_decoder_layer())
                        if hp.adaptive_discriminator_weight else torch.ones((), device=x.device))
            total = total + hp.discriminator_weight * d_weight * g_loss
            logs |= {"g_loss": g_loss.detach(), "d_weight": d_weight}
        return total, logs

    def checkpoint_metric(self) -> tuple[str, str]:
        """val/psnr at the full budget, higher is better."""
        return "val/psnr", "max"

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """PSNR and L1 at the full budget; at each of val_qualities, the tokens chosen and the error reached."""
        model = self.trained_tokenizer().eval()
        if not self.codebooks_ready():
            return None
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        b = x.shape[0]
        tokens = model.encode(x, num_tokens=model.num_tokens)
        recon = model.decode(tokens).float()
        self.log_dict({"val/psnr": psnr(recon, x).mean().float(), "val/l1": F.l1_loss(recon, x)}, prog_bar=True,
                      batch_size=b)
        for q in self.hparams.val_qualities or ():
            chosen = model.encode(x, quality=float(q))
            error = (model.decode(chosen).float() - x).abs().flatten(1).mean(dim=1)
            self.log_dict({f"val/tokens@{q}": chosen.lengths.float().mean(), f"val/l1@{q}": error.mean()}, batch_size=b)
        if model.quantizer is not None:
            self._val_codes.append(tokens.codes.detach().cpu())


class KARLTraining(BaseTokenizerStages):
    """LightningModule for KARL (see the module docstring); the stage, ImageReconstruction's loss arguments
    and the skeleton's are accepted as keywords."""

    progress_bar_logs = ("reconstruction", "halting", "achieved_l1", "d_loss")
    tokenizer_class = KARL

    def __init__(
        self,
        token_count_step: int = 16,
        max_drawn_tokens: int | None = None,
        initial_target_max: float = 0.04,
        target_decay: float = 0.99,
        condition_jitter: float = 0.45,
        halting_weight: float = 1.0,
        code_loss_weight: float = 1.0,
        val_qualities: tuple[float, ...] = (0.05, 0.1, 0.2),
        **stages,
    ):
        super().__init__(**stages)
        k = self.tokenizer.config.num_tokens
        if not 1 <= token_count_step <= k:
            raise TokenizerError(f"token_count_step must lie in [1, {k}] (the tokenizer's num_tokens), "
                                 f"got {token_count_step}.")
        # the official draws up to 368 tokens for a budget of 256: a draw past the budget is a pass 1 whose
        # every token stays and whose error pass 2 asks for with the whole budget
        drawn = k * 23 // 16 if max_drawn_tokens is None else max_drawn_tokens
        if not k <= drawn <= TOKEN_SLOTS:
            raise TokenizerError(f"max_drawn_tokens must lie in [{k}, {TOKEN_SLOTS}] (the budget to the learned token "
                                 f"slots), got {drawn}.")
        if not 0.0 <= condition_jitter <= 1.0:
            raise TokenizerError(f"condition_jitter is a probability in [0, 1], got {condition_jitter}.")
        bins = torch.tensor(QUALITY_BINS)
        start = (bins <= initial_target_max).float()
        if not bool(start.any()):
            raise TokenizerError(f"initial_target_max {initial_target_max} lies below every target bin "
                                 f"(the smallest is {QUALITY_BINS[0]}).")
        # the distribution pass 1 draws its target bin from: state of the training, checkpointed with it
        self.register_buffer("target_probability", start / start.sum())
        self.register_buffer("token_counts", torch.arange(token_count_step, drawn + 1, token_count_step))

    # ---- pieces -----------------------------------------------------------------------------------

    def halting_loss(self, logits: torch.Tensor, kept: int) -> torch.Tensor:
        """BCE of halting logits (B, k): the first `kept` tokens stay (0), the rest halt (1); each part averaged
        on its own, as the official code does."""
        loss = F.binary_cross_entropy_with_logits(logits[:, :kept].float(), torch.zeros_like(logits[:, :kept].float()))
        if kept < logits.shape[1]:
            rest = logits[:, kept:].float()
            loss = loss + F.binary_cross_entropy_with_logits(rest, torch.ones_like(rest))
        return loss

    def update_target_distribution(self, achieved: torch.Tensor) -> None:
        """Scale the drawn-target probability of every bin at or above the lowest error reached (B,) by target_decay."""
        reached = torch.tensor(QUALITY_BINS, device=achieved.device) >= achieved.min()
        self.target_probability[reached] *= self.hparams.target_decay
        self.target_probability /= self.target_probability.sum()

    def halting_pass_bins(self, achieved: torch.Tensor, kept: int) -> torch.Tensor:
        """Pass 2's target bins (B,): the bins of the errors pass 1 achieved, jittered (see the module docstring)."""
        bins = bin_quality(achieved)
        if torch.rand(()).item() >= self.hparams.condition_jitter:
            return bins
        u = torch.rand(bins.shape, device=bins.device)
        last = len(QUALITY_BINS) - 1
        if kept >= self.tokenizer.config.num_tokens:  # every token was used: a stricter target still needs all
            return 1 + (u * bins.float()).floor().long()
        if kept == int(self.token_counts[0]):  # the fewest were used: a looser target needs no more
            return (bins.float() + u * (last - bins.float())).clamp(max=last).long()
        return bins

    def pass_losses(self, x: torch.Tensor, out, target: torch.Tensor, adversarial: bool) -> tuple[torch.Tensor, dict]:
        """Reconstruction (+ GAN) loss of one pass, and its logs."""
        hp = self.hparams
        if hp.stage == "latent_distillation":
            ce, code = self.distillation_terms(out.decoded, target)
            loss = ce + hp.code_loss_weight * code + hp.quantizer_weight * out.aux_loss.float()
            return loss, {"reconstruction": loss.detach()}
        return self.pixel_losses(x, out.reconstruction, out.aux_loss, adversarial)

    # ---- the skeleton's step ----------------------------------------------------------------------
    def generator_step(self, batch, adversarial: bool) -> GeneratorStep:
        hp = self.hparams
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, 3, H, W) in [0, 1]
        b, model = x.shape[0], self.tokenizer
        distill = hp.stage == "latent_distillation"
        if distill:
            with torch.no_grad():
                base = model.base_pass(x)
        else:
            base = model.base_pass(x)
        full = model.config.num_tokens

        # pass 1: T tokens at a drawn target, all told to stay; the error reached is measured
        kept = int(self.token_counts[torch.randint(len(self.token_counts), ())])
        target_bins = torch.multinomial(self.target_probability, b, replacement=True)
        first = model(x, kept, target_bins, base=base, decode_pixels=not distill)
        loss_1, logs_1 = self.pass_losses(x, first, base.target, adversarial)
        halting_1 = self.halting_loss(first.halting_logits, kept)
        with torch.no_grad():
            reconstruction = first.reconstruction
            if reconstruction is None:  # stage 1 decodes no pixel for the gradient: only to measure the error
                reconstruction = model.base_decode(first.decoded)
            achieved = (reconstruction.float() - x).abs().flatten(1).mean(dim=1)  # (B,)
            self.update_target_distribution(achieved)

        # pass 2: the full budget at the error pass 1 reached; the tokens past T are told to halt
        second = model(x, full, self.halting_pass_bins(achieved, kept), hide_halted=True, base=base,
                       decode_pixels=not distill)
        loss_2, logs_2 = self.pass_losses(x, second, base.target, adversarial)
        halting_2 = self.halting_loss(second.halting_logits, min(kept, full))

        halting = halting_1 + halting_2
        total = loss_1 + loss_2 + hp.halting_weight * halting
        logs = {"reconstruction": (logs_1["reconstruction"] + logs_2["reconstruction"]) / 2,
                "halting": halting.detach(),
                "achieved_l1": achieved.mean(), "drawn_tokens": torch.tensor(float(kept)),
                "halted_tokens": halted(second.halting_logits.detach()).float().sum(dim=1).mean()}
        if adversarial:
            logs |= {"g_loss": (logs_1["g_loss"] + logs_2["g_loss"]) / 2, "d_weight": logs_2["d_weight"]}
            fake = torch.cat([first.reconstruction, second.reconstruction]).float()
            return GeneratorStep(total, logs, real=torch.cat([x, x]), fake=fake)
        return GeneratorStep(total, logs)


class ALITTraining(BaseTokenizerStages):
    """LightningModule for ALIT (see the module docstring); the stage, ImageReconstruction's loss arguments
    and the skeleton's are accepted as keywords."""

    progress_bar_logs = ("reconstruction", "d_loss")

    tokenizer_class = ALIT

    def __init__(
        self,
        rollout_weights: tuple[float, ...] = (2.5, 2.0, 1.5, 1.25, 1.0, 1.0, 1.0, 1.0),
        val_qualities: tuple[float, ...] = (0.05, 0.1, 0.2),
        **stages,
    ):
        super().__init__(**stages)
        rollouts = self.tokenizer.config.max_rollouts
        if len(rollout_weights) != rollouts or any(w < 0 for w in rollout_weights):
            raise TokenizerError(f"rollout_weights needs one non-negative weight per rollout ({rollouts}), got "
                                 f"{list(rollout_weights)}.")

    def generator_step(self, batch, adversarial: bool) -> GeneratorStep:
        hp = self.hparams
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, 3, H, W) in [0, 1]
        model = self.tokenizer
        if hp.stage == "latent_distillation":
            out = model.rollout_outputs(x)
            total, logs = x.new_zeros(()), {}
            for r, (weight, rollout) in enumerate(zip(hp.rollout_weights, out.rollouts), start=1):
                ce, code = self.distillation_terms(rollout.logits, out.targets)
                weighted = (weight * ce + code) if out.targets.dtype == torch.long else weight * code
                total = total + weighted + hp.quantizer_weight * rollout.aux_loss.float()
                logs[f"reconstruction@{rollout.num_tokens}"] = weighted.detach()
            logs["reconstruction"] = total.detach() / len(out.rollouts)
            return GeneratorStep(total, logs)
        # one rollout per batch, in turn: the encoder runs up to it and decodes there only (so, as in the
        # official step, no 2D token is masked before it)
        rollout = int(self.batches_seen) % model.config.max_rollouts + 1
        (last,) = model.rollout_outputs(x, rollouts=rollout, every_rollout=False).rollouts
        reconstruction = model.base_decode(last.logits)
        total, logs = self.pixel_losses(x, reconstruction, last.aux_loss, adversarial)
        logs["rollout_tokens"] = torch.tensor(float(last.num_tokens))
        return GeneratorStep(total, logs, real=x, fake=reconstruction.float())
