"""Energy accounting for L-Mul: per-operation energies and op counts, every assumption explicit.

The paper (arXiv 2410.00907, abstract) argues that replacing each floating-point multiply by
one integer add cuts the multiplication energy by ~95 % (element-wise) and ~80 % (dot products).
Those figures come from a per-operation energy table for a 45 nm process (Horowitz, ISSCC 2014).
This module keeps that table as data (:class:`EnergyTable`, replaceable from a dict or a JSON
file), counts the operations of an element-wise product, a dot product and a matmul under a named
scheme, and multiplies. It is an *op-count x table* model only:

- nothing here is a wall-clock claim. The L-Mul emulation in this package is much slower than a
  native float multiply; the model is about hypothetical hardware with an integer-add multiplier;
- data movement, register files, control, the offset subtraction, the sign XOR and special-value
  handling are not counted (the paper counts one integer add per L-Mul; ``adds_per_product``
  lets you count the offset subtraction as a second add);
- a dot product of length K is K multiply-accumulates: K products and K accumulator adds (the add
  into the zero-initialised accumulator is counted, as a MAC unit performs it);
- the table has no fp8 entries. The ``"fp8"`` scheme needs an ``fp8_mult`` entry (and ``fp8_add``
  if you accumulate in fp8) that *you* supply (:meth:`EnergyTable.with_entries`); the package
  never invents one. :meth:`EnergyTable.with_fp8_mult_proxy` is a named, documented proxy
  (fp8 multiply := int8 multiply) for when you want a number anyway.

Schemes (products; the accumulator precision is a separate argument, default ``"fp32"``):

==============  ======================  =============================================
scheme          one product costs       meaning
==============  ======================  =============================================
``fp32``        ``fp32_mult``           IEEE float32 multiplier
``fp16``        ``fp16_mult``           IEEE float16 multiplier
``fp8``         ``fp8_mult``            fp8 multiplier (no table entry: user-supplied)
``lmul-int32``  ``int32_add``           L-Mul on fp32 fields (8 + 23 bits) with a 32-bit adder
``lmul-int16``  ``int16_add``           L-Mul on fp16/bf16 fields with a 16-bit adder
``lmul-int8``   ``int8_add``            L-Mul on fp8 fields (e4m3/e5m2) with an 8-bit adder
==============  ======================  =============================================

Examples:
    >>> from paperbricks.lmul.energy import dot_energy, paper_percentages
    >>> {k: round(v, 1) for k, v in paper_percentages().items()}
    {'elementwise_fp16_vs_int16_add': 95.5, 'elementwise_fp32_vs_int32_add': 97.3, 'dot_fp32_vs_lmul_int32_fp32_accumulate': 78.3}
    >>> dot_energy(1024, "lmul-int32").total_pj / dot_energy(1024, "fp32").total_pj
    0.217391...
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "ACCUMULATORS",
    "HOROWITZ_45NM",
    "HOROWITZ_SOURCE",
    "SCHEMES",
    "EnergyEstimate",
    "EnergyTable",
    "dot_energy",
    "elementwise_energy",
    "matmul_energy",
    "paper_percentages",
]

#: Where the default numbers come from.
HOROWITZ_SOURCE = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
    "45 nm, 0.9 V (energy per operation, pJ). int16_add = 0.05 pJ is not on Horowitz's slide "
    "(it gives 8- and 32-bit integer adds); it is the value the L-Mul paper's table uses "
    "(arXiv 2410.00907, as restated in the package spec; unverified against the paper)."
)

#: Energy per operation in picojoules (45 nm). Keys are ``<type><bits>_<add|mult>``.
HOROWITZ_45NM: Mapping[str, float] = MappingProxyType(
    {
        "int8_add": 0.03,
        "int8_mult": 0.2,
        "int16_add": 0.05,
        "int32_add": 0.1,
        "int32_mult": 3.1,
        "fp16_add": 0.4,
        "fp16_mult": 1.1,
        "fp32_add": 0.9,
        "fp32_mult": 3.7,
    }
)

#: scheme -> the table entry one product costs.
SCHEMES: Mapping[str, str] = MappingProxyType(
    {
        "fp32": "fp32_mult",
        "fp16": "fp16_mult",
        "fp8": "fp8_mult",
        "lmul-int32": "int32_add",
        "lmul-int16": "int16_add",
        "lmul-int8": "int8_add",
    }
)

#: accumulator precision -> the table entry one accumulate costs.
ACCUMULATORS: Mapping[str, str] = MappingProxyType(
    {"fp32": "fp32_add", "fp16": "fp16_add", "fp8": "fp8_add"}
)


@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation (pJ) with the source it came from.

    Args:
        entries: op name -> energy in pJ (finite, >= 0). Names follow ``<type><bits>_<add|mult>``
            (``fp32_mult``, ``int16_add``, ``fp8_mult`` ...); any name is accepted, the schemes
            look up the ones in :data:`SCHEMES` / :data:`ACCUMULATORS`.
        source: where the numbers come from (printed by ``paperbricks lmul energy``).
        unit: always ``"pJ"``; stored for display.

    Examples:
        >>> t = EnergyTable.horowitz_45nm()
        >>> t["fp32_mult"], t.with_entries(fp8_mult=0.25, note="my 8-bit estimate")["fp8_mult"]
        (3.7, 0.25)
    """

    entries: Mapping[str, float]
    source: str
    unit: str = field(default="pJ")

    def __post_init__(self) -> None:
        if not isinstance(self.entries, Mapping):
            raise TypeError(
                f"entries: expected a mapping op -> pJ, got {type(self.entries).__name__}"
            )
        clean: dict[str, float] = {}
        for k, v in self.entries.items():
            if not isinstance(k, str) or not k:
                raise TypeError(f"entries: op names must be non-empty strings, got {k!r}")
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"entries[{k!r}]: expected a number of pJ, got {type(v).__name__}")
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"entries[{k!r}]: expected a finite energy >= 0 pJ, got {v}")
            clean[k] = float(v)
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError("source: say where the energies come from (a non-empty string)")
        if self.unit != "pJ":
            raise ValueError(f"unit: only 'pJ' is supported, got {self.unit!r}")
        object.__setattr__(self, "entries", MappingProxyType(clean))

    @classmethod
    def horowitz_45nm(cls) -> EnergyTable:
        """The default table (:data:`HOROWITZ_45NM`, source :data:`HOROWITZ_SOURCE`)."""
        return cls(dict(HOROWITZ_45NM), HOROWITZ_SOURCE)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyTable:
        """Build from ``{"source": str, "entries": {op: pJ}}`` (the :meth:`to_dict` layout)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data: expected a mapping, got {type(data).__name__}")
        missing = {"source", "entries"} - set(data)
        if missing:
            raise ValueError(
                f"data: expected keys 'source' and 'entries', missing {sorted(missing)}"
            )
        extra = set(data) - {"source", "entries", "unit"}
        if extra:
            raise ValueError(f"data: unknown keys {sorted(extra)} (allowed: source, entries, unit)")
        return cls(dict(data["entries"]), data["source"], data.get("unit", "pJ"))

    @classmethod
    def from_json(cls, path: str | Path) -> EnergyTable:
        """Read a JSON file with the :meth:`to_dict` layout."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"path: no energy table file at {p}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"path: {p} is not valid JSON ({err})") from err
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """``{"source": ..., "unit": "pJ", "entries": {...}}`` (JSON-serialisable)."""
        return {"source": self.source, "unit": self.unit, "entries": dict(self.entries)}

    def with_entries(self, *, note: str, **entries: float) -> EnergyTable:
        """A copy with entries added or replaced; ``note`` (required) is appended to the source.

        Args:
            note: what the new numbers are and where they come from (kept in :attr:`source`).
            **entries: op name -> pJ.
        """
        if not isinstance(note, str) or not note.strip():
            raise ValueError("note: say what the added energies are based on")
        if not entries:
            raise ValueError("entries: give at least one op=pJ")
        merged = {**self.entries, **entries}
        changed = ", ".join(f"{k} = {v} pJ" for k, v in entries.items())
        return EnergyTable(merged, f"{self.source} + user entries ({changed}): {note}", self.unit)

    def with_fp8_mult_proxy(self) -> EnergyTable:
        """A copy with ``fp8_mult := int8_mult``: a proxy assumption, not a measurement.

        Rationale: an e4m3/e5m2 multiplier needs a 4x4- or 3x3-bit significand multiplier, a
        4-5-bit exponent add and a rounding step; an 8x8-bit integer multiplier is a comparable
        circuit. Whether it is larger or smaller depends on the design; use your own number
        (:meth:`with_entries`) when you have one.
        """
        return self.with_entries(
            fp8_mult=self["int8_mult"],
            note="fp8_mult := int8_mult, a proxy assumption of paperbricks-lmul (no fp8 entry "
            "in the 45 nm table)",
        )

    def __getitem__(self, op: str) -> float:
        try:
            return self.entries[op]
        except KeyError:
            hint = ""
            if op.startswith("fp8"):
                hint = (
                    "; the 45 nm table has no fp8 costs: supply one with "
                    "table.with_entries(fp8_mult=..., note=...) or use "
                    "table.with_fp8_mult_proxy() (fp8_mult := int8_mult)"
                )
            raise KeyError(
                f"energy table has no entry {op!r} (has {sorted(self.entries)}){hint}"
            ) from None

    def __contains__(self, op: object) -> bool:
        return op in self.entries

    def to_markdown(self) -> str:
        """The table as a Markdown table followed by its source."""
        lines = ["| op | energy (pJ) |", "|---|---|"]
        lines += [f"| {k} | {v:g} |" for k, v in sorted(self.entries.items())]
        return "\n".join(lines) + f"\n\nSource: {self.source}"


