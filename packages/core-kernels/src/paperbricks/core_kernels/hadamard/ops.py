"""Public Hadamard ops: input checks and ``impl="auto"|"reference"|"triton"`` dispatch."""

from __future__ import annotations

import functools
import math

import torch

from ..devices import select_impl
from .constructions import (
    _check_order,
    _is_pow2,
    _no_construction,
    _plan,
    hadamard_matrix,
    hadamard_size_plan,
)
from .reference import fwht_reference, had_transform_reference

__all__ = [
    "TRITON_MAX_N",
    "fwht",
    "had_transform",
    "random_hadamard",
    "random_hadamard_signs",
]

#: Longest row the Triton FWHT keeps in registers; longer rows run on the reference.
TRITON_MAX_N = 32768
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_x(x: object, op: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must have a floating dtype, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{op}: x must have at least 1 dimension (..., n), got a 0-d tensor")
    return x


def _resolve_scale(n: int, normalize: bool, scale: float | None, op: str) -> float:
    if not isinstance(normalize, bool):
        raise TypeError(f"{op}: normalize must be a bool, got {normalize!r}")
    if scale is not None:
        if normalize:
            raise ValueError(
                f"{op}: pass either normalize=True (scale 1/sqrt(n)) or an explicit scale, "
                f"not both (got scale={scale!r})"
            )
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"{op}: scale must be a float or None, got {scale!r}")
        if not math.isfinite(scale):
            raise ValueError(f"{op}: scale must be finite, got {scale!r}")
        return float(scale)
    return 1.0 / math.sqrt(n) if normalize else 1.0


def fwht(
    x: torch.Tensor,
    *,
    normalize: bool = False,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Fast Walsh–Hadamard transform over the last dimension: ``y = s · H_n · x`` per row.

    H_n is Sylvester's Hadamard matrix (``H[i, j] = (−1)^popcount(i & j)``, symmetric), so the
    unnormalised transform applied twice gives ``n · x`` and the normalised one is an orthonormal
    involution. Computed in float32 (float64 for float64 input) and returned in x's dtype.

    Args:
        x: tensor of shape (..., n) with n a power of two (1 allowed); float16, bfloat16, float32
            or float64. Any leading shape, including zero rows.
        normalize: if True, ``s = 1/sqrt(n)`` (orthonormal); default False (``s = 1``).
        scale: an explicit ``s`` instead (keyword; exclusive with ``normalize=True``).
        impl: ``"auto"`` (Triton for CUDA tensors with n ≤ :data:`TRITON_MAX_N`, else reference),
            ``"reference"`` (torch butterfly) or ``"triton"`` (also on CPU under
            ``TRITON_INTERPRET=1``). Both paths are differentiable.

    Returns:
        Tensor of the shape and dtype of x.

    Raises:
        TypeError: x is not a floating tensor, or bad ``normalize``/``scale`` types.
        ValueError: n is not a power of two (use :func:`had_transform`), both ``normalize`` and
            ``scale`` given, or ``impl="triton"`` with n > :data:`TRITON_MAX_N`.

    Examples:
        >>> x = torch.tensor([1.0, 0.0, 0.0, 0.0])
        >>> fwht(x)
        tensor([1., 1., 1., 1.])
        >>> y = fwht(torch.randn(3, 8), normalize=True)
        >>> torch.allclose(fwht(y, normalize=True).norm(), y.norm())
        True
    """
    x = _check_x(x, "fwht")
    n = x.shape[-1]
    if not _is_pow2(n):
        raise ValueError(
            f"fwht: the last dim must be a power of two, got n={n} (shape {tuple(x.shape)}); "
            f"use had_transform for n = K·2^p"
        )
    s = _resolve_scale(n, normalize, scale, "fwht")
    supported = n <= TRITON_MAX_N and x.dtype in _TRITON_DTYPES
    why = (
        f"n={n} exceeds TRITON_MAX_N={TRITON_MAX_N} (the row must fit in registers)"
        if n > TRITON_MAX_N
        else f"dtype {x.dtype} is not one of {_TRITON_DTYPES}"
    )
    which = select_impl(impl, [x], op="fwht", supported=supported, why_unsupported=why)
    if which == "triton":
        from ._triton import fwht_triton

        return fwht_triton(x, s)
    return fwht_reference(x, s)


@functools.lru_cache(maxsize=64)
def _hk(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return hadamard_matrix(k, dtype=dtype, device=device)


def _check_k(k: object, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"had_transform: K must be an int or None, got {type(k).__name__} {k!r}")
    if k < 1 or n % k != 0 or not _is_pow2(n // k):
        raise ValueError(
            f"had_transform: K must divide n with n/K a power of two; got K={k}, n={n} "
            f"(the default plan for n would be K={_plan(n)[0] if _plan(n) else 'none'})"
        )
    if _plan(k) is None:
        raise _no_construction(k, "K")
    return k


def had_transform(
    x: torch.Tensor,
    K: int | None = None,
    *,
    normalize: bool = False,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Hadamard transform of width n = K·2^p over the last dim: ``y = s · (H_K ⊗ H_{2^p}) · x``.

    Implemented as a reshape to (..., K, 2^p), an FWHT over the last axis (Triton when
    dispatched) and a K×K matmul with ``H_K = hadamard_matrix(K)`` over the K axis:
    ``Y = H_K · X · H_{2^p}``. ``had_transform(x, K)`` equals ``s · x @ hadamard_matrix(n).T``
    for every valid K (Kronecker associativity), so K only changes the cost, not the result.

    Args:
        x: tensor of shape (..., n), floating dtype.
        K: the non-power-of-two factor; default ``hadamard_size_plan(n)[0]`` (largest 2^p).
            Must divide n with n/K a power of two and have a construction (e.g. 12, 20, 28, 36,
            40, 52, 60, 108, 140, 148, 344).
        normalize: if True, ``s = 1/sqrt(n)`` (orthonormal); default False (``s = 1``).
        scale: an explicit ``s`` (exclusive with ``normalize=True``).
        impl: dispatch of the FWHT part, as in :func:`fwht`. ``"reference"`` computes the whole
            transform in float32 (float64 for float64) and rounds once; the Triton path rounds the
            FWHT output to x's dtype before the K×K matmul (in x's dtype).

    Returns:
        Tensor of the shape and dtype of x.

    Raises:
        TypeError: bad types. ValueError: n has no construction (the message names sizes that
            work), K does not fit n, or both ``normalize`` and ``scale`` given.

    Examples:
        >>> x = torch.randn(2, 11008)
        >>> y = had_transform(x, normalize=True)  # (H_344 ⊗ H_32) / sqrt(11008)
        >>> torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-4)
        True
    """
    x = _check_x(x, "had_transform")
    n = x.shape[-1]
    k = hadamard_size_plan(n)[0] if K is None else _check_k(K, n)
    s = _resolve_scale(n, normalize, scale, "had_transform")
    if k == 1:
        return fwht(x, scale=s, impl=impl)
    p = n // k
    supported = p <= TRITON_MAX_N and x.dtype in _TRITON_DTYPES
    why = (
        f"the power-of-two factor {p} exceeds TRITON_MAX_N={TRITON_MAX_N}"
        if p > TRITON_MAX_N
        else f"dtype {x.dtype} is not one of {_TRITON_DTYPES}"
    )
    which = select_impl(impl, [x], op="had_transform", supported=supported, why_unsupported=why)
    if which == "reference":
        return had_transform_reference(x, k, s)
    lead = x.shape[:-1]
    z = fwht(x.reshape(*lead, k, p), scale=s, impl="triton")  # (..., K, P)
    y = torch.matmul(_hk(k, x.dtype, x.device), z)  # (K, K) @ (..., K, P)
    return y.reshape(*lead, n)


def _draw_signs(
    n: int, seed: int | None, generator: torch.Generator | None, op: str
) -> torch.Tensor:
    if (seed is None) == (generator is None):
        raise ValueError(
            f"{op}: pass exactly one of seed (int) or generator (torch.Generator); "
            f"got seed={seed!r}, generator={generator!r}"
        )
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{op}: seed must be an int, got {seed!r}")
        generator = torch.Generator().manual_seed(seed)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"{op}: generator must be a torch.Generator, got {generator!r}")
    elif generator.device.type != "cpu":
        raise ValueError(f"{op}: generator must be a CPU generator, got {generator.device}")
    return torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64) * 2 - 1  # (n,)


