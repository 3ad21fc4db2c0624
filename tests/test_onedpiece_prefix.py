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
    torch.manual_seed(0)
    cli = lightning_main([
        "fit", "--config", str(RECIPE), "--model.init_args.tokenizer_overrides", overrides,
        "--model.init_args.discriminator_weight", "0", "--model.init_args.val_token_counts", "null",
        "--data.init_args.train_dir", str(tmp_path / "set" / "train"), "--data.init_args.crop_size", "32",
        "--data.init_args.batch_size", "16", "--data.init_args.repeat", "16",
        "--trainer.max_steps", "4000", "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
    ])
    tokenizer = cli.model.trained_tokenizer().eval()
    # random 32x32 crops of 64x64 photos in training; here the center crops
    images = torch.stack([read_image(p)[:, 16:48, 16:48] for p in sorted((tmp_path / "set" / "train").glob("*.png"))])
    scores = {k: float(psnr(images, tokenizer.decode(tokenizer.encode(images, num_tokens=k))).mean()) for k in (1, 4, 16)}
    # PSNR at 1 / 4 / 16 tokens measured here on one thread, seeds 0-3 (seed_everything):
    #   20.75 / 20.97 / 21.25, 19.93 / 20.88 / 20.81, 20.64 / 21.39 / 21.49, 20.57 / 21.08 / 21.08 dB;
    # on a fresh install of 2026-12-02 (vector-quantize-pytorch 1.32.0, scikit-image 0.26), seed 0:
    #   20.88 / 21.07 / 21.06 dB. Reliably: 1 -> 4 tokens gains >= 0.19 dB and 1 -> 16 >= 0.18 dB; past 4
    # tokens this toy model gains little (-0.07 to +0.28 dB) at 4000 steps. Those were with a euclidean
    # codebook; on a fresh install of the same day that one gave 20.94 / 20.96 / 20.96 (prefixes unused), and
    # the l2-normalized (cosine) codebook, the model's default, gave 20.44 / 20.96 / 21.06 dB, so the test
    # trains with it. The bars are under a fifth of the gains seen with it, and 16 tokens may not lose more
    # than 0.25 dB to 4.
    assert scores[1] + 0.08 < scores[4] and scores[1] + 0.08 < scores[16], scores
    assert scores[16] > scores[4] - 0.25, scores
