"""Synthetic images and texts for MIR evaluation and for the tiny-scale reproduction.

The paper (arXiv 2410.07167) evaluates MIR on 100 *unrelated* image/text pairs: TextVQA
validation images and CNN/DailyMail stories, so that the text never describes the image. Neither
set ships with this package, and nothing here downloads anything; instead:

- :func:`render_scene` draws a procedural picture: one coloured shape (circle, square, triangle
  or diamond) in one quadrant of a plain background, with a little pixel noise, via PIL.
- :func:`describe_scene` words it as a caption in a few of our own sentence patterns
  (``"a red circle at the top left on a black background ."``).
- :func:`caption_pairs` gives image-caption pairs for projector pre-training.
- :func:`unrelated_pairs` gives the MIR evaluation set: images paired with short "stories" built
  from :func:`paperbricks.core_kernels.testing.synthetic_text` sentences, which say nothing
  about the image (the paper's protocol, with synthetic stand-ins).
- :func:`visual_questions` gives single-word-answer questions about colour, shape and position
  for the supervised fine-tuning stage.
- :func:`write_synthetic_set` writes PNG images and a ``texts.txt`` (one text per line) that the
  ``paperbricks mir compute`` command reads.

Every function is seeded (a private ``numpy.random.Generator``; no global RNG), and every word it
emits is in :data:`VOCAB_WORDS`, the vocabulary of :func:`paperbricks.mir.tinyvlm.build_processor`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "POSITIONS",
    "QUESTION_KINDS",
    "SHAPES",
    "VOCAB_WORDS",
    "CaptionPair",
    "Scene",
    "VisualQuestion",
    "caption_pairs",
    "describe_scene",
    "random_scenes",
    "read_texts",
    "render_scene",
    "stories",
    "text_conversations",
    "unrelated_pairs",
    "visual_questions",
    "write_synthetic_set",
]

logger = logging.getLogger(__name__)

#: Shape colours (name -> RGB).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
#: Background colours (name -> RGB), disjoint from the shape colours.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
#: Quadrants as (vertical, horizontal) words.
POSITIONS: tuple[tuple[str, str], ...] = (
    ("top", "left"),
    ("top", "right"),
    ("bottom", "left"),
    ("bottom", "right"),
)

# Words of captions and questions beyond core-kernels' TINY_WORDS (which already has red, blue,
# green, left, right, the, a, is, ...).
_EXTRA_WORDS: tuple[str, ...] = (
    "yellow",
    "purple",
    "orange",
    "black",
    "gray",
    "white",
    "circle",
    "square",
    "triangle",
    "diamond",
    "top",
    "bottom",
    "at",
    "in",
    "on",
    "of",
    "with",
    "background",
    "picture",
    "image",
    "shows",
    "there",
    "corner",
    "what",
    "color",
    "shape",
    "where",
    "or",
)


def _vocab_words() -> tuple[str, ...]:
    from paperbricks.core_kernels.testing.factories import TINY_WORDS

    return tuple(TINY_WORDS) + tuple(w for w in _EXTRA_WORDS if w not in TINY_WORDS)


#: Every word the generators emit (core-kernels' ``TINY_WORDS`` first, then ours), in id order.
VOCAB_WORDS: tuple[str, ...] = _vocab_words()


@dataclass(frozen=True)
class Scene:
    """What one synthetic picture shows.

    Attributes:
        shape: one of :data:`SHAPES`.
        color: the shape's colour, a key of :data:`COLORS`.
        position: the quadrant, one of :data:`POSITIONS` (e.g. ``("top", "left")``).
        background: a key of :data:`BACKGROUNDS`.
        scale: the shape's size as a fraction of the quadrant side, in [0.5, 0.9].
        jitter: the shape centre's offset from the quadrant centre, as fractions of the
            quadrant side, each in [-0.1, 0.1]. With the largest scale and offset a shape can
            reach past its quadrant's inner border by up to 5% of the quadrant side.
    """

    shape: str
    color: str
    position: tuple[str, str]
    background: str
    scale: float = 0.7
    jitter: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, tuple(COLORS)),
            ("position", tuple(self.position), POSITIONS),
            ("background", self.background, tuple(BACKGROUNDS)),
        ):
            if value not in allowed:
                raise ValueError(f"Scene.{name}: expected one of {allowed}, got {value!r}")
        if not 0.5 <= float(self.scale) <= 0.9:
            raise ValueError(f"Scene.scale: expected a float in [0.5, 0.9], got {self.scale!r}")
        if len(self.jitter) != 2 or any(abs(float(j)) > 0.1 for j in self.jitter):
            raise ValueError(
                f"Scene.jitter: expected two floats in [-0.1, 0.1], got {self.jitter!r}"
            )


@dataclass(frozen=True)
class CaptionPair:
    """An image and a caption that describes it (projector pre-training data)."""

    image: object  # PIL.Image.Image (RGB)
    caption: str
    scene: Scene


@dataclass(frozen=True)
class VisualQuestion:
    """An image, a question about it and its one-word answer (fine-tuning data).

    ``kind`` is ``"color"``, ``"shape"``, ``"horizontal"`` (left/right) or ``"vertical"``
    (top/bottom).
    """

    image: object  # PIL.Image.Image (RGB)
    question: str
    answer: str
    kind: str
    scene: Scene


def _check_count(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {n!r}")
    return int(n)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    return int(seed)


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size: expected an int >= 8 (pixels per side), got {size!r}")
    return int(size)


def random_scenes(n: int, *, seed: int = 0) -> list[Scene]:
    """``n`` scenes with shape, colour, quadrant, background, size and offset drawn uniformly.

    Args:
        n: number of scenes (>= 0).
        seed: seed of the private ``numpy.random.Generator``. Default 0.

    Returns:
        ``list[Scene]`` of length ``n``.

    Examples:
        >>> [s.shape for s in random_scenes(3, seed=1)] == [s.shape for s in random_scenes(3, seed=1)]
        True
    """
    n = _check_count("n", n)
    rng = np.random.default_rng(_check_seed(seed))
    colors, backgrounds = tuple(COLORS), tuple(BACKGROUNDS)
    shape = rng.integers(len(SHAPES), size=n)
    color = rng.integers(len(colors), size=n)
    pos = rng.integers(len(POSITIONS), size=n)
    bg = rng.integers(len(backgrounds), size=n)
    scale = rng.uniform(0.5, 0.9, size=n)
    jitter = rng.uniform(-0.1, 0.1, size=(n, 2))
    return [
        Scene(
            shape=SHAPES[shape[i]],
            color=colors[color[i]],
            position=POSITIONS[pos[i]],
            background=backgrounds[bg[i]],
            scale=float(scale[i]),
            jitter=(float(jitter[i, 0]), float(jitter[i, 1])),
        )
        for i in range(n)
    ]


def render_scene(scene: Scene, *, size: int = 32, noise: float = 8.0, seed: int = 0):
    """Draw ``scene`` as a ``size``×``size`` RGB picture.

    The shape is drawn at 4× resolution and downsampled (anti-aliased edges), then Gaussian pixel
    noise of standard deviation ``noise`` (in 0–255 units) is added and the result clipped.

    Args:
        scene: what to draw.
        size: side in pixels (>= 8). Default 32.
        noise: pixel-noise std (>= 0); 0 gives a clean picture. Default 8.0.
        seed: seed of the noise. Default 0.

    Returns:
        ``PIL.Image.Image`` in mode ``"RGB"``.

    Examples:
        >>> img = render_scene(Scene("circle", "red", ("top", "left"), "black"), size=32)
        >>> img.size, img.mode
        ((32, 32), 'RGB')
    """
    from PIL import Image, ImageDraw

    if not isinstance(scene, Scene):
        raise TypeError(f"scene: expected a Scene, got {type(scene).__name__}")
    size = _check_size(size)
    if not isinstance(noise, int | float) or not noise >= 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    big = 4 * size
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    half = big / 2
    row, col = scene.position
    cx = (0.5 if col == "left" else 1.5) * half + scene.jitter[0] * half
    cy = (0.5 if row == "top" else 1.5) * half + scene.jitter[1] * half
    r = scene.scale * half / 2
    fill = COLORS[scene.color]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        s = 0.85 * r  # same area order as the circle
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:  # diamond
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    img = img.resize((size, size), Image.Resampling.BOX)
    if noise > 0:
        rng = np.random.default_rng(_check_seed(seed))
        arr = np.asarray(img, dtype=np.float32)  # (size, size, 3)
        arr = arr + rng.normal(0.0, float(noise), size=arr.shape)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    return img


_CAPTION_PATTERNS: tuple[str, ...] = (
    "a {color} {shape} at the {row} {col} on a {bg} background .",
    "the picture shows a {color} {shape} in the {row} {col} corner .",
    "there is a {color} {shape} at the {row} {col} of the image .",
    "a {bg} image with a {color} {shape} in the {row} {col} .",
)


def describe_scene(scene: Scene, *, pattern: int = 0) -> str:
    """A one-sentence caption of ``scene`` (our own wording; words from :data:`VOCAB_WORDS`).

    Args:
        scene: the scene.
        pattern: which of the 4 sentence patterns to use (0–3). Default 0.

    Returns:
        The caption, tokens separated by single spaces.

    Examples:
        >>> describe_scene(Scene("circle", "red", ("top", "left"), "black"))
        'a red circle at the top left on a black background .'
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene: expected a Scene, got {type(scene).__name__}")
    if (
        isinstance(pattern, bool)
        or not isinstance(pattern, int)
        or not 0 <= pattern < len(_CAPTION_PATTERNS)
    ):
        raise ValueError(
            f"pattern: expected an int in [0, {len(_CAPTION_PATTERNS)}), got {pattern!r}"
        )
    row, col = scene.position
    return _CAPTION_PATTERNS[pattern].format(
        color=scene.color, shape=scene.shape, row=row, col=col, bg=scene.background
    )


