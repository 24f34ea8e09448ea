"""Real integer execution (real.py) against fake quantization: same codes, exact int GEMM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from paperbricks.core_kernels.quant import QuantSpec, fake_quant, pack_int4, quantize, unpack_int4
from paperbricks.core_kernels.testing import assert_bitwise_equal, assert_close, requires_cuda
from paperbricks.prefixquant import real
from paperbricks.prefixquant.quantizers import ActQuantizer, init_scale_from_max
from paperbricks.prefixquant.real import (
    PAYLOAD_ATTR,
    RealQuantRMSNorm,
    W4A4Linear,
    W4A8Linear,
    W4Linear,
    W8A8Linear,
    dynamic_per_token_quant,
    static_per_tensor_quant,
)


def _setup(out_f: int, in_f: int, w_bits: int, a_bits: int, lead=(3, 5), dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out_f, in_f, generator=g)
    x = (torch.randn(*lead, in_f, generator=g) * 2).to(dtype)
    ws = w.abs().amax(1, keepdim=True) / (2 ** (w_bits - 1) - 1)  # (out, 1)
    a_scale = torch.tensor(2 * float(x.float().abs().max()) * 0.8 / (2**a_bits - 1))  # clips a bit
    return w, x, ws, a_scale


def _fake_reference(x, w, ws, a_scale, w_bits, a_bits):
    """The fake-quant linear: fq(x) @ fq(W)ᵀ in float64 (torch's own fake-quant as oracle)."""
    qa = 2 ** (a_bits - 1)
    xq = torch.fake_quantize_per_tensor_affine(x.float(), float(a_scale), 0, -qa, qa - 1)
    qw = 2 ** (w_bits - 1)
    wq = torch.fake_quantize_per_channel_affine(
        w,
        ws.reshape(-1),
        torch.zeros(w.shape[0], dtype=torch.int32, device=w.device),
        0,
        -qw,
        qw - 1,
    )
    return xq.double() @ wq.double().t(), xq, wq


@pytest.mark.parametrize(
    ("cls", "w_bits", "a_bits"),
    [(W8A8Linear, 8, 8), (W4A8Linear, 4, 8), (W4A4Linear, 4, 4)],
)
@pytest.mark.parametrize("shape", [(24, 40), (17, 62)])
def test_real_linear_equals_fake_quant(cls, w_bits, a_bits, shape):
    out_f, in_f = shape
    w, x, ws, a_scale = _setup(out_f, in_f, w_bits, a_bits)
    bias = torch.linspace(-1, 1, out_f)
    lin = cls.from_float(w, ws, bias, act_scale=a_scale, impl="reference")
    assert lin.w_bits == w_bits and lin.a_bits == a_bits
    ref, xq, wq = _fake_reference(x, w, ws, a_scale, w_bits, a_bits)
    # identical integer codes: weights and activations against torch's fake-quant
    wcodes = lin.int_weight()
    assert wcodes.dtype == torch.int8
    assert_bitwise_equal(wcodes.float() * ws, wq, "weight codes · s_w")
    xcodes, s = lin.quantize_input(x)
    assert s is lin.act_scale
    assert_bitwise_equal(torch.round(xq / a_scale), xcodes.float(), "activation codes")
    # the int32 GEMM is exact: compare with an int64 matmul of the same codes
    acc = real.w8a8_matmul(
        xcodes,
        wcodes,
        torch.tensor(1.0),
        torch.ones(out_f, 1),
        impl="reference",
        out_dtype=torch.float64,
    )
    exact = (xcodes.reshape(-1, in_f).long() @ wcodes.long().t()).reshape(*x.shape[:-1], out_f)
    assert torch.equal(acc, exact.double())
    # floats: within fp32 round-off of the epilogue
    y = lin(x)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], out_f)
    assert_close("real vs fake-quant linear", ref + bias.double(), y.double(), ratio=1e-6)
    # and the stored layer reproduces its own dequantized weight
    assert_close("dequantized weight", wq, lin.dequantized_weight(), ratio=1e-7)


