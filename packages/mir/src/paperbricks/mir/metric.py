"""The Modality Integration Rate (MIR) over in-memory hidden states (arXiv 2410.07167, §3).

Per language-model layer ``l`` with vision rows ``V_l`` (image-token positions) and text rows
``T_l`` (positions after the last image token), in this order:

1. text-centric scaling ``s_l = 1 / mean_{t ∈ T_l} ‖t‖₂``; ``V ← s_l·V``, ``T ← s_l·T``;
2. 3σ outlier replacement per modality: with row norms ``n_i``, lower median ``m`` and unbiased
   std ``σ``, rows with ``|n_i − m| > 3σ`` (strictly) become the coordinate-wise lower-median row;
3. ``FD_l = ‖μ_V − μ_T‖² + tr Σ_V + tr Σ_T − 2·tr((Σ_V Σ_T)^{1/2})`` (unbiased covariances);

and ``MIR = log₁₀ Σ_l FD_l`` (lower = better integrated modalities).

What differs from the official code (``shikiw/Modality-Integration-Rate``, ``mir_util.py``):

- The Fréchet distance is exact and float64 (core-kernels ``stats.frechet_distance``: ``eigh``
  by default, ``gram`` = nuclear norm of the cross-Gram when rows are fewer than dimensions,
  ``eigvals``, scipy ``sqrtm``). The official default "fast" mode uses an iterative square root
  started at its own fixed point ``(A, I)``, so it returns ``A`` and its "FD" uses
  ``tr(Σ_V Σ_T)`` instead of ``tr((Σ_V Σ_T)^{1/2})``. ``method="official_fast"`` reproduces that
  number on purpose (with a warning); it is not a distance: it scales as ``s⁴`` in its cross term
  and can be negative.
- Outlier detection and the median are scale-equivariant, so ``FD_l(scaled) = s_l²·FD_l(raw,
  outlier-replaced)``; the streaming accumulator (:mod:`paperbricks.mir.accumulator`) uses this.
- When ``Σ_l FD_l <= 0`` (possible only in ``official_fast`` mode, or at rounding level for
  identical distributions) ``log₁₀`` is undefined: ``mir`` is NaN and a warning is logged and
  raised as a ``RuntimeWarning``; the per-layer values are still returned.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from paperbricks.core_kernels.stats import StreamingMoments
from paperbricks.core_kernels.stats import frechet_distance as _exact_frechet

__all__ = [
    "METHODS",
    "MIRResult",
    "frechet_distance",
    "mir_from_layer_fd",
    "modality_integration_rate",
    "replace_outliers",
    "text_centric_normalize",
]

logger = logging.getLogger(__name__)

Method = Literal["exact", "eigh", "gram", "eigvals", "sqrtm", "official_fast"]
#: ``"exact"`` = ``"gram"`` when both sample sets have fewer rows than dimensions, else ``"eigh"``.
METHODS: tuple[str, ...] = ("exact", "eigh", "gram", "eigvals", "sqrtm", "official_fast")
_FAST_WARNING = (
    "method='official_fast' reproduces the official MIR code's default mode, whose matrix "
    "square root returns its input: the trace term is tr(Σ_V Σ_T), not tr((Σ_V Σ_T)^{1/2}). "
    "The result is not a Fréchet distance (not scale-covariant, possibly negative); use "
    "method='eigh' for the exact metric."
)

Moments = tuple[torch.Tensor, torch.Tensor]


@dataclass
class MIRResult:
    """The MIR of a model on an evaluation set, with its per-layer parts.

    Attributes:
        mir: ``log₁₀ Σ_l per_layer_fd[l]`` (NaN when the sum is not positive).
        per_layer_fd: ``(L,)`` float64, the Fréchet distance of each layer after text-centric
            scaling and outlier replacement.
        scales: ``(L,)`` float64, ``s_l = 1 / mean text-row norm`` (ones when not normalising).
        n_outliers: ``{"vision": (L,) int64, "text": (L,) int64}`` rows replaced per layer.
        layers: the hidden-state indices the entries refer to.
        method: the Fréchet method used.
        n_vision, n_text: number of vision and text rows per layer.
    """

    mir: float
    per_layer_fd: torch.Tensor
    scales: torch.Tensor
    n_outliers: dict[str, torch.Tensor]
    layers: list[int]
    method: str = "eigh"
    n_vision: int = 0
    n_text: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def total_fd(self) -> float:
        """``Σ_l FD_l`` (the number whose log₁₀ is the MIR)."""
        return float(self.per_layer_fd.sum())

    def to_dict(self) -> dict:
        """JSON-ready plain Python values."""
        return {
            "mir": self.mir,
            "total_fd": self.total_fd,
            "method": self.method,
            "layers": list(self.layers),
            "per_layer_fd": [float(v) for v in self.per_layer_fd],
            "scales": [float(v) for v in self.scales],
            "n_outliers": {k: [int(v) for v in t] for k, t in self.n_outliers.items()},
            "n_vision": self.n_vision,
            "n_text": self.n_text,
            **({"extra": self.extra} if self.extra else {}),
        }


# --------------------------------------------------------------------------- Fréchet distance


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return str(method)


def _moments(name: str, x: torch.Tensor | StreamingMoments | Moments) -> Moments:
    """(mean (..., D), unbiased cov (..., D, D)) in float64."""
    if isinstance(x, StreamingMoments):
        return x.mean, x.cov
    if isinstance(x, tuple):
        if len(x) != 2:
            raise ValueError(f"{name}: expected a (mean, cov) pair, got a tuple of length {len(x)}")
        return x[0].to(torch.float64), x[1].to(torch.float64)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a tensor (..., N, D), StreamingMoments or (mean, cov), "
            f"got {type(x).__name__}"
        )
    if x.dim() < 2 or x.shape[-2] < 2:
        raise ValueError(f"{name}: expected samples (..., N >= 2, D), got shape {tuple(x.shape)}")
    x64 = x.detach().to(torch.float64)
    mu = x64.mean(dim=-2)  # (..., D)
    xc = x64 - mu.unsqueeze(-2)  # (..., N, D)
    return mu, xc.transpose(-1, -2) @ xc / (x.shape[-2] - 1)


def official_fast_frechet(
    x: torch.Tensor | StreamingMoments | Moments, y: torch.Tensor | StreamingMoments | Moments
) -> torch.Tensor:
    """The official "fast" mode's number: ``‖Δμ‖² + tr Σx + tr Σy − 2·tr(Σx Σy)``, float64.

    No warning here (see :func:`frechet_distance`); batched over leading dims.
    """
    mu_a, sa = _moments("x", x)
    mu_b, sb = _moments("y", y)
    tr_a = sa.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    tr_b = sb.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    cross = (sa * sb.transpose(-1, -2)).sum(dim=(-2, -1))  # tr(Σa Σb)
    return (mu_a - mu_b).square().sum(dim=-1) + tr_a + tr_b - 2.0 * cross


def frechet_distance(
    x: torch.Tensor | StreamingMoments | Moments,
    y: torch.Tensor | StreamingMoments | Moments,
    method: Method = "exact",
) -> torch.Tensor:
    """Fréchet distance between Gaussians fitted to ``x`` and ``y`` (float64), or the official bug.

    Args:
        x, y: samples ``(..., N, D)`` (any real dtype, ``N >= 2``), a ``StreamingMoments``, or a
            ``(mean (..., D), cov (..., D, D))`` pair. Leading dims give a batch (e.g. layers).
        method: ``"exact"`` (default: ``"gram"`` when both are samples with ``max(N) < D``, else
            ``"eigh"``), ``"eigh"``, ``"gram"`` (needs samples; cheap when ``N < D``),
            ``"eigvals"``, ``"sqrtm"`` (scipy), all exact and via core-kernels
            ``stats.frechet_distance``; or ``"official_fast"``, the official default mode's
            ``‖Δμ‖² + tr Σx + tr Σy − 2·tr(Σx Σy)`` (warns; not a distance).

    Returns:
        float64 tensor of the batch shape.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 4, generator=g, dtype=torch.float64)
        >>> float(frechet_distance(x, x)) < 1e-10
        True
    """
    method = _check_method(method)
    if method == "official_fast":
        warnings.warn(_FAST_WARNING, RuntimeWarning, stacklevel=2)
        return official_fast_frechet(x, y)
    return _exact_frechet(x, y, method="auto" if method == "exact" else method)


# --------------------------------------------------------------------------- per-layer steps


def text_centric_normalize(
    v: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale both modalities by ``s = 1 / mean_i ‖t_i‖₂`` (paper §3, text-centric normalisation).

    Args:
        v: vision rows ``(..., Nv, D)``, floating.
        t: text rows ``(..., Nt, D)``, floating, ``Nt >= 1``; leading dims match ``v``'s.

    Returns:
        ``(s·v, s·t, s)`` with ``s`` of shape ``(...)`` in ``t``'s dtype; afterwards the mean text
        row norm is 1.

    Raises:
        ValueError: empty text rows, mismatched ``D``, or a zero mean text norm.

    Examples:
        >>> import torch
        >>> v, t, s = text_centric_normalize(torch.ones(3, 2), torch.full((4, 2), 2.0))
        >>> round(float(t.norm(dim=-1).mean()), 6)
        1.0
    """
    for name, a in (("v", v), ("t", t)):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            raise TypeError(f"{name}: expected a floating tensor (..., N, D), got {_describe(a)}")
        if a.dim() < 2:
            raise ValueError(f"{name}: expected shape (..., N, D), got {tuple(a.shape)}")
    if t.shape[-2] == 0:
        raise ValueError("t: expected at least one text row, got 0")
    if v.shape[-1] != t.shape[-1] or v.shape[:-2] != t.shape[:-2]:
        raise ValueError(f"v, t: expected shapes (..., Nv, D), (..., Nt, D), got {_shapes(v, t)}")
    mean_norm = t.norm(dim=-1).mean(dim=-1)  # (...)
    if bool((mean_norm == 0).any()):
        raise ValueError("t: the mean text-row norm is 0, so the scale 1/mean is undefined")
    s = 1.0 / mean_norm
    return v * s[..., None, None].to(v.dtype), t * s[..., None, None], s


