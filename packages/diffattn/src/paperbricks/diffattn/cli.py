"""``paperbricks diffattn ...``: the package's subcommands (registered as an entry point).

- ``info``: version and paper.
- ``needle-bench``: train DIFF or the parameter-matched baseline on the multi-needle task for a
  few seeds, print accuracy by N and depth and the attention allocation, optionally save JSON.
- ``params``: parameter counts of a DIFF config and of its parameter-matched baseline.
- ``bench``: the fused-kernel benchmark (:mod:`paperbricks.diffattn.bench`), rows printed.
- ``convert``: a checkpoint directory between the official (unilm) and HF DiffLlama layouts, or
  from a transformers ``DiffLlamaForCausalLM`` directory into our model.

Heavy imports (torch, transformers) happen inside the handlers, so ``paperbricks --help`` stays
fast. Handlers print (this is a CLI) and return a process exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-diffattn {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 1,2,4, got {text!r}"
        ) from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected ints >= 1 like 1,2,4, got {text!r}")
    return vals


def _needle_bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .reproduce import FULL_BUDGET, QUICK_BUDGET, run_needle_seed

    base = FULL_BUDGET if args.full else QUICK_BUDGET
    changes: dict[str, Any] = {"seeds": args.seeds}
    for key in ("steps", "batch_size", "lr", "length", "hidden_size", "num_layers", "samples"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = value
    if args.heads is not None:
        changes["diff_heads"] = args.heads
    if args.needles is not None:
        changes["train_needles"] = args.needles
        changes["eval_needles"] = args.needles
    try:
        budget = replace(base, **changes)
    except ValueError as exc:
        print(f"paperbricks diffattn needle-bench: {exc}", file=sys.stderr)
        return 2
    if args.out is not None and Path(args.out).exists() and not args.force:
        print(
            f"paperbricks diffattn needle-bench: {args.out} exists; pass --force to overwrite",
            file=sys.stderr,
        )
        return 2
    runs = []
    for seed in range(args.seed, args.seed + budget.seeds):
        print(f"training {args.arch} seed {seed} ({budget.steps} steps) ...", flush=True)
        try:
            runs.append(run_needle_seed(args.arch, budget, seed, progress=not args.no_progress))
        except ValueError as exc:  # e.g. --length too short for the largest --needles
            print(f"paperbricks diffattn needle-bench: {exc}", file=sys.stderr)
            return 2
    print(_needle_table(args.arch, budget, runs))
    if args.out is not None:
        from dataclasses import asdict

        payload = {"arch": args.arch, "budget": asdict(budget), "runs": runs}
        Path(args.out).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


def _needle_table(arch: str, budget: Any, runs: list[dict[str, Any]]) -> str:
    """Accuracy by N (rows) and depth (columns), means over seeds; then the allocation."""

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    depths = [str(float(d)) for d in budget.eval_depths]
    head = " ".join(f"{'d=' + format(float(d), '.2f'):>7}" for d in budget.eval_depths)
    lines = [
        f"{arch}: {runs[0]['params']} parameters, {len(runs)} seed(s), {budget.steps} steps, "
        f"L={budget.length}, {budget.samples} samples per cell",
        f"{'N':<4} {head} {'mean':>7} {'answer':>7} {'noise':>7}",
    ]
    for n in budget.eval_needles:
        k = str(n)
        cells = " ".join(f"{mean([r['accuracy'][k][d] for r in runs]):7.3f}" for d in depths)
        acc = mean([r["accuracy_by_n"][k] for r in runs])
        ans = mean([r["answer_mass"][k] for r in runs])
        noi = mean([r["noise_mass"][k] for r in runs])
        lines.append(f"{n:<4} {cells} {acc:7.3f} {ans:7.3f} {noi:7.3f}")
    loss = mean([r["final_loss"] for r in runs])
    secs = sum(r["train_seconds"] for r in runs)
    lines.append(f"final train loss {loss:.4f}, training time {secs:.1f} s")
    return "\n".join(lines)


def _params(args: argparse.Namespace) -> int:
    import torch

    from .models import (
        BaselineTransformerConfig,
        BaselineTransformerForCausalLM,
        DiffTransformerConfig,
        DiffTransformerForCausalLM,
    )

    try:
        fields = json.loads(Path(args.config).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"paperbricks diffattn params: cannot read --config: {exc}", file=sys.stderr)
        return 2
    if not isinstance(fields, dict):
        print("paperbricks diffattn params: --config must hold a JSON object", file=sys.stderr)
        return 2
    for key in ("model_type", "transformers_version", "architectures"):
        fields.pop(key, None)
    try:
        diff_cfg = DiffTransformerConfig(**fields)
        base_cfg = BaselineTransformerConfig.from_diff_config(diff_cfg)
    except (TypeError, ValueError) as exc:
        print(f"paperbricks diffattn params: invalid config: {exc}", file=sys.stderr)
        return 2
    with torch.device("meta"):  # counts only: no memory, no init
        n_diff = sum(p.numel() for p in DiffTransformerForCausalLM(diff_cfg).parameters())
        n_base = sum(p.numel() for p in BaselineTransformerForCausalLM(base_cfg).parameters())
    d = diff_cfg.component_head_dim
    per_layer = (6 if diff_cfg.norm_affine else 4) * d
    expected = per_layer * diff_cfg.num_hidden_layers
    print(
        f"DIFF     ({diff_cfg.num_attention_heads} diff-heads of 2d={2 * d}): {n_diff:,} parameters"
    )
    print(
        f"baseline ({base_cfg.num_attention_heads} heads of d={base_cfg.attention_head_dim}):"
        f"      {n_base:,} parameters"
    )
    print(
        f"difference {n_diff - n_base:,} = {diff_cfg.num_hidden_layers} layers x {per_layer} "
        f"({'4d for λ + 2d for γ' if diff_cfg.norm_affine else '4d for λ'}, d={d}); "
        f"expected {expected:,}"
    )
    return 0 if n_diff - n_base == expected else 1


def _bench(args: argparse.Namespace) -> int:
    try:
        from .bench import run
    except ImportError as exc:
        print(
            f"paperbricks diffattn bench: the benchmark is not available ({exc})", file=sys.stderr
        )
        return 1
    results = run(quick=not args.full, device=args.device)
    for r in results:
        print(r.row())
    if args.json is not None:
        rows = [r.as_dict() for r in results]
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    prog = "paperbricks diffattn convert"
    if args.src_layout == args.dst_layout:
        print(f"{prog}: --from and --to are both {args.src_layout!r}", file=sys.stderr)
        return 2
    if not src.is_dir():
        print(f"{prog}: SRC {src} is not a checkpoint directory", file=sys.stderr)
        return 2
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not args.force:
        print(
            f"{prog}: DST {dst} exists and is not empty; pass --force to overwrite", file=sys.stderr
        )
        return 2
    from .convert import hf_to_unilm, load_hf_diffllama, unilm_to_hf
    from .models import DiffTransformerForCausalLM

    if args.src_layout == "diffllama":
        model = load_hf_diffllama(str(src))
        if args.dst_layout == "hf":
            model.save_pretrained(dst)
            print(f"wrote {dst} (layout 'hf', from transformers DiffLlama)")
            return 0
    else:
        model = DiffTransformerForCausalLM.from_pretrained(str(src))
        if model.config.layout != args.src_layout:
            print(
                f"{prog}: SRC has layout {model.config.layout!r}, not --from {args.src_layout!r}",
                file=sys.stderr,
            )
            return 2
    norm_affine = False if args.drop_gamma else None
    convert = unilm_to_hf if args.dst_layout == "hf" else hf_to_unilm
    kwargs: dict[str, Any] = {"norm_affine": norm_affine}
    if args.rope is not None:
        kwargs["rope_layout"] = args.rope
    state, cfg = convert(model.state_dict(), model.config, **kwargs)
    out = DiffTransformerForCausalLM(cfg)
    out.load_state_dict(state, strict=True)
    out.save_pretrained(dst)
    print(f"wrote {dst} (layout {cfg.layout!r}, RoPE {cfg.rope_layout!r}, γ {cfg.norm_affine})")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks diffattn` parser."""
    sub = parser.add_subparsers(dest="diffattn_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "needle-bench",
        help="train DIFF or the baseline on the multi-needle task; accuracy and allocation",
        description="Train tiny LMs on the token-level multi-needle task (one per seed) and "
        "report retrieval accuracy by N and depth and the attention allocation of the query on "
        "the answer span vs the filler. Defaults: the quick budget of the reproduction.",
    )
    p.add_argument("--arch", choices=["diff", "baseline"], required=True)
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (default 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps")
    p.add_argument(
        "--needles", type=_int_list, default=None, help="N to train/evaluate, e.g. 1,2,4"
    )
    p.add_argument("--length", type=int, default=None, help="tokens per sequence")
    p.add_argument("--hidden-size", type=int, default=None, help="d_model")
    p.add_argument("--heads", type=int, default=None, help="DIFF diff-heads h (baseline: 2h)")
    p.add_argument("--num-layers", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--samples", type=int, default=None, help="eval sequences per (N, depth)")
    p.add_argument("--full", action="store_true", help="start from the full budget")
    p.add_argument("--out", default=None, help="write the per-seed results to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_needle_bench)

    p = sub.add_parser("params", help="parameter counts of DIFF vs its parameter-matched baseline")
    p.add_argument(
        "--config", required=True, help="JSON file of DiffTransformerConfig fields (config.json)"
    )
    p.set_defaults(func=_params)

    p = sub.add_parser("bench", help="fused kernel vs two attention calls + RMSNorm")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--full", action="store_true", help="larger sizes")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.set_defaults(func=_bench)

    p = sub.add_parser(
        "convert",
        help="convert a checkpoint directory between weight layouts",
        description="SRC and DST are checkpoint directories of DiffTransformerForCausalLM "
        "(save_pretrained); --from diffllama reads a transformers DiffLlamaForCausalLM directory. "
        "DST is never overwritten without --force.",
    )
    p.add_argument("--from", dest="src_layout", choices=["unilm", "hf", "diffllama"], required=True)
    p.add_argument("--to", dest="dst_layout", choices=["unilm", "hf"], required=True)
    p.add_argument(
        "--rope",
        choices=["interleaved", "half"],
        default=None,
        help="RoPE layout of the result (default: half for hf, interleaved for unilm)",
    )
    p.add_argument("--drop-gamma", action="store_true", help="fold γ into W^O and drop it")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty DST")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.set_defaults(func=_convert)