@dataclass(frozen=True)
class EnergyEstimate:
    """The op counts and energy of one operation under one scheme.

    Attributes:
        what: the operation (``"elementwise n=..."``, ``"dot K=..."``, ``"matmul MxKxN"``).
        scheme: the product scheme (a key of :data:`SCHEMES`).
        accumulate: accumulator precision (key of :data:`ACCUMULATORS`), None for element-wise.
        n_products, n_accumulates: operation counts.
        product_op, accumulate_op: the table entries used.
        product_pj, accumulate_pj: energy per op (pJ).
        adds_per_product: integer adds counted per L-Mul product (1 for float schemes).
        total_pj: total energy (pJ).
    """

    what: str
    scheme: str
    accumulate: str | None
    n_products: int
    n_accumulates: int
    product_op: str
    accumulate_op: str | None
    product_pj: float
    accumulate_pj: float
    adds_per_product: int
    total_pj: float

    def saving_vs(self, other: EnergyEstimate) -> float:
        """Fractional energy saving of this estimate relative to ``other``: ``1 − E/E_other``."""
        if other.total_pj <= 0:
            raise ValueError(f"other: baseline energy must be > 0 pJ, got {other.total_pj}")
        return 1.0 - self.total_pj / other.total_pj

    def row(self) -> str:
        """A one-line summary."""
        acc = f" + {self.n_accumulates} x {self.accumulate_op}" if self.accumulate_op else ""
        per = f"{self.adds_per_product} x " if self.adds_per_product != 1 else ""
        return (
            f"{self.scheme:<11} {self.n_products} x {per}{self.product_op}{acc}"
            f" = {self.total_pj:.6g} pJ"
        )