def test_int4_packing_storage_and_round_trip():
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)  # (3, 32): every nibble value
    lin = W4Linear(32, 3, a_bits=8)
    lin.set_int_weight(codes)
    assert lin.weight_packed.dtype == torch.uint8 and lin.weight_packed.shape == (3, 16)
    assert_bitwise_equal(lin.int_weight(), codes, "unpack(pack(codes))")
    assert_bitwise_equal(unpack_int4(pack_int4(codes)), codes, "core-kernels round trip")
    # low nibble = even element (core-kernels' documented order): [-8, -7] -> 0x98
    assert int(lin.weight_packed[0, 0]) == 0x98
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        lin.set_int_weight(torch.full((3, 32), 9, dtype=torch.int8))


def test_static_and_dynamic_quant_formulas():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 33, generator=g) * 3
    s = torch.tensor(0.05)
    assert_bitwise_equal(
        static_per_tensor_quant(x, s, 8),
        quantize(x, s, None, QuantSpec(bits=8, dynamic=False)),
        "static codes vs core-kernels quantize",
    )
    q4 = static_per_tensor_quant(x, s, 4)
    assert int(q4.min()) == -8 and int(q4.max()) == 7  # saturates at the 4-bit ends
    q, sd = dynamic_per_token_quant(x, 8)
    assert sd.shape == (6, 1)
    assert_bitwise_equal(sd, init_scale_from_max(x.abs().amax(-1, keepdim=True), 8), "scale")
    assert int(q.abs().max()) == 127  # the row max maps to 127.5 -> 128 (even) -> clamped 127
    assert_close("dynamic dequant", x, q.float() * sd, ratio=0.01)


def test_dynamic_linear_equals_per_token_fake_quant():
    w, x, ws, _ = _setup(16, 48, 8, 8)
    fq = ActQuantizer(8, mode="dynamic", granularity="per_token", clip_init=0.9)
    lin = W8A8Linear.from_float(w, ws, a_mode="dynamic", impl="reference")
    lin.act_clip.fill_(0.9)
    q, sd = dynamic_per_token_quant(x, 8, lin.act_clip)
    with torch.no_grad():
        assert_bitwise_equal(q.float() * sd, fq(x), "dynamic codes · s vs ActQuantizer(dynamic)")
    wq = fake_quant(w, QuantSpec(bits=8, granularity="channel"), ws)
    ref = fq(x).detach().double() @ wq.double().t()
    assert_close("dynamic W8A8", ref, lin(x).double(), ratio=1e-6)


def test_rms_norm_quant_matches_norm_then_fake_quant():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 7, 64, generator=g) * 5
    gamma = torch.rand(64, generator=g) + 0.5
    for bits in (8, 4):
        norm = RealQuantRMSNorm(64, 1e-6, a_bits=bits, impl="reference")
        with torch.no_grad():
            norm.weight.copy_(gamma)
        y_fp = F.rms_norm(x, (64,), gamma, 1e-6)
        norm.act_scale.fill_(2 * float(y_fp.abs().max()) * 0.7 / (2**bits - 1))
        out = norm(x)
        payload = getattr(out, PAYLOAD_ATTR)
        assert payload.bits == bits and payload.scale is norm.act_scale
        qa = 2 ** (bits - 1)
        ref_codes = torch.round(
            torch.fake_quantize_per_tensor_affine(y_fp, float(norm.act_scale), 0, -qa, qa - 1)
            / norm.act_scale
        )
        diff = (payload.codes.float() - ref_codes).abs()
        # F.rms_norm uses rsqrt; the fused kernel 1/sqrt: codes may differ by 1 only at ties
        assert float(diff.max()) <= 1 and int((diff > 0).sum()) <= 2
        assert_bitwise_equal(out, payload.codes.float() * norm.act_scale, "out = q·s")


