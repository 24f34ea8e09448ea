"""MLPKANMoE: sparse top-k vs a dense every-expert oracle, the k = E mixture, Soft-MoE vs an
explicit per-sequence loop, permutation equivariance, gradients, counts, stats and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from paperbricks.core_kernels.moe import load_balancing_loss
from paperbricks.core_kernels.testing import assert_close, requires_cuda
from paperbricks.mlpkan.moe import MLPKANMoE, router_stats

D = 8


def _moe(**kw) -> MLPKANMoE:
    args = dict(num_mlp_experts=2, num_kan_experts=2, mlp_hidden=6, kan_hidden=3)
    args.update(kw)
    g = torch.Generator().manual_seed(1)
    return MLPKANMoE(D, dtype=torch.float64, generator=g, **args)


def _expert_dense(moe: MLPKANMoE, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e on every token, written out independently of the module's forward."""
    if e < moe.num_mlp_experts:
        h = F.gelu(F.linear(x, moe.mlp_w1[e].T, moe.mlp_b1[e]))  # exact erf GELU
        return F.linear(h, moe.mlp_w2[e].T, moe.mlp_b2[e])
    return moe.kan_experts[e - moe.num_mlp_experts](x)


def dense_topk_reference(
    moe: MLPKANMoE, x: torch.Tensor, logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Run every expert on every token and mask with the renormalised top-k softmax weights
    (of ``logits`` when given, e.g. a low-precision run's own router logits)."""
    xt = x.reshape(-1, x.shape[-1])
    if logits is None:
        logits = xt @ moe.gate.weight.T
    probs = torch.softmax(logits.to(xt.dtype), dim=-1)  # (N, E)
    top, idx = probs.topk(moe.top_k, dim=-1)
    mask = torch.zeros_like(probs).scatter(1, idx, top / top.sum(-1, keepdim=True))  # (N, E)
    ys = torch.stack([_expert_dense(moe, e, xt) for e in range(moe.num_experts)], 1)  # (N, E, d)
    return (mask[..., None] * ys).sum(1).reshape(x.shape)


def soft_reference(moe: MLPKANMoE, x: torch.Tensor) -> torch.Tensor:
    """Soft-MoE written as loops over sequences and slots (Puigcerver et al. 2023, eq. 1-3)."""
    p = moe.slots_per_expert
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        xs = x[b]  # (T, d)
        logits = xs @ moe.slot_embeds  # (T, S)
        disp = torch.softmax(logits, dim=0)
        comb = torch.softmax(logits, dim=1)
        ys = []
        for s in range(logits.shape[1]):
            slot = (disp[:, s : s + 1] * xs).sum(0, keepdim=True)  # (1, d)
            ys.append(_expert_dense(moe, s // p, slot))
        out[b] = comb @ torch.cat(ys, 0)
    return out


def _grads(moe, x, y):
    w = torch.randn_like(y)
    params = [p for p in moe.parameters() if p.requires_grad]
    return torch.autograd.grad((y * w).sum(), [x, *params], allow_unused=True), w


def _routing_to(moe: MLPKANMoE, experts: list[int], x: torch.Tensor) -> None:
    """Make every token of ``x`` (first feature > 0) prefer ``experts`` by far."""
    with torch.no_grad():
        moe.gate.weight.zero_()
        for rank, e in enumerate(experts):
            moe.gate.weight[e, 0] = 20.0 - rank
    x.data[..., 0] = x.data[..., 0].abs() + 1.0


@pytest.mark.parametrize(
    "case, top_k, route",
    [
        ("random", 2, None),
        ("k1", 1, None),
        ("all-to-one-kan", 1, [3]),
        ("two-busy-rest-empty", 2, [0, 3]),
        ("mlp-only-used", 2, [1, 0]),
    ],
)
def test_sparse_topk_equals_dense_masked_reference_fp64(seeded, nan_poison, case, top_k, route):
    moe = _moe(top_k=top_k)
    x = torch.randn(3, 7, D, dtype=torch.float64, requires_grad=True)
    if route is not None:
        _routing_to(moe, route, x)
    y, logits, aux = moe(x)
    ref = dense_topk_reference(moe, x)
    assert_close("moe forward", ref, y, ratio=1e-12)
    assert logits.shape == (21, 4) and logits.dtype == torch.float64
    assert float(aux) == 0.0
    (g_out, w) = _grads(moe, x, y)
    g_ref = torch.autograd.grad(
        (ref * w).sum(), [x, *[p for p in moe.parameters() if p.requires_grad]], allow_unused=True
    )
    for a, b in zip(g_ref, g_out, strict=True):
        if a is None or b is None:  # an expert no token reached: no gradient either way
            assert a is None or not a.abs().any()
            assert b is None or not b.abs().any()
            continue
        assert_close("moe grad", a, b, ratio=1e-10)
    if route is not None:
        counts = moe.last_routing_stats["expert_counts"].tolist()
        assert [e for e, c in enumerate(counts) if c] == sorted(route[:top_k])


def test_top_k_equal_to_num_experts_is_the_softmax_mixture(seeded):
    moe = _moe(top_k=4)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    y, logits, _ = moe(x)
    xt = x.reshape(-1, D)
    probs = torch.softmax(xt @ moe.gate.weight.T, -1)
    mix = sum(probs[:, e : e + 1] * _expert_dense(moe, e, xt) for e in range(4))
    assert_close("k=E mixture", mix.reshape(x.shape), y, ratio=1e-12)
    assert_close("logits", xt @ moe.gate.weight.T, logits, ratio=1e-14)


def test_topk_permuting_tokens_permutes_outputs(seeded):
    moe = _moe()
    x = torch.randn(13, D, dtype=torch.float64)
    perm = torch.randperm(13)
    y, logits, _ = moe(x)
    y_p, logits_p, _ = moe(x[perm])
    assert_close("permuted", y[perm], y_p, ratio=1e-14)
    assert torch.equal(logits[perm], logits_p)


@pytest.mark.parametrize("slots", [1, 2])
def test_soft_router_equals_explicit_per_sequence_loop(seeded, slots):
    moe = _moe(router="soft", slots_per_expert=slots)
    x = torch.randn(3, 5, D, dtype=torch.float64, requires_grad=True)
    y, logits, aux = moe(x)
    ref = soft_reference(moe, x)
    assert_close("soft forward", ref, y, ratio=1e-12)
    assert logits.shape == (15, 4 * slots) and float(aux) == 0.0
    g_out, w = _grads(moe, x, y)
    params = [p for p in moe.parameters() if p.requires_grad]
    g_ref = torch.autograd.grad((ref * w).sum(), [x, *params])
    for a, b in zip(g_ref, g_out, strict=True):
        assert_close("soft grad", a, b, ratio=1e-10)


def test_soft_router_permutation_within_sequence_and_no_mixing_across_batch(seeded):
    moe = _moe(router="soft", slots_per_expert=2)
    x = torch.randn(3, 6, D, dtype=torch.float64)
    y, _, _ = moe(x)
    perm = torch.randperm(6)
    y_p, _, _ = moe(x[:, perm])
    assert_close("within-sequence permutation", y[:, perm], y_p, ratio=1e-13)
    # Each sequence alone gives the same output: slots never mix sequences of the batch.
    for b in range(3):
        alone, _, _ = moe(x[b : b + 1])
        assert_close(f"sequence {b} alone", y[b : b + 1], alone, ratio=1e-13)
    # Changing sequence 0 leaves the others untouched.
    x2 = x.clone()
    x2[0] += 1.0
    y2, _, _ = moe(x2)
    assert torch.equal(y2[1:], y[1:])
    assert not torch.equal(y2[0], y[0])


@pytest.mark.parametrize("router", ["topk", "soft"])
def test_every_parameter_receives_a_gradient(seeded, router):
    kw = {"top_k": 4} if router == "topk" else {"router": "soft"}
    moe = _moe(**kw)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    y, _, _ = moe(x)
    y.square().sum().backward()
    for name, p in moe.named_parameters():
        if not p.requires_grad:
            assert name.endswith("rbf.grid")  # fixed KAN grid, as the official code
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_counts_deit_tiny_block():
    moe = MLPKANMoE(192, num_mlp_experts=4, num_kan_experts=4, mlp_hidden=192, kan_hidden=96)

    def n(module_params):
        return sum(p.numel() for p in module_params if p.requires_grad)

    mlp_expert = sum(getattr(moe, k)[0].numel() for k in ("mlp_w1", "mlp_b1", "mlp_w2", "mlp_b2"))
    assert mlp_expert == 74_112
    assert n(moe.kan_experts[0].parameters()) == 295_488
    assert moe.gate.weight.numel() == 1_536
    assert n(moe.parameters()) == 1_479_936
    # The grids are present but not trainable (2 per KAN expert, 8 centres each).
    grids = [p for name, p in moe.named_parameters() if name.endswith("rbf.grid")]
    assert len(grids) == 8 and all(g.numel() == 8 and not g.requires_grad for g in grids)


def test_router_stats_and_routing_share(seeded):
    logits = torch.tensor([[0.0, 0.0, 5.0, 5.0], [9.0, 0.0, 0.0, 9.0]])
    st = router_stats(logits, 2, 2, top_k=2)
    assert float(st["kan_share"]) == pytest.approx(0.75)
    assert float(st["mlp_share"]) == pytest.approx(0.25)
    assert st["expert_mass"].tolist() == pytest.approx([0.25, 0.0, 0.25, 0.5])
    assert st["expert_counts"].tolist() == [1, 0, 1, 2]
    soft = router_stats(torch.zeros(3, 8), 1, 3, router="soft", slots_per_expert=2)
    assert soft["expert_mass"].tolist() == pytest.approx([0.25] * 4)
    assert float(soft["kan_share"]) == pytest.approx(0.75)
    moe = _moe()
    x = torch.randn(4, D, dtype=torch.float64)
    _routing_to(moe, [2, 3], x)
    moe(x)
    assert float(moe.last_routing_stats["kan_share"]) == pytest.approx(1.0)


def test_aux_losses_match_core_kernels_and_closed_forms(seeded):
    moe = _moe(aux_loss_coef=0.01)
    x = torch.randn(9, D, dtype=torch.float64)
    _, logits, aux = moe(x)
    idx = logits.topk(2, dim=-1).indices
    assert_close("lb", load_balancing_loss(logits, idx, 4, coef=0.01), aux, ratio=1e-14)
    moe = _moe(aux_loss_coef=0.01, z_loss_coef=0.1)
    with torch.no_grad():
        moe.gate.weight.zero_()  # uniform router: LB = c, z = c_z·(ln E)²
    _, _, aux = moe(x)
    assert float(aux.detach()) == pytest.approx(
        0.01 + 0.1 * torch.log(torch.tensor(4.0)).item() ** 2
    )


def test_bad_inputs_raise_clear_errors():
    moe = _moe()
    with pytest.raises(ValueError, match="d_model=8"):
        moe(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        moe(torch.randn(3, D))
    with pytest.raises(ValueError, match="top_k"):
        MLPKANMoE(D, num_mlp_experts=1, num_kan_experts=1, top_k=3)
    with pytest.raises(ValueError, match="router"):
        MLPKANMoE(D, router="hash")
    with pytest.raises(ValueError, match="num_mlp_experts"):
        MLPKANMoE(D, num_mlp_experts=0, num_kan_experts=0)
    with pytest.raises(ValueError, match="soft"):
        MLPKANMoE(D, router="soft", aux_loss_coef=0.1)
    with pytest.raises(ValueError, match="T, d"):
        _moe(router="soft")(torch.randn(D, dtype=torch.float64))
    with pytest.raises(ValueError, match="mlp_activation"):
        MLPKANMoE(D, mlp_activation="relu")
    with pytest.raises(ValueError, match="router_logits"):
        router_stats(torch.zeros(3, 5), 2, 2)


@pytest.mark.parametrize("router", ["topk", "soft"])
def test_triton_path_matches_reference_fp32(seeded, router):
    """impl="triton" (core-kernels grouped GEMM + the fused grouped KAN kernel, interpreted on
    the CPU) against impl="reference", forward and backward."""
    g = torch.Generator().manual_seed(3)
    kw = dict(num_mlp_experts=2, num_kan_experts=2, mlp_hidden=8, kan_hidden=4, router=router)
    ref = MLPKANMoE(D, impl="reference", generator=g, **kw)
    tri = MLPKANMoE(D, impl="triton", **kw)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(7, D) if router == "topk" else torch.randn(2, 3, D)
    y_ref, _, _ = ref(x)
    y_tri, _, _ = tri(x)
    assert_close("triton forward", y_ref, y_tri)
    y_ref.square().sum().backward()
    y_tri.square().sum().backward()
    for (name, a), b in zip(ref.named_parameters(), tri.parameters(), strict=True):
        if a.requires_grad:
            assert_close(f"triton grad {name}", a.grad, b.grad, ratio=1e-4)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("router", ["topk", "soft"])
def test_gpu_moe_matches_fp64_dense_reference(seeded, dtype, router):
    d = 64
    kw = dict(num_mlp_experts=4, num_kan_experts=4, mlp_hidden=64, kan_hidden=32, router=router)
    ref = MLPKANMoE(d, dtype=torch.float64, generator=torch.Generator().manual_seed(0), **kw)
    gpu = MLPKANMoE(d, device="cuda", dtype=dtype, **kw)
    gpu.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    x = torch.randn(4, 256, d, dtype=torch.float64)
    # Reference from the low-precision weights (rounded once), computed in float64.
    ref.load_state_dict({k: v.to(dtype).double() for k, v in ref.state_dict().items()})
    y, logits, _ = gpu(x.to("cuda", dtype))
    xr = x.to(dtype).double()
    if router == "topk":  # route with the GPU's own logits: near-ties may flip in low precision
        y_ref = dense_topk_reference(ref, xr, logits.detach().double().cpu())
    else:
        y_ref = soft_reference(ref, xr)
    ratio = 1e-4 if dtype == torch.float32 else 5e-2
    assert_close(f"gpu {router} {dtype}", y_ref.float(), y.float().cpu(), ratio=ratio)
    y.float().square().mean().backward()
    for name, p in gpu.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