def outlier_stats(x: torch.Tensor, sigma: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The outlier mask and the replacement row of :func:`replace_outliers`, without replacing.

    Returns ``(mask (N,) bool, median_row (D,))``.
    """
    norms = x.norm(dim=-1)  # (N,)
    m = norms.median()  # lower median for even N (torch semantics, as upstream)
    sd = norms.std() if norms.numel() > 1 else torch.zeros((), dtype=norms.dtype)
    mask = (norms - m).abs() > sigma * sd
    return mask, x.median(dim=0).values


def replace_outliers(x: torch.Tensor, sigma: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace rows whose norm is more than ``sigma`` std from the median norm (paper §3).

    With ``n_i = ‖x_i‖₂``, ``m`` = lower median of ``n`` (``torch.median``: for even ``N`` the
    smaller of the two middle values), ``σ`` = unbiased std of ``n``: rows with
    ``|n_i − m| > sigma·σ`` (strictly; a tie at exactly ``sigma·σ`` stays) are replaced by the
    coordinate-wise lower-median row of ``x`` (computed over all rows, outliers included).
    A single row is never an outlier.

    Args:
        x: ``(N, D)`` floating rows, ``N >= 1``.
        sigma: threshold in standard deviations, positive; default 3.0.

    Returns:
        ``(x_replaced (N, D), mask (N,) bool)``; ``x`` is not modified.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[0.0]] * 9 + [[10.0]])
        >>> y, mask = replace_outliers(x)
        >>> int(mask.sum()), float(y[-1, 0])
        (1, 0.0)
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating tensor (N, D), got {_describe(x)}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected shape (N >= 1, D), got {tuple(x.shape)}")
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
        raise ValueError(f"sigma: expected a positive number, got {sigma!r}")
    mask, med = outlier_stats(x, float(sigma))
    return torch.where(mask[:, None], med.unsqueeze(0), x), mask


# --------------------------------------------------------------------------- the metric


def mir_from_layer_fd(per_layer_fd: torch.Tensor) -> float:
    """``log₁₀ Σ_l FD_l``; NaN (with a ``RuntimeWarning``) when the sum is not positive."""
    total = float(per_layer_fd.sum())
    if not total > 0:
        msg = (
            f"the summed per-layer Fréchet distance is {total!r} (not positive), so log10 is "
            "undefined; MIR is reported as NaN"
        )
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return math.nan
    return math.log10(total)


def _check_masks(
    vision_mask: torch.Tensor, text_mask: torch.Tensor, bt: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for name, m in (("vision_mask", vision_mask), ("text_mask", text_mask)):
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"{name}: expected a bool tensor (B, T), got {type(m).__name__}")
        if m.dtype != torch.bool:
            raise TypeError(f"{name}: expected dtype torch.bool, got {m.dtype}")
        if tuple(m.shape) != bt:
            raise ValueError(
                f"{name}: expected shape (B, T) = {bt} matching the hidden states, "
                f"got {tuple(m.shape)}"
            )
        if int(m.sum()) < 2:
            raise ValueError(
                f"{name}: expected at least 2 selected positions (a covariance needs 2 rows), "
                f"got {int(m.sum())}; is the modality empty?"
            )
        out.append(m)
    overlap = int((out[0] & out[1]).sum())
    if overlap:
        raise ValueError(
            f"vision_mask, text_mask: expected disjoint masks, {overlap} positions are in both"
        )
    return out[0], out[1]


def _stack_states(layer_states: object) -> list[torch.Tensor]:
    if isinstance(layer_states, torch.Tensor):
        if layer_states.dim() != 4:
            raise ValueError(
                f"layer_states: expected a (L, B, T, D) tensor or a sequence of (B, T, D), got "
                f"shape {tuple(layer_states.shape)}"
            )
        return list(layer_states.unbind(0))
    if not isinstance(layer_states, Sequence) or len(layer_states) == 0:
        raise TypeError(
            "layer_states: expected a non-empty sequence of (B, T, D) tensors or a (L, B, T, D) "
            f"tensor, got {_describe(layer_states)}"
        )
    states = list(layer_states)
    for i, h in enumerate(states):
        if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.dim() != 3:
            raise ValueError(
                f"layer_states[{i}]: expected a floating (B, T, D) tensor, got {_describe(h)}"
            )
        if h.shape != states[0].shape:
            raise ValueError(
                f"layer_states[{i}]: shape {tuple(h.shape)} differs from layer_states[0]'s "
                f"{tuple(states[0].shape)}"
            )
    return states


def modality_integration_rate(
    layer_states: Sequence[torch.Tensor] | torch.Tensor,
    vision_mask: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    layers: Sequence[int] | None = None,
    method: Method = "exact",
    normalize: bool = True,
    outliers: bool = True,
    sigma: float = 3.0,
) -> MIRResult:
    """MIR of hidden states held in memory: ``log₁₀ Σ_l FD_l`` (paper §3).

    Args:
        layer_states: hidden states per layer, a sequence of ``(B, T, D)`` tensors (e.g. a HF
            model's ``output_hidden_states`` tuple) or a ``(L, B, T, D)`` tensor; any float dtype
            (computed in float64).
        vision_mask: ``(B, T)`` bool, image-token positions (see :mod:`paperbricks.mir.masks`).
        text_mask: ``(B, T)`` bool, text positions (after the last image token); disjoint from
            ``vision_mask``. Each mask must select at least 2 positions.
        layers: indices into ``layer_states`` to use; default all of them. With a HF
            ``hidden_states`` tuple, pass ``range(1, len(hidden_states))`` to skip the embedding
            output as the paper does.
        method: ``"exact"`` (default: the cross-Gram nuclear norm when both modalities have
            fewer rows than dimensions, else ``"eigh"``; the result records which), ``"eigh"``,
            ``"gram"``, ``"eigvals"``, ``"sqrtm"`` (all exact, float64) or ``"official_fast"``
            (bug-compatible with the official default; warns).
        normalize: apply text-centric scaling (default True).
        outliers: apply the ``sigma``-σ outlier replacement per modality (default True).
        sigma: outlier threshold in standard deviations; default 3.0.

    Returns:
        :class:`MIRResult`.

    Raises:
        ValueError / TypeError: bad shapes or dtypes, masks that are empty, overlapping or of the
            wrong shape, unknown method or layer index.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> hs = torch.randn(3, 2, 10, 4, generator=g)  # (L, B, T, D)
        >>> vis = torch.zeros(2, 10, dtype=torch.bool); vis[:, 1:5] = True
        >>> txt = torch.zeros(2, 10, dtype=torch.bool); txt[:, 5:] = True
        >>> res = modality_integration_rate(hs, vis, txt)
        >>> res.per_layer_fd.shape, abs(res.mir - math.log10(res.total_fd)) < 1e-12
        (torch.Size([3]), True)
    """
    method = _check_method(method)
    states = _stack_states(layer_states)
    b, t = states[0].shape[:2]
    vision_mask, text_mask = _check_masks(vision_mask, text_mask, (b, t))
    if layers is None:
        layers = list(range(len(states)))
    else:
        layers = [int(i) for i in layers]
        if not layers:
            raise ValueError("layers: expected at least one layer index, got an empty list")
        bad = [i for i in layers if not -len(states) <= i < len(states)]
        if bad:
            raise ValueError(f"layers: indices {bad} out of range for {len(states)} layer states")
    if not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma: expected a positive number, got {sigma!r}")

    vm, tm = vision_mask.to(states[0].device), text_mask.to(states[0].device)
    if method == "exact":
        small = max(int(vm.sum()), int(tm.sum())) < states[0].shape[-1]
        method = "gram" if small else "eigh"
    fds, scales, n_out_v, n_out_t = [], [], [], []
    with warnings.catch_warnings():
        if method == "official_fast":
            warnings.warn(_FAST_WARNING, RuntimeWarning, stacklevel=2)
            warnings.simplefilter("ignore", RuntimeWarning)
        for li in layers:
            h = states[li].detach().to(torch.float64)  # (B, T, D)
            v, txt = h[vm], h[tm]  # (Nv, D), (Nt, D)
            if normalize:
                v, txt, s = text_centric_normalize(v, txt)
            else:
                s = torch.ones((), dtype=torch.float64)
            if outliers:
                v, mv = replace_outliers(v, sigma)
                txt, mt = replace_outliers(txt, sigma)
            else:
                mv = torch.zeros(v.shape[0], dtype=torch.bool)
                mt = torch.zeros(txt.shape[0], dtype=torch.bool)
            fds.append(frechet_distance(v, txt, method=method))
            scales.append(s.reshape(()))
            n_out_v.append(int(mv.sum()))
            n_out_t.append(int(mt.sum()))
    per_layer = torch.stack(fds).cpu()
    return MIRResult(
        mir=mir_from_layer_fd(per_layer),
        per_layer_fd=per_layer,
        scales=torch.stack(scales).cpu().to(torch.float64),
        n_outliers={
            "vision": torch.tensor(n_out_v, dtype=torch.int64),
            "text": torch.tensor(n_out_t, dtype=torch.int64),
        },
        layers=[li % len(states) for li in layers],
        method=method,
        n_vision=int(vm.sum()),
        n_text=int(tm.sum()),
    )


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _shapes(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{tuple(a.shape)} and {tuple(b.shape)}"
