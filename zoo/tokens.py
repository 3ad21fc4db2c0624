"""Tokens: what every tokenizer's `encode` returns and every `decode` accepts."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zoo.errors import TokenizerError

# the metadata the zoo reads back from a token file, and the JSON kind each must have
META_KINDS = {"model": str, "checkpoint": str, "modality": str, "weights_sha256": str, "source_file": str,
              "num_samples": int, "sample_rate": int}


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_length) bool mask, True on valid positions (those before each length)."""
    return torch.arange(max_length, device=lengths.device)[None] < lengths[:, None]


@dataclass
class Tokens:
    """Discrete codes plus what is needed to read them.

    codes:   long tensor. Images: (B, N) for one codebook. Audio: (B, n_q, T) for a residual
             quantizer with n_q layers.
    lengths: (B,) long, number of valid tokens per item when items in a batch have different
             lengths (flexible / adaptive tokenizers); positions past the length hold padding.
    latents: continuous latents for VAE-style tokenizers (the mode, not a sample).
    meta:    small JSON-able facts (model name, input size, sample rate) saved beside the codes.
    """

    codes: torch.Tensor
    lengths: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.codes, torch.Tensor):
            raise TokenizerError(f"Tokens.codes must be a torch.Tensor, got {type(self.codes).__name__}.")
        if self.lengths is not None and self.lengths.shape != self.codes.shape[:1]:
            raise TokenizerError(
                f"Tokens.lengths must have shape (B,) = ({self.codes.shape[0]},), got {tuple(self.lengths.shape)}."
            )

    @property
    def batch_size(self) -> int:
        """Number of items (B)."""
        return self.codes.shape[0]

    def to(self, device) -> "Tokens":
        """A copy with every tensor on `device`."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Tokens(move(self.codes), move(self.lengths), move(self.latents), dict(self.meta))

    def save(self, path: str | Path) -> None:
        """Write the tokens as a .safetensors file (meta goes in the file's metadata)."""
        tensors = {"codes": self.codes.contiguous().cpu()}
        if self.lengths is not None:
            tensors["lengths"] = self.lengths.contiguous().cpu()
        if self.latents is not None:
            tensors["latents"] = self.latents.contiguous().cpu()
        save_file(tensors, str(path), metadata={"zoo_tokens": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path) -> "Tokens":
        """Read a file written by `save` (`zoo encode`)."""
        from zoo.io import read_safetensors

        tensors, metadata = read_safetensors(path)
        if "codes" not in tensors:
            raise TokenizerError(f"{path} holds no 'codes' tensor; it was not written by Tokens.save (zoo encode).")
        try:
            meta = json.loads(metadata.get("zoo_tokens", "{}"))
        except json.JSONDecodeError as e:
            raise TokenizerError(f"{path}'s metadata is not valid JSON ({e}); write the tokens again with zoo encode.") from None
        if not isinstance(meta, dict):
            raise TokenizerError(f"{path}'s metadata holds a JSON {type(meta).__name__}, not an object; "
                                 "write the tokens again with zoo encode.")
        for key, kind in META_KINDS.items():
            value = meta.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise TokenizerError(f"{path}'s metadata gives {key!r} as a JSON {type(value).__name__}, not a "
                                     f"{'string' if kind is str else 'whole number'}; write the tokens again with zoo encode.")
        codes = tensors["codes"]
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TokenizerError(f"{path}'s codes are {codes.dtype}, not integers; it was not written by zoo encode.")
        return cls(codes, tensors.get("lengths"), tensors.get("latents"), meta)