def _render_all(scenes: list[Scene], size: int, noise: float, seed: int) -> list:
    # One noise seed per image, derived from the set's seed, so each image is reproducible alone.
    seeds = np.random.default_rng([seed, 7]).integers(2**31, size=len(scenes))
    return [
        render_scene(s, size=size, noise=noise, seed=int(k))
        for s, k in zip(scenes, seeds, strict=True)
    ]


def caption_pairs(
    n: int, *, seed: int = 0, size: int = 32, noise: float = 8.0
) -> list[CaptionPair]:
    """``n`` image-caption pairs whose captions describe their images.

    Args:
        n: number of pairs (>= 0).
        seed: seed of scenes, caption patterns and pixel noise. Default 0.
        size: image side in pixels. Default 32.
        noise: pixel-noise std (see :func:`render_scene`). Default 8.0.

    Returns:
        ``list[CaptionPair]``.

    Examples:
        >>> pairs = caption_pairs(2, seed=3)
        >>> pairs[0].scene.color in pairs[0].caption
        True
    """
    n, seed = _check_count("n", n), _check_seed(seed)
    scenes = random_scenes(n, seed=seed)
    patterns = np.random.default_rng([seed, 1]).integers(len(_CAPTION_PATTERNS), size=n)
    images = _render_all(scenes, _check_size(size), noise, seed)
    return [
        CaptionPair(image=img, caption=describe_scene(s, pattern=int(p)), scene=s)
        for img, s, p in zip(images, scenes, patterns, strict=True)
    ]


