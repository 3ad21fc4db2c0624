"""SEANet encoder and decoder (the convolutional backbone of EnCodec, SpeechTokenizer, DM-Codec
and FuseCodec).

Encoder: conv -> [residual block(s) -> activation -> strided conv (x2 channels)] per ratio ->
optional LSTM -> activation -> conv to `dimension`. The decoder mirrors it with transposed
convs. Every conv is weight-normalised (torch.nn.utils.parametrizations.weight_norm, so the
state-dict keys are `...parametrizations.weight.original0/original1`; old checkpoints store
the same tensors as `weight_g` / `weight_v`).

Padding follows EnCodec so that the output has exactly ceil(T / hop_length) frames and the
decoder gives back hop_length samples per frame: non-causal convs pad both sides (one more on
the left for odd totals), causal convs pad the left only, and the right end gets the extra
padding that makes the last window full.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from zoo.blocks.activations import make_activation

PAD_MODES = ("reflect", "constant", "replicate", "circular")


def pad1d(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """F.pad on the last axis; reflect padding on a signal shorter than the padding first
    extends it with zeros (reflect needs padding < length), then removes them again."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., :padded.shape[-1] - extra]


def extra_right_padding(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Zeros to add on the right so that the last window of a strided conv is full."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


class PaddedConv1d(nn.Module):
    """Weight-normalised Conv1d that pads its input itself (causal: left only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, causal: bool = False, pad_mode: str = "reflect"):
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation))
        self.causal, self.pad_mode = causal, pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, ceil(T / stride))
        """(B, C_in, T) -> (B, C_out, ceil(T / stride)), padded causally or symmetrically."""
        kernel_size, stride, dilation = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
        padding_total = (kernel_size - 1) * dilation - (stride - 1)
        extra = extra_right_padding(x.shape[-1], kernel_size, stride, padding_total)
        if self.causal:
            x = pad1d(x, padding_total, extra, self.pad_mode)
        else:
            right = padding_total // 2
            x = pad1d(x, padding_total - right, right + extra, self.pad_mode)
        return self.conv(x)


class PaddedConvTranspose1d(nn.Module):
    """Weight-normalised ConvTranspose1d that trims its output to exactly stride x T samples
    (causal: the trim is taken from the right by `trim_right_ratio`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 causal: bool = False, trim_right_ratio: float = 1.0):
        super().__init__()
        if not 0.0 <= trim_right_ratio <= 1.0 or (not causal and trim_right_ratio != 1.0):
            raise ValueError("trim_right_ratio must lie in [0, 1] and differs from 1 only for causal convs.")
        self.conv = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride))
        self.causal, self.trim_right_ratio = causal, trim_right_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, stride * T)
        """(B, C_in, T) -> (B, C_out, stride * T), the transposed conv's overhang trimmed."""
        padding_total = self.conv.kernel_size[0] - self.conv.stride[0]
        y = self.conv(x)
        if self.causal:
            right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            right = padding_total // 2
        left = padding_total - right
        return y[..., left:y.shape[-1] - right]


