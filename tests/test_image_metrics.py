"""Offline image metrics against scikit-image and closed forms; clear errors for the metrics
that need backbone weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from zoo.errors import TokenizerError, WeightsUnavailableError
from zoo.eval.image_metrics import (LPIPS, InceptionFeatures, ReconstructionFID, codebook_usage_of, frechet_distance,
                                    psnr, ssim)


def _pair(shape=(3, 3, 40, 52)):
    x = torch.rand(shape)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    return x, y


def test_psnr_matches_skimage():
    x, y = _pair()
    ours = psnr(x, y)
    ref = [peak_signal_noise_ratio(x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64), data_range=1.0)
           for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_matches_skimage_gaussian_window():
    x, y = _pair()
    ours = ssim(x, y)
    ref = [structural_similarity(x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64), data_range=1.0,
                                 channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
           for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-8, atol=1e-10)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    # ranks a stronger distortion lower
    assert (ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)) < ours).all()


def test_metric_input_errors():
    with pytest.raises(TokenizerError, match="one shape"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(TokenizerError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_codebook_usage_respects_lengths():
    codes = torch.tensor([[0, 1, 2, 3], [0, 0, 5, 6]])
    full = codebook_usage_of(codes, 8)
    assert full.used_fraction == pytest.approx(6 / 8)
    head = codebook_usage_of(codes, 8, lengths=torch.tensor([2, 1]))  # codes 0, 1, 0
    assert head.used_fraction == pytest.approx(2 / 8)
    assert head.perplexity == pytest.approx(np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))))


def test_frechet_distance_closed_form():
    torch.manual_seed(0)
    a = torch.randn(4000, 3, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + 3, up to sampling error
    b = 2 * torch.randn(4000, 3, dtype=torch.float64) + torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    assert frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.05)


def test_rfid_accumulator_with_any_feature_module():
    features = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # (B, 12)
    fid = ReconstructionFID(features)
    x = torch.rand(16, 3, 8, 8)
    fid.update(x[:8], x[:8])
    fid.update(x[8:], x[8:])
    assert fid.compute() == pytest.approx(0.0, abs=1e-8)
    worse = ReconstructionFID(features)
    worse.update(x, (x * 0.5).clamp(0, 1))
    assert worse.compute() > 0.01


def test_weight_hungry_metrics_say_what_file_they_need(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="pt_inception"):
        InceptionFeatures(None)
    with pytest.raises(WeightsUnavailableError, match="LPIPS"):
        LPIPS(None, None)
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "notinception.safetensors"))
    with pytest.raises(TokenizerError, match="Inception"):
        InceptionFeatures(tmp_path / "notinception.safetensors")
