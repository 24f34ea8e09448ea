"""Pixtral's evaluation protocol (arXiv:2410.07073 §4 and the mistral-evals code): metrics, prompts,
and an MM-MT-Bench-style multi-turn runner.

- :func:`vqa_match`: VQAv2 accuracy ``min(1, #refs equal to the prediction / 3)`` after
  normalisation (lower case, punctuation and articles removed).
- :func:`anls`: DocVQA's Average Normalised Levenshtein Similarity, ``1 − edit/max(len)``, with a
  ``threshold`` below which the score is 0 (mistral-evals uses 0; the DocVQA custom is 0.5).
- :func:`relaxed_correctness`: ChartQA-style; numbers within 5 % relative error (percent ↔ decimal
  cross-checked), single-letter targets against the prediction's first letter, else normalised
  exact match.
- :func:`parse_explicit`: the explicit-prompt parser (last ``answer:``, first non-empty line after
  it, markdown stripped); :func:`parse_anywhere`: the generous fallback. Scores from both parses
  are reported separately (the spec's pitfall), never mixed.
- :data:`PROMPTS`: answer-format instructions in our own words.
- :class:`MultiTurnRunner`: each user turn is one interaction, with earlier turns and their
  **reference** answers as context; the judge (any chat backend) rates it 1–10 from ``[[x]]``.

Difference from the obvious baseline (exact string match): flexible parsing, so a model is not
penalised for formatting. Images are validated and sent to the model as OpenAI-style
``image_url`` content parts (``data:`` URLs), or described as ``<image: name W×H>`` markers for
text-only backends (see docs/evaluation.md).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperbricks.core_kernels.llm import content_text

__all__ = [
    "JUDGE_SYSTEM_PROMPT",
    "PROMPTS",
    "MultiTurnResult",
    "MultiTurnRunner",
    "anls",
    "format_prompt",
    "load_conversations",
    "normalize_answer",
    "parse_anywhere",
    "parse_explicit",
    "parse_judge_score",
    "parse_number",
    "relaxed_correctness",
    "score_dataset",
    "vqa_match",
]

logger = logging.getLogger(__name__)

_EXPLICIT_RULES = (
    "Work through the question step by step, then finish with one line of the form "
    "'Final Answer: <answer>'. The answer must be a single word, phrase or number; write ratios as "
    "decimals, answer yes/no questions with Yes or No, leave out units, use '%' for percentages "
    "and copy labels from the figure exactly."
)

#: Prompt templates (our wording). ``{question}`` is filled in by :func:`format_prompt`.
PROMPTS: dict[str, str] = {
    "vqa": "{question}\nReply with a single word or short phrase.",
    "anls": "{question}\nReply with the exact text from the document that answers the question.",
    "relaxed": "{question}\n" + _EXPLICIT_RULES,
    "multiple_choice": "{question}\n"
    + _EXPLICIT_RULES.replace(
        "a single word, phrase or number", "the letter of the correct option"
    ),
}

JUDGE_SYSTEM_PROMPT = (
    "You grade an AI assistant's reply to the last user message of a conversation about one or "
    "more images. A reference reply is given. Judge helpfulness, correctness, relevance and level "
    "of detail against it, explain briefly, then give a rating from 1 to 10 written exactly as "
    "[[rating]], for example [[6]]."
)

_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s%.\-]")


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected str, got {type(value).__name__}")
    return value


def _check_refs(refs: object) -> list[str]:
    if isinstance(refs, str):
        return [refs]
    if not isinstance(refs, Sequence) or not refs:
        raise ValueError(f"references: expected a non-empty str or sequence of str, got {refs!r}")
    return [_check_str(f"references[{i}]", r) for i, r in enumerate(refs)]


def normalize_answer(text: str) -> str:
    """Lower case, drop markdown/punctuation (keeping ``% . -`` inside numbers), articles, spaces.

    Examples:
        >>> normalize_answer("**The** Cat!")
        'cat'
    """
    t = _check_str("text", text).lower().replace(",", "").replace("$", "")
    t = _PUNCT.sub(" ", t)
    words = [w.strip(".-") or w for w in t.split() if w not in _ARTICLES]
    return " ".join(w for w in words if w)


def parse_number(text: str) -> float | None:
    """A number written as ``1,234``, ``-3.5``, ``12%`` or ``$7``; None if ``text`` is not one.

    Percent forms are returned as written (``"12%"`` → 12.0); :func:`relaxed_correctness` also
    tries the /100 form.

    Examples:
        >>> parse_number("1,234.5%"), parse_number("abc")
        (1234.5, None)
    """
    t = _check_str("text", text).strip().strip("*_` ").replace(",", "").replace("$", "")
    t = t.rstrip(".").rstrip("%").strip()
    try:
        return float(t)
    except ValueError:
        return None


def parse_explicit(response: str) -> str | None:
    """The explicit-prompt parser: text after the **last** ``answer:`` (case-insensitive).

    ``Answer**:**`` is normalised to ``Answer:``; the first non-empty line after the marker is
    kept and ``* _ [ ] ( )`` are stripped. Returns None when there is no marker (scored 0).

    Examples:
        >>> parse_explicit("Reasoning...\\n**Final Answer:** 42%")
        '42%'
    """
    t = _check_str("response", response).replace("**:**", ":").replace("**:", ":")
    idx = t.lower().rfind("answer:")
    if idx < 0:
        return None
    for line in t[idx + len("answer:") :].splitlines():
        cleaned = re.sub(r"[*_\[\]()]", "", line).strip()
        if cleaned:
            return cleaned
    return None


_ANYWHERE = re.compile(r"(?:\bis|\bwas|\bare|=)\s+([^\s.,;]+(?:\.\d+)?%?)", re.IGNORECASE)


def parse_anywhere(response: str) -> list[str]:
    """The generous fallback: candidate answers found anywhere in ``response``.

    Candidates: the explicit parse if any, every number (with/without commas or ``%``) and
    words after "is"/"was"/"are"/"=". mistral-evals calls this overly generous: report it
    separately from :func:`parse_explicit` scores.
    """
    t = _check_str("response", response)
    out: list[str] = []
    exp = parse_explicit(t)
    if exp is not None:
        out.append(exp)
    out += re.findall(r"-?\d[\d,]*(?:\.\d+)?%?", t)
    out += _ANYWHERE.findall(t)
    return out


def _letter(text: str) -> str | None:
    m = re.match(r"^\W*([A-Za-z])(?:\W|$)", text.strip())
    return m.group(1).upper() if m else None


def relaxed_correctness(prediction: str | None, target: str, *, tolerance: float = 0.05) -> float:
    """ChartQA relaxed correctness: 1.0 or 0.0.

    Numbers: correct when ``|p − t| <= tolerance·|t|``, also trying ``p/100`` and ``p·100`` so
    ``"45%"`` matches ``0.45``. A single-letter target (multiple choice) compares the first letter
    of the prediction (``"(B) 12"`` → B). Otherwise normalised exact match.

    Args:
        prediction: the parsed answer (None, e.g. no ``answer:`` line, scores 0).
        target: the reference answer.
        tolerance: relative tolerance for numbers. Default 0.05.

    Examples:
        >>> relaxed_correctness("104", "100"), relaxed_correctness("106", "100")
        (1.0, 0.0)
    """
    _check_str("target", target)
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance: expected a number >= 0, got {tolerance!r}")
    if prediction is None:
        return 0.0
    _check_str("prediction", prediction)
    tgt = target.strip()
    if len(tgt) == 1 and tgt.isalpha():
        return float(_letter(prediction) == tgt.upper())
    t_num, p_num = parse_number(tgt), parse_number(prediction)
    if t_num is not None and p_num is not None:
        t_pct, p_pct = tgt.rstrip(". ").endswith("%"), prediction.strip().rstrip(". ").endswith("%")
        cands = [p_num]
        if p_pct != t_pct:
            cands += [p_num / 100.0, p_num * 100.0]
        for p in cands:
            if t_num == 0.0:
                if p == 0.0:
                    return 1.0
            elif abs(p - t_num) <= tolerance * abs(t_num) * (1 + 1e-12):
                return 1.0
        return 0.0
    return float(normalize_answer(prediction) == normalize_answer(tgt))


def vqa_match(prediction: str | None, references: Sequence[str]) -> float:
    """VQAv2 accuracy ``min(1, n/3)``, n = references equal to the prediction after normalisation.

    Examples:
        >>> vqa_match("Two", ["2", "two", "three"])
        0.6666666666666666
    """
    refs = _check_refs(references)
    if prediction is None:
        return 0.0
    p = normalize_answer(_check_str("prediction", prediction))
    p = _NUMBER_WORDS.get(p, p)
    n = sum(_NUMBER_WORDS.get(normalize_answer(r), normalize_answer(r)) == p for r in refs)
    return min(1.0, n / 3.0)


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(prediction: str | None, references: Sequence[str], *, threshold: float = 0.5) -> float:
    """Average Normalised Levenshtein Similarity of one answer: best over references of
    ``s = 1 − lev(p, r)/max(|p|, |r|)`` (lower-cased, whitespace-collapsed), 0 when ``s < threshold``.

    Args:
        prediction: the answer (None scores 0).
        references: one or more accepted answers.
        threshold: cut-off (DocVQA custom 0.5; mistral-evals uses 0, i.e. no cut-off). Default 0.5.

    Examples:
        >>> anls("kitten", ["sitting"], threshold=0.0)  # 3 edits over 7 characters
        0.5714285714285714
    """
    refs = _check_refs(references)
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
    if prediction is None:
        return 0.0
    p = " ".join(_check_str("prediction", prediction).lower().split())
    best = 0.0
    for r in refs:
        r = " ".join(r.lower().split())
        n = max(len(p), len(r))
        s = 1.0 if n == 0 else 1.0 - _levenshtein(p, r) / n
        best = max(best, s if s >= threshold else 0.0)
    return best


def format_prompt(task: str, question: str) -> str:
    """The prompt for ``task`` (a key of :data:`PROMPTS`) around ``question``."""
    if task not in PROMPTS:
        raise ValueError(f"task: expected one of {sorted(PROMPTS)}, got {task!r}")
    return PROMPTS[task].format(question=_check_str("question", question))


def score_dataset(
    task: str, responses: Sequence[str], targets: Sequence[str | Sequence[str]]
) -> dict[str, float]:
    """Mean score of ``responses`` for ``task`` in ``{"vqa", "anls", "relaxed"}``, with the
    explicit parse and the anywhere-in-answer fallback reported separately.

    Returns:
        ``{"explicit": mean, "anywhere": mean, "n": count}``; "explicit" uses
        :func:`parse_explicit` (no marker → 0), "anywhere" takes the best over
        :func:`parse_anywhere` candidates plus the whole stripped response.
    """
    if len(responses) != len(targets):
        raise ValueError(
            f"responses/targets: expected equal lengths, got {len(responses)} and {len(targets)}"
        )
    fns = {
        "vqa": lambda p, t: vqa_match(p, t),
        "anls": lambda p, t: anls(p, t),
        "relaxed": lambda p, t: relaxed_correctness(p, t if isinstance(t, str) else t[0]),
    }
    if task not in fns:
        raise ValueError(f"task: expected one of {sorted(fns)}, got {task!r}")
    fn = fns[task]
    exp, any_ = [], []
    for r, t in zip(responses, targets, strict=True):
        exp.append(fn(parse_explicit(r), t))
        any_.append(max(fn(c, t) for c in [r.strip(), *parse_anywhere(r)]))
    n = len(responses)
    return {
        "explicit": sum(exp) / n if n else 0.0,
        "anywhere": sum(any_) / n if n else 0.0,
        "n": float(n),
    }


def parse_judge_score(reply: str) -> float | None:
    """The judge's rating from the last ``[[x]]`` in ``reply`` (1–10); None when absent/out of range.

    Examples:
        >>> parse_judge_score("Good answer. Rating: [[7.5]]")
        7.5
    """
    found = re.findall(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", _check_str("reply", reply))
    if not found:
        return None
    x = float(found[-1])
    return x if 1.0 <= x <= 10.0 else None


# ------------------------------------------------------------------------------ multi-turn runner
def _check_image(path: Path) -> tuple[int, int]:
    from PIL import Image

    if not path.is_file():
        raise ValueError(f"image: file {str(path)!r} does not exist")
    with Image.open(path) as im:
        w, h = im.size
        bands = len(im.getbands())
    if w < 1 or h < 1:
        raise ValueError(f"image {str(path)!r}: expected a non-empty image, got size {w}x{h}")
    if bands not in (1, 3, 4):
        raise ValueError(f"image {str(path)!r}: expected 1, 3 or 4 channels, got {bands}")
    return w, h


def load_conversations(path: str | Path) -> list[dict[str, Any]]:
    """Read conversations from a JSON list, a JSONL file, or a directory holding one of them
    (``conversations.jsonl`` / ``conversations.json``).

    Each conversation: ``{"id": str, "category": str, "images": [relative or absolute paths],
    "turns": [{"user": str, "reference": str}, ...]}``. Image paths are resolved against the
    file's directory and checked (exists, non-empty, 1/3/4 channels); each image gets ``size``.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("conversations.jsonl", "conversations.json"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise ValueError(f"path: directory {str(path)!r} has no conversations.json(l)")
    if not p.is_file():
        raise ValueError(f"path: expected a JSON/JSONL file or directory, got {str(path)!r}")
    text = p.read_text()
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = json.loads(text)
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"path {str(p)!r}: expected a non-empty list of conversations")
    out = []
    for k, c in enumerate(rows):
        turns = c.get("turns") if isinstance(c, Mapping) else None
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"conversation {k}: expected a non-empty 'turns' list")
        for t in turns:
            if not (isinstance(t, Mapping) and isinstance(t.get("user"), str)):
                raise ValueError(f"conversation {k}: each turn needs a 'user' string, got {t!r}")
        images = []
        for im in c.get("images", []):
            ip = Path(im) if Path(im).is_absolute() else p.parent / im
            images.append({"path": str(ip), "size": _check_image(ip)})
        out.append(
            {
                "id": str(c.get("id", k)),
                "category": str(c.get("category", "default")),
                "images": images,
                "turns": [{"user": t["user"], "reference": t.get("reference", "")} for t in turns],
            }
        )
    return out


