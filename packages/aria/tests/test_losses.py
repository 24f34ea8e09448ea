"""Aria's router losses: closed forms, uniform routing, Mixtral's HF loss, masking, auto-scaler."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from paperbricks.aria.losses import (
    ARIA_AUX_LOSS_COEF,
    ARIA_Z_LOSS_COEF,
    AuxLossAutoScaler,
    attach_aux_loss,
    router_aux_losses,
    router_load_balancing_loss,
    router_z_loss,
    set_aux_loss_scale,
)
from paperbricks.core_kernels.testing import assert_close

pytestmark = pytest.mark.usefixtures("one_thread")


def test_official_coefficients():
    assert ARIA_AUX_LOSS_COEF == 1e-3
    assert ARIA_Z_LOSS_COEF == 1e-5


@pytest.mark.parametrize("e,k", [(4, 1), (8, 2), (6, 3)])
def test_load_balancing_equals_coef_at_uniform_routing(e, k):
    # Circulant logits: token t prefers experts t, t+1, ..., t+k-1 (mod E). Every expert is chosen
    # k times over E tokens and, by symmetry, every expert's mean probability is 1/E.
    t = torch.arange(e)[:, None]
    logits = torch.zeros(e, e)
    for j in range(k):
        logits[t[:, 0], (t[:, 0] + j) % e] = 3.0 - 0.5 * j
    _, idx = logits.topk(k, -1)
    counts = torch.bincount(idx.flatten(), minlength=e)
    assert (counts == k).all()
    assert torch.allclose(torch.softmax(logits, -1).mean(0), torch.full((e,), 1 / e))
    lb = router_load_balancing_loss(logits, k)
    assert float(lb) == pytest.approx(ARIA_AUX_LOSS_COEF, rel=1e-6)


def test_load_balancing_hand_value():
    # 2 tokens, 2 experts, k=1: p = [[0.8, 0.2], [0.6, 0.4]], both pick expert 0.
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]])
    logits = probs.log()
    lb = router_load_balancing_loss(logits, 1, coef=1.0)
    # E/(T·k) · Σ P̄_e n_e = 2/2 · (0.7·2 + 0.3·0) = 1.4
    assert float(lb) == pytest.approx(1.4, rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_times_lb_over_coef_equals_mixtral(seeded, k):
    # Mixtral's function softmaxes in float32 whatever the input dtype: compare at fp32 level.
    logits = torch.randn(37, 8, requires_grad=True)
    ours = router_load_balancing_loss(logits, k, coef=0.01)
    mixtral = load_balancing_loss_func((logits,), num_experts=8, top_k=k)
    assert float(k * ours.detach() / 0.01) == pytest.approx(float(mixtral.detach()), rel=1e-6)
    (g_ours,) = torch.autograd.grad(k * ours / 0.01, logits)
    (g_mix,) = torch.autograd.grad(mixtral, logits)
    assert_close("LB gradient vs Mixtral", g_mix, g_ours)


def test_masked_load_balancing_equals_mixtral_masked_and_valid_subset(seeded):
    b, s, e, k = 3, 6, 8, 2
    logits = torch.randn(b * s, e)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, :2] = 0
    mask[2, 4:] = 0
    ours = router_load_balancing_loss(logits, k, coef=1.0, attention_mask=mask)
    mixtral = load_balancing_loss_func((logits,), num_experts=e, top_k=k, attention_mask=mask)
    assert float(k * ours) == pytest.approx(float(mixtral), rel=1e-6)
    subset = router_load_balancing_loss(logits[mask.flatten().bool()], k, coef=1.0)
    assert float(ours) == pytest.approx(float(subset), rel=1e-6)
    assert float(ours) != pytest.approx(float(router_load_balancing_loss(logits, k, coef=1.0)))


def test_z_loss_closed_form():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    expected = 1e-5 * (math.log(4.0) ** 2 + (1.0 + math.log(2.0)) ** 2) / 2
    assert float(router_z_loss(logits)) == pytest.approx(expected, rel=1e-6)
    masked = router_z_loss(logits, attention_mask=torch.tensor([0, 1]))
    assert float(masked) == pytest.approx(1e-5 * (1.0 + math.log(2.0)) ** 2, rel=1e-6)


def test_router_aux_losses_sum_over_layers(seeded):
    layers = [torch.randn(10, 4) for _ in range(3)]
    lb, z = router_aux_losses(layers, top_k=2, aux_coef=1e-3, z_coef=1e-5)
    lb_ref = sum(router_load_balancing_loss(x, 2) for x in layers)
    z_ref = sum(router_z_loss(x) for x in layers)
    assert float(lb) == pytest.approx(float(lb_ref), rel=1e-6)
    assert float(z) == pytest.approx(float(z_ref), rel=1e-6)
    lb0, z0 = router_aux_losses(layers, top_k=2, aux_coef=0.0, z_coef=0.0)
    assert float(lb0) == 0.0 and float(z0) == 0.0


def test_autoscaler_gradients_equal_explicit_and_forward_excludes_aux(seeded):
    w = torch.randn(5, 4, requires_grad=True)
    x = torch.randn(12, 5)

    def parts():
        logits = x @ w  # (12, 4)
        main = logits.tanh().square().mean()
        lb, z = router_aux_losses([logits], top_k=2, aux_coef=0.1, z_coef=0.01)
        return logits, main, lb + z

    logits, main, aux = parts()
    (main + aux).backward()
    g_explicit = w.grad.clone()
    w.grad = None
    logits, main, aux = parts()
    out = attach_aux_loss(logits, aux)
    loss = out.tanh().square().mean()
    assert torch.equal(loss.detach(), main.detach())
    loss.backward()
    assert_close("autoscaler vs explicit", g_explicit, w.grad)


def test_aux_loss_scale_is_applied_and_restorable():
    old = AuxLossAutoScaler.main_loss_backward_scale
    try:
        set_aux_loss_scale(0.25)
        w = torch.tensor(2.0, requires_grad=True)
        attach_aux_loss(3 * w, w**2).backward()
        assert float(w.grad) == pytest.approx(3 + 0.25 * 4)
    finally:
        set_aux_loss_scale(old)


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="router_logits"):
        router_load_balancing_loss(torch.zeros(3, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"router_logits: expected shape \(T, E\)"):
        router_z_loss(torch.zeros(3))
    with pytest.raises(ValueError, match="attention_mask"):
        router_z_loss(torch.zeros(3, 4), attention_mask=torch.ones(2, 2))
    with pytest.raises(TypeError, match="sequence"):
        router_aux_losses(torch.zeros(3, 4), top_k=1)
    with pytest.raises(ValueError, match="at least one layer"):
        router_aux_losses([], top_k=1)
    with pytest.raises(ValueError, match="aux_coef"):
        router_aux_losses([torch.zeros(3, 4)], top_k=1, aux_coef=-1.0)
    with pytest.raises(ValueError, match="aux_loss"):
        attach_aux_loss(torch.zeros(3), torch.zeros(2))
