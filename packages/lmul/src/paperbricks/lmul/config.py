"""Configuration of L-Mul (arXiv 2410.00907) and the constants every module shares.

:class:`LMulConfig` is what users touch: how many mantissa bits the operands carry, which of the
two semantics (integer-adder ``"bits"`` or the paper's displayed formula ``"equation"``), how the
operands are rounded to that many bits, how products are accumulated, what the backward pass
does, and which parts of a model go through L-Mul. ``LMulConfig.matmul_kwargs()`` turns it into
the keyword arguments of :func:`paperbricks.lmul.ops.lmul_matmul`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paperbricks.core_kernels.float_bits import BF16, FP16, FP32, FloatFormat

__all__ = [
    "BACKWARDS",
    "CONTAINERS",
    "DEFAULT_CHUNK_SIZE",
    "IMPLS",
    "ROUNDINGS",
    "SEMANTICS",
    "TARGETS",
    "LMulConfig",
]

#: ``"bits"``: integer add of the (exponent‖mantissa) fields, the mantissa carry bumps the
#: exponent (what an integer adder does). ``"equation"``: the displayed formula
#: ``(1 + x_m + y_m + 2^−l)·2^(x_e+y_e)`` with no carry.
SEMANTICS = ("bits", "equation")
#: How operands are brought to k mantissa bits: truncation (the l(m) table's assumption) or RNE.
ROUNDINGS = ("trunc", "rne")
#: ``"exact"``: straight-through gradients of the exact product; ``"lmul"``: gradient matmuls
#: also through L-Mul.
BACKWARDS = ("exact", "lmul")
IMPLS = ("auto", "reference", "triton")
#: Which parts of a model :func:`apply_lmul_` replaces.
TARGETS = ("attention", "linear")
#: The container dtypes L-Mul runs in and their formats (values and results live in these).
CONTAINERS: dict[torch.dtype, FloatFormat] = {
    torch.float32: FP32,
    torch.bfloat16: BF16,
    torch.float16: FP16,
}
#: Default bound on the number of L-Mul products the matmul reference materialises at once.
DEFAULT_CHUNK_SIZE = 1 << 22


@dataclass(frozen=True)
class LMulConfig:
    """How L-Mul is applied (to attention products and/or linear layers).

    Args:
        mantissa_bits: k, the operands' mantissa width (1..container's: 23 fp32, 7 bf16, 10 fp16);
            ``None`` = the container's own. Default 3 (the paper's fp8-like setting).
        semantics: ``"bits"`` (default, integer-adder carry) or ``"equation"``.
        operand_rounding: ``"trunc"`` (default; the l(m) table assumes it) or ``"rne"``.
        accumulate: ``torch.float32`` (default), ``torch.float64`` or a core-kernels
            :class:`FloatFormat` (every partial sum rounded to it).
        backward: ``"exact"`` (default, straight-through) or ``"lmul"``.
        targets: subset of ``("attention", "linear")``; default ``("attention",)``.
        lmul_scale: whether attention's 1/√d scaling is itself an L-Mul (default False: exact).
        impl: ``"auto"`` (default), ``"reference"`` or ``"triton"``.
        chunk_size: most products the matmul reference materialises at once.
        version: config schema version (for saved configs).

    Examples:
        >>> cfg = LMulConfig(mantissa_bits=4)
        >>> cfg.matmul_kwargs()["mantissa_bits"]
        4
    """

    mantissa_bits: int | None = 3  # k; l(k) follows from it (offset_bits)
    semantics: str = "bits"  # integer-adder behaviour, as hardware would do it
    operand_rounding: str = "trunc"  # the paper's l(m) schedule minimises error for truncation
    accumulate: torch.dtype | FloatFormat = torch.float32  # an ordinary fp32 add by default
    backward: str = "exact"  # straight-through: gradients of the exact product
    targets: tuple[str, ...] = ("attention",)  # the paper replaces attention's products
    lmul_scale: bool = False  # 1/sqrt(d) stays an exact multiply unless asked
    impl: str = "auto"  # Triton on CUDA, the torch reference elsewhere
    chunk_size: int = DEFAULT_CHUNK_SIZE  # memory bound of the matmul reference
    version: int = 1  # bump when fields change meaning

    def __post_init__(self) -> None:
        k = self.mantissa_bits
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 23):
            raise ValueError(f"mantissa_bits: expected None or an int in [1, 23], got {k!r}")
        _check_choice("semantics", self.semantics, SEMANTICS)
        _check_choice("operand_rounding", self.operand_rounding, ROUNDINGS)
        _check_choice("backward", self.backward, BACKWARDS)
        _check_choice("impl", self.impl, IMPLS)
        check_accumulate(self.accumulate)
        targets = self.targets
        if isinstance(targets, str) or not isinstance(targets, (tuple, list)):
            raise TypeError(f"targets: expected a tuple of names from {TARGETS}, got {targets!r}")
        bad = [t for t in targets if t not in TARGETS]
        if bad:
            raise ValueError(f"targets: expected names from {TARGETS}, got {bad!r}")
        object.__setattr__(self, "targets", tuple(targets))
        if not isinstance(self.lmul_scale, bool):
            raise TypeError(f"lmul_scale: expected a bool, got {self.lmul_scale!r}")
        cs = self.chunk_size
        if isinstance(cs, bool) or not isinstance(cs, int) or cs < 1:
            raise ValueError(f"chunk_size: expected an int >= 1, got {cs!r}")
        if self.version != 1:
            raise ValueError(f"version: this release reads config version 1, got {self.version!r}")

    def matmul_kwargs(self) -> dict[str, object]:
        """Keyword arguments for :func:`paperbricks.lmul.ops.lmul_matmul` / ``lmul_bmm``."""
        return {
            "mantissa_bits": self.mantissa_bits,
            "semantics": self.semantics,
            "operand_rounding": self.operand_rounding,
            "accumulate": self.accumulate,
            "backward": self.backward,
            "impl": self.impl,
            "chunk_size": self.chunk_size,
        }

    def lmul_kwargs(self) -> dict[str, object]:
        """Keyword arguments for the element-wise :func:`paperbricks.lmul.ops.lmul`."""
        return {
            "mantissa_bits": self.mantissa_bits,
            "semantics": self.semantics,
            "operand_rounding": self.operand_rounding,
            "impl": self.impl,
        }


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_accumulate(accumulate: object) -> torch.dtype | FloatFormat:
    """Validate an accumulation precision: torch.float32, torch.float64 or a FloatFormat."""
    if isinstance(accumulate, FloatFormat) or accumulate in (torch.float32, torch.float64):
        return accumulate  # type: ignore[return-value]
    raise ValueError(
        "accumulate: expected torch.float32, torch.float64 or a core-kernels FloatFormat "
        f"(e.g. E4M3FN), got {accumulate!r}"
    )