class SkipLSTM(nn.Module):
    """LSTM over time on a (B, C, T) signal with a skip connection; bidirectional doubles the
    channels (the skip input is repeated to match)."""

    def __init__(self, dim: int, num_layers: int, bidirectional: bool = False):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers, bidirectional=bidirectional)
        self.bidirectional = bidirectional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C or 2C, T): LSTM output plus the input."""
        x = x.permute(2, 0, 1)  # (T, B, C): the LSTM is time-major
        y, _ = self.lstm(x)
        if self.bidirectional:
            x = x.repeat(1, 1, 2)
        return (y + x).permute(1, 2, 0)

    @torch.no_grad()
    def forward_in_chunks(self, x: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """forward(x) for inference on long sequences, in bounded memory: each layer and direction runs
        `chunk_frames` steps at a time with its (h, c) state carried from one chunk to the next (the
        reverse direction walks the chunks from the end), so the result is the same recurrence. The
        whole-sequence LSTM also holds every step's four gate pre-activations of a layer at once
        (T x B x 4C); here only a chunk's are alive, beside the layer outputs (T x B x C per direction)."""
        seq = x.permute(2, 0, 1)  # (T, B, C)
        steps, batch, width = seq.shape
        directions = 2 if self.bidirectional else 1
        layer_input = seq
        for layer in range(self.lstm.num_layers):
            out = seq.new_empty(steps, batch, width * directions)
            for direction in range(directions):
                cell = self._single_layer(layer, direction)
                starts = list(range(0, steps, chunk_frames))
                state = None
                for start in (reversed(starts) if direction else starts):
                    piece = layer_input[start: start + chunk_frames]
                    y, state = cell(piece.flip(0) if direction else piece, state)
                    out[start: start + piece.shape[0], :, direction * width: (direction + 1) * width] = (
                        y.flip(0) if direction else y)
            layer_input = out
        for direction in range(directions):  # the skip connection, in place of a repeated copy of x
            layer_input[..., direction * width: (direction + 1) * width] += seq
        return layer_input.permute(1, 2, 0)

    def _single_layer(self, layer: int, direction: int) -> nn.LSTM:
        """A one-layer, one-direction LSTM sharing this LSTM's weights of `layer` / `direction`."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        width = self.lstm.hidden_size
        cell = nn.LSTM(self.lstm.input_size if layer == 0 else width * (2 if self.bidirectional else 1), width, 1,
                       device="meta")
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, f"{name}_l0", getattr(self.lstm, name + suffix))
        return cell


def lecun_init_(module: nn.Module) -> nn.Module:
    """Every (transposed) conv in `module`: weights normal(0, 1/fan_in), biases zero, so that a
    signal keeps its scale through the stack. Weight-normalised convs get the same direction and
    a matching norm."""
    for conv in module.modules():
        if not isinstance(conv, (nn.Conv1d, nn.ConvTranspose1d)):
            continue
        k = conv.weight.shape[-1]
        if isinstance(conv, nn.ConvTranspose1d):  # weight (in, out, k); each output sees k / stride taps per input
            fan_in = conv.weight.shape[0] * max(1, k // conv.stride[0])
        else:                                     # weight (out, in, k)
            fan_in = conv.weight.shape[1] * k
        weight = torch.randn_like(conv.weight) * fan_in ** -0.5
        with torch.no_grad():
            if parametrize.is_parametrized(conv, "weight"):
                conv.weight = weight  # weight norm's right_inverse sets its direction and norm
            else:
                conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.zero_()
    return module


class SEANetResidualBlock(nn.Module):
    """act -> conv(k, dilation) to dim // compress -> act -> conv(1) back to dim, plus a skip
    (identity when `true_skip`, else a 1x1 conv)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, activation: str, causal: bool,
                 pad_mode: str, compress: int, true_skip: bool):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            make_activation(activation, dim),
            PaddedConv1d(dim, hidden, kernel_size, dilation=dilation, causal=causal, pad_mode=pad_mode),
            make_activation(activation, hidden),
            PaddedConv1d(hidden, dim, 1, causal=causal, pad_mode=pad_mode),
        )
        self.shortcut = nn.Identity() if true_skip else PaddedConv1d(dim, dim, 1, causal=causal, pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> shortcut(x) + dilated conv block(x), same shape."""
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(nn.Module):
    """(B, channels, T) -> latent (B, dimension, ceil(T / hop_length)). `ratios` are given in
    decoder order (as EnCodec does) and applied reversed."""

    def __init__(self, channels: int, dimension: int, n_filters: int, ratios: tuple[int, ...],
                 n_residual_layers: int, activation: str, kernel_size: int, last_kernel_size: int,
                 residual_kernel_size: int, dilation_base: int, causal: bool, pad_mode: str,
                 true_skip: bool, compress: int, lstm_layers: int, bidirectional: bool):
        super().__init__()
        self.hop_length = math.prod(ratios)
        conv = dict(causal=causal, pad_mode=pad_mode)
        mult = 1
        layers: list[nn.Module] = [PaddedConv1d(channels, n_filters, kernel_size, **conv)]
        for ratio in reversed(ratios):
            width = mult * n_filters
            layers += [SEANetResidualBlock(width, residual_kernel_size, dilation_base ** j, activation,
                                           compress=compress, true_skip=true_skip, **conv)
                       for j in range(n_residual_layers)]
            layers += [make_activation(activation, width),
                       PaddedConv1d(width, width * 2, kernel_size=ratio * 2, stride=ratio, **conv)]
            mult *= 2
        if lstm_layers:
            layers.append(SkipLSTM(mult * n_filters, lstm_layers, bidirectional))
            mult = mult * 2 if bidirectional else mult
        layers += [make_activation(activation, mult * n_filters),
                   PaddedConv1d(mult * n_filters, dimension, last_kernel_size, **conv)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Audio (B, 1, T) -> latent (B, dimension, ceil(T / hop_length))."""
        return self.layers(x)

    @property
    def receptive_field(self) -> int | None:
        """Input samples on which one output frame depends, counted on one side at most;
        None when an LSTM makes it unbounded."""
        return receptive_field_of(self.layers)

    def split_at_lstm(self) -> tuple[nn.Sequential, nn.Sequential]:
        """(convolutional part with a finite receptive field, the rest from the LSTM on). Without
        an LSTM the rest is empty. The rest runs at the frame rate."""
        index = _lstm_index(self.layers)
        return self.layers[:index], self.layers[index:]


class SEANetDecoder(nn.Module):
    """latent (B, dimension, N) -> (B, channels, N * hop_length)."""

    def __init__(self, channels: int, dimension: int, n_filters: int, ratios: tuple[int, ...],
                 n_residual_layers: int, activation: str, kernel_size: int, last_kernel_size: int,
                 residual_kernel_size: int, dilation_base: int, causal: bool, pad_mode: str,
                 true_skip: bool, compress: int, lstm_layers: int, trim_right_ratio: float = 1.0):
        super().__init__()
        self.hop_length = math.prod(ratios)
        conv = dict(causal=causal, pad_mode=pad_mode)
        mult = 2 ** len(ratios)
        layers: list[nn.Module] = [PaddedConv1d(dimension, mult * n_filters, kernel_size, **conv)]
        if lstm_layers:
            layers.append(SkipLSTM(mult * n_filters, lstm_layers, bidirectional=False))
        for ratio in ratios:
            width = mult * n_filters
            layers += [make_activation(activation, width),
                       PaddedConvTranspose1d(width, width // 2, kernel_size=ratio * 2, stride=ratio,
                                             causal=causal, trim_right_ratio=trim_right_ratio)]
            layers += [SEANetResidualBlock(width // 2, residual_kernel_size, dilation_base ** j, activation,
                                           compress=compress, true_skip=true_skip, **conv)
                       for j in range(n_residual_layers)]
            mult //= 2
        layers += [make_activation(activation, n_filters),
                   PaddedConv1d(n_filters, channels, last_kernel_size, **conv)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, dimension, N) -> audio (B, 1, N * hop_length)."""
        return self.layers(z)

    @property
    def receptive_field(self) -> int | None:
        """Latent frames on which one output sample depends, on one side at most; None with an LSTM."""
        return receptive_field_of(self.layers)

    def split_at_lstm(self) -> tuple[nn.Sequential, nn.Sequential]:
        """(the layers up to and including the LSTM, which run at the frame rate; the convolutional
        rest with a finite receptive field). Without an LSTM the first part is empty."""
        index = _lstm_index(self.layers)
        return (self.layers[:0], self.layers) if index == len(self.layers) else \
            (self.layers[:index + 1], self.layers[index + 1:])


def _lstm_index(layers: nn.Sequential) -> int:
    """Index of the (first) LSTM layer, len(layers) when there is none."""
    return next((i for i, layer in enumerate(layers) if isinstance(layer, SkipLSTM)), len(layers))


def receptive_field_of(layers: nn.Module, step: float = 1.0) -> int | None:
    """Walk the convs in order; `step` is the input spacing of the current layer in units of
    the network's input. A transposed conv with stride s divides the spacing by s."""
    total = 0.0
    for module in layers.modules():
        if isinstance(module, nn.LSTM):
            return None
        if isinstance(module, nn.ConvTranspose1d):
            kernel_size, stride = module.kernel_size[0], module.stride[0]
            total += math.ceil(kernel_size / stride) * step
            step /= stride
        elif isinstance(module, nn.Conv1d):
            kernel_size, stride, dilation = module.kernel_size[0], module.stride[0], module.dilation[0]
            total += (kernel_size - 1) * dilation * step
            step *= stride
    return math.ceil(total)
