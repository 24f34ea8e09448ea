"""Rotation invariance (spec §5 oracle 1): R1–R4 leave the fp logits of tiny HF models unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import (
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from paperbricks.core_kernels.hadamard import had_transform, hadamard_matrix
from paperbricks.core_kernels.testing import assert_close, requires_cuda
from paperbricks.core_kernels.testing.factories import tiny_llama_config
from paperbricks.prefixquant.attention import ATTN_IMPLEMENTATION
from paperbricks.prefixquant.rotation import (
    HadamardInputLinear,
    OnlineHadamard,
    RotationState,
    rotate_model_,
)
from paperbricks.prefixquant.sites import UnsupportedModelError

V = 66


def _perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm scales and biases, so norm fusion and bias rotation are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _llama(**kw):
    torch.manual_seed(0)
    return _perturb_(LlamaForCausalLM(tiny_llama_config(**kw)))


def _mistral():
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=V,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        sliding_window=8,
        max_position_embeddings=128,
    )
    return _perturb_(MistralForCausalLM(cfg))


def _qwen2():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=V,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=128,
    )
    return _perturb_(Qwen2ForCausalLM(cfg))


BUILDERS = {
    "llama-gqa": lambda: _llama(),
    "llama-h192": lambda: _llama(hidden_size=192, intermediate_size=320, num_attention_heads=4),
    "llama-h160": lambda: _llama(
        hidden_size=160, intermediate_size=240, num_attention_heads=2, num_key_value_heads=1
    ),
    "mistral-mqa": _mistral,
    "qwen2-bias-tied": _qwen2,
}


def _ids(b=2, t=11, seed=0):
    return torch.randint(3, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_rotation_preserves_logits(name, online):
    model = BUILDERS[name]()
    ids = _ids()
    with torch.no_grad():
        ref = model(ids).logits
        state = rotate_model_(model, seed=3, online_qk=online, online_down=online)
        out = model(ids).logits
    assert (out - ref).abs().max().item() < 1e-4
    assert model.config._attn_implementation == ATTN_IMPLEMENTATION
    layer = model.model.layers[0]
    assert isinstance(layer.mlp.down_proj, HadamardInputLinear) == online
    assert hasattr(layer.self_attn, "qk_hadamard") == online
    for m in model.modules():
        if "RMSNorm" in type(m).__name__:
            assert torch.equal(m.weight, torch.ones_like(m.weight))
    assert state.hidden_size == model.config.hidden_size
    # the weights did change (not a silent no-op)
    assert not torch.allclose(
        model.model.embed_tokens.weight, BUILDERS[name]().model.embed_tokens.weight
    )


def test_qwen2_untied_and_v_bias_rotated():
    model = _qwen2()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    v_bias = model.model.layers[0].self_attn.v_proj.bias.detach().clone()
    k_bias = model.model.layers[0].self_attn.k_proj.bias.detach().clone()
    rotate_model_(model)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.config.tie_word_embeddings is False
    attn = model.model.layers[0].self_attn
    assert torch.equal(attn.k_proj.bias, k_bias)  # input-side R1 leaves biases alone
    want = had_transform(v_bias.double().reshape(-1, 16), normalize=True).reshape(-1).float()
    assert_close("v bias (R2)", want, attn.v_proj.bias.detach())


def test_generation_identical_after_rotation():
    model = _llama(hidden_size=192, intermediate_size=320, num_attention_heads=4)
    ids = _ids(b=1, t=6, seed=4)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ref = model.generate(ids, **kw)
        rotate_model_(model, seed=0)
        out = model.generate(ids, **kw)
    assert torch.equal(ref, out)


def test_online_parts_are_applied():
    """R3/R4 are really in the forward: disturbing them changes the logits."""
    model = _llama()
    ids = _ids()
    rotate_model_(model)
    with torch.no_grad():
        base = model(ids).logits
        calls = []
        attn = model.model.layers[0].self_attn
        had = attn.qk_hadamard
        attn.qk_hadamard = _Record(had, calls)
        assert torch.allclose(model(ids).logits, base)
        assert [c for c in calls] == [(2, 4, 11), (2, 2, 11)]  # Q (B, H, T) then K (B, Hkv, S)
        attn.qk_hadamard = had
        down = model.model.layers[0].mlp.down_proj
        down.online_hadamard = nn.Identity()  # drop R4 but keep its fused inverse
        assert (model(ids).logits - base).abs().max() > 1e-3


class _Record(nn.Module):
    def __init__(self, inner, calls):
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, x):
        self.calls.append(tuple(x.shape[:-1]))
        return self.inner(x)


def test_rotating_twice_raises():
    model = _llama()
    rotate_model_(model)
    with pytest.raises(ValueError, match="already rotated"):
        rotate_model_(model)


def test_center_embeddings_is_not_invariant_for_rmsnorm():
    """QuaRot's embedding centring changes an RMSNorm model (why it is off by default)."""
    model = _llama()
    ids = _ids()
    with torch.no_grad():
        ref = model(ids).logits
        rotate_model_(model, center_embeddings=True)
        out = model(ids).logits
        emb = model.model.embed_tokens.weight
    assert (out - ref).abs().max() > 1e-4
    # centred before R1: every row of E R1ᵀ... sums to zero in the original basis
    r1 = model.pq_rotation_state.r1_matrix()
    assert (emb.double() @ r1.T).sum(-1).abs().max() < 1e-5


