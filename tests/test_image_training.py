"""Image-tokenizer training: losses, discriminator, data module, and the tiny One-D-Piece recipe
run through `zoo fit` (zoo.training.cli.main) on a CPU."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from zoo import ImageTokenizer, TokenizerConfig, TokenizerOutput, Tokens
from zoo.errors import TokenizerError, WeightsUnavailableError
from zoo.quantize import VectorQuantizer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = RECIPES / "onedpiece" / "tiny.yaml"


@dataclass
class TinyPrefixConfig(TokenizerConfig):
    image_size: int = 64
    num_tokens: int = 16
    token_dim: int = 8
    codebook_size: int = 64
    width: int = 32


class TinyPrefixTokenizer(ImageTokenizer):
    """A tiny conv 1D tokenizer: the image becomes `num_tokens` quantized vectors (not tied to
    positions in the image); the decoder reads any prefix, dropped tokens become a learned mask
    vector. It learns within a few hundred CPU steps, which the tiny TiTok does not (its latents
    start out nearly independent of the image), so the prefix-PSNR test trains this one."""

    architecture = "test-tiny-prefix"
    config_class = TinyPrefixConfig

    def __init__(self, config: TinyPrefixConfig):
        super().__init__(config)
        c = config
        self.side = c.image_size // 16
        self.encoder = nn.Sequential(nn.Conv2d(3, c.width, 4, 4), nn.GELU(), nn.Conv2d(c.width, c.width, 4, 4), nn.GELU(),
                                     nn.Flatten(), nn.Linear(c.width * self.side ** 2, c.num_tokens * c.token_dim))
        self.quantizer = VectorQuantizer(c.token_dim, c.codebook_size, commitment_weight=0.25, threshold_ema_dead_code=2)
        self.mask_token = nn.Parameter(torch.zeros(c.token_dim))
        self.decoder = nn.Sequential(nn.Linear(c.num_tokens * c.token_dim, c.width * self.side ** 2), nn.GELU(),
                                     nn.Unflatten(1, (c.width, self.side, self.side)),
                                     nn.ConvTranspose2d(c.width, c.width, 4, 4), nn.GELU(), nn.ConvTranspose2d(c.width, 3, 4, 4))

    @property
    def codebook_sizes(self):
        return (self.config.codebook_size,)

    def _latents(self, x):
        return self.encoder(x * 2 - 1).view(x.shape[0], self.config.num_tokens, self.config.token_dim)

    def _lengths(self, num_tokens, b):
        if num_tokens is None:
            return None
        if isinstance(num_tokens, torch.Tensor):
            return num_tokens.to(self.device).long()
        return torch.full((b,), int(num_tokens), dtype=torch.long, device=self.device)

    def _pixels(self, z, lengths):
        b, n, _ = z.shape
        full = torch.cat([z, self.mask_token.expand(b, self.config.num_tokens - n, -1)], dim=1)
        if lengths is not None:
            dropped = torch.arange(self.config.num_tokens, device=z.device)[None, :, None] >= lengths[:, None, None]
            full = torch.where(dropped, self.mask_token.to(full.dtype), full)
        return torch.sigmoid(self.decoder(full.flatten(1)))

    def _encode(self, x, num_tokens=None):
        codes = self.quantizer.encode(self._latents(x))
        lengths = self._lengths(num_tokens, x.shape[0])
        return Tokens(codes if lengths is None else codes[:, :int(lengths.max())], lengths)

    def _decode(self, tokens):
        return self._pixels(self.quantizer.codes_to_latents(tokens.codes), tokens.lengths)

    def forward(self, x, num_tokens=None):
        quantized, codes, aux_loss = self.quantizer(self._latents(x))
        return TokenizerOutput(self._pixels(quantized, self._lengths(num_tokens, x.shape[0])), codes, aux_loss)


def _register_prefix_model() -> str:
    if "test-tiny-prefix" not in zoo.list_models():
        zoo.register("test-tiny-prefix", TinyPrefixTokenizer, TinyPrefixConfig(), description="test model",
                     license="Apache-2.0")
    return "test-tiny-prefix"


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_sample_images(folder: Path, size: int = 96) -> Path:
    """Three skimage sample photos, shorter side resized to `size`, as PNG files (one in a subfolder)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        im = Image.fromarray(getattr(data, name)())
        scale = size / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        target = folder / ("nested" if i == 2 else "") / f"{name}.png"
        target.parent.mkdir(exist_ok=True)
        im.save(target)
    return folder


