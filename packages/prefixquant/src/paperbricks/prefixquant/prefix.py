"""Outlier-token detection, prefix selection and the prefixed KV cache (arXiv:2410.05265 §3.1–3.2).

Token-wise outliers ("massive activations") sit at a few tokens that act as attention sinks: the
first token and early delimiters. PrefixQuant finds them offline and puts them in a fixed prefix
whose KV cache is computed once in full precision, kept in fp16, never quantized, and prepended to
every forward pass; the real tokens then have no token-wise outliers, so per-tensor static
activation scales work.

- :func:`find_outlier_tokens`: per sequence, ``M_t = max_c |X_tc|`` and ``r_t = M_t / median_t M_t``;
  token t is an outlier when ``r_t > η`` (η = 64 in the official code; Eq. 3 of the paper is not
  used beyond that default). The median is ``torch.median`` (the lower median for even T).
- :func:`select_prefix`: hooks the **input of every down_proj** (the module input, i.e. before an
  online R4 Hadamard when the model is rotated, exactly like a forward hook on the official model),
  runs random windows of the calibration token stream (seeded, not starting at BOS), takes
  ``o = ⌈max over layers of the mean per-sequence outlier count⌉`` (must be > 0), counts the
  token ids at outlier positions over all layers and windows **skipping position 0**, keeps the
  top-o ids, drops a single id seen in < 10 % of the windows, and appends BOS (EOS when the
  tokenizer has no BOS or BOS == EOS, as for Qwen). ``count_mode="minus_one"`` uses ``o − 1``
  (the commented-out line of the official code: o counts the position-0 outlier that the ids skip).
- :func:`build_prefix_cache`: the prefix's ``DynamicCache`` (fp16 by default).
- :class:`PrefixedCausalLM`: prepends that cache to every ``forward``/``generate`` call (batch
  expansion, attention-mask prepend, position offset, left padding), so logits, losses and any
  statistics hooked inside the model only ever see the real tokens.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .sites import resolve_sites

__all__ = [
    "PrefixSpec",
    "PrefixedCausalLM",
    "build_prefix_cache",
    "calibration_windows",
    "expand_prefix_cache",
    "find_outlier_tokens",
    "outlier_ratios",
    "prefix_position_mask",
    "prefixed_position_ids",
    "real_token_mask",
    "select_prefix",
    "set_num_prefix_",
]

logger = logging.getLogger(__name__)

COUNT_MODES = ("official", "minus_one")


# --------------------------------------------------------------------------- detection


def outlier_ratios(maxima: torch.Tensor) -> torch.Tensor:
    """``r_t = M_t / median_t(M_t)`` over the last dim (one sequence per row).

    Args:
        maxima: (..., T) non-negative token maxima ``M_t``.

    Returns:
        float32 ratios of the same shape; a zero median gives ``inf`` for ``M_t > 0`` and 0 for
        ``M_t = 0`` (no division by zero is hidden).
    """
    m = maxima.float()
    med = m.median(dim=-1, keepdim=True).values  # (..., 1), lower median like torch's
    r = m / med
    return torch.where(m == 0, torch.zeros_like(r), r)


def find_outlier_tokens(acts: torch.Tensor, eta: float = 64.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-wise outliers of activations: ``r_t = max_c|X_tc| / median_t(max_c|X_tc|) > η``.

    Args:
        acts: (N, T, C) activations (N sequences of T tokens), or (T, C) for one sequence.
        eta: the ratio threshold η (default 64.0, the official code's value); must be > 0.

    Returns:
        ``(mask, ratios)``: bool mask and float32 ratios of shape (N, T) (or (T,)).

    Raises:
        TypeError: ``acts`` not a floating tensor. ValueError: wrong rank, empty, or ``eta <= 0``.

    Examples:
        >>> x = torch.ones(1, 8, 4)
        >>> x[0, 3, 1] = 100.0
        >>> mask, r = find_outlier_tokens(x, eta=64.0)
        >>> mask[0].nonzero().flatten().tolist(), float(r[0, 3])
        ([3], 100.0)
    """
    if not isinstance(acts, torch.Tensor) or not acts.is_floating_point():
        raise TypeError(f"acts: expected a floating torch.Tensor, got {type(acts).__name__}")
    if acts.ndim not in (2, 3) or acts.numel() == 0:
        raise ValueError(
            f"acts: expected a non-empty (N, T, C) or (T, C) tensor, got {tuple(acts.shape)}"
        )
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta > 0:
        raise ValueError(f"eta: expected a number > 0, got {eta!r}")
    ratios = outlier_ratios(acts.abs().amax(dim=-1))  # (N, T)
    return ratios > eta, ratios


