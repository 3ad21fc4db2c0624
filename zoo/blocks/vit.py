"""Vision Transformer blocks shared by the image tokenizers.

A pre-norm residual block: x + attn(norm1(x)), then x + mlp(norm2(x)). Attention keeps q, k
and v projections packed in one `in_proj_weight` (3D, D) with an `out_proj` Linear, the layout
of `nn.MultiheadAttention` that most official checkpoints store, and runs through
`F.scaled_dot_product_attention`. Sequences are batch-first, (B, L, D).

`key_padding_mask` (B, L) bool, True where a position is padding, hides those positions as keys
from every query; their own outputs are computed but meaningless. With it, a batch whose items
have different numbers of valid tokens gives each item the result it would get alone with the
padding cut off.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import add_layer_norm, gelu


class Attention(nn.Module):
    """Multi-head self-attention with packed q/k/v projections."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if bias else None
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); key_padding_mask (B, L) True marks keys no query may attend to."""
        b, length, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        qkv = qkv.view(b, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, L, D/H)
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, L): True = may attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, D/H)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, dim))


class Mlp(nn.Module):
    """The transformer's feed-forward block: linear, GELU, linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        # bias-add and GELU in one fused pass on CUDA (zoo.kernels)
        return self.fc2(gelu(F.linear(x, self.fc1.weight), self.fc1.bias))


class TransformerBlock(nn.Module):
    """Pre-norm block: attention then MLP, each added to the residual stream."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-norm attention then MLP, each with a residual: (B, L, D) -> (B, L, D)."""
        # residual add + norm2 in one fused pass on CUDA (zoo.kernels); the same ops elsewhere
        normed, x = add_layer_norm(self.attn(self.norm1(x), key_padding_mask), x, self.norm2.weight,
                                   self.norm2.bias, self.norm2.eps)
        return x + self.mlp(normed)


class Transformer(nn.Module):
    """`depth` TransformerBlocks of one width: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-5):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio, norm_eps) for _ in range(depth))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) through every block, with the same key padding mask."""
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x


def init_vit_weights(module: nn.Module, std: float = 0.02) -> None:
    """The usual ViT init, applied with `model.apply`: normal (std `std`, 0.02 by default) linear and conv weights,
    zero biases, unit LayerNorms. (The common `trunc_normal_(std=0.02)` truncates at +-2 in
    absolute value, 100 std, so it is this same normal; `normal_` is much faster on the CPU.)
    The packed q/k/v projection keeps its Xavier init, as in nn.MultiheadAttention, which the
    official TiTok init leaves alone too: at std 0.02, narrow models (width 64) pass almost no
    signal through attention and do not learn."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, Attention):
        nn.init.xavier_uniform_(module.in_proj_weight)
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def reinit_vit_weights(*modules: nn.Module, std: float) -> None:
    """init_vit_weights at another std over `modules` (a from-scratch training option: the usual 0.02 suits
    widths near 1024; at width 32-128 it passes almost no signal through the layers, and the model learns
    the mean image first; about width ** -0.5 keeps each layer's gain near one)."""
    for module in modules:
        module.apply(functools.partial(init_vit_weights, std=std))