def stories(n: int, *, seed: int = 0, sentences: tuple[int, int] = (3, 6)) -> list[str]:
    """``n`` short "stories" of a few seeded pseudo-English sentences, unrelated to any image.

    Each story joins between ``sentences[0]`` and ``sentences[1]`` sentences of
    :func:`paperbricks.core_kernels.testing.synthetic_text` (a stand-in for the CNN/DailyMail
    story openings the paper uses).

    Args:
        n: number of stories (>= 0).
        seed: seed. Default 0.
        sentences: inclusive range of sentences per story, ``1 <= lo <= hi``. Default (3, 6).

    Returns:
        ``list[str]`` of length ``n``, each on one line (no newline characters).
    """
    from paperbricks.core_kernels.testing import synthetic_text

    n, seed = _check_count("n", n), _check_seed(seed)
    lo, hi = sentences
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"sentences: expected ints 1 <= lo <= hi, got {sentences!r}")
    counts = np.random.default_rng([seed, 2]).integers(lo, hi + 1, size=n)
    pool = synthetic_text(int(counts.sum()), seed=seed)
    out, start = [], 0
    for c in counts:
        out.append(" ".join(pool[start : start + int(c)]))
        start += int(c)
    return out


def unrelated_pairs(
    n: int, *, seed: int = 0, size: int = 32, noise: float = 8.0
) -> tuple[list, list[str]]:
    """The MIR evaluation set: ``n`` images and ``n`` stories that do not describe them.

    The paper pairs TextVQA images with CNN/DailyMail stories; here the images come from
    :func:`random_scenes`/:func:`render_scene` and the texts from :func:`stories`, drawn
    independently, so no text mentions its image's colour, shape or position on purpose.

    Args:
        n: number of pairs (>= 0).
        seed: seed. Default 0.
        size: image side in pixels. Default 32.
        noise: pixel-noise std. Default 8.0.

    Returns:
        ``(images, texts)``: ``list[PIL.Image.Image]`` and ``list[str]``, both of length ``n``.

    Examples:
        >>> images, texts = unrelated_pairs(2, seed=0)
        >>> len(images), len(texts)
        (2, 2)
    """
    n, seed = _check_count("n", n), _check_seed(seed)
    scenes = random_scenes(n, seed=seed + 1_000_003)
    images = _render_all(scenes, _check_size(size), noise, seed + 1_000_003)
    return images, stories(n, seed=seed + 2_000_003)


