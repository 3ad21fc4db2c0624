"""ALIT: "Adaptive Length Image Tokenization via Recurrent Allocation" (Duggal et al., ICLR 2025).

A 1D tokenizer over a frozen 2D base tokenizer that gives an image 32, 64, ... 256 tokens: a recurrent
encoder adds 32 latent tokens at each of its (up to 8) rollouts, and the caller keeps the first rollout
whose reconstruction is good enough. KARL (zoo.models.image.karl) is the same authors' single-pass
successor; the two share the base tokenizers, the ViT blocks and the token bottleneck.

2D tokens. The base tokenizer's latents (MAGE's VQGAN encoder output before its codebook lookup, or
0.2325 x the mode of MAR's KL-16 VAE posterior, where the official code draws a sample; both take the
[0, 1] images as they are) are laid, channels first, beside a patch embedding of the image at the same
grid cell; each cell's vector is l2-normalized, a class token is put in front and a learned position
embedding (one row per cell, plus the class token's) is added.

Encoder, rollout r = 1 .. 8. The state is the sequence [class, 2D cells, latent tokens so far]. Rollout 1
starts from [2D tokens, 32 new latent tokens] (the 32 learned tokens plus their position embedding plus
rollout 1's embedding) through `norm_pre`; each later rollout appends 32 new ones (the same tokens and
positions, plus that rollout's embedding) to the previous rollout's output and normalizes the whole
sequence (`norm_recursive`). One pass of the ViT then updates every token, the earlier latent tokens
included: the 32 r tokens of an image encoded at 32 r tokens are all outputs of rollout r, not a prefix
of a longer encoding. Each latent token gives a `token_dim` (12) token through `norm_post` and a linear
map, quantized by an l2-normalized codebook (4096 codes) or kept continuous.

Dynamic halting (VQGAN base). After each rollout the decoder predicts the base codes from that rollout's
tokens; a grid cell whose ground-truth VQGAN code (the nearest code of the base latents) gets probability
p >= 0.55 is already reconstructed, and its 2D token in the encoder state is replaced by a mask token
(a learned mask embedding plus the cell's position embedding) before the next rollout. The official code
draws the mask, Bernoulli(p) among the cells with p >= 0.55, at inference as in training; here encode
masks every such cell by default (the draw's most likely outcome, as p > 0.5), deterministic, and
`halting_seed` draws it as the official code does, from a generator per image (so a batch draws for each
image what it draws alone). With the VAE base the official halting sets no mask at all (its mask is
written into a copy), so nothing is masked and the encoder needs no decoder pass between rollouts.

Decoder. A ViT reads a class token and one mask token per grid cell (plus a learned position embedding)
and the image's tokens (embedded to the decoder width, plus a learned embedding per token position); the
grid cells' outputs are logits over the VQGAN's 1024 codes, whose softmax weights the VQGAN codebook for
the VQGAN decoder (as TiTok's proxy codes do), or the VAE's latents for the VAE decoder. Tokens past an
image's length are hidden from attention, so a padded batch decodes each image as it would alone.

Choosing the length. `num_tokens=k` (a multiple of 32) runs k / 32 rollouts. `quality=q` keeps, per
image, the fewest tokens whose reconstruction has a mean absolute error per pixel channel (images in
[0, 1], the reconstruction clamped as decode returns it) of at most q, else the full count (the official
`encode` compares the unclamped reconstruction of a whole batch with a strict `<` and, when no rollout
meets the target, keeps the one of lowest error). `search="linear"` tries the rollouts in order, as the
official code does; "binary" bisects the rollout count, assuming the error does not grow with the
rollouts. Both advance the encoder only forwards, keeping every rollout's tokens and decoder outputs, so a
binary search checking 4 then 2 rollouts runs 4 encoder passes, not 6. Tokens.meta records per image (as
lists): "encoder_passes" (rollouts run), "decoder_passes" (passes of the ALIT decoder, for halting masks
or candidate reconstructions; each is reused for both) and "reconstructions" (of those, the ones taken
on through the base decoder to measure a candidate's error).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.vit import Transformer, init_vit_weights
from zoo.errors import TokenizerError
from zoo.models.image.over_base import OverBaseConfig, OverBaseTokenizer
from zoo.quantize import VectorQuantizer
from zoo.tokens import Tokens, lengths_to_mask

HALTING_THRESHOLD = 0.55   # a grid cell whose ground-truth code gets at least this probability may be masked
SEARCHES = ("linear", "binary")
PASSES = ("encoder_passes", "decoder_passes", "reconstructions")

# encode options
NumTokens = Annotated[int | torch.Tensor | None,
                      "tokens per image, a multiple of 32 up to 256 (an int, or a (B,) integer tensor): that many "
                      "rollouts of 32; with quality, the most it may keep"]
Quality = Annotated[float | torch.Tensor | None,
                    "target reconstruction error, mean absolute error per pixel channel of images in [0, 1] (a float, "
                    "or a (B,) tensor): each image keeps the fewest tokens that reach it, else the most"]
Search = Annotated[Literal["linear", "binary"] | None,
                   "with quality: 'linear' tries the rollouts in order (default), 'binary' bisects their count"]
HaltingSeed = Annotated[int | None,
                        "VQGAN base: None masks every 2D token already reconstructed (deterministic); a seed draws "
                        "the mask as the official code does"]


@dataclass
class ALITConfig(OverBaseConfig):
    """ALIT's architecture: OverBaseConfig's fields (image size, ViT sizes, token bottleneck, base
    tokenizer; the defaults are the released "alit_small") and its rollouts of latent tokens."""

    tokens_per_rollout: int = 32       # latent tokens added at each rollout
    max_rollouts: int = 8              # the largest budget is tokens_per_rollout * max_rollouts


class RolloutOutput(NamedTuple):
    """One rollout of the training pass."""

    num_tokens: int                      # 32 r
    codes: torch.Tensor | None           # (B, 32 r) quantized tokens' codes; None for continuous tokens
    logits: torch.Tensor                 # (B, h*w, out_dim): logits over the VQGAN codes, or VAE latents
    reconstruction: torch.Tensor | None  # (B, 3, H, W), not clamped; None unless decode_pixels
    aux_loss: torch.Tensor               # the quantizer's loss (0 for continuous tokens)


class ALITTrainingOutput(NamedTuple):
    """The training pass: every rollout's output, and what the decoder learns to predict."""

    rollouts: list[RolloutOutput]
    targets: torch.Tensor                # VQGAN: its codes (B, h*w) long; VAE: its latents (B, h*w, C_base)


