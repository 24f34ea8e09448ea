"""Error analysis of L-Mul (arXiv 2410.00907, precision analysis): measured tables, exact expectation.

The paper's precision claim is that L-Mul with a k-bit mantissa is about as precise as an fp8
multiplication: k = 4 comparable to e4m3, k = 3 better than e5m2. This module measures that
claim directly, against the exact float64 product of the original operands:

- :func:`error_table`: mean and max relative error of L-Mul for several mantissa widths, both
  semantics and both operand roundings (operands with an fp32-range exponent, i.e. ``e8m(k)``),
  of L-Mul *inside* the real e4m3/e5m2 ranges (separate rows, spec §3), and of real e4m3/e5m2
  multiplication (operands and result rounded to nearest-even with each format's range,
  subnormals and overflow rule, bit-identical to torch's ``float8_e4m3fn``/``float8_e5m2`` casts),
  over N(0,1), U(−1, 1) or user-supplied operands.
- :func:`expected_relative_error`: the same mean for the fp32-range rows computed exactly, with
  no sampling, under a uniform or a log-uniform (scale-invariant, "Benford") significand law.
- :func:`plot_error_histograms`: the distributions of the relative errors (PNG).

What differs from the obvious baseline: the fp8 rows honour the formats' real range (subnormals,
saturation/overflow), so they are what an fp8 multiplier does, not a k-bit-mantissa stand-in; and
every L-Mul row states its operand rounding, since the paper's l(m) schedule is only optimal for
truncated operands (spec §2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paperbricks.core_kernels.float_bits import E4M3FN, E5M2, FloatFormat, round_to

__all__ = [
    "BASELINES",
    "MAX_ENUMERATION_BITS",
    "ErrorRow",
    "ErrorTable",
    "error_table",
    "expected_relative_error",
    "plot_error_histograms",
]

logger = logging.getLogger(__name__)

#: Largest k for which :func:`expected_relative_error` enumerates the 2^k x 2^k grid (16.7 M cells).
MAX_ENUMERATION_BITS = 12
#: fp8 baselines: name -> (format, ``saturate`` flag that matches torch's cast of that format).
BASELINES: dict[str, tuple[FloatFormat, bool]] = {"e4m3": (E4M3FN, True), "e5m2": (E5M2, False)}
#: L-Mul inside a real fp8 range: name -> (format, mantissa bits).
_IN_RANGE = {"e4m3": (E4M3FN, 3), "e5m2": (E5M2, 2)}
_SEMANTICS = ("bits", "equation")
_ROUNDINGS = ("trunc", "rne")
_LAWS = ("loguniform", "uniform")
#: The law that matches each built-in operand source (N(0,1) significands are close to
#: log-uniform; U(−1, 1) significands are exactly uniform on [1, 2)).
_SOURCE_LAW = {"normal": "loguniform", "uniform": "uniform"}


def _offset_bits(m: int) -> int:
    from .ops import offset_bits

    return offset_bits(m)


# ------------------------------------------------------------------------------------------------
# Exact expectation
# ------------------------------------------------------------------------------------------------


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def _grid(k: int, rounding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells of one operand's significand 1+u, u in [0, 1), after rounding to k bits.

    Returns (s0, s1, a, scale): the cell is ln(1+u) in [s0, s1); the rounded operand is
    scale·(1 + a) with a on the k-bit grid (scale 2 when RNE rounds up to the next binade).
    """
    n = 1 << k
    i = np.arange(n + (rounding == "rne"), dtype=np.float64)
    if rounding == "trunc":
        lo, hi = i / n, (i + 1) / n
        a, scale = i / n, np.ones_like(i)
    else:
        lo, hi = np.maximum((i - 0.5) / n, 0.0), np.minimum((i + 0.5) / n, 1.0)
        top = i == n
        a = np.where(top, 0.0, i / n)
        scale = np.where(top, 2.0, 1.0)
    return np.log1p(lo), np.log1p(hi), a, scale


