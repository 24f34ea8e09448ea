"""Hadamard matrices generated from their constructions, never copied from tables.

A Hadamard matrix of order n has entries ±1 and satisfies ``H·Hᵀ = n·I``. This module builds them
from four classical constructions:

- **Sylvester** (n = 2^p): ``H_1 = [1]``, ``H_{2m} = [[H_m, H_m], [H_m, −H_m]] = H_2 ⊗ H_m``;
  symmetric, and the matrix the fast Walsh–Hadamard transform applies.
- **Paley I** (n = q + 1, q ≡ 3 mod 4 a prime power): with χ the quadratic character of GF(q) and
  the Jacobsthal matrix ``Q[a, b] = χ(a − b)`` (antisymmetric because χ(−1) = −1),
  ``S = [[0, 1ᵀ], [−1, Q]]`` and ``H = I + S``.
- **Paley II** (n = 2(q + 1), q ≡ 1 mod 4 a prime power): Q is symmetric,
  ``C = [[0, 1ᵀ], [1, Q]]`` is a symmetric conference matrix and
  ``H = C ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]]``.
- **Kronecker products**: ``H_a ⊗ H_b`` is Hadamard of order a·b.

Prime-power fields GF(p^m) (GF(25) for order 52, GF(27) for 28, GF(7³) for 344) use the
monic irreducible polynomial of degree m over GF(p) that comes first in lexicographic order of its
coefficients (found by search); elements are the integers ``0 … q−1`` read as base-p digit vectors
(coefficients of 1, t, t², …).

Orders are decomposed as n = K·2^p with the largest p for which K has a *primitive* construction
(Paley I, Paley II, or a Kronecker product of two primitive orders); then
``hadamard_matrix(n) = H_K ⊗ H_{2^p}`` (power-of-two factor last, so it is exactly the matrix
``had_transform`` applies). For example 40 = 20·2 gives ``H_20 ⊗ H_2`` and 11008 = 344·32 gives
``H_344 ⊗ H_32``.

These matrices are deterministic but differ from QuaRot's hard-coded tables: both are Hadamard
matrices of the same order (equivalent up to signed row/column permutations for small orders), not
the same matrices. Anything that must reproduce a rotation exactly should store the matrix used.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = [
    "MAX_PALEY_ORDER",
    "GaloisField",
    "constructible_orders",
    "hadamard_construction",
    "hadamard_matrix",
    "hadamard_size_plan",
    "is_prime_power",
    "paley_hadamard",
    "sylvester_hadamard",
]

#: Largest order built by a Paley construction (its tables cost O(q²) memory and time).
MAX_PALEY_ORDER = 4096

_WILLIAMSON_NOTE = (
    "orders such as 92, 116, 156, 172 need Williamson-type data that this module does not ship"
)


# --------------------------------------------------------------------------------------------
# Integer helpers and GF(p^m)
# --------------------------------------------------------------------------------------------


def _smallest_prime_factor(n: int) -> int:
    if n % 2 == 0:
        return 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return d
    return n


def is_prime_power(q: int) -> tuple[int, int] | None:
    """Return ``(p, m)`` with ``q = p^m`` for a prime p and m ≥ 1, or None.

    Examples:
        >>> is_prime_power(343), is_prime_power(25), is_prime_power(15)
        ((7, 3), (5, 2), None)
    """
    if q < 2:
        return None
    p = _smallest_prime_factor(q)
    m, r = 0, q
    while r % p == 0:
        r //= p
        m += 1
    return (p, m) if r == 1 else None


def _poly_rem(a: list[int], f: list[int], p: int) -> list[int]:
    """Remainder of ``a`` divided by the monic ``f`` over GF(p); coefficients low → high."""
    a = [c % p for c in a]
    df = len(f) - 1
    for i in range(len(a) - 1, df - 1, -1):
        c = a[i]
        if c:
            for j in range(df + 1):
                a[i - df + j] = (a[i - df + j] - c * f[j]) % p
    return a[:df] + [0] * max(0, df - len(a))


def _poly_mul(a: list[int], b: list[int], p: int) -> list[int]:
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                out[i + j] = (out[i + j] + ai * bj) % p
    return out


def _digits(x: int, p: int, m: int) -> list[int]:
    return [(x // p**k) % p for k in range(m)]


def _is_irreducible(f: list[int], p: int) -> bool:
    """Monic ``f`` of degree m is irreducible iff no monic g of degree 1 … m//2 divides it."""
    m = len(f) - 1
    for d in range(1, m // 2 + 1):
        for tail in range(p**d):
            g = [*_digits(tail, p, d), 1]
            if not any(_poly_rem(f, g, p)):
                return False
    return True


class GaloisField:
    """The finite field GF(p^m), elements encoded as integers ``0 … q−1`` (base-p digits).

    Element ``x`` stands for the polynomial ``Σ_k d_k t^k`` with ``d_k`` the k-th base-p digit of
    x; multiplication is modulo :attr:`modulus`, the lexicographically first monic irreducible
    polynomial of degree m over GF(p) (coefficients low → high, found by search).

    Args:
        p: a prime.
        m: the extension degree, ≥ 1.

    Examples:
        >>> F = GaloisField(5, 2)
        >>> F.q, F.modulus
        (25, [2, 0, 1])
        >>> F.mul(7, 7) == F.mul(F.mul(7, 7), 1)
        True
    """

    def __init__(self, p: int, m: int) -> None:
        if is_prime_power(p) != (p, 1):
            raise ValueError(f"p: expected a prime, got {p}")
        if m < 1:
            raise ValueError(f"m: expected an extension degree >= 1, got {m}")
        self.p, self.m, self.q = p, m, p**m
        self.modulus = self._find_modulus()

    def _find_modulus(self) -> list[int]:
        p, m = self.p, self.m
        if m == 1:
            return [0, 1]  # GF(p) = GF(p)[t]/(t): every element is a constant
        for tail in range(p**m):
            f = [*_digits(tail, p, m), 1]
            if _is_irreducible(f, p):
                return f
        raise AssertionError(f"no irreducible polynomial of degree {m} over GF({p})")  # unreachable

    def digits(self) -> np.ndarray:
        """All elements as base-p digit vectors, shape (q, m), int64."""
        x = np.arange(self.q, dtype=np.int64)
        return np.stack([(x // self.p**k) % self.p for k in range(self.m)], axis=1)

    def mul(self, a: int, b: int) -> int:
        """The field product of elements ``a`` and ``b`` (integers in ``0 … q−1``)."""
        if self.m == 1:
            return a * b % self.p
        prod = _poly_mul(_digits(a, self.p, self.m), _digits(b, self.p, self.m), self.p)
        rem = _poly_rem(prod, self.modulus, self.p)
        return sum(c * self.p**k for k, c in enumerate(rem))

    def sub_table(self) -> np.ndarray:
        """``T[a, b] = a − b`` in the field, shape (q, q), int64."""
        q, p = self.q, self.p
        x = np.arange(q, dtype=np.int64)
        if self.m == 1:
            return (x[:, None] - x[None, :]) % p
        d = self.digits()
        out = np.zeros((q, q), dtype=np.int64)
        for k in range(self.m):  # digit-wise subtraction, one digit plane at a time
            out += ((d[:, None, k] - d[None, :, k]) % p) * p**k
        return out

    def quadratic_character(self) -> np.ndarray:
        """χ(x) for every element: 0 at 0, +1 on non-zero squares, −1 otherwise; shape (q,), int8."""
        chi = np.full(self.q, -1, dtype=np.int8)
        chi[0] = 0
        if self.m == 1:
            x = np.arange(1, self.q, dtype=np.int64)
            chi[(x * x) % self.p] = 1
        else:
            chi[[self.mul(x, x) for x in range(1, self.q)]] = 1
        return chi


# --------------------------------------------------------------------------------------------
# Constructions (numpy int8)
# --------------------------------------------------------------------------------------------


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _sylvester_np(n: int) -> np.ndarray:
    h = np.ones((1, 1), dtype=np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _jacobsthal(q: int) -> np.ndarray:
    """``Q[a, b] = χ(a − b)`` over GF(q), shape (q, q), int8."""
    pm = is_prime_power(q)
    if pm is None:
        raise ValueError(f"q: expected a prime power, got {q}")
    field = GaloisField(*pm)
    return field.quadratic_character()[field.sub_table()]


def _paley_np(q: int, kind: int) -> np.ndarray:
    Q = _jacobsthal(q)  # (q, q)
    if kind == 1:
        S = np.zeros((q + 1, q + 1), dtype=np.int8)
        S[0, 1:] = 1
        S[1:, 0] = -1
        S[1:, 1:] = Q
        return S + np.eye(q + 1, dtype=np.int8)
    C = np.zeros((q + 1, q + 1), dtype=np.int8)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = Q
    A = np.array([[1, 1], [1, -1]], dtype=np.int8)
    B = np.array([[1, -1], [-1, -1]], dtype=np.int8)
    return np.kron(C, A) + np.kron(np.eye(q + 1, dtype=np.int8), B)


@functools.cache
def _primitive_recipe(k: int) -> tuple | None:
    """How to build a Hadamard matrix of order k without a power-of-two Kronecker factor."""
    if k == 1:
        return ("sylvester", 1)
    if k < 4 or k % 4 or _is_pow2(k):
        return None
    q = k - 1
    pm = is_prime_power(q)
    if pm is not None and q % 4 == 3 and k <= MAX_PALEY_ORDER:
        return ("paley1", q)
    if k % 8 == 4:
        q = k // 2 - 1
        pm = is_prime_power(q)
        if pm is not None and q % 4 == 1 and k <= MAX_PALEY_ORDER:
            return ("paley2", q)
    for a in range(4, math.isqrt(k) + 1, 4):
        b = k // a
        if (
            k % a == 0
            and not _is_pow2(a)
            and not _is_pow2(b)
            and _primitive_recipe(a) is not None
            and _primitive_recipe(b) is not None
        ):
            return ("kron", a, b)
    return None


def _plan(n: int) -> tuple[int, int] | None:
    v = (n & -n).bit_length() - 1
    for p in range(v, -1, -1):
        if _primitive_recipe(n >> p) is not None:
            return n >> p, 1 << p
    return None


def _nearby_orders(n: int, count: int = 2) -> tuple[list[int], list[int]]:
    below = [m for m in range(n - 1, 0, -1) if _plan(m) is not None][:count]
    above: list[int] = []
    m = n + 1
    while len(above) < count:
        if _plan(m) is not None:
            above.append(m)
        m += 1
    return sorted(below), above


def _check_order(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(n).__name__} {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n}")
    return n


def _no_construction(n: int, name: str = "n") -> ValueError:
    below, above = _nearby_orders(n)
    small = [k for k in range(4, 201, 4) if _primitive_recipe(k) is not None]
    return ValueError(
        f"{name}={n}: no Hadamard matrix of order K·2^p is constructible here (K must be 1 or a "
        f"multiple of 4 with a Paley I/II or Kronecker construction, e.g. K in {small}; "
        f"{_WILLIAMSON_NOTE}); nearest sizes that work: {below + above}"
    )


def hadamard_size_plan(n: int) -> tuple[int, int]:
    """The decomposition ``n = K·2^p`` used for order n: returns ``(K, 2^p)``.

    ``2^p`` is the largest power of two dividing n for which ``K = n / 2^p`` has a Paley I,
    Paley II or Kronecker construction (K = 1 for powers of two).

    Args:
        n: the order (transform width), a positive int.

    Returns:
        ``(K, P)`` with ``K·P = n`` and P a power of two.

    Raises:
        ValueError: when no K works, naming the nearest sizes that do.

    Examples:
        >>> hadamard_size_plan(4096), hadamard_size_plan(11008), hadamard_size_plan(14336)
        ((1, 4096), (344, 32), (28, 512))
        >>> hadamard_size_plan(18944)
        (148, 128)
    """
    n = _check_order(n)
    plan = _plan(n)
    if plan is None:
        raise _no_construction(n)
    return plan


def constructible_orders(limit: int) -> list[int]:
    """All orders ``n ≤ limit`` for which :func:`hadamard_matrix` has a construction.

    Examples:
        >>> [n for n in constructible_orders(100) if n & (n - 1)]
        [12, 20, 24, 28, 36, 40, 44, 48, 52, 56, 60, 68, 72, 76, 80, 84, 88, 96, 100]
    """
    limit = _check_order(limit, "limit")
    return [n for n in range(1, limit + 1) if _plan(n) is not None]


def hadamard_construction(n: int) -> str:
    """A readable description of how ``hadamard_matrix(n)`` is built (for logs and provenance).

    Examples:
        >>> hadamard_construction(11008)
        'paley1(q=343=7^3) ⊗ sylvester(32)'
        >>> hadamard_construction(52)
        'paley2(q=25=5^2)'
    """
    n = _check_order(n)
    plan = _plan(n)
    if plan is None:
        raise _no_construction(n)
    k, pw = plan

    def describe(k: int) -> str:
        r = _primitive_recipe(k)
        assert r is not None  # guaranteed by the plan
        if r[0] == "sylvester":
            return "sylvester(1)"
        if r[0] == "kron":
            return f"({describe(r[1])} ⊗ {describe(r[2])})"
        p, m = is_prime_power(r[1])  # type: ignore[misc]
        field = f"q={r[1]}" + (f"={p}^{m}" if m > 1 else "")
        return f"{r[0]}({field})"

    if k == 1:
        return f"sylvester({pw})"
    return describe(k) + (f" ⊗ sylvester({pw})" if pw > 1 else "")


@functools.lru_cache(maxsize=64)
def _primitive_np(k: int) -> np.ndarray:
    r = _primitive_recipe(k)
    assert r is not None
    if r[0] == "sylvester":
        h = np.ones((1, 1), dtype=np.int8)
    elif r[0] == "paley1":
        h = _paley_np(r[1], 1)
    elif r[0] == "paley2":
        h = _paley_np(r[1], 2)
    else:
        h = np.kron(_primitive_np(r[1]), _primitive_np(r[2]))
    h.flags.writeable = False  # shared by the cache
    return h


def _build_int8(n: int) -> torch.Tensor:
    k, pw = _plan(n)  # type: ignore[misc]
    h = _sylvester_np(pw) if k == 1 else np.kron(_primitive_np(k), _sylvester_np(pw))
    return torch.from_numpy(np.ascontiguousarray(h))


#: Orders up to this are kept in the int8 cache; larger ones (up to n² bytes) are rebuilt per call.
_CACHE_MAX_ORDER = 4096
_cached_int8 = functools.lru_cache(maxsize=64)(_build_int8)


def hadamard_matrix(
    n: int,
    *,
    dtype: torch.dtype = torch.int8,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The (unnormalised, ±1) Hadamard matrix of order n used throughout this module.

    ``hadamard_matrix(n) = H_K ⊗ H_{2^p}`` with ``(K, 2^p) = hadamard_size_plan(n)``; H_K comes from
    Paley I/II or a Kronecker product, H_{2^p} from Sylvester. Deterministic; orders up to 4096
    are cached as int8 on the CPU (larger ones are rebuilt from the cached H_K), and every call
    returns a fresh tensor. It is *a* Hadamard matrix, not QuaRot's table entry.

    Args:
        n: the order, a positive int with a construction (see :func:`hadamard_size_plan`).
        dtype: dtype of the result (default ``torch.int8``; any float dtype holds ±1 exactly).
        device: where to put the result (default CPU).

    Returns:
        Tensor of shape (n, n) with entries ±1 and ``H @ H.T == n·I``.

    Raises:
        TypeError: n is not an int. ValueError: n < 1 or no construction for n.

    Examples:
        >>> H = hadamard_matrix(12, dtype=torch.int64)
        >>> bool((H @ H.T == 12 * torch.eye(12, dtype=torch.int64)).all())
        True
    """
    n = _check_order(n)
    if _plan(n) is None:
        raise _no_construction(n)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype: expected a torch.dtype, got {dtype!r}")
    if n <= _CACHE_MAX_ORDER:
        return _cached_int8(n).to(device=device, dtype=dtype, copy=True)
    return _build_int8(n).to(device=device, dtype=dtype)


def sylvester_hadamard(n: int) -> torch.Tensor:
    """Sylvester's Hadamard matrix of order n = 2^p (int8), the matrix of :func:`fwht`.

    Entry ``(i, j)`` is ``(−1)^popcount(i & j)``.
    """
    n = _check_order(n)
    if not _is_pow2(n):
        raise ValueError(f"n: Sylvester needs a power of two, got {n}")
    return torch.from_numpy(_sylvester_np(n))


def paley_hadamard(q: int, kind: int) -> torch.Tensor:
    """Paley's Hadamard matrix over GF(q) (int8), regardless of which construction the plan picks.

    Args:
        q: a prime power; q ≡ 3 mod 4 for ``kind=1`` (order q + 1), q ≡ 1 mod 4 for ``kind=2``
            (order 2(q + 1)).
        kind: 1 (Paley I) or 2 (Paley II).

    Examples:
        >>> paley_hadamard(13, 2).shape  # 28 via Paley II (the plan builds 28 with Paley I, q = 27)
        torch.Size([28, 28])
    """
    q = _check_order(q, "q")
    if kind not in (1, 2):
        raise ValueError(f"kind: expected 1 (Paley I) or 2 (Paley II), got {kind!r}")
    if is_prime_power(q) is None:
        raise ValueError(f"q: expected a prime power, got {q}")
    want = 3 if kind == 1 else 1
    if q % 4 != want:
        raise ValueError(f"q: Paley {'I' * kind} needs q ≡ {want} mod 4, got q={q} (≡ {q % 4})")
    return torch.from_numpy(_paley_np(q, kind))
