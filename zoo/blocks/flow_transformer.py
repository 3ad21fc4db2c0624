"""Transformer blocks of FlexTok's encoder and rectified-flow decoder (and of models like them).

What sets them apart from zoo.blocks.vit:
- separate bias-free q / k / v / output projections, and q and k each normalized per head by a
  LayerNorm without weights ("qk-norm"); attention logits are scaled by 8 / head_dim (muP's
  scale, 1/sqrt(head_dim) at head_dim 64);
- LayerNorms without weight or bias (eps 1e-5) before attention and MLP;
- a SwiGLU MLP whose hidden width is 2/3 of `mlp_ratio * dim` (same parameter count as a GELU MLP);
- optional adaLN-zero conditioning: a SiLU + Linear of a per-sample condition (the flow time's
  embedding) gives gates, shifts and scales. With `condition_segments` = S > 1 the sequence is
  made of S consecutive segments (FlexTok's decoder: image patches, then registers), each with
  its own modulation. Chunk order of the modulation: gate_attn, gate_mlp, shift_attn,
  scale_attn, shift_mlp, scale_mlp (the released FlexTok weights depend on it).

`attn_mask` (L, L) or (B, 1, L, L) bool, True where a query may attend to a key.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import add_layer_norm, swiglu

NORM_EPS = 1e-5


def plain_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim without weight or bias."""
    return F.layer_norm(x, (x.shape[-1],), eps=NORM_EPS)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, shift / scale broadcast against x."""
    return x * (1.0 + scale) + shift


def expand_segments(per_segment: torch.Tensor, segment_lengths: tuple[int, ...]) -> torch.Tensor:
    """(B, S, C) one row per segment -> (B, sum(segment_lengths), C), each row repeated over its segment."""
    return torch.cat([per_segment[:, i:i + 1].expand(-1, n, -1) for i, n in enumerate(segment_lengths)], dim=1)


class QKNormAttention(nn.Module):
    """Multi-head attention with separate projections and per-head weightless LayerNorm on q and k."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, out_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 8.0 / self.head_dim
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_out = nn.Linear(dim, dim, bias=out_bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        b, n, d = x.shape
        q = plain_layer_norm(self._heads(self.to_q(x)))
        k = plain_layer_norm(self._heads(self.to_k(x)))
        v = self._heads(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)  # (B, H, L, Dh)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class SwiGLUMlp(nn.Module):
    """down(SiLU(gate(x)) * up(x)); hidden width int(2/3 * hidden_dim)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        hidden = int(2 * hidden_dim / 3)
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        # SiLU(gate) * up in one fused pass on CUDA (zoo.kernels)
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class FlowTransformerBlock(nn.Module):
    """Pre-norm attention + SwiGLU block, plain or adaLN-zero conditioned (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, condition_segments: int = 0):
        super().__init__()
        self.attention = QKNormAttention(dim, num_heads)
        self.mlp = SwiGLUMlp(dim, int(dim * mlp_ratio))
        self.condition_segments = condition_segments
        self.modulation = nn.Linear(dim, condition_segments * 6 * dim) if condition_segments else None
        if self.modulation is not None:  # adaLN-zero: every block starts as the identity
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, condition: torch.Tensor | None = None,
                segment_lengths: tuple[int, ...] | None = None) -> torch.Tensor:
        """x (B, L, D); condition (B, D) for a conditioned block, with `segment_lengths` summing to L."""
        if self.modulation is None:
            # residual add + the second norm in one fused pass on CUDA (zoo.kernels)
            normed, x = add_layer_norm(self.attention(plain_layer_norm(x), attn_mask), x, eps=NORM_EPS)
            return x + self.mlp(normed)
        b, _, d = x.shape
        mod = self.modulation(F.silu(condition)).view(b, self.condition_segments, 6 * d)
        mod = expand_segments(mod, segment_lengths) if self.condition_segments > 1 else mod  # (B, L or 1, 6D)
        gate_attn, gate_mlp, shift_attn, scale_attn, shift_mlp, scale_mlp = mod.chunk(6, dim=-1)
        x = x + gate_attn * self.attention(modulate(plain_layer_norm(x), shift_attn, scale_attn), attn_mask)
        return x + gate_mlp * self.mlp(modulate(plain_layer_norm(x), shift_mlp, scale_mlp))


class FlowTransformer(nn.Module):
    """`depth` FlowTransformerBlocks of one width; `forward` can also return the outputs of some blocks."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, condition_segments: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(FlowTransformerBlock(dim, num_heads, mlp_ratio, condition_segments)
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, condition: torch.Tensor | None = None,
                segment_lengths: tuple[int, ...] | None = None, keep_layers: tuple[int, ...] = ()
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, L, D) -> (output (B, L, D), [output of block i for i in keep_layers])."""
        kept = []
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, condition, segment_lengths)
            if i in keep_layers:
                kept.append(x)
        return x, kept


def init_flow_transformer(module: nn.Module) -> None:
    """Xavier-uniform Linear weights and zero biases, except the adaLN modulations (zero); apply
    with `model.apply` before anything that is meant to start at zero is zeroed."""
    if isinstance(module, FlowTransformerBlock):
        for child in (module.attention, module.mlp):
            for layer in child.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
