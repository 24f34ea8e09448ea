"""Public ``@triton.jit`` building blocks for grouped (per-expert) kernels.

Used by this package's grouped GEMM (``moe/_triton.py``) and meant for other packages' grouped
kernels over tokens sorted by expert (mlpkan's grouped KAN GEMM, for one), so that the per-tile
expert lookup is written once.

**This file imports triton at module level.** Import it only from inside a function that is
about to launch a kernel, or from a module that is itself imported lazily (a ``_triton.py``),
so that importing a paperbricks package stays free of triton and CUDA.

- :func:`tile_expert_range`: the experts that own the rows ``[first_row, last_row]`` of a tile,
  read from the on-device cumulative ``offsets`` (no host sync).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["tile_expert_range"]


@triton.jit
def tile_expert_range(offs_ptr, first_row, last_row, E, BLOCK_E: tl.constexpr):
    """``(e_lo, e_hi)``: the experts owning rows ``first_row..last_row`` (inclusive).

    ``offs_ptr`` points at the int32 cumulative row ends of the E experts (as
    :func:`paperbricks.core_kernels.moe.permute` returns them), so row r belongs to expert
    ``#{e : offsets[e] <= r}``. ``BLOCK_E`` is a power of two >= E. A tile's rows may span several
    experts, including empty ones (their range is empty and a kernel's loop body masks it out).
    """
    e_ids = tl.arange(0, BLOCK_E)
    ends = tl.load(offs_ptr + e_ids, mask=e_ids < E, other=2147483647)  # (BE,)
    e_lo = tl.sum((ends <= first_row).to(tl.int32), axis=0)
    e_hi = tl.sum((ends <= last_row).to(tl.int32), axis=0)
    return e_lo, tl.minimum(e_hi, E - 1)
