"""Fused differential flash attention: Triton forward and backward (arXiv 2410.05258, §2.1).

Imported lazily (from :func:`paperbricks.diffattn.kernels.fused_diff_attention` only): this file
imports triton at module level. Built on core-kernels' ``attention.triton_blocks`` (masked tiles,
bottom-right causal and packed-segment masks, the FA2 online-softmax update).

Per diff-head h reading KV head g = h // (H / Hkv), with scores in log2 units:

- ``_diff_attention_fwd_kernel``: one program per (query block, batch·head). **One pass over the
  K/V tiles with two online-softmax states** (m_i, l_i, acc_i for i = 1, 2) that share each V tile
  (the official flashdiff_1 code reads V twice, once per attention call). Epilogue:
  ``U = acc1/l1 − λ·acc2/l2``, optional ``r = (mean(U²) + eps)^(−1/2)``, ``Y = (1 − λ_init)·γ⊙r·U``.
  When a gradient is needed it also writes O1, O2 (input dtype), LSE1, LSE2 and r (float32;
  float64 for float64 inputs, which only the CPU interpreter runs: the gradcheck path).
- ``_diff_attention_bwd_preprocess_kernel``: per row, from the spec's backward (§2):
  ``dÛ = (1 − λ_init)·γ⊙dY``, ``dU = r·(dÛ − Û·mean(dÛ⊙Û))`` (or ``dU = (1 − λ_init)·dY``
  without the norm), ``delta1 = Σ dU⊙O1``, ``delta2 = Σ dU⊙O2`` and the per-block partial sums of
  ``dγ = Σ (1 − λ_init)·dY⊙Û``. Since ``dO1 = dU`` and ``dO2 = −λ·dU``, only dU is stored; then
  ``dλ = −Σ delta2`` (reduced per head or over everything in torch),
  ``dP2 = −λ·dP1`` with ``dP1 = dU·Vᵀ``, ``dS1 = P1⊙(dP1 − delta1)``,
  ``dS2 = −λ·P2⊙(dP1 − delta2)`` and ``dV = (P1 − λ·P2)ᵀ·dU`` (one matmul for both maps).
- ``_diff_attention_bwd_dkdv_kernel``: one program per (key block, batch·KV head), recomputing
  P1, P2 from the saved LSEs and looping over every diff-head of the KV group (GQA without
  repeated K/V and without atomics); accumulates dK1, dK2 and dV.
- ``_diff_attention_bwd_dq_kernel``: one program per (query block, batch·head); dQ1, dQ2.

Masks handle any T, S and head dims up to D = 128, Dv = 256 (padded to powers of two ≥ 16).
float32 inputs use ``input_precision="ieee"`` in ``tl.dot`` (Triton's GPU default is TF32).
Packed sequences (``cu_seqlens``) restrict each query block to the keys of the segments it spans.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from paperbricks.core_kernels.attention import segment_ids
from paperbricks.core_kernels.attention.triton_blocks import (
    causal_keep,
    load_tile,
    online_softmax_update,
    segment_keep,
    softmax_finalize,
    store_tile,
    visible_key_range,
)

__all__ = ["MAX_D", "MAX_DV", "diff_flash_attention"]

#: Largest component head dim D and value head dim Dv the kernels accept.
MAX_D = 128
MAX_DV = 256

_LOG2E = 1.4426950408889634


@triton.jit
def _diff_attention_fwd_kernel(
    Q1, Q2, K1, K2, V, LAM, W, Y, O1, O2, LSE1, LSE2, RSTD, CU, SEG,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, T, S, GROUP, qk_scale, lam_stride, eps, out_scale,
    D: tl.constexpr, DV: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr, NORM: tl.constexpr, HAS_W: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
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

    q_off = b * stride_qb + h * stride_qh
    k_off = b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    q1 = load_tile(Q1 + q_off, offs_m, offs_d, stride_qt, stride_qd, T, D)  # (BM, BD)
    q2 = load_tile(Q2 + q_off, offs_m, offs_d, stride_qt, stride_qd, T, D)  # (BM, BD)
    if VARLEN:
        seg_m = tl.load(SEG + offs_m, mask=offs_m < T, other=-1)
    lo, hi = visible_key_range(CU, SEG, first, T, BLOCK_M, diag, S, CAUSAL, VARLEN)

    m1 = tl.full((BLOCK_M,), float("-inf"), ACC)
    m2 = tl.full((BLOCK_M,), float("-inf"), ACC)
    l1 = tl.zeros((BLOCK_M,), ACC)
    l2 = tl.zeros((BLOCK_M,), ACC)
    acc1 = tl.zeros((BLOCK_M, BLOCK_DV), ACC)
    acc2 = tl.zeros((BLOCK_M, BLOCK_DV), ACC)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        keep = (offs_n < hi)[None, :]
        if CAUSAL:
            keep = keep & causal_keep(offs_m, offs_n, diag)
        if VARLEN:
            seg_n = tl.load(SEG + offs_n, mask=offs_n < hi, other=-2)
            keep = keep & segment_keep(seg_m, seg_n)
        k1 = load_tile(K1 + k_off, offs_n, offs_d, stride_ks, stride_kd, hi, D)  # (BN, BD)
        s1 = tl.dot(q1, tl.trans(k1), input_precision=PRECISION) * qk_scale  # (BM, BN)
        m1, l1, p1, alpha1 = online_softmax_update(m1, l1, tl.where(keep, s1, float("-inf")))
        k2 = load_tile(K2 + k_off, offs_n, offs_d, stride_ks, stride_kd, hi, D)  # (BN, BD)
        s2 = tl.dot(q2, tl.trans(k2), input_precision=PRECISION) * qk_scale  # (BM, BN)
        m2, l2, p2, alpha2 = online_softmax_update(m2, l2, tl.where(keep, s2, float("-inf")))
        v = load_tile(v_base, offs_n, offs_dv, stride_vs, stride_vd, hi, DV)  # (BN, BDV), read once
        acc1 = acc1 * alpha1[:, None] + tl.dot(p1.to(v.dtype), v, input_precision=PRECISION)
        acc2 = acc2 * alpha2[:, None] + tl.dot(p2.to(v.dtype), v, input_precision=PRECISION)
    o1, lse1 = softmax_finalize(acc1, m1, l1)  # (BM, BDV), (BM,)
    o2, lse2 = softmax_finalize(acc2, m2, l2)
    lam = tl.load(LAM + h * lam_stride).to(ACC)
    y = o1 - lam * o2  # U, (BM, BDV); padded columns are 0
    row = pid_bh.to(tl.int64) * T + offs_m
    m_ok = offs_m < T
    if NORM:
        r = 1.0 / tl.sqrt(tl.sum(y * y, 1) / DV + eps)  # (BM,)
        y = y * r[:, None]
        if HAS_W:
            w = tl.load(W + offs_dv, mask=offs_dv < DV, other=0.0).to(ACC)
            y = y * w[None, :]
        if SAVE:
            tl.store(RSTD + row, r, mask=m_ok)
    y = y * out_scale
    o_off = b * stride_ob + h * stride_oh
    store_tile(Y + o_off, y, offs_m, offs_dv, stride_ot, stride_od, T, DV)
    if SAVE:
        store_tile(O1 + o_off, o1, offs_m, offs_dv, stride_ot, stride_od, T, DV)
        store_tile(O2 + o_off, o2, offs_m, offs_dv, stride_ot, stride_od, T, DV)
        tl.store(LSE1 + row, lse1, mask=m_ok)
        tl.store(LSE2 + row, lse2, mask=m_ok)


@triton.jit
def _diff_attention_bwd_preprocess_kernel(
    DY, O1, O2, LAM, W, RSTD, DU, DELTA1, DELTA2, DW_PART,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_yb, stride_yh, stride_yt, stride_yd,
    H, T, lam_stride, out_scale,
    DV: tl.constexpr, NORM: tl.constexpr, HAS_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < T
    row = pid_bh.to(tl.int64) * T + offs_m
    o_off = b * stride_ob + h * stride_oh
    o1 = load_tile(O1 + o_off, offs_m, offs_dv, stride_ot, stride_od, T, DV).to(ACC)
    o2 = load_tile(O2 + o_off, offs_m, offs_dv, stride_ot, stride_od, T, DV).to(ACC)
    dy = load_tile(
        DY + b * stride_yb + h * stride_yh, offs_m, offs_dv, stride_yt, stride_yd, T, DV
    ).to(ACC)
    dy = dy * out_scale  # (BM, BDV)
    if NORM:
        lam = tl.load(LAM + h * lam_stride).to(ACC)
        r = tl.load(RSTD + row, mask=m_ok, other=0.0)
        u_hat = (o1 - lam * o2) * r[:, None]  # Û = r·U
        if HAS_W:
            w = tl.load(W + offs_dv, mask=offs_dv < DV, other=0.0).to(ACC)
            n_m = tl.num_programs(0)
            part = DW_PART + (pid_bh.to(tl.int64) * n_m + pid_m) * BLOCK_DV + offs_dv
            tl.store(part, tl.sum(dy * u_hat, 0))  # partial dγ
            dy = dy * w[None, :]  # dÛ
        du = r[:, None] * (dy - u_hat * (tl.sum(dy * u_hat, 1) / DV)[:, None])
    else:
        du = dy
    store_tile(DU + o_off, du, offs_m, offs_dv, stride_ot, stride_od, T, DV)
    tl.store(DELTA1 + row, tl.sum(du * o1, 1), mask=m_ok)
    tl.store(DELTA2 + row, tl.sum(du * o2, 1), mask=m_ok)


@triton.jit
def _diff_attention_bwd_dkdv_kernel(
    Q1, Q2, K1, K2, V, DU, LSE1, LSE2, DELTA1, DELTA2, LAM, DK1, DK2, DVAL, CU, SEG,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    H, HKV, T, S, GROUP, qk_scale, sm_scale, lam_stride,
    D: tl.constexpr, DV: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
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

    k_off = b * stride_kb + hk * stride_kh
    k1 = load_tile(K1 + k_off, offs_n, offs_d, stride_ks, stride_kd, S, D)  # (BN, BD)
    k2 = load_tile(K2 + k_off, offs_n, offs_d, stride_ks, stride_kd, S, D)  # (BN, BD)
    v = load_tile(V + b * stride_vb + hk * stride_vh, offs_n, offs_dv, stride_vs, stride_vd, S, DV)
    # Queries that can see this key block: the transpose of the forward's key range.
    if VARLEN:
        seg_n = tl.load(SEG + offs_n, mask=offs_n < S, other=-2)
        last = tl.minimum(first + BLOCK_N, S) - 1
        lo = tl.load(CU + tl.load(SEG + first))
        hi = tl.load(CU + tl.load(SEG + last) + 1)
    else:
        lo = 0
        hi = T
    if CAUSAL:
        lo = tl.maximum(tl.maximum(lo, first - diag), 0)  # query i sees key j iff i >= j − (S − T)

    dk1 = tl.zeros((BLOCK_N, BLOCK_D), ACC)
    dk2 = tl.zeros((BLOCK_N, BLOCK_D), ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), ACC)
    for g in range(GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        lam = tl.load(LAM + h * lam_stride).to(ACC)
        q_off = b * stride_qb + h * stride_qh
        du_base = DU + b * stride_ob + h * stride_oh
        for start_m in range(lo, hi, BLOCK_M):
            offs_m = start_m + offs_m0
            m_ok = offs_m < hi
            q1 = load_tile(Q1 + q_off, offs_m, offs_d, stride_qt, stride_qd, hi, D)  # (BM, BD)
            q2 = load_tile(Q2 + q_off, offs_m, offs_d, stride_qt, stride_qd, hi, D)
            du = load_tile(du_base, offs_m, offs_dv, stride_ot, stride_od, hi, DV)  # (BM, BDV)
            # A row that saw no key has lse = −inf; +inf makes its recomputed p 0, not NaN.
            lse1 = tl.load(LSE1 + bh * T + offs_m, mask=m_ok, other=float("inf"))
            lse1 = tl.where(lse1 == float("-inf"), float("inf"), lse1) * log2e
            lse2 = tl.load(LSE2 + bh * T + offs_m, mask=m_ok, other=float("inf"))
            lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2) * log2e
            delta1 = tl.load(DELTA1 + bh * T + offs_m, mask=m_ok, other=0.0)
            delta2 = tl.load(DELTA2 + bh * T + offs_m, mask=m_ok, other=0.0)
            keep = m_ok[None, :] & (offs_n < S)[:, None]
            if CAUSAL:
                keep = keep & (offs_n[:, None] <= offs_m[None, :] + diag)
            if VARLEN:
                seg_m = tl.load(SEG + offs_m, mask=m_ok, other=-1)
                keep = keep & segment_keep(seg_n, seg_m)
            s1_t = tl.dot(k1, tl.trans(q1), input_precision=PRECISION) * qk_scale  # (BN, BM)
            p1_t = tl.where(keep, tl.math.exp2(s1_t - lse1[None, :]), 0.0)
            s2_t = tl.dot(k2, tl.trans(q2), input_precision=PRECISION) * qk_scale
            p2_t = tl.where(keep, tl.math.exp2(s2_t - lse2[None, :]), 0.0)
            dv += tl.dot((p1_t - lam * p2_t).to(du.dtype), du, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(du), input_precision=PRECISION)  # (BN, BM) = (dU·Vᵀ)ᵀ
            ds1_t = p1_t * (dp_t - delta1[None, :])
            ds2_t = -lam * p2_t * (dp_t - delta2[None, :])
            dk1 += tl.dot(ds1_t.to(q1.dtype), q1, input_precision=PRECISION)
            dk2 += tl.dot(ds2_t.to(q2.dtype), q2, input_precision=PRECISION)
    dk_off = b * stride_dkb + hk * stride_dkh
    store_tile(DK1 + dk_off, dk1 * sm_scale, offs_n, offs_d, stride_dks, stride_dkd, S, D)
    store_tile(DK2 + dk_off, dk2 * sm_scale, offs_n, offs_d, stride_dks, stride_dkd, S, D)
    store_tile(
        DVAL + b * stride_dvb + hk * stride_dvh, dv, offs_n, offs_dv, stride_dvs, stride_dvd, S, DV
    )


@triton.jit
def _diff_attention_bwd_dq_kernel(
    Q1, Q2, K1, K2, V, DU, LSE1, LSE2, DELTA1, DELTA2, LAM, DQ1, DQ2, CU, SEG,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_dqb, stride_dqh, stride_dqt, stride_dqd,
    H, T, S, GROUP, qk_scale, sm_scale, lam_stride,
    D: tl.constexpr, DV: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
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

    q_off = b * stride_qb + h * stride_qh
    q1 = load_tile(Q1 + q_off, offs_m, offs_d, stride_qt, stride_qd, T, D)  # (BM, BD)
    q2 = load_tile(Q2 + q_off, offs_m, offs_d, stride_qt, stride_qd, T, D)
    du = load_tile(DU + b * stride_ob + h * stride_oh, offs_m, offs_dv, stride_ot, stride_od, T, DV)
    row = pid_bh.to(tl.int64) * T + offs_m
    lse1 = tl.load(LSE1 + row, mask=m_ok, other=float("inf"))
    lse1 = tl.where(lse1 == float("-inf"), float("inf"), lse1) * log2e
    lse2 = tl.load(LSE2 + row, mask=m_ok, other=float("inf"))
    lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2) * log2e
    delta1 = tl.load(DELTA1 + row, mask=m_ok, other=0.0)
    delta2 = tl.load(DELTA2 + row, mask=m_ok, other=0.0)
    lam = tl.load(LAM + h * lam_stride).to(ACC)
    if VARLEN:
        seg_m = tl.load(SEG + offs_m, mask=m_ok, other=-1)
    lo, hi = visible_key_range(CU, SEG, first, T, BLOCK_M, diag, S, CAUSAL, VARLEN)

    k_off = b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    dq1 = tl.zeros((BLOCK_M, BLOCK_D), ACC)
    dq2 = tl.zeros((BLOCK_M, BLOCK_D), ACC)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        keep = (offs_n < hi)[None, :] & m_ok[:, None]
        if CAUSAL:
            keep = keep & causal_keep(offs_m, offs_n, diag)
        if VARLEN:
            seg_n = tl.load(SEG + offs_n, mask=offs_n < hi, other=-2)
            keep = keep & segment_keep(seg_m, seg_n)
        k1 = load_tile(K1 + k_off, offs_n, offs_d, stride_ks, stride_kd, hi, D)  # (BN, BD)
        k2 = load_tile(K2 + k_off, offs_n, offs_d, stride_ks, stride_kd, hi, D)
        v = load_tile(v_base, offs_n, offs_dv, stride_vs, stride_vd, hi, DV)  # (BN, BDV)
        dp = tl.dot(du, tl.trans(v), input_precision=PRECISION)  # (BM, BN) = dU·Vᵀ
        s1 = tl.dot(q1, tl.trans(k1), input_precision=PRECISION) * qk_scale
        p1 = tl.where(keep, tl.math.exp2(s1 - lse1[:, None]), 0.0)
        dq1 += tl.dot((p1 * (dp - delta1[:, None])).to(k1.dtype), k1, input_precision=PRECISION)
        s2 = tl.dot(q2, tl.trans(k2), input_precision=PRECISION) * qk_scale
        p2 = tl.where(keep, tl.math.exp2(s2 - lse2[:, None]), 0.0)
        ds2 = -lam * p2 * (dp - delta2[:, None])
        dq2 += tl.dot(ds2.to(k2.dtype), k2, input_precision=PRECISION)
    dq_off = b * stride_dqb + h * stride_dqh
    store_tile(DQ1 + dq_off, dq1 * sm_scale, offs_m, offs_d, stride_dqt, stride_dqd, T, D)
    store_tile(DQ2 + dq_off, dq2 * sm_scale, offs_m, offs_d, stride_dqt, stride_dqd, T, D)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _configs(dtype: torch.dtype, d: int, dv: int, interpreted: bool) -> dict[str, dict[str, int]]:
    """Block sizes, warps and stages per kernel (hand-picked for H100-class GPUs, not autotuned).

    The forward keeps two (BLOCK_M, Dv) float32 accumulators live, so its row block shrinks as Dv
    grows; the dK/dV kernel keeps dK1, dK2 and dV.
    """
    if interpreted:
        # Small tiles: every partial-block and segment-straddling path runs on tiny shapes.
        cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
        return {"fwd": cfg, "dkdv": cfg, "dq": cfg}
    wide = dv > 128 or d > 64
    if dtype == torch.float32:
        small = {"BLOCK_M": 16 if wide else 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
        return {"fwd": small, "dkdv": small, "dq": small}
    if wide:
        fwd = {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2}
        dkdv = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 8, "num_stages": 1}
        dq = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 8, "num_stages": 1}
    else:
        fwd = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
        dkdv = {"BLOCK_M": 32, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}
        dq = {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    return {"fwd": fwd, "dkdv": dkdv, "dq": dq}


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulator/statistics dtype: float32, or float64 for float64 inputs (interpreter only)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _lam_args(lam: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """λ as a contiguous accumulator-dtype buffer and its stride between heads (0 if shared)."""
    return lam.detach().to(_stat_dtype(dtype)).contiguous(), (0 if lam.dim() == 0 else 1)


def _launch_fwd(q1, q2, k1, k2, v, lam, weight, causal, scale, normalize, out_scale, eps, cu, seg,
                save):  # fmt: skip
    b, h, t, d = q1.shape
    hkv, s, dv = k1.shape[1], k1.shape[2], v.shape[3]
    dev = q1.device
    cfg = _configs(q1.dtype, d, dv, dev.type == "cpu")["fwd"]
    y = torch.empty((b, h, t, dv), device=dev, dtype=q1.dtype)
    stats = torch.empty((3 if save else 1, b, h, t), device=dev, dtype=_stat_dtype(q1.dtype))
    if save:
        o1, o2 = torch.empty_like(y), torch.empty_like(y)
    else:
        o1 = o2 = y  # never written when SAVE is False
    lam_buf, lam_stride = _lam_args(lam, q1.dtype)
    w_buf = weight.detach().contiguous() if weight is not None else lam_buf
    varlen = cu is not None
    grid = (triton.cdiv(t, cfg["BLOCK_M"]), b * h)
    _diff_attention_fwd_kernel[grid](
        q1, q2, k1, k2, v, lam_buf, w_buf, y, o1, o2,
        stats[0], stats[-2] if save else stats[0], stats[-1],
        cu if varlen else stats, seg if varlen else stats,
        *q1.stride(), *k1.stride(), *v.stride(), *y.stride(),
        h, t, s, h // hkv, scale * _LOG2E, lam_stride, eps, out_scale,
        D=d, DV=dv, CAUSAL=causal, VARLEN=varlen, NORM=normalize, HAS_W=weight is not None,
        SAVE=save, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=_pow2(d), BLOCK_DV=_pow2(dv), PRECISION=_precision(q1.dtype),
        ACC=_acc(q1.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    if not save:
        return y, None
    return y, (o1, o2, stats)


def _launch_bwd(dy, q1, q2, k1, k2, v, lam, weight, saved, causal, scale, normalize, out_scale,
                cu, seg):  # fmt: skip
    o1, o2, stats = saved
    lse1, lse2, rstd = stats[0], stats[1], stats[2]
    b, h, t, d = q1.shape
    hkv, s, dv_dim = k1.shape[1], k1.shape[2], v.shape[3]
    dev = q1.device
    interpreted = dev.type == "cpu"
    cfgs = _configs(q1.dtype, d, dv_dim, interpreted)
    lam_buf, lam_stride = _lam_args(lam, q1.dtype)
    has_w = weight is not None and normalize
    w_buf = weight.detach().contiguous() if has_w else lam_buf
    varlen = cu is not None
    cu_arg = cu if varlen else lam_buf
    seg_arg = seg if varlen else lam_buf

    pre_m = 16 if interpreted else 32
    n_pre = triton.cdiv(t, pre_m)
    bdv = _pow2(dv_dim)
    du = torch.empty_like(o1)
    acc = _acc(q1.dtype)
    deltas = torch.empty((2, b, h, t), device=dev, dtype=_stat_dtype(q1.dtype))
    dw_part = torch.empty(
        (b * h * n_pre, bdv) if has_w else (1,), device=dev, dtype=_stat_dtype(q1.dtype)
    )
    _diff_attention_bwd_preprocess_kernel[(n_pre, b * h)](
        dy, o1, o2, lam_buf, w_buf, rstd, du, deltas[0], deltas[1], dw_part,
        *o1.stride(), *dy.stride(),
        h, t, lam_stride, out_scale,
        DV=dv_dim, NORM=normalize, HAS_W=has_w, BLOCK_M=pre_m, BLOCK_DV=bdv, ACC=acc,
    )  # fmt: skip

    precision = _precision(q1.dtype)
    dq1 = torch.empty_like(q1, memory_format=torch.contiguous_format)
    dq2 = torch.empty_like(dq1)
    dk1 = torch.empty((b, hkv, s, d), device=dev, dtype=k1.dtype)
    dk2 = torch.empty_like(dk1)
    dv = torch.empty((b, hkv, s, dv_dim), device=dev, dtype=v.dtype)
    c = cfgs["dkdv"]
    _diff_attention_bwd_dkdv_kernel[(triton.cdiv(s, c["BLOCK_N"]), b * hkv)](
        q1, q2, k1, k2, v, du, lse1, lse2, deltas[0], deltas[1], lam_buf, dk1, dk2, dv,
        cu_arg, seg_arg,
        *q1.stride(), *k1.stride(), *v.stride(), *du.stride(), *dk1.stride(), *dv.stride(),
        h, hkv, t, s, h // hkv, scale * _LOG2E, scale, lam_stride,
        D=d, DV=dv_dim, CAUSAL=causal, VARLEN=varlen,
        BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_D=_pow2(d), BLOCK_DV=bdv,
        PRECISION=precision, ACC=acc, num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip
    c = cfgs["dq"]
    _diff_attention_bwd_dq_kernel[(triton.cdiv(t, c["BLOCK_M"]), b * h)](
        q1, q2, k1, k2, v, du, lse1, lse2, deltas[0], deltas[1], lam_buf, dq1, dq2,
        cu_arg, seg_arg,
        *q1.stride(), *k1.stride(), *v.stride(), *du.stride(), *dq1.stride(),
        h, t, s, h // hkv, scale * _LOG2E, scale, lam_stride,
        D=d, DV=dv_dim, CAUSAL=causal, VARLEN=varlen,
        BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_D=_pow2(d), BLOCK_DV=bdv,
        PRECISION=precision, ACC=acc, num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip

    # dλ = −Σ dU⊙O2, per head (summed over batch and rows) or over everything for a shared λ.
    dlam = -(deltas[1].sum(dim=(0, 2)) if lam.dim() == 1 else deltas[1].sum())
    dweight = dw_part.sum(0)[:dv_dim] if has_w else None
    return dq1, dq2, dk1, dk2, dv, dlam, dweight


class _DiffFlashAttention(torch.autograd.Function):
    """Y from the fused forward; gradients for q1, q2, k1, k2, v, λ and the norm gain."""

    @staticmethod
    def forward(ctx, q1, q2, k1, k2, v, lam, weight, causal, scale, normalize, out_scale, eps,
                cu, seg):  # fmt: skip
        y, saved = _launch_fwd(
            q1, q2, k1, k2, v, lam, weight, causal, scale, normalize, out_scale, eps, cu, seg,
            save=True,
        )  # fmt: skip
        o1, o2, stats = saved
        ctx.save_for_backward(q1, q2, k1, k2, v, lam, weight, o1, o2, stats, cu, seg)
        ctx.args = (causal, scale, normalize, out_scale)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        q1, q2, k1, k2, v, lam, weight, o1, o2, stats, cu, seg = ctx.saved_tensors
        causal, scale, normalize, out_scale = ctx.args
        dq1, dq2, dk1, dk2, dv, dlam, dweight = _launch_bwd(
            dy, q1, q2, k1, k2, v, lam, weight, (o1, o2, stats), causal, scale, normalize,
            out_scale, cu, seg,
        )  # fmt: skip
        dlam = dlam.reshape(lam.shape).to(lam.dtype)
        if dweight is not None:
            dweight = dweight.to(weight.dtype)
        return (dq1, dq2, dk1, dk2, dv, dlam, dweight) + (None,) * 7


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels take one set of strides per pair (q1/q2, k1/k2): make them match if needed."""
    if a.stride() != b.stride():
        return a.contiguous(), b.contiguous()
    return a, b


