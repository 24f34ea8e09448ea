"""FlashAttention-2-style Triton kernels: forward, backward, autograd wiring.

Imported lazily (only from :func:`paperbricks.core_kernels.attention.attention`), since it
imports triton at module level.

- ``_attention_fwd_kernel``: one program per (query block, batch·head); online softmax over the
  key blocks the block can see (eqs. 1–4 of ``reference.py``), never a (T, S) matrix in memory;
  writes ``o`` and the natural-log LSE (float32).
- ``_attention_bwd_preprocess_kernel``: ``delta_i = Σ_d dO_id · O_id − dLSE_i`` (the LSE output's
  gradient folds into delta because ∂lse_i/∂s_ij = p_ij).
- ``_attention_bwd_dkdv_kernel``: one program per (key block, batch·KV head); recomputes
  ``P = exp(S − LSE)`` and accumulates dK, dV over every query head of its group, so GQA needs
  neither repeated K/V nor atomics.
- ``_attention_bwd_dq_kernel``: one program per (query block, batch·head).

Visible key range of a query block: ``[lo, hi)`` from the packed segment bounds (looked up in
``cu_seqlens`` through the segment ids of the block's first and last token) and, when causal,
capped at the diagonal; element-wise masks handle the rest. Head dims are padded to powers of two
(≥ 16) with load/store masks. fp32 inputs use ``input_precision="ieee"`` in ``tl.dot`` so results
match an fp32 reference (TF32 is Triton's default on GPUs).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .triton_blocks import (
    causal_keep,
    load_tile,
    online_softmax_update,
    segment_keep,
    softmax_finalize,
    store_tile,
    visible_key_range,
)

__all__ = ["MAX_HEAD_DIM", "flash_attention"]

#: Largest D and Dv the kernels accept (padded to a power of two internally).
MAX_HEAD_DIM = 128

_LOG2E = 1.4426950408889634


@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE, CU, SEG,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, T, S, GROUP, qk_scale,
    D: tl.constexpr, DV: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // GROUP
    first = pid_m * BLOCK_M
    offs_m = first + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    diag = S - T

    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    q = load_tile(q_base, offs_m, offs_d, stride_qt, stride_qd, T, D)  # (BM, BD)
    if VARLEN:
        seg_m = tl.load(SEG + offs_m, mask=offs_m < T, other=-1)
    lo, hi = visible_key_range(CU, SEG, first, T, BLOCK_M, diag, S, CAUSAL, VARLEN)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k = load_tile(k_base, offs_n, offs_d, stride_ks, stride_kd, hi, D)  # (BN, BD)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BM, BN), log2 units
        keep = (offs_n < hi)[None, :]
        if CAUSAL:
            keep = keep & causal_keep(offs_m, offs_n, diag)
        if VARLEN:
            seg_n = tl.load(SEG + offs_n, mask=offs_n < hi, other=-2)
            keep = keep & segment_keep(seg_m, seg_n)
        s = tl.where(keep, s, float("-inf"))
        m_i, l_i, p, alpha = online_softmax_update(m_i, l_i, s)
        v = load_tile(v_base, offs_n, offs_dv, stride_vs, stride_vd, hi, DV)  # (BN, BDV)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    out, lse = softmax_finalize(acc, m_i, l_i)
    store_tile(O + b * stride_ob + h * stride_oh, out, offs_m, offs_dv, stride_ot, stride_od, T, DV)
    tl.store(LSE + pid_bh.to(tl.int64) * T + offs_m, lse, mask=offs_m < T)


@triton.jit
def _attention_bwd_preprocess_kernel(
    O, DO, DLSE, DELTA,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, T,
    DV: tl.constexpr, HAS_DLSE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    o = load_tile(O + b * stride_ob + h * stride_oh, offs_m, offs_dv, stride_ot, stride_od, T, DV)
    do = load_tile(
        DO + b * stride_dob + h * stride_doh, offs_m, offs_dv, stride_dot, stride_dod, T, DV
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # (BM,)
    row = pid_bh.to(tl.int64) * T + offs_m
    if HAS_DLSE:
        delta = delta - tl.load(DLSE + row, mask=offs_m < T, other=0.0)
    tl.store(DELTA + row, delta, mask=offs_m < T)


@triton.jit
def _attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DVAL, CU, SEG,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    H, HKV, T, S, GROUP, qk_scale, sm_scale,
    D: tl.constexpr, DV: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HKV).to(tl.int64)
    hk = (pid_bh % HKV).to(tl.int64)
    first = pid_n * BLOCK_N
    offs_n = first + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    diag = S - T
    log2e: tl.constexpr = 1.4426950408889634

    k = load_tile(K + b * stride_kb + hk * stride_kh, offs_n, offs_d, stride_ks, stride_kd, S, D)
    v = load_tile(V + b * stride_vb + hk * stride_vh, offs_n, offs_dv, stride_vs, stride_vd, S, DV)
    # Query range that can see this key block (the transpose of the forward's key range).
    if VARLEN:
        seg_n = tl.load(SEG + offs_n, mask=offs_n < S, other=-2)
        last = tl.minimum(first + BLOCK_N, S) - 1
        lo = tl.load(CU + tl.load(SEG + first))
        hi = tl.load(CU + tl.load(SEG + last) + 1)
    else:
        lo = 0
        hi = T
    if CAUSAL:
        lo = tl.maximum(lo, first - diag)  # query i sees key j iff i >= j - (S - T)
        lo = tl.maximum(lo, 0)

    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), tl.float32)
    for g in range(GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        for start_m in range(lo, hi, BLOCK_M):
            offs_m = start_m + offs_m0
            m_ok = offs_m < hi
            q = load_tile(q_base, offs_m, offs_d, stride_qt, stride_qd, hi, D)  # (BM, BD)
            do = load_tile(do_base, offs_m, offs_dv, stride_dot, stride_dod, hi, DV)  # (BM, BDV)
            lse = tl.load(LSE + bh * T + offs_m, mask=m_ok, other=float("inf"))
            # A row that saw no key has lse = -inf; use +inf so its recomputed p is 0, not NaN.
            lse = tl.where(lse == float("-inf"), float("inf"), lse) * log2e
            delta = tl.load(DELTA + bh * T + offs_m, mask=m_ok, other=0.0)
            s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # (BN, BM)
            keep = m_ok[None, :] & (offs_n < S)[:, None]
            if CAUSAL:
                keep = keep & (offs_n[:, None] <= offs_m[None, :] + diag)
            if VARLEN:
                seg_m = tl.load(SEG + offs_m, mask=m_ok, other=-1)
                keep = keep & segment_keep(seg_n, seg_m)
            p_t = tl.where(keep, tl.math.exp2(s_t - lse[None, :]), 0.0)  # (BN, BM)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BN, BM)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)
    dk = dk * sm_scale
    store_tile(
        DK + b * stride_dkb + hk * stride_dkh, dk, offs_n, offs_d, stride_dks, stride_dkd, S, D
    )
    store_tile(
        DVAL + b * stride_dvb + hk * stride_dvh, dv, offs_n, offs_dv, stride_dvs, stride_dvd, S, DV
    )


@triton.jit
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU, SEG,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_dqb, stride_dqh, stride_dqt, stride_dqd,
    H, T, S, GROUP, qk_scale, sm_scale,
    D: tl.constexpr, DV: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // GROUP
    first = pid_m * BLOCK_M
    offs_m = first + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    diag = S - T
    log2e: tl.constexpr = 1.4426950408889634
    m_ok = offs_m < T

    q = load_tile(Q + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qt, stride_qd, T, D)
    do = load_tile(
        DO + b * stride_dob + h * stride_doh, offs_m, offs_dv, stride_dot, stride_dod, T, DV
    )
    row = pid_bh.to(tl.int64) * T + offs_m
    lse = tl.load(LSE + row, mask=m_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * log2e
    delta = tl.load(DELTA + row, mask=m_ok, other=0.0)
    if VARLEN:
        seg_m = tl.load(SEG + offs_m, mask=m_ok, other=-1)
    lo, hi = visible_key_range(CU, SEG, first, T, BLOCK_M, diag, S, CAUSAL, VARLEN)

    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k = load_tile(k_base, offs_n, offs_d, stride_ks, stride_kd, hi, D)  # (BN, BD)
        v = load_tile(v_base, offs_n, offs_dv, stride_vs, stride_vd, hi, DV)  # (BN, BDV)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BM, BN)
        keep = (offs_n < hi)[None, :] & m_ok[:, None]
        if CAUSAL:
            keep = keep & causal_keep(offs_m, offs_n, diag)
        if VARLEN:
            seg_n = tl.load(SEG + offs_n, mask=offs_n < hi, other=-2)
            keep = keep & segment_keep(seg_m, seg_n)
        p = tl.where(keep, tl.math.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    store_tile(
        DQ + b * stride_dqb + h * stride_dqh, dq, offs_m, offs_d, stride_dqt, stride_dqd, T, D
    )


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _configs(dtype: torch.dtype, d: int, dv: int, interpreted: bool) -> dict[str, dict[str, int]]:
    """Block sizes, warps and stages per kernel (hand-picked, not autotuned).

    Chosen from ahead-of-time sm_90 compiles (ptxas register and spill counts, shared memory),
    not from GPU timings: every 16-bit config uses at most 218 registers with no spills and at
    most 131 KB of shared memory; fp32 (FMA ``ieee`` dots) uses 8 warps to avoid spilling.
    """
    if interpreted:
        # Small tiles: more programs, but every boundary path (partial blocks, blocks
        # straddling packed segments) gets exercised on tiny test shapes.
        cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
        return {"fwd": cfg, "dkdv": cfg, "dq": cfg}
    wide = max(d, dv) > 64
    if dtype == torch.float32:
        small = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 8, "num_stages": 1}
        fwd = small if wide else {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2}
        return {"fwd": fwd, "dkdv": small, "dq": small}
    warps = 8 if wide else 4
    fwd = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": warps, "num_stages": 3}
    dkdv = {"BLOCK_M": 32, "BLOCK_N": 64, "num_warps": warps, "num_stages": 3}
    dq = {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": warps, "num_stages": 3}
    return {"fwd": fwd, "dkdv": dkdv, "dq": dq}


def _launch_fwd(q, k, v, causal, scale, cu_seqlens, seg):
    b, h, t, d = q.shape
    hkv, s, dv = k.shape[1], k.shape[2], v.shape[3]
    interpreted = q.device.type == "cpu"
    cfg = _configs(q.dtype, d, dv, interpreted)["fwd"]
    o = torch.empty((b, h, t, dv), device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, t), device=q.device, dtype=torch.float32)
    varlen = cu_seqlens is not None
    cu = cu_seqlens if varlen else lse  # placeholder pointer, never read when VARLEN is False
    sg = seg if varlen else lse
    grid = (triton.cdiv(t, cfg["BLOCK_M"]), b * h)
    _attention_fwd_kernel[grid](
        q, k, v, o, lse, cu, sg,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, t, s, h // hkv, scale * _LOG2E,
        D=d, DV=dv, CAUSAL=causal, VARLEN=varlen,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=_pow2(d), BLOCK_DV=_pow2(dv),
        PRECISION=_precision(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return o, lse


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _launch_bwd(q, k, v, o, lse, do, dlse, causal, scale, cu_seqlens, seg):
    b, h, t, d = q.shape
    hkv, s, dv_dim = k.shape[1], k.shape[2], v.shape[3]
    interpreted = q.device.type == "cpu"
    cfgs = _configs(q.dtype, d, dv_dim, interpreted)
    varlen = cu_seqlens is not None
    delta = torch.empty((b, h, t), device=q.device, dtype=torch.float32)
    cu = cu_seqlens if varlen else delta
    sg = seg if varlen else delta
    has_dlse = dlse is not None
    pre_m = 16 if interpreted else 64
    _attention_bwd_preprocess_kernel[(triton.cdiv(t, pre_m), b * h)](
        o, do, dlse.contiguous() if has_dlse else delta, delta,
        *o.stride(), *do.stride(),
        h, t, DV=dv_dim, HAS_DLSE=has_dlse, BLOCK_M=pre_m, BLOCK_DV=_pow2(dv_dim),
    )  # fmt: skip
    dq = torch.empty((b, h, t, d), device=q.device, dtype=q.dtype)
    dk = torch.empty((b, hkv, s, d), device=q.device, dtype=k.dtype)
    dv = torch.empty((b, hkv, s, dv_dim), device=q.device, dtype=v.dtype)
    precision = _precision(q.dtype)
    c = cfgs["dkdv"]
    _attention_bwd_dkdv_kernel[(triton.cdiv(s, c["BLOCK_N"]), b * hkv)](
        q, k, v, do, lse, delta, dk, dv, cu, sg,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
        h, hkv, t, s, h // hkv, scale * _LOG2E, scale,
        D=d, DV=dv_dim, CAUSAL=causal, VARLEN=varlen,
        BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_D=_pow2(d), BLOCK_DV=_pow2(dv_dim),
        PRECISION=precision, num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip
    c = cfgs["dq"]
    _attention_bwd_dq_kernel[(triton.cdiv(t, c["BLOCK_M"]), b * h)](
        q, k, v, do, lse, delta, dq, cu, sg,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        h, t, s, h // hkv, scale * _LOG2E, scale,
        D=d, DV=dv_dim, CAUSAL=causal, VARLEN=varlen,
        BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_D=_pow2(d), BLOCK_DV=_pow2(dv_dim),
        PRECISION=precision, num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    """Outputs ``(o, lse)``; gradients flow from both (``dlse`` is folded into delta)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, cu_seqlens, seg):
        o, lse = _launch_fwd(q, k, v, causal, scale, cu_seqlens, seg)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens, seg)
        ctx.causal = causal
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        return o, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dlse):
        q, k, v, o, lse, cu_seqlens, seg = ctx.saved_tensors
        if do is None:
            do = torch.zeros_like(o)
        dq, dk, dv = _launch_bwd(q, k, v, o, lse, do, dlse, ctx.causal, ctx.scale, cu_seqlens, seg)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
    cu_seqlens: torch.Tensor | None,
    seg: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Triton kernels (inputs already validated). Returns ``(o, lse)``."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return _FlashAttention.apply(q, k, v, causal, float(scale), cu_seqlens, seg)
