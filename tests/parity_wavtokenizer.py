"""Local parity check of our WavTokenizer against the official jishengpeng/WavTokenizer code (not part of
the suite: it needs the official code, which the zoo does not ship; torch, einops and scipy suffice).

    python tests/parity_wavtokenizer.py /path/to/WavTokenizer [--seeds 0 1 2] [--rate 40 75]

Builds the official feature extractor (EnCodec SEANet + quantizer), Vocos backbone and iSTFT head of a
released configuration with random weights (perturbed so that the layers initialised to constants,
the adaptive LayerNorm tables and the layer scales, are live; the codebook, zeros before k-means,
filled with jittered latents of the clips), writes
them as the official checkpoint's state dict (with the training-only parts a real one carries),
converts it with the zoo's converter and compares, on speech spoken by espeak-ng and on noise: the
codes (must be identical) and the decoded audio (max abs difference). Prints the figures.
"""
from __future__ import annotations

import argparse
import sys
import warnings

import torch

RATES = {40: ([6, 5, 5, 4], 2400, 600), 75: ([8, 5, 4, 2], 1280, 320)}


def official_parts(root: str, rate: int):
    sys.path.insert(0, root)
    from decoder.feature_extractors import EncodecFeatures
    from decoder.heads import ISTFTHead
    from decoder.models import VocosBackbone

    downsamples, n_fft, hop = RATES[rate]
    features = EncodecFeatures(encodec_model="encodec_24khz", bandwidths=[6.6] * 4, train_codebooks=True,
                               num_quantizers=1, dowmsamples=downsamples, vq_bins=4096, vq_kmeans=200)
    backbone = VocosBackbone(input_channels=512, dim=768, intermediate_dim=2304, num_layers=12, adanorm_num_embeddings=4)
    head = ISTFTHead(dim=768, n_fft=n_fft, hop_length=hop, padding="same")
    return features, backbone, head


def clips(seconds: float = 2.0) -> torch.Tensor:
    """(3, 1, T) at 24 kHz: two sentences spoken by espeak-ng (when installed) and noise."""
    import shutil
    import subprocess
    import tempfile

    import torchaudio.functional as AF

    from zoo.io import read_audio

    length = int(seconds * 24000)
    out = [0.1 * torch.randn(1, length, generator=torch.Generator().manual_seed(0))]
    if shutil.which("espeak-ng"):
        for i, text in enumerate(["The quick brown fox jumps over the lazy dog.", "Codes must be identical."]):
            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/s.wav"
                subprocess.run(["espeak-ng", "-v", ["en-us", "en-gb"][i], "-w", path, text], check=True)
                wav, rate = read_audio(path)
            wav = AF.resample(wav, rate, 24000)[:, :length]
            out.append(torch.nn.functional.pad(wav, (0, length - wav.shape[-1])))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("official_root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rate", type=int, nargs="+", default=[40, 75])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import zoo
    from zoo.hub.audio_wavtokenizer import convert_official_wavtokenizer
    from zoo.io import load_state_dict_checked

    for rate, seed, seconds in [(r, s, t) for r in args.rate for s in args.seeds for t in (2.0, 1.2345)]:
        wav = clips(seconds)
        torch.manual_seed(seed)
        features, backbone, head = official_parts(args.official_root, rate)
        with torch.no_grad():
            for name, p in backbone.named_parameters():
                if "norm.scale" in name or "norm.shift" in name or name.endswith("gamma"):
                    p.add_(0.1 * torch.randn_like(p))
            # EnCodec's k-means-init codebook starts at zeros: fill it with the clips' own latents, jittered
            # (every code then lies near some frame, and nearest-code ties are as rare as in a trained model)
            latents = features.encodec.encoder(wav).transpose(1, 2).reshape(-1, 512)
            picks = torch.randint(0, latents.shape[0], (4096,))
            codebook = features.encodec.quantizer.vq.layers[0]._codebook
            codebook.embed.copy_(latents[picks] + 0.05 * latents.std() * torch.randn(4096, 512))
            codebook.inited.fill_(1)
        for module in (features, backbone, head):
            module.eval()
        state = {**{f"feature_extractor.{k}": v for k, v in features.state_dict().items()},
                 **{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                 **{f"head.{k}": v for k, v in head.state_dict().items()},
                 "multiperioddisc.discriminators.0.convs.0.weight": torch.zeros(1),
                 "melspec_loss.mel_spec.mel_scale.fb": torch.zeros(1)}
        name = f"wavtokenizer-small-{rate}-24k"
        ours = zoo.create(name)
        load_state_dict_checked(ours, convert_official_wavtokenizer(state, ours.config), source="official")
        ours.eval()
        bandwidth = torch.tensor([0])
        with torch.no_grad():
            quantized, codes, _ = features.infer(wav[:, 0], bandwidth_id=bandwidth)  # codes (1, B, N)
            official_audio = head(backbone(quantized, bandwidth_id=bandwidth))  # (B, N * hop)
            tokens = ours.encode(wav)
            audio = ours.decode(tokens)
        differ = (tokens.codes[:, 0] != codes[0]).nonzero().tolist()
        gaps = []  # where the codes differ: how far apart the two codes' distances are (float64, relative)
        with torch.no_grad():
            latent = features.encodec.encoder(wav).transpose(1, 2).double()
        for b, n in differ:
            rows = codebook.embed.double()[[int(tokens.codes[b, 0, n]), int(codes[0, b, n])]]
            d = (latent[b, n] - rows).square().sum(-1)
            gaps.append(f"{float(d[0] - d[1]) / float(d.min()):+.1e}")  # < 0: ours is the nearer
        length = min(audio.shape[-1], official_audio.shape[-1])
        diff = (audio[:, 0, :length] - official_audio[:, :length]).abs().max().item()
        print(f"{name} seed {seed}, {seconds} s: codes {tuple(tokens.codes.shape)}, {len(codes.unique())} distinct, "
              f"{len(differ)} differ{' (relative distance gaps ' + ', '.join(gaps) + ')' if gaps else ''}; audio "
              f"max |diff| {diff:.2e} (peak {official_audio.abs().max().item():.2f}); lengths ours {audio.shape[-1]}, "
              f"official {official_audio.shape[-1]}")


if __name__ == "__main__":
    main()
