"""KARL parity: the official code (ShivamDuggal4/karl, a local checkout) beside ours on the same random weights.

    OMP_NUM_THREADS=1 python tests/parity_karl.py /path/to/karl [--size released|reduced] [--base vqgan|vae]
                                                  [--continuous] [--images 2] [--seed 0]

Builds the official KARLTokenizer (random init, or a reduced width / depth at the released 256x256 input
and 16x16 grid, which the official code requires), saves it as an official release is saved (a .pth with
'model', 'ema' and an argparse.Namespace of training arguments), loads that file through the zoo's reader
and converter, and compares, image by image (the official eval runs one image at a time), for several
budgets and target errors:
  - halting: the tokens the official halting head keeps against our per-image length,
  - codes (quantized variants) or token latents (continuous ones) of the kept tokens,
  - the reconstruction (max abs difference, unclamped, before the [0, 1] clamp),
and that a batch gives each image what it gets alone.

The target-error embeddings are drawn at random (as initialised, each row is one value repeated, which
the encoder's first LayerNorm maps to zero, so the target would change nothing), the VQGAN code logits
are sharpened (x100: a random head's softmax is near uniform, which would make every reconstruction the
codebook's mean whatever the tokens), and the random base decoder's last conv is scaled so that
reconstructions are of order 1. Three weight settings: as initialised (the halting head then halts
nothing: every probability is near 0.5), "suffix" (the latent tokens and the halting head reshaped so
that the trailing tokens halt, from about token 151 of 256: what a trained KARL predicts), and
"scattered" (the halting head's bias raised so that tokens halt wherever their random probability lands;
there the official decoder hides halted tokens in place while ours keeps the leading ones, so only the
counts are expected to agree).

Shims, applied to the official code at run time and never committed: Tensor.get_device() answers "cpu"
for CPU tensors (the official code passes its result to torch.zeros / .to, which refuse -1), and for the
VAE variant the posterior's sample() returns its mode (the zoo encodes the mode; the official code draws).
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


def import_official(path: Path):
    """The official modules, imported from a checkout at `path` (its code expects that folder as the cwd)."""
    os.chdir(path)
    sys.path[:0] = [str(path), str(path / "base_tokenizers")]
    real = torch.Tensor.get_device
    torch.Tensor.get_device = lambda self: real(self) if self.is_cuda else "cpu"
    from base_tokenizers import vae_ldm
    from base_tokenizers.taming.models.vqgan import VQModel
    from kolmogorov_tokenizers import karl_vae, karl_vqgan
    from modules.base_tokenizers import LDMVAEWrapper, VQGANWrapper

    vae_ldm.DiagonalGaussianDistribution.sample = lambda self: self.mean
    return dict(VQModel=VQModel, vae_ldm=vae_ldm, karl_vqgan=karl_vqgan, karl_vae=karl_vae,
                VQGANWrapper=VQGANWrapper, LDMVAEWrapper=LDMVAEWrapper)


def official_model(official, base: str, quantize: bool, size: str):
    """The official KARLTokenizer with random weights: karl_small's sizes, or reduced ones (released layout)."""
    vqgan_channels, width, depth, heads = (128, 1024, 8, 8) if size == "released" else (32, 384, 2, 8)
    if base == "vqgan":
        class Base(official["VQGANWrapper"]):
            def __init__(self):
                nn.Module.__init__(self)
                self.is_requires_grad, self.embed_dim, self.codebook_size, self.codebook_emb_dim = False, 256, 1024, 256
                ddconfig = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=vqgan_channels,
                                ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
                self.vqgan = official["VQModel"](ddconfig=ddconfig, n_embed=1024, embed_dim=256)
        tokenizer_class = official["karl_vqgan"].KARLTokenizer
    else:
        vae_ldm = official["vae_ldm"]

        class Base(official["LDMVAEWrapper"]):
            def __init__(self):
                nn.Module.__init__(self)
                self.is_requires_grad, self.embed_dim = False, 16
                vae = vae_ldm.AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4))
                vae.encoder = vae_ldm.Encoder(ch=vqgan_channels, ch_mult=(1, 1, 2, 2, 4), z_channels=16)
                vae.decoder = vae_ldm.Decoder(ch=vqgan_channels, ch_mult=(1, 1, 2, 2, 4), z_channels=16)
                self.vae = vae
        tokenizer_class = official["karl_vae"].KARLTokenizer
    return tokenizer_class(Base(), width, depth, heads, width, depth, heads, quantize_latent=quantize,
                           train_stage="inference").eval(), (vqgan_channels, width, depth, heads)