_QUESTIONS: dict[str, str] = {
    "color": "what color is the shape ?",
    "shape": "what shape is in the image ?",
    "horizontal": "is the shape left or right ?",
    "vertical": "is the shape at the top or bottom ?",
}
#: Question kinds, in the order :func:`visual_questions` cycles through them.
QUESTION_KINDS: tuple[str, ...] = tuple(_QUESTIONS)


def visual_questions(
    n: int,
    *,
    seed: int = 0,
    size: int = 32,
    noise: float = 8.0,
    kinds: tuple[str, ...] | None = None,
) -> list[VisualQuestion]:
    """``n`` questions with one-word answers about a synthetic picture (fine-tuning data).

    Kinds: ``"color"`` (6 answers), ``"shape"`` (4), ``"horizontal"`` (left/right) and
    ``"vertical"`` (top/bottom); each example draws its kind uniformly from ``kinds``. Chance
    accuracy over the four kinds is (1/6 + 1/4 + 1/2 + 1/2)/4 ≈ 0.35.

    Args:
        n: number of examples (>= 0).
        seed: seed. Default 0.
        size: image side in pixels. Default 32.
        noise: pixel-noise std. Default 8.0.
        kinds: question kinds to draw from; default all four.

    Returns:
        ``list[VisualQuestion]``.

    Examples:
        >>> q = visual_questions(1, seed=0, kinds=("color",))[0]
        >>> q.question, q.answer == q.scene.color
        ('what color is the shape ?', True)
    """
    n, seed = _check_count("n", n), _check_seed(seed)
    kinds = QUESTION_KINDS if kinds is None else tuple(kinds)
    bad = [k for k in kinds if k not in _QUESTIONS]
    if not kinds or bad:
        raise ValueError(f"kinds: expected a non-empty subset of {QUESTION_KINDS}, got {kinds!r}")
    scenes = random_scenes(n, seed=seed + 3_000_017)
    which = np.random.default_rng([seed, 3]).integers(len(kinds), size=n)
    images = _render_all(scenes, _check_size(size), noise, seed + 3_000_017)
    out = []
    for img, s, w in zip(images, scenes, which, strict=True):
        kind = kinds[int(w)]
        out.append(VisualQuestion(img, _QUESTIONS[kind], _answer(s, kind), kind, s))
    return out