@dataclass
class MultiTurnResult:
    """Scores of a multi-turn run.

    Attributes:
        micro: mean over all interactions (the headline number).
        per_category, per_turn: mean score per category / per turn index (1-based).
        macro: mean of the per-category means.
        records: one dict per interaction (id, category, turn, answer, judge reply, score).
        unparsed: interactions whose judge reply had no valid ``[[x]]`` (excluded from means).
    """

    micro: float
    per_category: dict[str, float]
    per_turn: dict[int, float]
    macro: float
    records: list[dict[str, Any]] = field(default_factory=list)
    unparsed: int = 0


IMAGE_MODES = ("parts", "markers")


def image_part(path: str | Path) -> dict[str, Any]:
    """An OpenAI-style ``image_url`` content part holding the image file as a ``data:`` URL."""
    import base64
    import mimetypes

    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def user_content(
    text: str, images: Sequence[Mapping[str, Any]], *, mode: str = "parts"
) -> str | list[dict[str, Any]]:
    """A user message's content with its images first, then the text.

    ``mode="parts"`` (default) gives OpenAI-style content parts, the images as ``data:`` URLs (for
    a vision-language model behind an OpenAI-compatible server, e.g. vLLM serving Pixtral);
    ``mode="markers"`` gives a plain string with ``<image: name WxH>`` lines, for text-only
    backends. ``images`` are dicts with ``path`` and ``size`` (as :func:`load_conversations`
    returns them).
    """
    if mode not in IMAGE_MODES:
        raise ValueError(f"mode: expected one of {IMAGE_MODES}, got {mode!r}")
    if mode == "markers" or not images:
        header = "".join(
            f"<image: {Path(im['path']).name} {im['size'][0]}x{im['size'][1]}>\n" for im in images
        )
        return header + text
    return [*(image_part(im["path"]) for im in images), {"type": "text", "text": text}]


