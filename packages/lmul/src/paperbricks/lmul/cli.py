"""`paperbricks lmul ...`: the package's subcommands (registered as an entry point).

- ``info``: version and paper;
- ``error-table``: :func:`paperbricks.lmul.analysis.error_table` as a Markdown table;
- ``energy --shape M K N``: the energy table in use, the assumptions, and op-count energy
  estimates of an (M, K) @ (K, N) matmul under each scheme (:mod:`paperbricks.lmul.energy`);
- ``bench``: the package benchmark (:func:`paperbricks.lmul.bench.run`).

Heavy modules are imported inside the handlers, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-lmul {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _error_table(args: argparse.Namespace) -> int:
    from .analysis import error_table

    table = error_table(
        bits=tuple(args.bits),
        sources=tuple(args.source),
        semantics=tuple(args.semantics),
        roundings=tuple(args.rounding),
        baselines=tuple(args.baselines),
        in_fp8_range=not args.no_fp8_range,
        n=args.n,
        seed=args.seed,
    )
    md = (
        f"Relative error vs the exact float64 product; n = {args.n} pairs per source, "
        f"seed {args.seed}. L-Mul rows with range fp32 use e8m(k) operands; 'expected' is the "
        "exact mean under the log-uniform (normal) or uniform (uniform) significand law.\n\n"
        + table.to_markdown()
    )
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
        print(f"wrote {args.out}")
    return 0


_ENERGY_ASSUMPTIONS = (
    "op-count x per-op energy only: no data movement, register files or control; not a speed claim "
    "(the emulation in this package is slower than native multiplies)",
    "a length-K dot product = K multiply-accumulates (K products + K accumulator adds)",
    "L-Mul product = {adds} integer add(s) of the operand width (int32 for fp32 fields, int16 for "
    "fp16/bf16, int8 for fp8); sign XOR, offset constant and special-value logic not counted",
    "accumulation in {acc} for every scheme",
    "fp8 multiply: no entry in the 45 nm table; fp8 rows need --fp8-mult (your number, pJ)",
)


def _energy(args: argparse.Namespace) -> int:
    from .energy import SCHEMES, EnergyTable, matmul_energy

    table = EnergyTable.from_json(args.table) if args.table else EnergyTable.horowitz_45nm()
    if args.fp8_mult is not None:
        table = table.with_entries(fp8_mult=args.fp8_mult, note="given with --fp8-mult")
    M, K, N = args.shape
    print("Energy table (pJ per operation):\n")
    print(table.to_markdown())
    print("\nAssumptions:")
    for a in _ENERGY_ASSUMPTIONS:
        print("- " + a.format(adds=args.adds_per_product, acc=args.accumulate))
    print(f"\nEstimates for an ({M}, {K}) @ ({K}, {N}) matmul ({M * K * N} MACs):\n")
    print("| scheme | product op | energy (pJ) | vs fp32 |")
    print("|---|---|---|---|")
    base = matmul_energy(M, K, N, "fp32", accumulate=args.accumulate, table=table)
    skipped = []
    for scheme in SCHEMES:
        try:
            e = matmul_energy(
                M,
                K,
                N,
                scheme,
                accumulate=args.accumulate,
                table=table,
                adds_per_product=args.adds_per_product if scheme.startswith("lmul") else 1,
            )
        except KeyError as err:
            skipped.append(f"{scheme}: {err.args[0]}")
            continue
        change = 100 * (e.total_pj / base.total_pj - 1)
        print(f"| {scheme} | {e.product_op} | {e.total_pj:.6g} | {change:+.1f} % |")
    for s in skipped:
        print(f"\nskipped {s}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    for r in run(quick=not args.full, device=args.device):
        print(r.row())
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks lmul` parser."""
    sub = parser.add_subparsers(dest="lmul_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "error-table",
        help="mean/max relative error of L-Mul vs e4m3/e5m2 multiplication (Markdown)",
    )
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 7, 23], metavar="K")
    p.add_argument("--rounding", nargs="+", choices=["trunc", "rne"], default=["trunc", "rne"])
    p.add_argument(
        "--semantics", nargs="+", choices=["bits", "equation"], default=["bits", "equation"]
    )
    p.add_argument(
        "--source", nargs="+", choices=["normal", "uniform"], default=["normal", "uniform"]
    )
    p.add_argument("--baselines", nargs="*", choices=["e4m3", "e5m2"], default=["e4m3", "e5m2"])
    p.add_argument(
        "--no-fp8-range", action="store_true", help="leave out the L-Mul-inside-fp8-range rows"
    )
    p.add_argument("--n", type=int, default=1 << 20, help="operand pairs per source (default 2^20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="FILE.md", help="also write the table here")
    p.set_defaults(func=_error_table)

    p = sub.add_parser(
        "energy", help="op-count energy estimate of a matmul under fp32/fp16/fp8/L-Mul schemes"
    )
    p.add_argument("--shape", type=int, nargs=3, required=True, metavar=("M", "K", "N"))
    p.add_argument(
        "--table", default=None, metavar="FILE.json", help='{"source": ..., "entries": {op: pJ}}'
    )
    p.add_argument("--accumulate", choices=["fp32", "fp16", "fp8"], default="fp32")
    p.add_argument("--fp8-mult", type=float, default=None, metavar="PJ", help="fp8 multiply energy")
    p.add_argument(
        "--adds-per-product",
        type=int,
        default=1,
        help="integer adds per L-Mul (1 = the paper's count; 2 also counts the offset)",
    )
    p.set_defaults(func=_energy)

    p = sub.add_parser("bench", help="time the L-Mul kernels against the torch emulation")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--full", action="store_true", help="larger sizes")
    p.set_defaults(func=_bench)