def _check_count(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    return v


def _check_scheme(scheme: object) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {sorted(SCHEMES)}, got {scheme!r}")
    return scheme  # type: ignore[return-value]


def _table(table: EnergyTable | None) -> EnergyTable:
    if table is None:
        return EnergyTable.horowitz_45nm()
    if not isinstance(table, EnergyTable):
        raise TypeError(f"table: expected an EnergyTable or None, got {type(table).__name__}")
    return table


def _estimate(
    what: str,
    n_products: int,
    n_acc: int,
    scheme: str,
    accumulate: str | None,
    table: EnergyTable | None,
    adds_per_product: int,
) -> EnergyEstimate:
    scheme = _check_scheme(scheme)
    t = _table(table)
    _check_count("adds_per_product", adds_per_product)
    if adds_per_product != 1 and not scheme.startswith("lmul"):
        raise ValueError(
            f"adds_per_product: only meaningful for the lmul-* schemes, got {adds_per_product} "
            f"with scheme={scheme!r}"
        )
    prod_op = SCHEMES[scheme]
    prod_pj = t[prod_op] * adds_per_product
    acc_op, acc_pj = None, 0.0
    if accumulate is not None:
        if accumulate not in ACCUMULATORS:
            raise ValueError(
                f"accumulate: expected one of {sorted(ACCUMULATORS)}, got {accumulate!r}"
            )
        acc_op = ACCUMULATORS[accumulate]
        acc_pj = t[acc_op]
    return EnergyEstimate(
        what=what,
        scheme=scheme,
        accumulate=accumulate,
        n_products=n_products,
        n_accumulates=n_acc,
        product_op=prod_op,
        accumulate_op=acc_op,
        product_pj=prod_pj,
        accumulate_pj=acc_pj,
        adds_per_product=adds_per_product,
        total_pj=n_products * prod_pj + n_acc * acc_pj,
    )


def elementwise_energy(
    n: int, scheme: str, *, table: EnergyTable | None = None, adds_per_product: int = 1
) -> EnergyEstimate:
    """Energy of ``n`` independent products (``x * y`` element-wise) under ``scheme``.

    Args:
        n: number of products (>= 1).
        scheme: a key of :data:`SCHEMES` (``"fp32"``, ``"fp16"``, ``"fp8"``, ``"lmul-int32"``,
            ``"lmul-int16"``, ``"lmul-int8"``).
        table: the energy table; default :meth:`EnergyTable.horowitz_45nm`.
        adds_per_product: integer adds per L-Mul (default 1, the paper's count; 2 also counts
            the offset subtraction). Only for lmul-* schemes.

    Returns:
        :class:`EnergyEstimate` with ``n`` products and no accumulates.

    Examples:
        >>> from paperbricks.lmul.energy import elementwise_energy
        >>> elementwise_energy(1000, "fp16").total_pj, elementwise_energy(1000, "lmul-int16").total_pj
        (1100.0, 50.0)
    """
    n = _check_count("n", n)
    return _estimate(f"elementwise n={n}", n, 0, scheme, None, table, adds_per_product)


def dot_energy(
    K: int,
    scheme: str,
    *,
    accumulate: str = "fp32",
    table: EnergyTable | None = None,
    adds_per_product: int = 1,
) -> EnergyEstimate:
    """Energy of one length-``K`` dot product: K products and K accumulator adds (K MACs).

    Args:
        K: reduction length (>= 1).
        scheme: product scheme, a key of :data:`SCHEMES`.
        accumulate: accumulator precision, ``"fp32"`` (default, the paper's 78.3 % setting),
            ``"fp16"`` or ``"fp8"`` (needs an ``fp8_add`` entry you supply).
        table, adds_per_product: as for :func:`elementwise_energy`.

    Returns:
        :class:`EnergyEstimate`.
    """
    K = _check_count("K", K)
    return _estimate(f"dot K={K}", K, K, scheme, accumulate, table, adds_per_product)


def matmul_energy(
    M: int,
    K: int,
    N: int,
    scheme: str,
    *,
    accumulate: str = "fp32",
    table: EnergyTable | None = None,
    adds_per_product: int = 1,
) -> EnergyEstimate:
    """Energy of an (M, K) @ (K, N) matmul: M·N dot products of length K (M·K·N MACs).

    Args:
        M, K, N: matrix dimensions (each >= 1).
        scheme, accumulate, table, adds_per_product: as for :func:`dot_energy`.

    Returns:
        :class:`EnergyEstimate` with ``M·K·N`` products and as many accumulates.

    Examples:
        >>> from paperbricks.lmul.energy import matmul_energy
        >>> e = matmul_energy(64, 128, 32, "lmul-int32")
        >>> round(e.saving_vs(matmul_energy(64, 128, 32, "fp32")), 4)
        0.7826
    """
    M, K, N = (_check_count(n, v) for n, v in (("M", M), ("K", K), ("N", N)))
    macs = M * K * N
    return _estimate(f"matmul {M}x{K}x{N}", macs, macs, scheme, accumulate, table, adds_per_product)


def paper_percentages(table: EnergyTable | None = None) -> dict[str, float]:
    """The abstract's energy savings, reconstructed from the table (percent).

    - ``elementwise_fp16_vs_int16_add`` = 100·(1 − int16_add / fp16_mult) (95.5 with the default
      table: the abstract's "95 %");
    - ``elementwise_fp32_vs_int32_add`` = 100·(1 − int32_add / fp32_mult) (97.3);
    - ``dot_fp32_vs_lmul_int32_fp32_accumulate`` = 100·(1 − (int32_add + fp32_add) /
      (fp32_mult + fp32_add)) (78.3: the abstract's "80 %").

    Which of the two element-wise reconstructions the paper used is unverified (spec §9).
    """
    t = _table(table)
    ew16 = elementwise_energy(1, "lmul-int16", table=t).saving_vs(
        elementwise_energy(1, "fp16", table=t)
    )
    ew32 = elementwise_energy(1, "lmul-int32", table=t).saving_vs(
        elementwise_energy(1, "fp32", table=t)
    )
    dot = dot_energy(1, "lmul-int32", table=t).saving_vs(dot_energy(1, "fp32", table=t))
    return {
        "elementwise_fp16_vs_int16_add": 100 * ew16,
        "elementwise_fp32_vs_int32_add": 100 * ew32,
        "dot_fp32_vs_lmul_int32_fp32_accumulate": 100 * dot,
    }
