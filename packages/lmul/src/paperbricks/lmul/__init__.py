"""paperbricks.lmul: Addition is All You Need for Energy-efficient Language Models (arXiv:2410.00907).

L-Mul replaces a floating-point multiply by one integer add of the operands' exponent-and-mantissa
fields (plus a constant offset ``2^−l(m)`` standing in for the dropped mantissa cross term).
This package is a bit-exact emulator of it:

- ops: :func:`lmul` (element-wise), :func:`lmul_matmul` / :func:`lmul_bmm`, :func:`offset_bits`,
  :func:`lmul_constant`, :func:`lmul_codes` (on real fp8/fp16 codes), :class:`LMulConfig`;
- drop-ins: :class:`LMulLinear`, :func:`apply_lmul_`, :func:`lmul_attention`,
  :func:`register_lmul_attention` (transformers ``attn_implementation="lmul"``),
  :class:`LMulAttnProcessor` (diffusers, optional extra);
- analysis: :func:`error_table`, :func:`expected_relative_error`;
- energy: :class:`EnergyTable`, :func:`elementwise_energy`, :func:`dot_energy`,
  :func:`matmul_energy`, :func:`paper_percentages`.

Importing the package imports neither triton, transformers nor diffusers, and does not touch CUDA.
"""

from importlib.metadata import PackageNotFoundError, version

from .analysis import ErrorRow, ErrorTable, error_table, expected_relative_error
from .config import LMulConfig
from .diffusers_processor import LMulAttnProcessor
from .energy import (
    EnergyEstimate,
    EnergyTable,
    dot_energy,
    elementwise_energy,
    matmul_energy,
    paper_percentages,
)
from .hf import register_lmul_attention, set_lmul_attention
from .modules import LMulLinear, apply_lmul_, lmul_attention
from .ops import lmul, lmul_bmm, lmul_codes, lmul_constant, lmul_matmul, offset_bits

try:
    __version__ = version("paperbricks-lmul")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "Addition is All You Need for Energy-efficient Language Models",
    "arxiv": "2410.00907",
}

__all__ = [
    "PAPER",
    "EnergyEstimate",
    "EnergyTable",
    "ErrorRow",
    "ErrorTable",
    "LMulAttnProcessor",
    "LMulConfig",
    "LMulLinear",
    "__version__",
    "apply_lmul_",
    "dot_energy",
    "elementwise_energy",
    "error_table",
    "expected_relative_error",
    "lmul",
    "lmul_attention",
    "lmul_bmm",
    "lmul_codes",
    "lmul_constant",
    "lmul_matmul",
    "matmul_energy",
    "offset_bits",
    "paper_percentages",
    "register_lmul_attention",
    "set_lmul_attention",
]
