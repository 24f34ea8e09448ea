"""`paperbricks prefixquant ...`: the package's subcommands (registered as an entry point).

- ``info``: version and paper.
- ``find-prefix --model DIR --texts FILE [--eta 64 --nsamples 64 --seqlen 512 --seed 0
  --count-mode official --no-rotate --out prefix.json]``: rotate the fp model (as the pipeline
  does) and select the prefix tokens; prints (or writes) the ``PrefixSpec`` JSON.
- ``quantize --model DIR --preset W4A8KV4 --out DIR [--texts FILE | --synthetic] [--prefix
  prefix.json --no-prefix --epochs N --no-mse-init --real --nsamples --seqlen --seed
  --overwrite]``: the whole
  pipeline, then ``save_quantized`` (and the tokenizer) into ``--out``. Calibration text must be
  given: ``--texts``, or ``--synthetic`` for the package's synthetic smoke text (never implicit).
- ``eval-ppl --model DIR --texts FILE [--seqlen 2048 --max-windows N]``: perplexity over real
  tokens; ``DIR`` is a plain HF model directory or a ``save_quantized`` directory.
- ``bench [--device auto --full]``: static W8A8 vs fp matmul vs dynamic W8A8 (``bench.run``).

Models and tokenizers load from local directories only (``local_files_only=True``); errors
(missing paths, bad presets, missing calibration data, unsupported models) print one line on
stderr and return exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-prefixquant {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _fail(cmd: str, exc: BaseException) -> int:
    print(f"paperbricks prefixquant {cmd}: {exc}", file=sys.stderr)
    return 2


def _model_dir(path: str) -> Path:
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(
            f"--model: no such directory {path!r} (models load from local directories only)"
        )
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"--model: {path!r} has no config.json; not an HF model directory")
    return d


def _load_tokenizer(d: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"--model: cannot load a tokenizer from {str(d)!r} ({exc})"
        ) from exc


def _load_model(d: Path, device: str, dtype: str) -> Any:
    """A plain HF directory or a save_quantized directory (PrefixedCausalLM or model)."""
    from paperbricks.core_kernels.devices import resolve_device, resolve_dtype

    from .serialize import MANIFEST, load_quantized

    dev = resolve_device(device)
    if (d / MANIFEST).is_file():
        return load_quantized(d, device=dev)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(d), local_files_only=True, dtype=resolve_dtype(dtype)
    )
    return model.to(dev).eval()


def _texts(path: str) -> list[str]:
    from .data import read_texts

    return read_texts(path)


def _find_prefix(args: argparse.Namespace) -> int:
    try:
        from .prefix import select_prefix

        d = _model_dir(args.model)
        texts = _texts(args.texts)
        tok = _load_tokenizer(d)
        model = _load_model(d, args.device, args.dtype)
        if not args.no_rotate:
            from .rotation import rotate_model_

            rotate_model_(model, seed=args.seed)
        spec = select_prefix(
            model,
            tok,
            texts,
            eta=args.eta,
            num_samples=args.nsamples,
            seqlen=args.seqlen,
            count_mode=args.count_mode,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError, OSError) as exc:
        return _fail("find-prefix", exc)
    text = json.dumps(spec.to_dict(), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"prefix {spec.ids} ({spec.text!r}) written to {args.out}")
    else:
        print(text)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    try:
        from .config import PrefixQuantConfig
        from .quantize import quantize_
        from .serialize import save_quantized

        if args.texts and args.synthetic:
            raise ValueError("--texts, --synthetic: give one calibration source, not both")
        if not args.texts and not args.synthetic:
            raise ValueError(
                "--texts: calibration text is required (a local file); pass --synthetic to "
                "calibrate on the package's synthetic smoke text instead"
            )
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
            raise FileExistsError(f"--out: {args.out!r} exists and is not empty (use --overwrite)")
        d = _model_dir(args.model)
        overrides: dict[str, Any] = {"seed": args.seed}
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        if args.no_mse_init:
            overrides["mse_init"] = False
        config = PrefixQuantConfig.from_preset(args.preset, **overrides)
        if args.synthetic:
            from .data import synthetic_texts

            texts = synthetic_texts(max(64, args.nsamples), seed=args.seed)
        else:
            texts = _texts(args.texts)
        prefix: Any = None
        if args.no_prefix:
            prefix = "none"
        elif args.prefix:
            from .prefix import PrefixSpec

            prefix = PrefixSpec.from_dict(json.loads(Path(args.prefix).read_text()))
        tok = _load_tokenizer(d)
        model = _load_model(d, args.device, args.dtype)
        info = quantize_(
            model,
            config,
            texts,
            tokenizer=tok,
            prefix=prefix,
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            progress=not args.no_progress,
        )
        target = info.prefixed if info.prefixed is not None else model
        if args.real:
            from .real import to_real_

            to_real_(target)
        save_quantized(target, out, config=config, overwrite=args.overwrite)
        tok.save_pretrained(str(out))
    except (ValueError, TypeError, OSError) as exc:
        return _fail("quantize", exc)
    prefix_ids = None if info.prefix is None else info.prefix.ids
    print(
        json.dumps(
            {
                "out": str(out),
                "preset": args.preset,
                "real": bool(args.real),
                "prefix": prefix_ids,
                "seconds": {k: round(v, 3) for k, v in info.seconds.items()},
            }
        )
    )
    return 0


def _eval_ppl(args: argparse.Namespace) -> int:
    try:
        from .evaluate import eval_perplexity

        d = _model_dir(args.model)
        texts = _texts(args.texts)
        tok = _load_tokenizer(d)
        model = _load_model(d, args.device, args.dtype)
        res = eval_perplexity(
            model,
            texts,
            args.seqlen,
            tokenizer=tok,
            max_windows=args.max_windows,
            return_details=True,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError, OSError) as exc:
        return _fail("eval-ppl", exc)
    print(
        json.dumps(
            {
                "model": str(args.model),
                "ppl": float(res.ppl),
                "tokens": int(res.tokens),
                "windows": int(res.windows),
                "seqlen": args.seqlen,
            }
        )
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    try:
        rows = run(quick=not args.full, device=args.device)
    except (ValueError, RuntimeError) as exc:
        return _fail("bench", exc)
    for r in rows:
        meta = r.meta or {}
        print(
            f"{r.row()}  [{r.device}; rel.err static {meta.get('rel_err_static', float('nan')):.3g}]"
        )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda")
    p.add_argument("--dtype", default="float32", help="dtype of a plain HF model (default float32)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks prefixquant` parser."""
    sub = parser.add_subparsers(dest="prefixquant_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser("find-prefix", help="select the prefix (outlier) tokens of a local model")
    p.add_argument("--model", required=True, help="local HF model directory (with tokenizer)")
    p.add_argument("--texts", required=True, help="calibration text file or directory of *.txt")
    p.add_argument("--eta", type=float, default=64.0, help="outlier ratio threshold (default 64)")
    p.add_argument("--nsamples", type=int, default=64, help="calibration windows (default 64)")
    p.add_argument("--seqlen", type=int, default=512, help="window length (default 512)")
    p.add_argument("--seed", type=int, default=0, help="rotation and window seed (default 0)")
    p.add_argument("--count-mode", default="official", choices=("official", "minus_one"))
    p.add_argument("--no-rotate", action="store_true", help="select on the unrotated model")
    p.add_argument("--out", help="write the PrefixSpec JSON here (default: print it)")
    _common(p)
    p.set_defaults(func=_find_prefix)

    p = sub.add_parser("quantize", help="quantize a local model with PrefixQuant and save it")
    p.add_argument("--model", required=True, help="local HF model directory (with tokenizer)")
    p.add_argument("--preset", required=True, help="W4A4KV4 | W4A8KV4 | W8A8KV8")
    p.add_argument("--out", required=True, help="output directory (save_quantized format)")
    p.add_argument("--texts", help="calibration text file or directory of *.txt")
    p.add_argument("--synthetic", action="store_true", help="calibrate on synthetic smoke text")
    p.add_argument("--prefix", help="a PrefixSpec JSON from find-prefix (default: select it)")
    p.add_argument("--no-prefix", action="store_true", help="quantize without a prefix")
    p.add_argument("--epochs", type=int, help="block fine-tuning epochs (default: the preset's)")
    p.add_argument("--no-mse-init", action="store_true", help="skip the MSE clip initialisation")
    p.add_argument("--real", action="store_true", help="convert to integer kernels before saving")
    p.add_argument("--nsamples", type=int, default=64, help="calibration windows (default 64)")
    p.add_argument("--seqlen", type=int, default=512, help="window length (default 512)")
    p.add_argument("--seed", type=int, default=0, help="config seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    _common(p)
    p.set_defaults(func=_quantize)

    p = sub.add_parser("eval-ppl", help="perplexity of a local (quantized) model on a text file")
    p.add_argument("--model", required=True, help="HF model dir or save_quantized dir")
    p.add_argument("--texts", required=True, help="evaluation text file or directory of *.txt")
    p.add_argument("--seqlen", type=int, default=2048, help="window length (default 2048)")
    p.add_argument("--max-windows", type=int, help="evaluate at most this many windows")
    _common(p)
    p.set_defaults(func=_eval_ppl)

    p = sub.add_parser("bench", help="static W8A8 vs fp matmul vs dynamic per-token W8A8")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--full", action="store_true", help="realistic sizes (default: quick)")
    p.set_defaults(func=_bench)
