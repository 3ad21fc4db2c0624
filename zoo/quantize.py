"""One quantizer interface over vector-quantize-pytorch.

Every quantizer takes latents z of shape (B, N, D) and returns
`QuantizerOutput(quantized, codes, aux_loss)`; `codes_to_latents(codes)` gives back the
quantized latents those codes name. Training runs the library's own forward (EMA updates,
k-means init, dead-code restarts, commitment losses). Encoding and evaluation run our
nearest-code search (`zoo.kernels.nearest_code`), which never builds the full (N x K)
distance matrix and gives the library's codes.

Weight names are ours, whatever the library calls its tensors (a rename upstream must not break
a saved folder). State dicts of the quantizers hold, relative to the quantizer:

  VectorQuantizer
    codebook             (K, C)  the code vectors searched (l2-normalized for distance="cosine")
    code_usage           (K,)    EMA of how many vectors each code was assigned per batch (dead-code restarts read it)
    code_sum             (K, C)  EMA of the sum of the vectors assigned to each code (codebook = code_sum / code_usage)
    initialised          ()      bool; False while a k-means initialisation waits for the first training batch
    project_in.weight / .bias    (C, D), (C,)  only when codebook_dim C < dim D (factorized codes)
    project_out.weight / .bias   (D, C), (D,)
  ResidualVectorQuantizer
    layers.{i}.codebook / code_usage / code_sum / initialised   as above, one per residual layer i
    project_in.* / project_out.*                                as above (shared by the layers)
  FiniteScalarQuantizer, LookupFreeQuantizer
    project_in.* / project_out.*  when dim differs from the number of quantized channels; nothing else
    (LFQ's bit weights are a constant of the architecture and are not stored).

The library keeps a leading axis of size 1 (one codebook head) on codebook, code_usage and
code_sum; ours drop it. The mapping between our names and the library's is `_NAMES` below, applied
by a state-dict hook (saving) and a load pre-hook (loading) on each quantizer; the library module
itself (`.vq`, `.rvq`, `.fsq`, `.lfq`) is an implementation detail. `upgrade_library_keys` renames
the library's names, as folders and checkpoints written before carry them, to ours.

Which processes share codebook statistics is fixed when the library builds a codebook;
`sync_codebooks_across_processes(module, enabled)` rebuilds every quantizer in a module with that
decision (a LightningModule calls it in `setup`, once the world size is known).
"""
from __future__ import annotations

import math
import re
from typing import Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import FSQ, LFQ, ResidualVQ, VectorQuantize

from zoo.errors import TokenizerError
from zoo.kernels import fsq_round, lfq_round, nearest_code, residual_nearest_codes

DISTANCES = ("euclidean", "cosine")
NOT_INITIALISED = ("this quantizer's codebook is not initialised yet (k-means init runs on the first training "
                   "step); train it or load trained weights before encoding.")


class QuantizerOutput(NamedTuple):
    """What every quantizer's forward returns."""

    quantized: torch.Tensor  # (B, N, D), same space as the input
    codes: torch.Tensor      # (B, N) long; (B, N, n_q) for residual quantizers
    aux_loss: torch.Tensor   # scalar: commitment / codebook / entropy losses, already weighted


class CodebookUsage(NamedTuple):
    """How much of a codebook a batch of codes uses."""

    used_fraction: float  # share of codebook entries used at least once
    perplexity: float     # exp(entropy) of the code histogram; equals K when use is uniform


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> CodebookUsage:
    """Usage and perplexity of one codebook over a batch of codes (any shape)."""
    counts = torch.bincount(codes.reshape(-1).long(), minlength=codebook_size).double()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return CodebookUsage(float((counts > 0).double().mean()), float(entropy.exp()))


# ---- our weight names <-> the library's ---------------------------------------------------------

class _Name(NamedTuple):
    ours: str      # relative to our quantizer; "{i}" stands for a residual layer's index
    library: str   # where vector-quantize-pytorch keeps the tensor, relative to our quantizer
    squeeze: bool  # the library keeps a leading codebook-head axis of size 1 that ours drops


def _codebook_names(ours: str, library: str) -> tuple[_Name, ...]:
    return (_Name(ours + "codebook", library + "_codebook.embed", True),
            _Name(ours + "code_usage", library + "_codebook.cluster_size", True),
            _Name(ours + "code_sum", library + "_codebook.embed_avg", True),
            _Name(ours + "initialised", library + "_codebook.initted", False))