# ---- losses and discriminator -----------------------------------------------------------------

def test_hinge_losses_and_adaptive_weight():
    from zoo.losses.adversarial import adaptive_generator_weight, hinge_discriminator_loss, hinge_generator_loss

    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, .5], relu(1 + fake) = [0, 1.5] -> 0.5 * (0.25 + 0.75)
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5)
    assert hinge_generator_loss(fake).item() == pytest.approx(0.75)
    w = nn.Parameter(torch.randn(4, 4))
    rec, gan = (w ** 2).sum() * 3.0, w.sum()  # gradients 6w and 1
    expected = (6 * w).norm() / (torch.ones(4, 4).norm() + 1e-4)
    assert adaptive_generator_weight(rec, gan, w).item() == pytest.approx(expected.item(), rel=1e-5)


def test_lecam_regularizer_tracks_means():
    from zoo.losses.adversarial import LeCamRegularizer

    reg = LeCamRegularizer(decay=0.0)  # EMA = last batch
    loss = reg(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -1.0]))
    # real - mean(fake) = [2, 4] -> 10; mean(real) - fake = [3, 3] -> 9
    assert loss.item() == pytest.approx(19.0)
    assert reg.real_mean.item() == pytest.approx(2.0) and reg.fake_mean.item() == pytest.approx(-1.0)


def test_patchgan_shapes_and_norm_check():
    from zoo.blocks.discriminators_image import NLayerDiscriminator

    d = NLayerDiscriminator(base_channels=8, num_layers=3, norm="group")
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    with pytest.raises(TokenizerError, match="norm"):
        NLayerDiscriminator(norm="layer")