def random_hadamard_signs(
    n: int,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The signs σ ∈ {±1}^n that :func:`random_hadamard` draws for the same seed/generator.

    Args:
        n: how many signs (the order).
        seed: seeds a fresh CPU generator (exclusive with ``generator``; one is required).
        generator: a CPU ``torch.Generator`` (advanced by n draws).

    Returns:
        int64 tensor of shape (n,) with entries ±1.

    Examples:
        >>> bool((random_hadamard_signs(8, seed=0).abs() == 1).all())
        True
    """
    n = _check_order(n)
    return _draw_signs(n, seed, generator, "random_hadamard_signs")


def random_hadamard(
    n: int,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Randomised orthonormal Hadamard matrix ``Q = H_n · diag(σ) / sqrt(n)``, σ ∈ {±1}^n.

    ``H_n = hadamard_matrix(n)`` (any order with a construction, e.g. 4096, 11008, 14336) and
    σ is drawn from a CPU ``torch.Generator`` (:func:`random_hadamard_signs`), so a seed gives the
    same Q on every device. Applying Q to rows without forming it:
    ``x @ Q.T == had_transform(x * σ, normalize=True)``.

    Args:
        n: the order.
        seed: seeds a fresh CPU generator (exclusive with ``generator``); one of them is required,
            there is no global-RNG default.
        generator: a CPU ``torch.Generator`` to draw σ from (advanced by n draws).
        dtype: floating dtype of the result (default float32; entries are ±1/sqrt(n) rounded once).
        device: where to put the result (default CPU).

    Returns:
        Tensor of shape (n, n) with ``Q @ Q.T = I``.

    Raises:
        TypeError: bad seed/generator/dtype types. ValueError: neither or both of seed and
            generator, a non-CPU generator, or no construction for n.

    Examples:
        >>> Q = random_hadamard(12, seed=0)
        >>> torch.allclose(Q @ Q.T, torch.eye(12), atol=1e-6)
        True
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"random_hadamard: dtype must be a floating torch.dtype, got {dtype!r}")
    h = hadamard_matrix(n, dtype=dtype, device=device)  # (n, n); validates n
    sigma = _draw_signs(n, seed, generator, "random_hadamard")  # (n,)
    # ±1 · (σ_j / sqrt(n)) is exact, so every entry is 1/sqrt(n) rounded once to dtype
    col = (sigma.to(torch.float64) / math.sqrt(n)).to(device=device, dtype=dtype)  # (n,)
    return h * col[None, :]  # H · diag(σ) / sqrt(n)
