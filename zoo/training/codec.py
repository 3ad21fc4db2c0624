"""Audio-codec training with discriminators and distillation terms (SpeechTokenizer, DM-Codec,
FuseCodec, and any audio tokenizer that follows the training-forward protocol below).

Generator loss = time L1 + multi-resolution mel (+ STFT) + quantizer aux loss + adversarial +
feature matching (MPD / MSD / MS-STFT discriminators, from `discriminator_start` batches on)
+ the weighted `terms` of the recipe (zoo.training.terms), each with its own teacher:

  SpeechTokenizer   SemanticDistill (speech teacher, D- or T-axis)
  DM-Codec LM       ContextDistill (text teacher); LM + SM: ContextDistill + SemanticDistill
  FuseCodec         GlobalSemanticSupervision, GlobalContextSupervision, SemanticDistill,
                    AlignedContextDistill (any subset), with `fuse_features`

Optimizers, warm-up, clipping, the weight average and resumable state come from the skeleton
(zoo.training.skeleton). `fuse_features` (FuseCodec) also feeds the terms' speech and text teacher
features into the codec's latent fusion.

Training-forward protocol: `tokenizer(wav (B, 1, T), **conditioning)` returns an object with
  reconstruction (B, 1, T), codes (B, n_q, N), aux_loss (scalar, already weighted),
  layer_quantized (B, n_q, N, D): each quantizer layer's output, gradient straight through (text terms),
  semantic_features (B, N, semantic_dimension): what speech terms distil (the projected first layer);
and the tokenizer names `sample_rate`, `hop_length` (samples per frame), `latent_dimension` (D) and
`semantic_dimension`; conditioning (`semantic`, `context` features and their masks) only with
`fuse_features`. Terms read only the fields they need.
"""
from __future__ import annotations

import inspect
import math
from typing import Literal

import torch
from torch import nn

from zoo.blocks.discriminators_audio import AudioDiscriminators
from zoo.errors import TokenizerError
from zoo.losses.adversarial_audio import discriminator_loss as gan_discriminator_loss
from zoo.losses.adversarial_audio import feature_matching_loss, generator_adversarial_loss
from zoo.losses.spectral import MultiResolutionMelLoss, MultiResolutionSTFTLoss, waveform_l1_loss
from zoo.tokenizer import AudioTokenizer
from zoo.tokens import lengths_to_mask
from zoo.training.skeleton import AdversarialTraining, GeneratorStep
from zoo.training.terms import TeacherTargets, Term, same_teacher


