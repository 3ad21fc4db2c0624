"""Local parity check of our LM-SPT against the official kakao/lmspt code (not part of the suite: it needs
the official code, which the zoo does not ship).

    python tests/parity_lmspt.py /path/to/lmspt [--seeds 0 1] [--seconds 2.4]

Builds the official LMSPT of the released 12.5 Hz configuration (lmspt/infer/conf/model/
lmspt_12d5hz_16384_4096_8vq.yaml) with random weights, converts its state dict with the zoo's converter,
and compares on speech spoken by espeak-ng and on noise (a whole number of frames: the official encode
does not pad): the codes (must be identical), the decoded audio from all codebooks and the auxiliary
decoder's speech from the semantic codes alone (max abs differences). Prints the figures.
"""
from __future__ import annotations

import argparse
import sys
import warnings

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from parity_wavtokenizer import clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("official_root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seconds", type=float, default=2.4)  # 30 frames of 1,920 samples
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sys.path.insert(0, args.official_root)
    from lmspt.model_codec.dac_model import Decoder
    from lmspt.model_codec.lmspt_model import LMSPT

    import zoo
    from zoo.hub.audio_lmspt import convert_official_lmspt
    from zoo.io import load_state_dict_checked

    wav = clips(args.seconds)
    for seed in args.seeds:
        torch.manual_seed(seed)
        official = LMSPT(sample_rate=24000, encoder_rates=[4, 5, 6, 8, 2], decoder_rates=[2, 8, 6, 5, 4], encoder_dim=32,
                         latent_dim=1024, decoder_dim=1536, n_codebooks=8, n_semantic_codebooks=1, quantizer_dropout=0.5,
                         semantic_codebook_size=16384, acoustic_codebook_size=4096, semantic_codebook_dim=8,
                         acoustic_codebook_dim=8, semantic_quantizer="rvq", use_shared_encoder=False,
                         semantic_subtraction=True,
                         aux_decoder=Decoder(input_channel=1024, channels=128, rates=[8, 8, 5, 4], sample_rate=16000))
        with torch.no_grad():  # Snake's alpha starts at ones: make it live
            for name, p in official.named_parameters():
                if name.endswith("alpha"):
                    p.add_(0.2 * torch.randn_like(p)).abs_().add_(0.1)
        official.eval()
        ours = zoo.create("lmspt-12.5hz")
        load_state_dict_checked(ours, convert_official_lmspt(official.state_dict(), ours.config), source="official")
        ours.eval()
        with torch.no_grad():
            codes = official.encode(wav.clone())                    # (8, B, N)
            audio = official.decode(codes)                           # (B, 1, ~T)
            semantic_speech = official.aux_semantic_decode(codes)    # (B, 1, ~T at 16 kHz)
            tokens = ours.encode(wav)
            our_audio = ours.decode(tokens)
            aux = ours._decode_latent(ours.aux_decoder, ours.semantic_quantizer.codes_to_latents(
                tokens.codes[:, :1].transpose(1, 2)), semantic_speech.shape[-1])
        mine = tokens.codes.permute(1, 0, 2)
        differ = int((mine != codes).sum())
        n = min(audio.shape[-1], our_audio.shape[-1])
        print(f"lmspt-12.5hz seed {seed}: codes {tuple(tokens.codes.shape)}, distinct per layer "
              f"{[len(codes[k].unique()) for k in range(codes.shape[0])]}, {differ} differ; audio max |diff| "
              f"{(our_audio[..., :n] - audio[..., :n]).abs().max().item():.2e} (peak {audio.abs().max().item():.2f}); "
              f"semantic-only speech max |diff| {(aux - semantic_speech).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