def our_config(base: str, quantize: bool, sizes):
    from zoo.models.image.karl import KARLConfig

    channels, width, depth, heads = sizes
    mult = (1, 1, 2, 2, 4)
    return KARLConfig(base_tokenizer=base, quantize=quantize, encoder_width=width, encoder_depth=depth,
                      encoder_heads=heads, decoder_width=width, decoder_depth=depth, decoder_heads=heads,
                      pixel_decoder_channels=channels, pixel_decoder_channel_mult=mult,
                      vae_block_channels=tuple(channels * m for m in mult))


@torch.no_grad()
def shape_halting(official, images: torch.Tensor, mode: str, seed: int) -> None:
    """Reshape the official model's weights so that its halting head halts tokens ("suffix": the trailing
    ones, from a place that depends on the image; "scattered": wherever their probability lands)."""
    if mode == "init":
        return
    head = official.halting_mlp
    if mode == "scattered":
        g = torch.Generator().manual_seed(seed)
        head[2].weight.copy_(torch.randn(head[2].weight.shape, generator=g) * 0.2)
        head[2].bias.fill_(1.0)
        return
    width, slots = official.latent_tokens.shape[1], official.latent_tokens.shape[0]
    g = torch.Generator().manual_seed(seed)
    u, v = torch.linalg.qr(torch.randn(width, 2, generator=g) - 0.0)[0].T  # orthonormal directions
    theta = torch.linspace(0, torch.pi, slots)[:, None]
    official.latent_tokens.copy_(theta.cos() * u + theta.sin() * v)  # turning from u to v along the positions
    official.encoder_ln_pre.weight.mul_(20.0)  # the tokens' own embedding outweighs the random blocks' updates
    official.encoder_ln_pre.bias.mul_(20.0)
    head[0].weight.copy_(u[None].expand_as(head[0].weight) / width ** 0.5)
    head[0].bias.zero_()
    head[2].weight.fill_(1.0 / head[2].weight.shape[1])
    head[2].bias.zero_()
    scores = []  # mean tanh(<LN(h), u> / sqrt(W)) of each latent token of the first image, at a budget of 256
    hook = head.register_forward_hook(lambda m, i, o: scores.append(o[0, :, 0].clone()))
    official.encode(images[:1], input_token_budget=[256], desired_reconstruction_quality=0.05)
    hook.remove()
    score = scores[0]
    edge, sign = 0.5 * float(score[150] + score[151]), 1.0 if float(score[200] - score[100]) > 0 else -1.0
    head[2].weight.mul_(sign * 200.0)
    head[2].bias.fill_(1.0986 - sign * 200.0 * edge)  # logit(0.75) between tokens 150 and 151 of the first image


def normalise_output(official, images: torch.Tensor) -> None:
    """Scale the random base decoder's last conv so that reconstructions are of order 1, as a trained one's
    are (its random output reaches several units, and float32 rounding grows with it)."""
    decoder = official.base_tokenizer.vqgan.decoder if hasattr(official.base_tokenizer, "vqgan") else \
        official.base_tokenizer.vae.decoder
    _, reconstructions, _ = official.encode(images[:1], input_token_budget=[16], desired_reconstruction_quality=0.05)
    peak = float(reconstructions[0].abs().max())
    with torch.no_grad():
        decoder.conv_out.weight.div_(peak)
        decoder.conv_out.bias.div_(peak)


