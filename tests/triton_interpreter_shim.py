"""Test-only: triton 3.5's interpreter calls int() on 1-element arrays, which numpy >= 2.4 refuses
(triton-lang/triton#9171); read the element explicitly. Import it before any kernel runs under
TRITON_INTERPRET=1."""
import numpy as np
from triton.runtime import interpreter

_patch_lang_tensor = interpreter._patch_lang_tensor


def _patch_lang_tensor_numpy24(tensor):
    _patch_lang_tensor(tensor)
    tensor.__index__ = lambda self: int(np.asarray(self.handle.data).reshape(-1)[0])


interpreter._patch_lang_tensor = _patch_lang_tensor_numpy24
