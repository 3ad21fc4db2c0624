"""ALIT parity: the official code (ShivamDuggal4/adaptive-length-tokenizer, a local checkout) beside ours on
the same random weights.

    OMP_NUM_THREADS=1 python tests/parity_alit.py /path/to/adaptive-length-tokenizer [--size reduced|small|base|semilarge]
                                                  [--base vqgan|vae] [--continuous] [--images 2] [--seed 0]
    OMP_NUM_THREADS=1 python tests/parity_alit.py /path/to/adaptive-length-tokenizer --layouts

Builds the official AdaptiveLengthImageTokenizer (random init; the released sizes, or a reduced width and
depth at the released 256x256 input and 16x16 grid, which the official code requires), saves it as an
official release is saved (a .pth with 'model', 'ema', an argparse.Namespace of training arguments and a
training-only gan_losses tensor), loads that file through the zoo's reader and converter, and compares,
one image at a time (as the official evaluation runs), at every rollout (32 ... 256 tokens):
  - the codes (quantized variants) or token latents (continuous ones): ours from encode(num_tokens=32 r),
    theirs from the official forward at rollout r,
  - the reconstruction (max abs difference, unclamped),
  - the quality search: ours (encode(quality=q), linear and binary) against the rule applied to the official
    reconstructions (the first rollout whose clamped L1 is at most q, else the last), and the official
    encode's own choice (strict <, unclamped, else the lowest error) for information,
and that a batch gives each image what it gets alone. `--layouts` only builds the official model of every
registered name (its size, base and quantization) and loads it through the converter (strict keys and shapes).

The VQGAN code logits are sharpened (x10: a random head's softmax is near uniform, which would make every
reconstruction the codebook's mean whatever the tokens) and the random base decoder's last conv is scaled so
that reconstructions are of order 1. With random weights no cell's true VQGAN code would get a probability
near the released halting threshold (0.55; about 1 / 1024 is typical): the VQGAN codebook is drawn anew at
unit scale (the random init's rows lie within 1e-3 of one another, below the float32 rounding of the squared
distances, so the nearest code would be a near-tie), its codes 8 and up are moved far away (the true code is one of codes 0-7) and the decoder's logits of codes 0-7 are raised by 8, so that the true code's probability spreads over (0, 1); and the threshold is set, on both sides, to the probability halfway between the two middle
cells of the first image's true codes at rollout 1: about half the 2D tokens are masked after each rollout. Two halting modes
(VQGAN): "mode", the official Bernoulli draw replaced by its most likely outcome (every cell at or over the
threshold, our default), and "sample", the official draw taken from a seeded generator, against ours with
halting_seed (the same numbers in the same order).

Shims, applied to the official code at run time and never committed: Tensor.get_device() answers "cpu" for
CPU tensors (the official code passes its result to .to(), which refuses -1); the VAE posterior's sample()
returns its mode (the zoo encodes the mode; the official code draws); torch.bernoulli as described above;
train_stage set to "full_finetuning" after construction (its VQGAN reconstruction path, the one the official
evaluation uses, without building the discriminators and LPIPS of that stage).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"reduced": (32, 384, 2, 8), "small": (128, 1024, 8, 8), "base": (128, 768, 12, 12),
         "semilarge": (128, 1024, 16, 16)}  # VQGAN / VAE channels, width, layers, heads
DRAWS = {"generator": None}  # the generator the shimmed torch.bernoulli draws from


def import_official(path: Path):
    """The official modules, imported from a checkout at `path` (its code expects that folder as the cwd)."""
    os.chdir(path)
    sys.path[:0] = [str(path), str(path / "base_tokenizers")]
    real = torch.Tensor.get_device
    torch.Tensor.get_device = lambda self: real(self) if self.is_cuda else "cpu"
    from adaptive_tokenizers import adaptive_vae, adaptive_vqgan
    from base_tokenizers import vae_ldm
    from base_tokenizers.taming.models.vqgan import VQModel
    from modules.base_tokenizers import LDMVAEWrapper, VQGANWrapper

    vae_ldm.DiagonalGaussianDistribution.sample = lambda self: self.mean
    real_bernoulli = torch.bernoulli

    def bernoulli(p, *args, **kwargs):
        if DRAWS["generator"] == "mode":
            return torch.ones_like(p)
        if DRAWS["generator"] is not None:
            return (torch.rand(p.shape, generator=DRAWS["generator"]) < p).to(p.dtype)
        return real_bernoulli(p, *args, **kwargs)

    torch.bernoulli = bernoulli
    return dict(VQModel=VQModel, vae_ldm=vae_ldm, adaptive_vqgan=adaptive_vqgan, adaptive_vae=adaptive_vae,
                VQGANWrapper=VQGANWrapper, LDMVAEWrapper=LDMVAEWrapper)


def official_model(official, base: str, quantize: bool, size: str):
    """The official AdaptiveLengthImageTokenizer with random weights at `size`."""
    channels, width, depth, heads = SIZES[size]
    if base == "vqgan":
        class Base(official["VQGANWrapper"]):
            def __init__(self):
                nn.Module.__init__(self)
                self.is_requires_grad, self.embed_dim, self.codebook_size, self.codebook_emb_dim = False, 256, 1024, 256
                ddconfig = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=channels,
                                ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
                self.vqgan = official["VQModel"](ddconfig=ddconfig, n_embed=1024, embed_dim=256)
        tokenizer_class, threshold = official["adaptive_vqgan"].AdaptiveLengthImageTokenizer, 0.55
    else:
        vae_ldm = official["vae_ldm"]

        class Base(official["LDMVAEWrapper"]):
            def __init__(self):
                nn.Module.__init__(self)
                self.is_requires_grad, self.embed_dim = False, 16
                vae = vae_ldm.AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4))
                vae.encoder = vae_ldm.Encoder(ch=channels, ch_mult=(1, 1, 2, 2, 4), z_channels=16)
                vae.decoder = vae_ldm.Decoder(ch=channels, ch_mult=(1, 1, 2, 2, 4), z_channels=16)
                self.vae = vae
        tokenizer_class, threshold = official["adaptive_vae"].AdaptiveLengthImageTokenizer, 0.025
    model = tokenizer_class(Base(), width, depth, heads, width, depth, heads, quantize_latent=quantize,
                            factorize_latent=True, dynamic_halting_threshold=threshold, train_stage="inference")
    model.train_stage = "full_finetuning"  # its reconstruction path (the official evaluation's), no GAN losses
    return model.eval(), (channels, width, depth, heads)


def our_config(base: str, quantize: bool, sizes):
    from zoo.models.image.alit import ALITConfig

    channels, width, depth, heads = sizes
    mult = (1, 1, 2, 2, 4)
    return ALITConfig(base_tokenizer=base, quantize=quantize, encoder_width=width, encoder_depth=depth,
                      encoder_heads=heads, decoder_width=width, decoder_depth=depth, decoder_heads=heads,
                      pixel_decoder_channels=channels, pixel_decoder_channel_mult=mult,
                      vae_block_channels=tuple(channels * m for m in mult))


@torch.no_grad()
def official_rollouts(official, image: torch.Tensor, draws):
    """Per rollout: (codes (32 r,) or token latents (32 r, 12), reconstruction (1, 3, H, W)) of the official
    forward on one image; `draws`: "mode" or a seed for the halting draw."""
    captured = []
    if getattr(official, "quantize_latent", False):
        hook = official.quantize.register_forward_hook(lambda m, i, o: captured.append(o[1]["min_encoding_indices"][0]))
    else:
        hook = official.pre_quantizer_mlp.register_forward_hook(lambda m, i, o: captured.append(o[0]))
    masked = []
    real = official.perform_dynamic_halting

    def counting(x, *args):  # how many 2D tokens the official halting replaced (the last rollout's is unused)
        out = real(x, *args)
        masked.append(int((out[:, 1:args[-1]] != x[:, 1:args[-1]]).any(-1).sum()))
        return out

    official.perform_dynamic_halting = counting
    DRAWS["generator"] = draws if draws == "mode" else torch.Generator().manual_seed(draws)
    logs = official(image, reconstruction_iters="all")
    DRAWS["generator"] = None
    del official.perform_dynamic_halting
    hook.remove()
    return [(captured[r], logs[r][f"reconstructed_imgs_{r}"]) for r in range(len(logs))], masked[:-1]


@torch.no_grad()
def set_up(official, images: torch.Tensor, base: str) -> float:
    """Sharpen the VQGAN code logits, scale the base decoder's output to order 1 and return the halting
    threshold to use (halfway between the two middle probabilities of the first image's true codes at
    rollout 1; VAE: the official one, whose halting sets no mask anyway)."""
    if base == "vqgan":
        official.decoder.ffn[2].weight.mul_(10.0)
        # codes 8 and up moved far away (the nearest code, the true one, is one of codes 0-7) and the decoder's
        # mass put on codes 0-7, so that the true code's probability spreads over (0, 1) and the halting draws
        # are not all misses (exact copies of rows would tie, and the two sides may break ties differently)
        codebook = official.base_tokenizer.vqgan.quantize.embedding.weight
        codebook.normal_()  # rows as far apart as trained codes (the random init's are within 1e-3 of one
        codebook[8:].add_(100.0)  # another, below float32 rounding of the squared distances: near-ties)
        official.decoder.ffn[2].bias[:8].add_(8.0)
    decoder = official.base_tokenizer.vqgan.decoder if base == "vqgan" else official.base_tokenizer.vae.decoder
    logs, _ = official_rollouts(official, images[:1], "mode")
    peak = float(logs[0][1].abs().max())
    decoder.conv_out.weight.div_(peak)
    decoder.conv_out.bias.div_(peak)
    if base != "vqgan":
        return official.dynamic_halting_threshold
    _, codes = official.base_tokenizer.get_img_tokens(images[:1])
    captured = []
    hook = official.decoder.register_forward_hook(lambda m, i, o: captured.append(o))
    official_rollouts(official, images[:1], "mode")
    hook.remove()
    p = torch.softmax(captured[0], dim=-1).gather(-1, codes[..., None])[..., 0].flatten().sort().values
    return float(p[p.numel() // 2 - 1] + p[p.numel() // 2]) / 2  # between two cells: no cell within rounding of it


def check_layouts(official_modules) -> int:
    """Every registered ALIT name against the official model of its size, base and quantization (random
    init, saved as a release): the converter's strict key and shape checks must pass."""
    import zoo
    from zoo.hub.image_alit import load_official_alit, model_name

    failures = []
    for name in zoo.list_models("alit-*"):
        config = zoo.model_entry(name).config
        size = model_name(config).removeprefix("alit_")
        official, _ = official_model(official_modules, config.base_tokenizer, config.quantize, size)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "release.pth"
            saved_args = argparse.Namespace(model=f"alit_{size}", base_tokenizer=config.base_tokenizer,
                                            quantize_latent=config.quantize, factorize_latent=True)
            torch.save({"ema": official.state_dict(), "args": saved_args}, path)
            try:
                ours = load_official_alit(path, config)
                print(f"{name}: the official alit_{size} loads ({sum(p.numel() for p in ours.parameters()):,} "
                      "parameters)")
            except Exception as e:  # noqa: BLE001 - reported
                failures.append(name)
                print(f"{name}: FAILED {e}")
        del official
    print("LAYOUTS OK" if not failures else f"LAYOUTS FAILED: {failures}")
    return 0 if not failures else 1


