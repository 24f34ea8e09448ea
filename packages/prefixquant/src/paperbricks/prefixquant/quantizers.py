"""PrefixQuant fake quantizers: static per-tensor activations, per-channel weights, per-head K/V.

PrefixQuant (arXiv:2410.05265, §3–4) quantizes every activation site with ONE static scale per
tensor, calibrated offline once the outlier tokens live in the prefix KV cache. The differences
from the obvious baselines (core-kernels' min/max observer, LSQ):

- **Initial scale** (official code): ``s = 2·max|x| / (2^b − 1)`` with codes in
  ``[−2^(b−1), 2^(b−1) − 1]`` (not core-kernels' ``max / (2^(b−1) − 1)``), so ``max`` maps to
  code ``2^(b−1) − 1/2`` and the top code saturates slightly.
- **Statistics across batches** (``stat``): the official ``ema_compat``
  (``new = 0.99·old + 0.01·incoming``, first batch initialises; not a maximum), a running
  ``max``, or the mean of per-batch ``percentile``s.
- **Gradients** (for block fine-tuning): the OmniQuant/PrefixQuant ``round_ste`` rule,
  ``∂x̂/∂x = 1`` inside the range (0 where clipped) and ``∂x̂/∂s = round(v) − v`` inside,
  ``qmin``/``qmax`` when clipped (``v = x/s``), i.e. LSQ without its gradient scaling.

Rounding and clamping are core-kernels' :func:`~paperbricks.core_kernels.quant.fake_quant`
(round-half-to-even); this module only adds the statistics, the scale rule and the scale
gradient. Only symmetric quantizers (zero point 0) are implemented.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from paperbricks.core_kernels.quant import LearnableFakeQuant, QuantSpec, fake_quant, quantize

__all__ = [
    "ActQuantizer",
    "KVQuantizer",
    "WeightQuantizer",
    "init_scale_from_max",
    "ste_fake_quant",
]

logger = logging.getLogger(__name__)

_GRANULARITIES = ("per_tensor", "per_token", "per_head", "per_group")
_MODES = ("static", "dynamic")
_STATS = ("ema_compat", "max", "percentile")
EMA_DECAY = 0.99  # official: new = 0.99·old + 0.01·incoming
EPS = 1e-8  # floor on scales (an all-zero tensor keeps a finite scale)


def init_scale_from_max(
    amax: torch.Tensor, bits: int, clip: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """PrefixQuant's symmetric initial scale ``s = 2·clip·max / (2^b − 1)`` (floored at 1e-8).

    Args:
        amax: ``max|x|`` statistic(s), any shape.
        bits: code width.
        clip: clip factor(s) in (0, 1], broadcast against ``amax``.

    Examples:
        >>> float(init_scale_from_max(torch.tensor(7.5), 4))
        1.0
    """
    return (2.0 * clip * amax.float() / (2**bits - 1)).clamp_min(EPS)


def ste_fake_quant(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor) -> torch.Tensor:
    """Fake-quantize ``x`` with ``scale`` (core-kernels ``fake_quant``) plus the official scale gradient.

    Value: ``(clamp(round(x/s), qmin, qmax))·s``. Gradients: to ``x`` as ``fake_quant`` (1 inside
    the range, 0 where clipped); to ``scale`` (when it requires grad) ``round(v) − v`` inside and
    the clamped code outside, ``v = x/s`` (OmniQuant's ``round_ste``).

    Args:
        x: float tensor.
        spec: symmetric QuantSpec whose scale shape ``scale`` broadcasts to.
        scale: positive scale(s), shape ``scale_shape(x.shape, spec)`` (or broadcastable to it).
    """
    s_d = scale.detach()
    xq = fake_quant(x, spec, s_d)
    if not (torch.is_grad_enabled() and scale.requires_grad):
        return xq
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    v = x.detach().to(cd) * (1.0 / s_d.to(cd))  # same order as fake_quant: x · (1/s)
    r = torch.round(v)
    inside = (r >= spec.qmin) & (r <= spec.qmax)
    q = r.clamp(spec.qmin, spec.qmax)
    ds = torch.where(inside, q - v, q)  # ∂x̂/∂s
    return xq + ((scale - s_d) * ds).to(x.dtype)


class ActQuantizer(nn.Module):
    """Activation fake quantizer: static (calibrated) or dynamic per-token.

    Args:
        bits: code width, 2..8.
        mode: ``"static"`` (calibrated scale, the paper's method) or ``"dynamic"`` (per-token
            scale from each input, with a learnable clip bound; the baseline).
        granularity: ``"per_tensor"`` (static; ``scale`` shape ``()``), ``"per_token"``
            (dynamic only), ``"per_head"`` (static; input ``(B, H, S, D)``, one scale per
            ``H``; ``scale`` shape ``(H,)``) or ``"per_group"`` (static; input ``(..., C)``
            split into ``C / group_size`` groups of the last dim, one scale per group shared
            by all tokens; ``scale`` shape ``(C / group_size,)``).
        num_channels: number of heads (``per_head``) or groups (``per_group``).
        group_size: elements per group (``per_group`` only).
        symmetric: only True (codes in ``[−2^(b−1), 2^(b−1) − 1]``, zero point 0).
        stat: ``"ema_compat"`` | ``"max"`` | ``"percentile"`` (see the module docstring).
        percentile: percentile of ``|x|`` for ``stat="percentile"``, in (0, 100].
        clip_init: initial clip bound of dynamic mode (spec: 0.95); ignored in static mode.

    State: ``scale`` (Parameter, trainable), ``amax`` (buffer, the calibrated statistic),
    ``num_batches`` (buffer), ``clip`` (Parameter, dynamic mode only). Flags: ``enabled``
    (False = identity), ``calibrating`` (True = record statistics, return ``x`` unchanged).

    Examples:
        >>> q = ActQuantizer(4)
        >>> q.calibrating = True
        >>> _ = q(torch.tensor([[-7.5, 3.0]]))
        >>> q.calibrating = False
        >>> _ = q.init_scale()
        >>> q(torch.tensor([[-7.5, 3.2, 20.0]])).tolist()
        [[-8.0, 3.0, 7.0]]
    """

    def __init__(
        self,
        bits: int,
        *,
        mode: str = "static",
        granularity: str = "per_tensor",
        num_channels: int | None = None,
        group_size: int | None = None,
        symmetric: bool = True,
        stat: str = "ema_compat",
        percentile: float = 99.99,
        clip_init: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise ValueError(f"bits: expected an int in [2, 8], got {bits!r}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        if granularity not in _GRANULARITIES:
            raise ValueError(f"granularity: expected one of {_GRANULARITIES}, got {granularity!r}")
        if (mode == "dynamic") != (granularity == "per_token"):
            raise ValueError(
                f"granularity: mode='dynamic' goes with 'per_token' and mode='static' with "
                f"per_tensor/per_head/per_group, got mode={mode!r}, granularity={granularity!r}"
            )
        if symmetric is not True:
            raise ValueError("symmetric: only symmetric activation quantizers are implemented")
        if stat not in _STATS:
            raise ValueError(f"stat: expected one of {_STATS}, got {stat!r}")
        if not isinstance(percentile, (int, float)) or not 0 < float(percentile) <= 100:
            raise ValueError(f"percentile: expected a number in (0, 100], got {percentile!r}")
        if not isinstance(clip_init, (int, float)) or not 0 < float(clip_init) <= 1:
            raise ValueError(f"clip_init: expected a number in (0, 1], got {clip_init!r}")
        n = 1
        if granularity in ("per_head", "per_group"):
            if (
                isinstance(num_channels, bool)
                or not isinstance(num_channels, int)
                or num_channels < 1
            ):
                raise ValueError(
                    f"num_channels: expected a positive int for granularity={granularity!r}, "
                    f"got {num_channels!r}"
                )
            n = num_channels
        if granularity == "per_group":
            if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
                raise ValueError(
                    f"group_size: expected a positive int for per_group, got {group_size!r}"
                )
        elif group_size is not None:
            raise ValueError(
                f"group_size: only used with granularity='per_group', got {group_size!r}"
            )
        self.bits = bits
        self.mode = mode
        self.granularity = granularity
        self.num_channels = num_channels
        self.group_size = group_size
        self.symmetric = True
        self.stat = stat
        self.percentile = float(percentile)
        self.enabled = True
        self.calibrating = False
        self.ready = mode == "dynamic"
        shape: tuple[int, ...] = () if granularity in ("per_tensor", "per_token") else (n,)
        if granularity == "per_token":
            self.spec = QuantSpec(bits=bits, granularity="token")
        elif granularity == "per_tensor":
            self.spec = QuantSpec(bits=bits, granularity="tensor", dynamic=False)
        else:
            self.spec = QuantSpec(bits=bits, granularity="head", axis=1, dynamic=False)
        self.scale = nn.Parameter(torch.ones(shape))
        self.register_buffer("amax", torch.zeros(shape))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))
        if mode == "dynamic":
            self.clip = nn.Parameter(torch.tensor(float(clip_init)))

    # ------------------------------------------------------------------ layout helpers

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` reshaped so the scale axis is dim 1 (per_head / per_group)."""
        if self.granularity == "per_head":
            if x.dim() != 4 or x.shape[1] != self.num_channels:
                raise ValueError(
                    f"x: per_head quantizer expects (B, H={self.num_channels}, S, D), got {tuple(x.shape)}"
                )
            return x
        if self.granularity == "per_group":
            g = int(self.group_size or 1)
            if x.shape[-1] != g * int(self.num_channels or 1):
                raise ValueError(
                    f"x: per_group quantizer expects a last dim of {self.num_channels}·{g}, "
                    f"got {tuple(x.shape)}"
                )
            return x.reshape(-1, int(self.num_channels or 1), g)  # (N, G, g)
        return x

    def _scale_view(self, s: torch.Tensor, xv: torch.Tensor) -> torch.Tensor:
        if self.granularity in ("per_head", "per_group"):
            return s.reshape(1, -1, *([1] * (xv.dim() - 2)))  # (1, C, 1[, 1])
        return s

    # ------------------------------------------------------------------ statistics

    def batch_statistic(self, x: torch.Tensor) -> torch.Tensor:
        """This batch's ``max|x|`` (or ``percentile``) per scale slice, float32, shape of ``scale``."""
        xv = self._view(x.detach()).float().abs()
        if self.granularity == "per_tensor":
            flat = xv.reshape(1, -1)
        else:
            flat = xv.transpose(0, 1).reshape(xv.shape[1], -1)  # (C, N)
        if self.stat == "percentile":
            k = max(1, min(flat.shape[1], math.ceil(self.percentile / 100.0 * flat.shape[1])))
            out = flat.kthvalue(k, dim=1).values
        else:
            out = flat.amax(dim=1)
        return out.reshape(self.amax.shape)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Fold one calibration batch into ``amax`` with the ``stat`` rule.

        ``ema_compat``: the first batch sets ``amax``, later ones ``amax = 0.99·amax + 0.01·b``.
        ``max``: running maximum. ``percentile``: running mean of the per-batch percentiles.
        """
        if self.mode == "dynamic":
            return
        b = self.batch_statistic(x).to(self.amax.device)
        n = int(self.num_batches)
        if n == 0:
            new = b
        elif self.stat == "ema_compat":
            new = EMA_DECAY * self.amax + (1.0 - EMA_DECAY) * b
        elif self.stat == "max":
            new = torch.maximum(self.amax, b)
        else:
            new = (self.amax * n + b) / (n + 1)
        self.amax.copy_(new)
        self.num_batches += 1

    @torch.no_grad()
    def init_scale(self, clip: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Set ``scale = 2·clip·amax / (2^b − 1)`` from the calibrated statistic and return it."""
        if self.mode == "dynamic":
            self.clip.fill_(float(clip))
            return self.clip.detach()
        if int(self.num_batches) == 0:
            raise RuntimeError(
                "init_scale: no calibration batch was observed (set calibrating=True and run data)"
            )
        self.scale.copy_(init_scale_from_max(self.amax, self.bits, clip))
        self.ready = True
        return self.scale.detach()

    @torch.no_grad()
    def set_scale(self, scale: torch.Tensor | float) -> None:
        """Set the static scale directly (a number or a tensor of ``scale``'s shape)."""
        t = torch.as_tensor(scale, dtype=self.scale.dtype, device=self.scale.device)
        if t.shape != self.scale.shape:
            raise ValueError(
                f"scale: expected shape {tuple(self.scale.shape)}, got {tuple(t.shape)}"
            )
        if bool((t <= 0).any()):
            raise ValueError("scale: expected positive values")
        self.scale.copy_(t)
        self.ready = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if prefix + "scale" in state_dict:
            self.ready = True

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (same shape and dtype); identity when disabled or calibrating."""
        if not self.enabled:
            return x
        if self.calibrating:
            self.observe(x)
            return x
        if self.mode == "dynamic":
            amax = x.detach().float().abs().amax(dim=-1, keepdim=True)  # (..., 1)
            s = init_scale_from_max(amax, self.bits, self.clip)
            return ste_fake_quant(x, self.spec, s)
        if not self.ready:
            raise RuntimeError(
                "ActQuantizer: static scale not initialised; calibrate (observe + init_scale) first"
            )
        xv = self._view(x)
        out = ste_fake_quant(xv, self.spec, self._scale_view(self.scale, xv))
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        extra = f", groups={self.num_channels}x{self.group_size}" if self.group_size else ""
        return f"bits={self.bits}, mode={self.mode}, granularity={self.granularity}, stat={self.stat}{extra}"


class KVQuantizer(ActQuantizer):
    """Static K/V-cache quantizer: one scale per KV head (K) or per group of the v_proj output (V).

    Use :meth:`for_keys` (input ``(B, Hkv, S, D)`` after RoPE and the online Hadamard) or
    :meth:`for_values` (input the v_proj output ``(B, T, Hkv·D)``, groups of
    ``min(v_group, head_dim)`` channels).
    """

    @classmethod
    def for_keys(cls, bits: int, num_kv_heads: int, **kwargs: Any) -> KVQuantizer:
        """Per-head static K quantizer."""
        return cls(bits, granularity="per_head", num_channels=num_kv_heads, **kwargs)

    @classmethod
    def for_values(
        cls, bits: int, num_kv_heads: int, head_dim: int, v_group: int = 128, **kwargs: Any
    ) -> KVQuantizer:
        """Per-group static V quantizer on the v_proj output; the group is clipped to ``head_dim``."""
        g = min(int(v_group), int(head_dim))
        total = num_kv_heads * head_dim
        if total % g:
            raise ValueError(f"v_group: {g} does not divide the v_proj width {total}")
        return cls(bits, granularity="per_group", num_channels=total // g, group_size=g, **kwargs)


class WeightQuantizer(LearnableFakeQuant):
    """Per-output-channel symmetric weight quantizer with a learnable scale (``scale``: ``(out, 1)``).

    Built on core-kernels' :class:`LearnableFakeQuant` with gradient scale 1 (the official
    ``round_ste`` gradient). Initial scale ``2·clip·max|w_row| / (2^b − 1)``.

    Args:
        weight: ``(out, in)`` float weight to initialise the scale from.
        bits: code width, 2..8.
        clip: clip factor(s) in (0, 1]: a float or an ``(out, 1)`` tensor.
    """

    def __init__(self, weight: torch.Tensor, bits: int, clip: float | torch.Tensor = 1.0) -> None:
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(f"weight: expected a 2-D (out, in) tensor, got {weight!r:.60}")
        spec = QuantSpec(bits=bits, granularity="channel", dynamic=False)
        super().__init__(spec, self._init(weight, bits, clip), grad_scale=1.0)
        self.bits = bits
        self.enabled = True

    @staticmethod
    def _init(weight: torch.Tensor, bits: int, clip: float | torch.Tensor) -> torch.Tensor:
        amax = weight.detach().float().abs().amax(dim=1, keepdim=True)  # (out, 1)
        return init_scale_from_max(amax, bits, clip)

    @torch.no_grad()
    def init_scale(self, weight: torch.Tensor, clip: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Reset ``scale`` from ``weight`` with clip factor(s) ``clip``; returns the scale."""
        self.scale.copy_(self._init(weight, self.bits, clip).to(self.scale.dtype))
        return self.scale.detach()

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Integer codes ``clamp(round(w/s), qmin, qmax)`` as int8, ``(out, in)``."""
        return quantize(weight.detach(), self.scale.detach(), None, self.spec)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weight (identity when ``enabled`` is False)."""
        if not self.enabled:
            return weight
        return super().forward(weight)
