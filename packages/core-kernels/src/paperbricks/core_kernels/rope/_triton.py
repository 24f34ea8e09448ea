"""Triton RoPE: rotate x (..., D) by per-pair cos/sin, forward and backward, both layouts.

Import this module lazily (from inside a function): it imports triton at its top.

x may have up to 4 leading dimensions with any strides; cos/sin are broadcast to x's pair shape
(..., D/2) by ``expand`` (zero strides, nothing materialised), so (T, D/2) angles serve every
batch and head. Each program rotates ``BLOCK_R`` rows of D/2 pairs in float32:

    (x₁, x₂) ↦ (x₁ c − x₂ s,  x₂ c + x₁ s)

The backward is the inverse rotation (s → −s), the same kernel with ``CONJ=True``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: Largest D/2 one block of lanes takes.
MAX_PAIRS = 8192
#: Leading dimensions of x the kernel indexes (x has at most this many + 1 dims).
MAX_LEADING = 4
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _rope_fwd_kernel(
    X,
    COS,
    SIN,
    OUT,
    n_rows,
    half,
    n1,
    n2,
    n3,
    sx0,
    sx1,
    sx2,
    sx3,
    sxd,
    sc0,
    sc1,
    sc2,
    sc3,
    scd,
    ss0,
    ss1,
    ss2,
    ss3,
    ssd,
    INTERLEAVED: tl.constexpr,
    CONJ: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)  # (BLOCK_R,)
    rmask = rows < n_rows
    # Row-major decomposition of the flat row index into the 4 leading indices.
    i3 = rows % n3
    t = rows // n3
    i2 = t % n2
    t = t // n2
    i1 = t % n1
    i0 = t // n1
    xoff = i0 * sx0 + i1 * sx1 + i2 * sx2 + i3 * sx3
    coff = i0 * sc0 + i1 * sc1 + i2 * sc2 + i3 * sc3
    soff = i0 * ss0 + i1 * ss1 + i2 * ss2 + i3 * ss3
    m = tl.arange(0, BLOCK_H)  # pair index
    mask = rmask[:, None] & (m < half)[None, :]
    if INTERLEAVED:
        d1 = 2 * m
        d2 = 2 * m + 1
    else:
        d1 = m
        d2 = m + half
    x1 = tl.load(X + xoff[:, None] + d1[None, :] * sxd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + xoff[:, None] + d2[None, :] * sxd, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(COS + coff[:, None] + m[None, :] * scd, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + soff[:, None] + m[None, :] * ssd, mask=mask, other=0.0).to(tl.float32)
    if CONJ:
        s = -s
    o1 = x1 * c - x2 * s
    o2 = x2 * c + x1 * s
    ooff = rows * (2 * half)  # OUT is contiguous (..., D)
    tl.store(OUT + ooff[:, None] + d1[None, :], o1.to(OUT.dtype.element_ty), mask=mask)
    tl.store(OUT + ooff[:, None] + d2[None, :], o2.to(OUT.dtype.element_ty), mask=mask)


def _lead_strides(t: torch.Tensor) -> tuple[list[int], int]:
    """Strides of the leading dims padded in front to 4 (size-1 dims get stride 0), and the last."""
    lead = list(t.stride()[:-1])
    lead = [0] * (MAX_LEADING - len(lead)) + lead
    return lead, t.stride(-1)


def rope_rotate(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool,
    conj: bool = False,
) -> torch.Tensor:
    """Rotate ``x`` (..., D) by cos/sin broadcastable to (..., D/2); ``conj`` rotates backwards."""
    half = x.shape[-1] // 2
    pair_shape = (*x.shape[:-1], half)
    c = cos.expand(pair_shape)
    s = sin.expand(pair_shape)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n_rows = out.numel() // max(1, x.shape[-1])
    if n_rows == 0:
        return out
    lead = [1] * (MAX_LEADING - (x.dim() - 1)) + list(x.shape[:-1])
    sx, sxd = _lead_strides(x)
    sc, scd = _lead_strides(c)
    ss, ssd = _lead_strides(s)
    block_h = triton.next_power_of_2(half)
    block_r = max(1, min(64, 2048 // block_h))  # ~2048 pairs per program
    num_warps = 4 if block_r * block_h <= 4096 else 8
    grid = (triton.cdiv(n_rows, block_r),)
    _rope_fwd_kernel[grid](
        x,
        c,
        s,
        out,
        n_rows,
        half,
        lead[1],
        lead[2],
        lead[3],
        *sx,
        sxd,
        *sc,
        scd,
        *ss,
        ssd,
        INTERLEAVED=interleaved,
        CONJ=conj,
        BLOCK_R=block_r,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return out


class RopeFunction(torch.autograd.Function):
    """Autograd wrapper: the gradient of a rotation is the inverse rotation of the gradient."""

    @staticmethod
    def forward(ctx, x, cos, sin, interleaved):  # type: ignore[override]
        ctx.save_for_backward(cos, sin)
        ctx.interleaved = interleaved
        return rope_rotate(x, cos, sin, interleaved)

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        return rope_rotate(dout, cos, sin, ctx.interleaved, conj=True), None, None, None
