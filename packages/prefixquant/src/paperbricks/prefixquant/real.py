"""Real quantized execution: int8 x int8 -> int32 GEMMs, packed int4 weights, fused RMSNorm + quant.

PrefixQuant (arXiv 2410.05265, §3 and §5 "inference speed") makes activations *static per-tensor*,
so a W8A8 / W4A8 / W4A4 linear layer needs no per-token statistics at run time:

    q_x = clamp(round(x · (1/s_x)), qmin_a, qmax_a)                  (one calibrated scalar s_x)
    q_w = clamp(round(W / s_w), qmin_w, qmax_w)                      (per output channel, offline)
    y   = (q_x @ q_wᵀ) · s_x · s_wᵀ + b                               (int32 accumulate, fp epilogue)

The fake-quant modules of :mod:`.modules` compute the same ``y`` in floating point
(``(q_x·s_x) @ (q_w·s_w)ᵀ``); the modules here hold the integer codes and run the integer GEMM
through core-kernels' :func:`~paperbricks.core_kernels.quant.w8a8_matmul` (``torch._int_mm`` on
CPU/CUDA for the reference path, the Triton int8 ``tl.dot`` kernel on CUDA), so the integer
products are exact and only the float epilogue differs from fake quant by fp32 round-off.

- :class:`W8A8Linear`: int8 weights ``(out, in)`` with per-channel scales.
- :class:`W4Linear` (:class:`W4A8Linear`, :class:`W4A4Linear`): 4-bit weight codes packed two per
  byte with core-kernels :func:`~paperbricks.core_kernels.quant.pack_int4` (``(out, in/2)`` uint8),
  unpacked to int8 for the GEMM (the "unpack path"; no in-kernel int4 GEMM exists in core-kernels
  yet). 4-bit activation codes are held in int8 and use the same int8 GEMM, exact since they fit.
- :class:`RealQuantRMSNorm`: RMSNorm fused with the static int8 quantizer of its output (core-kernels
  :func:`~paperbricks.core_kernels.quant.rms_norm_quant`, Triton on CUDA). It returns the
  dequantized activation ``q·s`` (the value the fake-quant model sees) and **attaches the integer
  codes to that tensor** as the attribute ``_pq_int8 = QuantPayload(codes, scale, bits)``.

**How the fused norm feeds the int GEMM inside HF's module structure.** HF decoder layers call
``h = self.input_layernorm(x)`` and pass the very same tensor object to ``q_proj``, ``k_proj`` and
``v_proj`` (likewise ``post_attention_layernorm`` -> ``gate_proj``/``up_proj``). A real linear
layer looks for the ``_pq_int8`` attribute on its input; when present, with the layer's own scale
and bit width and the input's shape, it uses those codes directly, so the activation is quantized
**once** per norm (in the fused kernel) for three (or two) GEMMs. Any op that makes a new tensor
(views, adds, activation functions) drops the attribute, so a stale payload cannot be picked up;
without it the layer quantizes its input itself with the same formula (``q·s`` requantizes to
``q`` exactly, so both routes give the same codes).

What differs from the obvious baseline (dynamic per-token W8A8, e.g. QuaRot/SmoothQuant
kernels): no per-token absmax reduction before the GEMM and one scalar in the epilogue; the
dynamic path is provided (``a_mode="dynamic"``) for the benchmark's comparison.

:func:`to_real_` converts the fake-quant model of :func:`~paperbricks.prefixquant.quantize.quantize_`
(``QuantLinear`` / ``QuantRMSNorm``) into these modules in place. The KV-cache quantizers stay
fake-quant (real int4 KV storage is not implemented).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperbricks.core_kernels.quant import pack_int4, rms_norm_quant, unpack_int4, w8a8_matmul

__all__ = [
    "QuantPayload",
    "RealQuantLinear",
    "RealQuantRMSNorm",
    "W4A4Linear",
    "W4A8Linear",
    "W4Linear",
    "W8A8Linear",
    "dynamic_per_token_quant",
    "static_per_tensor_quant",
    "to_real_",
]

logger = logging.getLogger(__name__)

PAYLOAD_ATTR = "_pq_int8"
_DEFAULT: Any = object()  # "the class's default activation bits"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class QuantPayload:
    """Integer codes attached by :class:`RealQuantRMSNorm` to its output tensor.

    Attributes:
        codes: ``int8`` codes of the output's shape.
        scale: the scale they were quantized with: the norm's 0-dim static buffer, or the
            per-token ``(..., 1)`` float32 scales of the dynamic mode.
        bits: activation bit width (the codes lie in ``[-2^(bits-1), 2^(bits-1) - 1]``).
        mode: ``"static"`` or ``"dynamic"``.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    bits: int
    mode: str = "static"


