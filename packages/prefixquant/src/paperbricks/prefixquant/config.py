"""``PrefixQuantConfig``: the settings of one PrefixQuant run (arXiv:2410.05265, §3–4) and its presets.

Users touch this dataclass and one verb, :func:`paperbricks.prefixquant.quantize.quantize_`
(torchao style). Defaults follow the official code (``ChenMnZ/PrefixQuant``); where the official
code has a defect the field documents the fix (``stat``, ``clip_grad``, ``count_mode``).

Presets (the paper's three settings; fine-tuning off by default, the paper trains 20 epochs for
W4A4KV4 and 10 for W4A8KV4, pass ``epochs=...`` to :meth:`PrefixQuantConfig.from_preset`):

- ``W4A4KV4``: 4-bit per-channel weights, 4-bit static per-tensor activations, 4-bit K/V.
- ``W4A8KV4``: 4-bit weights, 8-bit activations, 4-bit K/V.
- ``W8A8KV8``: 8-bit weights, activations and K/V.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["PRESETS", "PrefixQuantConfig"]

_A_MODES = ("static", "dynamic")
_STATS = ("ema_compat", "max", "percentile")
_LOSSES = ("mse", "skip_mse")
_COUNT_MODES = ("official", "minus_one")


def _check_bits(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not (2 <= v <= 8 or v == 16):
        raise ValueError(f"{name}: expected an int in [2, 8] (or 16 = not quantized), got {v!r}")


def _check_pos(name: str, v: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    if not ok or (float(v) < 0 if allow_zero else float(v) <= 0):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name}: expected {kind} finite number, got {v!r}")


@dataclass(frozen=True)
class PrefixQuantConfig:
    """Every setting of the PrefixQuant pipeline (rotate → prefix → calibrate → MSE init → fine-tune).

    Fields:
        w_bits: weight bits (per-output-channel symmetric); 16 leaves weights in float.
        a_bits: activation bits at every activation site (q/k/v and gate/up inputs through the
            norm output quantizers, o_proj and down_proj inputs); 16 = not quantized.
        kv_bits: K/V-cache bits (K per head after RoPE + online Hadamard, V per group of the
            v_proj output); 16 = not quantized.
        a_mode: ``"static"`` (calibrated per-tensor scales, the paper's method) or
            ``"dynamic"`` (per-token scales computed on the fly, with a learnable clip bound;
            the comparison baseline).
        w_granularity: only ``"per_channel"`` (one scale per output row).
        kv_group: only ``"head"`` (one static K scale per KV head).
        v_group: V-cache group size along the v_proj output; clipped to ``head_dim`` when larger
            (official default 128 = head_dim of Llama-2/3).
        eta: outlier-token ratio threshold ``max/median > eta`` for prefix selection.
        stat: how static statistics combine over calibration batches: ``"ema_compat"`` (the
            official ``new = 0.99·old + 0.01·incoming``, first batch initialises; not a maximum),
            ``"max"`` (running maximum), ``"percentile"`` (mean over batches of the per-batch
            ``percentile``-th percentile of ``|x|``).
        percentile: the percentile used by ``stat="percentile"``, in (0, 100].
        mse_init: run the block-wise MSE clip initialisation (spec §2.5).
        epochs: block-wise fine-tuning epochs; 0 skips fine-tuning.
        quant_lr: learning rate of quantizer scales / clip bounds during fine-tuning.
        weight_lr: learning rate of the float weights during fine-tuning (0 freezes them).
        loss: ``"mse"`` or ``"skip_mse"`` (masks the 3 tokens of largest mean |target|).
        clip_grad: gradient-norm clip during fine-tuning; None (official runs: the flag was
            parsed but never applied), 0.3 is what the official code intended.
        train_batch_size: fine-tuning batch size (official 4).
        rotate: apply the QuaRot-style Hadamard rotation before everything else.
        online_qk: online Hadamard on Q and K after RoPE (R3).
        online_down: online Hadamard on the down_proj input (R4).
        seed: seed of the random Hadamard signs and of sample selection / shuffling.
        count_mode: prefix size rule, ``"official"`` (o counts the position-0 outlier) or
            ``"minus_one"`` (the commented-out ``o − 1``).
        version: schema version of this config.
    """

    w_bits: int = 4  # weight bits, per output channel, symmetric
    a_bits: int = 4  # activation bits (norm outputs, o_proj / down_proj inputs)
    kv_bits: int = 4  # K/V cache bits
    a_mode: str = "static"  # "static" per-tensor (paper) | "dynamic" per-token (baseline)
    w_granularity: str = "per_channel"  # one weight scale per output channel
    kv_group: str = "head"  # one static K scale per KV head
    v_group: int = 128  # V-cache group size, clipped to head_dim
    eta: float = 64.0  # outlier ratio threshold for prefix selection
    stat: str = "ema_compat"  # calibration statistic across batches
    percentile: float = 99.99  # used by stat="percentile"
    mse_init: bool = True  # block-wise MSE clip initialisation
    epochs: int = 0  # block-wise fine-tuning epochs (0 = off)
    quant_lr: float = 5e-5  # lr of scales / clip bounds
    weight_lr: float = 5e-6  # lr of float weights
    loss: str = "mse"  # "mse" | "skip_mse"
    clip_grad: float | None = None  # None = official behaviour (flag never applied)
    train_batch_size: int = 4  # fine-tuning batch size
    rotate: bool = True  # Hadamard rotation R1/R2 (+ R3/R4 below)
    online_qk: bool = True  # R3: online Hadamard on Q, K after RoPE
    online_down: bool = True  # R4: online Hadamard on the down_proj input
    seed: int = 0  # rotation signs, data sampling, shuffling
    count_mode: str = "official"  # prefix size rule
    version: int = 1  # schema version

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits", "kv_bits"):
            _check_bits(name, getattr(self, name))
        if self.a_mode not in _A_MODES:
            raise ValueError(f"a_mode: expected one of {_A_MODES}, got {self.a_mode!r}")
        if self.w_granularity != "per_channel":
            raise ValueError(f"w_granularity: expected 'per_channel', got {self.w_granularity!r}")
        if self.kv_group != "head":
            raise ValueError(f"kv_group: expected 'head', got {self.kv_group!r}")
        if isinstance(self.v_group, bool) or not isinstance(self.v_group, int) or self.v_group < 1:
            raise ValueError(f"v_group: expected a positive int, got {self.v_group!r}")
        _check_pos("eta", self.eta)
        if self.stat not in _STATS:
            raise ValueError(f"stat: expected one of {_STATS}, got {self.stat!r}")
        _check_pos("percentile", self.percentile)
        if float(self.percentile) > 100:
            raise ValueError(f"percentile: expected a value in (0, 100], got {self.percentile!r}")
        if not isinstance(self.mse_init, bool):
            raise TypeError(f"mse_init: expected a bool, got {type(self.mse_init).__name__}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {self.epochs!r}")
        _check_pos("quant_lr", self.quant_lr, allow_zero=True)
        _check_pos("weight_lr", self.weight_lr, allow_zero=True)
        if self.loss not in _LOSSES:
            raise ValueError(f"loss: expected one of {_LOSSES}, got {self.loss!r}")
        if self.clip_grad is not None:
            _check_pos("clip_grad", self.clip_grad)
        if (
            isinstance(self.train_batch_size, bool)
            or not isinstance(self.train_batch_size, int)
            or self.train_batch_size < 1
        ):
            raise ValueError(
                f"train_batch_size: expected a positive int, got {self.train_batch_size!r}"
            )
        for name in ("rotate", "online_qk", "online_down"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"{name}: expected a bool, got {type(getattr(self, name)).__name__}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed: expected an int, got {type(self.seed).__name__}")
        if self.count_mode not in _COUNT_MODES:
            raise ValueError(f"count_mode: expected one of {_COUNT_MODES}, got {self.count_mode!r}")
        if self.version != 1:
            raise ValueError(
                f"version: this code reads PrefixQuantConfig version 1, got {self.version!r}"
            )

    @property
    def quantize_weights(self) -> bool:
        """True when weights are quantized (``w_bits < 16``)."""
        return self.w_bits < 16

    @property
    def quantize_activations(self) -> bool:
        """True when activations are quantized (``a_bits < 16``)."""
        return self.a_bits < 16

    @property
    def quantize_kv(self) -> bool:
        """True when the K/V cache is quantized (``kv_bits < 16``)."""
        return self.kv_bits < 16

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PrefixQuantConfig:
        """The preset ``name`` (one of :data:`PRESETS`) with some fields replaced.

        Examples:
            >>> PrefixQuantConfig.from_preset("W4A8KV4", epochs=10).a_bits
            8
        """
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"name: expected one of the presets {sorted(PRESETS)}, got {name!r}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrefixQuantConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"data: unknown PrefixQuantConfig fields {unknown}")
        return cls(**data)


#: The paper's three settings (fine-tuning off; see the module docstring).
PRESETS: dict[str, PrefixQuantConfig] = {
    "W4A4KV4": PrefixQuantConfig(w_bits=4, a_bits=4, kv_bits=4),
    "W4A8KV4": PrefixQuantConfig(w_bits=4, a_bits=8, kv_bits=4),
    "W8A8KV8": PrefixQuantConfig(w_bits=8, a_bits=8, kv_bits=8),
}
