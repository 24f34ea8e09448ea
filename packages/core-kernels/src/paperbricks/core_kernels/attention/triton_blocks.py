"""Public ``@triton.jit`` building blocks for attention-like kernels.

Used by this package's FlashAttention-2 kernels (``attention/_triton.py``) and meant to be composed
by other packages' kernels (diffattn's dual-softmax kernel, for one), so that masking and the
online softmax are written once.

**This file imports triton at module level.** Import it only from inside a function that is
about to launch a kernel (after :func:`paperbricks.core_kernels.devices.import_triton`), never at
the top of a module, so that importing a paperbricks package stays free of triton and CUDA.

Conventions: scores passed to :func:`online_softmax_update` are in **log2 units** (the natural
scores multiplied by log2(e), so that ``exp2`` can be used) and already masked with −inf;
:func:`softmax_finalize` returns the LSE in natural-log units.

- :func:`load_tile` / :func:`store_tile`: a (rows, cols) tile with bounds masks, so that lengths
  and head dims that are not multiples of the block sizes (T = 63, D = 100) work.
- :func:`causal_keep`: bottom-right causal visibility, key n visible to query m iff
  ``n <= m + diag_offset`` (``diag_offset = S - T``).
- :func:`segment_keep`: block-diagonal visibility of packed sequences from per-token segment ids.
- :func:`visible_key_range`: the [lo, hi) key range a block of queries can see (causality and
  packing), so kernels skip key blocks that are entirely masked.
- :func:`online_softmax_update`, :func:`softmax_finalize`: the FA2 running max / running sum,
  safe for rows that have seen no key yet (no NaN from ``-inf - -inf``).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "causal_keep",
    "load_tile",
    "online_softmax_update",
    "segment_keep",
    "softmax_finalize",
    "store_tile",
    "visible_key_range",
]


@triton.jit
def load_tile(base, offs_r, offs_c, stride_r, stride_c, n_rows, n_cols):
    """Load ``base[offs_r, offs_c]`` as a (len(offs_r), len(offs_c)) tile; 0 outside the bounds."""
    ptrs = base + offs_r[:, None] * stride_r + offs_c[None, :] * stride_c
    mask = (offs_r[:, None] < n_rows) & (offs_c[None, :] < n_cols)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def store_tile(base, value, offs_r, offs_c, stride_r, stride_c, n_rows, n_cols):
    """Store a tile to ``base[offs_r, offs_c]``, skipping elements outside the bounds."""
    ptrs = base + offs_r[:, None] * stride_r + offs_c[None, :] * stride_c
    mask = (offs_r[:, None] < n_rows) & (offs_c[None, :] < n_cols)
    tl.store(ptrs, value.to(base.dtype.element_ty), mask=mask)


@triton.jit
def causal_keep(offs_m, offs_n, diag_offset):
    """(M, N) boolean: key ``offs_n`` is visible to query ``offs_m`` under bottom-right causality."""
    return offs_n[None, :] <= offs_m[:, None] + diag_offset


@triton.jit
def segment_keep(seg_m, seg_n):
    """(M, N) boolean: query and key belong to the same packed segment."""
    return seg_m[:, None] == seg_n[None, :]


@triton.jit
def online_softmax_update(m_i, l_i, s):
    """One FA2 step over a (M, N) score tile ``s`` (log2 units, masked entries −inf).

    Returns ``(m_new, l_new, p, alpha)``: the new running max, the new running sum, the tile's
    unnormalised probabilities ``2^(s − m_new)`` and the factor ``2^(m_i − m_new)`` by which the
    caller rescales its output accumulator before adding ``p @ v``.
    """
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row with no visible key so far keeps m = -inf; shift it by 0 so exp2 gives 0, not NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_new = l_i * alpha + tl.sum(p, 1)
    return m_new, l_new, p, alpha


@triton.jit
def softmax_finalize(acc, m_i, l_i):
    """Normalise the accumulator; returns ``(out, lse)`` with ``lse`` in natural-log units.

    Rows that saw no key (``l_i == 0``) give ``out = 0`` and ``lse = −inf``.
    """
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    ln2: tl.constexpr = 0.6931471805599453
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * ln2)
    return out, lse


@triton.jit
def visible_key_range(
    CU, SEG, first, n_tok, block, diag_offset, n_keys, CAUSAL: tl.constexpr, VARLEN: tl.constexpr
):
    """[lo, hi) of the keys visible to the query tokens [first, first + block).

    ``CU`` holds the packed ``cu_seqlens`` and ``SEG`` the per-token segment ids (read only when
    ``VARLEN``); with ``CAUSAL`` the range ends at ``first + block + diag_offset`` (bottom-right).
    """
    if VARLEN:
        last = tl.minimum(first + block, n_tok) - 1
        lo = tl.load(CU + tl.load(SEG + first))
        hi = tl.load(CU + tl.load(SEG + last) + 1)
    else:
        lo = 0
        hi = n_keys
    if CAUSAL:
        hi = tl.minimum(hi, first + block + diag_offset)
    return lo, hi