def test_online_hadamard_matches_core_kernels_and_serialises():
    for n in (16, 192, 344 * 2):
        h = OnlineHadamard(n)
        x = torch.randn(3, 5, n, dtype=torch.float64)
        assert_close(f"OnlineHadamard({n})", had_transform(x, normalize=True), h(x))
        dense = hadamard_matrix(n, dtype=torch.float64) / n**0.5
        assert_close(f"dense({n})", x @ dense.T, h(x))
        assert_close(f"norm({n})", x.norm(dim=-1), h(x).norm(dim=-1))
    h = OnlineHadamard(192)
    sd = h.state_dict()
    assert sd["had_k"].dtype == torch.int8 and sd["had_k"].shape == (12, 12)
    other = OnlineHadamard(192, had_k=-sd["had_k"])  # a different (still valid) H_12
    x = torch.randn(2, 192)
    assert not torch.allclose(other(x), h(x))
    other.load_state_dict(sd)
    assert torch.equal(other(x), h(x))
    with pytest.raises(ValueError, match="not a ±1 Hadamard"):
        OnlineHadamard(192, had_k=torch.ones(12, 12, dtype=torch.int8))


def test_intermediate_sizes_of_real_models_have_a_plan():
    """11008 (Llama-2-7B) and 14336 (Llama-3-8B/Mistral) online down_proj transforms work."""
    for n, k in ((11008, 344), (14336, 28)):
        h = OnlineHadamard(n)
        assert h.k == k
        x = torch.randn(2, n, dtype=torch.float64)
        assert_close(f"norm {n}", x.norm(dim=-1), h(x).norm(dim=-1))


def test_rotation_state_round_trip():
    model = _llama()
    state = rotate_model_(model, seed=7)
    back = RotationState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert torch.equal(back.r1_signs, state.r1_signs) and back.seed == 7
    r1 = back.r1_matrix()
    assert_close("R1 orthonormal", torch.eye(32, dtype=torch.float64), r1 @ r1.T)
    assert set(state.tensors()) == {"r1_signs"}


def test_errors():
    with pytest.raises(TypeError, match="seed"):
        rotate_model_(_llama(), seed=1.5)
    with pytest.raises(UnsupportedModelError, match="layers"):
        rotate_model_(_NotLlama())
    with pytest.raises(ValueError, match=r"hidden_size=.*no Hadamard construction"):
        rotate_model_(_llama(hidden_size=92 * 2, num_attention_heads=2, num_key_value_heads=1))


class _NotLlama(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = tiny_llama_config()
        self.model = nn.Module()
        self.lm_head = nn.Linear(4, 4)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rotation_invariance_cuda(dtype):
    model = _llama(hidden_size=256, intermediate_size=344 * 2, num_attention_heads=4).to("cuda")
    ids = _ids(b=2, t=64).cuda()
    with torch.no_grad():
        ref = model.float()(ids).logits
        model = model.to(dtype)
        rotate_model_(model)
        out = model(ids).logits.float()
    assert_close(f"rotated {dtype}", ref, out, ratio=5e-2)
