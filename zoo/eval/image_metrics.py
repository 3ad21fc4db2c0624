"""Image reconstruction metrics.

Fully offline: PSNR, SSIM (Wang et al. 2004: 11-tap Gaussian window, sigma 1.5, population
covariances; equal to skimage.metrics.structural_similarity(gaussian_weights=True,
use_sample_covariance=False)), codebook usage, PSNR against the number of kept tokens.
With backbone weights given by local path: LPIPS and rFID. All images are float
(B, 3, H, W) in [0, 1]; per-image metrics return (B,) float64 tensors.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.quantize import CodebookUsage, codebook_usage
from zoo.tokens import lengths_to_mask


def _check_pair(x: torch.Tensor, y: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.ndim != 4:
        raise TokenizerError(f"{who} takes two image batches of one shape (B, C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}.")
    return x.detach().double(), y.detach().double()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,). Identical images give +inf."""
    x, y = _check_pair(x, y, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(sigma: float, truncate: float, dtype, device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # scipy.ndimage's radius
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image, (B,), averaged over channels and over the positions where
    the whole window fits (the border a window would need to pad is left out, as in skimage)."""
    x, y = _check_pair(x, y, "ssim")
    window = _gaussian_window(sigma, 3.5, x.dtype, x.device)
    if min(x.shape[-2:]) < window.numel():
        raise TokenizerError(f"ssim needs images of at least {window.numel()}x{window.numel()} pixels, got {tuple(x.shape[-2:])}.")
    channels = x.shape[1]
    wh = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    ww = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(t):  # separable Gaussian filter, valid positions only
        return F.conv2d(F.conv2d(t, wh, groups=channels), ww, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean((1, 2, 3))


def codebook_usage_of(codes: torch.Tensor, codebook_size: int, lengths: torch.Tensor | None = None) -> CodebookUsage:
    """Codebook usage over a batch of codes (B, N); with `lengths`, only the first lengths[b]
    tokens of each row count."""
    if lengths is not None:
        codes = codes[lengths_to_mask(lengths, codes.shape[1])]
    return codebook_usage(codes, codebook_size)


@torch.no_grad()
def psnr_by_token_count(tokenizer, images: torch.Tensor, token_counts) -> dict[int, float]:
    """Mean PSNR of the reconstruction from the first k tokens, for each k in `token_counts`
    (flexible-length tokenizers: those whose encode takes `num_tokens`)."""
    result = {}
    for k in token_counts:
        recon = tokenizer.decode(tokenizer.encode(images, num_tokens=int(k))).clamp(0, 1)
        result[int(k)] = float(psnr(recon, images).mean())
    return result


# ---- metrics that need backbone weights -------------------------------------------------------

class LPIPS(nn.Module):
    """LPIPS-VGG distance per image pair, (B,). Needs torchvision's VGG16 ImageNet weights and the
    LPIPS linear weights as local files."""

    def __init__(self, vgg16_weights: str | Path | None, linear_weights: str | Path | None):
        super().__init__()
        from zoo.losses.perceptual import build_perceptual_loss

        if vgg16_weights is None or linear_weights is None:
            raise WeightsUnavailableError(
                "LPIPS needs two local files: torchvision's VGG16 weights (vgg16-397923af.pth) and the LPIPS "
                "linear weights (weights/v0.1/vgg.pth of the LPIPS release); pass both paths."
            )
        self.loss = build_perceptual_loss("vgg16", vgg16_weights, linear_weights)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair: (B, 3, H, W) x2 in [0, 1] -> (B,) float64."""
        return self.loss.distance(x.float(), y.float()).double()


class InceptionFeatures(nn.Module):
    """2048-d pool features of torchvision's Inception-v3 for FID. `weights`: a local state dict
    with torchvision's layout, either torchvision's ImageNet weights (1000 classes; inputs get
    ImageNet normalisation) or pytorch-fid's FID weights pt_inception-2015-12-05 (1008 classes;
    inputs in [-1, 1]). The FID weights come from TensorFlow's graph, whose pooling differs in a
    few blocks from torchvision's, so scores are close to, not equal to, the reference FID;
    compare rFID only between runs of this code."""

    def __init__(self, weights: str | Path | None):
        super().__init__()
        from torchvision.models import inception_v3

        from zoo.io import read_checkpoint

        if weights is None:
            raise WeightsUnavailableError(
                "rFID needs Inception-v3 weights as a local file (nothing is downloaded): pass the path of "
                "pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torchvision's inception_v3_google weights."
            )
        state = {k: v for k, v in read_checkpoint(weights).items() if not k.startswith("AuxLogits.")}
        if "fc.weight" not in state:
            raise CheckpointError(f"{weights} is not an Inception-v3 state dict in torchvision's layout (no fc.weight).")
        num_classes = state["fc.weight"].shape[0]
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=num_classes,
                           transform_input=False)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{weights} does not fit torchvision's Inception-v3 ({str(e).splitlines()[0]}).") from None
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)
        self.fid_weights = num_classes == 1008
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> Inception-v3 pool features (B, 2048)."""
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = x * 2 - 1 if self.fid_weights else (x - self.mean) / self.std
        return self.net.eval()(x)  # (B, 2048)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the trace of the square root is the sum
    of square roots of the eigenvalues of S_a S_b (real and >= 0 for covariance matrices)."""
    a, b = feats_a.double(), feats_b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise TokenizerError(f"frechet_distance needs two feature sets (N >= 2, D), got {tuple(a.shape)} and {tuple(b.shape)}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum())


class ReconstructionFID:
    """rFID accumulator: `update(real, reconstructed)` per batch, `compute()` at the end."""

    def __init__(self, features: nn.Module):
        self.features = features
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    @classmethod
    def from_path(cls, inception_weights: str | Path | None) -> "ReconstructionFID":
        """An rFID accumulator whose Inception-v3 weights come from this file."""
        return cls(InceptionFeatures(inception_weights))

    @torch.no_grad()
    def update(self, real: torch.Tensor, reconstructed: torch.Tensor) -> None:
        """Add the features of a batch of originals and of their reconstructions."""
        self.real.append(self.features(real).double().cpu())
        self.fake.append(self.features(reconstructed).double().cpu())

    def compute(self) -> float:
        """The Frechet distance between the accumulated original and reconstruction features."""
        if sum(len(r) for r in self.real) < 2:
            raise TokenizerError("rFID needs at least two images; call update() with more batches first.")
        return frechet_distance(torch.cat(self.real), torch.cat(self.fake))


def mean_finite(values: torch.Tensor) -> float:
    """Mean of per-image values, ignoring +inf PSNRs of exact reconstructions."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.inf
