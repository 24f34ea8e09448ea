"""The plain-PyTorch differential attention against known values, invariants and outside oracles.

Oracles: closed forms (one key; zero queries give uniform maps), rows of A1 − λA2 summing to 1 − λ,
λ = 0 and the spec's reduction (§5.4) against core-kernels' ``attention_reference``, GQA against
MHA with repeated KV (and the official naive file's pairing detected as different), causality,
packed = separate, the flashdiff_1/flashdiff_2 paths, and float64 gradcheck.
"""

from __future__ import annotations

import math

import pytest
import torch

from paperbricks.core_kernels.attention import attention_reference
from paperbricks.core_kernels.norm import rms_norm_reference
from paperbricks.core_kernels.testing import assert_close, gradcheck_f64
from paperbricks.diffattn.reference import (
    diff_attention_reference,
    diff_attention_sdpa,
    diff_attention_sdpa4,
    diff_epilogue,
    lambda_from_params,
)


def _inputs(b=2, h=4, hkv=2, t=9, s=9, d=8, dv=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q1, q2 = torch.randn(2, b, h, t, d, generator=g, dtype=dtype).unbind(0)
    k1, k2 = torch.randn(2, b, hkv, s, d, generator=g, dtype=dtype).unbind(0)
    v = torch.randn(b, hkv, s, dv, generator=g, dtype=dtype)
    return q1, q2, k1, k2, v


def test_lambda_from_params_known_values():
    z = torch.zeros(8)
    assert float(lambda_from_params(z, z, z, z, 0.2)) == pytest.approx(0.2)
    a = torch.full((4,), 0.5)  # a·a = 1
    b = torch.full((4,), 0.25)  # b·b = 0.25
    want = math.exp(1.0) - math.exp(0.25) + 0.355509
    assert float(lambda_from_params(a, a, b, b, 0.355509)) == pytest.approx(want, rel=1e-6)
    # (H, D) vectors give one λ per head; bf16 parameters still give a float32 λ.
    per_head = lambda_from_params(z.expand(3, 8).bfloat16(), z.expand(3, 8), z, z, 0.5)
    assert per_head.shape == (3,) and per_head.dtype == torch.float32


def test_single_key_closed_form():
    # One key: both softmaxes are 1, so U = (1 − λ)·v and Y = (1 − λ_init)·γ⊙RMSNorm((1 − λ)v).
    q1, q2, k1, k2, v = _inputs(b=1, h=2, hkv=1, t=1, s=1)
    lam = torch.tensor([0.3, 1.7])
    u = diff_attention_reference(q1, q2, k1, k2, v, lam)
    want_u = (1 - lam).view(1, 2, 1, 1) * v  # (1, 2, 1, 16) broadcast over the 2 heads
    assert_close("U", want_u, u)
    w = torch.linspace(0.5, 1.5, 16)
    y = diff_attention_reference(q1, q2, k1, k2, v, lam, normalize=True, norm_weight=w,
                                 lambda_init=0.2, eps=1e-5)  # fmt: skip
    vv = (1 - lam).view(1, 2, 1, 1) * v
    want_y = 0.8 * vv / torch.sqrt(vv.square().mean(-1, keepdim=True) + 1e-5) * w
    assert_close("Y", want_y, y)
    # λ > 1 flips the sign of the head before the norm; the norm keeps the sign.
    assert torch.all(torch.sign(y[0, 1]) == -torch.sign(v[0, 0] * w))


def test_zero_queries_give_uniform_causal_means():
    # q = 0: each map is uniform over the visible keys, so row i is (1 − λ)·mean(v[: i + 1 + S − T]).
    q1, _, k1, k2, v = _inputs(b=1, h=1, hkv=1, t=4, s=6)
    zero = torch.zeros_like(q1)
    u = diff_attention_reference(zero, zero, k1, k2, v, torch.tensor(0.25), causal=True)
    cum = v[0, 0].cumsum(0) / torch.arange(1, 7).unsqueeze(1)  # (S, Dv) running means
    assert_close("U", 0.75 * cum[2:], u[0, 0])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3)])
def test_rows_of_the_map_sum_to_one_minus_lambda(causal, shape):
    t, s = shape
    q1, q2, k1, k2, v = _inputs(t=t, s=s)
    lam = torch.tensor([0.1, 0.8, 1.3, -0.2])
    _, maps = diff_attention_reference(q1, q2, k1, k2, v, lam, causal=causal, return_maps=True)
    sums = maps.sum(-1)  # (B, H, T)
    want = (1 - lam).view(1, 4, 1).expand_as(sums).clone()
    if causal and t > s:
        want[:, :, : t - s] = 0.0  # bottom-right: the first T − S queries see no key
    assert_close("row sums", want, sums, ratio=1e-6)