def l1(reconstruction: torch.Tensor, image: torch.Tensor) -> float:
    return float((reconstruction.clamp(0, 1) - image).abs().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="a checkout of github.com/ShivamDuggal4/adaptive-length-tokenizer")
    parser.add_argument("--size", choices=tuple(SIZES), default="reduced")
    parser.add_argument("--base", choices=("vqgan", "vae"), default="vqgan")
    parser.add_argument("--continuous", action="store_true", help="the continuous-latent variant")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", action="store_true",
                        help="only check that every registered ALIT name loads the official model of its size")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    here = Path.cwd()
    sys.path.insert(0, str(ROOT))
    official_modules = import_official(args.official.resolve())
    os.chdir(here)
    from zoo.hub.image_alit import load_official_alit
    from zoo.models.image import alit as alit_module

    if args.layouts:
        return check_layouts(official_modules)

    torch.manual_seed(args.seed)
    quantize = not args.continuous
    images = torch.rand(args.images, 3, 256, 256)
    images[-1] = torch.linspace(0, 1, 256)[None, None].expand(3, 256, 256)  # one smooth image beside the noise
    official, sizes = official_model(official_modules, args.base, quantize, args.size)
    threshold = set_up(official, images, args.base)
    official.dynamic_halting_threshold = threshold
    alit_module.HALTING_THRESHOLD = threshold
    state = official.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alit_official.pth"
        saved_args = argparse.Namespace(model=f"alit_{args.size}" if args.size != "reduced" else "alit_reduced",
                                        base_tokenizer=args.base, quantize_latent=quantize, factorize_latent=True,
                                        input_size=256, output_dir="./output_dir")
        if args.size == "reduced":
            del saved_args.model  # a size of no release: nothing to check it against
        training_only = {"gan_losses.0.discriminator.main.0.weight": torch.randn(64, 3, 4, 4)}
        torch.save({"model": {**state, **training_only}, "ema": {**state, **training_only}, "args": saved_args,
                    "epoch": 0}, path)
        ours = load_official_alit(path, our_config(args.base, quantize, sizes))
    print(f"ALIT parity: base {args.base}, {'quantized' if quantize else 'continuous'} tokens, {args.size} size, "
          f"{args.images} images of 256x256; halting threshold {threshold:.6g}; "
          f"{sum(p.numel() for p in ours.parameters()):,} parameters converted from the official .pth ('ema')")
    worst = {"recon": 0.0, "latents": 0.0, "peak": 0.0}
    failures = []
    modes = ("mode", "sample") if args.base == "vqgan" else ("mode",)
    for mode in modes:
        seed = args.seed + 11
        halting = {} if mode == "mode" else {"halting_seed": seed}
        for i in range(args.images):
            image = images[i:i + 1]
            theirs, masked = official_rollouts(official, image, "mode" if mode == "mode" else seed)
            errors, row = [], []
            for r, (tokens, recon) in enumerate(theirs, start=1):
                mine = ours.encode(image, num_tokens=32 * r, **halting)
                if quantize:
                    same = bool(torch.equal(mine.codes[0], tokens))
                    latents = ours.quantizer.codes_to_latents(mine.codes)
                    diff = 0.0
                else:
                    diff = float((mine.latents[0] - tokens).abs().max())
                    same, latents = diff < 1e-4, mine.latents
                    worst["latents"] = max(worst["latents"], diff)
                recon_diff = float((ours.base_decode(ours.decoder(latents)) - recon).abs().max())
                worst["recon"] = max(worst["recon"], recon_diff)
                worst["peak"] = max(worst["peak"], float(recon.abs().max()))
                errors.append(l1(recon, image))
                row.append(f"{32 * r}: {'=' if same else 'DIFFERENT'} {recon_diff:.1e}")
                if not same or recon_diff > 1e-4:
                    failures.append((mode, i, 32 * r))
            print(f"[{mode}] img{i} per rollout (tokens: {'codes' if quantize else 'latents'} same, recon max|diff|): "
                  + "; ".join(row) + f"\n    2D tokens the official halting masked after rollouts 1-7: {masked}")
            ordered = sorted(errors)  # targets between the errors reached: none within rounding of one
            middle = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
            for q in [(a + b) / 2 for a, b in zip(ordered, ordered[1:])][::2] + [0.0, 1.0]:
                rule = next((r for r, e in enumerate(errors[:-1], start=1) if e <= q), len(errors))
                found = {s: int(ours.encode(image, quality=q, search=s, **halting).lengths[0]) // 32
                         for s in ("linear", "binary")}
                if found["linear"] != rule:
                    failures.append((mode, i, q, "linear search"))
                monotone = all(a >= b for a, b in zip(errors, errors[1:]))
                if monotone and found["binary"] != rule:
                    failures.append((mode, i, q, "binary search"))
                if q == 1.0:  # the official encode's own choice at one target (it reruns every rollout)
                    DRAWS["generator"] = "mode" if mode == "mode" else torch.Generator().manual_seed(seed)
                    chosen = official.encode(image, return_min_length_embedding=True, threshold=middle)[0].shape[1]
                    DRAWS["generator"] = None
                    print(f"    the official encode(threshold={middle:.4f}) keeps {chosen} tokens (strict <, "
                          "unclamped, else the lowest error)")
                print(f"    quality {q:.4f}: rule on the official reconstructions {32 * rule}, ours linear "
                      f"{32 * found['linear']}, binary {32 * found['binary']}"
                      + ("" if monotone else " (errors not decreasing: binary may differ)"))
        batch = ours.encode(images, quality=middle, **halting)
        alone = [ours.encode(images[i:i + 1], quality=middle, **halting) for i in range(args.images)]
        batch_same = all(int(batch.lengths[i]) == int(a.lengths[0]) for i, a in enumerate(alone)) and all(
            torch.equal(batch.codes[i, :int(a.lengths[0])], a.codes[0]) if quantize else
            torch.allclose(batch.latents[i, :int(a.lengths[0])], a.latents[0], atol=1e-5) for i, a in enumerate(alone))
        batch_recon = float((ours.decode(batch) - torch.cat([ours.decode(a) for a in alone])).abs().max())
        print(f"[{mode}] batch == alone: {batch_same} (lengths {batch.lengths.tolist()} / alone "
              f"{[int(a.lengths[0]) for a in alone]}, recon max|diff| {batch_recon:.1e})")
        if not batch_same or batch_recon > 1e-4:
            failures.append((mode, "batch"))
    print(f"\nmax reconstruction |diff| {worst['recon']:.2e} (reconstructions peak at {worst['peak']:.2f})"
          + ("" if quantize else f", max token latent |diff| {worst['latents']:.2e}"))
    print("PARITY OK" if not failures else f"PARITY FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
