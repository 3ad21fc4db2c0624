"""Fused kernels (installed as `zoo.kernels`). Each op has a pure-torch reference; the
dispatcher picks the fused path for CUDA tensors and the reference elsewhere."""
from zoo.kernels.nearest_code import nearest_code_reference

nearest_code = nearest_code_reference

__all__ = ["nearest_code", "nearest_code_reference"]
