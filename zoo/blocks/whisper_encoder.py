"""Whisper's log-mel front end and audio encoder in torch, so that gradients reach the waveform
(LM-SPT's resynthesis term judges audio the codec made through a frozen ASR encoder).

Facts the released weights depend on:
- log-mel: 16 kHz, 400-point Hann STFT (centred, reflect padded) with hop 160 after 160 zeros are
  appended, the last frame dropped; power spectrum through Slaney-normalised Slaney-scale mel
  filters; log10 floored at 1e-10, then at (the clip's max - 8); then (x + 4) / 4;
- encoder: conv k3 (n_mels -> width), GELU, conv k3 stride 2, GELU, plus fixed sinusoidal
  positions (1,500 of them: 30 s of audio); pre-LayerNorm blocks of multi-head attention (the key
  projection has no bias) and a 4x GELU MLP; a final LayerNorm. LayerNorm eps is 1e-5, GELU exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400
MEL_HOP = 160
WINDOW_MEL_FRAMES = 3000  # the encoder's 30-second window


class WhisperLogMel(nn.Module):
    """wav (B, T) at 16 kHz -> log-mel (B, n_mels, T // 160 + 1), differentiable."""

    def __init__(self, n_mels: int = 80):
        super().__init__()
        import torchaudio

        filters = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
                                                        norm="slaney", mel_scale="slaney")  # (freqs, n_mels)
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.n_mels = n_mels

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        wav = F.pad(wav.float(), (0, MEL_HOP))
        spec = torch.stft(wav, N_FFT, MEL_HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spec[..., :-1].abs() ** 2
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()
        # the floor follows each clip's own maximum (as Whisper's feature extractor computes it)
        floor = log_spec.amax(dim=(-2, -1), keepdim=True).detach() - 8.0
        return (torch.maximum(log_spec, floor) + 4.0) / 4.0


class WhisperEncoderBlock(nn.Module):
    """One pre-LayerNorm transformer block: x + attention(norm(x)), then x + MLP(norm(x)); (B, T, D) -> same."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # the key's third of the bias stays zero (Whisper's key has none)
        self.attn_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, 4 * width)
        self.mlp_out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_out(attended)
        return x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x))))


def sinusoid_positions(length: int, width: int) -> torch.Tensor:
    """Whisper's fixed positions: sin of the first half of the channels, cos of the second."""
    log_step = torch.log(torch.tensor(10000.0)) / (width // 2 - 1)
    inv = torch.exp(-log_step * torch.arange(width // 2))
    angle = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


class WhisperAudioEncoder(nn.Module):
    """log-mel (B, n_mels, M) -> features (B, ceil(M / 2), width); M at most 3,000 (30 s)."""

    def __init__(self, n_mels: int = 80, width: int = 384, heads: int = 6, layers: int = 4, positions: int = 1500):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.register_buffer("positions", sinusoid_positions(positions, width))
        self.blocks = nn.ModuleList(WhisperEncoderBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.n_mels, self.width = n_mels, width

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)  # (B, T, D)
        x = x + self.positions[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