def diff_flash_attention(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
    normalize: bool,
    norm_weight: torch.Tensor | None,
    lambda_init: float | None,
    eps: float,
    cu_seqlens: torch.Tensor | None,
) -> torch.Tensor:
    """Run the fused kernels (inputs already validated by ``ops.diff_attention``). Returns Y."""
    if scale is None:
        scale = 1.0 / math.sqrt(q1.shape[-1])
    out_scale = 1.0 if lambda_init is None else 1.0 - lambda_init
    weight = norm_weight if normalize else None
    q1, q2 = _same_layout(q1, q2)
    k1, k2 = _same_layout(k1, k2)
    cu = seg = None
    if cu_seqlens is not None:
        cu = cu_seqlens.to(torch.int32).contiguous()
        seg = segment_ids(cu, q1.shape[2])
    inputs = (q1, q2, k1, k2, v, lam) + ((weight,) if weight is not None else ())
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        return _DiffFlashAttention.apply(
            q1, q2, k1, k2, v, lam, weight, causal, float(scale), normalize, out_scale, eps,
            cu, seg,
        )  # fmt: skip
    y, _ = _launch_fwd(
        q1,
        q2,
        k1,
        k2,
        v,
        lam,
        weight,
        causal,
        float(scale),
        normalize,
        out_scale,
        eps,
        cu,
        seg,
        save=False,
    )
    return y