# --------------------------------------------------------------------------- spec


@dataclass
class PrefixSpec:
    """The selected prefix: token ids (outlier ids first, BOS last), their text, and statistics.

    Attributes:
        ids: prefix token ids, e.g. ``[13, 1]`` for ``". <s>"``.
        text: ``tokenizer.decode(ids)`` (informational).
        stats: JSON-able selection statistics (eta, o, per-layer counts, id counts, ...).
    """

    ids: list[int]
    text: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ids, list | tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.ids
        ):
            raise ValueError(f"ids: expected a list of non-negative ints, got {self.ids!r}")
        self.ids = [int(i) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "text": self.text, "stats": copy.deepcopy(self.stats)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrefixSpec:
        if not isinstance(d, dict) or "ids" not in d:
            raise ValueError(f"d: expected a dict with 'ids', got {d!r}")
        return cls(ids=list(d["ids"]), text=d.get("text", ""), stats=dict(d.get("stats", {})))


def _prefix_ids(
    prefix: PrefixSpec | Sequence[int] | torch.Tensor, name: str = "prefix"
) -> list[int]:
    if isinstance(prefix, PrefixSpec):
        ids = prefix.ids
    elif isinstance(prefix, torch.Tensor):
        if prefix.ndim != 1 or prefix.is_floating_point():
            raise ValueError(
                f"{name}: expected a 1-D integer tensor, got {tuple(prefix.shape)} {prefix.dtype}"
            )
        ids = [int(i) for i in prefix.tolist()]
    elif isinstance(prefix, Sequence) and not isinstance(prefix, str):
        ids = list(prefix)
    else:
        raise TypeError(
            f"{name}: expected a PrefixSpec, a list of ids or a 1-D tensor, got {type(prefix).__name__}"
        )
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(
            f"{name}: expected a non-empty list of non-negative token ids, got {ids!r}"
        )
    return ids


# --------------------------------------------------------------------------- position helpers


def prefix_position_mask(
    seq_len: int, num_prefix: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(seq_len,) bool, True at the prefix positions ``[0, num_prefix)`` of a prefix+x sequence."""
    if not 0 <= num_prefix <= seq_len:
        raise ValueError(
            f"num_prefix: expected 0 <= num_prefix <= seq_len={seq_len}, got {num_prefix}"
        )
    return torch.arange(seq_len, device=device) < num_prefix


def real_token_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, num_prefix: int = 0
) -> torch.Tensor:
    """(B, L) bool, True for real tokens: not among the first ``num_prefix`` positions, not padding.

    Use it to drop prefix (and pad) positions from statistics or losses when a sequence was run
    with the prefix in-line (``concat(prefix, x)``). Through :class:`PrefixedCausalLM` the prefix
    lives in the cache and never reaches the hooks, so ``num_prefix=0`` there.

    Args:
        input_ids: (B, L) ids (only the shape is used).
        attention_mask: (B, L) 1 = token, 0 = padding; default all ones.
        num_prefix: how many leading positions are the prefix.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids: expected (B, L), got {tuple(input_ids.shape)}")
    b, length = input_ids.shape
    keep = ~prefix_position_mask(length, num_prefix, input_ids.device)[None].expand(b, length)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask: expected shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        keep = keep & attention_mask.bool()
    return keep


def prefixed_position_ids(attention_mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Position ids of the real tokens when ``num_prefix`` prefix tokens precede them.

    ``cumsum([1]*P + mask) − 1`` sliced to the real part, padding set to 1 (HF's convention), so a
    left-padded row ``[pad, pad, a, b]`` gets positions ``[1, 1, P, P+1]``.

    Args:
        attention_mask: (B, T) 1 = token, 0 = padding.
        num_prefix: P >= 0.

    Returns:
        (B, T) int64.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask: expected (B, T), got {tuple(attention_mask.shape)}")
    m = attention_mask.long()
    pos = m.cumsum(-1) - 1 + num_prefix  # (B, T)
    return pos.masked_fill(m == 0, 1)


def set_num_prefix_(model: nn.Module, num_prefix: int) -> None:
    """Set ``attn.pq_num_prefix`` on every attention module (keys below it are never quantized)."""
    if isinstance(num_prefix, bool) or not isinstance(num_prefix, int) or num_prefix < 0:
        raise ValueError(f"num_prefix: expected an int >= 0, got {num_prefix!r}")
    for ls in resolve_sites(model).layers:
        ls.attn.pq_num_prefix = num_prefix


# --------------------------------------------------------------------------- selection


def _tokenize_stream(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"calibration_texts[{i}]: expected str, got {type(t).__name__}")
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
    return ids


def calibration_windows(
    stream: Sequence[int] | torch.Tensor, num_samples: int, seqlen: int, *, seed: int = 0
) -> torch.Tensor:
    """``num_samples`` windows of ``seqlen`` ids taken at random starts inside a token stream.

    Args:
        stream: 1-D token ids (documents concatenated, no BOS inserted).
        num_samples: windows to draw (>= 1).
        seqlen: window length (>= 2, <= len(stream)).
        seed: seed of the private CPU generator for the starts.

    Returns:
        (num_samples, seqlen) int64.
    """
    s = torch.as_tensor(stream, dtype=torch.long).flatten()
    if num_samples < 1 or seqlen < 2:
        raise ValueError(
            f"num_samples, seqlen: expected >= 1 and >= 2, got {num_samples}, {seqlen}"
        )
    if s.numel() < seqlen:
        raise ValueError(
            f"calibration data: the token stream has {s.numel()} tokens, fewer than seqlen={seqlen}; "
            "pass more text or a smaller seqlen"
        )
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, s.numel() - seqlen + 1, (num_samples,), generator=g)  # (N,)
    return s[starts[:, None] + torch.arange(seqlen)[None]]  # (N, seqlen)


def _bos_id(tokenizer: Any, config: Any) -> int | None:
    src = tokenizer if tokenizer is not None else config
    bos = getattr(src, "bos_token_id", None)
    eos = getattr(src, "eos_token_id", None)
    if isinstance(eos, list | tuple):
        eos = eos[0] if eos else None
    if bos is None or bos == eos:  # Qwen: no BOS, the EOS string plays its role
        return eos
    return bos


@torch.no_grad()
def select_prefix(
    model: nn.Module,
    tokenizer: Any,
    calibration_texts: Sequence[str] | None = None,
    eta: float = 64.0,
    *,
    calibration_ids: torch.Tensor | None = None,
    num_samples: int = 64,
    seqlen: int = 512,
    batch_size: int = 8,
    count_mode: str = "official",
    add_bos: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> PrefixSpec:
    """Select the prefix tokens of a (rotated, fp) model from calibration text (spec §2 step 2).

    Args:
        model: HF Llama-family causal LM in full precision (rotated or not).
        tokenizer: its tokenizer (for tokenizing texts, BOS/EOS and decoding); may be None when
            ``calibration_ids`` is given (BOS/EOS then come from ``model.config``).
        calibration_texts: documents; concatenated into one token stream (no special tokens) from
            which ``num_samples`` random windows of ``seqlen`` are drawn (seeded, so they do not
            start at BOS).
        eta: ratio threshold η (default 64.0).
        calibration_ids: (N, T) int windows used as they are, instead of texts.
        num_samples: windows (default 64, as the official code).
        seqlen: window length (default 512).
        batch_size: windows per forward pass (default 8).
        count_mode: ``"official"`` (o counts the position-0 outlier) or ``"minus_one"`` (o − 1).
        add_bos: append BOS (EOS for Qwen-style tokenizers) as the last prefix token (default True).
        seed: seed of the window draw.
        progress: show a tqdm bar.

    Returns:
        :class:`PrefixSpec` with ``stats`` = ``{"eta", "o", "o_official", "count_mode",
        "num_samples", "seqlen", "mean_count_per_layer", "max_ratio_per_layer", "id_counts",
        "site"}``.

    Raises:
        ValueError: no calibration data; no outlier token found at this η (o == 0); bad
            ``count_mode``/``eta``; the stream shorter than ``seqlen``; no BOS/EOS id for add_bos.
        UnsupportedModelError: not a Llama-family model.

    Examples:
        >>> from paperbricks.prefixquant.planted import planted_llama
        >>> model, tok, info = planted_llama(seed=0)
        >>> spec = select_prefix(model, tok, info["calibration_texts"], num_samples=8, seqlen=32,
        ...                      progress=False)
        >>> spec.ids[-1] == tok.bos_token_id
        True
    """
    from tqdm.auto import tqdm

    if count_mode not in COUNT_MODES:
        raise ValueError(f"count_mode: expected one of {COUNT_MODES}, got {count_mode!r}")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta > 0:
        raise ValueError(f"eta: expected a number > 0, got {eta!r}")
    sites = resolve_sites(model)
    if calibration_ids is not None:
        windows = torch.as_tensor(calibration_ids, dtype=torch.long)
        if windows.ndim != 2 or windows.numel() == 0:
            raise ValueError(
                f"calibration_ids: expected a non-empty (N, T) tensor, got {tuple(windows.shape)}"
            )
    else:
        if (
            calibration_texts is None
            or isinstance(calibration_texts, str)
            or len(calibration_texts) == 0
        ):
            raise ValueError(
                "calibration_texts: expected a non-empty list of strings (or pass calibration_ids); "
                f"got {calibration_texts!r:.60}"
            )
        if tokenizer is None:
            raise ValueError("tokenizer: required to tokenize calibration_texts")
        windows = calibration_windows(
            _tokenize_stream(tokenizer, calibration_texts), num_samples, seqlen, seed=seed
        )
    n, t = windows.shape
    device = next(model.parameters()).device

    maxima: list[list[torch.Tensor]] = [[] for _ in sites.layers]  # layer -> [(b, T)]

    def make_hook(i: int):
        def hook(_mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            maxima[i].append(args[0].detach().abs().amax(dim=-1).float().cpu())  # (b, T)

        return hook

    handles = [ls.down_proj.register_forward_pre_hook(make_hook(ls.index)) for ls in sites.layers]
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(
            range(0, n, batch_size), desc="prefix: outlier stats", disable=not progress
        ):
            model(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    counts: Counter[int] = Counter()
    mean_counts, max_ratios = [], []
    for layer_max in maxima:
        m = torch.cat(layer_max)  # (N, T)
        ratios = outlier_ratios(m)
        mask = ratios > eta  # (N, T)
        mean_counts.append(float(mask.sum(-1).float().mean()))
        max_ratios.append(float(ratios.max()))
        counts.update(windows[:, 1:][mask[:, 1:]].tolist())  # ids at outliers, position 0 skipped
    o_official = math.ceil(max(mean_counts) - 1e-9)
    if o_official <= 0:
        raise ValueError(
            f"select_prefix: no outlier tokens found at eta={eta} (largest ratio M_t/median "
            f"{max(max_ratios):.1f} over {len(maxima)} layers); lower eta or check the model"
        )
    o = o_official - 1 if count_mode == "minus_one" else o_official
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) == 1 and ranked[0][1] < 0.1 * n:
        logger.info(
            "dropping the single outlier id %d (count %d < 0.1 x %d windows)", *ranked[0], n
        )
        ranked = []
    ids = [tok for tok, _ in ranked[:o]]
    if add_bos:
        bos = _bos_id(tokenizer, sites.config)
        if bos is None:
            raise ValueError("add_bos: the tokenizer/config has neither a BOS nor an EOS token id")
        ids.append(int(bos))
    if not ids:
        raise ValueError(
            "select_prefix: the prefix is empty (no outlier id kept and add_bos=False)"
        )
    text = tokenizer.decode(ids) if tokenizer is not None else ""
    stats = {
        "eta": float(eta),
        "o": o,
        "o_official": o_official,
        "count_mode": count_mode,
        "num_samples": n,
        "seqlen": t,
        "mean_count_per_layer": mean_counts,
        "max_ratio_per_layer": max_ratios,
        "id_counts": [[int(k), int(v)] for k, v in ranked],  # (id, count), most frequent first
        "site": "down_proj module input (before any online R4 Hadamard)",
    }
    logger.info("prefix %s (%r); o=%d, mean counts per layer %s", ids, text, o, mean_counts)
    return PrefixSpec(ids=ids, text=text, stats=stats)


# --------------------------------------------------------------------------- prefix cache


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@torch.no_grad()
def build_prefix_cache(
    model: nn.Module,
    prefix: PrefixSpec | Sequence[int] | torch.Tensor,
    dtype: torch.dtype | None = torch.float16,
) -> Any:
    """Run the full-precision model on the prefix and return its KV cache (batch 1).

    The model should be the rotated, not yet quantized model (online Hadamards active). While
    running, ``attn.pq_num_prefix`` is set to the prefix length so a K quantizer, if one is
    already attached, leaves the prefix keys alone.

    Args:
        model: HF Llama-family causal LM.
        prefix: :class:`PrefixSpec`, list of ids or 1-D tensor.
        dtype: storage dtype of the cache (default float16, as the paper); None keeps the model's.

    Returns:
        ``transformers.DynamicCache`` holding ``len(prefix)`` positions, keys/values (1, Hkv, P, D).

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing.factories import tiny_llama_config
        >>> model = LlamaForCausalLM(tiny_llama_config())
        >>> cache = build_prefix_cache(model, [5, 1])
        >>> cache.get_seq_length(), cache.layers[0].keys.dtype
        (2, torch.float16)
    """
    ids = _prefix_ids(prefix)
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
    sites = resolve_sites(model)
    device = next(model.parameters()).device
    old = [getattr(ls.attn, "pq_num_prefix", None) for ls in sites.layers]
    for ls in sites.layers:
        ls.attn.pq_num_prefix = len(ids)
    was_training = model.training
    model.eval()
    try:
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
    finally:
        model.train(was_training)
        for ls, v in zip(sites.layers, old, strict=True):
            if v is None:
                del ls.attn.pq_num_prefix
            else:
                ls.attn.pq_num_prefix = v
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    if dtype is not None:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
    return cache


def expand_prefix_cache(
    cache: Any,
    batch_size: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Any:
    """A fresh copy of a batch-1 prefix cache repeated to ``batch_size`` (the input is untouched).

    Args:
        cache: a ``DynamicCache`` from :func:`build_prefix_cache`.
        batch_size: B >= 1.
        dtype: cast keys/values (e.g. to the model dtype); default keep.
        device: move keys/values; default keep.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    layers = cache.layers
    saved = [(layer.keys, layer.values) for layer in layers]
    for layer in layers:  # do not deep-copy the big tensors; they are replaced below
        layer.keys = layer.values = None
    try:
        new = copy.deepcopy(cache)
    finally:
        for layer, (k, v) in zip(layers, saved, strict=True):
            layer.keys, layer.values = k, v
    for layer, (k, v) in zip(new.layers, saved, strict=True):
        if k.shape[0] != 1:
            raise ValueError(f"cache: expected batch-1 prefix keys, got shape {tuple(k.shape)}")
        k = k.to(device=device or k.device, dtype=dtype or k.dtype)
        v = v.to(device=device or v.device, dtype=dtype or v.dtype)
        layer.keys = k.expand(batch_size, *k.shape[1:]).clone()  # (B, Hkv, P, D)
        layer.values = v.expand(batch_size, *v.shape[1:]).clone()
        layer.device = layer.keys.device
    return new


class PrefixedCausalLM(nn.Module):
    """A causal LM with a fixed, precomputed prefix KV cache prepended to every call.

    ``forward(x)`` runs the model on x only, with a fresh copy of the prefix cache (expanded to the
    batch, cast to the model dtype), the attention mask ``[1]*P + mask`` and positions offset by P
    (left padding handled). Logits and loss therefore cover only the real tokens, and every hook
    inside the model sees only real positions (statistics exclude the prefix by construction).
    ``generate`` feeds ``concat(prefix, x)`` with the prefix already cached and strips the prefix
    from the returned ids. Every attention module gets ``pq_num_prefix = P``.

    Args:
        model: HF Llama-family causal LM (rotated or not).
        prefix: :class:`PrefixSpec` (or list of ids).
        prefix_cache: a cache from :func:`build_prefix_cache`; built here when None.
        cache_dtype: storage dtype when building the cache (default float16).

    Attributes:
        model, prefix (PrefixSpec), prefix_cache (batch-1 ``DynamicCache``), num_prefix (P).

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing.factories import tiny_llama_config
        >>> lm = PrefixedCausalLM(LlamaForCausalLM(tiny_llama_config()), [5, 1])
        >>> lm(torch.tensor([[7, 8, 9]])).logits.shape
        torch.Size([1, 3, 66])
    """

    def __init__(
        self,
        model: nn.Module,
        prefix: PrefixSpec | Sequence[int],
        prefix_cache: Any | None = None,
        cache_dtype: torch.dtype | None = torch.float16,
    ) -> None:
        super().__init__()
        self.prefix = (
            prefix if isinstance(prefix, PrefixSpec) else PrefixSpec(ids=_prefix_ids(prefix))
        )
        self.model = model
        if prefix_cache is None:
            prefix_cache = build_prefix_cache(model, self.prefix, dtype=cache_dtype)
        if prefix_cache.get_seq_length() != len(self.prefix):
            raise ValueError(
                f"prefix_cache: holds {prefix_cache.get_seq_length()} positions, the prefix has {len(self.prefix)}"
            )
        self.prefix_cache = prefix_cache
        set_num_prefix_(model, len(self.prefix))

    @property
    def num_prefix(self) -> int:
        return len(self.prefix)

    @property
    def config(self) -> Any:
        return self.model.config

    def fresh_cache(self, batch_size: int) -> Any:
        """A per-call copy of the prefix cache for ``batch_size`` rows, in the model's dtype/device."""
        p = next(self.model.parameters())
        return expand_prefix_cache(
            self.prefix_cache, batch_size, dtype=_model_dtype(self.model), device=p.device
        )

    def _check(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise ValueError(
                f"input_ids: expected a (B, T) tensor, got {getattr(input_ids, 'shape', input_ids)!r}"
            )
        if attention_mask is None:
            return torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask: expected shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        return attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the model on ``input_ids`` (B, T) behind the prefix; returns the HF output.

        Args:
            input_ids: (B, T) real tokens (no prefix).
            attention_mask: (B, T), 1 = token, 0 = padding (left or right); default all ones.
            labels: (B, T) as for the wrapped model (loss over real tokens only; set padded
                positions to -100 yourself, as with any HF model).
            **kwargs: forwarded to the model (``position_ids``/``cache`` are set here and refused).

        Returns:
            the model's ``CausalLMOutputWithPast``: ``logits`` (B, T, V), ``loss``, ``cache``
            (prefix + these tokens).
        """
        for k in ("cache", "past_key_values", "position_ids", "cache_position"):
            if kwargs.get(k) is not None:
                raise ValueError(f"{k}: PrefixedCausalLM.forward sets it itself; do not pass it")
            kwargs.pop(k, None)
        mask = self._check(input_ids, attention_mask)
        b = input_ids.shape[0]
        p = self.num_prefix
        full_mask = torch.cat([torch.ones(b, p, dtype=mask.dtype, device=mask.device), mask], dim=1)
        return self.model(
            input_ids=input_ids,
            attention_mask=full_mask,  # (B, P + T)
            position_ids=prefixed_position_ids(mask, p),  # (B, T)
            cache=self.fresh_cache(b),
            labels=labels,
            use_cache=kwargs.pop("use_cache", True),
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **gen_kwargs: Any
    ) -> torch.Tensor:
        """HF ``generate`` behind the prefix; returns (B, T + new) ids without the prefix.

        Args:
            input_ids: (B, T) prompt ids (left padding for batches, as usual for decoders).
            attention_mask: (B, T); default all ones.
            **gen_kwargs: forwarded to ``model.generate`` (``max_new_tokens``, ``do_sample``, ...).
        """
        mask = self._check(input_ids, attention_mask)
        b = input_ids.shape[0]
        pre = torch.tensor(self.prefix.ids, dtype=input_ids.dtype, device=input_ids.device)
        full_ids = torch.cat([pre[None].expand(b, -1), input_ids], dim=1)
        full_mask = torch.cat(
            [torch.ones(b, self.num_prefix, dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        out = self.model.generate(
            input_ids=full_ids, attention_mask=full_mask, cache=self.fresh_cache(b), **gen_kwargs
        )
        return out[:, self.num_prefix :]