def _qrange(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_bits(bits: object, name: str, allowed: tuple[int, ...] = (4, 8)) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {bits!r}")
    return bits


def _check_float(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float tensor, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    return x


def static_per_tensor_quant(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Static per-tensor symmetric codes ``clamp(round(x · (1/s)), -2^(b-1), 2^(b-1) - 1)``.

    Same formula (float32 arithmetic, one division for ``1/s``, round half to even) as
    core-kernels ``quantize`` and the fused ``rms_norm_quant``.

    Args:
        x: float ``(..., K)`` activations.
        scale: 0-dim (or 1-element) positive float scale on ``x``'s device.
        bits: 4 or 8 (4-bit codes are held in int8). Default 8.

    Returns:
        ``int8`` codes of ``x.shape``.

    Examples:
        >>> static_per_tensor_quant(torch.tensor([0.5, -3.0, 100.0]), torch.tensor(0.5), 4).tolist()
        [1, -6, 7]
    """
    _check_float(x, "x")
    bits = _check_bits(bits, "bits")
    if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
        raise ValueError(
            f"scale: expected a 1-element tensor (static per-tensor), got {getattr(scale, 'shape', scale)!r}"
        )
    qmin, qmax = _qrange(bits)
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv = 1.0 / scale.detach().reshape(()).to(cd)
    return torch.round(x.to(cd) * inv).clamp(qmin, qmax).to(torch.int8)


def dynamic_per_token_quant(
    x: torch.Tensor, bits: int = 8, clip: torch.Tensor | float = 1.0, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token symmetric quantization (the QuaRot-style baseline of the paper).

    ``s_t = max(2·clip·max_c |x_tc| / (2^b − 1), eps)`` (the spec's symmetric ``2·max/(2^b − 1)``
    with the dynamic mode's clip bound, in the order of ``quantizers.init_scale_from_max``), then
    codes as in :func:`static_per_tensor_quant` with one scale per row.

    Args:
        x: float ``(..., K)`` activations.
        bits: 4 or 8. Default 8.
        clip: clip bound in (0, 1] (a float or a 0-dim tensor). Default 1.0.
        eps: scale floor for all-zero rows. Default 1e-8.

    Returns:
        ``(codes int8 (..., K), scale float32 (..., 1))``.

    Examples:
        >>> q, s = dynamic_per_token_quant(torch.tensor([[1.0, -2.0], [0.0, 0.5]]), bits=4)
        >>> q.tolist()
        [[4, -7], [0, 7]]
    """
    _check_float(x, "x")
    bits = _check_bits(bits, "bits")
    qmin, qmax = _qrange(bits)
    amax = x.detach().float().abs().amax(dim=-1, keepdim=True)  # (..., 1)
    s = (2.0 * clip * amax / (2**bits - 1)).clamp_min(eps)  # (..., 1) float32
    q = torch.round(x.float() * (1.0 / s)).clamp(qmin, qmax).to(torch.int8)
    return q, s


class RealQuantLinear(nn.Module):
    """Base of the integer linear layers: activation quantization, int GEMM, epilogue, bias.

    Subclasses store the weight codes (:class:`W8A8Linear`: int8, :class:`W4Linear`: packed int4)
    and implement :meth:`int_weight`. Buffers: ``weight_scale`` ``(out, 1)`` float32,
    ``act_scale`` ``()`` float32 (static mode), optional ``bias`` (float). An optional
    ``online_hadamard`` submodule (R4 of the rotation, on down_proj) is applied to the input first.

    Args:
        in_features, out_features: the layer's sizes.
        a_bits: activation bits (4 or 8), or None for weight-only (the input stays float and the
            weight is dequantized: a fallback for layers without an activation quantizer).
        a_mode: ``"static"`` (one calibrated scale, ``act_scale``) or ``"dynamic"`` (per token).
        bias: whether a bias buffer exists.
        impl: GEMM implementation for core-kernels ``w8a8_matmul``: ``"auto"`` | ``"reference"``
            | ``"triton"``.
    """

    w_bits: int = 8
    default_a_bits: int | None = 8

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        a_bits: Any = _DEFAULT,
        a_mode: str = "static",
        bias: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if a_bits is _DEFAULT:
            a_bits = self.default_a_bits
        if a_bits is not None:
            _check_bits(a_bits, "a_bits")
        if a_mode not in ("static", "dynamic"):
            raise ValueError(f"a_mode: expected 'static' or 'dynamic', got {a_mode!r}")
        if impl not in ("auto", "reference", "triton"):
            raise ValueError(f"impl: expected 'auto', 'reference' or 'triton', got {impl!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.a_bits = a_bits
        self.a_mode = a_mode
        self.impl = impl
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.register_buffer("act_scale", torch.ones(()))
        self.register_buffer("act_clip", torch.ones(()))  # dynamic mode's clip bound
        if bias:
            self.register_buffer("bias", torch.zeros(out_features))
        else:
            self.bias = None
        self.online_hadamard: nn.Module | None = None

    # -- weights ---------------------------------------------------------------------------------
    def int_weight(self) -> torch.Tensor:
        """The int8 weight codes ``(out, in)`` (unpacked for packed formats)."""
        raise NotImplementedError

    def set_int_weight(self, codes: torch.Tensor) -> None:
        """Store int8 weight codes ``(out, in)`` in this layer's storage format."""
        raise NotImplementedError

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``q_w · s_w`` as a float ``(out, in)`` matrix (what the fake-quant layer multiplies by)."""
        return (self.int_weight().to(torch.float32) * self.weight_scale).to(dtype)

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        act_scale: torch.Tensor | float | None = None,
        a_bits: Any = _DEFAULT,
        a_mode: str = "static",
        online_hadamard: nn.Module | None = None,
        impl: str = "auto",
        codes: torch.Tensor | None = None,
    ) -> RealQuantLinear:
        """Build the layer from a float weight and its per-channel scale (or from given codes).

        Args:
            weight: ``(out, in)`` float weight; quantized as ``clamp(round(W / s_w), qmin, qmax)``.
            weight_scale: ``(out, 1)`` (or ``(out,)``) positive per-channel scales.
            bias: optional ``(out,)`` float bias.
            act_scale: the static activation scale (needed for ``a_mode="static"`` with a_bits).
            a_bits, a_mode, impl: see the class.
            online_hadamard: optional module applied to the input first.
            codes: precomputed int8 weight codes ``(out, in)`` (e.g. the fake quantizer's own);
                when given, ``weight`` only supplies shape and device.

        Examples:
            >>> w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
            >>> lin = W8A8Linear.from_float(w, w.abs().amax(1, keepdim=True) / 127, act_scale=0.01)
            >>> lin.int_weight().tolist()
            [[64, -127], [127, 16]]
        """
        _check_float(weight, "weight")
        if weight.dim() != 2:
            raise ValueError(f"weight: expected (out, in), got {tuple(weight.shape)}")
        out_f, in_f = weight.shape
        ws = _check_float(weight_scale, "weight_scale").detach().to(torch.float32)
        if ws.numel() != out_f or tuple(ws.shape) not in ((out_f,), (out_f, 1)):
            raise ValueError(
                f"weight_scale: expected shape ({out_f}, 1) or ({out_f},), got {tuple(ws.shape)}"
            )
        ws = ws.reshape(out_f, 1)
        layer = cls(in_f, out_f, a_bits=a_bits, a_mode=a_mode, bias=bias is not None, impl=impl).to(
            weight.device
        )
        if codes is None:
            qmin, qmax = _qrange(cls.w_bits)
            codes = torch.round(weight.detach().to(torch.float32) / ws).clamp(qmin, qmax)
        elif tuple(codes.shape) != (out_f, in_f):
            raise ValueError(f"codes: expected shape {(out_f, in_f)}, got {tuple(codes.shape)}")
        layer.set_int_weight(codes.to(torch.int8))
        layer.weight_scale.copy_(ws)
        if bias is not None:
            layer.bias = bias.detach().to(torch.float32).clone()
        if layer.a_bits is not None and a_mode == "static":
            if act_scale is None:
                raise ValueError("act_scale: required for static activation quantization")
            layer.act_scale.copy_(torch.as_tensor(act_scale, dtype=torch.float32).reshape(()))
        layer.online_hadamard = online_hadamard
        return layer

    # -- forward ---------------------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activation codes and scale for ``x``: the attached payload if usable, else quantize."""
        if self.a_bits is None:
            raise ValueError("quantize_input: this layer is weight-only (a_bits=None)")
        payload = getattr(x, PAYLOAD_ATTR, None)
        usable = (
            isinstance(payload, QuantPayload)
            and payload.mode == self.a_mode
            and payload.bits == self.a_bits
            and payload.codes.shape == x.shape
        )
        if self.a_mode == "dynamic":
            if usable and tuple(payload.scale.shape) == (*x.shape[:-1], 1):
                return payload.codes, payload.scale
            return dynamic_per_token_quant(x, self.a_bits, self.act_clip)
        if usable and (
            payload.scale is self.act_scale
            or bool(torch.equal(payload.scale.reshape(()), self.act_scale))
        ):
            return payload.codes, self.act_scale
        return static_per_tensor_quant(x, self.act_scale, self.a_bits), self.act_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` float -> ``(..., out)`` in ``x``'s dtype."""
        _check_float(x, "x")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected (..., {self.in_features}), got {tuple(x.shape)}")
        if self.online_hadamard is not None:
            x = self.online_hadamard(x)
        if self.a_bits is None:
            y = F.linear(x, self.dequantized_weight(x.dtype))
        else:
            q, s = self.quantize_input(x)
            y = w8a8_matmul(
                q, self.int_weight(), s, self.weight_scale, out_dtype=x.dtype, impl=self.impl
            )
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        a = "float" if self.a_bits is None else f"{self.a_bits}-bit {self.a_mode}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"w_bits={self.w_bits}, act={a}, bias={self.bias is not None}"
        )


class W8A8Linear(RealQuantLinear):
    """int8 weights ``(out, in)`` (buffer ``weight``), per-channel scales; int8 activations.

    See :class:`RealQuantLinear` for the arguments and :meth:`RealQuantLinear.from_float`.
    """

    w_bits = 8

    def __init__(self, in_features: int, out_features: int, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, **kwargs)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))

    def int_weight(self) -> torch.Tensor:
        return self.weight

    def set_int_weight(self, codes: torch.Tensor) -> None:
        if codes.dtype != torch.int8 or tuple(codes.shape) != tuple(self.weight.shape):
            raise ValueError(
                f"codes: expected int8 {tuple(self.weight.shape)}, got {codes.dtype} {tuple(codes.shape)}"
            )
        self.weight = codes.contiguous()


class W4Linear(RealQuantLinear):
    """4-bit weight codes packed two per byte (buffer ``weight_packed`` ``(out, in/2)`` uint8).

    The codes are unpacked to int8 for the int8 GEMM (``in`` must be even). ``a_bits`` 8 gives
    W4A8, 4 gives W4A4 (4-bit activation codes held in int8; the int32 GEMM is exact for both).
    """

    w_bits = 4

    def __init__(self, in_features: int, out_features: int, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, **kwargs)
        if in_features % 2:
            raise ValueError(f"in_features: packed int4 needs an even size, got {in_features}")
        self.register_buffer(
            "weight_packed", torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        )

    def int_weight(self) -> torch.Tensor:
        return unpack_int4(self.weight_packed)  # (out, in) int8 in [-8, 7]

    def set_int_weight(self, codes: torch.Tensor) -> None:
        want = (self.out_features, self.in_features)
        if codes.dtype != torch.int8 or tuple(codes.shape) != want:
            raise ValueError(f"codes: expected int8 {want}, got {codes.dtype} {tuple(codes.shape)}")
        self.weight_packed = pack_int4(codes)


class W4A8Linear(W4Linear):
    """:class:`W4Linear` with 8-bit activations by default (the W4A8KV4 preset)."""

    default_a_bits = 8


class W4A4Linear(W4Linear):
    """:class:`W4Linear` with 4-bit activations by default (the W4A4KV4 preset)."""

    default_a_bits = 4


class RealQuantRMSNorm(nn.Module):
    """RMSNorm fused with static per-tensor int quantization of its output.

    ``y = x / sqrt(mean(x²) + eps) · γ`` then ``q = clamp(round(y · (1/s)), qmin, qmax)``
    (core-kernels ``rms_norm_quant``: one Triton kernel on CUDA, the float32 reference on CPU;
    4-bit codes are the int8 codes clamped to ``[-8, 7]``, the same as quantizing to 4 bits
    directly). Returns ``q · s`` in ``x``'s dtype with ``QuantPayload(q, s, bits)`` attached as
    ``_pq_int8`` for the following real linears (see the module docstring).

    ``a_mode="dynamic"`` (the per-token baseline) is not fused: HF's RMSNorm
    (``γ · (x · rsqrt(mean(x²) + eps)).to(dtype)``, exactly as ``QuantRMSNorm``) then
    :func:`dynamic_per_token_quant` with the ``act_clip`` bound; its codes and per-token scales
    are attached the same way.

    Args:
        hidden_size: ``D``.
        eps: RMSNorm epsilon. Default 1e-6.
        a_bits: 4 or 8, or None for a plain RMSNorm (no output quantizer). Default 8.
        a_mode: ``"static"`` (default) or ``"dynamic"``.
        impl: ``"auto"`` | ``"reference"`` | ``"triton"`` for ``rms_norm_quant``.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        *,
        a_bits: int | None = 8,
        a_mode: str = "static",
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size: expected a positive int, got {hidden_size!r}")
        if a_bits is not None:
            _check_bits(a_bits, "a_bits")
        if impl not in ("auto", "reference", "triton"):
            raise ValueError(f"impl: expected 'auto', 'reference' or 'triton', got {impl!r}")
        if a_mode not in ("static", "dynamic"):
            raise ValueError(f"a_mode: expected 'static' or 'dynamic', got {a_mode!r}")
        self.hidden_size = hidden_size
        self.eps = float(eps)
        self.a_bits = a_bits
        self.a_mode = a_mode
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.register_buffer("act_scale", torch.ones(()))
        self.register_buffer("act_clip", torch.ones(()))  # dynamic mode's clip bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` float -> ``(..., D)`` dequantized codes (``x.dtype``) with a payload."""
        _check_float(x, "x")
        if self.a_bits is None or self.a_mode == "dynamic":
            xf = x.to(torch.float32)
            h = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
            y = self.weight.to(x.dtype) * h  # (..., D), as HF / QuantRMSNorm
            if self.a_bits is None:
                return y
            q, s = dynamic_per_token_quant(y, self.a_bits, self.act_clip)
            out = (q.to(torch.float32) * s).to(x.dtype)
            setattr(out, PAYLOAD_ATTR, QuantPayload(q, s, self.a_bits, "dynamic"))
            return out
        q = rms_norm_quant(x, self.weight, self.act_scale, self.eps, impl=self.impl)
        if self.a_bits != 8:
            qmin, qmax = _qrange(self.a_bits)
            q = q.clamp(qmin, qmax)
        out = (q.to(torch.float32) * self.act_scale).to(x.dtype)
        setattr(out, PAYLOAD_ATTR, QuantPayload(q, self.act_scale, self.a_bits))
        return out

    def extra_repr(self) -> str:
        a = "none" if self.a_bits is None else f"{self.a_bits}-bit {self.a_mode}"
        return f"{self.hidden_size}, eps={self.eps}, out_quant={a}"


# ------------------------------------------------------------------------------- conversion


def _quantizer_scale(q: nn.Module) -> torch.Tensor:
    for name in ("effective_scale", "get_scale"):
        fn = getattr(q, name, None)
        if callable(fn):
            return fn().detach()
    s = getattr(q, "scale", None)
    if not isinstance(s, torch.Tensor):
        raise ValueError(f"{type(q).__name__}: has no tensor `scale` to convert to a real layer")
    return s.detach()


def _quantizer_active(q: nn.Module | None) -> bool:
    return q is not None and bool(getattr(q, "enabled", True))


def _act_quant_fields(q: nn.Module, where: str) -> tuple[int, str, torch.Tensor]:
    """(bits, mode, per-tensor scale or dynamic clip) of an activation quantizer, checked."""
    bits = int(getattr(q, "bits", 0))
    if bits not in (4, 8):
        raise ValueError(f"{where}: real execution supports 4- or 8-bit activations, got {bits}")
    if not getattr(q, "symmetric", True):
        raise ValueError(f"{where}: real execution needs symmetric activation quantizers")
    mode = str(getattr(q, "mode", "static"))
    if mode == "dynamic":
        clip = getattr(q, "clip", None)
        clip = torch.ones(()) if clip is None else clip.detach().float().reshape(())
        return bits, mode, clip
    gran = getattr(q, "granularity", "per_tensor")
    s = _quantizer_scale(q).to(torch.float32)
    if gran != "per_tensor" or s.numel() != 1:
        raise ValueError(
            f"{where}: real execution needs a static per-tensor scale, got granularity "
            f"{gran!r} with scale shape {tuple(s.shape)}"
        )
    return bits, mode, s.reshape(())


def _weight_codes(layer: nn.Module, where: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(bits, int8 codes (out, in), scale (out, 1)) read back from the fake weight quantizer.

    The codes are ``round(Q(W) / s)`` of the quantizer's own output, so whatever rounding formula
    the fake quantizer uses, the real layer holds exactly its codes (checked: ``codes·s == Q(W)``).
    """
    wq = layer.weight_quantizer
    bits = int(getattr(wq, "bits", 0))
    if bits not in (4, 8):
        raise ValueError(f"{where}: real execution supports 4- or 8-bit weights, got {bits}")
    s = _quantizer_scale(wq).to(torch.float32)
    out_f = layer.weight.shape[0]
    if s.numel() != out_f:
        raise ValueError(
            f"{where}: expected a per-output-channel weight scale of {out_f} values, got "
            f"shape {tuple(s.shape)}"
        )
    s = s.reshape(out_f, 1)
    with torch.no_grad():
        wq_out = wq(layer.weight).to(torch.float32)  # (out, in) fake-quantized
    qmin, qmax = _qrange(bits)
    own = getattr(wq, "codes", None)
    codes = own(layer.weight).to(torch.float32) if callable(own) else torch.round(wq_out / s)
    if bool(((codes < qmin) | (codes > qmax)).any()) or not torch.allclose(
        codes * s, wq_out, rtol=1e-5, atol=0.0
    ):
        raise ValueError(
            f"{where}: the weight quantizer's output is not q·s with integer codes in "
            f"[{qmin}, {qmax}] and its per-channel scale; cannot convert it to integer codes"
        )
    return bits, codes.to(torch.int8), s


def _real_linear(
    layer: nn.Module, act: tuple[int, str, torch.Tensor] | None, impl: str, where: str
):
    bits, codes, ws = _weight_codes(layer, where)
    a_bits, a_mode, a_scale = act if act is not None else (None, "static", None)
    if bits == 8:
        cls: type[RealQuantLinear] = W8A8Linear
    else:
        cls = {4: W4A4Linear, 8: W4A8Linear}.get(a_bits, W4Linear)  # type: ignore[arg-type]
    bias = getattr(layer, "bias", None)
    dev = layer.weight.device
    real = cls.from_float(
        layer.weight.detach(),
        ws.to(dev),
        None if bias is None else bias.detach(),
        act_scale=None if a_scale is None or a_mode == "dynamic" else a_scale.to(dev),
        a_bits=a_bits,
        a_mode=a_mode,
        online_hadamard=getattr(layer, "online_hadamard", None),
        impl=impl,
        codes=codes.to(dev),
    )
    if a_mode == "dynamic" and a_scale is not None:
        real.act_clip.copy_(a_scale.to(dev))
    return real


def _real_norm(norm: nn.Module, impl: str, where: str) -> RealQuantRMSNorm:
    oq = getattr(norm, "output_quantizer", None)
    act = _act_quant_fields(oq, where) if _quantizer_active(oq) else None
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6))
    w = getattr(norm, "weight", None)
    hidden = int(getattr(norm, "hidden_size", 0) or (0 if w is None else w.shape[0]))
    ref = w if w is not None else getattr(oq, "scale", None)
    dev = ref.device if isinstance(ref, torch.Tensor) else torch.device("cpu")
    real = RealQuantRMSNorm(
        hidden,
        float(eps),
        a_bits=None if act is None else act[0],
        a_mode="static" if act is None else act[1],
        impl=impl,
    ).to(dev)
    with torch.no_grad():
        if w is not None:  # a weightless norm (after rotation's fusion) keeps γ = 1
            real.weight.copy_(w.detach())
        if act is not None and act[1] == "static":
            real.act_scale.copy_(act[2])
        elif act is not None:
            real.act_clip.copy_(act[2])
    return real


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _move_hooks(old: nn.Module, new: nn.Module) -> None:
    """Carry forward (pre-)hooks over (e.g. the V-cache quantizer hook on v_proj's output)."""
    for attr in _HOOK_DICTS:
        src = getattr(old, attr, None)
        if src:
            getattr(new, attr).update(src)


def _replace_child(parent: nn.Module, old: nn.Module, new: nn.Module) -> None:
    _move_hooks(old, new)
    for name, child in parent.named_children():
        if child is old:
            setattr(parent, name, new)
            return
    raise ValueError(f"{type(parent).__name__}: does not hold the module to replace directly")


def to_real_(model: nn.Module, *, impl: str = "auto") -> dict[str, int]:
    """Replace the fake-quant modules of a quantized model by integer-executing ones, in place.

    Per decoder layer (sites from :func:`~paperbricks.prefixquant.sites.resolve_sites`):

    - ``input_norm`` / ``post_attention_norm`` (``QuantRMSNorm`` with an ``output_quantizer``)
      -> :class:`RealQuantRMSNorm` (fused norm + static quant, payload attached);
    - ``q/k/v_proj`` and ``gate/up_proj`` (``QuantLinear`` whose input quantizer is the preceding
      norm's output quantizer) -> real linears whose static scale is that quantizer's scale;
    - ``o_proj`` / ``down_proj`` (``QuantLinear`` with an ``input_quantizer``; down_proj keeps its
      ``online_hadamard``) -> real linears quantizing their input statically.

    Weight codes are read back from each weight quantizer's output, so the real layer's integer
    codes are exactly those the fake-quant model used. Dynamic (per-token) activation quantizers
    become the dynamic real path. The KV quantizers, the attention and lm_head stay as they are.

    Args:
        model: an HF causal LM (or a ``PrefixedCausalLM``, whose ``.model`` is converted) after
            ``quantize_``.
        impl: GEMM / fused-norm implementation (``"auto"``: Triton for CUDA tensors).

    Returns:
        counts ``{"linear": n, "norm": m}`` of converted modules.

    Raises:
        ValueError: the model holds no fake-quant modules, or a quantizer the real path cannot
            run (asymmetric, per-token static, bit widths other than 4/8), named by module path.

    Examples:
        >>> counts = to_real_(prefixed_model)  # doctest: +SKIP
    """
    from .sites import resolve_sites

    if impl not in ("auto", "reference", "triton"):
        raise ValueError(f"impl: expected 'auto', 'reference' or 'triton', got {impl!r}")
    inner = getattr(model, "model", None)
    target = inner if isinstance(inner, nn.Module) and hasattr(model, "prefix") else model
    sites = resolve_sites(target)
    counts = {"linear": 0, "norm": 0}
    for ls in sites.layers:
        groups = (
            (
                "self_attn",
                "input_layernorm",
                ls.input_norm,
                ("q_proj", "k_proj", "v_proj"),
                ls.attn,
            ),
            (
                "mlp",
                "post_attention_layernorm",
                ls.post_attention_norm,
                ("gate_proj", "up_proj"),
                ls.mlp,
            ),
        )
        for parent_name, norm_name, norm, lin_names, parent in groups:
            where = f"layers.{ls.index}.{norm_name}"
            norm_act = None
            if hasattr(norm, "output_quantizer"):
                oq = norm.output_quantizer
                norm_act = _act_quant_fields(oq, where) if _quantizer_active(oq) else None
                _replace_child(ls.layer, norm, _real_norm(norm, impl, where))
                counts["norm"] += 1
            for name in lin_names:
                lin = getattr(parent, name)
                lw = f"layers.{ls.index}.{parent_name}.{name}"
                if getattr(lin, "weight_quantizer", None) is None:
                    continue
                iq = getattr(lin, "input_quantizer", None)
                act = _act_quant_fields(iq, lw) if _quantizer_active(iq) else norm_act
                _replace_child(parent, lin, _real_linear(lin, act, impl, lw))
                counts["linear"] += 1
        for parent, name in ((ls.attn, "o_proj"), (ls.mlp, "down_proj")):
            lin = getattr(parent, name)
            if getattr(lin, "weight_quantizer", None) is None:
                continue
            lw = f"layers.{ls.index}.{name}"
            iq = getattr(lin, "input_quantizer", None)
            act = _act_quant_fields(iq, lw) if _quantizer_active(iq) else None
            _replace_child(parent, lin, _real_linear(lin, act, impl, lw))
            counts["linear"] += 1
    if counts["linear"] == 0:
        raise ValueError(
            "model: found no fake-quant linear layers (QuantLinear with a weight_quantizer); "
            "run quantize_(model, config, ...) first"
        )
    logger.info(
        "to_real_: converted %d linear layers and %d norms", counts["linear"], counts["norm"]
    )
    return counts
