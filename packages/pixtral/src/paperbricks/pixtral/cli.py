"""`paperbricks pixtral ...`: the package's subcommands (registered as an entry point).

- ``info``: version and paper.
- ``tokens --width W --height H [--rounding mistral|hf]``: the image's patch grid and its number
  of decoder tokens ``n_h·(n_w + 1)``.
- ``eval --task vqa|anls|relaxed|mm-mt-bench --data DIR --endpoint URL --model NAME``: run the
  evaluation protocol against an OpenAI-compatible server (``--endpoint`` may also be a
  core-kernels backend spec such as ``hf:PATH`` or ``scripted:FILE``); the judge for
  ``mm-mt-bench`` is ``--judge-endpoint``/``--judge-model``. Scores are printed as JSON.
- ``bench [--full] [--device D]``: packed varlen attention vs dense-mask SDPA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-pixtral {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _tokens(args: argparse.Namespace) -> int:
    from .processing import image_grid, num_image_tokens

    try:
        kw = {"patch_size": args.patch_size, "max_image_size": args.max_image_size}
        n_h, n_w = image_grid(args.width, args.height, rounding=args.rounding, **kw)
        n = num_image_tokens(args.width, args.height, rounding=args.rounding, **kw)
    except (ValueError, TypeError) as exc:
        print(f"paperbricks pixtral tokens: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.width}x{args.height} ({args.rounding}): grid {n_h} rows x {n_w} cols, "
        f"{n} tokens ({n_h * n_w} [IMG], {n_h - 1} [IMG_BREAK], 1 [IMG_END])"
    )
    return 0


def _backend(endpoint: str, model: str | None) -> Any:
    from paperbricks.core_kernels.llm import OpenAICompatBackend, backend_from_spec

    if endpoint.startswith(("http://", "https://")):
        if not model:
            raise ValueError("--model: required with an http(s) endpoint")
        return OpenAICompatBackend(endpoint, model)
    return backend_from_spec(endpoint)


def _load_questions(data: Path) -> list[dict[str, Any]]:
    path = data / "questions.jsonl" if data.is_dir() else data
    if not path.is_file():
        raise ValueError(
            f"--data: expected a questions.jsonl file or a directory holding one, got {str(data)!r}"
        )
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for i, r in enumerate(rows):
        if "question" not in r or not ("answers" in r or "answer" in r):
            raise ValueError(f"{path}: row {i} needs 'question' and 'answer' or 'answers'")
    return rows


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import (
        MultiTurnRunner,
        format_prompt,
        load_conversations,
        score_dataset,
        user_content,
    )

    try:
        model = _backend(args.endpoint, args.model)
        data = Path(args.data)
        if args.task == "mm-mt-bench":
            if not args.judge_endpoint:
                raise ValueError("--judge-endpoint: required for --task mm-mt-bench")
            judge = _backend(args.judge_endpoint, args.judge_model or args.model)
            res = MultiTurnRunner(model, judge, images=args.images).run(load_conversations(data))
            out: dict[str, Any] = {
                "micro": res.micro,
                "macro": res.macro,
                "per_category": res.per_category,
                "per_turn": res.per_turn,
                "unparsed": res.unparsed,
                "n": len(res.records),
            }
        else:
            rows = _load_questions(data)
            prompt_task = (
                "multiple_choice" if args.task == "relaxed" and args.choices else args.task
            )
            replies = []
            root = data if data.is_dir() else data.parent
            for r in rows:
                question = format_prompt(prompt_task, r["question"])
                if r.get("image") and args.images == "parts":
                    image = root / r["image"]
                    if not image.is_file():
                        raise ValueError(f"--data: image {str(image)!r} does not exist")
                    content = user_content(question, [{"path": image}])
                else:
                    marker = f"<image: {r['image']}>\n" if r.get("image") else ""
                    content = marker + question
                replies.append(
                    model.chat(
                        [{"role": "user", "content": content}], max_tokens=args.max_tokens
                    ).text
                )
            targets = [r.get("answers", r.get("answer")) for r in rows]
            out = score_dataset(args.task, replies, targets)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"paperbricks pixtral eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"task": args.task, **out}, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    for r in run(quick=not args.full, device=args.device):
        m = r.meta or {}
        print(r.row())
        print(
            f"  peak memory ({m.get('peak_kind')}): {m.get('peak_bytes', 0) / 2**20:.2f} MiB "
            f"vs {m.get('baseline_peak_bytes', 0) / 2**20:.2f} MiB; attention FLOPs "
            f"{m.get('flops_packed', 0):.3g} vs {m.get('flops_dense', 0):.3g}; N={m.get('N')}"
        )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks pixtral` parser."""
    sub = parser.add_subparsers(dest="pixtral_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    p = sub.add_parser("tokens", help="decoder tokens of one image (n_h * (n_w + 1))")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument(
        "--rounding",
        choices=("mistral", "hf"),
        default="mistral",
        help="mistral-common (round half to even) or HF (floor) resize rounding",
    )
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--max-image-size", type=int, default=1024)
    p.set_defaults(func=_tokens)

    p = sub.add_parser("eval", help="score a model on the evaluation protocol")
    p.add_argument("--task", choices=("vqa", "anls", "relaxed", "mm-mt-bench"), required=True)
    p.add_argument(
        "--images",
        choices=("parts", "markers"),
        default="parts",
        help="send images as data-URL content parts (default; for VLM endpoints) or as text markers",
    )
    p.add_argument(
        "--data",
        required=True,
        help="questions.jsonl (vqa/anls/relaxed) or conversations.json(l) (mm-mt-bench), or their directory",
    )
    p.add_argument(
        "--endpoint",
        required=True,
        help="OpenAI-compatible base URL, or a backend spec (hf:PATH, scripted:FILE)",
    )
    p.add_argument("--model", default=None, help="served model name (http endpoints)")
    p.add_argument("--judge-endpoint", default=None)
    p.add_argument("--judge-model", default=None)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--choices", action="store_true", help="relaxed: multiple-choice prompt")
    p.set_defaults(func=_eval)

    p = sub.add_parser("bench", help="packed varlen attention vs dense-mask SDPA")
    p.add_argument("--full", action="store_true", help="larger sizes (default: quick)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_bench)
