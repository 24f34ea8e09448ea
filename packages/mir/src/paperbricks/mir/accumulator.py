"""Streaming MIR over a HF vision-language model with forward hooks, in two passes (arXiv 2410.07167).

The official code keeps every layer's hidden states of every sample (about 15 GB of fp16 vision
rows for a 7B model at N = 100) and then runs :func:`paperbricks.mir.metric.modality_integration_rate`
on them. Here hooks on the language model's decoder layers reduce each batch as it flows past:

- **pass 1** (statistics), per layer and modality: the row norms (kept, one float64 per row) for
  the text scale ``s_l = 1 / mean ‖t‖``, the lower median and the unbiased std of the norms, and
  the coordinate-wise lower median row, which needs the rows themselves: ``median="exact"`` keeps
  them losslessly in the hidden states' own dtype, in memory up to ``memory_limit_bytes`` and in a
  temporary on-disk memmap beyond; ``median="reservoir"`` keeps a uniform seeded sample of
  ``reservoir_size`` rows (approximate median, bounded memory).
- **pass 2** (moments): float64 ``Σx``, ``Σxxᵀ`` (core-kernels ``StreamingMoments``, shifted by
  the median row) of the inlier rows; the ``c`` outlier rows are added at the end as ``c`` copies of
  the median row.

Outlier detection and the median are scale-equivariant, so the statistics are taken on unscaled
rows and the scale enters at the end: ``FD_l`` is computed from ``(s·μ, s²·Σ)`` per modality,
which equals the in-memory pipeline (scale, then replace outliers, then FD) up to float rounding.

Hidden-state convention (transformers 5.24): ``output_hidden_states`` returns ``L + 1`` states,
index 0 the decoder input (embeddings with image features scattered in), index ``k`` the output
of decoder layer ``k − 1``, and the **last** one replaced by the language model's
``last_hidden_state``, i.e. **after the final norm** (``capture_outputs(tie_last_hidden_states=True)``,
overridable by ``config.tie_last_hidden_states``). ``last_hidden="auto"`` reproduces that by
hooking the language model's output for index ``L``; ``"pre_norm"`` uses the raw last decoder
layer output instead. The default ``layers`` are ``1 … L`` (the paper skips the embedding output).
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from paperbricks.core_kernels.stats import StreamingMoments

from .masks import MaskFn, modality_masks, resolve_image_token_id
from .metric import (
    _FAST_WARNING,
    METHODS,
    MIRResult,
    frechet_distance,
    mir_from_layer_fd,
    official_fast_frechet,
)

__all__ = ["MIRAccumulator", "find_decoder_layers", "find_language_model"]

logger = logging.getLogger(__name__)

_MODALITIES = ("vision", "text")
_INT_VIEW = {
    1: (torch.uint8, np.uint8),
    2: (torch.int16, np.int16),
    4: (torch.int32, np.int32),
    8: (torch.int64, np.int64),
}


# --------------------------------------------------------------------------- model discovery


def _has_layers(module: nn.Module) -> bool:
    layers = getattr(module, "layers", None)
    return isinstance(layers, nn.ModuleList) and len(layers) > 0


def find_language_model(model: nn.Module) -> nn.Module:
    """The text decoder of a HF (vision-)language model: the module holding the decoder ``layers``.

    Tries ``model.get_decoder()`` (LLaVA, Mistral3 / Llava-Pixtral, Aria and causal LMs in
    transformers 5.x return their text model), then the first submodule named like a language /
    text model with a non-empty ``layers`` ``ModuleList`` outside any vision tower.

    Raises:
        ValueError: nothing found (pass ``layers=`` explicitly to the caller).
    """
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            dec = get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            dec = None
        if isinstance(dec, nn.Module) and _has_layers(dec):
            return dec
    if _has_layers(model):
        return model
    candidates = []
    for name, mod in model.named_modules():
        lowered = name.lower()
        if any(k in lowered for k in ("vision", "visual", "image", "projector")):
            continue
        if _has_layers(mod):
            candidates.append((("language" not in lowered and "text" not in lowered), name, mod))
    if candidates:
        return sorted(candidates, key=lambda c: (c[0], len(c[1])))[0][2]
    raise ValueError(
        f"model: could not find the language model's decoder layers in {type(model).__name__}; "
        "pass the decoder layers explicitly"
    )


def find_decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of ``model``'s language model, in order (as the model runs them)."""
    lm = find_language_model(model)
    layers = list(lm.layers)
    n = getattr(getattr(lm, "config", None), "num_hidden_layers", None)
    if isinstance(n, int) and 0 < n < len(layers):
        layers = layers[:n]  # HF runs self.layers[: config.num_hidden_layers]
    return layers


