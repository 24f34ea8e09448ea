"""Hadamard matrices and transforms: Sylvester/Paley/Kronecker constructions, FWHT, K·2^p sizes.

- :func:`fwht`: fast Walsh–Hadamard transform over the last dim, ``y = s · H_n · x`` for n = 2^p
  (Sylvester ``H[i, j] = (−1)^popcount(i & j)``); torch butterfly reference and a Triton kernel
  (whole rows in registers, n ≤ 32768, fp32 accumulation), both differentiable.
- :func:`had_transform`: widths n = K·2^p, ``y = s · (H_K ⊗ H_{2^p}) · x`` as a reshape, an FWHT
  and a K×K matmul (11008 = 344·32, 14336 = 28·512, 18944 = 148·128, ...).
- :func:`hadamard_matrix`: the ±1 matrix of order n (deterministic, cached int8), *generated*:
  Sylvester for 2^p, Paley I (q ≡ 3 mod 4: 12, 20, 28, 60, 108, 140, 344 over GF(7³)), Paley II
  (q ≡ 1 mod 4: 36, 148, 52 over GF(25)), Kronecker products (40 = H_20 ⊗ H_2).
- :func:`hadamard_size_plan`, :func:`hadamard_construction`, :func:`constructible_orders`: which
  decomposition and construction an order uses; orders without one raise a ``ValueError`` naming
  sizes that work.
- :func:`random_hadamard`: ``Q = H · diag(σ) / sqrt(n)`` with seeded signs σ (QuaRot-style).

The generated matrices are Hadamard matrices of the right orders but **not** the ones in QuaRot's
tables (same equivalence class for small orders, different entries): store the matrix used when a
rotation must be reproduced elsewhere. There is no silent random-orthogonal fallback: orders
without a construction (92, 116, 156, 172, ...) raise. Importing this module imports no triton.
"""

from .constructions import (
    MAX_PALEY_ORDER,
    GaloisField,
    constructible_orders,
    hadamard_construction,
    hadamard_matrix,
    hadamard_size_plan,
    is_prime_power,
    paley_hadamard,
    sylvester_hadamard,
)
from .ops import TRITON_MAX_N, fwht, had_transform, random_hadamard, random_hadamard_signs
from .reference import fwht_reference, had_transform_reference

__all__ = [
    "MAX_PALEY_ORDER",
    "TRITON_MAX_N",
    "GaloisField",
    "constructible_orders",
    "fwht",
    "fwht_reference",
    "had_transform",
    "had_transform_reference",
    "hadamard_construction",
    "hadamard_matrix",
    "hadamard_size_plan",
    "is_prime_power",
    "paley_hadamard",
    "random_hadamard",
    "random_hadamard_signs",
    "sylvester_hadamard",
]