def _projection_names(library: str) -> tuple[_Name, ...]:
    return tuple(_Name(f"{p}.{w}", f"{library}{p}.{w}", False)
                 for p in ("project_in", "project_out") for w in ("weight", "bias"))


# The one table of our names: quantizer kind -> its tensors; and the library's constants that our
# state dicts leave out (the hooks put the module's own values back when loading).
_NAMES: dict[str, tuple[_Name, ...]] = {
    "VectorQuantizer": _codebook_names("", "vq.") + _projection_names("vq."),
    "ResidualVectorQuantizer": _codebook_names("layers.{i}.", "rvq.layers.{i}.") + _projection_names("rvq."),
    "FiniteScalarQuantizer": _projection_names("fsq."),
    "LookupFreeQuantizer": _projection_names("lfq."),
}
_LEFT_OUT: dict[str, tuple[str, ...]] = {"LookupFreeQuantizer": ("lfq.mask",)}


def _pattern(template: str, lead: str = "^") -> re.Pattern:
    return re.compile(lead + re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


_ANY_PREFIX = r"^(?P<prefix>(?:.+\.)?)"
# full keys with any module prefix, for upgrade_library_keys
_LIBRARY_KEYS = [(_pattern(n.library, _ANY_PREFIX), n) for names in _NAMES.values() for n in names]
_LEFT_OUT_KEYS = [_pattern(k, _ANY_PREFIX) for keys in _LEFT_OUT.values() for k in keys]
# keys relative to one quantizer, for its hooks: kind -> [(pattern of the library's name, name)], ours likewise
_FROM_LIBRARY = {kind: [(_pattern(n.library), n) for n in names] for kind, names in _NAMES.items()}
_FROM_OURS = {kind: [(_pattern(n.ours), n) for n in names] for kind, names in _NAMES.items()}


def _fill(template: str, match: re.Match) -> str:
    return template.replace("{i}", match.group("i")) if "{i}" in template else template


def upgrade_library_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with vector-quantize-pytorch's names for quantizer tensors (what folders and
    checkpoints written before the zoo named its own carry, e.g. `quantizer.vq._codebook.embed`,
    `quantizer.rvq.layers.3._codebook.cluster_size`) -> the same tensors under our names
    (`quantizer.codebook`, `quantizer.layers.3.code_usage`), in the same order. Keys already in our
    names, and all other keys, pass unchanged; the library's constants (LFQ's bit weights) are dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(p.match(key) for p in _LEFT_OUT_KEYS):
            continue
        for pattern, name in _LIBRARY_KEYS:
            if m := pattern.match(key):
                key = m.group("prefix") + _fill(name.ours, m)
                value = value.squeeze(0) if name.squeeze and value.ndim and value.shape[0] == 1 else value
                break
        out[key] = value
    return out