def text_conversations(
    n: int, *, seed: int = 0, kinds: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """``n`` text-only ``(user, assistant)`` exchanges about scenes given in words.

    Half describe (the user gives a caption, the assistant rewords it with another pattern),
    half answer (the user gives a caption and a :func:`visual_questions` question, the assistant
    answers in one word). A language model warmed up on these knows how to describe and answer
    from its context; projector pre-training then only has to make image tokens say what the
    caption said, which is what LLaVA's alignment stage asks of a pre-trained LLM.

    Args:
        n: number of exchanges (>= 0).
        seed: seed. Default 0.
        kinds: question kinds for the answering half; default all of :data:`QUESTION_KINDS`.

    Returns:
        ``list[tuple[str, str]]``.

    Examples:
        >>> text_conversations(1, seed=0)[0][0].endswith(".") or "?" in text_conversations(1)[0][0]
        True
    """
    n, seed = _check_count("n", n), _check_seed(seed)
    kinds = QUESTION_KINDS if kinds is None else tuple(kinds)
    bad = [k for k in kinds if k not in _QUESTIONS]
    if not kinds or bad:
        raise ValueError(f"kinds: expected a non-empty subset of {QUESTION_KINDS}, got {kinds!r}")
    scenes = random_scenes(n, seed=seed + 4_000_037)
    rng = np.random.default_rng([seed, 4])
    p_user = rng.integers(len(_CAPTION_PATTERNS), size=n)
    p_reply = rng.integers(len(_CAPTION_PATTERNS), size=n)
    answer_it = rng.random(n) < 0.5
    which = rng.integers(len(kinds), size=n)
    out = []
    for i, s in enumerate(scenes):
        described = describe_scene(s, pattern=int(p_user[i]))
        if answer_it[i]:
            kind = kinds[int(which[i])]
            out.append((f"{described} {_QUESTIONS[kind]}", _answer(s, kind)))
        else:
            out.append((described, describe_scene(s, pattern=int(p_reply[i]))))
    return out


def _answer(s: Scene, kind: str) -> str:
    return {
        "color": s.color,
        "shape": s.shape,
        "horizontal": s.position[1],
        "vertical": s.position[0],
    }[kind]


def write_synthetic_set(
    out_dir: str | Path, num: int, *, seed: int = 0, size: int = 32, overwrite: bool = False
) -> tuple[list[Path], Path]:
    """Write an unrelated image/text evaluation set (:func:`unrelated_pairs`) to ``out_dir``.

    Layout: ``out_dir/images/000000.png ...`` and ``out_dir/texts.txt`` with one story per line,
    line ``i`` belonging to image ``i`` (the ``--images``/``--texts`` inputs of
    ``paperbricks mir compute``).

    Args:
        out_dir: folder to create (parents too).
        num: number of pairs (>= 1).
        seed: seed. Default 0.
        size: image side in pixels. Default 32.
        overwrite: replace existing files of the same names; default False (raises instead).

    Returns:
        ``(image_paths, texts_path)``.

    Raises:
        FileExistsError: ``texts.txt`` or ``images/`` already exists and ``overwrite`` is False.
    """
    num = _check_count("num", num)
    if num < 1:
        raise ValueError(f"num: expected an int >= 1, got {num}")
    out = Path(out_dir)
    images_dir, texts_path = out / "images", out / "texts.txt"
    if not overwrite and (texts_path.exists() or images_dir.exists()):
        raise FileExistsError(
            f"out_dir: {out} already holds texts.txt or images/; pass overwrite=True to replace them"
        )
    images, texts = unrelated_pairs(num, seed=seed, size=size)
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = images_dir / f"{i:06d}.png"
        img.save(p, format="PNG")
        paths.append(p)
    texts_path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    logger.info("wrote %d images and %s", num, texts_path)
    return paths, texts_path


def read_texts(path: str | Path) -> list[str]:
    """Read evaluation texts: a ``.json`` list of strings, a ``.jsonl`` of ``{"text": ...}``
    objects (or strings), or any other file as one text per non-empty line.

    Args:
        path: the file.

    Returns:
        ``list[str]`` in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the JSON is not a list of strings / a line is not a string or ``{"text": str}``.
    """
    import json

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"texts: no such file {p}")
    raw = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        data = json.loads(raw)
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise ValueError(f"texts: expected {p} to hold a JSON list of strings")
        return data
    lines = [line for line in raw.splitlines() if line.strip()]
    if p.suffix != ".jsonl":
        return lines
    out = []
    for i, line in enumerate(lines):
        item = json.loads(line)
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError(
                f"texts: line {i + 1} of {p} is not a string or an object with a 'text' string"
            )
        out.append(item)
    return out