def test_norm_payload_is_reused_by_qkv(monkeypatch):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 32, generator=g)
    norm = RealQuantRMSNorm(32, a_bits=8, impl="reference")
    norm.act_scale.fill_(0.03)
    lins = [
        W8A8Linear.from_float(
            torch.randn(n, 32, generator=g),
            torch.full((n, 1), 0.02),
            act_scale=torch.tensor(0.03),
            impl="reference",
        )
        for n in (32, 16, 16)
    ]
    calls = {"norm": 0, "static": 0}
    orig_norm, orig_static = real.rms_norm_quant, real.static_per_tensor_quant

    def count_norm(*a, **k):
        calls["norm"] += 1
        return orig_norm(*a, **k)

    def count_static(*a, **k):
        calls["static"] += 1
        return orig_static(*a, **k)

    monkeypatch.setattr(real, "rms_norm_quant", count_norm)
    monkeypatch.setattr(real, "static_per_tensor_quant", count_static)
    h = norm(x)
    outs = [lin(h) for lin in lins]
    assert calls == {"norm": 1, "static": 0}  # one quantization for q, k and v
    # without the payload (a fresh tensor of equal value) each layer quantizes, to the same codes
    h2 = h.clone()
    assert not hasattr(h2, PAYLOAD_ATTR)
    outs2 = [lin(h2) for lin in lins]
    assert calls["static"] == 3
    for a, b in zip(outs, outs2, strict=True):
        assert_bitwise_equal(a, b, "payload vs requantized")
    # a payload with another scale is not used
    lins[0].act_scale.fill_(0.05)
    lins[0](h)
    assert calls["static"] == 4


def test_weight_only_and_online_hadamard():
    w, x, ws, _ = _setup(8, 16, 8, 8)
    flip = torch.nn.Identity()
    lin = W8A8Linear.from_float(w, ws, a_bits=None, online_hadamard=flip)
    wq = fake_quant(w, QuantSpec(bits=8, granularity="channel"), ws)
    assert_close("weight-only", x @ wq.t(), lin(x), ratio=1e-6)

    class Neg(torch.nn.Module):
        def forward(self, t):
            return -t

    lin.online_hadamard = Neg()
    assert_close("input transform first", -(x @ wq.t()), lin(x), ratio=1e-6)


