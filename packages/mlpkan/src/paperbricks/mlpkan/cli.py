"""``paperbricks mlpkan ...``: the package's subcommands (registered as an entry point).

- ``train-function``: fit an MLP, KAN or MLP-KAN regressor (parameter-matched, see
  :func:`paperbricks.mlpkan.train.matched_regressor_configs`) to one Feynman-style equation and
  print train/test RMSE (and, for MLP-KAN, the routing mass sent to KAN experts);
- ``train-vision``: train a tiny MLP-, KAN- or MLP-KAN-feed-forward ViT on scikit-learn's
  bundled digits or the procedural shapes and print test accuracy;
- ``list-equations``: the built-in equations with their variables and ranges;
- ``bench``: the fused basis-GEMM kernel against eager FasterKAN
  (:func:`paperbricks.mlpkan.bench.run`);
- ``info``: version and paper.

``--out DIR`` of the two training commands saves the model with ``save_pretrained``
(safetensors) and a ``metrics.json``; an existing non-empty folder is refused unless
``--force``. Only argparse is imported at module level; torch loads when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODELS = ("mlp", "kan", "mlp-kan")


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-mlpkan {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _fail(msg: str) -> int:
    print(f"paperbricks mlpkan: {msg}", file=sys.stderr)
    return 2


def _check_out(out: str | None, force: bool) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        raise FileExistsError(
            f"--out {path} exists and is not empty; pass --force to write into it"
        )
    return path


def _save(path: Path | None, model, metrics: dict) -> None:
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {path} (model.safetensors, config.json, metrics.json)")


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        v = getattr(args, name.replace("-", "_"))
        if v < 1:
            raise ValueError(f"--{name}: expected an int >= 1, got {v}")


def _train_function(args: argparse.Namespace) -> int:
    from .data import EQUATIONS, feynman_split

    if args.equation not in EQUATIONS:
        return _fail(
            f"--equation: unknown {args.equation!r}; see `paperbricks mlpkan list-equations`"
        )
    try:
        _positive(args, "steps", "n-train", "n-test", "hidden-size")
        out = _check_out(args.out, args.force)
    except (ValueError, FileExistsError) as exc:
        return _fail(str(exc))
    from .models import MLPKANRegressor
    from .models.configuration_mlpkan import count_parameters
    from .train import build_seeded, fit_regressor, matched_regressor_configs, routing_share

    data = feynman_split(args.equation, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    cfg = matched_regressor_configs(data.equation.n_inputs, hidden_size=args.hidden_size)[
        args.model
    ]
    model = build_seeded(lambda: MLPKANRegressor(cfg), args.seed)
    print(
        f"{args.equation} ({data.equation.formula}): {args.model} regressor, "
        f"{count_parameters(cfg)} parameters, {args.steps} full-batch steps, seed {args.seed}"
    )
    res = fit_regressor(
        model, data, steps=args.steps, lr=args.lr, seed=args.seed, progress=not args.no_progress
    )
    print(
        f"train RMSE {res.train_rmse:.4g}  test RMSE {res.test_rmse:.4g}  "
        f"test RMSE / std(y) {res.test_nrmse:.4g}  ({res.seconds:.1f} s)"
    )
    metrics = {
        "equation": args.equation,
        "model": args.model,
        "parameters": count_parameters(cfg),
        "steps": args.steps,
        "seed": args.seed,
        "train_rmse": res.train_rmse,
        "test_rmse": res.test_rmse,
        "test_nrmse": res.test_nrmse,
    }
    if args.model == "mlp-kan":
        share = routing_share(model, (data.x_test - res.x_mean) / res.x_std)
        metrics["kan_share"] = share
        print(f"routing mass to KAN experts on the test inputs: {share:.3f}")
    _save(out, model, metrics)
    return 0


def _train_vision(args: argparse.Namespace) -> int:
    try:
        _positive(args, "steps", "batch-size", "hidden-size", "depth")
        out = _check_out(args.out, args.force)
    except (ValueError, FileExistsError) as exc:
        return _fail(str(exc))
    from .data import load_digits_split, shapes_split
    from .models import MLPKANForImageClassification
    from .models.configuration_mlpkan import count_parameters
    from .train import build_seeded, fit_classifier, matched_vit_configs, routing_share

    if args.dataset == "digits":
        data = load_digits_split(seed=args.seed)
    else:
        data = shapes_split(n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    cfg = matched_vit_configs(
        image_size=data.image_size,
        num_labels=data.num_classes,
        hidden_size=args.hidden_size,
        depth=args.depth,
    )[args.model]
    model = build_seeded(lambda: MLPKANForImageClassification(cfg), args.seed)
    print(
        f"{args.dataset}: {args.model}-FFN ViT, {count_parameters(cfg)} parameters, "
        f"{len(data.y_train)} train / {len(data.y_test)} test images, {args.steps} steps"
    )
    res = fit_classifier(
        model,
        data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(
        f"train accuracy {res.train_accuracy:.4f}  test accuracy {res.test_accuracy:.4f}  "
        f"({res.seconds:.1f} s)"
    )
    metrics = {
        "dataset": args.dataset,
        "model": args.model,
        "parameters": count_parameters(cfg),
        "steps": args.steps,
        "seed": args.seed,
        "train_accuracy": res.train_accuracy,
        "test_accuracy": res.test_accuracy,
    }
    if args.model == "mlp-kan":
        share = routing_share(model, data.x_test)
        metrics["kan_share"] = share
        print(f"routing mass to KAN experts on the test images: {share:.3f}")
    _save(out, model, metrics)
    return 0


def _list_equations(args: argparse.Namespace) -> int:
    from .data import list_equations

    for eq in list_equations():
        ranges = ", ".join(f"{v.name} ∈ [{v.low:g}, {v.high:g}]" for v in eq.variables)
        print(f"{eq.name:<9} {eq.n_inputs}  {eq.formula}")
        print(f"{'':<12}{eq.description}; {ranges}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    for r in run(quick=not args.full, device=args.device):
        print(r.row(), flush=True)
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its ``paperbricks mlpkan`` parser."""
    sub = parser.add_subparsers(dest="mlpkan_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "train-function",
        help="fit an MLP / KAN / MLP-KAN regressor to a Feynman-style equation",
        description="Fit a parameter-matched regressor (one token per sample, one residual "
        "feed-forward layer) to seeded samples of a built-in equation; full-batch AdamW.",
    )
    p.add_argument("--equation", required=True, help="equation name, e.g. I.6.2 (list-equations)")
    p.add_argument(
        "--model", choices=MODELS, default="mlp-kan", help="feed-forward (default mlp-kan)"
    )
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    p.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default 1e-2)")
    p.add_argument("--hidden-size", type=int, default=8, help="token width d (default 8)")
    p.add_argument("--n-train", type=int, default=1000, help="training points (default 1000)")
    p.add_argument("--n-test", type=int, default=1000, help="test points (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, init and training")
    p.add_argument("--out", default=None, help="folder for the model and metrics.json")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train_function)

    p = sub.add_parser(
        "train-vision",
        help="train a tiny MLP / KAN / MLP-KAN ViT on digits or procedural shapes",
        description="Train a parameter-matched tiny ViT (patch 2 on 8x8 digits, patch 4 on "
        "16x16 shapes) with AdamW on random mini-batches; print test accuracy.",
    )
    p.add_argument("--dataset", choices=("digits", "shapes"), default="digits")
    p.add_argument(
        "--model", choices=MODELS, default="mlp-kan", help="feed-forward (default mlp-kan)"
    )
    p.add_argument("--steps", type=int, default=400, help="optimiser steps (default 400)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--hidden-size", type=int, default=32, help="ViT width d (default 32)")
    p.add_argument("--depth", type=int, default=2, help="ViT blocks (default 2)")
    p.add_argument("--n-train", type=int, default=2000, help="shapes: training images")
    p.add_argument("--n-test", type=int, default=500, help="shapes: test images")
    p.add_argument("--seed", type=int, default=0, help="seed of data split, init and training")
    p.add_argument("--out", default=None, help="folder for the model and metrics.json")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train_vision)

    p = sub.add_parser("list-equations", help="the built-in Feynman-style equations")
    p.set_defaults(func=_list_equations)

    p = sub.add_parser(
        "bench", help="fused basis-GEMM KAN kernel vs eager FasterKAN (forward+backward)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--full", action="store_true", help="larger sizes")
    p.set_defaults(func=_bench)
