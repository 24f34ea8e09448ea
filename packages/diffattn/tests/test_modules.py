"""lambda_init, DiffLambda and MultiheadDiffAttn against the paper's equations written out by hand.

Oracles: the λ_init values of the paper/spec; a literal float64 transcription of eqs. 1–3 (own
RoPE via complex rotation / rotate_half, explicit head pairing per layout, explicit softmaxes and
RMSNorm) independent of core-kernels and of ``diff_attention``; GQA = MHA with the KV heads
repeated (flash semantics); KV-cache decoding = full forward; padded rows = unpadded runs;
causality; gradcheck in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from paperbricks.core_kernels.testing import assert_close, gradcheck_f64, requires_cuda
from paperbricks.diffattn.modules import DiffLambda, MultiheadDiffAttn, lambda_init

# ----------------------------------------------------------------------------------------------
# λ


@pytest.mark.parametrize(("depth", "value"), [(0, 0.2), (1, 0.355509), (5, 0.666122)])
def test_lambda_init_known_values(depth, value):
    assert lambda_init(depth) == pytest.approx(value, abs=5e-7)


def test_lambda_init_tends_to_08_and_rejects_bad_depth():
    assert lambda_init(200) == pytest.approx(0.8, abs=1e-12)
    for bad in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="depth"):
            lambda_init(bad)


def test_diff_lambda_formula_and_init():
    g = torch.Generator().manual_seed(3)
    lam = DiffLambda(head_dim=16, depth=2, std=0.1, generator=g)
    vecs = [
        getattr(lam, n).detach().double()
        for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")
    ]
    expect = math.exp(float(vecs[0] @ vecs[1])) - math.exp(float(vecs[2] @ vecs[3]))
    expect += 0.8 - 0.6 * math.exp(-0.6)
    out = lam().detach()
    assert out.shape == ()  # one λ per layer, shared by every head
    assert float(out) == pytest.approx(expect, rel=1e-6)
    # the draws are N(0, 0.1²): 64 samples, std within a loose band
    allv = torch.cat(vecs)
    assert 0.05 < float(allv.std()) < 0.15
    # same generator seed -> same vectors; constant init overrides the schedule
    again = DiffLambda(16, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.lambda_q2, lam.lambda_q2)
    const = DiffLambda(16, 2, std=0.0, init=0.5)
    assert float(const().detach()) == pytest.approx(0.5)


def test_diff_lambda_gradient_reaches_the_vectors():
    lam = DiffLambda(8, 0, generator=torch.Generator().manual_seed(0))
    lam().backward()
    # ∂λ/∂λ_q1 = exp(λ_q1·λ_k1)·λ_k1
    e1 = torch.exp(lam.lambda_q1.detach() @ lam.lambda_k1.detach())
    assert_close("dλ/dλ_q1", e1 * lam.lambda_k1.detach(), lam.lambda_q1.grad)
    e2 = torch.exp(lam.lambda_q2.detach() @ lam.lambda_k2.detach())
    assert_close("dλ/dλ_k2", -e2 * lam.lambda_q2.detach(), lam.lambda_k2.grad)


# ----------------------------------------------------------------------------------------------
# an independent transcription of eqs. 1-3


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float, layout: str) -> torch.Tensor:
    """x (B, H, T, d), pos (T,): RoPE written independently of core-kernels."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    ang = pos.double()[:, None] * inv  # (T, d/2)
    rot = torch.polar(torch.ones_like(ang), ang)  # e^{iφ}
    if layout == "interleaved":
        xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
        return torch.view_as_real(xc * rot).reshape(x.shape)
    xc = torch.complex(x.double()[..., : d // 2], x.double()[..., d // 2 :])
    y = xc * rot
    return torch.cat([y.real, y.imag], dim=-1)


def _paper_forward(m: MultiheadDiffAttn, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Eqs. 1–3 for module ``m`` on x (B, T, E), float64, causal; positions pos (T,)."""
    x = x.double()
    b, t, _ = x.shape
    h, hkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    n_rep = h // hkv
    q = (x @ m.q_proj.weight.double().T).view(b, t, 2 * h, d).transpose(1, 2)
    k = (x @ m.k_proj.weight.double().T).view(b, t, 2 * hkv, d).transpose(1, 2)
    vr = x @ m.v_proj.weight.double().T
    if m.layout == "unilm":
        pair_q = [(2 * i, 2 * i + 1) for i in range(h)]
        pair_k = [(2 * g, 2 * g + 1) for g in range(hkv)]
        v = vr.view(b, t, hkv, 2 * d).transpose(1, 2)
    else:
        pair_q = [(i, i + h) for i in range(h)]
        pair_k = [(g, g + hkv) for g in range(hkv)]
        vc = vr.view(b, t, 2 * hkv, d).transpose(1, 2)
        v = torch.stack([torch.cat([vc[:, g], vc[:, g + hkv]], -1) for g in range(hkv)], 1)
    q, k = _rope(q, pos, m.rope_theta, m.rope_layout), _rope(k, pos, m.rope_theta, m.rope_layout)
    lq1, lk1, lq2, lk2 = (getattr(m.diff_lambda, n).double() for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"))  # fmt: skip
    lam = torch.exp(lq1 @ lk1) - torch.exp(lq2 @ lk2) + m.lambda_init
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    heads = []
    for i in range(h):
        g = i // n_rep  # flash GQA: both components read diff-KV-head i // n_rep
        maps = []
        for c in range(2):
            s = q[:, pair_q[i][c]] @ k[:, pair_k[g][c]].transpose(-1, -2) / math.sqrt(d)
            maps.append(s.masked_fill(~mask, -math.inf).softmax(-1))
        u = (maps[0] - lam * maps[1]) @ v[:, g]  # (B, T, 2d)
        u = u / torch.sqrt(u.pow(2).mean(-1, keepdim=True) + m.norm_eps)
        if m.subln is not None:
            u = u * m.subln.weight.double()
        heads.append(u * (1 - m.lambda_init))
    out = torch.cat(heads, dim=-1)  # (B, T, h·2d)
    return out @ m.o_proj.weight.double().T


def _module(**kw) -> MultiheadDiffAttn:
    g = torch.Generator().manual_seed(kw.pop("seed", 0))
    m = MultiheadDiffAttn(generator=g, **kw)
    with torch.no_grad():
        if m.subln is not None:
            m.subln.weight.uniform_(0.5, 1.5, generator=g)
    return m


@pytest.mark.parametrize(
    ("layout", "rope_layout", "heads", "kv_heads", "affine"),
    [
        ("unilm", "interleaved", 2, 2, True),
        ("unilm", "interleaved", 4, 2, True),
        ("unilm", "half", 4, 1, False),
        ("hf", "half", 4, 2, False),
        ("hf", "interleaved", 2, 1, True),
    ],
)
def test_module_matches_paper_equations(layout, rope_layout, heads, kv_heads, affine):
    m = _module(
        embed_dim=8 * heads, depth=3, num_heads=heads, num_kv_heads=kv_heads, layout=layout,
        rope_layout=rope_layout, norm_affine=affine, impl="reference", seed=heads + kv_heads,
    ).double()  # fmt: skip
    x = torch.randn(
        2, 7, 8 * heads, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    y, _ = m(x)
    assert_close("MultiheadDiffAttn vs eqs. 1-3", _paper_forward(m, x, torch.arange(7)), y)


def test_default_impl_float32_matches_reference():
    m = _module(embed_dim=32, depth=1, num_heads=2, num_kv_heads=1)
    x = torch.randn(2, 9, 32)
    y, _ = m(x)  # impl="auto": two SDPA calls on CPU
    assert_close("auto vs eqs. 1-3 (float32)", _paper_forward(m, x, torch.arange(9)).float(), y)


def _repeated_kv_mha(gqa: MultiheadDiffAttn, naive: bool) -> MultiheadDiffAttn:
    """An MHA module whose K/V heads repeat ``gqa``'s (n_rep = 2, unilm layout).

    ``naive=True`` repeats the 2·Hkv *component* key heads instead, as the official naive file's
    ``repeat_kv`` does; that pairs the components of a diff-head with the wrong key halves.
    """
    e, d, n_rep = gqa.embed_dim, gqa.head_dim, gqa.num_heads // gqa.num_kv_heads
    mha = MultiheadDiffAttn(e, gqa.depth, gqa.num_heads, gqa.num_heads, impl="reference")
    sd = {k: v for k, v in gqa.state_dict().items() if not k.startswith(("k_proj", "v_proj"))}
    mha.load_state_dict(sd, strict=False)
    with torch.no_grad():  # unilm: diff-KV-head g owns rows [g·2d, (g+1)·2d) of W^K and W^V
        wv = gqa.v_proj.weight.view(gqa.num_kv_heads, 2 * d, e)
        mha.v_proj.weight.copy_(wv.repeat_interleave(n_rep, dim=0).reshape(-1, e))
        block = d if naive else 2 * d
        wk = gqa.k_proj.weight.view(-1, block, e)
        mha.k_proj.weight.copy_(wk.repeat_interleave(n_rep, dim=0).reshape(-1, e))
    return mha


def test_gqa_equals_mha_with_repeated_kv_heads():
    """Flash semantics: diff-head i reads diff-KV-head i // n_rep for both components."""
    gqa = _module(embed_dim=64, depth=0, num_heads=4, num_kv_heads=2, impl="reference")
    x = torch.randn(2, 6, 64)
    y = gqa(x)[0]
    assert_close("GQA vs repeated-KV MHA", _repeated_kv_mha(gqa, naive=False)(x)[0], y)
    naive = _repeated_kv_mha(gqa, naive=True)(x)[0]
    assert (naive - y).norm() > 1e-2 * y.norm()  # the naive file's pairing is not what we do


def test_output_attentions_rows_sum_to_one_minus_lambda():
    m = _module(embed_dim=32, depth=4, num_heads=2)
    _, maps = m(torch.randn(1, 5, 32), output_attentions=True)
    assert maps.shape == (1, 2, 5, 5)
    lam = float(m.diff_lambda().detach())
    assert_close("row sums", torch.full((1, 2, 5), 1 - lam), maps.sum(-1))
    assert torch.all(maps.triu(1) == 0)  # causal


@pytest.mark.parametrize("layout", ["unilm", "hf"])
def test_kv_cache_decoding_equals_full_forward(layout):
    m = _module(embed_dim=32, depth=2, num_heads=2, num_kv_heads=1, layout=layout)
    x = torch.randn(2, 9, 32)
    full, _ = m(x)
    cache = DynamicCache()
    steps = [m(x[:, :5], past_key_values=cache)[0]]
    steps += [m(x[:, i : i + 1], past_key_values=cache)[0] for i in range(5, 9)]
    assert cache.get_seq_length(m.layer_idx) == 9  # the layer index defaults to depth
    assert_close("cached decoding", full, torch.cat(steps, dim=1))


def test_causality():
    m = _module(embed_dim=32, depth=0, num_heads=2)
    x = torch.randn(1, 8, 32)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 32)
    y, y2 = m(x)[0], m(x2)[0]
    assert torch.equal(y[:, :5], y2[:, :5])
    assert not torch.allclose(y[:, 5:], y2[:, 5:])


def test_left_padding_equals_unpadded_runs_also_with_cache():
    m = _module(embed_dim=32, depth=1, num_heads=2, num_kv_heads=1)
    a, b = torch.randn(1, 6, 32), torch.randn(1, 4, 32)
    x = torch.cat([a, torch.cat([torch.zeros(1, 2, 32), b], 1)], 0)  # row 1 left-padded by 2
    mask = torch.tensor([[1] * 6, [0, 0] + [1] * 4])
    y, maps = m(x, attention_mask=mask, output_attentions=True)
    assert_close("row 0", m(a)[0][0], y[0])
    ya, mapsb = m(b, output_attentions=True)
    assert_close("row 1 (padded)", ya[0], y[1, 2:])
    assert torch.all(y[1, :2] == 0)  # padding queries output zeros
    assert_close("row 1 maps", mapsb[0], maps[1, :, 2:, 2:])
    assert torch.all(maps[1, :, :, :2] == 0)
    # one decoding step on top of a padded cache
    cache = DynamicCache()
    m(x, attention_mask=mask, past_key_values=cache)
    nxt = torch.randn(2, 1, 32)
    step, _ = m(nxt, attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1),
                past_key_values=cache)  # fmt: skip
    assert_close("padded decode row 1", m(torch.cat([b, nxt[1:]], 1))[0][0, -1], step[1, 0])


def test_gradcheck_float64_module():
    m = _module(embed_dim=8, depth=1, num_heads=1, impl="reference").double()
    names = ["diff_lambda.lambda_q1", "diff_lambda.lambda_k2", "subln.weight", "q_proj.weight"]
    params = dict(m.named_parameters())

    def fn(x, lq1, lk2, gamma, wq):
        over = dict(zip(names, (lq1, lk2, gamma, wq), strict=True))
        return torch.func.functional_call(m, {**params, **over}, (x,))[0]

    x = torch.randn(1, 4, 8, dtype=torch.float64)
    assert gradcheck_f64(fn, x, *(params[n] for n in names))


def test_generator_makes_init_reproducible():
    a = MultiheadDiffAttn(32, 0, 2, generator=torch.Generator().manual_seed(7))
    b = MultiheadDiffAttn(32, 0, 2, generator=torch.Generator().manual_seed(7))
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(embed_dim=30, depth=0, num_heads=2), "embed_dim"),
        (dict(embed_dim=32, depth=0, num_heads=4, num_kv_heads=3), "num_kv_heads"),
        (dict(embed_dim=32, depth=-1, num_heads=2), "depth"),
        (dict(embed_dim=32, depth=0, num_heads=2, layout="meta"), "layout"),
        (dict(embed_dim=32, depth=0, num_heads=2, rope_layout="gptj"), "rope_layout"),
        (dict(embed_dim=32, depth=0, num_heads=2, impl="cuda"), "impl"),
        (dict(embed_dim=24, depth=0, num_heads=4), "head_dim"),  # d = 3 is odd
        (dict(embed_dim=32, depth=0, num_heads=2, head_norm=False), "norm_affine"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiheadDiffAttn(**kwargs)


def test_bad_forward_inputs_raise():
    m = MultiheadDiffAttn(32, 0, 2)
    with pytest.raises(ValueError, match="hidden_states"):
        m(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="attention_mask"):
        m(torch.randn(2, 5, 32), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask"):
        m(torch.randn(2, 5, 32), attention_mask=torch.ones(2, 1, 5, 5))


@pytest.mark.slow
def test_triton_impl_matches_reference_interpreted():
    m = _module(embed_dim=32, depth=1, num_heads=2, num_kv_heads=1, impl="triton")
    x = torch.randn(1, 5, 32)
    ref = _paper_forward(m, x, torch.arange(5)).float()
    assert_close("triton module", ref, m(x)[0])


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_module_matches_reference(dtype):
    m = _module(embed_dim=256, depth=3, num_heads=2, num_kv_heads=1)
    x = torch.randn(2, 300, 256)
    ref = _paper_forward(m, x, torch.arange(300)).float().cuda()
    m = m.cuda().to(dtype)
    xc = x.cuda().to(dtype)
    # fp32 Triton dots may run in TF32 on the GPU: a few 1e-4 of RMS error
    ratio = 5e-3 if dtype == torch.float32 else 3e-2
    y, _ = m(xc)  # impl="auto": the fused Triton kernel and Triton RoPE on CUDA
    assert_close("cuda module", ref, y.float(), ratio=ratio)
    cache = DynamicCache()
    first, _ = m(xc[:, :299], past_key_values=cache)
    last, _ = m(xc[:, 299:], past_key_values=cache)
    assert_close("cuda cached decode", ref, torch.cat([first, last], 1).float(), ratio=ratio)