def test_input_errors():
    with pytest.raises(ValueError, match="a_bits"):
        W8A8Linear(8, 8, a_bits=3)
    with pytest.raises(ValueError, match="in_features"):
        W4A8Linear(7, 8)
    with pytest.raises(ValueError, match="a_mode"):
        W8A8Linear(8, 8, a_mode="per_token")
    lin = W8A8Linear(8, 4)
    with pytest.raises(ValueError, match=r"x: expected \(\.\.\., 8\)"):
        lin(torch.randn(2, 9))
    with pytest.raises(TypeError, match="x: expected a float tensor"):
        lin(torch.ones(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="act_scale"):
        W8A8Linear.from_float(torch.randn(4, 8), torch.ones(4, 1))
    with pytest.raises(ValueError, match="weight_scale"):
        W8A8Linear.from_float(torch.randn(4, 8), torch.ones(3, 1), act_scale=1.0)


def test_triton_paths_in_interpreter():
    """The Triton GEMM and fused norm (TRITON_INTERPRET=1 here) equal the reference."""
    w, x, ws, a_scale = _setup(16, 32, 8, 8, lead=(8,))
    ref = W8A8Linear.from_float(w, ws, act_scale=a_scale, impl="reference")
    tri = W8A8Linear.from_float(w, ws, act_scale=a_scale, impl="triton")
    assert_bitwise_equal(ref(x), tri(x), "W8A8 triton vs reference (fp32)")
    w4 = W4A4Linear.from_float(
        w, w.abs().amax(1, keepdim=True) / 7, act_scale=a_scale * 16, impl="triton"
    )
    w4r = W4A4Linear.from_float(
        w, w.abs().amax(1, keepdim=True) / 7, act_scale=a_scale * 16, impl="reference"
    )
    assert_bitwise_equal(w4r(x), w4(x), "W4A4 triton vs reference (fp32)")
    norm_t = RealQuantRMSNorm(32, a_bits=8, impl="triton")
    norm_r = RealQuantRMSNorm(32, a_bits=8, impl="reference")
    for n in (norm_t, norm_r):
        n.act_scale.fill_(0.02)
    a, b = norm_t(x), norm_r(x)
    assert (
        float(
            (getattr(a, PAYLOAD_ATTR).codes.float() - getattr(b, PAYLOAD_ATTR).codes.float())
            .abs()
            .max()
        )
        <= 1
    )


@requires_cuda
@pytest.mark.parametrize("cls,w_bits,a_bits", [(W8A8Linear, 8, 8), (W4A4Linear, 4, 4)])
def test_cuda_real_linear_bf16(cls, w_bits, a_bits):
    w, x, ws, a_scale = _setup(512, 1024, w_bits, a_bits, lead=(4, 64), dtype=torch.bfloat16)
    w, x, ws, a_scale = w.cuda(), x.cuda(), ws.cuda(), a_scale.cuda()
    lin = cls.from_float(w, ws, act_scale=a_scale)  # auto: Triton GEMM on CUDA
    ref = cls.from_float(w, ws, act_scale=a_scale, impl="reference")
    y, y_ref = lin(x), ref(x)
    assert y.dtype == torch.bfloat16
    assert_bitwise_equal(y, y_ref, "CUDA triton vs reference W8A8 bf16")
    fake, _, _ = _fake_reference(x.float(), w, ws, a_scale, w_bits, a_bits)
    assert_close("CUDA real vs fake", fake.float(), y.float(), ratio=1.6e-2)


@requires_cuda
def test_cuda_fused_norm_payload():
    x = torch.randn(256, 4096, device="cuda", dtype=torch.bfloat16)
    norm = RealQuantRMSNorm(4096, a_bits=8).cuda()
    norm.act_scale.fill_(0.03)
    ref = RealQuantRMSNorm(4096, a_bits=8, impl="reference").cuda()
    ref.act_scale.fill_(0.03)
    a, b = getattr(norm(x), PAYLOAD_ATTR).codes, getattr(ref(x), PAYLOAD_ATTR).codes
    diff = (a.float() - b.float()).abs()
    assert float(diff.max()) <= 1 and int((diff > 0).sum()) <= 8


def _fake_quant_tiny_llama(w_bits: int, a_bits: int, rotate: bool = False):
    """A tiny random Llama with P2's fake-quant modules inserted by hand and calibrated."""
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing.factories import tiny_llama_config
    from paperbricks.prefixquant.modules import QuantLinear, QuantRMSNorm
    from paperbricks.prefixquant.sites import resolve_sites

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(hidden_size=64, intermediate_size=128)).eval()
    if rotate:
        from paperbricks.prefixquant.rotation import rotate_model_

        rotate_model_(model, seed=0)
    quantizers = []

    def aq():
        q = ActQuantizer(a_bits, stat="max")
        q.calibrating = True
        quantizers.append(q)
        return q

    for ls in resolve_sites(model).layers:
        ls.layer.input_layernorm = QuantRMSNorm.from_norm(ls.input_norm, aq())
        ls.layer.post_attention_layernorm = QuantRMSNorm.from_norm(ls.post_attention_norm, aq())
        for parent, names in (
            (ls.attn, ("q_proj", "k_proj", "v_proj")),
            (ls.mlp, ("gate_proj", "up_proj")),
        ):
            for n in names:
                setattr(parent, n, QuantLinear.from_linear(getattr(parent, n), w_bits=w_bits))
        ls.attn.o_proj = QuantLinear.from_linear(
            ls.attn.o_proj, w_bits=w_bits, input_quantizer=aq()
        )
        ls.mlp.down_proj = QuantLinear.from_linear(
            ls.mlp.down_proj, w_bits=w_bits, input_quantizer=aq()
        )
    ids = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(ids)
    for q in quantizers:
        q.calibrating = False
        q.init_scale(0.9)
    return model, ids


