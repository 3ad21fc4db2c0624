"""Image-tokenizer reconstruction training, shared by the 1D image tokenizers (TiTok, One-D-Piece).

Generator loss = reconstruction (L1 or L2) + perceptual + quantizer aux loss + adaptive-weighted
hinge GAN loss (PatchGAN discriminator, from `discriminator_start` batches on). Optimizers, warm-up,
clipping, the weight average and resumable state come from the skeleton (`zoo.training.skeleton`).

Options of the regime, not of the model:
- `tail_token_drop` (One-D-Piece): each image keeps only its first k tokens, k drawn uniformly in
  [min_kept_tokens, num_tokens], so that information gathers at the head and any prefix decodes.
- `two_stage` (TiTok's recipe for L-32 / B-64 / S-128): "proxy_codes" is stage 1, where the
  tokenizer's decoder learns to predict the codes that a frozen VQGAN (`proxy_tokenizer`) gives the
  image (cross-entropy, no pixel losses); "decoder_finetune" is stage 2, where every parameter
  outside `trainable_prefixes` is frozen and the decoder is trained on pixels with all the losses.

The tokenizer's training forward is `tokenizer(x, num_tokens=None | int | (B,) long)` ->
TokenizerOutput(reconstruction, codes, aux_loss), images in [0, 1]; two-stage models also give
`tokenizer.proxy_code_logits(x, num_tokens)`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.blocks.discriminators_image import NLayerDiscriminator
from zoo.errors import TokenizerError
from zoo.eval.image_metrics import codebook_usage_of, psnr, ssim
from zoo.losses.adversarial import (LeCamRegularizer, adaptive_generator_weight, hinge_discriminator_loss,
                                    hinge_generator_loss)
from zoo.losses.perceptual import build_perceptual_loss
from zoo.tokenizer import ImageTokenizer
from zoo.training.skeleton import AdversarialTraining, GeneratorStep

TWO_STAGE = (None, "proxy_codes", "decoder_finetune")


class GeneratorLosses(NamedTuple):
    """The generator's losses before the adversarial term."""

    total: torch.Tensor
    reconstruction: torch.Tensor  # weighted L1/L2 + perceptual: what the adaptive weight balances
    perceptual: torch.Tensor
    quantizer: torch.Tensor


