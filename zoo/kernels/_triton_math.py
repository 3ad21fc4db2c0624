"""Small Triton device functions shared by the kernel modules (imported only with triton)."""
import triton
import triton.language as tl


@triton.jit
def tanh(x):
    """tanh inside a Triton kernel, also under the interpreter."""
    # tl has no tanh that also runs in the interpreter; exp(-2|x|) never overflows.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def round_half_even(x):
    """Round to nearest, halves to even (torch.round's rule), inside a Triton kernel."""
    # torch.round's rule: halves go to the even neighbour.
    r = tl.floor(x + 0.5)
    is_half = (r - x) == 0.5
    is_odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(is_half & is_odd, r - 1.0, r)


def next_pow2(n: int, floor: int = 16) -> int:
    """The next power of two >= n, at least `floor` (a Triton block size)."""
    return max(floor, triton.next_power_of_2(n))