class MultiTurnRunner:
    """MM-MT-Bench-style evaluation: model and judge are any core-kernels ``ChatBackend``.

    For turn t of a conversation the model sees the earlier user turns with their **reference**
    answers (not its own), then user turn t; the judge gets the conversation, the reference and
    the model's answer and replies with ``[[x]]``.

    Args:
        model: chat backend under test (temperature 0).
        judge: chat backend used as judge (temperature 0); it sees the conversation as text,
            images shown as ``<image>``.
        model_max_tokens: default 4096. judge_max_tokens: default 2048.
        images: ``"parts"`` (default) sends the images to the model as ``data:`` URL content
            parts on the first turn; ``"markers"`` describes them in text, for text-only backends
            (see :func:`user_content`).

    Examples:
        >>> from paperbricks.core_kernels.llm import ScriptedBackend
        >>> conv = [{"id": "a", "category": "chart", "images": [],
        ...          "turns": [{"user": "Max?", "reference": "7"}]}]
        >>> r = MultiTurnRunner(ScriptedBackend(["7"]), ScriptedBackend(["ok [[9]]"])).run(conv)
        >>> r.micro
        9.0
    """

    def __init__(
        self,
        model: Any,
        judge: Any,
        *,
        model_max_tokens: int = 4096,
        judge_max_tokens: int = 2048,
        images: str = "parts",
    ) -> None:
        for name, b in (("model", model), ("judge", judge)):
            if not callable(getattr(b, "chat", None)):
                raise TypeError(f"{name}: expected a ChatBackend, got {type(b).__name__}")
        if images not in IMAGE_MODES:
            raise ValueError(f"images: expected one of {IMAGE_MODES}, got {images!r}")
        self.model, self.judge = model, judge
        self.model_max_tokens, self.judge_max_tokens = model_max_tokens, judge_max_tokens
        self.images = images

    def run(self, conversations: Sequence[Mapping[str, Any]]) -> MultiTurnResult:
        """Evaluate every user turn of ``conversations`` (as returned by :func:`load_conversations`)."""
        records: list[dict[str, Any]] = []
        unparsed = 0
        for c in conversations:
            history: list[dict[str, Any]] = []
            for t, turn in enumerate(c["turns"], 1):
                images = c.get("images", []) if t == 1 else []
                user = user_content(turn["user"], images, mode=self.images)
                msgs = [*history, {"role": "user", "content": user}]
                answer = self.model.chat(msgs, max_tokens=self.model_max_tokens).text
                transcript = "\n".join(
                    f"{m['role'].upper()}: {content_text(m['content'])}" for m in msgs
                )
                judge_msgs = [
                    {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                    {
                        "role": "user",
                        "content": f"[Conversation]\n{transcript}\n\n[Reference reply]\n"
                        f"{turn['reference']}\n\n[Assistant reply]\n{answer}",
                    },
                ]
                reply = self.judge.chat(judge_msgs, max_tokens=self.judge_max_tokens).text
                score = parse_judge_score(reply)
                if score is None:
                    unparsed += 1
                    logger.warning("judge reply without a valid [[x]] for %s turn %d", c["id"], t)
                records.append(
                    {
                        "id": c["id"],
                        "category": c["category"],
                        "turn": t,
                        "answer": answer,
                        "judge": reply,
                        "score": score,
                    }
                )
                history += [msgs[-1], {"role": "assistant", "content": turn["reference"]}]
        scored = [r for r in records if r["score"] is not None]

        def mean_by(key: str) -> dict[Any, float]:
            groups: dict[Any, list[float]] = {}
            for r in scored:
                groups.setdefault(r[key], []).append(r["score"])
            return {k: statistics.fmean(v) for k, v in sorted(groups.items())}

        per_cat = mean_by("category")
        return MultiTurnResult(
            micro=statistics.fmean(r["score"] for r in scored) if scored else float("nan"),
            per_category=per_cat,
            per_turn=mean_by("turn"),
            macro=statistics.fmean(per_cat.values()) if per_cat else float("nan"),
            records=records,
            unparsed=unparsed,
        )
