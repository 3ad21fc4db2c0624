"""Image-tokenizer reconstruction training, shared by the 1D image tokenizers (TiTok, One-D-Piece).

Generator loss = reconstruction (L1 or L2) + perceptual + quantizer aux loss + adaptive-weighted
hinge GAN loss (PatchGAN discriminator, switched on after `discriminator_start` steps). The
discriminator has its own optimizer (manual optimization). An EMA copy of the tokenizer is kept
and used for validation and export.

Options of the regime, not of the model:
- `tail_token_drop` (One-D-Piece): each image keeps only its first k tokens, k drawn uniformly in
  [min_kept_tokens, num_tokens], so that information gathers at the head and any prefix decodes.
- `two_stage` (TiTok's recipe for L-32 / B-64 / S-128): "proxy_codes" is stage 1, where the
  tokenizer's decoder learns to predict the codes that a frozen VQGAN (`proxy_tokenizer`) gives the
  image (cross-entropy, no pixel losses); "decoder_finetune" is stage 2, where every parameter
  outside `trainable_prefixes` is frozen and the decoder is trained on pixels with all the losses.

Steps: `trainer.global_step` counts optimizer steps, i.e. two per batch once the discriminator
trains; warmup and `discriminator_start` count batches (`self.batches_seen`).
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn

import zoo
from zoo.blocks.discriminators_image import NLayerDiscriminator
from zoo.errors import TokenizerError
from zoo.eval.image_metrics import codebook_usage_of, psnr, ssim
from zoo.losses.adversarial import (LeCamRegularizer, adaptive_generator_weight, hinge_discriminator_loss,
                                    hinge_generator_loss)
from zoo.losses.perceptual import build_perceptual_loss
from zoo.tokenizer import ImageTokenizer, Tokenizer
from zoo.training.common import build_tokenizer, codebooks_ready, optimizer_step

TWO_STAGE = (None, "proxy_codes", "decoder_finetune")


class GeneratorLosses(NamedTuple):
    total: torch.Tensor
    reconstruction: torch.Tensor  # weighted L1/L2 + perceptual: what the adaptive weight balances
    perceptual: torch.Tensor
    quantizer: torch.Tensor


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
        t = int(self.updates)
        decay = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1


class ImageReconstruction(LightningModule):
    """LightningModule for image-tokenizer reconstruction training (see the module docstring).

    The tokenizer's training forward is `tokenizer(x, num_tokens=None | int | (B,) long)` ->
    TokenizerOutput(reconstruction, codes, aux_loss), images in [0, 1]."""

    def __init__(
        self,
        tokenizer: str,
        tokenizer_overrides: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint: str | None = None,
        # optimisation
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 1e-4,
        discriminator_lr: float | None = None,
        warmup_steps: int = 0,
        grad_clip: float | None = 1.0,
        # generator losses
        reconstruction_loss: str = "l1",
        reconstruction_weight: float = 1.0,
        perceptual_weight: float = 0.0,
        perceptual_backbone: str | nn.Module = "vgg16",
        perceptual_backbone_weights: str | None = None,
        perceptual_linear_weights: str | None = None,
        quantizer_weight: float = 1.0,
        # adversarial
        discriminator_weight: float = 0.0,
        discriminator_start: int = 0,
        adaptive_discriminator_weight: bool = True,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
        discriminator_norm: str = "group",
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.999,
        # weights average
        ema_decay: float | None = 0.999,
        ema_warmup: bool = True,
        # One-D-Piece's tail token drop
        tail_token_drop: bool = False,
        tail_drop_probability: float = 1.0,
        min_kept_tokens: int = 1,
        tail_drop_per_image: bool = False,
        # TiTok's two-stage training
        two_stage: str | None = None,
        proxy_tokenizer: str | None = None,
        proxy_checkpoint: str | None = None,
        trainable_prefixes: tuple[str, ...] = ("decoder", "pixel_decoder"),
        # validation
        val_token_counts: tuple[int, ...] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["perceptual_backbone"] if isinstance(perceptual_backbone, nn.Module) else None)
        self.automatic_optimization = False
        if reconstruction_loss not in ("l1", "l2"):
            raise TokenizerError(f"reconstruction_loss must be 'l1' or 'l2', got {reconstruction_loss!r}.")
        if two_stage not in TWO_STAGE:
            raise TokenizerError(f"two_stage must be one of {TWO_STAGE}, got {two_stage!r}.")

        self.tokenizer = build_tokenizer(tokenizer, tokenizer_overrides, pretrained, checkpoint)
        if not isinstance(self.tokenizer, ImageTokenizer):
            raise TokenizerError(f"{tokenizer!r} is not an image tokenizer; this module trains image tokenizers.")
        n = self.tokenizer.num_tokens
        if tail_token_drop and not 1 <= min_kept_tokens <= n:
            raise TokenizerError(f"min_kept_tokens must lie in [1, {n}] (the tokenizer's num_tokens), got {min_kept_tokens}.")

        self.proxy = None
        if two_stage == "proxy_codes":
            if proxy_tokenizer is None:
                raise TokenizerError("two_stage='proxy_codes' needs proxy_tokenizer: the name or folder of the frozen VQGAN whose codes are the targets.")
            if getattr(self.tokenizer.config, "decoder_output", None) != "proxy_codes":
                raise TokenizerError(f"{tokenizer!r} does not predict proxy codes (its config's decoder_output is not "
                                     "'proxy_codes'); two_stage='proxy_codes' is for two-stage TiTok models.")
            self.proxy = zoo.load(proxy_tokenizer, checkpoint=proxy_checkpoint).requires_grad_(False).eval()
        if two_stage == "decoder_finetune":
            trainable = [name for name, _ in self.tokenizer.named_parameters() if self._is_trainable(name)]
            if not trainable:
                raise TokenizerError(f"no tokenizer parameter lies under {tuple(trainable_prefixes)}; check trainable_prefixes.")
            for name, p in self.tokenizer.named_parameters():
                p.requires_grad_(self._is_trainable(name))

        self.perceptual = None
        if perceptual_weight > 0 and two_stage != "proxy_codes":
            self.perceptual = build_perceptual_loss(perceptual_backbone, perceptual_backbone_weights, perceptual_linear_weights)
        self.discriminator = self.lecam = None
        if discriminator_weight > 0 and two_stage != "proxy_codes":
            self.discriminator = NLayerDiscriminator(3, discriminator_channels, discriminator_layers, discriminator_norm)
            if lecam_weight > 0:
                self.lecam = LeCamRegularizer(lecam_decay)
        self.ema = EMA(self.tokenizer, ema_decay, ema_warmup) if ema_decay else None
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self._val_codes: list[torch.Tensor] = []
        self.train()  # zoo.create / zoo.load return eval-mode models, and Lightning keeps modules' modes

    def on_train_start(self) -> None:
        self.train()

    # ---- pieces -----------------------------------------------------------------------------
    def _is_trainable(self, name: str) -> bool:
        """Whether a tokenizer parameter/module name lies under one of `trainable_prefixes`."""
        return any(name == p or name.startswith(p + ".") for p in self.hparams.trainable_prefixes)

    def trained_tokenizer(self) -> Tokenizer:
        """The tokenizer to evaluate and export: the EMA copy when EMA is on."""
        return self.ema.model if self.ema is not None else self.tokenizer

    def sample_kept_tokens(self, batch_size: int) -> torch.Tensor | None:
        """(B,) kept token counts for tail token drop, or None (all tokens)."""
        hp = self.hparams
        if not hp.tail_token_drop:
            return None
        n = self.tokenizer.num_tokens
        # One-D-Piece draws one length per batch; per image is an option
        draws = batch_size if hp.tail_drop_per_image else 1
        kept = torch.randint(hp.min_kept_tokens, n + 1, (draws,), device=self.device)
        full = torch.rand(draws, device=self.device) >= hp.tail_drop_probability
        return torch.where(full, torch.full_like(kept, n), kept).expand(batch_size).clone()

    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight is measured on: the tokenizer's `last_layer` when it
        names one, else its last trainable matrix/conv weight in registration order."""
        named = getattr(self.tokenizer, "last_layer", None)
        if isinstance(named, torch.Tensor):
            return named
        weights = [p for p in self.tokenizer.parameters() if p.requires_grad and p.ndim >= 2]
        return weights[-1]

    def _lr_factor(self) -> float:
        warmup = self.hparams.warmup_steps
        return min(1.0, (int(self.batches_seen) + 1) / warmup) if warmup > 0 else 1.0

    def generator_losses(self, x: torch.Tensor, out) -> GeneratorLosses:
        hp = self.hparams
        rec = out.reconstruction.float()
        pixel = F.l1_loss(rec, x) if hp.reconstruction_loss == "l1" else F.mse_loss(rec, x)
        perceptual = self.perceptual(rec, x) if self.perceptual is not None else rec.new_zeros(())
        reconstruction = hp.reconstruction_weight * pixel + hp.perceptual_weight * perceptual
        quantizer = out.aux_loss.float()
        return GeneratorLosses(reconstruction + hp.quantizer_weight * quantizer, reconstruction, perceptual, quantizer)

    # ---- training ---------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.tokenizer.parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if self.discriminator is None:
            return opt_g
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=hp.discriminator_lr or hp.lr,
                                  betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        return [opt_g, opt_d]

    def train(self, mode: bool = True) -> "ImageReconstruction":
        super().train(mode)
        if mode and self.hparams.two_stage == "decoder_finetune":
            # frozen parts stay in eval mode: the quantizer must not move its codebook, dropout stays off
            for name, module in self.tokenizer.named_modules():
                if name and not self._is_trainable(name) and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        if self.ema is not None:
            self.ema.model.eval()
        if self.proxy is not None:
            self.proxy.eval()
        return self

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        hp = self.hparams
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, 3, H, W) in [0, 1]
        optimizers = self.optimizers()
        opt_g, opt_d = (optimizers if isinstance(optimizers, list) else (optimizers, None))
        for opt in (opt_g, opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = (hp.discriminator_lr or hp.lr if opt is opt_d else hp.lr) * self._lr_factor()

        kept = self.sample_kept_tokens(x.shape[0])
        if hp.two_stage == "proxy_codes":
            loss = self._proxy_code_step(x, kept, opt_g)
            self._after_step()
            return loss

        out = self.tokenizer(x, num_tokens=kept)
        losses = self.generator_losses(x, out)
        total = losses.total
        gan_on = self.discriminator is not None and int(self.batches_seen) >= hp.discriminator_start
        if gan_on:
            self.discriminator.requires_grad_(False)
            g_loss = hinge_generator_loss(self.discriminator(out.reconstruction.float()))
            d_weight = (adaptive_generator_weight(losses.reconstruction, g_loss, self.last_layer())
                        if hp.adaptive_discriminator_weight else torch.ones((), device=x.device))
            total = total + hp.discriminator_weight * d_weight * g_loss
            self.discriminator.requires_grad_(True)
            self.log_dict({"train/g_loss": g_loss.detach(), "train/d_weight": d_weight}, on_step=True)
        optimizer_step(self, opt_g, total, hp.grad_clip)

        if gan_on:
            real, fake = x.detach(), out.reconstruction.detach().float()
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            d_loss = hinge_discriminator_loss(real_logits, fake_logits)
            if self.lecam is not None:
                d_loss = d_loss + hp.lecam_weight * self.lecam(real_logits, fake_logits)
            optimizer_step(self, opt_d, d_loss)
            self.log_dict({"train/d_loss": d_loss.detach(), "train/logits_real": real_logits.detach().mean(),
                           "train/logits_fake": fake_logits.detach().mean()}, on_step=True)

        self.log_dict({"train/loss": total.detach(), "train/reconstruction": losses.reconstruction.detach(),
                       "train/perceptual": losses.perceptual.detach(), "train/quantizer": losses.quantizer.detach()},
                      on_step=True, prog_bar=True)
        if kept is not None:
            self.log("train/kept_tokens", kept.float().mean(), on_step=True)
        self._after_step()
        return total.detach()

    def _proxy_code_step(self, x: torch.Tensor, kept: torch.Tensor | None, opt_g) -> torch.Tensor:
        """TiTok stage 1: cross-entropy of the predicted proxy-code logits against the frozen
        VQGAN's codes of the same image."""
        with torch.no_grad():
            target = self.proxy.encode(x).codes.long()  # (B, M)
        logits, aux_loss = proxy_code_logits(self.tokenizer, x, kept)  # (B, K, G, G)
        if target.shape != (x.shape[0], logits.shape[-2] * logits.shape[-1]):
            raise TokenizerError(f"the proxy tokenizer gives codes {tuple(target.shape)}, the tokenizer predicts "
                                 f"{logits.shape[-2]}x{logits.shape[-1]} proxy positions; they must match.")
        if int(target.max()) >= logits.shape[1]:
            raise TokenizerError(f"the proxy tokenizer's codes reach {int(target.max())}, beyond the tokenizer's "
                                 f"{logits.shape[1]} proxy codes (proxy_codebook_size).")
        ce = F.cross_entropy(logits.flatten(2).float(), target)
        total = ce + self.hparams.quantizer_weight * aux_loss.float()
        optimizer_step(self, opt_g, total, self.hparams.grad_clip)
        self.log_dict({"train/loss": total.detach(), "train/proxy_ce": ce.detach()}, on_step=True, prog_bar=True)
        return total.detach()

    def _after_step(self) -> None:
        self.batches_seen += 1
        if self.ema is not None:
            self.ema.update(self.tokenizer)

    # ---- validation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_codes = []

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        model = self.trained_tokenizer().eval()
        if not codebooks_ready(model):
            return None
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.hparams.two_stage == "proxy_codes":
            # stage 1 trains no pixel path: report how often the predicted proxy code is right
            logits, _ = proxy_code_logits(model, x, None)
            target = self.proxy.encode(x).codes.long()
            accuracy = (logits.flatten(2).argmax(1) == target).float().mean()
            self.log("val/proxy_accuracy", accuracy, prog_bar=True, batch_size=x.shape[0])
            return
        out = model(x)
        recon = out.reconstruction.float().clamp(0, 1)
        self.log_dict({"val/psnr": psnr(recon, x).mean().float(), "val/ssim": ssim(recon, x).mean().float(),
                       "val/l1": F.l1_loss(recon, x)}, prog_bar=True, batch_size=x.shape[0])
        for k in self.hparams.val_token_counts or ():
            recon_k = model(x, num_tokens=int(k)).reconstruction.float().clamp(0, 1)
            self.log(f"val/psnr@{int(k)}", psnr(recon_k, x).mean().float(), batch_size=x.shape[0])
        self._val_codes.append(out.codes.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        sizes = self.tokenizer.codebook_sizes
        if not self._val_codes or not sizes:  # nothing collected, or a continuous (VAE) bottleneck
            return
        codes = torch.cat(self._val_codes)
        layers = codes.unsqueeze(-1) if codes.ndim == 2 else codes  # (B, N, n_q)
        usage = [codebook_usage_of(layers[..., i], sizes[i]) for i in range(layers.shape[-1])]
        self.log("val/codebook_usage", sum(u.used_fraction for u in usage) / len(usage))
        self.log("val/codebook_perplexity", sum(u.perplexity for u in usage) / len(usage))
        self._val_codes = []


def proxy_code_logits(tokenizer, x: torch.Tensor, num_tokens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-stage TiTok's training pass up to its ViT decoder: (proxy-code logits (B, K, G, G),
    quantizer aux loss), keeping only the first num_tokens tokens of each image."""
    z = tokenizer.encoder(x)
    latents, _, aux_loss = tokenizer.quantizer(z)
    lengths = tokenizer.kept_lengths(num_tokens, x.shape[0])
    padding = None
    if lengths is not None:
        latents = latents[:, :int(lengths.max())]
        padding = torch.arange(latents.shape[1], device=x.device)[None] >= lengths[:, None]  # (B, n)
    return tokenizer.decoder(latents, padding), aux_loss


def tokenizer_state_from_checkpoint(state_dict: dict[str, torch.Tensor], use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The tokenizer's own state dict out of an ImageReconstruction checkpoint's `state_dict`
    (the EMA weights when present and `use_ema`), for `zoo export`."""
    prefix = "ema.model." if use_ema and any(k.startswith("ema.model.") for k in state_dict) else "tokenizer."
    state = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not state:
        raise TokenizerError("the checkpoint holds no tokenizer weights (no 'tokenizer.*' keys); was it written by ImageReconstruction?")
    return state
