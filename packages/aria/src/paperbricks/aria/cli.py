"""`paperbricks aria ...`: the package's subcommands (registered as an entry point).

- ``info``: version and paper.
- ``params CONFIG.json [--activated] [--json]``: analytic parameter counts of an Aria config (ours,
  an HF ``aria``/``aria_text`` config.json, or an official one with ``aria_moe_lm``).
- ``convert --from LAYOUT --to LAYOUT SRC DST``: checkpoint layout conversion
  (official / hf / hf4 / hf5 / per_expert; see :mod:`paperbricks.aria.convert`).
- ``bench-moe [--device D] [--full]``: grouped-GEMM MoE layer vs per-expert loop vs dense.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-aria {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def load_config(path: str | Path):
    """Our ``AriaConfig``/``AriaTextConfig`` from a config.json (ours, HF's or the official one)."""
    from .convert import convert_config
    from .models.configuration_aria import AriaConfig, AriaTextConfig

    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"CONFIG: expected a JSON object, got {type(data).__name__}")
    text = data.get("text_config", data)
    if isinstance(text, dict) and text.get("model_type") == "aria_moe_lm":
        data = convert_config(data, src_layout="official", dst_layout="hf")
        if "vision_config" in data:
            data["vision_config"].pop("model_type", None)
            data["text_config"].pop("model_type", None)
            data["model_type"] = AriaConfig.model_type
        else:
            data["model_type"] = "aria_text"
    data.pop("checkpoint_layout", None)
    if "text_config" in data:
        return AriaConfig.from_dict(data)
    return AriaTextConfig.from_dict(data)


def _params(args: argparse.Namespace) -> int:
    from .params import count_parameters

    try:
        cfg = load_config(args.config)
        full = count_parameters(cfg)
        act = count_parameters(cfg, activated=True)
    except (OSError, ValueError, TypeError) as exc:
        print(f"paperbricks aria params: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {"total": full.as_dict()}
        if args.activated:
            out["activated"] = act.as_dict()
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        ("language model", full.language_model),
        ("  embedding", full.embedding),
        ("  decoder", full.decoder),
        ("  lm_head", full.lm_head),
        ("vision encoder", full.vision),
        ("projector", full.projector),
        ("total", full.total),
    ]
    if args.activated:
        rows += [
            ("activated per text token (decoder, no embedding/head)", act.decoder),
            ("  + lm_head", act.decoder + act.lm_head),
            ("activated per visual token (decoder + ViT + projector)", act.per_visual_token),
        ]
    width = max(len(r[0]) for r in rows)
    for name, n in rows:
        print(f"{name:<{width}}  {n:>16,d}  ({n / 1e9:.2f}B)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    try:
        out = convert_checkpoint(
            args.src, args.dst, src_layout=args.src_layout, dst_layout=args.dst_layout
        )
    except (OSError, ValueError, TypeError) as exc:
        print(f"paperbricks aria convert: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.src_layout} -> {args.dst_layout})")
    return 0


def _bench_moe(args: argparse.Namespace) -> int:
    from .bench import run

    try:
        rows = run(quick=not args.full, device=args.device)
    except (ValueError, RuntimeError) as exc:
        print(f"paperbricks aria bench-moe: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        print(r.row())
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks aria` parser."""
    from .convert import LAYOUTS

    sub = parser.add_subparsers(dest="aria_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser("params", help="parameter counts of an Aria config.json")
    p.add_argument("config", metavar="CONFIG.json")
    p.add_argument("--activated", action="store_true", help="also per-token activated counts")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_params)

    p = sub.add_parser("convert", help="convert a checkpoint directory between layouts")
    p.add_argument("--from", dest="src_layout", choices=LAYOUTS, required=True)
    p.add_argument("--to", dest="dst_layout", choices=LAYOUTS, required=True)
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.set_defaults(func=_convert)

    p = sub.add_parser("bench-moe", help="grouped-GEMM MoE layer vs per-expert loop vs dense")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--full", action="store_true", help="larger token count (default: quick)")
    p.set_defaults(func=_bench_moe)
