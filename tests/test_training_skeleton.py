"""The training skeleton that every regime subclasses: a new regime is a subclass that adds its losses,
and gets optimizers, warm-up, clipping, the discriminator schedule, EMA, resumable state and export."""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from test_registry import official_state  # noqa: F401  (registers the test models)
from torch import nn
from torch.utils.data import DataLoader

import zoo
from zoo.training.callbacks import ResumableRandomState
from zoo.training.skeleton import AdversarialTraining, GeneratorStep

pytestmark = pytest.mark.usefixtures("one_thread")


class ToyRegime(AdversarialTraining):
    """What a new regime writes: its own losses, nothing of the loop."""

    def __init__(self, gan_weight: float = 0.1, **skeleton):
        super().__init__(**skeleton)
        self.discriminator = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.Flatten(), nn.LazyLinear(1)) if gan_weight else None
        if self.discriminator is not None:
            self.discriminator(torch.zeros(1, 3, 32, 32))  # materialise the lazy layer
        self.generator_calls: list[bool] = []
        self.discriminator_calls = 0

    def generator_step(self, batch, adversarial):
        self.generator_calls.append(adversarial)
        out = self.tokenizer(batch)
        loss = F.mse_loss(out.reconstruction, batch) + out.aux_loss
        if adversarial:
            loss = loss + self.hparams.gan_weight * F.softplus(-self.discriminator(out.reconstruction)).mean()
        return GeneratorStep(loss * 1000.0, {"mse": loss.detach()}, real=batch, fake=out.reconstruction)

    def discriminator_loss(self, real, fake):
        assert not fake.requires_grad  # the skeleton detaches what the discriminator sees
        self.discriminator_calls += 1
        loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
        return loss, {"d": loss.detach()}


def _fit(module, steps=8):
    images = torch.rand(16, 3, 32, 32)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(images, batch_size=4))
    return trainer


def test_a_new_regime_gets_the_loop_from_the_skeleton(tmp_path):
    module = ToyRegime(tokenizer="test-tiny-image-a", tokenizer_overrides={"width": 8}, lr=1e-3, warmup_steps=4,
                       grad_clip=0.5, discriminator_start=2, ema_decay=0.9, export_dir=str(tmp_path / "export"))
    assert module.hparams.warmup_steps == 4 and module.hparams.gan_weight == 0.1  # both levels of arguments saved
    before = {k: v.clone() for k, v in module.tokenizer.state_dict().items()}
    seen_lr, norms = [], []
    original = module.optimizer_step_of

    def spy(optimizer, loss, grad_clip=None):
        seen_lr.append(optimizer.param_groups[0]["lr"])
        original(optimizer, loss, grad_clip)
        if grad_clip:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    module.optimizer_step_of = spy
    trainer = _fit(module, steps=10)
    # the discriminator is off for the first two batches, then trains once a batch
    assert module.generator_calls[:3] == [False, False, True] and module.discriminator_calls == len(module.generator_calls) - 2
    assert trainer.global_step == 10 and int(module.batches_seen) == 6
    # linear warm-up over four batches, for both optimizers
    assert seen_lr[:2] == pytest.approx([2.5e-4, 5e-4]) and max(seen_lr) == pytest.approx(1e-3)
    # the generator's gradient is clipped to 0.5 (the loss is scaled so that it would be far larger)
    assert norms and max(norms) <= 0.5 + 1e-4
    # the weight average moved, and differs from the raw weights; it is what gets exported
    assert int(module.ema.updates) == 6 and module.trained_tokenizer() is module.ema.model
    raw, ema = module.tokenizer.state_dict(), module.ema.model.state_dict()
    key = "encoder.weight"
    assert not torch.equal(ema[key], before[key]) and not torch.equal(ema[key], raw[key])
    exported = zoo.load(str(tmp_path / "export"))
    assert torch.equal(exported.state_dict()[key], ema[key])


def test_the_generator_optimizer_holds_everything_but_the_discriminator():
    module = ToyRegime(tokenizer="test-tiny-image-a", tokenizer_overrides={"width": 8})
    module.head = nn.Linear(2, 2)  # a training-only head, as distillation terms have
    opt_g, opt_d = module.configure_optimizers()
    generator = {id(p) for g in opt_g.param_groups for p in g["params"]}
    assert generator == {id(p) for p in [*module.tokenizer.parameters(), *module.head.parameters()]}
    assert {id(p) for g in opt_d.param_groups for p in g["params"]} == {id(p) for p in module.discriminator.parameters()}
    assert ToyRegime(tokenizer="test-tiny-image-a", gan_weight=0).configure_optimizers().__class__ is torch.optim.AdamW


def test_resumable_random_state_comes_with_every_regime():
    module = ToyRegime(tokenizer="test-tiny-image-a", gan_weight=0)
    assert any(isinstance(c, ResumableRandomState) for c in module.configure_callbacks())


def test_codec_training_takes_any_audio_tokenizer_of_the_protocol():
    """Not only the SEANet + RVQ codecs: a tokenizer whose training forward gives reconstruction and
    aux_loss trains with the spectral and adversarial losses; a term that needs more says what."""
    from zoo.errors import TokenizerError
    from zoo.teachers import RandomSpeechTeacher
    from zoo.training.codec import CodecTraining
    from zoo.training.speech_data import SpeechBatch
    from zoo.training.terms import SemanticDistill

    small = dict(mel_log2_windows=(6, 8), n_mels=16, mpd_periods=(2,), msd_scales=1, stft_discriminator_ffts=(128,),
                 discriminator_channels=4, discriminator_max_channels=8, lr=3e-3)
    module = CodecTraining(tokenizer="test-tiny-audio", **small)
    wav = 0.3 * torch.sin(torch.linspace(0, 400, 3200))[None, None].repeat(4, 1, 1)
    batch = SpeechBatch(wav, torch.full((4,), 3200), torch.zeros(4, dtype=torch.long), torch.full((4,), 3200),
                        [""] * 4, list("abcd"))

    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return i

    trainer = pl.Trainer(max_steps=16, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    before = module.losses(batch)[2]["mel"].item()
    trainer.fit(module, DataLoader(Batches(), batch_size=4, collate_fn=lambda _: batch))
    assert trainer.global_step == 16 and module.discriminator is not None
    assert module.losses(batch)[2]["mel"].item() < before
    with pytest.raises(TokenizerError, match="names no semantic_dimension"):
        CodecTraining(tokenizer="test-tiny-audio", terms=[SemanticDistill(RandomSpeechTeacher(8))], **small)