def expected_relative_error(
    m: int,
    *,
    semantics: str = "bits",
    operand_rounding: str = "trunc",
    law: str = "loguniform",
    offset_bits: int | None = None,
) -> float:
    """Exact mean relative error ``E|L-Mul(x̂, ŷ) − x·y| / |x·y|`` of k-bit L-Mul, no sampling.

    The operands' significands ``x = 1 + u``, ``y = 1 + v`` are independent and continuous on
    [1, 2) (signs and exponents do not change a relative error while the result stays in range).
    ``law="loguniform"``: ``log2 x`` uniform (density ``1/(x ln 2)``, the scale-invariant law that
    N(0,1) and most real data follow closely); ``law="uniform"``: ``x`` uniform (the law of
    U(−1, 1) operands). Each operand is rounded to ``m`` mantissa bits (``x̂``; truncation or RNE,
    RNE may round up to 2), L-Mul'd with offset ``2^−l`` and compared with the exact product of
    the *unrounded* operands, so operand rounding is part of the error.

    Integration scheme (exact up to float64 rounding): the rounding cells form a grid; on the
    cell pair (i, j) the L-Mul value ``P_ij`` is a constant, so the mean is a sum over the
    ``2^m x 2^m`` (``(2^m+1)^2`` for RNE) cell pairs of ``∫∫_cell |P/(xy) − 1| dμ``. In
    ``s = ln x, t = ln y`` both laws make the integrand a function of ``w = s + t`` only:
    ``|P e^−w − 1| / ln(2)^2`` (log-uniform) and ``|P − e^w|`` (uniform, after ``dx dy =
    e^(s+t) ds dt``). For a function f of s + t, ``∫∫_rect f = G(s1+t1) − G(s1+t0) − G(s0+t1) +
    G(s0+t0)`` with ``G'' = f``; the closed-form second antiderivative is written with
    ``expm1`` so cells of width 2^−12 lose no precision, and the kink of ``|·|`` at
    ``w* = ln P`` is handled exactly by subtracting twice the second antiderivative of the
    signed integrand beyond ``w*`` (a C² correction that vanishes to second order at ``w*``).

    Args:
        m: operand mantissa bits k, 1 ≤ m ≤ :data:`MAX_ENUMERATION_BITS` (12). For wider
            mantissas use :func:`error_table` (sampling).
        semantics: ``"bits"`` (carry into the exponent: ``2^(e+1)·S`` when ``1 ≤ S < 2``, and
            ``2^(e+2)·(S − 1)`` when the offset pushes ``S`` to ``[2, 2 + 2^−l)``, possible for
            k ≥ 5) or ``"equation"`` (``2^e·(1 + S)`` always).
        operand_rounding: ``"trunc"`` (default) or ``"rne"``.
        law: ``"loguniform"`` (default) or ``"uniform"``.
        offset_bits: l, the offset ``2^−l``; default the paper's ``l(m)`` (:func:`offset_bits`).

    Returns:
        The mean relative error as a Python float (e.g. 0.048 for 4.8 %).

    Examples:
        >>> from paperbricks.lmul.analysis import expected_relative_error
        >>> round(expected_relative_error(3), 4), round(expected_relative_error(3, offset_bits=4), 4)
        (0.0482, 0.078)
    """
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_ENUMERATION_BITS:
        raise ValueError(
            f"m: expected an int in [1, {MAX_ENUMERATION_BITS}] (the grid is enumerated), got "
            f"{m!r}; use error_table for wider mantissas"
        )
    _check_choice("semantics", semantics, _SEMANTICS)
    _check_choice("operand_rounding", operand_rounding, _ROUNDINGS)
    _check_choice("law", law, _LAWS)
    if offset_bits is None:
        offset_bits = _offset_bits(m)
    elif isinstance(offset_bits, bool) or not isinstance(offset_bits, int) or offset_bits < 1:
        raise ValueError(f"offset_bits: expected an int >= 1 or None, got {offset_bits!r}")
    s0, s1, a, scale = _grid(m, operand_rounding)
    ds = s1 - s0
    off = 2.0**-offset_bits
    total = 0.0
    rows = max(1, (1 << 20) // len(a))  # bound the cell-pair block to ~1 M entries
    for r in range(0, len(a), rows):
        sl = slice(r, r + rows)
        S = a[sl, None] + a[None, :] + off  # (R, n) mantissa sum with the offset
        if semantics == "bits":  # the field carry bumps the exponent: once, or twice if S >= 2
            val = np.where(S < 1.0, 1.0 + S, np.where(S < 2.0, 2.0 * S, 4.0 * (S - 1.0)))
        else:  # the displayed formula: 1 + S, no carry
            val = 1.0 + S
        P = val * scale[sl, None] * scale[None, :]  # L-Mul value on the cell pair
        w0 = s0[sl, None] + s0[None, :]
        w1 = s1[sl, None] + s1[None, :]
        dx, dy = ds[sl, None], ds[None, :]
        wstar = np.log(P)
        if law == "loguniform":
            signed = P * np.exp(-w0) * np.expm1(-dx) * np.expm1(-dy) - dx * dy

            def H(w: np.ndarray, wstar: np.ndarray = wstar) -> np.ndarray:
                d = np.maximum(w - wstar, 0.0)
                return np.expm1(-d) + d - 0.5 * d * d

        else:
            signed = P * dx * dy - np.exp(w0) * np.expm1(dx) * np.expm1(dy)

            def H(w: np.ndarray, wstar: np.ndarray = wstar, P: np.ndarray = P) -> np.ndarray:
                d = np.maximum(w - wstar, 0.0)
                return -P * (np.expm1(d) - d - 0.5 * d * d)

        s0r, s1r = s0[sl, None], s1[sl, None]
        s0c, s1c = s0[None, :], s1[None, :]
        straddle = (w0 < wstar) & (w1 > wstar)
        corr = np.zeros_like(signed)
        if straddle.any():
            corr = H(s1r + s1c) - H(s1r + s0c) - H(s0r + s1c) + H(s0r + s0c)
            corr = np.where(straddle, corr, 0.0)
        cell = np.where(w0 >= wstar, -signed, np.where(straddle, signed - 2.0 * corr, signed))
        total += float(cell.sum())
    norm = math.log(2.0) ** 2 if law == "loguniform" else 1.0
    return total / norm


# ------------------------------------------------------------------------------------------------
# Measured tables
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRow:
    """One row of :class:`ErrorTable`.

    Attributes:
        source: operand distribution (``"normal"``, ``"uniform"`` or a user name).
        method: ``"lmul"``, ``"e4m3"`` or ``"e5m2"`` (fp8 multiplication).
        mantissa_bits: operand mantissa bits (``None`` for the fp8 baselines).
        offset_bits: L-Mul's l (``None`` for the baselines).
        semantics: ``"bits"``/``"equation"`` (``None`` for the baselines).
        rounding: operand rounding: ``"trunc"``/``"rne"``, ``"none"`` at 23 bits (the fp32
            operands themselves), ``"rne"`` for the baselines.
        range: exponent range the operands and result live in: ``"fp32"`` (``e8m(k)``),
            ``"E4M3FN"`` or ``"E5M2"``.
        n: number of operand pairs compared (pairs with an exact product of 0 are left out).
        mean_rel_error, max_rel_error: over those pairs.
        expected: :func:`expected_relative_error` under the source's law (log-uniform for
            N(0,1), uniform for U(−1, 1)); ``None`` where it does not apply.
    """

    source: str
    method: str
    mantissa_bits: int | None
    offset_bits: int | None
    semantics: str | None
    rounding: str
    range: str
    n: int
    mean_rel_error: float
    max_rel_error: float
    expected: float | None = None

    @property
    def label(self) -> str:
        """Short name, e.g. ``L-Mul k=3 l=3 bits trunc`` or ``e4m3 mult``."""
        if self.method != "lmul":
            return f"{self.method} mult"
        rng = "" if self.range == "fp32" else f" in {self.range} range"
        return (
            f"L-Mul k={self.mantissa_bits} l={self.offset_bits} {self.semantics} "
            f"{self.rounding}{rng}"
        )


@dataclass
class ErrorTable:
    """Rows of measured relative errors, plus (optionally) the per-pair errors for plotting.

    Attributes:
        rows: the :class:`ErrorRow` list, in the order they were computed.
        samples: ``(source, label) -> float64 tensor`` of per-pair relative errors, filled when
            :func:`error_table` ran with ``keep_samples=True``.
        meta: how the table was made (n, seed, sources).
    """

    rows: list[ErrorRow]
    samples: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def select(self, **where: Any) -> list[ErrorRow]:
        """Rows whose attributes equal every ``where`` item, e.g. ``select(method="e4m3")``."""
        bad = set(where) - set(ErrorRow.__dataclass_fields__)
        if bad:
            raise ValueError(f"where: unknown ErrorRow fields {sorted(bad)}")
        return [r for r in self.rows if all(getattr(r, k) == v for k, v in where.items())]

    def get(self, **where: Any) -> ErrorRow:
        """The single row matching ``where``; ValueError if none or several match."""
        rows = self.select(**where)
        if len(rows) != 1:
            raise ValueError(f"where={where}: expected exactly one row, found {len(rows)}")
        return rows[0]

    def to_markdown(self) -> str:
        """A Markdown table (relative errors in percent)."""
        head = (
            "| source | method | k | l | semantics | operand rounding | range | n "
            "| mean rel. err. | max rel. err. | expected (exact) |"
        )
        lines = [head, "|" + "---|" * 11]

        def pct(v: float | None) -> str:
            return "" if v is None else f"{100 * v:.3f} %"

        for r in self.rows:
            cells = [
                r.source,
                "L-Mul" if r.method == "lmul" else f"{r.method} mult",
                "" if r.mantissa_bits is None else str(r.mantissa_bits),
                "" if r.offset_bits is None else str(r.offset_bits),
                r.semantics or "",
                r.rounding,
                r.range,
                str(r.n),
                pct(r.mean_rel_error),
                pct(r.max_rel_error),
                pct(r.expected),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _operands(
    sources: Sequence[Any] | Mapping[str, Any], n: int, seed: int
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Resolve ``sources`` to (name, x, y) float32 pairs of 1-D tensors."""
    items: list[tuple[str, Any]]
    if isinstance(sources, Mapping):
        items = list(sources.items())
    elif isinstance(sources, str | torch.Tensor):
        items = [(None, sources)]  # type: ignore[list-item]
    else:
        items = [(None, s) for s in sources]
    out = []
    for idx, (name, src) in enumerate(items):
        g = torch.Generator().manual_seed(seed + 7919 * idx)
        if isinstance(src, str):
            if src == "normal":
                x = torch.randn(n, generator=g)
                y = torch.randn(n, generator=g)
            elif src == "uniform":
                x = torch.rand(n, generator=g) * 2 - 1
                y = torch.rand(n, generator=g) * 2 - 1
            else:
                raise ValueError(
                    f"sources: expected 'normal', 'uniform', a tensor or an (x, y) pair of "
                    f"tensors, got the string {src!r}"
                )
            out.append((name or src, x, y))
            continue
        if isinstance(src, torch.Tensor):
            t = _check_user_tensor(src, f"sources[{name or idx}]").flatten()
            x, y = t, t[torch.randperm(t.numel(), generator=g)]
        elif isinstance(src, tuple) and len(src) == 2:
            x = _check_user_tensor(src[0], f"sources[{name or idx}][0]")
            y = _check_user_tensor(src[1], f"sources[{name or idx}][1]")
            try:
                x, y = torch.broadcast_tensors(x, y)
            except RuntimeError as err:
                raise ValueError(
                    f"sources[{name or idx}]: x and y must broadcast, got shapes "
                    f"{tuple(x.shape)} and {tuple(y.shape)}"
                ) from err
            x, y = x.flatten(), y.flatten()
        else:
            raise TypeError(
                f"sources[{name or idx}]: expected 'normal', 'uniform', a tensor or an (x, y) "
                f"pair of tensors, got {type(src).__name__}"
            )
        out.append((name or f"user{idx}", x, y))
    return out


def _check_user_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        got = f"{t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name}: expected a floating-point tensor, got {got}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor")
    t = t.detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: operands must be finite (found NaN or Inf)")
    return t


def _rel_err(out: torch.Tensor, exact: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return ((out.double() - exact).abs() / exact.abs())[keep]


def _fp8_mult(x: torch.Tensor, y: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """fp8 multiplication with torch's own casts: RNE operands, exact product, RNE result.

    The product of two fp8 values (at most 4 significant bits each, exponents within
    [-18, 16]) is exact in float32, so one cast of it is a single correct rounding.
    """
    dt = fmt.torch_dtype
    xq, yq = x.to(dt).float(), y.to(dt).float()
    return (xq * yq).to(dt).float()


def _lmul_in_range(
    x: torch.Tensor,
    y: torch.Tensor,
    fmt: FloatFormat,
    k: int,
    semantics: str,
    rounding: str,
    impl: str,
) -> torch.Tensor:
    """L-Mul of operands rounded into ``fmt`` with the package's special-value policy.

    Operands: rounded to ``fmt`` with ``rounding``, subnormals flushed (policy), overflow
    saturated to ±max. The fp32-container L-Mul of two k-bit values is exact (spec §2), then the
    result is mapped into ``fmt``'s range: below the smallest normal (field sum ≤ C) → ±0,
    above the largest finite value → ±max for finite formats, ±Inf for IEEE-style formats.
    """
    from .ops import lmul

    xq = round_to(x, fmt, rounding, "flush", True, impl="reference")
    yq = round_to(y, fmt, rounding, "flush", True, impl="reference")
    z = lmul(xq, yq, mantissa_bits=k, semantics=semantics, operand_rounding=rounding, impl=impl)
    mag = z.abs()
    big = fmt.max_value if fmt.finite else math.inf
    z = torch.where(mag > fmt.max_value, torch.copysign(torch.full_like(z, big), z), z)
    return torch.where(mag < fmt.min_normal, torch.copysign(torch.zeros_like(z), z), z)


def error_table(
    bits: Sequence[int] = (2, 3, 4, 5, 7, 23),
    sources: Sequence[Any] | Mapping[str, Any] = ("normal", "uniform"),
    *,
    semantics: Sequence[str] = ("bits", "equation"),
    roundings: Sequence[str] = ("trunc", "rne"),
    baselines: Sequence[str] = ("e4m3", "e5m2"),
    in_fp8_range: bool = True,
    n: int = 1 << 20,
    seed: int = 0,
    expected: bool = True,
    keep_samples: bool = False,
    impl: str = "auto",
    device: str | torch.device = "cpu",
) -> ErrorTable:
    """Mean and max relative error of L-Mul and of fp8 multiplication against the exact product.

    Every row compares with the float64 product of the float32 operands (exact). Rows:

    - L-Mul with operands rounded to k mantissa bits (``e8m(k)``: fp32 exponent range), for each
      k in ``bits`` x ``semantics`` x ``roundings``, with the paper's offset l(k). At k = 23 (the
      float32 container) no rounding happens: one row per semantics with rounding ``"none"``.
    - with ``in_fp8_range``: L-Mul inside each baseline's real range (k = 3 in E4M3FN, k = 2 in
      E5M2; operands rounded into the format with subnormals flushed, result flushed below the
      smallest normal and saturated above the largest finite value: ±448 for E4M3FN, ±Inf for
      E5M2), for each semantics x rounding.
    - each baseline in ``baselines``: ``"e4m3"``/``"e5m2"`` multiplication, i.e. operands rounded
      to nearest-even into the format (range, subnormals, saturation exactly as torch's
      ``float8_e4m3fn``/``float8_e5m2`` casts), exact product, product rounded the same way.

    Args:
        bits: operand mantissa widths, each in 1..23. Default ``(2, 3, 4, 5, 7, 23)``.
        sources: operand distributions: ``"normal"`` (x, y ~ N(0,1) i.i.d.), ``"uniform"``
            (U(−1, 1)), a float tensor (its elements paired with a seeded permutation of
            themselves), an ``(x, y)`` pair of broadcastable float tensors, or a mapping
            name -> any of these. User tensors are cast to float32 and must be finite.
        semantics: subset of ``("bits", "equation")``.
        roundings: subset of ``("trunc", "rne")``.
        baselines: subset of ``("e4m3", "e5m2")``.
        in_fp8_range: add the L-Mul-inside-fp8-range rows for the chosen baselines.
        n: pairs drawn per built-in source (default 2^20 ≈ 10^6).
        seed: seed of the private generators (each source gets its own stream).
        expected: add :func:`expected_relative_error` for the fp32-range L-Mul rows of the
            built-in sources (k ≤ 12).
        keep_samples: keep the per-pair relative errors in ``ErrorTable.samples`` (for
            :func:`plot_error_histograms`).
        impl: passed to :func:`paperbricks.lmul.ops.lmul`.
        device: where the L-Mul rows are computed (``"cpu"`` default, ``"cuda"``: the Triton
            kernel under ``impl="auto"``, bit-identical to the CPU reference); operands are
            drawn on the CPU and the statistics are computed there.

    Returns:
        :class:`ErrorTable`; ``to_markdown()`` renders it.

    Examples:
        >>> from paperbricks.lmul.analysis import error_table
        >>> t = error_table(bits=(3,), sources=("normal",), semantics=("bits",),
        ...                 roundings=("trunc",), n=100_000)
        >>> t.get(method="lmul", range="fp32").mean_rel_error < t.get(method="e5m2").mean_rel_error
        True
    """
    from paperbricks.core_kernels.devices import resolve_device

    from .ops import lmul

    dev = resolve_device(device)
    bits = tuple(bits)
    for k in bits:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 23:
            raise ValueError(f"bits: expected ints in [1, 23], got {bits!r}")
    for name, vals, choices in (
        ("semantics", semantics, _SEMANTICS),
        ("roundings", roundings, _ROUNDINGS),
        ("baselines", baselines, tuple(BASELINES)),
    ):
        if isinstance(vals, str):
            raise TypeError(f"{name}: expected a sequence of strings, got the string {vals!r}")
        for v in vals:
            _check_choice(name, v, choices)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")

    table = ErrorTable(rows=[], meta={"n": n, "seed": seed})
    expected_cache: dict[tuple[int, str, str, str], float] = {}
    for src, x, y in _operands(sources, n, seed):
        exact = x.double() * y.double()
        keep = exact != 0
        xd, yd = x.to(dev), y.to(dev)
        m = int(keep.sum())
        if m == 0:
            raise ValueError(f"sources[{src}]: every exact product is zero")

        def add(row_kw: dict[str, Any], out: torch.Tensor, src: str = src) -> None:
            err = _rel_err(out, exact, keep)  # noqa: B023 - evaluated immediately
            row = ErrorRow(
                source=src,
                n=m,  # noqa: B023
                mean_rel_error=float(err.mean()),
                max_rel_error=float(err.max()),
                **row_kw,
            )
            table.rows.append(row)
            if keep_samples:
                table.samples[(src, row.label)] = err

        for k in bits:
            l_k = _offset_bits(k)
            for sem in semantics:
                for rnd in roundings if k < 23 else ("none",):
                    z = lmul(
                        xd,
                        yd,
                        mantissa_bits=k,
                        semantics=sem,
                        operand_rounding="trunc" if rnd == "none" else rnd,
                        impl=impl,
                    ).cpu()
                    exp_val = None
                    law = _SOURCE_LAW.get(src) if isinstance(src, str) else None
                    if expected and law and k <= MAX_ENUMERATION_BITS and rnd != "none":
                        key = (k, sem, rnd, law)
                        if key not in expected_cache:
                            expected_cache[key] = expected_relative_error(
                                k, semantics=sem, operand_rounding=rnd, law=law
                            )
                        exp_val = expected_cache[key]
                    add(
                        dict(
                            method="lmul",
                            mantissa_bits=k,
                            offset_bits=l_k,
                            semantics=sem,
                            rounding=rnd,
                            range="fp32",
                            expected=exp_val,
                        ),
                        z,
                    )
        for base in baselines:
            fmt = BASELINES[base][0]
            if in_fp8_range:
                fmt_r, k = _IN_RANGE[base]
                for sem in semantics:
                    for rnd in roundings:
                        z = _lmul_in_range(xd, yd, fmt_r, k, sem, rnd, impl).cpu()
                        add(
                            dict(
                                method="lmul",
                                mantissa_bits=k,
                                offset_bits=_offset_bits(k),
                                semantics=sem,
                                rounding=rnd,
                                range=fmt_r.name,
                            ),
                            z,
                        )
            add(
                dict(
                    method=base,
                    mantissa_bits=None,
                    offset_bits=None,
                    semantics=None,
                    rounding="rne",
                    range=fmt.name,
                ),
                _fp8_mult(x, y, fmt),
            )
    logger.info("error_table: %d rows", len(table.rows))
    return table


def plot_error_histograms(
    table: ErrorTable,
    path: str | Path,
    *,
    source: str = "normal",
    labels: Sequence[str] | None = None,
) -> Path:
    """Histogram of log10 relative error per row of ``table`` for one source, saved as PNG.

    Args:
        table: an :class:`ErrorTable` made with ``keep_samples=True``.
        path: output PNG path.
        source: which operand source to draw.
        labels: which rows (by :attr:`ErrorRow.label`); default all fp32-range ``bits``/``trunc``
            L-Mul rows plus the fp8 baselines.

    Returns:
        The path written.
    """
    from paperbricks.core_kernels.repro import new_figure

    if not table.samples:
        raise ValueError(
            "table: no samples kept; build it with error_table(..., keep_samples=True)"
        )
    if labels is None:
        labels = [
            r.label
            for r in table.select(source=source)
            if r.method != "lmul"
            or (r.range == "fp32" and r.semantics == "bits" and r.rounding in ("trunc", "none"))
        ]
    missing = [lb for lb in labels if (source, lb) not in table.samples]
    if missing:
        raise ValueError(f"labels: no samples for {missing} (source {source!r})")
    fig = new_figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    edges = np.linspace(-5, 0.5, 89)  # errors below 1e-5 are lumped into the first bin
    for lb in labels:
        err = table.samples[(source, lb)].clamp_min(1e-5).log10().numpy()
        ax.hist(err, bins=edges, histtype="step", density=True, label=lb)
    ax.set_xlabel("log10 relative error vs exact product")
    ax.set_ylabel("density")
    ax.set_title(f"L-Mul and fp8 multiplication errors ({source} operands)")
    ax.legend(fontsize=6, loc="upper left")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    return p