# --------------------------------------------------------------------------- row stores


class _RowStore:
    """All rows of one (layer, modality), lossless in their own dtype; spills to a disk memmap."""

    def __init__(self, memory_limit: int, spill_dir: str | None) -> None:
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        self.chunks: list[torch.Tensor] = []
        self.bytes = 0
        self.n = 0
        self.dim: int | None = None
        self.dtype: torch.dtype | None = None
        self.path: str | None = None
        self._fh = None

    def _write(self, rows: torch.Tensor) -> None:
        tview, _ = _INT_VIEW[rows.element_size()]
        self._fh.write(rows.view(tview).numpy().tobytes())

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu").contiguous()  # (n, D)
        if self.dtype is None:
            self.dtype, self.dim = rows.dtype, rows.shape[1]
        if self._fh is None and self.bytes + rows.numel() * rows.element_size() > self.memory_limit:
            fd, self.path = tempfile.mkstemp(prefix="mir_rows_", suffix=".bin", dir=self.spill_dir)
            self._fh = os.fdopen(fd, "wb")
            for c in self.chunks:
                self._write(c)
            self.chunks = []
            logger.info("MIRAccumulator: spilling rows to %s", self.path)
        if self._fh is not None:
            self._write(rows)
        else:
            self.chunks.append(rows)
        self.bytes += rows.numel() * rows.element_size()
        self.n += rows.shape[0]

    def median(self, block_bytes: int = 1 << 28) -> torch.Tensor:
        """Coordinate-wise lower median ``(D,)`` float64 (exact)."""
        if self._fh is None:
            return torch.cat(self.chunks).to(torch.float64).median(dim=0).values
        self._fh.flush()
        _, nview = _INT_VIEW[torch.empty((), dtype=self.dtype).element_size()]
        mm = np.memmap(self.path, dtype=nview, mode="r", shape=(self.n, self.dim))
        cols = max(1, block_bytes // max(1, 8 * self.n))
        out = []
        for c0 in range(0, self.dim, cols):
            block = torch.from_numpy(np.array(mm[:, c0 : c0 + cols], copy=True))
            out.append(block.view(self.dtype).to(torch.float64).median(dim=0).values)
        del mm
        return torch.cat(out)

    def close(self) -> None:
        self.chunks = []
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None


class _Reservoir:
    """A uniform sample of at most ``k`` rows (Algorithm R), seeded."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.gen = torch.Generator().manual_seed(seed)
        self.buf: torch.Tensor | None = None
        self.filled = 0
        self.seen = 0

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu")  # (n, D)
        if self.buf is None:
            self.buf = torch.empty(self.k, rows.shape[1], dtype=rows.dtype)
        take = min(self.k - self.filled, rows.shape[0])
        if take:
            self.buf[self.filled : self.filled + take] = rows[:take]
            self.filled += take
        rest = rows[take:]
        if rest.shape[0]:
            idx = self.seen + take + torch.arange(rest.shape[0], dtype=torch.float64)  # 0-based
            slot = torch.rand(rest.shape[0], generator=self.gen, dtype=torch.float64) * (idx + 1)
            slot = slot.floor().long()
            for r, j in zip(rest[slot < self.k], slot[slot < self.k].tolist(), strict=True):
                self.buf[j] = r
        self.seen += rows.shape[0]

    def median(self) -> torch.Tensor:
        return self.buf[: self.filled].to(torch.float64).median(dim=0).values

    def close(self) -> None:
        self.buf = None


# --------------------------------------------------------------------------- the accumulator


class MIRAccumulator:
    """Two-pass streaming MIR over a HF vision-language model (forward hooks, bounded memory).

    Args:
        model: a HF VLM (``LlavaForConditionalGeneration``, ``Mistral3ForConditionalGeneration``,
            ``AriaForConditionalGeneration``, ...) or ``None`` to feed hidden states yourself
            with :meth:`observe_states`. Hooks are registered here and removed by :meth:`remove`
            (or leaving a ``with`` block).
        image_token_id: image token id; default ``model.config.image_token_id``. Not needed with
            ``mask_fn``.
        mask_fn: ``mask_fn(batch) -> (vision (B, T) bool, text (B, T) bool)`` for models whose
            image positions are not ``input_ids == image_token_id``. Default: :func:`modality_masks`.
        span_token_ids: extra ids inside an image span (Pixtral's ``[IMG_BREAK]``, ``[IMG_END]``),
            excluded from text rows.
        layers: hidden-state indices in the ``output_hidden_states`` numbering ``0 … L``; default
            ``1 … L``.
        median: ``"exact"`` (default; rows kept losslessly, spilled to disk beyond
            ``memory_limit_bytes``) or ``"reservoir"`` (seeded sample of ``reservoir_size`` rows).
        last_hidden: ``"auto"`` (match ``output_hidden_states`` of transformers 5.24: the last index
            is after the final norm unless ``config.tie_last_hidden_states`` is False),
            ``"post_norm"`` or ``"pre_norm"``.
        sigma: outlier threshold (default 3.0); ``outliers=False`` skips replacement.
        normalize: text-centric scaling (default True).
        reservoir_size: rows per (layer, modality) kept by ``median="reservoir"``; default 4096.
        seed: seed of the reservoir sampling; default 0.
        memory_limit_bytes: total in-memory budget for exact-median rows before spilling; default
            1 GiB. ``spill_dir``: where the memmap files go (default the system temp dir).
        accum_device: device of the float64 moment accumulators (``2·L·D²`` doubles); default the
            model's device.

    Usage: ``run(batches)`` does both passes; or by hand, ``observe(batch)`` for every batch,
    ``end_stats()``, ``observe(batch)`` again for every batch, then ``result(method)``.

    Examples:
        >>> import torch
        >>> from paperbricks.mir.metric import modality_integration_rate
        >>> g = torch.Generator().manual_seed(0)
        >>> hs = torch.randn(2, 4, 12, 8, generator=g)  # (L, B, T, D)
        >>> vis = torch.zeros(4, 12, dtype=torch.bool)
        >>> vis[:, :6] = True
        >>> acc = MIRAccumulator(None, layers=[0, 1])
        >>> for phase in range(2):
        ...     for b in range(4):  # one sample at a time
        ...         acc.observe_states(hs[:, b : b + 1], vis[b : b + 1], ~vis[b : b + 1])
        ...     if phase == 0:
        ...         acc.end_stats()
        >>> streamed = acc.result()
        >>> abs(streamed.mir - modality_integration_rate(hs, vis, ~vis).mir) < 1e-9
        True
    """

    def __init__(
        self,
        model: nn.Module | None,
        *,
        image_token_id: int | None = None,
        mask_fn: MaskFn | None = None,
        span_token_ids: Iterable[int] = (),
        layers: Sequence[int] | None = None,
        median: Literal["exact", "reservoir"] = "exact",
        last_hidden: Literal["auto", "post_norm", "pre_norm"] = "auto",
        sigma: float = 3.0,
        outliers: bool = True,
        normalize: bool = True,
        reservoir_size: int = 4096,
        seed: int = 0,
        memory_limit_bytes: int = 1 << 30,
        spill_dir: str | None = None,
        accum_device: torch.device | str | None = None,
    ) -> None:
        if median not in ("exact", "reservoir"):
            raise ValueError(f"median: expected 'exact' or 'reservoir', got {median!r}")
        if last_hidden not in ("auto", "post_norm", "pre_norm"):
            raise ValueError(
                f"last_hidden: expected 'auto', 'post_norm' or 'pre_norm', got {last_hidden!r}"
            )
        if not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma: expected a positive number, got {sigma!r}")
        if not isinstance(reservoir_size, int) or reservoir_size < 2:
            raise ValueError(f"reservoir_size: expected an int >= 2, got {reservoir_size!r}")
        if mask_fn is not None and not callable(mask_fn):
            raise TypeError(f"mask_fn: expected a callable, got {type(mask_fn).__name__}")
        self.model = model
        self.mask_fn = mask_fn
        self.span_token_ids = [int(i) for i in span_token_ids]
        self.median_mode = median
        self.sigma = float(sigma)
        self.outliers = bool(outliers)
        self.normalize = bool(normalize)
        self.reservoir_size = reservoir_size
        self.seed = seed
        self.memory_limit_bytes = int(memory_limit_bytes)
        self.spill_dir = spill_dir
        self.phase: Literal["stats", "moments", "done"] = "stats"
        self._handles: list = []
        self._active = False
        self._masks: tuple[torch.Tensor, torch.Tensor] | None = None
        self._seen: set[int] = set()

        self.image_token_id: int | None = None
        if model is not None:
            if mask_fn is None:
                self.image_token_id = resolve_image_token_id(model, image_token_id)
            self._lm = find_language_model(model)
            self._decoder_layers = find_decoder_layers(model)
            n_layers = len(self._decoder_layers)
            ref = next(model.parameters(), None)
            self.device = ref.device if ref is not None else torch.device("cpu")
            self.dtype = ref.dtype if ref is not None else torch.float32
            if last_hidden == "auto":
                tie = getattr(getattr(self._lm, "config", None), "tie_last_hidden_states", None)
                last_hidden = "pre_norm" if tie is False else "post_norm"
        else:
            self._lm, self._decoder_layers, n_layers = None, [], None
            self.device, self.dtype = torch.device("cpu"), torch.float32
            self.image_token_id = image_token_id
        self.last_hidden = last_hidden
        if layers is None:
            if n_layers is None:
                raise ValueError("layers: required when model is None (indices of layer_states)")
            layers = range(1, n_layers + 1)
        self.layers = [int(i) for i in layers]
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers: expected distinct indices, got {list(layers)!r}")
        if n_layers is not None:
            bad = [i for i in self.layers if not 0 <= i <= n_layers]
            if bad:
                raise ValueError(
                    f"layers: indices {bad} outside 0..{n_layers} (hidden-state numbering)"
                )
        self.n_layers = n_layers
        self.accum_device = torch.device(accum_device) if accum_device is not None else self.device

        # pass-1 state, per (layer, modality)
        n_stores = 2 * len(self.layers)
        self._norms = {key: [] for key in self._keys()}
        self._stores: dict[tuple[int, str], Any] = {}
        if self.outliers:
            for i, key in enumerate(self._keys()):
                if median == "exact":
                    self._stores[key] = _RowStore(self.memory_limit_bytes // n_stores, spill_dir)
                else:
                    self._stores[key] = _Reservoir(reservoir_size, seed + i)
        # filled by end_stats()
        self.scales: dict[int, float] = {}
        self._norm_stats: dict[tuple[int, str], tuple[float, float]] = {}
        self._medians: dict[tuple[int, str], torch.Tensor] = {}
        self._counts: dict[tuple[int, str], int] = {}
        # pass-2 state
        self._moments: dict[tuple[int, str], StreamingMoments] = {}
        self._n_out: dict[tuple[int, str], int] = {key: 0 for key in self._keys()}
        self._counts2: dict[tuple[int, str], int] = {key: 0 for key in self._keys()}

        if model is not None:
            self._register_hooks()

    def _keys(self) -> list[tuple[int, str]]:
        return [(li, mod) for li in self.layers for mod in _MODALITIES]

    # ------------------------------------------------------------------ hooks

    def _register_hooks(self) -> None:
        wanted = set(self.layers)
        n = self.n_layers
        if 0 in wanted:

            def pre_hook(module, args, kwargs):
                hs = args[0] if args else kwargs.get("hidden_states")
                self._consume(0, hs)

            self._handles.append(
                self._decoder_layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
            )
        for k, layer in enumerate(self._decoder_layers, start=1):
            if k not in wanted or (k == n and self.last_hidden == "post_norm"):
                continue
            self._handles.append(layer.register_forward_hook(self._make_hook(k)))
        if n in wanted and self.last_hidden == "post_norm":

            def lm_hook(module, args, output):
                hs = getattr(output, "last_hidden_state", None)
                if hs is None:
                    hs = output[0] if isinstance(output, (tuple, list)) else output
                self._consume(n, hs)

            self._handles.append(self._lm.register_forward_hook(lm_hook))

    def _make_hook(self, index: int) -> Callable:
        def hook(module, args, output):
            hs = output[0] if isinstance(output, (tuple, list)) else output
            self._consume(index, hs)

        return hook

    def remove(self) -> None:
        """Remove the forward hooks and free row stores (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for store in self._stores.values():
            store.close()

    def __enter__(self) -> MIRAccumulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __del__(self) -> None:  # temp files must not outlive the accumulator
        try:
            for store in self._stores.values():
                store.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ feeding

    def _batch_masks(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask_fn is not None:
            vis, txt = self.mask_fn(batch)
        else:
            if "input_ids" not in batch:
                raise ValueError(
                    "batch: expected an 'input_ids' entry to locate image tokens (or pass mask_fn)"
                )
            vis, txt = modality_masks(
                batch["input_ids"],
                self.image_token_id,
                batch.get("attention_mask"),
                span_token_ids=self.span_token_ids,
            )
        return vis, txt

    def observe(self, batch: Mapping[str, Any]) -> None:
        """Run ``model(**batch)`` (no grad, no cache) and reduce the hooked hidden states.

        ``batch`` is a processor output (``input_ids``, ``attention_mask``, ``pixel_values`` ...);
        tensors are moved to the model's device and floating ones cast to its dtype.
        """
        if self.model is None:
            raise ValueError("observe: this accumulator has no model; use observe_states()")
        if self.phase == "done":
            raise ValueError("observe: result() was already computed; start a new accumulator")
        vis, txt = self._batch_masks(batch)
        kwargs = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            kwargs[key] = value
        kwargs.setdefault("use_cache", False)
        params = inspect.signature(self.model.forward).parameters
        if "logits_to_keep" in params:
            kwargs.setdefault("logits_to_keep", 1)
        self._masks = (vis.to(self.device).bool(), txt.to(self.device).bool())
        self._check_masks(*self._masks)
        self._seen = set()
        self._active = True
        try:
            with torch.no_grad():
                self.model(**kwargs)
        finally:
            self._active = False
            self._masks = None
        missing = set(self.layers) - self._seen
        if missing:
            raise RuntimeError(
                f"MIRAccumulator: hidden states of layers {sorted(missing)} were not seen during "
                "the forward pass; check last_hidden= and layers="
            )

    def observe_states(
        self,
        layer_states: Sequence[torch.Tensor] | torch.Tensor,
        vision_mask: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> None:
        """Reduce hidden states you computed yourself.

        Args:
            layer_states: indexable by the accumulator's ``layers`` (e.g. an ``output_hidden_states``
                tuple), each ``(B, T, D)``.
            vision_mask, text_mask: ``(B, T)`` bool, disjoint.
        """
        if self.phase == "done":
            raise ValueError("observe_states: result() was already computed")
        self._check_masks(vision_mask, text_mask)
        self._masks = (vision_mask.bool(), text_mask.bool())
        self._active = True
        try:
            for li in self.layers:
                self._consume(li, layer_states[li])
        finally:
            self._active = False
            self._masks = None

    @staticmethod
    def _check_masks(vis: torch.Tensor, txt: torch.Tensor) -> None:
        if vis.shape != txt.shape or vis.dim() != 2:
            raise ValueError(
                f"vision_mask, text_mask: expected equal (B, T) shapes, got {tuple(vis.shape)} and "
                f"{tuple(txt.shape)}"
            )
        if bool((vis & txt).any()):
            raise ValueError("vision_mask, text_mask: expected disjoint masks, they overlap")

    def _consume(self, index: int, hs: torch.Tensor | None) -> None:
        if not self._active or hs is None:
            return
        vis, txt = self._masks
        if tuple(hs.shape[:2]) != tuple(vis.shape):
            raise ValueError(
                f"layer {index}: hidden states {tuple(hs.shape)} do not match the masks "
                f"{tuple(vis.shape)}"
            )
        self._seen.add(index)
        for mod, mask in (("vision", vis), ("text", txt)):
            rows = hs.detach()[mask.to(hs.device)]  # (n, D), model dtype
            if rows.shape[0] == 0:
                continue
            key = (index, mod)
            if self.phase == "stats":
                self._norms[key].append(rows.to(torch.float64).norm(dim=-1).cpu())
                if self.outliers:
                    self._stores[key].append(rows)
            else:
                self._update_moments(key, rows)

    # ------------------------------------------------------------------ pass boundaries

    def end_stats(self) -> None:
        """Close pass 1: text scales, norm median/std and median rows per (layer, modality)."""
        if self.phase != "stats":
            raise ValueError(f"end_stats: expected phase 'stats', got {self.phase!r}")
        for key in self._keys():
            if not self._norms[key]:
                raise ValueError(
                    f"layer {key[0]}: no {key[1]} rows were observed in pass 1 (empty modality)"
                )
            norms = torch.cat(self._norms[key])  # (N,)
            self._counts[key] = norms.numel()
            if norms.numel() < 2:
                raise ValueError(
                    f"layer {key[0]}: {key[1]} has {norms.numel()} row(s); at least 2 are needed"
                )
            sd = float(norms.std())
            self._norm_stats[key] = (float(norms.median()), sd)
            if key[1] == "text":
                mean_norm = float(norms.mean())
                if self.normalize and mean_norm == 0:
                    raise ValueError(f"layer {key[0]}: the mean text-row norm is 0")
                self.scales[key[0]] = 1.0 / mean_norm if self.normalize else 1.0
            if self.outliers:
                store = self._stores[key]
                self._medians[key] = store.median().to(self.accum_device)
                store.close()
            self._norms[key] = []
        self.phase = "moments"

    def _update_moments(self, key: tuple[int, str], rows: torch.Tensor) -> None:
        x = rows.to(device=self.accum_device, dtype=torch.float64)  # (n, D)
        mom = self._moments.get(key)
        if mom is None:
            shift = self._medians.get(key, x[0])
            mom = StreamingMoments(x.shape[1], device=self.accum_device, shift=shift)
            self._moments[key] = mom
        self._counts2[key] += x.shape[0]
        if self.outliers:
            m, sd = self._norm_stats[key]
            out = (x.norm(dim=-1) - m).abs() > self.sigma * sd  # (n,)
            n_out = int(out.sum())
            if n_out:
                self._n_out[key] += n_out
                x = x[~out]
        if x.shape[0]:
            mom.update(x)

    def result(self, method: str = "exact") -> MIRResult:
        """Finish pass 2 and return the :class:`MIRResult`.

        ``method``: ``"exact"`` (default, = ``"eigh"``: only moments are kept), ``"eigh"``,
        ``"eigvals"``, ``"sqrtm"`` or ``"official_fast"``.
        """
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        if method == "exact":
            method = "eigh"  # only moments are kept: the cross-Gram path needs the rows
        if method == "gram":
            raise ValueError(
                "method: 'gram' needs the sample rows, which streaming does not keep; use 'eigh' "
                "(or modality_integration_rate on in-memory states)"
            )
        if self.phase == "stats":
            raise ValueError("result: pass 1 is not closed; call end_stats() and run pass 2")
        if self.phase == "moments":
            for key in self._keys():
                if self._counts2[key] != self._counts[key]:
                    raise ValueError(
                        f"layer {key[0]}: pass 2 saw {self._counts2[key]} {key[1]} rows but pass 1 "
                        f"saw {self._counts[key]}; both passes must see the same data"
                    )
                n_out = self._n_out[key]
                if n_out:
                    med = self._medians[key]
                    self._moments[key].update(med.unsqueeze(0).expand(n_out, -1))
            self.phase = "done"
        if method == "official_fast":
            warnings.warn(_FAST_WARNING, RuntimeWarning, stacklevel=2)
        fds, scales = [], []
        for li in self.layers:
            s = self.scales[li]
            mv, mt = self._moments[(li, "vision")], self._moments[(li, "text")]
            a = (s * mv.mean, s * s * mv.cov)
            b = (s * mt.mean, s * s * mt.cov)
            if method == "official_fast":
                fd = official_fast_frechet(a, b)
            else:
                fd = frechet_distance(a, b, method=method)
            fds.append(fd.cpu())
            scales.append(s)
        per_layer = torch.stack(fds).to(torch.float64)
        li0 = self.layers[0]
        return MIRResult(
            mir=mir_from_layer_fd(per_layer),
            per_layer_fd=per_layer,
            scales=torch.tensor(scales, dtype=torch.float64),
            n_outliers={
                mod: torch.tensor([self._n_out[(li, mod)] for li in self.layers], dtype=torch.int64)
                for mod in _MODALITIES
            },
            layers=list(self.layers),
            method=method,
            n_vision=self._counts[(li0, "vision")],
            n_text=self._counts[(li0, "text")],
            extra={"median": self.median_mode, "last_hidden": self.last_hidden},
        )

    def run(
        self,
        batches: Callable[[], Iterable[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
        *,
        method: str = "exact",
        progress: bool = True,
        total: int | None = None,
    ) -> MIRResult:
        """Both passes over ``batches`` and the result.

        Args:
            batches: a re-iterable sequence of model-input dicts, or a zero-argument callable
                returning a fresh iterable (called once per pass).
            method: Fréchet method for :meth:`result`.
            progress: show a tqdm bar per pass (default True).
            total: number of batches for the bar when ``batches`` is a callable.
        """
        if callable(batches):
            make = batches
        elif isinstance(batches, Sequence):
            total = len(batches) if total is None else total

            def make():
                return batches
        else:
            raise TypeError(
                "batches: expected a sequence of batches or a callable returning an iterable, got "
                f"{type(batches).__name__} (a one-shot iterator cannot be read twice)"
            )
        from tqdm.auto import tqdm

        for phase, desc in (
            ("stats", "MIR pass 1/2 (statistics)"),
            ("moments", "MIR pass 2/2 (moments)"),
        ):
            if self.phase != phase:
                raise ValueError(f"run: expected a fresh accumulator, phase is {self.phase!r}")
            for batch in tqdm(make(), total=total, desc=desc, disable=not progress):
                self.observe(batch)
            if phase == "stats":
                self.end_stats()
        return self.result(method)
