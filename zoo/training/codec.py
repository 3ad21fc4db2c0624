"""Speech-codec training with discriminators and distillation (SpeechTokenizer, DM-Codec, FuseCodec).

Generator loss = time L1 + multi-resolution mel (+ STFT) + quantizer commitment
+ adversarial + feature matching (MPD / MSD / MS-STFT discriminators, switched on after
`discriminator_start` batches) + the distillation terms of the recipe's `distillation` scheme:

  scheme            terms (student -> target)
  none              -
  speechtokenizer   semantic_head(RVQ layer 1)            -> speech teacher, D- or T-axis (`semantic_axis`)
  dmcodec_lm        context_head(mean of all RVQ layers)  -> text teacher, D-axis loss
  dmcodec_lm_sm     dmcodec_lm + semantic_head(layer 1)   -> speech teacher (`semantic_axis`, D by default)
  fusecodec_global  semantic_head(layer 1) -> pooled speech teacher, context_head(all) -> pooled text
                    teacher, each broadcast to every frame (per-frame cosine)
  fusecodec_align   semantic_head(layer 1) -> speech teacher (D-axis) and context_head(all) -> best
                    text token within `align_window` tokens of the frame's proportional position
  fusecodec_global_align   the terms of both FuseCodec schemes

`fuse_features` (FuseCodec codecs) also feeds both teachers' features into the codec's latent
fusion. The speech teacher's size must equal the codec's `semantic_dimension`; the text
teacher gets a linear `context_head` owned by this module (saved in its checkpoints, not in the
exported codec).

Text has no real alignment to audio: tokens are spread over the whole utterance's frames in
proportion to their character counts (`text_alignment: duration`) or evenly (`uniform`), then
cut to the crop. Teacher features are (B, T, D) with lengths; padded frames never count.

Steps: `trainer.global_step` counts optimizer steps, i.e. two per batch once the discriminator
trains; `discriminator_start` counts batches (`self.batches_seen`).
"""
from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torchaudio.functional as AF
from lightning.pytorch import LightningModule
from torch import nn

import zoo
from zoo.blocks.discriminators_audio import AudioDiscriminators
from zoo.errors import TokenizerError
from zoo.losses import distillation as D
from zoo.losses.adversarial_audio import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from zoo.losses.spectral import MultiResolutionMelLoss, MultiResolutionSTFTLoss, waveform_l1_loss
from zoo.models.audio.fusecodec import FuseCodec
from zoo.models.audio.rvq_codec import CodecOutput, RVQCodec
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features
from zoo.training.common import build_tokenizer, codebooks_ready, optimizer_step

SCHEMES = {
    "none": (),
    "speechtokenizer": ("semantic",),
    "dmcodec_lm": ("context",),
    "dmcodec_lm_sm": ("context", "semantic"),
    "fusecodec_global": ("semantic_global", "context_global"),
    "fusecodec_align": ("semantic", "context_aligned"),
    "fusecodec_global_align": ("semantic_global", "context_global", "semantic", "context_aligned"),
}


class TeacherTargets(NamedTuple):
    """The teachers' features for one batch, brought to the codec's frames where needed."""

    speech: torch.Tensor | None            # (B, N, D_speech) at the codec's N frames
    speech_raw: TeacherFeatures | None     # at the teacher's own frame rate, cut to the crop
    text: TeacherFeatures | None           # (B, L, D_text) tokens of the whole utterance
    positions: torch.Tensor | None         # (B, N) relative position of each codec frame in its utterance
    durations: torch.Tensor | None         # (B, L) token durations for the alignment (None: uniform)


def build_codec(name: str, overrides: dict | None = None, pretrained: bool = False,
                checkpoint: str | None = None) -> RVQCodec:
    """A registered codec: random (zoo.create) or with weights (zoo.load; `checkpoint` replaces
    the registered source). Overrides apply on top; loaded weights must still fit them."""
    codec = build_tokenizer(name, overrides, pretrained, checkpoint)
    if not isinstance(codec, RVQCodec):
        raise TokenizerError(f"{name} is a {type(codec).__name__}; codec training takes the SEANet + RVQ codecs "
                             "(speechtokenizer-*, dmcodec-*, fusecodec-*).")
    return codec


