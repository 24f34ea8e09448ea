"""``paperbricks mir ...``: the package's subcommands (registered as an entry point).

- ``compute``: the MIR of a local HF vision-language model (any directory that
  ``AutoModelForImageTextToText`` and ``AutoProcessor`` load with ``local_files_only=True``) on a
  folder of images and a file of unrelated texts; prints the per-layer Fréchet distances and
  the total, writes JSON (refusing to overwrite ``--out`` unless ``--force``).
- ``synth-data``: writes a synthetic unrelated image/text set (PNG images + ``texts.txt``) for
  users without TextVQA / CNN-DailyMail at hand.
- ``tiny-model``: saves a randomly initialised tiny LLaVA and its processor, to try ``compute``
  without any download.
- ``info``: version and paper.

Only argparse is imported at module level; torch and transformers load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-mir {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _fail(msg: str) -> int:
    print(f"paperbricks mir: {msg}", file=sys.stderr)
    return 2


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--images: {root} is not a folder")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _compute(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        return _fail(f"--out {out} exists; pass --force to overwrite it")
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        return _fail(f"--model: {model_dir} is not a folder (a local HF checkpoint is expected)")
    from .data import read_texts

    try:
        images = list_images(args.images)
        texts = read_texts(args.texts)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    if not images:
        return _fail(f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {args.images}")
    num = args.num if args.num is not None else min(len(images), len(texts))
    if num < 1 or num > min(len(images), len(texts)):
        return _fail(
            f"--num: expected 1..{min(len(images), len(texts))} ({len(images)} images, "
            f"{len(texts)} texts), got {num}"
        )

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from paperbricks.core_kernels.devices import resolve_device, resolve_dtype

    from .compute import compute_mir

    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype)
    except ValueError as exc:
        return _fail(str(exc))
    print(f"loading {model_dir} on {device} ({dtype})", file=sys.stderr)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, local_files_only=True, dtype=dtype
    )
    model.to(device)
    with torch.inference_mode():
        result = compute_mir(
            model,
            processor,
            images[:num],
            texts[:num],
            num=num,
            template=args.template,
            method=args.method,
            device=device,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    print(f"{'layer':>5}  {'FD':>12}  {'scale':>10}")
    for layer, fd, s in zip(result.layers, result.per_layer_fd, result.scales, strict=True):
        print(f"{layer:>5}  {float(fd):>12.6g}  {float(s):>10.4g}")
    print(f"total FD {result.total_fd:.6g}; MIR = log10(total) = {result.mir:.4f}")
    payload = {
        "model": str(model_dir),
        "images": str(args.images),
        "texts": str(args.texts),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        **result.to_dict(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _synth_data(args: argparse.Namespace) -> int:
    from .data import write_synthetic_set

    if args.num < 1:
        return _fail(f"--num: expected an int >= 1, got {args.num}")
    try:
        paths, texts = write_synthetic_set(
            args.out, args.num, seed=args.seed, size=args.size, overwrite=args.force
        )
    except FileExistsError as exc:
        return _fail(f"{exc} (or pass --force)")
    except ValueError as exc:
        return _fail(str(exc))
    print(f"wrote {len(paths)} images to {paths[0].parent} and {len(paths)} texts to {texts}")
    print(
        f"next: paperbricks mir compute --model DIR --images {paths[0].parent} --texts {texts} "
        f"--num {len(paths)} --out mir.json"
    )
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from .tinyvlm import TinyVLMConfig, build_tiny_vlm

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        return _fail(f"--out {out} exists and is not empty; pass --force to write into it")
    model, processor = build_tiny_vlm(TinyVLMConfig(vision_tower=args.vision_tower), seed=args.seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"saved a random tiny LLaVA ({args.vision_tower}, {n} parameters) and its processor to {out}"
    )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its ``paperbricks mir`` parser."""
    sub = parser.add_subparsers(dest="mir_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "compute",
        help="MIR of a local HF vision-language model on images + unrelated texts",
        description="Exact MIR (log10 of the summed per-layer Fréchet distance between vision "
        "and text token hidden states, after text-centric scaling and 3-sigma outlier "
        "replacement) of a local model, streamed in two passes.",
    )
    p.add_argument("--model", required=True, help="local HF checkpoint folder (model + processor)")
    p.add_argument("--images", required=True, help="folder of images (sorted by file name)")
    p.add_argument(
        "--texts",
        required=True,
        help="texts file: one per line, a .json list of strings, or .jsonl with {'text': ...}",
    )
    p.add_argument(
        "--num", type=int, default=None, help="pairs to use (default: all; the paper uses 100)"
    )
    p.add_argument(
        "--method",
        default="eigh",
        choices=["eigh", "eigvals", "sqrtm", "official_fast"],
        help="Fréchet trace term (default eigh, exact; official_fast reproduces the official "
        "code's broken default and warns)",
    )
    p.add_argument(
        "--template", default="chat", choices=["chat", "vicuna_v1", "plain"], help="prompt layout"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="float32", help="model dtype: float32 (default), bf16, fp16")
    p.add_argument("--batch-size", type=int, default=8, help="samples per forward pass (default 8)")
    p.add_argument("--out", default="mir.json", help="JSON output (default mir.json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_compute)

    p = sub.add_parser(
        "synth-data", help="write synthetic unrelated image/text pairs for `mir compute`"
    )
    p.add_argument("--out", required=True, help="folder to write images/ and texts.txt into")
    p.add_argument("--num", type=int, default=100, help="number of pairs (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--force", action="store_true", help="replace an existing set in --out")
    p.set_defaults(func=_synth_data)

    p = sub.add_parser(
        "tiny-model", help="save a random tiny LLaVA + processor (to try `mir compute` offline)"
    )
    p.add_argument("--out", required=True, help="folder to save into")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--vision-tower", default="clip", choices=["clip", "siglip"])
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=_tiny_model)
