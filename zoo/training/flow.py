"""Flow-decoder training (FlexTok, ReTok): rectified flow matching with nested dropout.

Each batch: the frozen VAE encodes the images; the encoder and FSQ give the registers; each
image keeps its first k registers (nested dropout, k drawn by `nested_dropout`), the rest become
the mask token; a flow time t is drawn per image (`time_sampling`: "logit_normal" is sigmoid of a
standard normal, FlexTok's default; "uniform"), the latents are noised to t * noise + (1 - t) *
latents, and the decoder's velocity is regressed on noise - latents (MSE). With probability
`guidance_dropout` an image's registers are replaced by the null condition, which is what
classifier-free guidance contrasts against at decode time.

ReTok's additions, options of this regime:
- Redundant Token Padding (`redundant_padding`): with this probability an image keeps all its
  registers instead of a random prefix, so that tail tokens are trained more often than uniform
  nested dropout allows (which trains token i only when k > i).
- Hierarchical Semantic Regularization (`semantic_terms`, zoo.training.terms.image): the decoder's
  patch features at block `feature_layer` aligned with a frozen vision teacher's, strongest for
  images decoded from short prefixes; REPA-style patch alignment is the same term at one strength.

Optimizers, warm-up, clipping, EMA and resumable state come from the skeleton; there is no
discriminator. The VAE stays frozen; `vae_folder` loads a pretrained diffusers AutoencoderKL into it
(training from scratch). Validation logs the flow loss and, for `val_token_counts`,
the latent MSE of `val_steps`-step decodes from those many tokens (lower is better).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import TokenizerError
from zoo.models.image.flextok import FlexTok
from zoo.models.image.flow_sampling import sample_rectified_flow
from zoo.training.skeleton import AdversarialTraining, GeneratorStep

NESTED_DROPOUT = ("uniform", "pow2", "none")
TIME_SAMPLING = ("logit_normal", "uniform")


class FlowDecoderTraining(AdversarialTraining):
    """LightningModule for flow-decoder tokenizers (see the module docstring); the skeleton's
    arguments (tokenizer, optimisation, EMA, export) are accepted as keywords."""

    unsaved_arguments = ("semantic_terms",)
    progress_bar_logs = ("flow", "semantic")

    def __init__(
        self,
        nested_dropout: str = "uniform",
        min_kept_tokens: int = 1,
        redundant_padding: float = 0.0,
        guidance_dropout: float = 0.2,
        time_sampling: str = "logit_normal",
        semantic_terms: list[nn.Module] | None = None,
        feature_layer: int = -1,
        train_encoder: bool = True,
        vae_folder: str | None = None,
        val_token_counts: tuple[int, ...] | None = None,
        val_steps: int = 4,
        **skeleton,
    ):
        if nested_dropout not in NESTED_DROPOUT:
            raise TokenizerError(f"nested_dropout must be one of {NESTED_DROPOUT}, got {nested_dropout!r}.")
        if time_sampling not in TIME_SAMPLING:
            raise TokenizerError(f"time_sampling must be one of {TIME_SAMPLING}, got {time_sampling!r}.")
        for name, p in (("redundant_padding", redundant_padding), ("guidance_dropout", guidance_dropout)):
            if not 0.0 <= p <= 1.0:
                raise TokenizerError(f"{name} is a probability in [0, 1], got {p}.")
        super().__init__(**skeleton)
        if not isinstance(self.tokenizer, FlexTok):
            raise TokenizerError(f"{self.hparams.tokenizer!r} is not a flow-decoder tokenizer (FlexTok); "
                                 "FlowDecoderTraining trains FlexTok-style models.")
        n, depth = self.tokenizer.num_tokens, self.tokenizer.config.decoder_depth
        if not 1 <= min_kept_tokens <= n:
            raise TokenizerError(f"min_kept_tokens must lie in [1, {n}], got {min_kept_tokens}.")
        if not -depth <= feature_layer < depth:
            raise TokenizerError(f"feature_layer must index one of the decoder's {depth} blocks, got {feature_layer}.")
        if vae_folder is not None:
            self._load_vae(vae_folder)
        self.tokenizer.vae.requires_grad_(False)
        if not train_encoder:
            self.tokenizer.encoder.requires_grad_(False)
        self.semantic_terms = nn.ModuleList(semantic_terms or [])
        for term in self.semantic_terms:
            term.bind(self.tokenizer)
        self.train()

    # ---- pieces -----------------------------------------------------------------------------
    def _load_vae(self, folder: str) -> None:
        """A pretrained diffusers AutoencoderKL folder (e.g. EPFL-VILAB/flextok_vae_c16) as the frozen VAE."""
        from zoo.hub.vae_kl import load_diffusers_vae

        vae, scaling = load_diffusers_vae(folder)
        config = self.tokenizer.config
        if abs(scaling - config.vae_scaling_factor) > 1e-6 * max(1.0, abs(scaling)):
            raise TokenizerError(f"the VAE in {folder} has scaling_factor {scaling}, the tokenizer's config "
                                 f"{config.vae_scaling_factor}; set tokenizer_overrides.vae_scaling_factor: {scaling}.")
        missing = self.tokenizer.vae.load_state_dict(vae.state_dict(), strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise TokenizerError(f"the VAE in {folder} does not fit the tokenizer's VAE layout "
                                 f"(missing {missing.missing_keys[:4]}, unexpected {missing.unexpected_keys[:4]}).")

    def sample_kept(self, batch_size: int) -> torch.Tensor:
        """(B,) registers kept per image: nested dropout, with ReTok's redundant padding."""
        hp, n = self.hparams, self.tokenizer.num_tokens
        full = torch.full((batch_size,), n, device=self.device)
        if hp.nested_dropout == "none":
            return full
        if hp.nested_dropout == "uniform":
            kept = torch.randint(hp.min_kept_tokens, n + 1, (batch_size,), device=self.device)
        else:
            powers = torch.tensor([2 ** i for i in range(n.bit_length()) if hp.min_kept_tokens <= 2 ** i <= n],
                                  device=self.device)
            kept = powers[torch.randint(len(powers), (batch_size,), device=self.device)]
        pad = torch.rand(batch_size, device=self.device) < hp.redundant_padding
        return torch.where(pad, full, kept)

    def sample_times(self, batch_size: int) -> torch.Tensor:
        """(B,) flow times in (0, 1)."""
        if self.hparams.time_sampling == "logit_normal":
            return torch.sigmoid(torch.randn(batch_size, device=self.device))
        return torch.rand(batch_size, device=self.device)

    def _layer(self) -> tuple[int, ...]:
        depth = self.tokenizer.config.decoder_depth
        return (self.hparams.feature_layer % depth,) if len(self.semantic_terms) else ()

    def checkpoint_metric(self) -> tuple[str, str]:
        """val/flow (the flow-matching loss at full length on fixed noise and times), lower is better."""
        return "val/flow", "min"

    # ---- the skeleton's steps -----------------------------------------------------------------
    def generator_step(self, batch, adversarial: bool) -> GeneratorStep:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, 3, H, W) in [0, 1]
        b = x.shape[0]
        t = self.tokenizer
        shape = (b, t.config.vae_latent_channels, t.latent_size, t.latent_size)
        unconditional = torch.rand(b, device=self.device) < self.hparams.guidance_dropout
        out = t(x, self.sample_kept(b), self.sample_times(b), torch.randn(shape, device=self.device),
                unconditional, self._layer())
        flow = F.mse_loss(out.velocity.float(), out.target.float())
        total, logs = flow, {"flow": flow.detach(), "kept_tokens": out.keep.float().mean()}
        for term in self.semantic_terms:
            value = term(out, x)
            total = total + term.weight * value
            logs[term.name] = value.detach()
        return GeneratorStep(total, logs)

    def validation_step(self, batch, batch_idx: int) -> None:
        model = self.trained_tokenizer().eval()
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        b, n = x.shape[0], model.num_tokens
        g = torch.Generator(device="cpu").manual_seed(batch_idx)
        shape = (b, model.config.vae_latent_channels, model.latent_size, model.latent_size)
        noise = torch.randn(shape, generator=g).to(self.device)
        t = torch.rand(b, generator=g).to(self.device)
        with torch.no_grad():
            out = model(x, torch.full((b,), n, device=self.device), t, noise)
            self.log("val/flow", F.mse_loss(out.velocity, out.target), prog_bar=True, batch_size=b)
            if not self.hparams.val_token_counts:
                return
            latents = model.image_latents(x)
            quantized = model.quantizer.codes_to_latents(model.quantizer.encode(model.encoder(latents)))
            for k in self.hparams.val_token_counts:
                keep = torch.full((b,), int(k), device=self.device)
                sample = sample_rectified_flow(model.velocity_field(quantized, keep), noise, self.hparams.val_steps)
                self.log(f"val/latent_mse@{int(k)}", F.mse_loss(sample, latents), batch_size=b)
