"""Which path runs an op: the Triton kernel or the pure-torch reference.

Default ("auto"): CUDA tensors go to Triton (when triton is installed), everything else to the
reference. One switch forces a path for debugging, either for the whole process through the
environment variable or for a block of code through a context manager:

    ZOO_KERNELS=reference python train.py          # every op runs its torch reference
    with zoo.kernels.force_reference(): model(x)   # same, for this block only

`ZOO_KERNELS=triton` (or `kernel_mode("triton")`) sends every tensor to Triton, CPU tensors
included; that only works under the Triton interpreter (TRITON_INTERPRET=1), which is how the
tests run the kernels on machines without a GPU.
"""
from __future__ import annotations

import importlib
import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from types import ModuleType
from typing import Iterator

import torch

from zoo.errors import TokenizerError

ENV_VAR = "ZOO_KERNELS"
MODES = ("auto", "reference", "triton")

_local = threading.local()  # per-thread stack of modes set by kernel_mode()


def _env_mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise TokenizerError(f"{ENV_VAR} must be one of {MODES}, got {mode!r}; unset it or pick one of those.")
    return mode


def current_mode() -> str:
    """The mode in force here: the innermost `kernel_mode` block, else the environment variable."""
    stack = getattr(_local, "modes", None)
    return stack[-1] if stack else _env_mode()


@contextmanager
def kernel_mode(mode: str) -> Iterator[None]:
    """Run the block with `mode` ("auto", "reference" or "triton") in force on this thread."""
    if mode not in MODES:
        raise TokenizerError(f"kernel mode must be one of {MODES}, got {mode!r}.")
    stack = getattr(_local, "modes", None)
    if stack is None:
        stack = _local.modes = []
    stack.append(mode)
    try:
        yield
    finally:
        stack.pop()


def force_reference():
    """Context manager: every op inside the block runs its pure-torch reference."""
    return kernel_mode("reference")


@lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton can be imported."""
    try:  # only reached for CUDA tensors (or mode "triton"), so CPU-only use never imports triton
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """True when the op on these tensors should run its Triton kernel."""
    mode = current_mode()
    if mode == "reference":
        return False
    if mode == "triton":
        if not triton_available():
            raise TokenizerError(f"kernel mode 'triton' ({ENV_VAR}=triton or kernel_mode) needs the triton "
                                 f"package; install triton or use mode 'auto'.")
        return True
    present = [t for t in tensors if t is not None]
    return bool(present) and all(t.is_cuda for t in present) and triton_available()


def triton_module(name: str) -> ModuleType:
    """Import a Triton kernel module on first use, so that `import zoo` never needs triton."""
    return importlib.import_module(f"zoo.kernels.{name}")
