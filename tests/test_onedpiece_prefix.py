"""One-D-Piece's claim at toy scale: trained with tail token drop through the recipe, any prefix of
its tokens decodes, and reconstructions improve as more tokens are kept."""
from pathlib import Path

import pytest
import torch

from zoo.eval.image_metrics import psnr
from zoo.training.cli import main as lightning_main

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "onedpiece" / "tiny.yaml"


@pytest.mark.slow
def test_prefix_psnr_rises_with_tokens_on_a_trained_tiny_onedpiece(tmp_path, monkeypatch, one_thread):
    from zoo.io import read_image
    from zoo.training.image_set import build_image_set

    import zoo.training.image_set as image_set

    monkeypatch.setattr(image_set, "WALLPAPER_DIR", tmp_path / "no-wallpapers")  # scikit-image's photos only, for speed
    build_image_set(tmp_path / "set", size=64, crops_per_image=8, progress=False)
    overrides = ('{"image_size": 32, "patch_size": 8, "num_tokens": 16, "encoder_width": 64, "encoder_depth": 2, '
                 '"encoder_heads": 2, "decoder_width": 64, "decoder_depth": 2, "decoder_heads": 2, "token_dim": 8, '
                 '"codebook_size": 64, "codebook_distance": "cosine", "decoder_output": "pixels", '
                 '"latent_reshape_without_permute": false}')
    # the ViTs start at init_std 0.125 (about width ** -0.5): at the usual 0.02 a width-64 model passes almost
    # no signal through its layers, learns the mean image and leaves its prefixes unused (see below)
    options = '{"kmeans_init": true, "threshold_ema_dead_code": 1, "init_std": 0.125}'
    torch.manual_seed(0)
    cli = lightning_main([
        "fit", "--config", str(RECIPE), "--model.init_args.tokenizer_overrides", overrides,
        "--model.init_args.training_options", options,
        "--model.init_args.discriminator_weight", "0", "--model.init_args.val_token_counts", "null",
        "--data.init_args.train_dir", str(tmp_path / "set" / "train"), "--data.init_args.crop_size", "32",
        "--data.init_args.batch_size", "16", "--data.init_args.repeat", "16",
        "--trainer.max_steps", "2000", "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
    ])
    tokenizer = cli.model.trained_tokenizer().eval()
    # random 32x32 crops of 64x64 photos in training; here the center crops
    images = torch.stack([read_image(p)[:, 16:48, 16:48] for p in sorted((tmp_path / "set" / "train").glob("*.png"))])
    scores = {k: float(psnr(images, tokenizer.decode(tokenizer.encode(images, num_tokens=k))).mean()) for k in (1, 4, 16)}
    # PSNR at 1 / 4 / 16 tokens, one thread, 2000 steps, init_std 0.125, seed_everything 0 / 2 / 1 / 3:
    #   19.65 / 20.84 / 20.83, 20.43 / 20.99 / 20.99, 20.58 / 20.91 / 21.16, 20.28 / 21.16 / 21.18 dB; at 4000 steps, seeds 0 / 1:
    #   20.59 / 21.47 / 21.63, 20.30 / 21.38 / 21.90 dB. At the usual init std 0.02 (4000 steps) the gains were
    #   0.02 to 0.2 dB and came and went with the installed package versions (20.98 / 20.99 / 21.02 on the
    #   install of 2026-12-04). Reliably: 1 -> 4 tokens gain >= 0.33 dB and 1 -> 16 >= 0.56; past 4 tokens this toy
    #   model gains little at 2000 steps. The bars are under half the smallest gain seen, and 16 tokens may
    #   not lose more than 0.25 dB to 4.
    assert scores[1] + 0.15 < scores[4] and scores[1] + 0.25 < scores[16], scores
    assert scores[16] > scores[4] - 0.25, scores