def test_lambda_zero_is_ordinary_attention():
    q1, q2, k1, k2, v = _inputs(t=7, s=11)
    got = diff_attention_reference(q1, q2, k1, k2, v, torch.tensor(0.0), causal=True)
    want = attention_reference(q1, k1, v, causal=True)
    assert_close("λ=0", want, got)


def test_reduction_to_standard_attention_with_norm():
    # Spec §5.4: λ_q1 = λ_q2, λ_k1 = λ_k2 and λ_init = 0 give λ = 0; the op is then standard
    # attention (q = Q1, k = K1, V of width 2d) followed by the per-head RMSNorm.
    g = torch.Generator().manual_seed(3)
    lq, lk = torch.randn(2, 8, generator=g) * 0.1
    lam = lambda_from_params(lq, lk, lq, lk, 0.0)
    assert float(lam) == 0.0
    q1, q2, k1, k2, v = _inputs(d=8, dv=16)
    w = torch.rand(16, generator=g) + 0.5
    got = diff_attention_reference(q1, q2, k1, k2, v, lam, norm_weight=w, normalize=True,
                                   lambda_init=0.0)  # fmt: skip
    want = rms_norm_reference(attention_reference(q1, k1, v, causal=True), w, 1e-5)
    assert_close("reduction", want, got)


def test_default_scale_uses_the_halved_head_dim():
    q1, q2, k1, k2, v = _inputs(d=8, dv=16)
    lam = torch.tensor(0.4)
    default = diff_attention_reference(q1, q2, k1, k2, v, lam)
    assert_close("1/sqrt(D)", default,
                 diff_attention_reference(q1, q2, k1, k2, v, lam, scale=1 / math.sqrt(8)))  # fmt: skip
    wrong = diff_attention_reference(q1, q2, k1, k2, v, lam, scale=1 / math.sqrt(16))
    assert (wrong - default).abs().max() > 1e-3


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    return x.repeat_interleave(n_rep, dim=1)


@pytest.mark.parametrize("n_rep", [1, 2, 4])
def test_gqa_equals_mha_with_repeated_kv(n_rep):
    hkv = 2
    q1, q2, k1, k2, v = _inputs(h=hkv * n_rep, hkv=hkv, t=6, s=8)
    lam = torch.linspace(0.2, 0.9, hkv * n_rep)
    got = diff_attention_reference(q1, q2, k1, k2, v, lam)
    rep = [_repeat_kv(x, n_rep) for x in (k1, k2, v)]
    want = diff_attention_reference(q1, q2, *rep, lam)
    assert_close("GQA", want, got, ratio=1e-6)


def _naive_file_pairing(q1, q2, k1, k2, v, lam):
    """The official ``multihead_diffattn.py``: repeat_kv over the 2·Hkv *component* heads.

    Component heads are interleaved (2h, 2h + 1); repeating the 2·Hkv key heads n_rep times each
    pairs diff-head h's components with keys of the wrong halves once n_rep > 1.
    """
    b, h, t, d = q1.shape
    hkv, s = k1.shape[1], k1.shape[2]
    n_rep = h // hkv
    q = torch.stack([q1, q2], dim=2).reshape(b, 2 * h, t, d)  # [q1_0, q2_0, q1_1, ...]
    k = torch.stack([k1, k2], dim=2).reshape(b, 2 * hkv, s, d)
    k = _repeat_kv(k, n_rep)  # (B, 2H, S, D): the naive file's mistake
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1).view(b, h, 2, t, s)
    maps = p[:, :, 0] - lam.view(1, -1, 1, 1) * p[:, :, 1]  # (B, H, T, S)
    return maps @ _repeat_kv(v, n_rep)


@pytest.mark.parametrize("n_rep", [1, 2])
def test_naive_file_pairing_is_detected(n_rep):
    q1, q2, k1, k2, v = _inputs(h=2 * n_rep, hkv=2, t=6, s=6)
    lam = torch.full((2 * n_rep,), 0.5)
    ours = diff_attention_reference(q1, q2, k1, k2, v, lam, causal=False)
    naive = _naive_file_pairing(q1, q2, k1, k2, v, lam)
    if n_rep == 1:
        assert_close("naive pairing, MHA", ours, naive)  # the files agree without GQA
    else:
        assert (ours - naive).abs().max() > 0.1  # ... and must not agree with it under GQA


