"""QuantLinear / QuantRMSNorm: exact float behaviour when disabled, site order when enabled."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paperbricks.core_kernels.testing import assert_bitwise_equal, assert_close, requires_cuda
from paperbricks.prefixquant.modules import QuantLinear, QuantRMSNorm
from paperbricks.prefixquant.quantizers import ActQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_norm(dim: int, dtype: torch.dtype, family: str = "llama") -> nn.Module:
    if family == "llama":
        from transformers.models.llama.modeling_llama import LlamaRMSNorm as Norm
    elif family == "mistral":
        from transformers.models.mistral.modeling_mistral import MistralRMSNorm as Norm
    else:
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm as Norm
    norm = Norm(dim, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(dim, generator=torch.Generator().manual_seed(0)))
    return norm.to(dtype)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quant_rmsnorm_disabled_equals_hf(family: str, dtype: torch.dtype) -> None:
    norm = _hf_norm(48, dtype, family)
    x = (torch.randn(2, 7, 48, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    q = QuantRMSNorm.from_norm(norm, ActQuantizer(4))
    q.output_quantizer.enabled = False
    assert q.weight is norm.weight and q.variance_epsilon == norm.variance_epsilon
    with torch.no_grad():
        assert_bitwise_equal(q(x), norm(x), f"QuantRMSNorm({family}, {dtype}) vs HF")
        assert_bitwise_equal(QuantRMSNorm.from_norm(norm)(x), norm(x), "no quantizer")


def test_quant_rmsnorm_enabled_quantizes_output() -> None:
    norm = _hf_norm(32, torch.float32)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    aq = ActQuantizer(4)
    aq.set_scale(0.5)
    q = QuantRMSNorm.from_norm(norm, aq)
    with torch.no_grad():
        ref = torch.fake_quantize_per_tensor_affine(norm(x), 0.5, 0, -8, 7)
        assert_bitwise_equal(q(x), ref, "quantized norm output")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quant_linear_disabled_equals_linear(bias: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    lin = nn.Linear(24, 10, bias=bias).to(dtype)
    x = torch.randn(2, 5, 24).to(dtype)
    q = QuantLinear.from_linear(lin, w_bits=4, input_quantizer=ActQuantizer(4))
    assert q.weight is lin.weight and q.bias is lin.bias
    q.weight_quantizer.enabled = False
    q.input_quantizer.enabled = False
    with torch.no_grad():
        assert_bitwise_equal(q(x), lin(x), "QuantLinear disabled vs nn.Linear")
        assert_bitwise_equal(QuantLinear.from_linear(lin)(x), lin(x), "no quantizers")


class _Flip(nn.Module):
    """A stand-in online transform (reverses the last dim) to check where it is applied."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


def test_quant_linear_order_hadamard_then_input_quant_then_weight_quant() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(16, 8, bias=False)
    lin.online_hadamard = _Flip()
    aq = ActQuantizer(4)
    aq.set_scale(0.2)
    q = QuantLinear.from_linear(lin, w_bits=4, input_quantizer=aq)
    assert isinstance(q.online_hadamard, _Flip)
    x = torch.randn(3, 16)
    with torch.no_grad():
        xq = torch.fake_quantize_per_tensor_affine(x.flip(-1), 0.2, 0, -8, 7)
        s = 2 * lin.weight.abs().amax(1) / 15
        wq = torch.fake_quantize_per_channel_affine(
            lin.weight, s, torch.zeros(8, dtype=torch.int32), 0, -8, 7
        )
        assert_close("QuantLinear order", F.linear(xq, wq), q(x), ratio=1e-6)


def test_quant_linear_gradients_reach_scales_and_weight() -> None:
    torch.manual_seed(5)
    aq = ActQuantizer(4)
    aq.set_scale(0.3)
    q = QuantLinear.from_linear(nn.Linear(16, 8), w_bits=4, input_quantizer=aq)
    q(torch.randn(4, 16)).square().sum().backward()
    for name, p in (
        ("act scale", aq.scale),
        ("w scale", q.weight_quantizer.scale),
        ("weight", q.weight),
    ):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_from_linear_rejects_non_linear() -> None:
    with pytest.raises(TypeError, match="linear"):
        QuantLinear.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(TypeError, match="norm"):
        QuantRMSNorm.from_norm(nn.Identity())


@requires_cuda
def test_cuda_bf16_norm_and_linear_disabled_exact() -> None:
    norm = _hf_norm(256, torch.bfloat16).cuda()
    x = torch.randn(4, 128, 256, device="cuda").to(torch.bfloat16)
    q = QuantRMSNorm.from_norm(norm)
    lin = nn.Linear(256, 512).cuda().to(torch.bfloat16)
    ql = QuantLinear.from_linear(lin)
    with torch.no_grad():
        assert_bitwise_equal(q(x), norm(x), "cuda norm")
        assert_bitwise_equal(ql(x), lin(x), "cuda linear")
