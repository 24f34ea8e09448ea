"""Public differential-attention op (arXiv 2410.05258, §2.1): validation and ``impl`` dispatch.

``diff_attention`` computes ``Y = (1 − λ_init)·RMSNorm_γ((softmax(s·Q1K1ᵀ) − λ·softmax(s·Q2K2ᵀ))·V)``
(the norm and the scale optional) with four interchangeable implementations:

- ``"reference"``: both (T, S) maps materialised, float32 softmaxes (:mod:`.reference`);
- ``"sdpa"``: two core-kernels ``attention`` calls sharing V, then the norm (the official
  ``multihead_flashdiff_1.py`` semantics);
- ``"triton"``: the fused kernel of :mod:`.kernels` — one pass over the K/V tiles with two
  online-softmax states sharing each V tile, the RMSNorm epilogue fused, FA2-style backward;
- ``"auto"``: Triton for CUDA tensors with supported shapes, else ``"sdpa"`` (or the reference
  when the maps are asked for).

What differs from the naive official file: GQA follows the flash semantics (diff-head h uses KV
head h // (H / Hkv) for both components); the naive file's ``repeat_kv`` over the 2·Hkv component
heads pairs the components with the wrong key halves when H > Hkv.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch

from paperbricks.core_kernels.devices import select_impl

from .reference import diff_attention_reference, diff_attention_sdpa

__all__ = ["DiffImpl", "diff_attention"]

logger = logging.getLogger(__name__)

DiffImpl = Literal["auto", "reference", "sdpa", "triton"]
_IMPLS = ("auto", "reference", "sdpa", "triton")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Kept in sync with kernels/_triton.py (not imported here: it imports triton).
_TRITON_MAX_D = 128
_TRITON_MAX_DV = 256
_MAX_GRID_Y = 65535


def _check_4d(name: str, x: object, dims: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {dims}, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected 4 dims {dims}, got shape {tuple(x.shape)}")
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float16/bfloat16/float32/float64 tensor, got {x.dtype}"
        )
    return x


def _check_real(name: str, x: object, *, positive: bool = False) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise ValueError(f"{name}: expected a finite float, got {x!r}")
    if positive and float(x) <= 0:
        raise ValueError(f"{name}: expected a float > 0, got {x!r}")


def _check_cu_seqlens(cu_seqlens: object, q: torch.Tensor, s: int) -> None:
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens: expected a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.dim() != 1:
        raise TypeError(
            "cu_seqlens: expected a 1-D int32 (or int64) tensor, got "
            f"{cu_seqlens.dtype} of shape {tuple(cu_seqlens.shape)}"
        )
    if cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens: expected n_seq + 1 >= 2 entries, got {cu_seqlens.numel()}")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens: expected device {q.device} like q1, got {cu_seqlens.device}")
    b, _, t, _ = q.shape
    if b != 1:
        raise ValueError(f"cu_seqlens: packed sequences need batch B == 1, got B={b}")
    if s != t:
        raise ValueError(f"cu_seqlens: packed sequences need T == S, got T={t}, S={s}")
    cu = cu_seqlens.detach().to("cpu", torch.int64)  # one host sync
    lengths = cu[1:] - cu[:-1]
    if int(cu[0]) != 0 or int(cu[-1]) != t or bool((lengths < 0).any()):
        raise ValueError(
            f"cu_seqlens: expected non-decreasing values from 0 to T={t}, got {cu.tolist()}"
        )


def _validate(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: object,
    scale: float | None,
    normalize: bool | None,
    norm_weight: torch.Tensor | None,
    lambda_init: float | None,
    eps: float,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, bool]:
    """Check every argument; returns λ as a tensor and the resolved ``normalize`` flag."""
    _check_4d("q1", q1, "(B, H, T, D)")
    _check_4d("q2", q2, "(B, H, T, D)")
    _check_4d("k1", k1, "(B, Hkv, S, D)")
    _check_4d("k2", k2, "(B, Hkv, S, D)")
    _check_4d("v", v, "(B, Hkv, S, Dv)")
    tensors = {"q1": q1, "q2": q2, "k1": k1, "k2": k2, "v": v}
    if len({x.dtype for x in tensors.values()}) != 1:
        got = ", ".join(f"{n}={x.dtype}" for n, x in tensors.items())
        raise TypeError(f"q1, q2, k1, k2, v: expected one dtype, got {got}")
    if len({x.device for x in tensors.values()}) != 1:
        got = ", ".join(f"{n}={x.device}" for n, x in tensors.items())
        raise ValueError(f"q1, q2, k1, k2, v: expected one device, got {got}")
    if q2.shape != q1.shape:
        raise ValueError(f"q2: expected shape {tuple(q1.shape)} like q1, got {tuple(q2.shape)}")
    if k2.shape != k1.shape:
        raise ValueError(f"k2: expected shape {tuple(k1.shape)} like k1, got {tuple(k2.shape)}")
    b, h, t, d = q1.shape
    hkv, s = k1.shape[1], k1.shape[2]
    if k1.shape[0] != b:
        raise ValueError(f"k1: expected batch B={b} like q1, got shape {tuple(k1.shape)}")
    if k1.shape[3] != d:
        raise ValueError(f"k1: expected head dim D={d} like q1, got {k1.shape[3]}")
    if v.shape[:3] != k1.shape[:3]:
        raise ValueError(
            f"v: expected (B, Hkv, S) = {tuple(k1.shape[:3])} like k1, got {tuple(v.shape[:3])}"
        )
    if hkv < 1 or h % hkv != 0:
        raise ValueError(f"k1: diff-heads H={h} must be a multiple of KV heads Hkv={hkv}")
    if t < 1 or s < 1 or d < 1 or v.shape[3] < 1:
        raise ValueError(
            f"q1, k1, v: expected T, S, D, Dv >= 1, got T={t}, S={s}, D={d}, Dv={v.shape[3]}"
        )
    if isinstance(lam, (int, float)) and not isinstance(lam, bool):
        lam = torch.tensor(float(lam), device=q1.device, dtype=torch.float32)
    if not isinstance(lam, torch.Tensor):
        raise TypeError(f"lam: expected a 0-d or (H,) float tensor, got {type(lam).__name__}")
    if not lam.is_floating_point():
        raise TypeError(f"lam: expected a float tensor, got {lam.dtype}")
    if lam.shape not in ((), (h,)):
        raise ValueError(f"lam: expected shape () or (H,) = ({h},), got {tuple(lam.shape)}")
    if lam.device != q1.device:
        raise ValueError(f"lam: expected device {q1.device} like q1, got {lam.device}")
    if scale is not None:
        _check_real("scale", scale)
    _check_real("eps", eps, positive=True)
    if lambda_init is not None:
        _check_real("lambda_init", lambda_init)
    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize: expected None or a bool, got {type(normalize).__name__}")
    if norm_weight is not None:
        if not isinstance(norm_weight, torch.Tensor):
            raise TypeError(
                f"norm_weight: expected None or a (Dv,) tensor, got {type(norm_weight).__name__}"
            )
        if not norm_weight.is_floating_point() or norm_weight.shape != (v.shape[3],):
            raise ValueError(
                f"norm_weight: expected a float tensor of shape (Dv,) = ({v.shape[3]},), got "
                f"{norm_weight.dtype} of shape {tuple(norm_weight.shape)}"
            )
        if norm_weight.device != q1.device:
            raise ValueError(
                f"norm_weight: expected device {q1.device} like q1, got {norm_weight.device}"
            )
        if normalize is False:
            raise ValueError(
                "norm_weight: a gain was given with normalize=False; pass normalize=True "
                "(or leave it None) to apply the RMSNorm, or drop norm_weight"
            )
    if cu_seqlens is not None:
        _check_cu_seqlens(cu_seqlens, q1, s)
    resolved = normalize if normalize is not None else norm_weight is not None
    return lam, resolved


def _triton_support(q1: torch.Tensor, v: torch.Tensor) -> tuple[bool, str]:
    reasons = []
    if q1.dtype not in _TRITON_DTYPES:
        reasons.append(f"dtype {q1.dtype} (the kernel takes float16/bfloat16/float32)")
    if q1.shape[3] > _TRITON_MAX_D:
        reasons.append(f"D={q1.shape[3]} > {_TRITON_MAX_D}")
    if v.shape[3] > _TRITON_MAX_DV:
        reasons.append(f"Dv={v.shape[3]} > {_TRITON_MAX_DV}")
    if q1.shape[0] * q1.shape[1] > _MAX_GRID_Y:
        reasons.append(f"B*H={q1.shape[0] * q1.shape[1]} > {_MAX_GRID_Y} (grid limit)")
    return not reasons, "; ".join(reasons)


def diff_attention(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor | float,
    *,
    causal: bool = True,
    scale: float | None = None,
    normalize: bool | None = None,
    norm_weight: torch.Tensor | None = None,
    lambda_init: float | None = None,
    eps: float = 1e-5,
    cu_seqlens: torch.Tensor | None = None,
    return_maps: bool = False,
    impl: DiffImpl = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differential attention ``(softmax(s·Q1K1ᵀ) − λ·softmax(s·Q2K2ᵀ))·V`` with its epilogue.

    Per diff-head (eqs. 1–3 of :mod:`paperbricks.diffattn.reference`)::

        U = (A1 − λ·A2)·V,   Y = (1 − λ_init) · RMSNorm_γ(U)   (norm and scale optional)

    Args:
        q1, q2: (B, H, T, D) the two query components of each of the H diff-heads; float16,
            bfloat16, float32 or float64. D is the *component* head dim (half of a diff-head's
            query width).
        k1, k2: (B, Hkv, S, D) the two key components of each KV head; same dtype and device.
            GQA with the flash semantics: diff-head h reads KV head ``h // (H / Hkv)`` for both
            components. H must be a multiple of Hkv.
        v: (B, Hkv, S, Dv) values shared by both components (the paper: Dv = 2D; any Dv works).
        lam: λ, a 0-d tensor (one per layer, the paper) or an (H,) tensor (one per diff-head),
            any float dtype, differentiable (its gradient comes back in its dtype and shape); a
            Python float is accepted as a constant.
        causal: causal mask before each softmax, **bottom-right aligned** like core-kernels
            ``attention``: query i sees key j iff ``j <= i + S − T`` (KV-cache decoding). Queries
            that see no key (T > S) give U = 0. Default True.
        scale: score scale; default ``1/sqrt(D)`` (the halved head dim, not ``1/sqrt(2D)``).
        normalize: apply the per-head RMSNorm over Dv. Default None = normalise exactly when
            ``norm_weight`` is given; ``True`` without ``norm_weight`` normalises without a gain
            (HF DiffLlama, ``elementwise_affine=False``); ``False`` with a ``norm_weight`` raises.
        norm_weight: (Dv,) RMSNorm gain γ shared across heads, any float dtype (its gradient
            comes back in its dtype). Default None.
        lambda_init: when given, the output is multiplied by ``1 − lambda_init`` (after the norm
            if there is one). Default None.
        eps: RMSNorm epsilon. Default 1e-5.
        cu_seqlens: (n_seq + 1,) int32/int64 cumulative lengths of packed sequences (B == 1,
            T == S == cu_seqlens[-1]); attention is block-diagonal over the segments, causal
            within each. Its values are checked on the host (one device sync). Default None.
        return_maps: also return the differential map ``A1 − λ·A2`` (B, H, T, S) in float32
            (float64 for float64 input), e.g. for attention-allocation analysis. Needs the
            reference (``impl="auto"`` or ``"reference"``): it is O(T·S) memory. Default False.
        impl: ``"auto"`` (the fused Triton kernel for CUDA tensors with float16/bfloat16/float32,
            D <= 128 and Dv <= 256; else ``"sdpa"``; the reference when ``return_maps``),
            ``"reference"``, ``"sdpa"`` (two core-kernels ``attention`` calls + norm) or
            ``"triton"`` (on CPU only under ``TRITON_INTERPRET=1``).

    Returns:
        Y (B, H, T, Dv) in the input dtype; with ``return_maps`` the tuple ``(Y, maps)``.

    Raises:
        TypeError: non-tensor inputs, non-float or mixed dtypes, a non-float ``lam``, a
            non-integer ``cu_seqlens``.
        ValueError: inconsistent shapes, a ``lam`` that is neither () nor (H,), a
            ``norm_weight`` not of shape (Dv,), bad ``scale``/``eps``/``lambda_init``/``impl``,
            bad ``cu_seqlens``, ``return_maps`` with ``impl="sdpa"``/``"triton"``, inputs the
            Triton kernel does not support with ``impl="triton"``.

    Examples:
        >>> import torch
        >>> B, H, Hkv, T, D = 2, 4, 2, 16, 8
        >>> q1, q2 = torch.randn(2, B, H, T, D).unbind(0)
        >>> k1, k2 = torch.randn(2, B, Hkv, T, D).unbind(0)
        >>> v = torch.randn(B, Hkv, T, 2 * D)
        >>> lam = torch.tensor(0.5)
        >>> y = diff_attention(q1, q2, k1, k2, v, lam, norm_weight=torch.ones(2 * D),
        ...                    lambda_init=0.2)
        >>> y.shape
        torch.Size([2, 4, 16, 16])
        >>> y, maps = diff_attention(q1, q2, k1, k2, v, lam, return_maps=True)
        >>> bool(torch.allclose(maps.sum(-1), torch.full((), 0.5)))  # rows sum to 1 − λ
        True
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl: expected one of {_IMPLS}, got {impl!r}")
    lam, normalize = _validate(
        q1, q2, k1, k2, v, lam, scale, normalize, norm_weight, lambda_init, eps, cu_seqlens
    )
    kwargs = dict(
        causal=bool(causal),
        scale=None if scale is None else float(scale),
        normalize=normalize,
        norm_weight=norm_weight,
        lambda_init=None if lambda_init is None else float(lambda_init),
        eps=float(eps),
        cu_seqlens=cu_seqlens,
    )
    if return_maps:
        if impl in ("sdpa", "triton"):
            raise ValueError(
                f"return_maps: the maps exist only in the reference, got impl={impl!r}; "
                "use impl='auto' or 'reference'"
            )
        return diff_attention_reference(q1, q2, k1, k2, v, lam, return_maps=True, **kwargs)
    if impl == "reference":
        return diff_attention_reference(q1, q2, k1, k2, v, lam, **kwargs)
    if impl == "sdpa":
        return diff_attention_sdpa(q1, q2, k1, k2, v, lam, **kwargs)
    supported, why = _triton_support(q1, v)
    chosen = select_impl(
        impl, (q1, q2, k1, k2, v), op="diff_attention", supported=supported, why_unsupported=why
    )
    if chosen == "reference":  # select_impl's fallback: the flashdiff_1 path, never the O(T·S) one
        return diff_attention_sdpa(q1, q2, k1, k2, v, lam, **kwargs)
    from .kernels import fused_diff_attention

    return fused_diff_attention(q1, q2, k1, k2, v, lam, **kwargs)
