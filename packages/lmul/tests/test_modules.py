"""LMulLinear, apply_lmul_ and lmul_attention against lmul_matmul and exact-product oracles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import paperbricks.lmul.modules as modules_mod
from paperbricks.core_kernels.attention import attention_reference
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    requires_cuda,
)
from paperbricks.lmul.config import LMulConfig
from paperbricks.lmul.modules import LMulLinear, apply_lmul_, lmul_attention
from paperbricks.lmul.ops import lmul, lmul_matmul

LINEAR = ("linear",)


def _exact_matmul(a: torch.Tensor, b: torch.Tensor, **_: object) -> torch.Tensor:
    """Stand-in for lmul_matmul with exact products (for plumbing oracles)."""
    return torch.matmul(a, b)


# --- LMulLinear ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [3, None])
@pytest.mark.parametrize("bias", [True, False])
def test_lmul_linear_equals_lmul_matmul(seeded, bits, bias):
    cfg = LMulConfig(mantissa_bits=bits, targets=LINEAR)
    layer = LMulLinear(6, 5, bias=bias, config=cfg)
    x = torch.randn(2, 3, 6)
    out = layer(x)
    ref = lmul_matmul(x.reshape(6, 6), layer.weight.t(), mantissa_bits=bits).reshape(2, 3, 5)
    if bias:
        ref = ref + layer.bias
    assert out.shape == (2, 3, 5)
    assert_bitwise_equal(out, ref, "LMulLinear")
    # and it is not the exact product (L-Mul drops the mantissa cross term)
    assert (out - nn.functional.linear(x, layer.weight, layer.bias)).abs().max() > 1e-3


def test_lmul_linear_elementwise_oracle(seeded):
    """One output element is the float sum of element-wise L-Muls (no matmul code involved)."""
    layer = LMulLinear(7, 3, bias=False, config=LMulConfig(mantissa_bits=4))
    x = torch.randn(4, 7)
    out = layer(x)
    prods = lmul(x[:, None, :], layer.weight[None, :, :], mantissa_bits=4)  # (4, 3, 7)
    ref = prods.double().sum(-1)
    assert_close("LMulLinear vs element-wise lmul", ref, out.double(), ratio=1e-6)


def test_from_linear_shares_parameters(seeded):
    lin = nn.Linear(4, 3).train(False)
    new = LMulLinear.from_linear(lin, LMulConfig(mantissa_bits=5))
    assert new.weight is lin.weight and new.bias is lin.bias
    assert not new.training
    assert list(new.state_dict()) == list(lin.state_dict())
    assert new.lmul_config.mantissa_bits == 5
    assert "mantissa_bits=5" in repr(new)
    nobias = LMulLinear.from_linear(nn.Linear(4, 3, bias=False))
    assert nobias.bias is None and nobias(torch.randn(2, 4)).shape == (2, 3)


def test_lmul_linear_backward_exact_is_straight_through(seeded):
    lin = nn.Linear(5, 4)
    layer = LMulLinear.from_linear(lin, LMulConfig(mantissa_bits=3, backward="exact"))
    x = torch.randn(3, 2, 5, requires_grad=True)
    g = torch.randn(3, 2, 4)
    layer(x).backward(g)
    gx, gw, gb = x.grad.clone(), lin.weight.grad.clone(), lin.bias.grad.clone()
    x.grad = None
    lin.weight.grad = lin.bias.grad = None
    nn.functional.linear(x, lin.weight, lin.bias).backward(g)  # the exact layer's gradients
    assert_close("dx", x.grad, gx, ratio=1e-6)
    assert_close("dW", lin.weight.grad, gw, ratio=1e-6)
    assert_close("db", lin.bias.grad, gb, ratio=1e-6)


def test_lmul_linear_backward_lmul(seeded):
    layer = LMulLinear(5, 4, bias=False, config=LMulConfig(mantissa_bits=3, backward="lmul"))
    x = torch.randn(6, 5, requires_grad=True)
    g = torch.randn(6, 4)
    layer(x).backward(g)
    assert_bitwise_equal(x.grad, lmul_matmul(g, layer.weight.detach(), mantissa_bits=3), "dx")
    ref_gw = lmul_matmul(g.t().contiguous(), x.detach(), mantissa_bits=3)  # (out, in)
    assert_close("dW", ref_gw, layer.weight.grad, ratio=1e-6)


def test_lmul_linear_bad_inputs():
    layer = LMulLinear(4, 2)
    with pytest.raises(ValueError, match="in_features=4"):
        layer(torch.randn(3, 5))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        layer([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match="LMulConfig"):
        LMulLinear(4, 2, config={"mantissa_bits": 3})
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        LMulLinear.from_linear(nn.Conv1d(1, 1, 1))
    with pytest.raises(TypeError, match="already an LMulLinear"):
        LMulLinear.from_linear(layer)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        LMulLinear(4, 2, dtype=torch.float64)(torch.randn(1, 4, dtype=torch.float64))


# --- apply_lmul_ -------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.k_proj = nn.Linear(8, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.mlp(self.q_proj(x) * self.k_proj(x)))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)


def _linear_names(model: nn.Module, cls: type) -> set[str]:
    return {n for n, m in model.named_modules() if type(m) is cls}


def test_apply_lmul_filter_replaces_exactly_the_chosen(seeded):
    net = _Net()
    params = {n: p for n, p in net.named_parameters()}
    x = torch.randn(2, 5, 8)
    cfg = LMulConfig(mantissa_bits=4, targets=LINEAR)
    seen: list[str] = []

    def only_mlp(mod: nn.Module, fqn: str) -> bool:
        seen.append(fqn)
        return ".mlp." in fqn

    out = apply_lmul_(net, cfg, filter_fn=only_mlp)
    assert out is net
    assert set(seen) == {
        f"blocks.{i}.{n}" for i in (0, 1) for n in ("q_proj", "k_proj", "mlp.0", "mlp.2")
    } | {"head"}
    assert _linear_names(net, LMulLinear) == {f"blocks.{i}.mlp.{j}" for i in (0, 1) for j in (0, 2)}
    assert _linear_names(net, nn.Linear) == {
        f"blocks.{i}.{n}" for i in (0, 1) for n in ("q_proj", "k_proj")
    } | {"head"}
    assert all(p is params[n] for n, p in net.named_parameters())  # no copies
    assert all(m.lmul_config is cfg for m in net.modules() if isinstance(m, LMulLinear))

    # the converted model computes exactly what swapping the MLP products by hand computes
    def manual(x: torch.Tensor) -> torch.Tensor:
        for blk in net.blocks:
            h = blk.q_proj(x) * blk.k_proj(x)
            for lin in (blk.mlp[0], blk.mlp[2]):
                h2 = lmul_matmul(h.reshape(-1, h.shape[-1]), lin.weight.t(), mantissa_bits=4)
                h = (h2 + lin.bias).reshape(*h.shape[:-1], -1)
                if lin is blk.mlp[0]:
                    h = nn.functional.gelu(h)
            x = blk.norm(x + h)
        return net.head(x)

    assert_bitwise_equal(net(x), manual(x), "converted net")


def test_apply_lmul_default_converts_all_and_refuses_twice(seeded):
    net = _Net()
    apply_lmul_(net, LMulConfig(targets=LINEAR))
    assert _linear_names(net, nn.Linear) == set()
    assert len(_linear_names(net, LMulLinear)) == 9
    with pytest.raises(ValueError, match="nothing to convert"):
        apply_lmul_(net, LMulConfig(targets=LINEAR))
    with pytest.raises(ValueError, match="already an LMulLinear"):
        apply_lmul_(net, LMulConfig(targets=LINEAR), filter_fn=lambda m, n: n == "head")


def test_apply_lmul_second_call_converts_the_rest_with_its_own_config(seeded):
    net = _Net()
    apply_lmul_(
        net, LMulConfig(mantissa_bits=3, targets=LINEAR), filter_fn=lambda m, n: n == "head"
    )
    apply_lmul_(net, LMulConfig(mantissa_bits=5, targets=LINEAR))
    bits = {
        n: m.lmul_config.mantissa_bits for n, m in net.named_modules() if isinstance(m, LMulLinear)
    }
    assert bits.pop("head") == 3 and set(bits.values()) == {5}


def test_apply_lmul_backward_flows(seeded):
    net = apply_lmul_(_Net(), LMulConfig(targets=LINEAR, backward="exact"))
    net(torch.randn(2, 3, 8)).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_apply_lmul_skips_multihead_attention_out_proj(seeded):
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    model.add_module("proj", nn.Linear(8, 8))
    apply_lmul_(model, LMulConfig(targets=LINEAR))
    assert type(model[0].out_proj) is not LMulLinear
    assert isinstance(model.proj, LMulLinear)


def test_apply_lmul_bad_inputs():
    with pytest.raises(TypeError, match=r"nn\.Module"):
        apply_lmul_("model", LMulConfig(targets=LINEAR))
    with pytest.raises(TypeError, match="LMulConfig"):
        apply_lmul_(_Net(), {"targets": LINEAR})
    with pytest.raises(TypeError, match="filter_fn"):
        apply_lmul_(_Net(), LMulConfig(targets=LINEAR), filter_fn="mlp")
    with pytest.raises(ValueError, match="nothing to convert"):
        apply_lmul_(_Net(), LMulConfig())  # targets=("attention",), no attention here
    with pytest.raises(ValueError, match="from_linear"):
        apply_lmul_(nn.Linear(2, 2), LMulConfig(targets=LINEAR))


# --- lmul_attention -----------------------------------------------------------------------------------


def _direct_attention(q, k, v, cfg, scale, mask=None):
    """The spec: repeat_kv, L-Matmul QKᵀ, exact scale, additive mask, float32 softmax, L-Matmul PV."""
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, dim=1)  # (B, H, S, D)
    v = v.repeat_interleave(g, dim=1)
    kw = cfg.matmul_kwargs()
    s = lmul_matmul(q, k.transpose(-1, -2).contiguous(), **kw).float() * scale  # (B, H, T, S)
    if mask is not None:
        s = s + mask
    p = torch.softmax(s, dim=-1)
    return lmul_matmul(p.to(v.dtype), v, **kw)  # (B, H, T, Dv)


@pytest.mark.parametrize("bits", [3, 7, None])
def test_lmul_attention_equals_direct_reference(seeded, bits):
    cfg = LMulConfig(mantissa_bits=bits)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 6)
    mask = torch.zeros(2, 1, 5, 7)
    mask[1, :, :, :2] = torch.finfo(torch.float32).min  # padding of the second sequence
    out, probs = lmul_attention(q, k, v, config=cfg, scale=0.3, attn_mask=mask)
    assert out.shape == (2, 4, 5, 6) and probs.shape == (2, 4, 5, 7)
    assert_bitwise_equal(out, _direct_attention(q, k, v, cfg, 0.3, mask), "lmul_attention")
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 5))


def test_lmul_attention_masks_and_causality_agree(seeded):
    cfg = LMulConfig(mantissa_bits=4)
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    keep = torch.ones(4, 6, dtype=torch.bool).tril(diagonal=2)  # bottom-right aligned causal
    additive = torch.zeros(4, 6).masked_fill(~keep, float("-inf"))
    by_flag, _ = lmul_attention(q, k, v, config=cfg, is_causal=True)
    by_bool, _ = lmul_attention(q, k, v, config=cfg, attn_mask=keep)
    by_add, _ = lmul_attention(q, k, v, config=cfg, attn_mask=additive)
    assert_bitwise_equal(by_flag, by_bool, "is_causal vs bool mask")
    assert_bitwise_equal(by_flag, by_add, "is_causal vs additive mask")
    by_mask_and_flag, _ = lmul_attention(q, k, v, config=cfg, attn_mask=keep, is_causal=True)
    assert_bitwise_equal(by_flag, by_mask_and_flag, "mask wins over is_causal")


@pytest.mark.parametrize("causal", [False, True])
def test_lmul_attention_with_exact_products_is_attention(seeded, monkeypatch, causal):
    """Outside oracle for the plumbing (GQA, scale, causal alignment, softmax, layouts)."""
    monkeypatch.setattr(modules_mod, "lmul_matmul", _exact_matmul)
    q, k, v = torch.randn(2, 6, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 4)
    out, _ = lmul_attention(q, k, v, is_causal=causal)
    ref = attention_reference(q, k, v, causal=causal)
    assert_close("exact-product lmul_attention", ref, out)


def test_lmul_attention_options(seeded):
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    cfg = LMulConfig(mantissa_bits=3)
    base, _ = lmul_attention(q, k, v, config=cfg)
    assert_bitwise_equal(base, _direct_attention(q, k, v, cfg, 0.5), "default scale 1/sqrt(D)")
    # lmul_scale: the scaling is an L-Mul of the scores (not exact even for a power of two)
    scaled, probs = lmul_attention(q, k, v, config=LMulConfig(mantissa_bits=3, lmul_scale=True))
    s = lmul_matmul(q, k.transpose(-1, -2).contiguous(), mantissa_bits=3)
    p_ref = torch.softmax(lmul(s, torch.tensor(0.5), mantissa_bits=3), -1)
    assert_bitwise_equal(probs, p_ref, "lmul_scale probabilities")
    assert not torch.equal(scaled, base)
    # ... in the inputs' container (bfloat16 here), like the matmul products
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    _, probs_b = lmul_attention(qb, kb, vb, config=LMulConfig(mantissa_bits=3, lmul_scale=True))
    s_b = lmul_matmul(qb, kb.transpose(-1, -2).contiguous(), mantissa_bits=3)
    half = torch.tensor(0.5, dtype=torch.bfloat16)
    p_ref_b = torch.softmax(lmul(s_b, half, mantissa_bits=3).float(), -1)
    assert_bitwise_equal(probs_b, p_ref_b, "lmul_scale probabilities (bf16)")
    # softcap: tanh capping before the softmax
    _, p_cap = lmul_attention(q, k, v, config=cfg, softcap=0.1)
    assert_close("softcap", torch.softmax(torch.tanh(s * 0.5 / 0.1) * 0.1, -1), p_cap)
    # dropout: reproducible with a generator, rescaled by 1/(1-p)
    gen = torch.Generator().manual_seed(5)
    _, p1 = lmul_attention(q, k, v, config=cfg, dropout_p=0.5, generator=gen)
    gen.manual_seed(5)
    _, p2 = lmul_attention(q, k, v, config=cfg, dropout_p=0.5, generator=gen)
    assert torch.equal(p1, p2) and (p1 == 0).any()


def test_lmul_attention_backward_flows(seeded):
    q, k, v = (torch.randn(1, 2, 4, 8, requires_grad=True) for _ in range(3))
    out, _ = lmul_attention(q, k, v, config=LMulConfig(mantissa_bits=None), is_causal=True)
    out.sum().backward()
    exact = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    attention_reference(*exact, causal=True).sum().backward()
    for name, t, e in zip("qkv", (q, k, v), exact, strict=True):
        assert torch.isfinite(t.grad).all()
        # straight-through through an L-Mul forward: close to, not equal to, exact gradients
        assert_close(f"d{name}", e.grad, t.grad, ratio=0.2)


def test_triton_path_matches_reference_in_interpreter(seeded):
    """impl="triton" through the drop-ins (non-contiguous Kᵀ, GQA grouping, lmul_scale) equals
    the reference bit for bit; tiny shapes for the CPU interpreter."""
    q = torch.randn(1, 4, 3, 8, dtype=torch.bfloat16)
    k = torch.randn(1, 2, 5, 8, dtype=torch.bfloat16)
    v = torch.randn(1, 2, 5, 4, dtype=torch.bfloat16)
    base = nn.Linear(4, 3, dtype=torch.bfloat16)
    outs = {}
    for impl in ("triton", "reference"):
        cfg = LMulConfig(mantissa_bits=3, impl=impl, lmul_scale=True, targets=LINEAR)
        att, _ = lmul_attention(q, k, v, config=cfg, is_causal=True)
        outs[impl] = (att, LMulLinear.from_linear(base, cfg)(att))
    assert_bitwise_equal(outs["triton"][0], outs["reference"][0], "lmul_attention triton")
    assert_bitwise_equal(outs["triton"][1], outs["reference"][1], "LMulLinear triton")


def test_lmul_attention_bad_inputs():
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(TypeError, match="floating-point"):
        lmul_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="4-D"):
        lmul_attention(q[0], k, v)
    with pytest.raises(ValueError, match="multiple"):
        lmul_attention(torch.randn(1, 3, 3, 8), k, v)
    with pytest.raises(ValueError, match="key"):
        lmul_attention(q, torch.randn(1, 2, 5, 4), v)
    with pytest.raises(ValueError, match="value"):
        lmul_attention(q, k, torch.randn(1, 2, 4, 8))
    with pytest.raises(TypeError, match="dtype"):
        lmul_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="attn_mask"):
        lmul_attention(q, k, v, attn_mask=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="dropout_p"):
        lmul_attention(q, k, v, dropout_p=1.0)
    with pytest.raises(TypeError, match="LMulConfig"):
        lmul_attention(q, k, v, config=3)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        lmul_attention(q.double(), k.double(), v.double())


# --- lean imports -----------------------------------------------------------------------------------

_LEAN_CHECK = r"""
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
heavy = ("transformers", "diffusers", "triton")
cuda = "torch" in sys.modules and __import__("torch").cuda.is_initialized()
print(json.dumps({"heavy": sorted(m for m in heavy if m in sys.modules), "cuda": cuda}))
"""


def test_imports_are_lean():
    """The drop-ins import neither transformers, diffusers nor triton, and touch no CUDA.

    One interpreter for all four modules (``assert_lean_import``'s check plus the HF libraries;
    a fresh torch import per module would cost ~10 s each on the shared CPU).
    """
    mods = [
        "paperbricks.lmul",
        "paperbricks.lmul.modules",
        "paperbricks.lmul.hf",
        "paperbricks.lmul.diffusers_processor",
    ]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _LEAN_CHECK, *mods],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"heavy": [], "cuda": False}


# --- GPU ---------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_lmul_linear_and_attention_triton_match_reference(seeded, dtype):
    cfg_t = LMulConfig(mantissa_bits=4, targets=LINEAR, impl="triton")
    cfg_r = LMulConfig(mantissa_bits=4, targets=LINEAR, impl="reference")
    lin = nn.Linear(256, 192, device="cuda", dtype=dtype)
    x = torch.randn(4, 33, 256, device="cuda", dtype=dtype)
    out_t = LMulLinear.from_linear(lin, cfg_t)(x)
    out_r = LMulLinear.from_linear(lin, cfg_r)(x)
    assert_bitwise_equal(out_t, out_r, "LMulLinear triton vs reference")
    q = torch.randn(2, 8, 100, 64, device="cuda", dtype=dtype)
    k = torch.randn(2, 2, 100, 64, device="cuda", dtype=dtype)
    v = torch.randn(2, 2, 100, 64, device="cuda", dtype=dtype)
    a_t, _ = lmul_attention(q, k, v, config=cfg_t, is_causal=True)
    a_r, _ = lmul_attention(q, k, v, config=cfg_r, is_causal=True)
    assert_bitwise_equal(a_t, a_r, "lmul_attention triton vs reference")
    exact = attention_reference(q.float(), k.float(), v.float(), causal=True)
    assert_close("lmul_attention vs exact (4 bits)", exact, a_t.float(), ratio=0.2)
