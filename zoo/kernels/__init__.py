"""Fused kernels (installed as `zoo.kernels`). Each op has a pure-torch reference; the dispatcher
sends CUDA tensors to the Triton kernel and everything else to the reference. `ZOO_KERNELS=reference`
or `with zoo.kernels.force_reference():` forces the reference (see `zoo.kernels.dispatch`).
Triton is imported only when a kernel runs, so `import zoo` works without it."""
from zoo.kernels.activations import gelu, snake, swiglu
from zoo.kernels.dispatch import current_mode, force_reference, kernel_mode, use_triton
from zoo.kernels.nearest_code import (nearest_code, nearest_code_reference, residual_nearest_codes,
                                      residual_nearest_codes_reference)
from zoo.kernels.norms import AddNormOutput, add_layer_norm, add_rms_norm
from zoo.kernels.scalar_quant import ScalarQuantized, fsq_round, lfq_round

__all__ = [
    "AddNormOutput", "ScalarQuantized", "add_layer_norm", "add_rms_norm", "current_mode", "force_reference",
    "fsq_round", "gelu", "kernel_mode", "lfq_round", "nearest_code", "nearest_code_reference",
    "residual_nearest_codes", "residual_nearest_codes_reference", "snake", "swiglu", "use_triton",
]
