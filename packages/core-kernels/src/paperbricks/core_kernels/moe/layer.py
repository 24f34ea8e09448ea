"""A generic top-k mixture-of-experts layer with SwiGLU experts and optional shared experts.

::

    z = x W_rᵀ                        router logits (N, E), float32
    (idx, g) = topk_route(z, k)       (N, k) experts and weights
    y_t = Σ_j g_{t,j} · expert_{idx_{t,j}}(x_t) + shared(x_t)
    expert_e(x) = (silu(x w1[e][:, :I]) ⊙ x w1[e][:, I:]) w2[e]
    shared(x)   = (silu(x sw1[:, :Is]) ⊙ x sw1[:, Is:]) sw2

Parameters (the stacked layout aria and mlpkan build on):

- ``router.weight`` (E, D) — an ``nn.Linear(D, E, bias=False)``;
- ``w1`` (E, D, 2I), ``w2`` (E, I, D) — all routed experts, (in, out) order, gate columns first;
- ``shared_w1`` (D, 2·Is), ``shared_w2`` (Is, D) — all shared experts fused into one SwiGLU MLP
  of width ``Is = shared_d_ff`` (``num_shared_experts`` experts of width ``d_ff`` summed equal one
  MLP whose width is the sum), present only when ``num_shared_experts > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .dispatch import expert_counts
from .experts import moe_decode, moe_ffn
from .grouped_gemm import _GROUPED_IMPLS, swiglu
from .losses import AuxLossAutoScaler, load_balancing_loss, z_loss
from .routing import _MODES, topk_route

__all__ = ["MoEConfig", "MoELayer"]


@dataclass(frozen=True)
class MoEConfig:
    """Configuration of :class:`MoELayer`.

    Attributes:
        d_model: D, the model width.
        d_ff: I, the hidden width of each routed expert.
        num_experts: E, routed experts.
        top_k: k, experts per token (default 2).
        num_shared_experts: always-on experts added to every token (default 0).
        shared_d_ff: hidden width of the fused shared MLP; default ``num_shared_experts * d_ff``.
        routing_mode: ``"softmax_topk"`` (default) or ``"topk_softmax"``; see ``topk_route``.
        renormalize: renormalise the top-k probabilities to sum to one (default True).
        lb_coef: load-balancing loss coefficient ``c`` (default 0.01, Switch/Mixtral).
        z_coef: router z-loss coefficient ``c_z`` (default 0.0; ST-MoE uses 1e-3).
        attach_aux: route the aux-loss gradient through ``AuxLossAutoScaler`` on the output in
            training mode, so only the main loss needs a backward call (default False: add
            ``aux["aux_loss"]`` to the loss yourself).
        impl: grouped-GEMM backend ``"auto"|"reference"|"torch"|"triton"`` (default "auto").
        decode_max_tokens: use the gather+einsum decode path when N <= this (default 1).
        init_std: std of the normal initialisation of every weight (default 0.02).
        version: config format version.
    """

    d_model: int
    d_ff: int
    num_experts: int
    top_k: int = 2
    num_shared_experts: int = 0
    shared_d_ff: int | None = None
    routing_mode: str = "softmax_topk"
    renormalize: bool = True
    lb_coef: float = 0.01
    z_coef: float = 0.0
    attach_aux: bool = False
    impl: str = "auto"
    decode_max_tokens: int = 1
    init_std: float = 0.02
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("d_model", "d_ff", "num_experts", "top_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k: expected <= num_experts={self.num_experts}, got {self.top_k}")
        if self.num_shared_experts < 0:
            raise ValueError(f"num_shared_experts: expected >= 0, got {self.num_shared_experts}")
        if self.shared_d_ff is not None and self.shared_d_ff < 1:
            raise ValueError(
                f"shared_d_ff: expected a positive int or None, got {self.shared_d_ff}"
            )
        if self.routing_mode not in _MODES:
            raise ValueError(f"routing_mode: expected one of {_MODES}, got {self.routing_mode!r}")
        if self.impl not in _GROUPED_IMPLS:
            raise ValueError(f"impl: expected one of {_GROUPED_IMPLS}, got {self.impl!r}")
        if self.lb_coef < 0 or self.z_coef < 0:
            raise ValueError(f"lb_coef/z_coef: expected >= 0, got {self.lb_coef}/{self.z_coef}")
        if self.decode_max_tokens < 0:
            raise ValueError(f"decode_max_tokens: expected >= 0, got {self.decode_max_tokens}")

    @property
    def shared_width(self) -> int:
        """Hidden width of the fused shared MLP (0 when there are no shared experts)."""
        if self.num_shared_experts == 0:
            return 0
        return (
            self.shared_d_ff
            if self.shared_d_ff is not None
            else self.num_shared_experts * self.d_ff
        )


class MoELayer(nn.Module):
    """Top-k routed SwiGLU experts plus optional shared experts; returns ``(y, aux)``.

    Args:
        config: :class:`MoEConfig`.
        device, dtype: where and in which dtype to create the parameters.
        generator: ``torch.Generator`` for the initialisation (default: torch's global one).

    ``forward(x)`` takes ``x`` (..., D) and returns ``(y (..., D), aux)`` where ``aux`` holds
    ``"load_balancing"``, ``"z_loss"``, ``"aux_loss"`` (their sum, scalars in float32),
    ``"router_logits"`` (N, E) float32, ``"expert_idx"`` (N, k) and ``"expert_counts"`` (E,).

    Examples:
        >>> import torch
        >>> layer = MoELayer(MoEConfig(d_model=16, d_ff=32, num_experts=4, top_k=2))
        >>> y, aux = layer(torch.randn(2, 5, 16))
        >>> y.shape, sorted(aux)[:3]
        (torch.Size([2, 5, 16]), ['aux_loss', 'expert_counts', 'expert_idx'])
    """

    def __init__(
        self,
        config: MoEConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, MoEConfig):
            raise TypeError(f"config: expected MoEConfig, got {type(config)}")
        self.config = config
        c = config
        kw = {"device": device, "dtype": dtype}
        self.router = nn.Linear(c.d_model, c.num_experts, bias=False, **kw)
        self.w1 = nn.Parameter(torch.empty(c.num_experts, c.d_model, 2 * c.d_ff, **kw))
        self.w2 = nn.Parameter(torch.empty(c.num_experts, c.d_ff, c.d_model, **kw))
        if c.shared_width:
            self.shared_w1 = nn.Parameter(torch.empty(c.d_model, 2 * c.shared_width, **kw))
            self.shared_w2 = nn.Parameter(torch.empty(c.shared_width, c.d_model, **kw))
        else:
            self.register_parameter("shared_w1", None)
            self.register_parameter("shared_w2", None)
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std) initialisation of every weight."""
        for p in self.parameters():
            nn.init.normal_(p, 0.0, self.config.init_std, generator=generator)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        if x.shape[-1] != c.d_model:
            raise ValueError(
                f"x: expected last dim d_model={c.d_model}, got shape {tuple(x.shape)}"
            )
        if x.dtype != self.w1.dtype:
            raise TypeError(f"x: expected dtype {self.w1.dtype} (the layer's), got {x.dtype}")
        lead = x.shape[:-1]
        xt = x.reshape(-1, c.d_model)  # (N, D)
        acc = torch.promote_types(x.dtype, torch.float32)
        logits = xt.to(acc) @ self.router.weight.to(acc).T  # (N, E)
        expert_idx, weights = topk_route(
            logits, c.top_k, mode=c.routing_mode, renormalize=c.renormalize
        )  # (N, k)
        if xt.shape[0] <= c.decode_max_tokens:
            y = moe_decode(xt, expert_idx, weights, self.w1, self.w2)
        else:
            y = moe_ffn(xt, expert_idx, weights, self.w1, self.w2, impl=c.impl)  # (N, D)
        if self.shared_w1 is not None:
            y = y + swiglu(xt @ self.shared_w1) @ self.shared_w2
        aux = self._aux(logits, expert_idx)
        y = y.reshape(*lead, c.d_model)
        if c.attach_aux and self.training and torch.is_grad_enabled():
            y = AuxLossAutoScaler.apply(y, aux["aux_loss"])
        return y, aux

    def _aux(self, logits: torch.Tensor, expert_idx: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        zero = logits.new_zeros(())
        if logits.shape[0] == 0:
            lb, z = zero, zero
        else:
            lb = load_balancing_loss(logits, expert_idx, c.num_experts, coef=c.lb_coef)
            z = z_loss(logits, coef=c.z_coef) if c.z_coef > 0 else zero
        return {
            "load_balancing": lb,
            "z_loss": z,
            "aux_loss": lb + z,
            "router_logits": logits,
            "expert_idx": expert_idx,
            "expert_counts": expert_counts(expert_idx, c.num_experts),
        }