def _save_with_our_names(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict post-hook of a quantizer: the library's names under `prefix` -> ours."""
    kind = module._kind
    left_out = _LEFT_OUT.get(kind, ())
    mine = [k for k in state_dict if k.startswith(prefix)]
    renamed = {}
    for key in mine:
        value = state_dict.pop(key)
        relative = key[len(prefix):]
        if relative in left_out:
            continue
        for pattern, name in _FROM_LIBRARY[kind]:
            if m := pattern.match(relative):
                renamed[prefix + _fill(name.ours, m)] = value.squeeze(0) if name.squeeze else value
                break
        else:
            raise TokenizerError(
                f"vector-quantize-pytorch keeps a tensor {relative!r} in {type(module).__name__} that the zoo has no "
                "name for; install the library version pinned in the zoo's pyproject.toml.")
    # our order: the table's (codebook first), layer by layer
    order = {n.ours: i for i, n in enumerate(_NAMES[kind])}

    def rank(key: str):
        relative = key[len(prefix):]
        layer = re.match(r"layers\.(\d+)\.", relative)
        generic = re.sub(r"^layers\.\d+\.", "layers.{i}.", relative)
        return (0 if layer else 1, int(layer.group(1)) if layer else 0, order.get(generic, len(order)))

    for key in sorted(renamed, key=rank):
        state_dict[key] = renamed[key]


def _load_from_our_names(module: nn.Module, state_dict: dict, prefix: str, local_metadata, strict,
                         missing_keys, unexpected_keys, error_msgs) -> None:
    """Load pre-hook of a quantizer: our names under `prefix` (or the library's, through
    upgrade_library_keys) -> the library's, so that the library module loads them."""
    kind = module._kind
    mine = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    mine = upgrade_library_keys(mine)
    for key, value in mine.items():
        relative = key[len(prefix):]
        for pattern, name in _FROM_OURS[kind]:
            if m := pattern.match(relative):
                key, value = prefix + _fill(name.library, m), value.unsqueeze(0) if name.squeeze else value
                break
        state_dict[key] = value
    for relative in _LEFT_OUT.get(kind, ()):  # constants of the architecture: the module's own values
        attr, _, name = relative.partition(".")
        state_dict[prefix + relative] = getattr(module, attr).get_buffer(name)


def _use_our_names(module: nn.Module) -> None:
    module.register_state_dict_post_hook(_save_with_our_names)
    module.register_load_state_dict_pre_hook(_load_from_our_names)


def _check_latents(z: torch.Tensor, dim: int, who: str) -> None:
    if z.ndim != 3 or z.shape[-1] != dim:
        raise TokenizerError(f"{who} takes latents of shape (B, N, {dim}), got {tuple(z.shape)}.")


def _straight_through(z: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    # Exact codebook rows when no gradient is needed; the usual estimator when one is.
    return z + (quantized - z).detach() if z.requires_grad else quantized


def _encode_with(vq: VectorQuantize, z: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Codes that `vq` (one head, no image fmap) would give for z: (B, N, D) -> (B, N)."""
    x = vq.project_in(z)
    if cosine:
        x = F.normalize(x, dim=-1)
    flat = x.reshape(-1, x.shape[-1])
    return nearest_code(flat, vq.codebook, cosine=cosine).view(x.shape[:-1])


class _CodebookQuantizer(nn.Module):
    """What VectorQuantizer and ResidualVectorQuantizer share: our weight names over a library
    module (`self.<_library_attr>`, built from `self._library_args` by the library's public
    constructor) and rebuilding it with other training knobs or another sync decision, keeping
    every tensor it holds."""

    _kind: str = ""
    _library_attr: str = ""
    _library_class: type = nn.Module

    def _build(self, library_args: dict) -> None:
        self._library_args = dict(library_args)
        setattr(self, self._library_attr, self._library_class(**self._library_args))

    def _library_codebooks(self):
        """The library's codebook modules (one per residual layer)."""
        raise NotImplementedError

    def _rebuild(self, **changes) -> None:
        """The library module built again through its constructor with `changes` to its arguments;
        the tensors (codebooks, statistics, projections) are moved over as they are (the same tensor
        objects, so an optimizer holding the projections still holds them) and the global random
        state is left untouched."""
        old = getattr(self, self._library_attr)
        requires_grad = {name: p.requires_grad for name, p in old.named_parameters()}
        device = next((t.device for t in [*old.parameters(), *old.buffers()]), torch.device("cpu"))
        args = {**self._library_args, **changes}
        with torch.random.fork_rng(devices=[]):  # building draws a random codebook that is then replaced
            new = self._library_class(**args)
        new.load_state_dict(old.state_dict(keep_vars=True), strict=True, assign=True)
        for name, p in new.named_parameters():
            p.requires_grad_(requires_grad[name])
        new.to(device).train(old.training)
        self._library_args = args
        setattr(self, self._library_attr, new)

    @property
    def is_initialised(self) -> bool:
        """False only while a k-means initialisation waits for the first training batch."""
        return all(bool(c.initted) for c in self._library_codebooks())

    def configure_training(self, *, commitment_weight: float | None = None, decay: float | None = None,
                           kmeans_init: bool | None = None, kmeans_iters: int | None = None,
                           threshold_ema_dead_code: float | None = None) -> None:
        """Set the training knobs of the library's forward (None: keep the current one); the codebooks
        and their statistics are kept. commitment_weight: weight of the commitment loss; decay: EMA
        decay of the codebook statistics; threshold_ema_dead_code: codes whose EMA usage (code_usage)
        falls below it restart from batch vectors; kmeans_iters: k-means iterations of a k-means init.
        kmeans_init=True marks the codebooks for k-means initialisation on the next training batch
        (encoding refuses until then); kmeans_init=False cancels a pending one, keeping the current
        rows. Loading a state dict afterwards sets `initialised` as saved."""
        changes = {k: v for k, v in dict(commitment_weight=commitment_weight, decay=decay, kmeans_init=kmeans_init,
                                          kmeans_iters=kmeans_iters,
                                          threshold_ema_dead_code=threshold_ema_dead_code).items() if v is not None}
        if changes:
            self._rebuild(**changes)
        if kmeans_init is not None:
            for codebook in self._library_codebooks():
                codebook.initted.fill_(not kmeans_init)

    def sync_across_processes(self, enabled: bool) -> None:
        """Rebuild so that the codebook statistics, k-means samples and dead-code restarts are
        all-reduced / broadcast across the processes of torch.distributed (enabled) or kept local."""
        self._rebuild(sync_codebook=bool(enabled))


def sync_codebooks_across_processes(module: nn.Module, enabled: bool) -> None:
    """Decide for every codebook quantizer inside `module` whether its EMA statistics, k-means
    init and dead-code restarts are shared across the processes of torch.distributed (DDP ranks).

    vector-quantize-pytorch fixes that when it builds a codebook (its `sync_codebook` argument),
    but a LightningModule builds its model before the processes start; call this once they do,
    e.g. in `LightningModule.setup()` with `enabled = trainer.world_size > 1`, before the optimizers
    are made. The quantizers are rebuilt through the library's constructor with their tensors kept,
    so codes do not change. FSQ and LFQ learn no codebook and are left as they are."""
    for quantizer in [m for m in module.modules() if isinstance(m, _CodebookQuantizer)]:
        quantizer.sync_across_processes(enabled)


class VectorQuantizer(_CodebookQuantizer):
    """A single codebook. `distance="cosine"` is l2-normalized VQ (inputs and codes on the sphere);
    `codebook_dim` < `dim` adds factorized in/out projections."""

    _kind, _library_attr, _library_class = "VectorQuantizer", "vq", VectorQuantize

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int | None = None,
                 distance: str = "euclidean", commitment_weight: float = 1.0, decay: float = 0.8,
                 kmeans_init: bool = False, kmeans_iters: int = 10, threshold_ema_dead_code: float = 0,
                 learnable_codebook: bool = False, rotation_trick: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise TokenizerError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        self.dim, self.codebook_size, self.distance = dim, codebook_size, distance
        self._build(dict(
            dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim,
            use_cosine_sim=distance == "cosine", commitment_weight=commitment_weight, decay=decay,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
            learnable_codebook=learnable_codebook, ema_update=not learnable_codebook,
            rotation_trick=rotation_trick,
        ))
        _use_our_names(self)

    def _library_codebooks(self):
        return [self.vq._codebook]

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(codebook_size,): one codebook."""
        return (self.codebook_size,)

    @property
    def codebook(self) -> torch.Tensor:
        """(K, codebook_dim) codebook rows as searched."""
        return self.vq.codebook

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_latents(z, self.dim, "VectorQuantizer")
        if self.training:
            quantized, codes, loss = self.vq(z)
            return QuantizerOutput(quantized, codes, loss.sum())
        codes = self.encode(z)
        return QuantizerOutput(_straight_through(z, self.codes_to_latents(codes)), codes, z.new_zeros(()))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> codes (B, N), without building the (N x K) distance matrix."""
        _check_latents(z, self.dim, "VectorQuantizer")
        if not self.is_initialised:
            raise TokenizerError(NOT_INITIALISED)
        return _encode_with(self.vq, z, self.distance == "cosine")

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> quantized latents (B, N, D)."""
        return self.vq.get_output_from_indices(codes.long())


class ResidualVectorQuantizer(_CodebookQuantizer):
    """`num_quantizers` codebooks, each quantizing what the previous ones left. Any number of
    leading layers can encode or decode (bitrate control). The residual passed to the next layer
    is detached from the previous layer's output (the library's behaviour)."""

    _kind, _library_attr, _library_class = "ResidualVectorQuantizer", "rvq", ResidualVQ

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, codebook_dim: int | None = None,
                 distance: str = "euclidean", commitment_weight: float = 1.0, decay: float = 0.8,
                 kmeans_init: bool = False, kmeans_iters: int = 10, threshold_ema_dead_code: float = 0,
                 quantize_dropout: bool = False, rotation_trick: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise TokenizerError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        self.dim, self.num_quantizers, self.codebook_size, self.distance = dim, num_quantizers, codebook_size, distance
        self._build(dict(
            dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, codebook_dim=codebook_dim,
            use_cosine_sim=distance == "cosine", commitment_weight=commitment_weight, decay=decay,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            quantize_dropout=quantize_dropout, rotation_trick=rotation_trick,
        ))
        _use_our_names(self)

    def _library_codebooks(self):
        return [layer._codebook for layer in self.rvq.layers]

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """One codebook size per residual layer."""
        return (self.codebook_size,) * self.num_quantizers

    def check_n_q(self, n_q: int | None) -> int:
        """n_q checked against the number of layers (None: all of them)."""
        n_q = self.num_quantizers if n_q is None else n_q
        if not 1 <= n_q <= self.num_quantizers:
            raise TokenizerError(f"n_q must be between 1 and {self.num_quantizers}, got {n_q}.")
        return n_q

    def forward(self, z: torch.Tensor, n_q: int | None = None) -> QuantizerOutput:
        _check_latents(z, self.dim, "ResidualVectorQuantizer")
        if self.training and n_q is None:
            quantized, codes, losses = self.rvq(z)
            return QuantizerOutput(quantized, codes, losses.sum())
        codes = self.encode(z, n_q)
        return QuantizerOutput(_straight_through(z, self.codes_to_latents(codes)), codes, z.new_zeros(()))

    def encode(self, z: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """(B, N, D) -> codes (B, N, n_q)."""
        _check_latents(z, self.dim, "ResidualVectorQuantizer")
        n_q = self.check_n_q(n_q)
        layers = self.rvq.layers[:n_q]
        if not self.is_initialised:
            raise TokenizerError(NOT_INITIALISED)
        residual = self.rvq.project_in(z)  # the layers themselves have no projections
        codebooks = torch.stack([layer.codebook for layer in layers])  # (n_q, K, D)
        codes = residual_nearest_codes(residual.reshape(-1, residual.shape[-1]), codebooks,
                                       cosine=self.distance == "cosine")
        return codes.view(*residual.shape[:-1], n_q)

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N, n_q) with n_q <= num_quantizers -> summed quantized latents (B, N, D)."""
        n_q = self.check_n_q(codes.shape[-1])
        codes = codes.long()
        total = sum(layer.get_output_from_indices(codes[..., i]) for i, layer in enumerate(self.rvq.layers[:n_q]))
        return self.rvq.project_out(total)

    def layer_outputs(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Each layer's codebook rows for `codes` (B, N, n_q), as (B, n_q, N, C), for latents z
        (B, N, D) that gave those codes. The gradient passes straight through to the residual each
        layer quantized; the residual handed to the next layer is detached from the layer's rows, as
        in the training forward. C is codebook_dim: the rows are in the codebook space (that of z
        when there are no projections)."""
        _check_latents(z, self.dim, "ResidualVectorQuantizer")
        n_q = self.check_n_q(codes.shape[-1])
        if codes.shape[:-1] != z.shape[:-1]:
            raise TokenizerError(f"codes {tuple(codes.shape)} do not fit latents {tuple(z.shape)}: "
                                 "they must be (B, N, n_q) for latents (B, N, D).")
        residual, outputs = self.rvq.project_in(z), []
        for i, layer in enumerate(self.rvq.layers[:n_q]):
            rows = layer.get_output_from_indices(codes[..., i].long())
            outputs.append(residual + (rows - residual).detach())
            residual = residual - rows.detach()
        return torch.stack(outputs, dim=1)


class FiniteScalarQuantizer(nn.Module):
    """FSQ: each of len(levels) channels is bounded and rounded to `levels[i]` values; no codebook
    to learn and no auxiliary loss. Codebook size is prod(levels)."""

    _kind = "FiniteScalarQuantizer"

    def __init__(self, dim: int, levels: tuple[int, ...]):
        super().__init__()
        if any(level < 3 for level in levels):
            raise TokenizerError(f"FSQ levels must each be at least 3, got {tuple(levels)}.")
        self.dim, self.levels = dim, tuple(levels)
        with torch.device("cpu"):  # the library reads its level tensors with .item(): not on the meta device
            self.fsq = FSQ(levels=list(levels), dim=dim)
        _use_our_names(self)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(prod(levels),): the implicit codebook."""
        return (math.prod(self.levels),)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_latents(z, self.dim, "FiniteScalarQuantizer")
        quantized, codes = self.fsq(z)
        return QuantizerOutput(quantized, codes.long(), z.new_zeros(()))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> codes (B, N), each the index of the rounded levels."""
        _check_latents(z, self.dim, "FiniteScalarQuantizer")
        return fsq_round(self.fsq.project_in(z), self.levels).codes

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> quantized latents (B, N, D)."""
        return self.fsq.indices_to_codes(codes.long())


class LookupFreeQuantizer(nn.Module):
    """LFQ: log2(codebook_size) channels, each quantized to its sign; trained with an entropy loss."""

    _kind = "LookupFreeQuantizer"

    def __init__(self, dim: int, codebook_size: int, entropy_loss_weight: float = 0.1,
                 commitment_loss_weight: float = 0.25, diversity_gamma: float = 1.0):
        super().__init__()
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise TokenizerError(f"LFQ needs a power-of-two codebook_size, got {codebook_size}.")
        self.dim, self.codebook_size = dim, codebook_size
        self.lfq = LFQ(dim=dim, codebook_size=codebook_size, entropy_loss_weight=entropy_loss_weight,
                       commitment_loss_weight=commitment_loss_weight, diversity_gamma=diversity_gamma)
        _use_our_names(self)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(codebook_size,): one code per sign pattern."""
        return (self.codebook_size,)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_latents(z, self.dim, "LookupFreeQuantizer")
        quantized, codes, aux_loss = self.lfq(z)
        return QuantizerOutput(quantized, codes.long(), aux_loss)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> codes (B, N), the sign bits read as an integer."""
        _check_latents(z, self.dim, "LookupFreeQuantizer")
        return lfq_round(self.lfq.project_in(z)).codes

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> quantized latents (B, N, D)."""
        return self.lfq.indices_to_codes(codes.long())


class FactorizedQuantizerOutput(NamedTuple):
    """The training pass of a factorized (DAC-style) quantizer."""

    quantized: torch.Tensor        # (B, N, D) projected back, gradient straight through to z
    codes: torch.Tensor            # (B, N) or (B, N, n_q) long
    commitment_loss: torch.Tensor  # (B,) mean squared distance of the projected z to its code (pulls the encoder)
    codebook_loss: torch.Tensor    # (B,) the same distance, pulling the codes (the codebook learns by gradient)


class FactorizedVectorQuantizer(nn.Module):
    """One codebook searched in a small projected space (Improved VQGAN's factorized, l2-normalized codes,
    as DAC and LM-SPT use them): z (B, N, D) is projected to `codebook_dim` by a weight-normalised 1x1
    conv, the nearest code is found by cosine similarity (the fused search), and the code's raw row (not
    its normalised one) is projected back. The codebook is an nn.Embedding learned by gradient.

    State dict: in_proj.* / out_proj.* (weight-normalised 1x1 convs: parametrizations.weight.original0 /
    original1, bias) and codebook.weight (K, codebook_dim)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        from torch.nn.utils.parametrizations import weight_norm

        self.dim, self.codebook_size, self.codebook_dim = dim, codebook_size, codebook_dim
        self.in_proj = weight_norm(nn.Conv1d(dim, codebook_dim, kernel_size=1))
        self.out_proj = weight_norm(nn.Conv1d(codebook_dim, dim, kernel_size=1))
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """(codebook_size,): one codebook."""
        return (self.codebook_size,)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> the searched space (B, N, codebook_dim)."""
        _check_latents(z, self.dim, "FactorizedVectorQuantizer")
        return self.in_proj(z.transpose(1, 2)).transpose(1, 2)

    def search(self, projected: torch.Tensor) -> torch.Tensor:
        """(B, N, codebook_dim) -> codes (B, N): the largest cosine similarity (the fused search on
        l2-normalized rows)."""
        flat = F.normalize(projected.reshape(-1, self.codebook_dim), dim=-1)
        return nearest_code(flat, F.normalize(self.codebook.weight, dim=-1), cosine=True).view(projected.shape[:-1])

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> codes (B, N)."""
        return self.search(self.project(z))

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> (B, N, D): the codes' raw rows, projected back."""
        return self.out_proj(self.codebook(codes.long()).transpose(1, 2)).transpose(1, 2)

    def forward(self, z: torch.Tensor) -> FactorizedQuantizerOutput:
        projected = self.project(z)
        with torch.no_grad():
            codes = self.search(projected)
        rows = self.codebook(codes)
        commitment = F.mse_loss(projected, rows.detach(), reduction="none").mean((1, 2))
        codebook_loss = F.mse_loss(rows, projected.detach(), reduction="none").mean((1, 2))
        through = projected + (rows - projected).detach()
        return FactorizedQuantizerOutput(self.out_proj(through.transpose(1, 2)).transpose(1, 2), codes, commitment,
                                         codebook_loss)


class ResidualFactorizedQuantizer(nn.Module):
    """`num_quantizers` FactorizedVectorQuantizers, each on what the previous ones left (DAC's RVQ).
    Training with `quantizer_dropout` p: a fraction p of each batch's items use only a random number of
    leading layers (1 to all), so that any prefix decodes. State dict: quantizers.{i}.*."""

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, codebook_dim: int,
                 quantizer_dropout: float = 0.0):
        super().__init__()
        if not 0 <= quantizer_dropout <= 1:
            raise TokenizerError(f"quantizer_dropout must lie in [0, 1], got {quantizer_dropout}.")
        self.dim, self.num_quantizers, self.quantizer_dropout = dim, num_quantizers, quantizer_dropout
        self.quantizers = nn.ModuleList(FactorizedVectorQuantizer(dim, codebook_size, codebook_dim)
                                        for _ in range(num_quantizers))

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """One codebook size per residual layer."""
        return tuple(q.codebook_size for q in self.quantizers)

    def check_n_q(self, n_q: int | None) -> int:
        """n_q checked against the number of layers (None: all of them)."""
        n_q = self.num_quantizers if n_q is None else n_q
        if not 1 <= n_q <= self.num_quantizers:
            raise TokenizerError(f"n_q must be between 1 and {self.num_quantizers}, got {n_q}.")
        return n_q

    def encode(self, z: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """(B, N, D) -> codes (B, N, n_q)."""
        residual, codes = z, []
        for layer in self.quantizers[:self.check_n_q(n_q)]:
            codes.append(layer.encode(residual))
            residual = residual - layer.codes_to_latents(codes[-1])
        return torch.stack(codes, dim=-1)

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N, n_q) -> the summed latents (B, N, D)."""
        self.check_n_q(codes.shape[-1])
        return sum(layer.codes_to_latents(codes[..., i]) for i, layer in enumerate(self.quantizers[:codes.shape[-1]]))

    def layer_outputs(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Each layer's latent for `codes` (B, N, n_q), as (B, n_q, N, D), for latents z (B, N, D) that gave
        those codes, the gradient straight through to the residual each layer quantized (as
        ResidualVectorQuantizer.layer_outputs)."""
        residual, outputs = z, []
        for i, layer in enumerate(self.quantizers[:self.check_n_q(codes.shape[-1])]):
            rows = layer.codes_to_latents(codes[..., i])
            outputs.append(residual + (rows - residual).detach())
            residual = residual - rows.detach()
        return torch.stack(outputs, dim=1)

    def forward(self, z: torch.Tensor) -> FactorizedQuantizerOutput:
        batch = z.shape[0]
        layers_used = torch.full((batch,), self.num_quantizers, device=z.device)
        if self.training and self.quantizer_dropout > 0:
            dropped = int(batch * self.quantizer_dropout)
            layers_used[:dropped] = torch.randint(1, self.num_quantizers + 1, (dropped,), device=z.device)
        quantized, residual, codes = torch.zeros_like(z), z, []
        commitment = codebook_loss = z.new_zeros(())
        for i, layer in enumerate(self.quantizers):
            out = layer(residual)
            used = (i < layers_used).to(z.dtype)  # (B,)
            quantized = quantized + out.quantized * used[:, None, None]
            residual = residual - out.quantized
            commitment = commitment + (out.commitment_loss * used).mean()
            codebook_loss = codebook_loss + (out.codebook_loss * used).mean()
            codes.append(out.codes)
        return FactorizedQuantizerOutput(quantized, torch.stack(codes, dim=-1), commitment, codebook_loss)
