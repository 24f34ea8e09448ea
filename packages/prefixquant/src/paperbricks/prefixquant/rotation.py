"""QuaRot-style Hadamard rotations R1–R4 for PrefixQuant (arXiv:2410.05265 §3, "--pre_rotate").

The rotations make the fp model *computationally invariant* (same logits) while spreading
channel outliers over all channels, so that per-tensor static scales work after quantization:

- **Norm fusion.** Each RMSNorm ``y = γ ⊙ x / rms(x)`` is folded into the linears it feeds
  (``W ← W diag(γ)`` for q/k/v, gate/up, and lm_head for the final norm) and γ is set to 1; the
  model keeps its own RMSNorm modules. ``rms(x R) = rms(x)`` for orthonormal R, so after the fusion
  the norms commute with the residual rotation.
- **R1** (offline): a random Hadamard ``R = (H_n diag(σ) / √n)ᵀ`` of width ``hidden_size`` applied
  to the residual stream ``x → x R``: ``E ← E R`` (embeddings), ``W ← W R`` for every linear that
  reads the stream (q/k/v, gate/up, lm_head), ``W ← Rᵀ W`` and ``b ← b R`` for the ones that write
  it (o_proj, down_proj). Computed matrix-free with core-kernels ``had_transform`` in float64 and
  cast back once.
- **R2** (offline): a per-head Hadamard ``M = H_Dᵀ/√D`` on the v_proj output rows (weight and
  bias, per KV head, so GQA is covered) and the matching o_proj input columns (per query head).
- **R3** (online): ``attn.qk_hadamard = OnlineHadamard(head_dim)`` applied to Q and K after RoPE
  by the registered ``paperbricks_prefixquant`` attention function (``q Kᵀ`` is unchanged).
- **R4** (online): ``down_proj`` becomes a :class:`HadamardInputLinear` whose input goes through
  ``OnlineHadamard(intermediate_size)`` first; the inverse is fused into its weight
  (``W ← W H_nᵀ/√n``). Non-power-of-two widths use ``H_K ⊗ H_{2^p}`` (11008 = 344·32,
  14336 = 28·512, 18944 = 148·128).

Differences from QuaRot/official PrefixQuant: the Hadamard matrices are core-kernels' own
constructions (not QuaRot's tables), so each :class:`OnlineHadamard` stores its exact ``H_K`` as a
buffer that serialises with the model; and embedding mean-centring is **off by default**
(``center_embeddings=False``) because, for RMSNorm models, centring the embedding rows changes the
function (QuaRot does it for Llama anyway; pass ``center_embeddings=True`` to match).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperbricks.core_kernels.hadamard import (
    fwht,
    had_transform,
    hadamard_construction,
    hadamard_matrix,
    hadamard_size_plan,
    random_hadamard_signs,
)

from .attention import use_prefixquant_attention
from .sites import ModelSites, UnsupportedModelError, resolve_sites

__all__ = [
    "HadamardInputLinear",
    "OnlineHadamard",
    "RotationState",
    "fuse_norms_",
    "is_rotated",
    "rotate_model_",
]

logger = logging.getLogger(__name__)

_ROW_CHUNK = 4096  # rows rotated at once in float64 (bounds the temporary memory)


class OnlineHadamard(nn.Module):
    """Normalised Hadamard transform over the last dim, ``y = x (H_K ⊗ H_{2^p})ᵀ / √n``.

    The ``H_K`` factor is stored as an int8 buffer ``had_k`` (shape (K, K); (1, 1) for a power of
    two) so the exact matrix serialises with the model (state_dict / safetensors) and a model
    rotated with one Hadamard matrix is never evaluated with another; the ``2^p`` part is the
    FWHT of core-kernels (Triton on CUDA). Orthonormal: ``‖y‖ = ‖x‖``.

    Args:
        n: the width (last-dim size); must have a construction (``hadamard_size_plan(n)``).
        had_k: optional explicit ``H_K`` (±1 entries, (K, K) with ``H Hᵀ = K·I``), e.g. loaded from
            a checkpoint; default ``hadamard_matrix(K)`` for the plan of n.
        impl: FWHT dispatch, ``"auto"|"reference"|"triton"``.

    Examples:
        >>> h = OnlineHadamard(12 * 16)
        >>> x = torch.randn(3, 192)
        >>> torch.allclose(h(x), had_transform(x, normalize=True), atol=1e-5)
        True
    """

    def __init__(self, n: int, had_k: torch.Tensor | None = None, impl: str = "auto") -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        k, p = hadamard_size_plan(n)
        if had_k is None:
            had_k = hadamard_matrix(k, dtype=torch.int8) if k > 1 else torch.ones(1, 1)
        else:
            if not isinstance(had_k, torch.Tensor):
                raise TypeError(f"had_k: expected a tensor, got {type(had_k).__name__}")
            k = had_k.shape[0]
            if had_k.shape != (k, k) or n % k != 0 or (n // k) & (n // k - 1):
                raise ValueError(
                    f"had_k: expected a square (K, K) matrix with n/K a power of two for n={n}, "
                    f"got shape {tuple(had_k.shape)}"
                )
            hk = had_k.to(torch.int64)
            if not torch.equal(hk @ hk.T, k * torch.eye(k, dtype=torch.int64)):
                raise ValueError("had_k: not a ±1 Hadamard matrix (H Hᵀ != K·I)")
            p = n // k
        self.n, self.k, self.p, self.impl = n, k, p, impl
        self.register_buffer("had_k", had_k.to(torch.int8).clone())

    def extra_repr(self) -> str:
        return f"n={self.n}, K={self.k}, p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n:
            raise ValueError(f"x: expected last dim {self.n}, got shape {tuple(x.shape)}")
        s = 1.0 / math.sqrt(self.n)
        if self.k == 1:
            return fwht(x, scale=s, impl=self.impl)
        lead = x.shape[:-1]
        z = fwht(x.reshape(*lead, self.k, self.p), scale=s, impl=self.impl)  # (..., K, P)
        # One GEMM over all rows (einsum folds the leading dims); a broadcast torch.matmul of the
        # (K, K) factor would run one tiny matmul per row, ~15x slower on CPU at K = 172.
        hk = self.had_k.to(device=x.device, dtype=z.dtype)
        y = torch.einsum("ac,...cp->...ap", hk, z)  # (..., K, P)
        return y.reshape(*lead, self.n)


class HadamardInputLinear(nn.Linear):
    """``nn.Linear`` whose input first goes through ``self.online_hadamard`` (R4 on down_proj).

    ``forward(x) = F.linear(online_hadamard(x), weight, bias)``; the weight already carries the
    inverse rotation, so the fp function is unchanged. Built with :meth:`from_linear` (shares the
    original parameters).
    """

    online_hadamard: OnlineHadamard

    @classmethod
    def from_linear(cls, linear: nn.Linear, hadamard: OnlineHadamard) -> HadamardInputLinear:
        """Wrap ``linear`` (its weight/bias Parameters are shared, not copied)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected nn.Linear, got {type(linear).__name__}")
        if hadamard.n != linear.in_features:
            raise ValueError(
                f"hadamard: width {hadamard.n} != linear.in_features {linear.in_features}"
            )
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.bias = linear.bias
        new.online_hadamard = hadamard
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.online_hadamard(x), self.weight, self.bias)