@torch.no_grad()
def official_run(official, image: torch.Tensor, budget: int, quality: float):
    """(kept mask (k,) bool, codes (k,) or latents (k, C), reconstruction (1, 3, H, W)) of the official encode."""
    captured = {}
    hooks = [official.halting_mlp.register_forward_hook(lambda m, i, o: captured.__setitem__("halt", torch.sigmoid(o)))]
    if getattr(official, "quantize_latent", False):
        hooks.append(official.quantize.register_forward_hook(
            lambda m, i, o: captured.__setitem__("codes", o[1]["min_encoding_indices"])))
    else:
        hooks.append(official.pre_quantizer_mlp.register_forward_hook(lambda m, i, o: captured.__setitem__("latents", o)))
    _, reconstructions, _ = official.encode(image, input_token_budget=[budget], desired_reconstruction_quality=quality)
    for h in hooks:
        h.remove()
    kept = captured["halt"][0, :, 0] <= 0.75
    tokens = captured["codes"][0] if "codes" in captured else captured["latents"][0]
    return kept, tokens, reconstructions[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="a checkout of github.com/ShivamDuggal4/karl")
    parser.add_argument("--size", choices=("released", "reduced"), default="reduced")
    parser.add_argument("--base", choices=("vqgan", "vae"), default="vqgan")
    parser.add_argument("--continuous", action="store_true", help="the continuous-latent variant")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="init,suffix,scattered")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    here = Path.cwd()
    sys.path.insert(0, str(ROOT))
    official_modules = import_official(args.official.resolve())
    os.chdir(here)
    from zoo.hub.image_karl import load_official_karl

    torch.manual_seed(args.seed)
    quantize = not args.continuous
    images = torch.rand(args.images, 3, 256, 256)
    images[-1] = torch.linspace(0, 1, 256)[None, None].expand(3, 256, 256)  # one smooth image beside the noise
    settings = [(256, 0.05), (256, 0.005), (256, 0.2), (200, 0.05), (128, 0.05), (64, 0.38)]
    print(f"KARL parity: base {args.base}, {'quantized' if quantize else 'continuous'} tokens, {args.size} size, "
          f"{args.images} images of 256x256, settings (budget, quality) {settings}")
    worst = {"recon": 0.0, "latents": 0.0, "peak": 0.0}
    failures = []
    for mode in args.modes.split(","):
        torch.manual_seed(args.seed)
        official, sizes = official_model(official_modules, args.base, quantize, args.size)
        official.rec_loss_embeddings.normal_()  # as initialised each row is one value, which ln_pre maps to zero
        if args.base == "vqgan":  # peaked code logits: a random head's near-uniform softmax hides the tokens
            official.decoder.ffn[2].weight.mul_(100.0)
        normalise_output(official, images)
        shape_halting(official, images, mode, args.seed)
        state = official.state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "karl_official.pth"
            saved_args = argparse.Namespace(model="karl_small", base_tokenizer=args.base, quantize_latent=quantize,
                                            factorize_latent=True, input_size=256, output_dir="./output_dir")
            torch.save({"model": dict(state), "ema": state, "args": saved_args, "epoch": 0}, path)
            ours = load_official_karl(path, our_config(args.base, quantize, sizes))
        print(f"\n[{mode}] weights converted from the official .pth ('ema'); {sum(p.numel() for p in ours.parameters()):,} "
              "parameters")
        for budget, quality in settings:
            per_image = []
            peak = 0.0
            for i in range(args.images):
                kept, tokens, recon = official_run(official, images[i:i + 1], budget, quality)
                mine = ours.encode(images[i:i + 1], num_tokens=budget, quality=quality)
                length = int(mine.lengths[0])
                count = int(kept.sum())
                suffix = bool(kept[:count].all())  # the official kept tokens are the leading ones
                same_kept = suffix and count == length or (count == 0 and length == 1 and not kept.any())
                if quantize:
                    same_tokens = bool(torch.equal(mine.codes[0, :length], tokens[:length]))
                    latents_diff = 0.0
                else:
                    latents_diff = float((mine.latents[0, :length] - tokens[:length]).abs().max())
                    same_tokens = latents_diff < 1e-4
                our_latents = (ours.quantizer.codes_to_latents(mine.codes) if quantize else mine.latents)
                recon_diff = float((ours.decode_latents(our_latents, mine.lengths) - recon).abs().max())
                peak = max(peak, float(recon.abs().max()))
                per_image.append((count, length, suffix, same_kept, same_tokens, recon_diff, latents_diff))
            batch = ours.encode(images, num_tokens=budget, quality=quality)
            alone = [ours.encode(images[i:i + 1], num_tokens=budget, quality=quality) for i in range(args.images)]
            batch_same = all(int(batch.lengths[i]) == int(a.lengths[0]) for i, a in enumerate(alone)) and all(
                torch.equal(batch.codes[i, :int(a.lengths[0])], a.codes[0]) if quantize else
                torch.allclose(batch.latents[i, :int(a.lengths[0])], a.latents[0], atol=1e-5) for i, a in enumerate(alone))
            batch_recon = float((ours.decode(batch) - torch.cat([ours.decode(a) for a in alone])).abs().max())
            rows = "; ".join(f"img{i}: official keeps {c}{'' if s else ' (scattered)'} / ours {n}, same kept {k}, "
                             f"same {'codes' if quantize else 'latents'} {t}, recon max|diff| {r:.2e}"
                             for i, (c, n, s, k, t, r, _) in enumerate(per_image))
            worst["peak"] = max(worst["peak"], peak)
            print(f"  budget {budget:3d} quality {quality:<5}: {rows}; batch == alone: {batch_same} "
                  f"(recon max|diff| {batch_recon:.2e})")
            for c, n, s, k, t, r, lat in per_image:
                if s:  # the official kept tokens are a prefix: everything must agree
                    worst["recon"] = max(worst["recon"], r)
                    worst["latents"] = max(worst["latents"], lat)
                    if not (k and t and r < 1e-4):
                        failures.append((mode, budget, quality))
                elif c != n and not (c == 0 and n == 1):
                    failures.append((mode, budget, quality, "count"))
            if not batch_same or batch_recon > 1e-4:
                failures.append((mode, budget, quality, "batch"))
    print(f"\nwhere the official kept tokens are a prefix: max reconstruction |diff| {worst['recon']:.2e} "
          f"(reconstructions peak at {worst['peak']:.2f})"
          + ("" if quantize else f", max token latent |diff| {worst['latents']:.2e}"))
    print("PARITY OK" if not failures else f"PARITY FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