@pytest.mark.parametrize(
    ("w_bits", "a_bits", "rotate"), [(8, 8, False), (4, 8, False), (4, 4, True)]
)
def test_to_real_tiny_llama_logits(w_bits, a_bits, rotate):
    import copy

    model, ids = _fake_quant_tiny_llama(w_bits, a_bits, rotate)
    real_model = copy.deepcopy(model)
    counts = real.to_real_(real_model, impl="reference")
    assert counts == {"linear": 14, "norm": 4}
    layer = real_model.model.layers[0]
    expected = {8: W8A8Linear, 4: W4A4Linear if a_bits == 4 else W4A8Linear}[w_bits]
    assert type(layer.self_attn.q_proj) is expected and type(layer.mlp.down_proj) is expected
    assert isinstance(layer.input_layernorm, RealQuantRMSNorm)
    if w_bits == 4:
        assert layer.mlp.up_proj.weight_packed.dtype == torch.uint8
    if rotate:  # R4 is taken over by the real down_proj
        from paperbricks.prefixquant.rotation import OnlineHadamard

        assert isinstance(layer.mlp.down_proj.online_hadamard, OnlineHadamard)
    # the real layers hold exactly the fake quantizer's integer codes
    fq = model.model.layers[0].mlp.up_proj
    assert_bitwise_equal(
        layer.mlp.up_proj.int_weight(), fq.weight_quantizer.codes(fq.weight), "codes"
    )
    with torch.no_grad():
        ref = model(ids).logits
        out = real_model(ids).logits
    assert_close("real vs fake-quant logits", ref, out, ratio=1e-4)


def test_to_real_rejects_unquantized_model():
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing.factories import tiny_llama_config

    with pytest.raises(ValueError, match="quantize_"):
        real.to_real_(LlamaForCausalLM(tiny_llama_config()))


def test_dynamic_norm_equals_quant_rmsnorm_and_feeds_linears(monkeypatch):
    from paperbricks.prefixquant.modules import QuantRMSNorm

    g = torch.Generator().manual_seed(4)
    fake = QuantRMSNorm(32, 1e-6)
    with torch.no_grad():
        fake.weight.copy_(torch.rand(32, generator=g) + 0.5)
    fake.output_quantizer = ActQuantizer(8, mode="dynamic", granularity="per_token", clip_init=0.9)
    norm = real._real_norm(fake, "reference", "norm")
    assert norm.a_mode == "dynamic" and float(norm.act_clip) == pytest.approx(0.9)
    x = torch.randn(2, 5, 32, generator=g) * 3
    with torch.no_grad():
        ref = fake(x)
    out = norm(x)
    assert_bitwise_equal(out, ref, "real dynamic norm vs QuantRMSNorm + dynamic ActQuantizer")
    payload = getattr(out, PAYLOAD_ATTR)
    assert payload.mode == "dynamic" and payload.scale.shape == (2, 5, 1)
    lin = W8A8Linear.from_float(
        torch.randn(8, 32, generator=g),
        torch.full((8, 1), 0.01),
        a_mode="dynamic",
        impl="reference",
    )
    lin.act_clip.fill_(0.9)
    calls = []
    orig = real.dynamic_per_token_quant
    monkeypatch.setattr(
        real, "dynamic_per_token_quant", lambda *a, **k: calls.append(1) or orig(*a, **k)
    )
    y = lin(out)  # reuses the norm's codes: requantizing q·s per token would change them
    assert calls == []
    assert_close(
        "dynamic linear on payload",
        ref.double() @ lin.dequantized_weight().double().t(),
        y.double(),
        ratio=1e-6,
    )
