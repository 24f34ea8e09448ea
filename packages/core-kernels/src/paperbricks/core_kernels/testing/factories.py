"""Tiny, offline stand-ins for real models, tokenizers and corpora (for tests and smoke runs).

- :func:`tiny_llama_config`: a ``transformers.LlamaConfig`` with hidden 32, 2 layers and a
  vocabulary matching :func:`tiny_tokenizer`, so ``LlamaForCausalLM(tiny_llama_config())`` builds
  in milliseconds.
- :func:`tiny_tokenizer`: an in-process ``tokenizers`` WordLevel model (whitespace split, then
  punctuation isolated) wrapped as a transformers fast tokenizer, with ``<pad> <s> </s> <unk>``,
  role tokens and a small chat template. Nothing is downloaded; ``save_pretrained`` writes a
  directory that ``AutoTokenizer.from_pretrained(..., local_files_only=True)`` reloads.
- :func:`synthetic_text`: seeded sentences over the same vocabulary (no ``<unk>`` when tokenized).

transformers and tokenizers are the optional ``hf`` extra and are imported inside the functions.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from typing import Any

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "TINY_SPECIAL_TOKENS",
    "TINY_VOCAB_SIZE",
    "TINY_WORDS",
    "synthetic_text",
    "tiny_llama_config",
    "tiny_tokenizer",
]

#: Special tokens, in id order: pad, bos, eos, unk, then the chat-template role markers.
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
)

_NOUNS = ("cat", "dog", "bird", "fish", "tree", "house", "car", "ball", "box", "key")
_VERBS = ("sees", "finds", "takes", "moves", "likes", "opens")
_ADJS = ("red", "blue", "green", "big", "small", "old")
_PREPS = ("near", "under", "behind")
_DIRS = ("up", "down", "left", "right")
_FUNCTION = ("the", "a", "and", "is", "not", "yes", "no", "move", "answer", "action")
_DIGITS = tuple("0123456789")
_PUNCT = (".", ",", ":", '"', "{", "}", "[", "]", "?", "!")

#: The default word list (special tokens excluded), in id order after the special tokens.
TINY_WORDS: tuple[str, ...] = (
    _NOUNS + _VERBS + _ADJS + _PREPS + _DIRS + _FUNCTION + _DIGITS + _PUNCT
)

#: Size of the default :func:`tiny_tokenizer` vocabulary (and of ``tiny_llama_config().vocab_size``).
TINY_VOCAB_SIZE: int = len(TINY_SPECIAL_TOKENS) + len(TINY_WORDS)

#: Jinja chat template: ``<s><|user|> hi </s> <|assistant|>`` (roles as special tokens).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|> "
    "{{ message['content'] }} {{ eos_token }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _require_hf(what: str) -> None:
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:  # pragma: no cover - the hf extra is installed in the test env
        raise ImportError(
            f"{what} needs transformers and tokenizers: pip install 'paperbricks-core-kernels[hf]'"
        ) from err


def tiny_llama_config(**overrides: Any) -> Any:
    """A tiny ``transformers.LlamaConfig`` for tests (random init builds in milliseconds).

    Defaults: ``vocab_size=TINY_VOCAB_SIZE`` (matching :func:`tiny_tokenizer`), ``hidden_size=32``,
    ``intermediate_size=64``, ``num_hidden_layers=2``, ``num_attention_heads=4``,
    ``num_key_value_heads=2`` (grouped-query attention is exercised), ``max_position_embeddings=256``,
    ``tie_word_embeddings=False``, ``pad/bos/eos_token_id=0/1/2`` (the tokenizer's ids).

    Args:
        **overrides: any ``LlamaConfig`` field, e.g. ``num_hidden_layers=1``.

    Returns:
        ``transformers.LlamaConfig``.

    Raises:
        TypeError: an override names a field ``LlamaConfig`` does not have (a typo would
            otherwise be stored silently as an extra attribute).
        ImportError: transformers is not installed (``pip install 'paperbricks-core-kernels[hf]'``).

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing.factories import tiny_llama_config
        >>> cfg = tiny_llama_config(num_hidden_layers=1)
        >>> model = LlamaForCausalLM(cfg)
        >>> cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
        (32, 1, 66)
    """
    _require_hf("tiny_llama_config")
    from transformers import LlamaConfig

    params: dict[str, Any] = {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    # Fields of the config, its constructor's arguments, and the legacy/loader keywords that
    # LlamaConfig still accepts and maps (rope_theta -> rope_parameters in transformers 5).
    known = set(LlamaConfig().to_dict()) | set(inspect.signature(LlamaConfig.__init__).parameters)
    known |= {"attn_implementation", "rope_theta", "rope_scaling"}
    unknown = sorted(set(overrides) - known - set(params))
    if unknown:
        raise TypeError(f"tiny_llama_config: unknown LlamaConfig field(s) {unknown}")
    params.update(overrides)
    return LlamaConfig(**params)


def tiny_tokenizer(
    vocab: Sequence[str] | None = None,
    special_tokens: Sequence[str] | None = None,
    *,
    chat_template: str | None = TINY_CHAT_TEMPLATE,
) -> Any:
    """An in-process WordLevel tokenizer wrapped as a transformers fast tokenizer.

    Ids: ``special_tokens`` first (in order), then ``vocab`` (in order). Text is split on
    whitespace and punctuation is isolated (``'{"a":'`` -> ``{ " a " :``); unknown words map to
    ``<unk>``. ``decode`` joins tokens with single spaces.

    Args:
        vocab: the words (no duplicates, no whitespace inside a word). Default :data:`TINY_WORDS`.
        special_tokens: must contain ``<pad> <s> </s> <unk>`` (used as pad/bos/eos/unk); others
            (e.g. role markers) become additional special tokens, never split. Default
            :data:`TINY_SPECIAL_TOKENS`.
        chat_template: Jinja template stored on the tokenizer (default
            :data:`TINY_CHAT_TEMPLATE`); None gives a tokenizer without one.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` (``TokenizersBackend`` in transformers 5).

    Raises:
        ValueError: duplicate tokens, a required special token missing, or a word with whitespace.
        ImportError: transformers/tokenizers missing (``pip install 'paperbricks-core-kernels[hf]'``).

    Examples:
        >>> from paperbricks.core_kernels.testing.factories import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> ids = tok.encode("the red cat moves up .", add_special_tokens=False)
        >>> tok.decode(ids)
        'the red cat moves up .'
        >>> tok.apply_chat_template([{"role": "user", "content": "move ?"}], tokenize=False,
        ...                         add_generation_prompt=True)
        '<s><|user|> move ? </s> <|assistant|>'
    """
    _require_hf("tiny_tokenizer")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(TINY_WORDS if vocab is None else vocab)
    specials = list(TINY_SPECIAL_TOKENS if special_tokens is None else special_tokens)
    for name, seq in (("vocab", words), ("special_tokens", specials)):
        for i, w in enumerate(seq):
            if not isinstance(w, str) or not w or any(c.isspace() for c in w):
                raise ValueError(
                    f"{name}[{i}]: expected a non-empty string without whitespace, got {w!r}"
                )
    required = ("<pad>", "<s>", "</s>", "<unk>")
    missing = [t for t in required if t not in specials]
    if missing:
        raise ValueError(f"special_tokens: must contain {list(required)}, missing {missing}")
    tokens = specials + words
    dupes = sorted({t for t in tokens if tokens.count(t) > 1})
    if dupes:
        raise ValueError(f"vocab/special_tokens: duplicate tokens {dupes}")
    if chat_template is not None and not isinstance(chat_template, str):
        raise TypeError(f"chat_template: expected str or None, got {type(chat_template).__name__}")

    model = models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>")
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    extra = [t for t in specials if t not in required]
    kwargs: dict[str, Any] = {}
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=extra,
        **kwargs,
    )


def synthetic_text(
    n: int,
    seed: int = 0,
    *,
    min_words: int = 4,
    max_words: int = 12,
) -> list[str]:
    """``n`` seeded pseudo-English sentences over :data:`TINY_WORDS` (every token is known).

    Each sentence is built from a small grammar (``the red cat sees a box near the tree .``,
    ``move up and left !`` ...), so a tiny model has structure to learn, and is cut or extended
    to between ``min_words`` and ``max_words`` tokens (the final punctuation included).

    Args:
        n: number of sentences (>= 0).
        seed: seed of the private ``random.Random`` (no global RNG is touched). Default 0.
        min_words, max_words: token-count bounds per sentence (2 <= min_words <= max_words).

    Returns:
        ``list[str]`` of length ``n``; tokens are separated by single spaces.

    Examples:
        >>> from paperbricks.core_kernels.testing.factories import synthetic_text
        >>> len(synthetic_text(3, seed=1)), synthetic_text(2, seed=5) == synthetic_text(2, seed=5)
        (3, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not (
        isinstance(min_words, int) and isinstance(max_words, int) and 2 <= min_words <= max_words
    ):
        raise ValueError(
            f"min_words, max_words: expected ints with 2 <= min_words <= max_words, got {min_words}, {max_words}"
        )
    rng = random.Random(seed)

    def noun_phrase() -> list[str]:
        words = [rng.choice(("the", "a"))]
        if rng.random() < 0.5:
            words.append(rng.choice(_ADJS))
        words.append(rng.choice(_NOUNS))
        return words

    def clause() -> list[str]:
        kind = rng.randrange(3)
        if kind == 0:
            words = [*noun_phrase(), rng.choice(_VERBS), *noun_phrase()]
            if rng.random() < 0.5:
                words += [rng.choice(_PREPS), *noun_phrase()]
            return words
        if kind == 1:
            return ["move", rng.choice(_DIRS)] + (
                ["and", rng.choice(_DIRS)] if rng.random() < 0.5 else []
            )
        return [*noun_phrase(), "is", *(["not"] if rng.random() < 0.3 else []), rng.choice(_ADJS)]

    out = []
    for _ in range(n):
        words = clause()
        while len(words) < min_words - 1:
            words += ["and", *clause()]
        words = words[: max_words - 1]
        words.append(rng.choice((".", ".", "!", "?")))
        out.append(" ".join(words))
    return out
