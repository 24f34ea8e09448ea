"""MLP-KAN mixture of experts: MLP "representation" experts and FasterKAN "function" experts.

MLP-KAN (arXiv 2410.03027) replaces the feed-forward of every transformer block by a mixture of
E = E_mlp + E_kan experts (official code: 4 + 4). Experts ``0 .. E_mlp − 1`` are MLPs
``fc2(GELU(fc1(x)))`` (with biases, exact erf GELU, hidden width ``mlp_hidden``); experts
``E_mlp .. E − 1`` are FasterKAN networks ``[d, kan_hidden, d]`` (LayerNorm → RSWAF basis →
linear, per layer; :class:`~paperbricks.mlpkan.kan.FasterKAN`). That is the official ordering
(``MoE_KAN_MLP.experts``: MLPs first, then KANs).

Two routers:

- ``router="topk"`` (default, the official code, spec §2): ``z = x·W_g`` (no bias, float32),
  ``p = softmax(z)``, keep the top-k (k = 2) and renormalise them to sum to one,
  ``y = Σ_j w_j·E_{idx_j}(x)``. No capacity, no token dropping, no noise and, by default, no
  auxiliary loss (``aux_loss_coef`` / ``z_loss_coef`` switch on the Switch load-balancing loss and
  the ST-MoE z-loss from core-kernels). Routing, dispatch (``permute``), the MLP experts'
  grouped GEMMs and the weighted combine (``unpermute``) are core-kernels' ``moe`` ops; the top-k
  path reads one number on the host (where the MLP experts' rows end).
- ``router="soft"`` (Soft-MoE, Puigcerver et al. 2023; attributed to the paper's *text*, which
  differs from its code — spec §2/§9, unverified): per **sequence** ``X`` (T, d), slot logits
  ``L = X·Φ`` (T, E·p); dispatch ``D = softmax_T(L)`` (each slot a convex mix of the sequence's
  tokens), slots ``X̃ = Dᵀ X``; expert ``⌊s/p⌋`` processes slot ``s``; combine
  ``C = softmax_slots(L)``, ``Y = C·Ỹ``. Slots never mix tokens of different sequences of the
  batch. Soft-MoE's l2-normalisation of ``X`` and ``Φ`` (used at large widths) is not applied.

Differences from the official ``MoE_KAN_MLP``: inputs of any leading shape (it only takes 2-D,
spec §3), MLP experts stored as stacked weights and run with core-kernels' grouped GEMM, KAN
experts run together through one grouped KAN GEMM per layer
(:func:`~paperbricks.mlpkan.kan.grouped_kan_linear`, the fused basis-in-prologue kernel on CUDA)
with each row's own expert LayerNorm, where the official code loops over experts
(:func:`paperbricks.mlpkan.convert` maps the names), and the routing mass per expert kind is recorded in :attr:`MLPKANMoE.last_routing_stats`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from paperbricks.core_kernels.moe import (
    expert_counts,
    grouped_mm,
    load_balancing_loss,
    permute,
    topk_route,
    unpermute,
    z_loss,
)
from paperbricks.core_kernels.validate import check_int

from .kan import FasterKAN, grouped_kan_linear

__all__ = ["ACTIVATIONS", "ROUTERS", "MLPKANMoE", "RouterName", "router_stats"]

RouterName = Literal["topk", "soft"]
ROUTERS: tuple[str, ...] = ("topk", "soft")
ACTIVATIONS: dict[str, object] = {
    "gelu": lambda h: F.gelu(h),  # exact erf GELU, as timm's Mlp (spec §2)
    "silu": F.silu,  # attributed to the paper text (spec §3, unverified)
}
_IMPLS = ("auto", "reference", "triton")


def router_stats(
    router_logits: torch.Tensor,
    num_mlp_experts: int,
    num_kan_experts: int,
    *,
    router: str = "topk",
    top_k: int = 2,
    slots_per_expert: int = 1,
) -> dict[str, torch.Tensor]:
    """Share of the routing mass sent to each expert and to each expert kind (MLP vs KAN).

    For ``router="topk"`` the mass of token t on expert e is its renormalised top-k weight
    (0 for experts it does not use); for ``router="soft"`` it is the combine weight
    ``Σ_{s ∈ slots(e)} softmax_slots(L_t)_s``. Both sum to one per token; the statistics average
    them over the tokens.

    Args:
        router_logits: (N, E) top-k logits or (N, E·p) soft slot logits (as returned by
            :class:`MLPKANMoE`), any float dtype (computed in float32 or float64).
        num_mlp_experts: E_mlp (experts ``0 .. E_mlp − 1`` are MLPs).
        num_kan_experts: E_kan (experts ``E_mlp .. E − 1`` are KANs).
        router: ``"topk"`` (default) or ``"soft"``.
        top_k: k for the top-k router (default 2).
        slots_per_expert: p for the soft router (default 1).

    Returns:
        dict of detached tensors: ``"expert_mass"`` (E,) mean mass per expert, ``"mlp_share"``
        and ``"kan_share"`` (0-d, summing to one), ``"kan_prob_share"`` (0-d; top-k only: mean
        softmax probability on KAN experts before the top-k cut; soft: equals ``kan_share``)
        and, for top-k, ``"expert_counts"`` (E,) int64 token copies per expert.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[0.0, 0.0, 5.0, 5.0]])  # all mass on experts 2, 3 (KAN)
        >>> float(router_stats(logits, 2, 2)["kan_share"])
        1.0
    """
    if router not in ROUTERS:
        raise ValueError(f"router: expected one of {ROUTERS}, got {router!r}")
    n_exp = num_mlp_experts + num_kan_experts
    width = n_exp * (slots_per_expert if router == "soft" else 1)
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        got = tuple(router_logits.shape) if isinstance(router_logits, torch.Tensor) else None
        raise ValueError(f"router_logits: expected a 2-D tensor (N, {width}), got {got}")
    if router_logits.shape[1] != width:
        raise ValueError(
            f"router_logits: expected {width} columns for router={router!r} with "
            f"E={n_exp}, got shape {tuple(router_logits.shape)}"
        )
    z = router_logits.detach().to(torch.promote_types(router_logits.dtype, torch.float32))
    out: dict[str, torch.Tensor] = {}
    if router == "topk":
        idx, w = topk_route(z, top_k)  # (N, k)
        mass = torch.zeros_like(z).scatter_add_(1, idx, w)  # (N, E)
        probs = torch.softmax(z, dim=-1)  # (N, E)
        out["kan_prob_share"] = probs[:, num_mlp_experts:].sum(-1).mean()
        out["expert_counts"] = expert_counts(idx, n_exp)
    else:
        comb = torch.softmax(z, dim=-1)  # (N, E·p)
        mass = comb.reshape(z.shape[0], n_exp, slots_per_expert).sum(-1)  # (N, E)
    expert_mass = mass.mean(0) if z.shape[0] else mass.sum(0)  # (E,)
    out["expert_mass"] = expert_mass
    out["mlp_share"] = expert_mass[:num_mlp_experts].sum()
    out["kan_share"] = expert_mass[num_mlp_experts:].sum()
    if router == "soft":
        out["kan_prob_share"] = out["kan_share"]
    return out


class MLPKANMoE(nn.Module):
    """Mixture of MLP and FasterKAN experts behind a top-k or soft router (a transformer FFN).

    Args:
        d_model: model width d.
        num_mlp_experts: E_mlp MLP experts (default 4, official).
        num_kan_experts: E_kan FasterKAN experts (default 4, official).
        mlp_hidden: hidden width h of each MLP expert (default None = d_model; the official
            ``hdim_kan`` = 192 for DeiT-tiny, hidden ratio 1).
        kan_hidden: hidden width of each KAN expert ``[d, kan_hidden, d]`` (default None =
            ``mlp_hidden // 2``, official).
        top_k: experts per token for ``router="topk"`` (default 2); must be <= E.
        router: ``"topk"`` (default, official code) or ``"soft"`` (Soft-MoE, paper text).
        slots_per_expert: p, soft-router slots per expert (default 1; ignored by top-k).
        kan_basis: ``"rswaf"`` (default), ``"rbf"`` or ``"bspline"``.
        kan_num_grids: G, grid points / intervals of the KAN basis (default 8).
        kan_grid_range: (lo, hi) of the KAN grid (default (−2, 2)).
        kan_denominator: h of the rswaf/rbf basis (default None = the basis default, 0.33 for
            rswaf).
        kan_spline_order: B-spline degree (bspline only; default 3).
        mlp_activation: ``"gelu"`` (default, exact erf) or ``"silu"``.
        aux_loss_coef: Switch load-balancing coefficient (default 0.0: none, as the official
            code); top-k only.
        z_loss_coef: router z-loss coefficient (default 0.0); top-k only.
        impl: ``"auto"`` (default), ``"reference"`` or ``"triton"``: backend of the MLP experts'
            grouped GEMM (core-kernels ``grouped_mm``) and of the KAN layers.
        device, dtype: where and in which dtype to create the parameters.
        generator: ``torch.Generator`` for the initialisation of every parameter (default:
            torch's global one).

    ``forward(x)`` takes ``x`` (..., d) — for ``router="soft"`` (..., T, d), the second-to-last
    axis being the sequence (a 2-D input is one unbatched sequence) — and returns
    ``(y, router_logits, aux)``: ``y`` like ``x``; ``router_logits`` (N, E) float32 for top-k,
    (N, E·p) for soft (N = number of tokens); ``aux`` a 0-d float32 tensor (the weighted
    auxiliary losses, 0 when their coefficients are 0). :attr:`last_routing_stats` then holds
    :func:`router_stats` of that call (detached, on the device; no host sync).

    Examples:
        >>> import torch
        >>> moe = MLPKANMoE(16, num_mlp_experts=2, num_kan_experts=2, mlp_hidden=16)
        >>> y, logits, aux = moe(torch.randn(2, 5, 16))
        >>> y.shape, logits.shape, float(aux)
        (torch.Size([2, 5, 16]), torch.Size([10, 4]), 0.0)
        >>> sorted(moe.last_routing_stats)[:3]
        ['expert_counts', 'expert_mass', 'kan_prob_share']
    """

    def __init__(
        self,
        d_model: int,
        num_mlp_experts: int = 4,
        num_kan_experts: int = 4,
        mlp_hidden: int | None = None,
        kan_hidden: int | None = None,
        top_k: int = 2,
        router: str = "topk",
        slots_per_expert: int = 1,
        kan_basis: str = "rswaf",
        kan_num_grids: int = 8,
        kan_grid_range: tuple[float, float] = (-2.0, 2.0),
        kan_denominator: float | None = None,
        kan_spline_order: int = 3,
        mlp_activation: str = "gelu",
        aux_loss_coef: float = 0.0,
        z_loss_coef: float = 0.0,
        impl: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_int("d_model", d_model)
        check_int("num_mlp_experts", num_mlp_experts, 0)
        check_int("num_kan_experts", num_kan_experts, 0)
        n_exp = num_mlp_experts + num_kan_experts
        if n_exp < 1:
            raise ValueError(
                f"num_mlp_experts + num_kan_experts: expected >= 1, got "
                f"{num_mlp_experts} + {num_kan_experts}"
            )
        mlp_hidden = d_model if mlp_hidden is None else mlp_hidden
        check_int("mlp_hidden", mlp_hidden)
        kan_hidden = max(1, mlp_hidden // 2) if kan_hidden is None else kan_hidden
        check_int("kan_hidden", kan_hidden)
        if router not in ROUTERS:
            raise ValueError(f"router: expected one of {ROUTERS}, got {router!r}")
        check_int("top_k", top_k)
        if router == "topk" and top_k > n_exp:
            raise ValueError(
                f"top_k: expected <= the number of experts E={n_exp} "
                f"({num_mlp_experts} MLP + {num_kan_experts} KAN), got {top_k}"
            )
        check_int("slots_per_expert", slots_per_expert)
        if mlp_activation not in ACTIVATIONS:
            raise ValueError(
                f"mlp_activation: expected one of {tuple(ACTIVATIONS)}, got {mlp_activation!r}"
            )
        for name, v in (("aux_loss_coef", aux_loss_coef), ("z_loss_coef", z_loss_coef)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name}: expected a float >= 0, got {v!r}")
        if router == "soft" and (aux_loss_coef > 0 or z_loss_coef > 0):
            raise ValueError(
                "aux_loss_coef/z_loss_coef: the soft router has no load-balancing or z-loss; "
                f"expected 0 with router='soft', got {aux_loss_coef}/{z_loss_coef}"
            )
        if impl not in _IMPLS:
            raise ValueError(f"impl: expected one of {_IMPLS}, got {impl!r}")
        self.d_model = d_model
        self.num_mlp_experts = num_mlp_experts
        self.num_kan_experts = num_kan_experts
        self.num_experts = n_exp
        self.mlp_hidden = mlp_hidden
        self.kan_hidden = kan_hidden
        self.top_k = top_k
        self.router = router
        self.slots_per_expert = slots_per_expert
        self.mlp_activation = mlp_activation
        self.aux_loss_coef = float(aux_loss_coef)
        self.z_loss_coef = float(z_loss_coef)
        self.impl = impl
        kw = {"device": device, "dtype": dtype}
        if router == "topk":
            # Router W_g, nn.Linear layout (E, d), no bias (official ``gate``).
            self.gate = nn.Linear(d_model, n_exp, bias=False, **kw)
            self.register_parameter("slot_embeds", None)
        else:
            self.gate = None
            # Soft-MoE slot embeddings Φ (d, E·p).
            self.slot_embeds = nn.Parameter(torch.empty(d_model, n_exp * slots_per_expert, **kw))
        if num_mlp_experts:
            # Stacked MLP experts in (in, out) order for grouped_mm: expert e is
            # fc2(act(x @ mlp_w1[e] + mlp_b1[e])) = act(...) @ mlp_w2[e] + mlp_b2[e].
            self.mlp_w1 = nn.Parameter(torch.empty(num_mlp_experts, d_model, mlp_hidden, **kw))
            self.mlp_b1 = nn.Parameter(torch.empty(num_mlp_experts, mlp_hidden, **kw))
            self.mlp_w2 = nn.Parameter(torch.empty(num_mlp_experts, mlp_hidden, d_model, **kw))
            self.mlp_b2 = nn.Parameter(torch.empty(num_mlp_experts, d_model, **kw))
        else:
            for name in ("mlp_w1", "mlp_b1", "mlp_w2", "mlp_b2"):
                self.register_parameter(name, None)
        self.kan_experts = nn.ModuleList(
            FasterKAN(
                [d_model, kan_hidden, d_model],
                kan_basis,
                kan_num_grids,
                (float(kan_grid_range[0]), float(kan_grid_range[1])),
                denominator=kan_denominator,
                order=kan_spline_order,
                impl=impl,
                **kw,
            )
            for _ in range(num_kan_experts)
        )
        self.kan_basis = kan_basis
        self.last_routing_stats: dict[str, torch.Tensor] = {}
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise the router and the MLP experts as ``nn.Linear`` does (uniform
        ``±1/sqrt(fan_in)`` for weights and biases), Soft-MoE slot embeddings ~ N(0, 1/d), KAN
        experts Xavier-uniform with identity LayerNorms (:meth:`KANLayer.reset_parameters`)."""
        if self.gate is not None:
            bound = 1.0 / math.sqrt(self.d_model)
            self.gate.weight.uniform_(-bound, bound, generator=generator)
        else:
            self.slot_embeds.normal_(0.0, 1.0 / math.sqrt(self.d_model), generator=generator)
        if self.num_mlp_experts:
            for p, fan_in in (
                (self.mlp_w1, self.d_model),
                (self.mlp_b1, self.d_model),
                (self.mlp_w2, self.mlp_hidden),
                (self.mlp_b2, self.mlp_hidden),
            ):
                bound = 1.0 / math.sqrt(fan_in)
                p.uniform_(-bound, bound, generator=generator)
        for kan in self.kan_experts:
            for layer in kan.layers:
                layer.reset_parameters(generator=generator)

    # ------------------------------------------------------------------------------------------
    # experts

    def expert_forward(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Run expert ``e`` alone on tokens ``x`` (n, d): the readable per-expert path.

        Experts ``0 .. E_mlp − 1`` are MLPs, the rest FasterKANs. Returns (n, d).
        """
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < self.num_experts:
            raise ValueError(f"e: expected an expert index in [0, {self.num_experts}), got {e!r}")
        if e < self.num_mlp_experts:
            act = ACTIVATIONS[self.mlp_activation]
            h = act(x @ self.mlp_w1[e] + self.mlp_b1[e])  # (n, h)
            return h @ self.mlp_w2[e] + self.mlp_b2[e]  # (n, d)
        return self.kan_experts[e - self.num_mlp_experts](x)

    def _mlp_sorted(
        self, xs: torch.Tensor, offsets: torch.Tensor, eid: torch.Tensor
    ) -> torch.Tensor:
        """MLP experts on expert-sorted rows ``xs`` (M, d) with block ends ``offsets`` (E_mlp,)
        and the expert of each row ``eid`` (M,): two grouped GEMMs (core-kernels)."""
        act = ACTIVATIONS[self.mlp_activation]
        gimpl = "reference" if xs.dtype == torch.float64 else self.impl
        h = grouped_mm(xs, self.mlp_w1, offsets, impl=gimpl) + self.mlp_b1[eid]  # (M, h)
        h = act(h)
        return grouped_mm(h, self.mlp_w2, offsets, impl=gimpl) + self.mlp_b2[eid]  # (M, d)

    def _kan_sorted(
        self, xs: torch.Tensor, offsets: torch.Tensor, eid: torch.Tensor
    ) -> torch.Tensor:
        """KAN experts on expert-sorted rows ``xs`` (M, d), block ends ``offsets`` (E_kan,) and
        expert of each row ``eid`` (M,): per layer, each row's own expert LayerNorm (affine
        parameters gathered per row) and one grouped KAN GEMM over all experts
        (:func:`~paperbricks.mlpkan.kan.grouped_kan_linear`; the fused Triton kernel on CUDA)."""
        h = xs
        for depth in range(len(self.kan_experts[0].layers)):
            layers = [kan.layers[depth] for kan in self.kan_experts]
            first = layers[0]
            if first.layernorm is not None:
                ln_w = torch.stack([ly.layernorm.weight for ly in layers])  # (E_kan, in)
                ln_b = torch.stack([ly.layernorm.bias for ly in layers])  # (E_kan, in)
                h = F.layer_norm(h, h.shape[-1:], eps=first.layernorm.eps) * ln_w[eid] + ln_b[eid]
            weight = torch.stack([ly.spline_linear.weight for ly in layers])  # (E_kan, out, in·G)
            h = grouped_kan_linear(
                h,
                weight,
                offsets,
                basis=first.basis,
                grid=first.rbf.grid,  # the grids are fixed and equal in every expert
                inv_denominator=getattr(first.rbf, "inv_denominator", None),
                order=getattr(first.rbf, "order", None),
                impl=self.impl,
            )  # (M, out)
        return h

    # ------------------------------------------------------------------------------------------
    # forward

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x: expected a float tensor (..., d), got {getattr(x, 'dtype', x)}")
        if x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected last dim d_model={self.d_model}, got shape {tuple(x.shape)}"
            )
        pdtype = next(self.parameters()).dtype
        if x.dtype != pdtype:
            raise TypeError(f"x: expected dtype {pdtype} (the layer's), got {x.dtype}")
        if self.router == "topk":
            return self._forward_topk(x)
        return self._forward_soft(x)

    def _forward_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d, n_mlp_e = self.d_model, self.num_mlp_experts
        xt = x.reshape(-1, d)  # (N, d)
        n_tok = xt.shape[0]
        acc = torch.promote_types(x.dtype, torch.float32)
        logits = xt.to(acc) @ self.gate.weight.to(acc).T  # (N, E), fp32 softmax (spec §2)
        idx, w = topk_route(logits, self.top_k)  # (N, k) renormalised softmax top-k
        p = permute(xt, idx, self.num_experts)  # sorted copies (N·k, d)
        # One host read: where the MLP experts' rows end (the two expert kinds run as two
        # grouped GEMM families on their own row ranges).
        rows_mlp = int(p.offsets[n_mlp_e - 1]) if n_mlp_e else 0
        pieces = []
        if n_mlp_e and rows_mlp:
            eid = idx.reshape(-1).index_select(0, p.perm[:rows_mlp])  # (M_mlp,) expert of row
            offsets = p.offsets[:n_mlp_e]
            pieces.append(self._mlp_sorted(p.x_sorted[:rows_mlp], offsets, eid))
        rows_kan = idx.numel() - rows_mlp
        if self.num_kan_experts and rows_kan:
            flat = idx.reshape(-1)
            eid = flat.index_select(0, p.perm[rows_mlp:]) - n_mlp_e  # (M_kan,)
            offsets = (p.offsets[n_mlp_e:] - rows_mlp).to(torch.int32)
            pieces.append(self._kan_sorted(p.x_sorted[rows_mlp:], offsets, eid))
        y_sorted = torch.cat(pieces, 0) if pieces else p.x_sorted.new_zeros(0, d)  # (N·k, d)
        y = unpermute(y_sorted, p.perm, w, n_tok)  # (N, d)
        aux = logits.new_zeros((), dtype=acc)
        if n_tok and self.aux_loss_coef > 0:
            aux = aux + load_balancing_loss(logits, idx, self.num_experts, coef=self.aux_loss_coef)
        if n_tok and self.z_loss_coef > 0:
            aux = aux + z_loss(logits, coef=self.z_loss_coef)
        self.last_routing_stats = router_stats(
            logits, n_mlp_e, self.num_kan_experts, router="topk", top_k=self.top_k
        )
        return y.reshape(x.shape), logits, aux

    def _forward_soft(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d, n_exp, ps = self.d_model, self.num_experts, self.slots_per_expert
        if x.dim() < 2:
            raise ValueError(
                f"x: the soft router needs (..., T, d) (sequences of tokens), got {tuple(x.shape)}"
            )
        seq = x.shape[-2]
        xb = x.reshape(-1, seq, d)  # (B, T, d)
        bsz = xb.shape[0]
        acc = torch.promote_types(x.dtype, torch.float32)
        logits = xb.to(acc) @ self.slot_embeds.to(acc)  # (B, T, S), S = E·p
        dispatch = torch.softmax(logits, dim=1)  # over the tokens of each sequence
        combine = torch.softmax(logits, dim=2)  # over the slots, per token
        slots = torch.einsum("bts,btd->bsd", dispatch, xb.to(acc)).to(x.dtype)  # (B, S, d)
        slots = slots.reshape(bsz, n_exp, ps, d).transpose(0, 1)  # (E, B, p, d)
        outs = []
        n_mlp_e = self.num_mlp_experts
        if n_mlp_e:
            act = ACTIVATIONS[self.mlp_activation]
            xm = slots[:n_mlp_e].reshape(n_mlp_e, bsz * ps, d)  # (E_mlp, B·p, d)
            h = act(torch.baddbmm(self.mlp_b1[:, None], xm, self.mlp_w1))  # (E_mlp, B·p, h)
            outs.append(torch.baddbmm(self.mlp_b2[:, None], h, self.mlp_w2))  # (E_mlp, B·p, d)
        if self.num_kan_experts:
            n_kan, rows = self.num_kan_experts, bsz * ps
            xk = slots[n_mlp_e:].reshape(n_kan * rows, d)  # (E_kan·B·p, d), grouped by expert
            eid = torch.arange(n_kan, device=x.device).repeat_interleave(rows)  # (E_kan·B·p,)
            offsets = torch.arange(1, n_kan + 1, device=x.device, dtype=torch.int32) * rows
            outs.append(self._kan_sorted(xk, offsets, eid).reshape(n_kan, rows, d))
        y_slots = torch.cat(outs, 0).reshape(n_exp, bsz, ps, d).transpose(0, 1)  # (B, E, p, d)
        y_slots = y_slots.reshape(bsz, n_exp * ps, d)  # (B, S, d)
        y = torch.einsum("bts,bsd->btd", combine, y_slots.to(acc)).to(x.dtype)  # (B, T, d)
        flat_logits = logits.reshape(-1, n_exp * ps)  # (N, S)
        self.last_routing_stats = router_stats(
            flat_logits, n_mlp_e, self.num_kan_experts, router="soft", slots_per_expert=ps
        )
        return y.reshape(x.shape), flat_logits, logits.new_zeros(())

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, mlp_experts={self.num_mlp_experts}x{self.mlp_hidden}, "
            f"kan_experts={self.num_kan_experts}x{self.kan_hidden} ({self.kan_basis}), "
            f"router={self.router}, top_k={self.top_k}"
        )