@dataclass
class RotationState:
    """What :func:`rotate_model_` did (enough to redo or serialise it).

    Attributes:
        seed: seed of the R1 sign draw.
        hidden_size, head_dim, intermediate_size: the rotated widths.
        online_qk, online_down: whether R3 / R4 were installed.
        center_embeddings: whether the embedding rows were mean-centred.
        r1_signs: σ of R1, int8 (hidden_size,).
        constructions: ``{"r1": ..., "r2": ..., "r3": ..., "r4": ...}`` provenance strings
            (core-kernels ``hadamard_construction``).
        family: the model family that was rotated.
    """

    seed: int
    hidden_size: int
    head_dim: int
    intermediate_size: int
    online_qk: bool
    online_down: bool
    center_embeddings: bool
    r1_signs: torch.Tensor
    constructions: dict[str, str] = field(default_factory=dict)
    family: str = ""

    def r1_matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The dense R1 = (H_n diag(σ)/√n)ᵀ such that the residual stream becomes ``x @ R1``."""
        n = self.hidden_size
        h = hadamard_matrix(n, dtype=dtype)
        return (h * self.r1_signs.to(dtype)[None, :]).T / math.sqrt(n)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors needed to reproduce the rotation (for safetensors)."""
        return {"r1_signs": self.r1_signs.to(torch.int8).contiguous()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (σ as a list of ±1)."""
        return {
            "seed": self.seed,
            "hidden_size": self.hidden_size,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "online_qk": self.online_qk,
            "online_down": self.online_down,
            "center_embeddings": self.center_embeddings,
            "r1_signs": [int(v) for v in self.r1_signs.tolist()],
            "constructions": dict(self.constructions),
            "family": self.family,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RotationState:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["r1_signs"] = torch.tensor(d["r1_signs"], dtype=torch.int8)
        d["constructions"] = dict(d.get("constructions", {}))
        return cls(**d)


def _check_rmsnorm(norm: nn.Module, hidden: int, where: str) -> None:
    """Make sure ``norm(x) == weight ⊙ x / rms(x)`` (so γ can be folded into the next linear)."""
    w = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if w is None or eps is None or getattr(norm, "bias", None) is not None:
        raise UnsupportedModelError(
            f"model: {where} ({type(norm).__name__}) is not an RMSNorm with weight and eps"
        )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, hidden, generator=g, dtype=torch.float32).to(w.device)
    with torch.no_grad():
        out = norm(x.to(w.dtype)).float()
        ref = w.float() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + float(eps))
    tol = 1e-4 if w.dtype == torch.float32 else 2e-2
    if not torch.allclose(out, ref, rtol=tol, atol=tol * float(w.float().abs().max())):
        raise UnsupportedModelError(
            f"model: {where} ({type(norm).__name__}) does not compute weight * x / rms(x); "
            "its scale cannot be fused into the next linear"
        )


@torch.no_grad()
def _scale_cols_(linear: nn.Module, gamma: torch.Tensor) -> None:
    w = linear.weight
    w.copy_((w.double() * gamma.double()[None, :]).to(w.dtype))


@torch.no_grad()
def fuse_norms_(model: nn.Module, sites: ModelSites | None = None) -> None:
    """Fold every RMSNorm γ into the linears it feeds and set γ to 1 (function unchanged).

    input_layernorm → q/k/v; post_attention_layernorm → gate/up; final norm → lm_head.

    Args:
        model: HF Llama-family causal LM (modified in place).
        sites: pre-resolved sites (default ``resolve_sites(model)``).
    """
    sites = resolve_sites(model) if sites is None else sites
    hidden = sites.embed_tokens.weight.shape[1]
    groups = []
    for ls in sites.layers:
        groups.append(
            (
                ls.input_norm,
                (ls.q_proj, ls.k_proj, ls.v_proj),
                f"layers[{ls.index}].input_layernorm",
            )
        )
        groups.append(
            (
                ls.post_attention_norm,
                (ls.gate_proj, ls.up_proj),
                f"layers[{ls.index}].post_attention_layernorm",
            )
        )
    groups.append((sites.final_norm, (sites.lm_head,), "model.norm"))
    for norm, linears, where in groups:
        _check_rmsnorm(norm, hidden, where)
        gamma = norm.weight.detach().clone()
        for lin in linears:
            _scale_cols_(lin, gamma)
        norm.weight.fill_(1.0)


def _untie_(model: nn.Module, sites: ModelSites) -> None:
    emb, head = sites.embed_tokens.weight, sites.lm_head.weight
    if emb is head or emb.data_ptr() == head.data_ptr():
        sites.lm_head.weight = nn.Parameter(emb.detach().clone(), requires_grad=head.requires_grad)
        logger.info("untied lm_head from embed_tokens before rotating")
    for cfg in (getattr(model, "config", None), sites.config):
        if cfg is not None and getattr(cfg, "tie_word_embeddings", False):
            cfg.tie_word_embeddings = False


@torch.no_grad()
def _apply_rows_(w: torch.Tensor, fn: Any) -> None:
    """``w[i] ← fn(w[i])`` for every row, computed in float64 (chunked) and cast back once."""
    for start in range(0, w.shape[0], _ROW_CHUNK):
        blk = w[start : start + _ROW_CHUNK]
        blk.copy_(fn(blk.double()).to(w.dtype))


def is_rotated(model: nn.Module) -> bool:
    """True when :func:`rotate_model_` already ran on ``model``."""
    return getattr(model, "pq_rotation_state", None) is not None or any(
        isinstance(m, HadamardInputLinear)
        or isinstance(getattr(m, "qk_hadamard", None), OnlineHadamard)
        for m in model.modules()
    )


@torch.no_grad()
def rotate_model_(
    model: nn.Module,
    seed: int = 0,
    online_qk: bool = True,
    online_down: bool = True,
    *,
    center_embeddings: bool = False,
    impl: str = "auto",
) -> RotationState:
    """Rotate an HF Llama-family causal LM in place with R1–R4 (function unchanged in fp).

    Steps: untie lm_head (copy) when tied; fuse the RMSNorm scales into the following linears;
    optionally mean-centre the embedding rows; R1 (random Hadamard of ``hidden_size``) on the
    residual stream; R2 (per-head Hadamard) on v_proj/o_proj; R3 (``attn.qk_hadamard``, online Q/K
    after RoPE) when ``online_qk``; R4 (``down_proj → HadamardInputLinear``) when ``online_down``.
    The model is switched to the ``paperbricks_prefixquant`` attention function (which applies R3
    and any K quantizer). Weight maths runs in float64; weights are cast back to their dtype once.

    Args:
        model: ``LlamaForCausalLM``/``MistralForCausalLM``/``Qwen2ForCausalLM``-like model.
        seed: seed of R1's random signs (CPU generator; same R1 on every device). Default 0.
        online_qk: install R3 (default True).
        online_down: install R4 (default True).
        center_embeddings: subtract each embedding row's mean (QuaRot's ``fuse_layer_norms``); this
            is NOT function-preserving for RMSNorm models, hence default False.
        impl: FWHT dispatch for the online transforms (``"auto"|"reference"|"triton"``).

    Returns:
        :class:`RotationState` (also stored as ``model.pq_rotation_state``).

    Raises:
        ValueError: the model was already rotated; a width has no Hadamard construction.
        UnsupportedModelError: not a Llama-family model (missing sites, non-RMSNorm norms).
        TypeError: bad argument types.

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing.factories import tiny_llama_config
        >>> model = LlamaForCausalLM(tiny_llama_config()).eval()
        >>> ids = torch.tensor([[1, 5, 6, 7]])
        >>> ref = model(ids).logits
        >>> state = rotate_model_(model, seed=0)
        >>> bool((model(ids).logits - ref).abs().max() < 1e-4)
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    for name, v in (
        ("online_qk", online_qk),
        ("online_down", online_down),
        ("center_embeddings", center_embeddings),
    ):
        if not isinstance(v, bool):
            raise TypeError(f"{name}: expected a bool, got {v!r}")
    sites = resolve_sites(model)
    if is_rotated(model):
        raise ValueError(
            "model: already rotated (rotate_model_ ran before, or it carries online Hadamards); "
            "rotating twice would apply R1-R4 twice"
        )
    cfg = sites.config
    hidden = sites.embed_tokens.weight.shape[1]
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads)
    inter = sites.layers[0].down_proj.in_features
    for what, n in (("hidden_size", hidden), ("head_dim", head_dim), ("intermediate_size", inter)):
        try:
            hadamard_size_plan(n)
        except ValueError as err:
            raise ValueError(f"model: {what}={n} has no Hadamard construction: {err}") from err

    _untie_(model, sites)
    fuse_norms_(model, sites)
    if center_embeddings:
        _apply_rows_(sites.embed_tokens.weight, lambda e: e - e.mean(dim=-1, keepdim=True))

    sigma = random_hadamard_signs(hidden, seed=seed)  # (hidden,) int64 ±1

    def r1_rows(x: torch.Tensor) -> torch.Tensor:  # rows x → x R1 = had(x ⊙ σ)/√n
        return had_transform(x * sigma.to(x.device, x.dtype), normalize=True)

    def r1_out(w: torch.Tensor) -> torch.Tensor:  # W (hidden, in) → R1ᵀ W
        out = torch.empty_like(w)
        for start in range(0, w.shape[1], _ROW_CHUNK):
            cols = w[:, start : start + _ROW_CHUNK]
            out[:, start : start + _ROW_CHUNK] = r1_rows(cols.double().T).T.to(w.dtype)
        return out

    def had_last(x: torch.Tensor) -> torch.Tensor:
        return had_transform(x, normalize=True)

    _apply_rows_(sites.embed_tokens.weight, r1_rows)
    _apply_rows_(sites.lm_head.weight, r1_rows)
    for ls in sites.layers:
        for lin in (ls.q_proj, ls.k_proj, ls.v_proj, ls.gate_proj, ls.up_proj):
            _apply_rows_(lin.weight, r1_rows)
        for lin in (ls.o_proj, ls.down_proj):
            lin.weight.copy_(r1_out(lin.weight))
            if lin.bias is not None:
                lin.bias.copy_(r1_rows(lin.bias.double()[None]).to(lin.bias.dtype)[0])
        # R2: v rows per KV head (weight and bias), o_proj input columns per query head.
        wv = ls.v_proj.weight  # (Hkv*D, hidden)
        hkv = wv.shape[0] // head_dim
        v = wv.double().reshape(hkv, head_dim, -1).transpose(1, 2)  # (Hkv, hidden, D)
        wv.copy_(had_last(v).transpose(1, 2).reshape(wv.shape).to(wv.dtype))
        if ls.v_proj.bias is not None:
            b = ls.v_proj.bias
            b.copy_(had_last(b.double().reshape(hkv, head_dim)).reshape(-1).to(b.dtype))
        wo = ls.o_proj.weight  # (hidden, H*D)
        o = wo.double().reshape(wo.shape[0], -1, head_dim)  # (hidden, H, D)
        wo.copy_(had_last(o).reshape(wo.shape).to(wo.dtype))
        if online_down:
            down = ls.down_proj
            _apply_rows_(down.weight, had_last)  # W ← W H_nᵀ/√n (inverse of the online input had)
            had = OnlineHadamard(inter, impl=impl).to(down.weight.device)
            ls.mlp.down_proj = HadamardInputLinear.from_linear(down, had)
        if online_qk:
            ls.attn.qk_hadamard = OnlineHadamard(head_dim, impl=impl).to(ls.q_proj.weight.device)

    use_prefixquant_attention(model)
    state = RotationState(
        seed=seed,
        hidden_size=hidden,
        head_dim=head_dim,
        intermediate_size=inter,
        online_qk=online_qk,
        online_down=online_down,
        center_embeddings=center_embeddings,
        r1_signs=sigma.to(torch.int8),
        constructions={
            "r1": hadamard_construction(hidden),
            "r2": hadamard_construction(head_dim),
            "r3": hadamard_construction(head_dim) if online_qk else "",
            "r4": hadamard_construction(inter) if online_down else "",
        },
        family=sites.family,
    )
    model.pq_rotation_state = state
    logger.info(
        "rotated %s: hidden=%d (%s), head_dim=%d, intermediate=%d, online_qk=%s, online_down=%s",
        sites.family,
        hidden,
        state.constructions["r1"],
        head_dim,
        inter,
        online_qk,
        online_down,
    )
    return state