class ImageReconstruction(AdversarialTraining):
    """LightningModule for image-tokenizer reconstruction training (see the module docstring);
    the skeleton's arguments (tokenizer, optimisation, EMA, export) are accepted as keywords."""

    unsaved_arguments = ("perceptual_backbone",)
    progress_bar_logs = ("reconstruction", "proxy_ce", "d_loss")

    def __init__(
        self,
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
        adaptive_discriminator_weight: bool = True,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
        discriminator_norm: str = "group",
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.999,
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
        **skeleton,
    ):
        if reconstruction_loss not in ("l1", "l2"):
            raise TokenizerError(f"reconstruction_loss must be 'l1' or 'l2', got {reconstruction_loss!r}.")
        if two_stage not in TWO_STAGE:
            raise TokenizerError(f"two_stage must be one of {TWO_STAGE}, got {two_stage!r}.")
        super().__init__(**skeleton)
        name = self.hparams.tokenizer
        if not isinstance(self.tokenizer, ImageTokenizer):
            raise TokenizerError(f"{name!r} is not an image tokenizer; this module trains image tokenizers.")
        n = self.tokenizer.num_tokens
        if tail_token_drop and not 1 <= min_kept_tokens <= n:
            raise TokenizerError(f"min_kept_tokens must lie in [1, {n}] (the tokenizer's num_tokens), got {min_kept_tokens}.")

        self.proxy = None
        if two_stage == "proxy_codes":
            if proxy_tokenizer is None:
                raise TokenizerError("two_stage='proxy_codes' needs proxy_tokenizer: the name or folder of the frozen VQGAN whose codes are the targets.")
            if getattr(self.tokenizer.config, "decoder_output", None) != "proxy_codes":
                raise TokenizerError(f"{name!r} does not predict proxy codes (its config's decoder_output is not "
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
        self.lecam = None
        if discriminator_weight > 0 and two_stage != "proxy_codes":
            self.discriminator = NLayerDiscriminator(3, discriminator_channels, discriminator_layers, discriminator_norm)
            if lecam_weight > 0:
                self.lecam = LeCamRegularizer(lecam_decay)
        self._val_codes: list[torch.Tensor] = []
        self.train()  # zoo.create / zoo.load return eval-mode models, and Lightning keeps modules' modes

    # ---- pieces -----------------------------------------------------------------------------
    def _is_trainable(self, name: str) -> bool:
        """Whether a tokenizer parameter/module name lies under one of `trainable_prefixes`."""
        return any(name == p or name.startswith(p + ".") for p in self.hparams.trainable_prefixes)

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

    def generator_losses(self, x: torch.Tensor, out) -> GeneratorLosses:
        """Pixel, perceptual and quantizer losses of one training forward `out` against images x."""
        hp = self.hparams
        rec = out.reconstruction.float()
        pixel = F.l1_loss(rec, x) if hp.reconstruction_loss == "l1" else F.mse_loss(rec, x)
        perceptual = self.perceptual(rec, x) if self.perceptual is not None else rec.new_zeros(())
        reconstruction = hp.reconstruction_weight * pixel + hp.perceptual_weight * perceptual
        quantizer = out.aux_loss.float()
        return GeneratorLosses(reconstruction + hp.quantizer_weight * quantizer, reconstruction, perceptual, quantizer)

    def train(self, mode: bool = True) -> "ImageReconstruction":
        super().train(mode)
        if mode and self.hparams.two_stage == "decoder_finetune":
            # frozen parts stay in eval mode: the quantizer must not move its codebook, dropout stays off
            for name, module in self.tokenizer.named_modules():
                if name and not self._is_trainable(name) and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        if self.proxy is not None:
            self.proxy.eval()
        return self

    # ---- the skeleton's steps -----------------------------------------------------------------
    def generator_step(self, batch, adversarial: bool) -> GeneratorStep:
        hp = self.hparams
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, 3, H, W) in [0, 1]
        kept = self.sample_kept_tokens(x.shape[0])
        if hp.two_stage == "proxy_codes":
            return self._proxy_code_step(x, kept)
        out = self.tokenizer(x, num_tokens=kept)
        losses = self.generator_losses(x, out)
        total = losses.total
        logs = {"reconstruction": losses.reconstruction.detach(), "perceptual": losses.perceptual.detach(),
                "quantizer": losses.quantizer.detach()}
        fake = out.reconstruction.float()
        if adversarial:
            g_loss = hinge_generator_loss(self.discriminator(fake))
            d_weight = (adaptive_generator_weight(losses.reconstruction, g_loss, self.tokenizer.last_decoder_layer())
                        if hp.adaptive_discriminator_weight else torch.ones((), device=x.device))
            total = total + hp.discriminator_weight * d_weight * g_loss
            logs |= {"g_loss": g_loss.detach(), "d_weight": d_weight}
        if kept is not None:
            logs["kept_tokens"] = kept.float().mean()
        return GeneratorStep(total, logs, real=x, fake=fake)

    def discriminator_loss(self, real, fake):
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        d_loss = hinge_discriminator_loss(real_logits, fake_logits)
        if self.lecam is not None:
            d_loss = d_loss + self.hparams.lecam_weight * self.lecam(real_logits, fake_logits)
        return d_loss, {"d_loss": d_loss.detach(), "logits_real": real_logits.detach().mean(),
                        "logits_fake": fake_logits.detach().mean()}

    def _proxy_code_step(self, x: torch.Tensor, kept: torch.Tensor | None) -> GeneratorStep:
        """TiTok stage 1: cross-entropy of the predicted proxy-code logits against the frozen
        VQGAN's codes of the same image."""
        with torch.no_grad():
            target = self.proxy.encode(x).codes.long()  # (B, M)
        logits, aux_loss = self.tokenizer.proxy_code_logits(x, kept)  # (B, K, G, G)
        if target.shape != (x.shape[0], logits.shape[-2] * logits.shape[-1]):
            raise TokenizerError(f"the proxy tokenizer gives codes {tuple(target.shape)}, the tokenizer predicts "
                                 f"{logits.shape[-2]}x{logits.shape[-1]} proxy positions; they must match.")
        if int(target.max()) >= logits.shape[1]:
            raise TokenizerError(f"the proxy tokenizer's codes reach {int(target.max())}, beyond the tokenizer's "
                                 f"{logits.shape[1]} proxy codes (proxy_codebook_size).")
        ce = F.cross_entropy(logits.flatten(2).float(), target)
        total = ce + self.hparams.quantizer_weight * aux_loss.float()
        return GeneratorStep(total, {"proxy_ce": ce.detach()})

    # ---- validation -------------------------------------------------------------------------
    def checkpoint_metric(self) -> tuple[str, str]:
        """val/psnr, higher is better (stage 1 of two-stage TiTok: val/proxy_accuracy)."""
        return ("val/proxy_accuracy" if self.hparams.two_stage == "proxy_codes" else "val/psnr"), "max"

    def on_validation_epoch_start(self) -> None:
        self._val_codes = []

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        model = self.trained_tokenizer().eval()
        if not self.codebooks_ready():
            return None
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.hparams.two_stage == "proxy_codes":
            # stage 1 trains no pixel path: report how often the predicted proxy code is right
            logits, _ = model.proxy_code_logits(x)
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
