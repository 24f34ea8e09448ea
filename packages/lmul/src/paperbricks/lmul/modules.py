"""L-Mul drop-ins: :class:`LMulLinear`, :func:`apply_lmul_` and the L-Mul attention core.

Addition is All You Need (Luo & Sun, arXiv 2410.00907), §3.3: the multiplications of a layer are
replaced by L-Mul (Eq. (1) of :mod:`.reference`) while every addition stays an ordinary float add.

- :class:`LMulLinear`: ``y = L-Matmul(x, Wᵀ) + b``, an ``nn.Linear`` whose products are L-Muls
  (:func:`paperbricks.lmul.ops.lmul_matmul`); the bias add is exact.
- :func:`apply_lmul_`: the in-place, torchao-style transform (``quantize_(model, config)``):
  ``nn.Linear`` children become :class:`LMulLinear` when ``"linear"`` is in ``config.targets``,
  and with ``"attention"`` a transformers model is switched to ``attn_implementation="lmul"``
  (:mod:`.hf`) and diffusers ``Attention`` modules get :class:`.diffusers_processor.LMulAttnProcessor`.
- :func:`lmul_attention`: the attention both integrations share (the paper's attention setting)::

      S = L-Matmul(Q, Kᵀ)·scale (+ mask)        scale an exact multiply unless lmul_scale
      P = softmax(S)                            exact, in float32
      O = L-Matmul(P, V)

  with grouped-query attention (query head h reads key/value head h // (H / Hkv)).

What differs from ``nn.Linear`` / eager attention: only the scalar products of the two (or one)
matrix products; the softmax, the scaling (by default), the mask and bias adds and the float32
accumulation are those of the ordinary layer. The operands of each L-Matmul are rounded to
``config.mantissa_bits`` in their own dtype container, so a bfloat16 model runs L-Mul on
bfloat16 containers (``mantissa_bits`` at most 7 there, ``None`` = the container's own).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from .config import LMulConfig
from .ops import lmul, lmul_matmul

__all__ = ["LMulLinear", "apply_lmul_", "lmul_attention"]

logger = logging.getLogger(__name__)


def _check_config(config: object, name: str = "config") -> LMulConfig:
    if not isinstance(config, LMulConfig):
        raise TypeError(f"{name}: expected an LMulConfig, got {type(config).__name__}")
    return config


# --- LMulLinear ------------------------------------------------------------------------------------


class LMulLinear(nn.Linear):
    """``nn.Linear`` whose products are L-Muls: ``y = L-Matmul(x, Wᵀ) + b``.

    Same parameters, state-dict keys and initialisation as ``nn.Linear``; only ``forward``
    differs. The matmul runs through :func:`paperbricks.lmul.ops.lmul_matmul` with the settings of
    ``config`` (mantissa bits, semantics, operand rounding, accumulation, backward mode, impl);
    ``config.targets`` and ``config.lmul_scale`` play no role here. The bias add is exact.

    Args:
        in_features, out_features, bias, device, dtype: as for ``nn.Linear``.
        config: an :class:`LMulConfig` (default ``LMulConfig()``: 3 mantissa bits, "bits",
            truncation, float32 accumulation, straight-through backward).

    Shapes:
        input (..., in_features) float32/bfloat16/float16, the weight's dtype;
        output (..., out_features), same dtype.

    Examples:
        >>> import torch
        >>> from paperbricks.lmul.config import LMulConfig
        >>> layer = LMulLinear(4, 2, config=LMulConfig(mantissa_bits=None))
        >>> layer(torch.randn(3, 4)).shape
        torch.Size([3, 2])
        >>> fast = LMulLinear.from_linear(torch.nn.Linear(8, 8), LMulConfig(mantissa_bits=4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        config: LMulConfig | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.lmul_config = LMulConfig() if config is None else _check_config(config)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: LMulConfig | None = None) -> LMulLinear:
        """An :class:`LMulLinear` sharing ``linear``'s parameters (the same ``Parameter``
        objects: no copy, optimiser state and tied weights stay valid).

        Args:
            linear: an ``nn.Linear`` (or subclass; an :class:`LMulLinear` is rejected).
            config: the :class:`LMulConfig` (default ``LMulConfig()``).

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``, is already an :class:`LMulLinear`, or
                ``config`` is not an :class:`LMulConfig`.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        if isinstance(linear, LMulLinear):
            raise TypeError("linear: is already an LMulLinear (L-Mul would be applied twice)")
        config = LMulConfig() if config is None else _check_config(config)
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features = linear.in_features
        new.out_features = linear.out_features
        new.weight = linear.weight  # the same Parameter object
        new.register_parameter("bias", linear.bias)
        new.lmul_config = config
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x: expected shape (..., in_features={self.in_features}), got {tuple(x.shape)}"
            )
        if x.dtype != self.weight.dtype:
            raise TypeError(
                f"x: expected the weight's dtype {self.weight.dtype}, got {x.dtype} "
                "(cast the input or the layer, as for nn.Linear)"
            )
        lead = x.shape[:-1]
        # Flatten to 2-D so the (in, out) weight is not broadcast (copied) over the batch dims.
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        y = lmul_matmul(x2, self.weight.t(), **self.lmul_config.matmul_kwargs())  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        c = self.lmul_config
        bits = "container" if c.mantissa_bits is None else c.mantissa_bits
        return (
            f"{super().extra_repr()}, mantissa_bits={bits}, semantics={c.semantics}, "
            f"operand_rounding={c.operand_rounding}, backward={c.backward}"
        )


# --- apply_lmul_ -----------------------------------------------------------------------------------


def _set_submodule(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _is_diffusers_attention(module: nn.Module) -> bool:
    """True for diffusers' ``Attention`` (checked without importing diffusers)."""
    mod = sys.modules.get("diffusers.models.attention_processor")
    cls = getattr(mod, "Attention", None) if mod is not None else None
    return cls is not None and isinstance(module, cls)


def apply_lmul_(
    model: nn.Module,
    config: LMulConfig | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """Put L-Mul into ``model`` in place (torchao-style) and return it.

    What is replaced depends on ``config.targets``:

    - ``"linear"``: every ``nn.Linear`` (not yet an :class:`LMulLinear`) for which
      ``filter_fn(module, fqn)`` is true (default: all) becomes an :class:`LMulLinear` sharing its
      parameters (:meth:`LMulLinear.from_linear`).
    - ``"attention"``: a transformers ``PreTrainedModel`` gets ``config`` stored as
      ``model.config.lmul_config`` and ``attn_implementation="lmul"``
      (:func:`paperbricks.lmul.hf.set_lmul_attention`; the whole model, ``filter_fn`` does not
      apply); diffusers ``Attention`` modules for which ``filter_fn`` is true get an
      :class:`~paperbricks.lmul.diffusers_processor.LMulAttnProcessor`.

    **Applying twice.** L-Mul is never stacked: existing :class:`LMulLinear` modules are skipped
    by the default filter, and a ``filter_fn`` that selects one raises. So a second call can
    convert *other* layers (e.g. with a different config), but a call that finds nothing to
    convert raises ``ValueError`` (which is also what re-applying to an already converted model
    gives) rather than silently doing nothing.

    ``nn.MultiheadAttention`` calls ``out_proj.weight`` directly and never ``out_proj.forward``;
    its ``out_proj`` is therefore skipped (with a log message) unless ``filter_fn`` asks for it.

    Args:
        model: any ``nn.Module``; modified in place.
        config: :class:`LMulConfig` (default ``LMulConfig()``, whose targets are
            ``("attention",)``).
        filter_fn: ``(module, fqn) -> bool`` choosing which candidate modules to convert
            (``fqn`` is the name in ``model.named_modules()``); default: all candidates.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``config`` not an :class:`LMulConfig` or
            ``filter_fn`` not callable.
        ValueError: ``filter_fn`` selects an :class:`LMulLinear`, or nothing was converted.

    Examples:
        >>> import torch
        >>> from paperbricks.lmul.config import LMulConfig
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> cfg = LMulConfig(mantissa_bits=4, targets=("linear",))
        >>> net = apply_lmul_(net, cfg, filter_fn=lambda mod, fqn: fqn == "0")
        >>> [type(m).__name__ for m in net]
        ['LMulLinear', 'ReLU', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    config = LMulConfig() if config is None else _check_config(config)
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected a callable (module, fqn) -> bool, got {filter_fn!r}")
    converted: list[str] = []

    if "linear" in config.targets:
        mha_out = {
            f"{name}.out_proj" if name else "out_proj"
            for name, mod in model.named_modules()
            if isinstance(mod, nn.MultiheadAttention)
        }
        for fqn, mod in list(model.named_modules()):
            if not isinstance(mod, nn.Linear):
                continue
            if isinstance(mod, LMulLinear):
                if filter_fn is not None and filter_fn(mod, fqn):
                    raise ValueError(
                        f"filter_fn: selects {fqn!r}, which is already an LMulLinear; L-Mul is "
                        "not applied twice (exclude LMulLinear modules in filter_fn)"
                    )
                continue
            if filter_fn is None and fqn in mha_out:
                logger.info(
                    "apply_lmul_: skipping %s (nn.MultiheadAttention bypasses out_proj.forward)",
                    fqn,
                )
                continue
            if filter_fn is not None and not filter_fn(mod, fqn):
                continue
            if fqn == "":
                raise ValueError(
                    "model: is itself an nn.Linear and cannot be replaced in place; use "
                    "LMulLinear.from_linear(model, config)"
                )
            _set_submodule(model, fqn, LMulLinear.from_linear(mod, config))
            converted.append(fqn)

    if "attention" in config.targets:
        if hasattr(model, "set_attn_implementation") and hasattr(model, "config"):
            from .hf import set_lmul_attention

            set_lmul_attention(model, config)
            converted.append("<transformers attention>")
        for fqn, mod in model.named_modules():
            if _is_diffusers_attention(mod) and (filter_fn is None or filter_fn(mod, fqn)):
                from .diffusers_processor import LMulAttnProcessor

                mod.set_processor(LMulAttnProcessor(config))
                converted.append(fqn)

    if not converted:
        raise ValueError(
            f"apply_lmul_: nothing to convert for targets {config.targets} (no matching "
            "nn.Linear that is not already an LMulLinear, no transformers model, no diffusers "
            "Attention); check config.targets and filter_fn"
        )
    logger.info("apply_lmul_: %d module(s) converted: %s", len(converted), converted[:8])
    return model


# --- attention ---------------------------------------------------------------------------------------


def _check_attention_inputs(
    query: object, key: object, value: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D (B, heads, len, dim) tensor, got {t.shape}")
    query, key, value = (
        cast(torch.Tensor, query),
        cast(torch.Tensor, key),
        cast(torch.Tensor, value),
    )
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise TypeError(
            f"key, value: expected query's dtype {query.dtype}, got {key.dtype} and {value.dtype}"
        )
    b, h, _, d = query.shape
    if key.shape[0] != b or key.shape[-1] != d:
        raise ValueError(f"key: expected shape ({b}, Hkv, S, {d}), got {tuple(key.shape)}")
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value: expected shape {tuple(key.shape[:3])} + (Dv,) like key, got "
            f"{tuple(value.shape)}"
        )
    if h % key.shape[1] != 0:
        raise ValueError(
            f"key: the number of query heads ({h}) must be a multiple of the key/value heads "
            f"({key.shape[1]})"
        )
    return query, key, value


def lmul_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    config: LMulConfig | None = None,
    scale: float | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    softcap: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with QKᵀ and PV through L-Matmul and an exact float32 softmax.

    ``S = L-Matmul(Q, Kᵀ)·scale`` (an L-Mul ``lmul(S, scale)`` in the inputs' container when
    ``config.lmul_scale``, else a float32 multiply), then
    optionally ``S = softcap·tanh(S/softcap)``, ``S += mask``, ``P = softmax(S)`` in float32,
    dropout, ``O = L-Matmul(P, V)``. Both L-Matmuls run in the inputs' dtype container: ``P`` is
    cast to it first, as eager attention does; the scores are upcast to float32 after the first.

    Args:
        query: (B, H, T, D) float32/bfloat16/float16.
        key: (B, Hkv, S, D), same dtype; H must be a multiple of Hkv (head h reads key/value
            head h // (H / Hkv), like ``repeat_kv``).
        value: (B, Hkv, S, Dv), same dtype.
        config: :class:`LMulConfig` (default ``LMulConfig()``); ``targets`` plays no role.
        scale: score scale; default ``D ** -0.5``.
        attn_mask: broadcastable to (B, H, T, S): boolean (True = attend) or additive float.
        is_causal: with no mask, let query i see keys ``j <= i + S − T`` (bottom-right aligned,
            which is top-left when T == S); ignored when ``attn_mask`` is given.
        softcap: Gemma-2-style logit soft-capping (``None``: off).
        dropout_p: dropout on the probabilities (``0.0``: off).
        generator: RNG for the dropout mask.

    Returns:
        ``(out, probs)``: out (B, H, T, Dv) in the inputs' dtype, probs (B, H, T, S) float32.

    Raises:
        TypeError / ValueError: non-tensor or non-float inputs, mismatched shapes or dtypes,
            a bad mask shape, ``dropout_p`` outside [0, 1).

    Examples:
        >>> import torch
        >>> from paperbricks.lmul.config import LMulConfig
        >>> q = torch.randn(1, 4, 5, 8); k = torch.randn(1, 2, 5, 8); v = torch.randn(1, 2, 5, 8)
        >>> out, probs = lmul_attention(q, k, v, config=LMulConfig(mantissa_bits=4), is_causal=True)
        >>> out.shape, probs.shape
        (torch.Size([1, 4, 5, 8]), torch.Size([1, 4, 5, 5]))
    """
    query, key, value = _check_attention_inputs(query, key, value)
    config = LMulConfig() if config is None else _check_config(config)
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"dropout_p: expected a float in [0, 1), got {dropout_p!r}")
    b, h, t, d = query.shape
    hkv, s, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = h // hkv
    if scale is None:
        scale = d**-0.5
    mm = config.matmul_kwargs()

    # GQA without repeat_kv: group the G query heads of a key/value head along the rows.
    qg = query.reshape(b, hkv, g * t, d)  # (B, Hkv, G·T, D)
    scores = lmul_matmul(qg, key.transpose(-1, -2), **mm)  # (B, Hkv, G·T, S)
    scores = scores.reshape(b, h, t, s)  # (B, H, T, S), inputs' dtype
    if config.lmul_scale:
        # the scaling as one more L-Mul, in the same container as the matmuls' products
        scale_t = scores.new_full((), float(scale))
        scores = lmul(scores, scale_t, **config.lmul_kwargs()).float()
    else:
        scores = scores.float() * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask: expected a torch.Tensor, got {type(attn_mask).__name__}")
        try:
            torch.broadcast_shapes(attn_mask.shape, (b, h, t, s))
        except RuntimeError as exc:
            raise ValueError(
                f"attn_mask: expected a shape broadcastable to (B, H, T, S) = {(b, h, t, s)}, "
                f"got {tuple(attn_mask.shape)}"
            ) from exc
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.float()
    elif is_causal:
        i = torch.arange(t, device=query.device)[:, None]  # (T, 1)
        j = torch.arange(s, device=query.device)[None, :]  # (1, S)
        scores = scores.masked_fill(j > i + (s - t), float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, H, T, S) float32, exact
    if dropout_p > 0.0:
        keep = torch.rand(probs.shape, generator=generator, device=probs.device) >= dropout_p
        probs = probs * keep / (1.0 - dropout_p)
    pg = probs.to(value.dtype).reshape(b, hkv, g * t, s)  # (B, Hkv, G·T, S)
    out = lmul_matmul(pg, value, **mm)  # (B, Hkv, G·T, Dv)
    return out.reshape(b, h, t, dv), probs