def test_causality_future_tokens_do_not_leak():
    q1, q2, k1, k2, v = _inputs(t=10, s=10)
    lam = torch.tensor(0.6)
    base = diff_attention_reference(q1, q2, k1, k2, v, lam, normalize=True)
    q1b, q2b, k1b, k2b, vb = (x.clone() for x in (q1, q2, k1, k2, v))
    for x in (q1b, q2b, k1b, k2b, vb):
        x[:, :, 6:] += 3.0  # perturb tokens 6..9
    pert = diff_attention_reference(q1b, q2b, k1b, k2b, vb, lam, normalize=True)
    assert torch.equal(base[:, :, :6], pert[:, :, :6])
    assert (base[:, :, 6:] - pert[:, :, 6:]).abs().max() > 1e-3


def test_kv_cache_decoding_row_equals_full_forward():
    q1, q2, k1, k2, v = _inputs(t=8, s=8)
    lam = torch.tensor([0.3, 0.5, 0.7, 0.9])
    full = diff_attention_reference(q1, q2, k1, k2, v, lam, normalize=True, lambda_init=0.2)
    for i in (0, 4, 7):  # query i against the cache of keys 0..i (bottom-right causal)
        step = diff_attention_reference(
            q1[:, :, i : i + 1], q2[:, :, i : i + 1], k1[:, :, : i + 1], k2[:, :, : i + 1],
            v[:, :, : i + 1], lam, normalize=True, lambda_init=0.2,
        )  # fmt: skip
        assert_close(f"decode step {i}", full[:, :, i : i + 1], step)


def test_packed_equals_separate():
    lens = [3, 0, 6, 1]
    q1, q2, k1, k2, v = _inputs(b=1, t=10, s=10)
    lam = torch.tensor([0.3, 0.5, 0.7, 0.9])
    cu = torch.tensor([0, 3, 3, 9, 10], dtype=torch.int32)
    packed = diff_attention_reference(q1, q2, k1, k2, v, lam, cu_seqlens=cu, normalize=True)
    start = 0
    for n in lens:
        if n:
            sl = slice(start, start + n)
            sep = diff_attention_reference(
                q1[:, :, sl], q2[:, :, sl], k1[:, :, sl], k2[:, :, sl], v[:, :, sl], lam,
                normalize=True,
            )  # fmt: skip
            assert_close(f"segment at {start}", sep, packed[:, :, sl])
        start += n


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("h", "hkv", "t", "s"), [(4, 2, 9, 9), (4, 1, 5, 12), (2, 2, 7, 4)])
def test_flashdiff_paths_agree_with_reference(causal, h, hkv, t, s):
    q1, q2, k1, k2, v = _inputs(h=h, hkv=hkv, t=t, s=s)
    lam = torch.linspace(-0.3, 1.2, h)
    w = torch.linspace(0.5, 2.0, 16)
    kw = dict(causal=causal, normalize=True, norm_weight=w, lambda_init=0.3)
    ref = diff_attention_reference(q1, q2, k1, k2, v, lam, **kw)
    assert_close("flashdiff_1", ref, diff_attention_sdpa(q1, q2, k1, k2, v, lam, **kw))
    assert_close("flashdiff_2", ref, diff_attention_sdpa4(q1, q2, k1, k2, v, lam, **kw))


def test_epilogue_without_gain_matches_torch_rmsnorm():
    u = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    got = diff_epilogue(u, normalize=True, norm_weight=None, lambda_init=0.2, eps=1e-5)
    want = 0.8 * torch.nn.functional.rms_norm(u, (16,), eps=1e-5)
    assert_close("epilogue", want, got)


@pytest.mark.parametrize("per_head", [True, False])
def test_gradcheck_reference_float64(per_head):
    q1, q2, k1, k2, v = _inputs(b=1, h=2, hkv=1, t=4, s=5, d=3, dv=6, dtype=torch.float64)
    lam = torch.tensor([0.4, 0.9]) if per_head else torch.tensor(0.7)
    w = torch.linspace(0.5, 1.5, 6)

    def f(q1, q2, k1, k2, v, lam, w):
        return diff_attention_reference(q1, q2, k1, k2, v, lam, norm_weight=w, normalize=True,
                                        lambda_init=0.2)  # fmt: skip

    # Full Jacobian for per-head λ; the cheaper random-projection check for the shared λ.
    assert gradcheck_f64(f, q1, q2, k1, k2, v, lam, w, fast_mode=not per_head)