class TinyFeatures(nn.Module):
    """A random two-level conv backbone, standing in for VGG16 in tests."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        fa = torch.relu(self.a(x))
        return [fa, torch.relu(self.b(fa))]


def test_perceptual_loss_with_random_backbone_and_lpips_weights(tmp_path):
    from safetensors.torch import save_file

    from zoo.losses.perceptual import PerceptualLoss, build_perceptual_loss

    x = torch.rand(2, 3, 16, 16)
    loss = build_perceptual_loss(TinyFeatures())
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert loss(x, y).item() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    # gradients reach the input (the loss trains the generator), not the frozen backbone
    y.requires_grad_(True)
    loss(y, x).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    # LPIPS-style linear weights: zero weights on layer 1 leave only layer 0's term
    path = tmp_path / "lin.safetensors"
    save_file({"lin0.model.1.weight": torch.full((1, 8, 1, 1), 1 / 8), "lin1.model.1.weight": torch.zeros(1, 16, 1, 1)}, str(path))
    weighted = PerceptualLoss(loss.backbone, linear_weights=path)
    fa, fb = loss.backbone(x)[0], loss.backbone(y.detach())[0]
    unit = lambda f: f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # noqa: E731
    expected = (unit(fa) - unit(fb)).pow(2).mean(1).mean((1, 2))
    torch.testing.assert_close(weighted.distance(x, y.detach()), expected)


def test_perceptual_loss_without_weights_is_a_clear_error(tmp_path):
    from zoo.losses.perceptual import build_perceptual_loss, read_lpips_linear_weights

    with pytest.raises(WeightsUnavailableError, match="perceptual_backbone_weights"):
        build_perceptual_loss("vgg16", None)
    with pytest.raises(TokenizerError, match="one of"):
        build_perceptual_loss("resnet")
    from safetensors.torch import save_file

    save_file({"foo": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(TokenizerError, match="LPIPS"):
        read_lpips_linear_weights(tmp_path / "x.safetensors")


# ---- data -------------------------------------------------------------------------------------

def test_image_folder_data(tmp_path):
    from zoo.training.image_data import ImageFolderData

    folder = write_sample_images(tmp_path / "images", size=80)
    data = ImageFolderData(str(folder), crop_size=64, batch_size=2, num_val_images=2)
    data.setup("fit")
    assert len(data.train_set) == 3  # recursive listing finds the nested file
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    assert 0 <= batch.min() and batch.max() <= 1
    val = next(iter(data.val_dataloader()))
    assert val.shape == (2, 3, 64, 64)
    assert torch.equal(val, next(iter(data.val_dataloader())))  # center crops are deterministic
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no image files"):
        ImageFolderData(str(tmp_path / "empty")).setup("fit")


# ---- the training module ----------------------------------------------------------------------

def _tiny_overrides():
    import yaml

    return yaml.safe_load(TINY.read_text())["model"]["init_args"]["tokenizer_overrides"]


def test_module_losses_tail_drop_and_options(one_thread):
    from zoo.training.image_recon import ImageReconstruction

    module = ImageReconstruction(tokenizer="onedpiece-l-256", tokenizer_overrides=_tiny_overrides(), perceptual_weight=1.0,
                                 perceptual_backbone=TinyFeatures(), discriminator_weight=0.1,
                                 discriminator_channels=8, discriminator_layers=2, lecam_weight=0.1,
                                 tail_token_drop=True, min_kept_tokens=4, tail_drop_per_image=True)
    kept = module.sample_kept_tokens(64)
    assert kept.shape == (64,) and int(kept.min()) >= 4 and int(kept.max()) <= 16 and len(set(kept.tolist())) > 3
    module.hparams.tail_drop_per_image = False
    assert len(set(module.sample_kept_tokens(8).tolist())) == 1  # the paper: one length per batch
    x = torch.rand(2, 3, 64, 64)
    out = module.tokenizer.train()(x, num_tokens=torch.tensor([3, 16]))
    losses = module.generator_losses(x, out)
    assert losses.perceptual.item() > 0 and losses.total.item() > losses.reconstruction.item() - 1e-6
    assert module.tokenizer.last_decoder_layer().requires_grad
    with pytest.raises(TokenizerError, match="min_kept_tokens"):
        ImageReconstruction(tokenizer="onedpiece-l-256", tokenizer_overrides=_tiny_overrides(), tail_token_drop=True, min_kept_tokens=17)
    with pytest.raises(WeightsUnavailableError):
        ImageReconstruction(tokenizer="onedpiece-l-256", tokenizer_overrides=_tiny_overrides(), perceptual_weight=1.0)


def test_decoder_finetune_freezes_all_but_the_decoder():
    from zoo.training.image_recon import ImageReconstruction

    module = ImageReconstruction(tokenizer="onedpiece-l-256", tokenizer_overrides=_tiny_overrides(), two_stage="decoder_finetune", ema_decay=None)
    trainable = {n.split(".")[0] for n, p in module.tokenizer.named_parameters() if p.requires_grad}
    assert trainable == {"decoder"}
    module.train()
    assert not module.tokenizer.quantizer.training and not module.tokenizer.encoder.training
    assert module.tokenizer.decoder.training


# ---- the recipe through `zoo fit` -------------------------------------------------------------

def _read_metrics(folder: Path) -> list[dict]:
    (path,) = folder.rglob("metrics.csv")
    with path.open() as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def _fit(root: Path, *overrides: str):
    from zoo.training.cli import main

    images = write_sample_images(root / "images")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread, above all on a busy machine
    try:
        cli = main(["fit", "--config", str(TINY), "--data.init_args.train_dir", str(images),
                    "--trainer.default_root_dir", str(root), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                    "--trainer.logger.save_dir", str(root), *overrides])
    finally:
        torch.set_num_threads(threads)
    return cli, _read_metrics(root), images


def test_tiny_recipe_loss_goes_down(tmp_path):
    """recipes/onedpiece/tiny.yaml (a tiny One-D-Piece, tail token drop, PatchGAN) through `zoo fit`."""
    cli, rows, _ = _fit(tmp_path)
    rec = _series(rows, "train/reconstruction")
    assert len(rec) >= 50
    first, last = np.mean(rec[:5]), np.mean(rec[-10:])
    assert last < 0.5 * first, (first, last)
    assert _series(rows, "train/d_loss"), "the discriminator never trained"
    assert _series(rows, "val/psnr") and _series(rows, "val/codebook_usage")
    assert isinstance(cli.model.trained_tokenizer(), zoo.models.image.onedpiece.OneDPiece)


def test_prefix_psnr_rises_with_token_count(tmp_path):
    """Tail token drop concentrates information at the head: decoding the first k tokens of a
    trained tiny model gives a PSNR that rises with k."""
    from zoo.eval.image_metrics import psnr_by_token_count
    from zoo.training.image_data import ImageCrops, list_image_files

    cli, rows, images = _fit(tmp_path, "--model.init_args.tokenizer", _register_prefix_model(),
                             "--model.init_args.tokenizer_overrides", "{}", "--model.init_args.training_options", "null",
                             "--trainer.max_steps", "400",
                             "--model.init_args.discriminator_weight", "0", "--trainer.val_check_interval", "400",
                             "--model.init_args.val_token_counts", "[1, 4, 16]")
    tokenizer = cli.model.trained_tokenizer().eval()
    crops = ImageCrops(list_image_files(images), 64, random_crop=False)
    x = torch.stack([crops[i] for i in range(len(crops))])
    scores = psnr_by_token_count(tokenizer, x, [1, 4, 16])
    # measured at seeds 0 / 1 / 2: 13.17 / 13.64 / 14.07, 13.30 / 13.54 / 13.97, 13.20 / 13.67 / 14.01 dB;
    # the bars are about half the smallest steps seen (1 -> 4: 0.23 dB, 4 -> 16: 0.35, 1 -> 16: 0.67)
    assert scores[1] + 0.1 < scores[4] and scores[4] + 0.15 < scores[16], scores
    assert scores[16] - scores[1] > 0.3, scores


def test_bf16_mixed_gan_steps_and_export(tmp_path):
    """bf16-mixed on the CPU with the discriminator on from the first step (adaptive weight, LeCam),
    a checkpoint, and `zoo export`'s reader taking the EMA tokenizer out of it."""
    from zoo.hub.export import tokenizer_from_checkpoint

    cli, rows, images = _fit(tmp_path, "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "6",
                             "--model.init_args.discriminator_start", "0", "--model.init_args.lecam_weight", "0.1",
                             "--trainer.val_check_interval", "3", "--trainer.enable_checkpointing", "true")
    d_loss, g_loss = _series(rows, "train/d_loss"), _series(rows, "train/g_loss")
    assert len(d_loss) == 3 and all(np.isfinite(d_loss + g_loss))  # two optimizer steps per batch
    assert all(np.isfinite(_series(rows, "train/d_weight")))
    (ckpt,) = tmp_path.rglob("last.ckpt")  # the newest state (best.ckpt beside it: the best val/psnr)
    model, run = tokenizer_from_checkpoint(ckpt)
    ema = cli.model.trained_tokenizer()
    for (name, ours), theirs in zip(model.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(ours, theirs.to(ours.dtype)), name
    assert run["base model"] == "onedpiece-l-256" and model.config.num_tokens == 16


def test_two_stage_proxy_codes_step(tmp_path, one_thread):
    """TiTok stage 1: a tiny two-stage TiTok learns the codes of a frozen proxy tokenizer (any zoo
    image tokenizer whose codes cover the TiTok's patch grid)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader
    from tiny_models import TinyImageConfig, TinyImageTokenizer

    from zoo.training.image_recon import ImageReconstruction

    proxy = TinyImageTokenizer(TinyImageConfig(image_size=32, patch_size=4, width=8, codebook_size=64))
    proxy.save_pretrained(tmp_path / "proxy")
    overrides = dict(image_size=32, patch_size=4, num_tokens=8, encoder_width=32, encoder_depth=1, encoder_heads=2,
                     decoder_width=32, decoder_depth=1, decoder_heads=2, token_dim=8, codebook_size=32,
                     proxy_codebook_size=64, proxy_code_dim=8, pixel_decoder_channels=32,
                     pixel_decoder_channel_mult=(1, 1, 1), pixel_decoder_res_blocks=1)
    module = ImageReconstruction(tokenizer="titok-l-32", tokenizer_overrides=overrides, lr=3e-3, two_stage="proxy_codes",
                                 proxy_tokenizer=str(tmp_path / "proxy"), tail_token_drop=True, ema_decay=None)
    assert module.discriminator is None and module.perceptual is None
    pixel_decoder_before = {k: v.clone() for k, v in module.tokenizer.pixel_decoder.state_dict().items()}
    x = torch.rand(4, 3, 32, 32)
    trainer = pl.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(x.repeat(30, 1, 1, 1), batch_size=4), DataLoader(x, batch_size=4))
    assert float(trainer.callback_metrics["val/proxy_accuracy"]) > 0.3
    module.tokenizer.eval()
    with torch.no_grad():
        logits, _ = module.tokenizer.proxy_code_logits(x)
        target = module.proxy.encode(x).codes
    accuracy = (logits.flatten(2).argmax(1) == target).float().mean().item()
    assert accuracy > 0.3, accuracy  # chance is 1/64
    # stage 1 never touches the pixel decoder (no pixel loss reaches it)
    for k, v in module.tokenizer.pixel_decoder.state_dict().items():
        assert torch.equal(v, pixel_decoder_before[k]), k
    with pytest.raises(TokenizerError, match="proxy_tokenizer"):
        ImageReconstruction(tokenizer="titok-l-32", tokenizer_overrides=overrides, two_stage="proxy_codes")


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(RECIPES)) for p in [*RECIPES.glob("titok/*.yaml"), *RECIPES.glob("onedpiece/*.yaml")]))
def test_recipes_parse(recipe, capsys):
    """Every image recipe names only arguments the module, data module and trainer take."""
    from zoo.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(RECIPES / recipe), "--print_config"])
    assert e.value.code == 0, capsys.readouterr().err[-2000:]
    assert "zoo.training.image_recon.ImageReconstruction" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["titok-bl-64-vq", "titok-ll-32-vae"])
def test_titok_tiny_recipe_runs(tmp_path, name):
    from zoo.training.cli import main

    images = write_sample_images(tmp_path / "images", size=64)
    cli = main(["fit", "--config", str(RECIPES / "titok" / "tiny.yaml"), "--data.init_args.train_dir", str(images),
                "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
                "--model.init_args.tokenizer", name])
    assert cli.trainer.global_step == 3
    assert type(cli.model.tokenizer).__name__ == "TiTok" and np.isfinite(float(cli.trainer.callback_metrics["val/psnr"]))


def test_finetune_starts_from_a_checkpoint_folder(tmp_path):
    from zoo.errors import CheckpointError
    from zoo.training.image_recon import ImageReconstruction

    overrides = _tiny_overrides()
    trained = zoo.create("onedpiece-l-256", **overrides)
    trained.save_pretrained(tmp_path / "trained")
    module = ImageReconstruction(tokenizer="onedpiece-l-256", tokenizer_overrides=overrides, checkpoint=str(tmp_path / "trained"))
    for (name, a), b in zip(module.tokenizer.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), name
    assert module.tokenizer.training  # ready to train, although zoo.load returns eval-mode models
    with pytest.raises(CheckpointError, match="does not fit"):
        ImageReconstruction(tokenizer="onedpiece-l-256", tokenizer_overrides={**overrides, "encoder_width": 64}, checkpoint=str(tmp_path / "trained"))
