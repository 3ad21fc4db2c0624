"""Local parity check of our FlexTok against the official apple/ml-flextok code (not part of the suite:
it needs the official code, which the zoo does not ship).

    pip install hydra-core mup diffusers
    python tests/parity_flextok.py /path/to/ml-flextok [--seed 0] [--size d12-d12] [--steps 4]

Builds the official model from an official-style config (tests/flextok_reference.py) with random
weights (perturbed so that zero-initialised layers are live), converts its state dict with the zoo's
converter, and compares, on real photos (scikit-image's samples): codes for several prefix lengths,
and decoded images for the same seed, steps and guidance (APG and plain CFG). Prints the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flextok_reference import official_config  # noqa: E402

SIZES = {"d12-d12": (768, 12, 768, 12), "d18-d18": (1152, 18, 1152, 18), "tiny": (128, 2, 128, 2)}


def photos(n: int, size: int = 256) -> torch.Tensor:
    """n real photos in [0, 1], (n, 3, size, size)."""
    import skimage.data
    import torch.nn.functional as F

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]
    out = []
    for name in names[:n]:
        img = torch.from_numpy(getattr(skimage.data, name)()).float().div(255).permute(2, 0, 1)[None]
        side = min(img.shape[-2:])
        img = img[..., :side, :side]
        out.append(F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out).clamp(0, 1)


def official_model(config: dict, seed: int):
    from hydra.utils import instantiate

    from flextok.model.layers.attention import FlexAttention
    from flextok.model.preprocessors.flex_seq_packing import BlockWiseSequencePacker

    torch.manual_seed(seed)
    model = instantiate(config).eval()
    for module in model.modules():  # the CPU path: SDPA with a materialized mask
        if isinstance(module, FlexAttention):
            module.use_flex_attention = False
        elif isinstance(module, BlockWiseSequencePacker):
            module.compile_block_mask = False
            module.return_materialized_mask = True
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # live weights everywhere (the official init zeroes heads and adaLN)
                p.add_(torch.randn(p.shape, generator=g) * (0.02 if p.ndim > 1 else 0.05))
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("official", help="folder of apple/ml-flextok (holding the flextok package)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="d12-d12", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, args.official)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from zoo.hub.image_flextok import convert_official_flextok, flextok_config_from_official
    from zoo.io import load_state_dict_checked
    from zoo.models.image.flextok import FlexTok

    enc_dim, enc_depth, dec_dim, dec_depth = SIZES[args.size]
    config = official_config(enc_dim, enc_depth, dec_dim, dec_depth)
    official = official_model(config, args.seed)
    ours_config = flextok_config_from_official(config)
    ours = FlexTok(ours_config)
    load_state_dict_checked(ours, convert_official_flextok(official.state_dict(), ours_config, config), "official")
    ours.eval()

    images = photos(args.images)
    with torch.no_grad():
        official_codes = torch.cat(official.tokenize(images * 2 - 1))
    our_codes = ours.encode(images).codes
    print(f"codes: {our_codes.shape[1]} per image; identical: {torch.equal(official_codes, our_codes)} "
          f"({int((official_codes != our_codes).sum())} differ)")
    for k in (1, 4, 16, 64, 256):
        short = ours.encode(images, num_tokens=k).codes
        print(f"  prefix {k:3d}: identical {torch.equal(short, official_codes[:, :k])}")

    for k, guidance, norm in ((1, 7.5, True), (16, 7.5, True), (256, 7.5, True), (16, 3.0, False), (64, 1.0, False)):
        tokens = [official_codes[i:i + 1, :k] for i in range(len(images))]
        with torch.no_grad():
            ref = official.detokenize(tokens, timesteps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                                      guidance_scale=guidance, perform_norm_guidance=norm, verbose=False)
        ref = ((ref + 1) / 2).clamp(0, 1)
        got = ours.decode(ours.encode(images, num_tokens=k), steps=args.steps, guidance_scale=guidance,
                          norm_guidance=norm, seed=args.seed)
        inside = ((ref > 0) & (ref < 1)).float().mean().item()  # pixels the [0, 1] clamp leaves alone
        print(f"decode k={k:3d} guidance={guidance} apg={norm}: max |ours - official| = "
              f"{(got - ref).abs().max().item():.2e} ({100 * inside:.0f}% of pixels inside (0, 1))")


if __name__ == "__main__":
    main()