class CodecTraining(AdversarialTraining):
    """LightningModule for audio-codec training (see the module docstring); the skeleton's
    arguments (tokenizer, optimisation, EMA, export) are accepted as keywords."""

    unsaved_arguments = ("terms",)
    progress_bar_logs = ("mel", "discriminator")

    def __init__(
        self,
        terms: list[Term] | None = None,
        fuse_features: bool = False,
        # loss weights
        time_weight: float = 1.0,
        mel_weight: float = 45.0,
        stft_weight: float = 0.0,
        quantizer_weight: float = 1.0,
        adversarial_weight: float = 1.0,
        feature_matching_weight: float = 2.0,
        # spectral losses
        mel_log2_windows: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11),
        n_mels: int = 64,
        stft_n_ffts: tuple[int, ...] = (512, 1024, 2048),
        # discriminators
        gan_loss: Literal["hinge", "lsgan"] = "hinge",
        mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11),
        msd_scales: int = 3,
        stft_discriminator_ffts: tuple[int, ...] = (1024, 2048, 512),
        discriminator_channels: int = 32,
        discriminator_max_channels: int = 512,
        noise_floor: float = 0.0,
        **skeleton,
    ):
        super().__init__(**skeleton)
        if not isinstance(self.tokenizer, AudioTokenizer):
            raise TokenizerError(f"{self.hparams.tokenizer!r} is a {type(self.tokenizer).__name__}, not an audio "
                                 "tokenizer; codec training takes audio tokenizers.")
        self.tokenizer.train()  # zoo.create / zoo.load return eval-mode models; Lightning keeps the modes it finds
        self.terms = nn.ModuleList(terms or [])
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise TokenizerError(f"terms must have distinct names (they are logged by name), got {names}; "
                                 "set a term's init_args.name.")
        self._share_alike_teachers()
        for term in self.terms:
            term.bind(self.tokenizer)
        if fuse_features:
            self._check_fusion()
        self.mel_loss = MultiResolutionMelLoss(self.tokenizer.sample_rate, tuple(mel_log2_windows), n_mels)
        self.stft_loss = MultiResolutionSTFTLoss(tuple(stft_n_ffts)) if stft_weight > 0 else None
        if adversarial_weight > 0 or feature_matching_weight > 0:
            self.discriminator = AudioDiscriminators(
                tuple(mpd_periods), msd_scales, tuple(stft_discriminator_ffts), period_channels=discriminator_channels,
                scale_channels=max(1, discriminator_channels // 2), stft_channels=discriminator_channels,
                max_channels=discriminator_max_channels)

    # ---- set-up checks ------------------------------------------------------------------------
    def _share_alike_teachers(self) -> None:
        """Terms built with identical teachers share one instance, so each teacher runs once a batch."""
        unique = []
        for term in self.terms:
            match = next((t for t in unique if same_teacher(t, term.teacher)), None)
            if match is None:
                unique.append(term.teacher)
            else:
                term.__dict__["teacher"] = match

    def fusion_teacher(self, modality: str):
        """The one teacher of `modality` among the terms, whose features `fuse_features` feeds in."""
        teachers = {id(t.teacher): t.teacher for t in self.terms if t.teacher.modality == modality}
        if len(teachers) != 1:
            raise TokenizerError(f"fuse_features needs exactly one {modality} teacher among the terms, found "
                                 f"{len(teachers)}; give the terms that use one the same teacher settings.")
        return next(iter(teachers.values()))

    def _check_fusion(self) -> None:
        accepted = inspect.signature(self.tokenizer.forward).parameters
        if not {"semantic", "context"} <= set(accepted):
            raise TokenizerError(f"fuse_features needs a codec whose training forward takes semantic and context "
                                 f"features (FuseCodec), got {type(self.tokenizer).__name__}.")
        cfg = self.tokenizer.config
        for modality, field in (("speech", "semantic_dimension"), ("text", "context_dimension")):
            dim = self.fusion_teacher(modality).dim
            if getattr(cfg, field) != dim:
                raise TokenizerError(f"the {modality} teacher gives {dim}-d features but the codec's {field} is "
                                     f"{getattr(cfg, field)}; set tokenizer_overrides.{field} to {dim}.")

    def on_fit_start(self) -> None:
        data = getattr(self.trainer, "datamodule", None)
        rate = getattr(data, "sample_rate", None)
        if rate is not None and rate != self.tokenizer.sample_rate:
            raise TokenizerError(f"the data module reads audio at {rate} Hz but the codec runs at "
                                 f"{self.tokenizer.sample_rate} Hz; set data.init_args.sample_rate: {self.tokenizer.sample_rate}.")

    # ---- losses -------------------------------------------------------------------------------
    @staticmethod
    def with_noise_floor(batch, std: float):
        """The batch with Gaussian noise of `std` added to its valid samples (input and target alike).
        Digital silence, as in synthetic speech, has a log-mel of log(eps) that no decoder output
        reaches; the log-mel loss then rewards near-silent output everywhere and training stalls."""
        mask = lengths_to_mask(batch.lengths, batch.wav.shape[-1])[:, None].to(batch.wav.dtype)
        return batch._replace(wav=batch.wav + std * torch.randn_like(batch.wav) * mask)

    def losses(self, batch, codec: AudioTokenizer | None = None):
        """One training forward of `codec` (default: the one being trained): (output, masked
        reconstruction, reconstruction losses, term losses)."""
        wav, lengths, codec = batch.wav, batch.lengths, codec or self.tokenizer
        targets = TeacherTargets(batch, codec.sample_rate, codec.hop_length, math.ceil(wav.shape[-1] / codec.hop_length))
        conditioning = {}
        if self.hparams.fuse_features:
            text = targets.features(self.fusion_teacher("text"))
            conditioning = dict(semantic=targets.frames(self.fusion_teacher("speech")), context=text.features,
                                semantic_mask=targets.frame_mask,
                                context_mask=lengths_to_mask(text.lengths, text.features.shape[1]))
        out = codec(wav, **conditioning)
        sample_mask = lengths_to_mask(lengths, wav.shape[-1])[:, None].to(wav.dtype)
        recon = out.reconstruction * sample_mask  # padding is silence in the target too
        rec = {"time": waveform_l1_loss(recon, wav, lengths), "mel": self.mel_loss(recon, wav, lengths)}
        if self.stft_loss is not None:
            rec["stft"] = self.stft_loss(recon, wav, lengths)
        return out, recon, rec, {term.name: term(out, targets) for term in self.terms}

    def generator_step(self, batch, adversarial: bool) -> GeneratorStep:
        hp = self.hparams
        if hp.noise_floor > 0:
            batch = self.with_noise_floor(batch, hp.noise_floor)
        out, recon, rec, distill = self.losses(batch)
        total = hp.time_weight * rec["time"] + hp.mel_weight * rec["mel"] + hp.quantizer_weight * out.aux_loss
        for term in self.terms:
            total = total + term.weight * distill[term.name]
        if "stft" in rec:
            total = total + hp.stft_weight * rec["stft"]
        logs = {k: v.detach() for k, v in {**rec, **distill}.items()} | {"quantizer": out.aux_loss.detach()}
        if adversarial:
            fake = self.discriminator(recon)
            with torch.no_grad():
                real = self.discriminator(batch.wav)
            adversarial_loss = generator_adversarial_loss(fake.logits, hp.gan_loss)
            matching = feature_matching_loss(real.features, fake.features)
            total = total + hp.adversarial_weight * adversarial_loss + hp.feature_matching_weight * matching
            logs |= {"adversarial": adversarial_loss.detach(), "feature_matching": matching.detach()}
        return GeneratorStep(total, logs, real=batch.wav, fake=recon)

    def discriminator_loss(self, real, fake):
        d_loss = gan_discriminator_loss(self.discriminator(real).logits, self.discriminator(fake).logits,
                                        self.hparams.gan_loss)
        return d_loss, {"discriminator": d_loss.detach()}

    def checkpoint_metric(self) -> tuple[str, str]:
        """val/mel (the multi-resolution mel distance), lower is better."""
        return "val/mel", "min"

    def validation_step(self, batch, batch_idx: int):
        if not self.codebooks_ready():  # e.g. Lightning's sanity check before the first training step
            return None
        out, recon, rec, distill = self.losses(batch, self.trained_tokenizer())
        self.log_dict({f"val/{k}": v for k, v in {**rec, **distill}.items()}, on_epoch=True,
                      batch_size=batch.wav.shape[0])