class CodecTraining(LightningModule):
    def __init__(
        self,
        codec: str,
        codec_overrides: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint: str | None = None,
        distillation: Literal["none", "speechtokenizer", "dmcodec_lm", "dmcodec_lm_sm", "fusecodec_global",
                              "fusecodec_align", "fusecodec_global_align"] = "none",
        semantic_teacher: Teacher | None = None,
        context_teacher: Teacher | None = None,
        fuse_features: bool = False,
        semantic_axis: Literal["d", "t"] = "d",
        text_alignment: Literal["duration", "uniform"] = "duration",
        align_window: int = 2,
        # loss weights
        time_weight: float = 1.0,
        mel_weight: float = 45.0,
        stft_weight: float = 0.0,
        quantizer_weight: float = 1.0,
        adversarial_weight: float = 1.0,
        feature_matching_weight: float = 2.0,
        semantic_weight: float = 1.0,
        context_weight: float = 1.0,
        # spectral losses
        mel_log2_windows: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11),
        n_mels: int = 64,
        stft_n_ffts: tuple[int, ...] = (512, 1024, 2048),
        # discriminators
        gan_loss: Literal["hinge", "lsgan"] = "hinge",
        discriminator_start: int = 0,
        mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11),
        msd_scales: int = 3,
        stft_discriminator_ffts: tuple[int, ...] = (1024, 2048, 512),
        discriminator_channels: int = 32,
        discriminator_max_channels: int = 512,
        # optimisation
        lr: float = 1e-4,
        discriminator_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        grad_clip: float = 0.0,
        noise_floor: float = 0.0,
        export_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["semantic_teacher", "context_teacher"])
        self.automatic_optimization = False
        if distillation not in SCHEMES:
            raise TokenizerError(f"distillation must be one of {sorted(SCHEMES)}, got {distillation!r}.")
        # zoo.create / zoo.load return eval-mode models; Lightning keeps the modes it finds.
        self.codec = build_codec(codec, codec_overrides, pretrained, checkpoint).train()
        self.terms = SCHEMES[distillation]
        needs_speech = fuse_features or any(t.startswith("semantic") for t in self.terms)
        needs_text = fuse_features or any(t.startswith("context") for t in self.terms)
        self._check_teacher("semantic_teacher", semantic_teacher, needs_speech, "speech")
        self._check_teacher("context_teacher", context_teacher, needs_text, "text")
        cfg = self.codec.config
        if needs_speech and semantic_teacher.dim != cfg.semantic_dimension:
            raise TokenizerError(f"the speech teacher gives {semantic_teacher.dim}-d features but the codec's "
                                 f"semantic_dimension is {cfg.semantic_dimension}; set codec_overrides.semantic_dimension "
                                 f"to {semantic_teacher.dim}.")
        if fuse_features:
            if not isinstance(self.codec, FuseCodec):
                raise TokenizerError(f"fuse_features needs a FuseCodec codec, got {type(self.codec).__name__}.")
            if context_teacher.dim != cfg.context_dimension:
                raise TokenizerError(f"the text teacher gives {context_teacher.dim}-d features but the codec's "
                                     f"context_dimension is {cfg.context_dimension}; set codec_overrides.context_dimension "
                                     f"to {context_teacher.dim}.")
        # Teachers are frozen and not part of the trained state: kept out of the module tree so that
        # they are neither optimised nor written into every checkpoint.
        self.teachers: dict[str, Teacher | None] = {"speech": semantic_teacher, "text": context_teacher}
        self.context_head = (nn.Linear(cfg.dimension, context_teacher.dim)
                             if any(t.startswith("context") for t in self.terms) else None)
        self.mel_loss = MultiResolutionMelLoss(self.codec.sample_rate, tuple(mel_log2_windows), n_mels)
        self.stft_loss = MultiResolutionSTFTLoss(tuple(stft_n_ffts)) if stft_weight > 0 else None
        self.discriminators = None
        if adversarial_weight > 0 or feature_matching_weight > 0:
            self.discriminators = AudioDiscriminators(
                tuple(mpd_periods), msd_scales, tuple(stft_discriminator_ffts), period_channels=discriminator_channels,
                scale_channels=max(1, discriminator_channels // 2), stft_channels=discriminator_channels,
                max_channels=discriminator_max_channels)
        self.semantic_loss = D.SemanticDistillLoss(semantic_axis)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def _check_teacher(self, arg: str, teacher: Teacher | None, needed: bool, modality: str) -> None:
        if needed and teacher is None:
            raise TokenizerError(f"distillation {self.hparams.distillation!r} needs a {modality} teacher; "
                                 f"set model.init_args.{arg}.")
        if teacher is not None and not needed:
            raise TokenizerError(f"{arg} is set but distillation {self.hparams.distillation!r} uses no {modality} "
                                 "teacher; remove it or choose a scheme that does.")
        if teacher is not None and teacher.modality != modality:
            raise TokenizerError(f"{arg} must give {modality} features, got a {teacher.modality} teacher "
                                 f"({type(teacher).__name__}).")

    # ---- teacher targets ----------------------------------------------------------------------
    def _run_teacher(self, teacher: Teacher, batch) -> TeacherFeatures:
        teacher.to(self.device)
        if teacher.input_kind == "key":
            return teacher.features(batch.keys)
        if teacher.input_kind == "text":
            if any(not t for t in batch.texts):
                raise TokenizerError("a text teacher needs a transcript (<name>.txt) for every audio file; "
                                     f"none for {[k for k, t in zip(batch.keys, batch.texts) if not t][:3]}.")
            return teacher.features(batch.texts)
        wav, lengths = batch.wav, batch.lengths
        if teacher.sample_rate != self.codec.sample_rate:
            wav = AF.resample(wav, self.codec.sample_rate, teacher.sample_rate)
            lengths = (lengths * teacher.sample_rate) // self.codec.sample_rate
        return teacher.features(wav, lengths)

    def _speech_crop(self, feats: TeacherFeatures, batch) -> TeacherFeatures:
        """Cached speech features cover whole utterances: keep the frames of the crop."""
        rate = self.teachers["speech"].frame_rate / self.codec.sample_rate
        rows = []
        for i in range(feats.features.shape[0]):
            start = min(int(round(int(batch.offsets[i]) * rate)), int(feats.lengths[i]) - 1)
            n = max(1, min(int(round(int(batch.lengths[i]) * rate)), int(feats.lengths[i]) - start))
            rows.append(feats.features[i, start: start + n])
        return pad_features(rows)

    def teacher_targets(self, batch, num_frames: int) -> TeacherTargets:
        hop = self.codec.hop_length
        speech = speech_raw = text = positions = durations = None
        if self.teachers["speech"] is not None:
            speech_raw = self._run_teacher(self.teachers["speech"], batch)
            if self.teachers["speech"].input_kind == "key":
                speech_raw = self._speech_crop(speech_raw, batch)
            frame_lengths = torch.div(batch.lengths + hop - 1, hop, rounding_mode="floor")
            speech = D.resample_frames(speech_raw.features, speech_raw.lengths, frame_lengths, num_frames)
        if self.teachers["text"] is not None:
            text = self._run_teacher(self.teachers["text"], batch)
            total = torch.div(batch.full_lengths + hop - 1, hop, rounding_mode="floor")
            positions = D.frame_positions(num_frames, torch.div(batch.offsets, hop, rounding_mode="floor"), total)
            durations = text.durations if self.hparams.text_alignment == "duration" else None
        return TeacherTargets(speech, speech_raw, text, positions, durations)

    # ---- losses -------------------------------------------------------------------------------
    def codec_forward(self, wav: torch.Tensor, targets: TeacherTargets, frame_mask: torch.Tensor) -> CodecOutput:
        if not self.hparams.fuse_features:
            return self.codec(wav)
        text = targets.text
        return self.codec(wav, semantic=targets.speech, context=text.features, semantic_mask=frame_mask,
                          context_mask=D.lengths_to_mask(text.lengths, text.features.shape[1]))

    def distillation_losses(self, out: CodecOutput, t: TeacherTargets, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """One value per term of the scheme, named as in SCHEMES (for logging)."""
        losses = {}
        all_layers = None
        if self.context_head is not None:
            all_layers = self.context_head(out.layer_quantized.mean(1))  # (B, N, D_text)
        for term in self.terms:
            if term == "semantic":
                losses[term] = self.semantic_loss(out.semantic_features, t.speech, mask)
            elif term == "semantic_global":
                losses[term] = D.global_supervision_loss(out.semantic_features, mask, t.speech_raw.features,
                                                         t.speech_raw.lengths)
            elif term == "context":
                frames = D.align_tokens_to_frames(t.text.features, t.text.lengths, t.positions, t.durations)
                losses[term] = D.lm_guided_loss(all_layers, frames, mask)
            elif term == "context_global":
                losses[term] = D.global_supervision_loss(all_layers, mask, t.text.features, t.text.lengths)
            elif term == "context_aligned":
                losses[term] = D.windowed_alignment_loss(all_layers, mask, t.text.features, t.text.lengths,
                                                         t.positions, t.durations, self.hparams.align_window)
        return losses

    def reconstruction_losses(self, wav, recon, lengths) -> dict[str, torch.Tensor]:
        losses = {"time": waveform_l1_loss(recon, wav, lengths), "mel": self.mel_loss(recon, wav, lengths)}
        if self.stft_loss is not None:
            losses["stft"] = self.stft_loss(recon, wav, lengths)
        return losses

    # ---- training -----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.codec.parameters() if p.requires_grad]
        if self.context_head is not None:
            params += list(self.context_head.parameters())
        opt_g = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if self.discriminators is None:
            return opt_g
        opt_d = torch.optim.AdamW(self.discriminators.parameters(), lr=hp.discriminator_lr or hp.lr,
                                  betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        return [opt_g, opt_d]

    def on_fit_start(self) -> None:
        data = getattr(self.trainer, "datamodule", None)
        rate = getattr(data, "sample_rate", None)
        if rate is not None and rate != self.codec.sample_rate:
            raise TokenizerError(f"the data module reads audio at {rate} Hz but the codec runs at "
                                 f"{self.codec.sample_rate} Hz; set data.init_args.sample_rate: {self.codec.sample_rate}.")

    @staticmethod
    def with_noise_floor(batch, std: float):
        """The batch with Gaussian noise of `std` added to its valid samples (input and target alike).
        Digital silence, as in synthetic speech, has a log-mel of log(eps) that no decoder output
        reaches; the log-mel loss then rewards near-silent output everywhere and training stalls."""
        mask = D.lengths_to_mask(batch.lengths, batch.wav.shape[-1])[:, None].to(batch.wav.dtype)
        return batch._replace(wav=batch.wav + std * torch.randn_like(batch.wav) * mask)

    def _step_losses(self, batch):
        wav, lengths = batch.wav, batch.lengths
        hop = self.codec.hop_length
        num_frames = math.ceil(wav.shape[-1] / hop)
        frame_mask = D.lengths_to_mask(torch.div(lengths + hop - 1, hop, rounding_mode="floor"), num_frames)
        targets = self.teacher_targets(batch, num_frames)
        out = self.codec_forward(wav, targets, frame_mask)
        sample_mask = D.lengths_to_mask(lengths, wav.shape[-1])[:, None].to(wav.dtype)
        recon = out.reconstruction * sample_mask  # padding is silence in the target too
        distill = self.distillation_losses(out, targets, frame_mask)
        return out, recon, self.reconstruction_losses(wav, recon, lengths), distill

    def training_step(self, batch, batch_idx: int):
        hp = self.hparams
        optimizers = self.optimizers()
        opt_g, opt_d = optimizers if isinstance(optimizers, list) else (optimizers, None)
        if hp.noise_floor > 0:
            batch = self.with_noise_floor(batch, hp.noise_floor)
        out, recon, rec, distill = self._step_losses(batch)
        total = (hp.time_weight * rec["time"] + hp.mel_weight * rec["mel"] + hp.quantizer_weight * out.aux_loss
                 + hp.semantic_weight * sum((v for k, v in distill.items() if k.startswith("semantic")), recon.new_zeros(()))
                 + hp.context_weight * sum((v for k, v in distill.items() if k.startswith("context")), recon.new_zeros(())))
        if "stft" in rec:
            total = total + hp.stft_weight * rec["stft"]
        logs = {f"train/{k}": v.detach() for k, v in {**rec, **distill}.items()}
        gan_on = self.discriminators is not None and int(self.batches_seen) >= hp.discriminator_start
        if gan_on:
            self.discriminators.requires_grad_(False)
            fake = self.discriminators(recon)
            with torch.no_grad():
                real = self.discriminators(batch.wav)
            adversarial = generator_adversarial_loss(fake.logits, hp.gan_loss)
            matching = feature_matching_loss(real.features, fake.features)
            total = total + hp.adversarial_weight * adversarial + hp.feature_matching_weight * matching
            self.discriminators.requires_grad_(True)
            logs.update({"train/adversarial": adversarial.detach(), "train/feature_matching": matching.detach()})
        optimizer_step(self, opt_g, total, hp.grad_clip)

        if gan_on:
            real, fake = self.discriminators(batch.wav), self.discriminators(recon.detach())
            d_loss = discriminator_loss(real.logits, fake.logits, hp.gan_loss)
            optimizer_step(self, opt_d, d_loss)
            logs["train/discriminator"] = d_loss.detach()
        logs.update({"train/loss": total.detach(), "train/quantizer": out.aux_loss.detach()})
        self.log_dict(logs, on_step=True, prog_bar=False, batch_size=batch.wav.shape[0])
        self.log("train/mel_loss", rec["mel"].detach(), on_step=True, prog_bar=True, batch_size=batch.wav.shape[0])
        self.batches_seen += 1
        return total.detach()

    def validation_step(self, batch, batch_idx: int):
        if not codebooks_ready(self.codec):  # e.g. Lightning's sanity check before the first training step
            return None
        out, recon, rec, distill = self._step_losses(batch)
        self.log_dict({f"val/{k}": v for k, v in {**rec, **distill}.items()}, on_epoch=True,
                      batch_size=batch.wav.shape[0])

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.codec.save_pretrained(self.hparams.export_dir)