class ALITEncoder(nn.Module):
    """2D tokens and rollouts of latent tokens -> the recurrent state (B, 1 + h*w + 32 r, width)."""

    def __init__(self, width: int, depth: int, num_heads: int, mlp_ratio: float, patch_size: int, cells: int,
                 base_channels: int, tokens_per_rollout: int, max_rollouts: int, token_dim: int):
        super().__init__()
        scale = width ** -0.5
        self.patch_embed = nn.Conv2d(3, width - base_channels, patch_size, stride=patch_size)
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.position_embedding = nn.Parameter(scale * torch.randn(cells + 1, width))
        self.mask_token = nn.Parameter(scale * torch.randn(1, 1, width))
        self.latent_tokens = nn.Parameter(scale * torch.randn(tokens_per_rollout, width))
        self.latent_positions = nn.Parameter(scale * torch.randn(tokens_per_rollout, width))
        self.rollout_embedding = nn.Parameter(scale * torch.randn(max_rollouts, tokens_per_rollout, width))
        self.norm_pre = nn.LayerNorm(width)
        self.norm_recursive = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, num_heads, mlp_ratio)
        self.norm_post = nn.LayerNorm(width)
        self.to_token = nn.Linear(width, token_dim)

    def new_latents(self, batch: int, rollout: int) -> torch.Tensor:
        """The 32 latent tokens rollout `rollout` (0-based) appends -> (B, 32, width)."""
        tokens = self.latent_tokens + self.latent_positions + self.rollout_embedding[rollout]
        return tokens.expand(batch, -1, -1)

    def start(self, images: torch.Tensor, base_latents: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), base latents (B, C_base, h, w) -> the state before the first rollout."""
        b = images.shape[0]
        cells = torch.cat([base_latents, self.patch_embed(images)], dim=1).flatten(2).transpose(1, 2)
        cells = torch.cat([self.class_embedding.expand(b, 1, -1), F.normalize(cells, dim=-1)], dim=1)
        return self.norm_pre(torch.cat([cells + self.position_embedding, self.new_latents(b, 0)], dim=1))

    def grow(self, state: torch.Tensor, rollout: int) -> torch.Tensor:
        """The previous rollout's output -> the input of rollout `rollout` (0-based, >= 1)."""
        return self.norm_recursive(torch.cat([state, self.new_latents(state.shape[0], rollout)], dim=1))

    def mask_cells(self, state: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """The state with the 2D tokens at `drop` (B, h*w) bool replaced by mask tokens (dynamic halting)."""
        cells = drop.shape[1]
        masked = self.mask_token + self.position_embedding[1:]  # (1, h*w, width)
        kept = torch.where(drop[..., None], masked, state[:, 1:1 + cells])
        return torch.cat([state[:, :1], kept, state[:, 1 + cells:]], dim=1)

    def tokens(self, state: torch.Tensor, cells: int) -> torch.Tensor:
        """A rollout's output -> its latent tokens (B, 32 r, token_dim), before quantization."""
        return self.to_token(self.norm_post(state[:, 1 + cells:]))


class ALITDecoder(nn.Module):
    """Tokens (B, n, token_dim) -> one output per grid cell (B, h*w, out_dim); `padding` (B, n) bool marks
    tokens past an image's length (hidden)."""

    def __init__(self, width: int, depth: int, num_heads: int, mlp_ratio: float, cells: int, max_tokens: int,
                 token_dim: int, out_dim: int, init_scale: float):
        super().__init__()
        self.class_embedding = nn.Parameter(init_scale * torch.randn(1, width))
        self.mask_token = nn.Parameter(init_scale * torch.randn(1, 1, width))
        self.position_embedding = nn.Parameter(init_scale * torch.randn(cells + 1, width))
        self.token_embed = nn.Linear(token_dim, width)
        self.token_positions = nn.Parameter(width ** -0.5 * torch.randn(max_tokens, width))
        self.norm_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, num_heads, mlp_ratio)
        self.norm_post = nn.LayerNorm(width)
        self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, out_dim))

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, n, token_dim), padding (B, n) or None -> (B, h*w, out_dim)."""
        b, n, _ = tokens.shape
        cells = self.position_embedding.shape[0]  # the class token and the grid cells
        queries = torch.cat([self.class_embedding[None], self.mask_token.expand(1, cells - 1, -1)], dim=1)
        h = torch.cat([(queries + self.position_embedding).expand(b, -1, -1),
                       self.token_embed(tokens) + self.token_positions[:n]], dim=1)
        if padding is not None:
            padding = torch.cat([padding.new_zeros(b, cells), padding], dim=1)
        h = self.transformer(self.norm_pre(h), padding)
        return self.head(self.norm_post(h[:, 1:cells]))


class _Rollouts:
    """The recurrent encoder over some images of a batch, advanced only forwards, one rollout at a time;
    every rollout's tokens and decoder outputs are kept, and each image's passes counted. `select` keeps
    some of the images (an image's results do not depend on the others)."""

    def __init__(self, model: "ALIT", images: torch.Tensor, halting_seed: int | None):
        self.model, self.images, self.rows = model, images, torch.arange(images.shape[0], device=images.device)
        base = model.base_latents(images)
        self.targets = model.base_targets(base) if model.halts else None
        self.state, self.done = model.encoder.start(images, base), 0
        self.latents, self.codes, self.outputs = {}, {}, {}  # rollout -> (B, 32 r, D) / (B, 32 r) / (B, h*w, C)
        self.passes = {name: torch.zeros(images.shape[0], dtype=torch.long, device=images.device) for name in PASSES}
        self.generators = (None if halting_seed is None else
                           [torch.Generator().manual_seed(halting_seed) for _ in range(images.shape[0])])

    def __len__(self) -> int:
        return self.rows.numel()

    def select(self, keep: torch.Tensor) -> "_Rollouts":
        """The same rollouts for the images where `keep` (bool, one per image here) is True."""
        new = object.__new__(_Rollouts)
        new.model, new.done = self.model, self.done
        new.images, new.rows, new.state = self.images[keep], self.rows[keep], self.state[keep]
        new.targets = None if self.targets is None else self.targets[keep]
        new.latents = {r: v[keep] for r, v in self.latents.items()}
        new.codes = {r: v[keep] for r, v in self.codes.items()}
        new.outputs = {r: v[keep] for r, v in self.outputs.items()}
        new.passes = {k: v[keep] for k, v in self.passes.items()}
        new.generators = None if self.generators is None else [g for g, k in zip(self.generators, keep.tolist()) if k]
        return new

    def advance_to(self, rollouts: int) -> None:
        model, cells = self.model, self.model.grid_size ** 2
        while self.done < rollouts:
            state = self.state
            if self.done:
                if model.halts:
                    drop = model.halting_mask(self.output(self.done), self.targets, self.generators)
                    state = model.encoder.mask_cells(state, drop)
                state = model.encoder.grow(state, self.done)
            self.state = model.encoder.transformer(state)
            self.done += 1
            self.passes["encoder_passes"] += 1
            tokens = model.encoder.tokens(self.state, cells)
            if model.quantizer is not None:
                self.codes[self.done] = model.quantizer.encode(tokens)
                tokens = model.quantizer.codes_to_latents(self.codes[self.done])
            self.latents[self.done] = tokens

    def output(self, rollout: int) -> torch.Tensor:
        """The decoder's output (B, h*w, out_dim) for rollout `rollout`'s tokens."""
        if rollout not in self.outputs:
            self.advance_to(rollout)
            self.outputs[rollout] = self.model.decoder(self.latents[rollout])
            self.passes["decoder_passes"] += 1
        return self.outputs[rollout]

    def error(self, rollout: int) -> torch.Tensor:
        """(B,) mean absolute error per pixel channel of rollout `rollout`'s reconstruction, clamped."""
        reconstruction = self.model.base_decode(self.output(rollout)).clamp(0.0, 1.0)
        self.passes["reconstructions"] += 1
        return (reconstruction - self.images).abs().flatten(1).mean(dim=1)


class ALIT(OverBaseTokenizer):
    """Frozen 2D base tokenizer -> recurrent ALIT encoder (32 tokens a rollout) -> (quantized) tokens ->
    ALIT decoder -> base decoder."""

    architecture = "alit"
    config_class = ALITConfig

    def __init__(self, config: ALITConfig):
        super().__init__(config)
        c = config
        if c.tokens_per_rollout < 1 or c.max_rollouts < 1:
            raise TokenizerError(f"tokens_per_rollout and max_rollouts must be at least 1, got {c.tokens_per_rollout} "
                                 f"and {c.max_rollouts}.")
        cells = self.grid_size ** 2
        self.encoder = ALITEncoder(c.encoder_width, c.encoder_depth, c.encoder_heads, c.mlp_ratio, self.patch_size,
                                   cells, self.base_channels, c.tokens_per_rollout, c.max_rollouts, c.token_dim)
        self.decoder = ALITDecoder(c.decoder_width, c.decoder_depth, c.decoder_heads, c.mlp_ratio, cells,
                                   self.num_tokens, c.token_dim, self.decoded_dim, init_scale=c.encoder_width ** -0.5)
        self.encoder.apply(init_vit_weights)
        self.decoder.apply(init_vit_weights)
        self.quantizer = VectorQuantizer(c.token_dim, c.codebook_size, distance="cosine") if c.quantize else None

    @property
    def num_tokens(self) -> int:
        """The largest budget: tokens_per_rollout x max_rollouts."""
        return self.config.tokens_per_rollout * self.config.max_rollouts

    @property
    def halts(self) -> bool:
        """Whether the encoder masks reconstructed 2D tokens between rollouts (the VQGAN base; see above)."""
        return self.vqgan_encoder is not None

    def info(self) -> dict:
        """Image size, the largest budget and its bits, codebooks, parameters, the target error it takes."""
        step = self.config.tokens_per_rollout
        return {**super().info(), "tokens_per_rollout": step,
                "quality": {"metric": "target reconstruction error: mean absolute error (L1) per pixel channel, "
                                      "images in [0, 1]; lower asks for more tokens",
                            "range": [0.0, 1.0], "default": None,
                            "searches": {"linear": f"rollouts in order, stopping at the first that meets the target: "
                                                   f"one encoder pass per rollout, one reconstruction per {step} "
                                                   "tokens tried",
                                         "binary": "bisects the rollout count (assumes the error does not grow with "
                                                   "the tokens): about log2(rollouts) reconstructions, the encoder "
                                                   "run up to the largest count tried"}}}

    # ---- pieces --------------------------------------------------------------------------
    def halting_mask(self, logits: torch.Tensor, codes: torch.Tensor,
                     generators: list[torch.Generator] | None = None, sample: bool = False) -> torch.Tensor:
        """(B, h*w) bool: the 2D tokens to mask, from the decoder's logits and the ground-truth codes. Among
        the cells whose true code gets probability >= HALTING_THRESHOLD: all of them, or a Bernoulli draw
        from `generators` (one per image), or from the global generator when `sample`."""
        p = torch.softmax(logits.detach().float(), dim=-1).gather(-1, codes[..., None])[..., 0]
        drop = p >= HALTING_THRESHOLD
        if generators is not None and generators:
            u = torch.stack([torch.rand(p.shape[1], generator=g) for g in generators]).to(p.device)
            drop &= u < p
        elif sample:
            drop &= torch.bernoulli(p).bool()
        return drop

    def check_budget(self, num_tokens: int | torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """num_tokens (None: the largest) -> rollouts per image (B,), each a multiple of tokens_per_rollout."""
        step = self.config.tokens_per_rollout
        budgets = self.kept_lengths(num_tokens, batch_size)
        if budgets is None:
            return torch.full((batch_size,), self.config.max_rollouts, dtype=torch.long, device=self.device)
        if bool((budgets % step).any()):
            raise TokenizerError(f"num_tokens must be a multiple of {step} (ALIT adds {step} tokens a rollout), from "
                                 f"{step} to {self.num_tokens}, got {int(budgets[budgets % step != 0][0])}.")
        return budgets // step

    # ---- the API ---------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, *, num_tokens: NumTokens = None, quality: Quality = None,
                search: Search = None, halting_seed: HaltingSeed = None) -> Tokens:
        b, step = x.shape[0], self.config.tokens_per_rollout
        most = self.check_budget(num_tokens, b)  # rollouts per image: exactly these, or at most these
        if quality is None and search is not None:
            raise TokenizerError("search chooses how a quality target is searched for: pass quality as well.")
        target = None if quality is None else self.check_quality(quality, b)
        run = _Rollouts(self, x, halting_seed)
        rollouts = torch.empty_like(most)
        width = step * int(most.max())
        codes = torch.zeros(b, width, dtype=torch.long, device=x.device)
        latents = None if self.quantizer is not None else x.new_zeros(b, width, self.config.token_dim)
        passes = {name: [0] * b for name in PASSES}

        def finish(part: _Rollouts, done: torch.Tensor, r: int) -> _Rollouts:
            """Images `done` of `part` keep rollout r; the rest of `part` is returned."""
            part.advance_to(r)
            rows = part.rows[done]
            rollouts[rows] = r
            if latents is None:
                codes[rows, :step * r] = part.codes[r][done]
            else:
                latents[rows, :step * r] = part.latents[r][done]
            for name in PASSES:
                for row, count in zip(rows.tolist(), part.passes[name][done].tolist()):
                    passes[name][row] = count
            return part.select(~done)

        if target is None:  # exactly the rollouts asked for
            for r in sorted(set(most.tolist())):
                run = finish(run, most[run.rows] == r, r)
        elif search in (None, "linear"):
            for r in range(1, int(most.max()) + 1):
                if not len(run):
                    break
                run = finish(run, most[run.rows] == r, r)  # at their most: kept whatever their error
                if len(run):
                    run = finish(run, run.error(r) <= target[run.rows], r)
        else:  # binary: the answer of each image lies in [low, high]; `high` is kept when nothing lower meets q
            stack = [(run.select(most == m), 1, m) for m in sorted(set(most.tolist()))]
            while stack:
                part, low, high = stack.pop()
                if not len(part):
                    continue
                if low == high:
                    finish(part, torch.ones(len(part), dtype=torch.bool, device=x.device), low)
                    continue
                mid = (low + high) // 2
                met = part.error(mid) <= target[part.rows]
                stack += [(part.select(met), low, mid), (part.select(~met), mid + 1, high)]
        lengths = step * rollouts
        width = int(lengths.max())
        codes = codes[:, :width] if latents is None else codes.new_zeros(b, 0)
        latents = None if latents is None else latents[:, :width]
        return Tokens(codes, lengths, latents, {"image_size": self.config.image_size, **passes})

    def _decode(self, tokens: Tokens) -> torch.Tensor:
        latents = self.token_latents(tokens)
        n, step = latents.shape[1], self.config.tokens_per_rollout
        lengths = tokens.lengths if tokens.lengths is not None else torch.full(
            (latents.shape[0],), n, dtype=torch.long, device=latents.device)
        if not 1 <= n <= self.num_tokens or int(lengths.min()) < 1 or int(lengths.max()) > n:
            raise TokenizerError(f"ALIT decodes 1 to {self.num_tokens} tokens per image within the codes' width {n}, "
                                 f"got lengths [{int(lengths.min())}, {int(lengths.max())}].")
        if bool((lengths % step).any()):
            raise TokenizerError(f"ALIT tokens come {step} a rollout: every length must be a multiple of {step}, got "
                                 f"{int(lengths[lengths % step != 0][0])}.")
        padding = ~lengths_to_mask(lengths, n) if bool((lengths < n).any()) else None
        return self.base_decode(self.decoder(latents, padding)).clamp(0.0, 1.0)

    # ---- training ------------------------------------------------------------------------------
    def rollout_outputs(self, x: torch.Tensor, rollouts: int | None = None, decode_pixels: bool = False,
                        every_rollout: bool = True) -> ALITTrainingOutput:
        """The differentiable training pass over images x (B, 3, H, W) in [0, 1]: rollouts 1 .. `rollouts`
        (default all), each decoded, as the official latent-distillation stage does. VQGAN base: after each
        decoded rollout the 2D tokens already reconstructed are masked, as in the official training forward:
        a Bernoulli draw from the global generator in training mode, every such cell in eval mode (no
        gradient through the mask). `every_rollout=False` decodes the last rollout only (so nothing is masked
        before it), as the official full-finetuning stage does; the list then holds that one output.
        `decode_pixels` adds each decoded rollout's reconstruction."""
        rollouts = self.config.max_rollouts if rollouts is None else rollouts
        if isinstance(rollouts, bool) or not isinstance(rollouts, int) or not 1 <= rollouts <= self.config.max_rollouts:
            raise TokenizerError(f"rollouts must be an int from 1 to {self.config.max_rollouts}, got {rollouts!r}.")
        x = self.check_input(x).to(device=self.device, dtype=self.dtype)
        base = self.base_latents(x)
        targets = self.base_targets(base)
        state, cells, outputs = self.encoder.start(x, base), self.grid_size ** 2, []
        for r in range(1, rollouts + 1):
            if r > 1:
                if self.halts and every_rollout:
                    drop = self.halting_mask(outputs[-1].logits, targets, sample=self.training)
                    state = self.encoder.mask_cells(state, drop)
                state = self.encoder.grow(state, r - 1)
            state = self.encoder.transformer(state)
            if not every_rollout and r < rollouts:
                continue
            tokens = self.encoder.tokens(state, cells)
            codes, aux_loss = None, tokens.new_zeros(())
            if self.quantizer is not None:
                tokens, codes, aux_loss = self.quantizer(tokens)
            logits = self.decoder(tokens)
            outputs.append(RolloutOutput(tokens.shape[1], codes, logits,
                                         self.base_decode(logits) if decode_pixels else None, aux_loss))
        return ALITTrainingOutput(outputs, targets)

    def forward(self, x: torch.Tensor, **kwargs):
        """ALIT's training pass is `rollout_outputs` (one output per rollout, not one reconstruction)."""
        raise TokenizerError("ALIT's training pass is rollout_outputs(x, rollouts, decode_pixels): one output per "
                             "rollout of 32 tokens, not a single reconstruction.")
