"""Block-wise MSE initialisation of PrefixQuant's clip factors (arXiv:2410.05265 §3, spec §2.5).

Block by block, on a few calibration windows (official: 8 × 1024 tokens), with the inputs produced
by the already-initialised previous blocks and the float block output as the target:

- **Weights**: one clip factor per output channel from ``1 − i/20`` (``i < 10``), chosen by the
  error of ``x·Wᵀ`` (``x``: the linear's float input, after its online Hadamard).
- **Static activation quantizers** (norm outputs, o_proj / down_proj inputs): one clip factor
  each, coarse grid ``linspace(0.25, 0.95, 8)`` then fine ``linspace(best ± 0.05, 10)``, scored
  by the block-output MSE computed WITH the attention mask (the official fine search drops it).
- **K cache**: per KV head, same grids, scored by the MSE of ``softmax(QKᵀ/√d)`` (causal, the
  prefix keys in float).
- **V cache**: per group, same grids, scored by the MSE of the V tensor.
- **Dynamic mode**: the clip bound of each per-token quantizer over ``linspace(0.6, 1, 9)``.

Every search evaluates the quantizer's current scale first and keeps it unless a candidate is
strictly better (ties go to the earlier candidate), so no search returns a loss above its start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from paperbricks.core_kernels.quant import QuantSpec, fake_quant

from .calibrate import capture_block_inputs, quantizers_enabled, run_block
from .config import PrefixQuantConfig
from .modules import QuantLinear
from .quantizers import ActQuantizer, init_scale_from_max

__all__ = [
    "ACT_COARSE_GRID",
    "DYNAMIC_GRID",
    "WEIGHT_GRID",
    "init_weight_clip_",
    "mse_init_",
    "search_slices",
]

logger = logging.getLogger(__name__)

WEIGHT_GRID: tuple[float, ...] = tuple(1.0 - i / 20 for i in range(10))  # 1.00 ... 0.55
ACT_COARSE_GRID: tuple[float, ...] = tuple(torch.linspace(0.25, 0.95, 8).tolist())
DYNAMIC_GRID: tuple[float, ...] = tuple(torch.linspace(0.6, 1.0, 9).tolist())
FINE_HALF_WIDTH = 0.05
FINE_POINTS = 10
MAX_WEIGHT_TOKENS = 4096  # tokens of x used for the weight clip error


def search_slices(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    base: torch.Tensor,
    current: torch.Tensor,
    coarse: tuple[float, ...],
    *,
    fine: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-slice grid search of a scale ``r·base`` that never ends above the current loss.

    Args:
        loss_fn: maps a candidate scale (shape of ``base``) to per-slice losses (same shape).
            Slices must be independent (a per-head / per-group loss) or there is one slice.
        base: the unclipped scale per slice (ratio 1).
        current: the scale in use now (the start candidate, evaluated first).
        coarse: ratios tried first; then ``FINE_POINTS`` ratios in ``best ± 0.05`` (within (0, 1])
            around each slice's best coarse ratio when ``fine``.

    Returns:
        ``(best_scale, best_loss, start_loss)``, each of ``base``'s shape; ``best_loss <=
        start_loss`` element-wise.
    """
    start = loss_fn(current).detach()
    best_s, best_l = current.detach().clone(), start.clone()
    best_r = torch.ones_like(base)  # ratio of the best coarse candidate (1.0 if the start wins)

    def consider(s: torch.Tensor, r: torch.Tensor) -> None:
        nonlocal best_s, best_l, best_r
        loss = loss_fn(s).detach()
        better = loss < best_l
        best_s = torch.where(better, s, best_s)
        best_l = torch.where(better, loss, best_l)
        best_r = torch.where(better, r, best_r)

    for r in coarse:
        rr = torch.full_like(base, float(r))
        consider(rr * base, rr)
    if fine:
        center = best_r.clone()
        for d in torch.linspace(-FINE_HALF_WIDTH, FINE_HALF_WIDTH, FINE_POINTS).tolist():
            rr = (center + d).clamp(1e-3, 1.0)
            consider(rr * base, rr)
    return best_s, best_l, start


@torch.no_grad()
def init_weight_clip_(linear: QuantLinear, x: torch.Tensor) -> tuple[float, float]:
    """Choose the per-output-channel weight clip factor of ``linear`` from :data:`WEIGHT_GRID`.

    Args:
        linear: a :class:`QuantLinear` with a weight quantizer.
        x: ``(N, in)`` float inputs of the matmul (after the online Hadamard).

    Returns:
        ``(mean error at the start scale, mean error at the chosen scale)`` of ``‖x(Q(W) − W)ᵀ‖²``.
    """
    wq = linear.weight_quantizer
    if wq is None:
        raise ValueError("linear: has no weight quantizer")
    w = linear.weight.detach().float()  # (out, in)
    xf = x.float()  # (N, in)
    spec = QuantSpec(bits=wq.bits, granularity="channel", dynamic=False)
    amax = w.abs().amax(dim=1, keepdim=True)  # (out, 1)
    base = init_scale_from_max(amax, wq.bits).to(w.device)

    def loss_fn(s: torch.Tensor) -> torch.Tensor:
        err = xf @ (fake_quant(w, spec, s) - w).t()  # (N, out)
        return err.square().mean(dim=0).reshape(-1, 1)  # (out, 1)

    current = wq.scale.detach().to(w.device, torch.float32)
    best_s, best_l, start = search_slices(loss_fn, base, current, WEIGHT_GRID, fine=False)
    wq.scale.copy_(best_s.to(wq.scale.dtype))
    return float(start.mean()), float(best_l.mean())


def _linear_inputs(
    layer: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict]
) -> dict[QuantLinear, torch.Tensor]:
    """Float inputs (after online Hadamard) of every QuantLinear of ``layer``, token-subsampled."""
    store: dict[QuantLinear, list[torch.Tensor]] = {}
    handles = []
    for m in layer.modules():
        if isinstance(m, QuantLinear) and m.weight_quantizer is not None:

            def hook(mod: nn.Module, args: tuple) -> None:
                x = args[0]
                had = getattr(mod, "online_hadamard", None)
                if had is not None:
                    x = had(x)
                store.setdefault(mod, []).append(x.detach().reshape(-1, x.shape[-1]))

            handles.append(m.register_forward_pre_hook(hook))
    try:
        with quantizers_enabled(layer, False):
            for h, kw in zip(hidden, kwargs, strict=True):
                run_block(layer, h, kw)
    finally:
        for hd in handles:
            hd.remove()
    out = {}
    for mod, xs in store.items():
        x = torch.cat(xs)
        if x.shape[0] > MAX_WEIGHT_TOKENS:
            idx = torch.linspace(0, x.shape[0] - 1, MAX_WEIGHT_TOKENS).round().long().to(x.device)
            x = x[idx]
        out[mod] = x
    return out


class _Recorder(nn.Module):
    """Stands in for ``attn.qk_hadamard`` and records what it returns (Q first, then K)."""

    def __init__(self, inner: nn.Module | None) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x) if self.inner is not None else x
        self.seen.append(y.detach())
        return y


def _capture_qkv(
    attn: nn.Module, layer: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict]
) -> tuple[list, list, list]:
    """Q, K (after RoPE + online Hadamard; K incl. the prefix) and the float v_proj outputs."""
    had = attn._modules.get("qk_hadamard", None)
    rec = _Recorder(had)
    attn.qk_hadamard = rec
    vs: list[torch.Tensor] = []
    vq = getattr(attn, "v_quantizer", None)
    flag = vq.enabled if vq is not None else None
    if vq is not None:
        vq.enabled = False
    handle = attn.v_proj.register_forward_hook(lambda _m, _a, out: vs.append(out.detach()))
    qs, ks = [], []
    try:
        with torch.no_grad():
            for h, kw in zip(hidden, kwargs, strict=True):
                rec.seen.clear()
                run_block(layer, h, kw)
                if len(rec.seen) < 2:
                    raise RuntimeError(
                        "mse_init: the attention did not call qk_hadamard; the model must use the "
                        "paperbricks_prefixquant attention function"
                    )
                qs.append(rec.seen[0])
                ks.append(rec.seen[1])
    finally:
        handle.remove()
        if vq is not None:
            vq.enabled = flag
        del attn.qk_hadamard
        if had is not None:
            attn.qk_hadamard = had
    return qs, ks, vs


def _search_k(
    attn: nn.Module, qs: list[torch.Tensor], ks: list[torch.Tensor]
) -> tuple[float, float]:
    kq: ActQuantizer = attn.k_quantizer
    p = int(getattr(attn, "pq_num_prefix", 0) or 0)
    scaling = float(getattr(attn, "scaling", qs[0].shape[-1] ** -0.5))
    hkv = kq.num_channels
    base = init_scale_from_max(kq.amax, kq.bits)  # (Hkv,)

    def probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)  # (B, H, S, D)
        t, s = q.shape[2], k.shape[2]
        logits = (q.float() @ k.float().transpose(-1, -2)) * scaling  # (B, H, T, S)
        allowed = (
            torch.arange(s, device=q.device)[None, :]
            <= (s - t) + torch.arange(t, device=q.device)[:, None]
        )
        logits = logits.masked_fill(~allowed, float("-inf"))
        return logits.softmax(dim=-1)

    refs = [probs(q, k) for q, k in zip(qs, ks, strict=True)]

    def loss_fn(scale: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(hkv, device=scale.device)
        for q, k, ref in zip(qs, ks, refs, strict=True):
            kk = k.clone()
            kk[:, :, p:] = fake_quant(k[:, :, p:], kq.spec, scale.reshape(1, -1, 1, 1))
            err = (probs(q, kk) - ref).square().mean(dim=(0, 2, 3))  # (H,)
            total += err.reshape(hkv, -1).mean(dim=1)
        return total / len(qs)

    best, best_l, start = search_slices(loss_fn, base, kq.scale.detach().clone(), ACT_COARSE_GRID)
    kq.scale.data.copy_(best)
    return float(start.mean()), float(best_l.mean())


def _search_v(attn: nn.Module, vs: list[torch.Tensor]) -> tuple[float, float]:
    vq: ActQuantizer = attn.v_quantizer
    vals = torch.cat([vq._view(v) for v in vs])  # (N, G, g)
    base = init_scale_from_max(vq.amax, vq.bits)  # (G,)

    def loss_fn(scale: torch.Tensor) -> torch.Tensor:
        return (
            (fake_quant(vals, vq.spec, scale.reshape(1, -1, 1)) - vals)
            .float()
            .square()
            .mean(dim=(0, 2))
        )

    best, best_l, start = search_slices(loss_fn, base, vq.scale.detach().clone(), ACT_COARSE_GRID)
    vq.scale.data.copy_(best)
    return float(start.mean()), float(best_l.mean())


def _search_act(q: ActQuantizer, block_loss: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """One clip factor for one activation quantizer, scored by the block-output MSE."""
    param = q.clip if q.mode == "dynamic" else q.scale
    if q.mode == "dynamic":
        base = torch.ones((), device=param.device)
        grid, fine = DYNAMIC_GRID, False
    else:
        base = init_scale_from_max(q.amax, q.bits)
        grid, fine = ACT_COARSE_GRID, True

    def loss_fn(s: torch.Tensor) -> torch.Tensor:
        param.data.copy_(s)
        return block_loss().reshape(s.shape)

    current = param.detach().clone()
    best, best_l, start = search_slices(loss_fn, base, current, grid, fine=fine)
    param.data.copy_(best)
    return float(start), float(best_l)


@torch.no_grad()
def mse_init_(
    model: nn.Module,
    calibration_ids: torch.Tensor,
    config: PrefixQuantConfig,
    *,
    prefix: Any = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the block-wise MSE clip initialisation on a calibrated, quantizer-carrying model.

    Args:
        model: causal LM after ``insert_quantizers_`` and ``calibrate_``.
        calibration_ids: ``(N, T)`` windows (official: 8 × 1024 tokens).
        config: the quantization settings (bits are read from the quantizers themselves).
        prefix: None, ``PrefixSpec`` or ``PrefixedCausalLM`` (prefix KV cache prepended).
        batch_size: windows per block forward (default: all windows in one batch, so each
            candidate costs one block forward).
        progress: tqdm bar over blocks.

    Returns:
        per block, ``{"layer": i, "<site>": (start_loss, best_loss), ...}``.
    """
    from .sites import resolve_sites

    del config  # the quantizers carry their own bits/modes
    sites = resolve_sites(model)
    if batch_size is None:
        batch_size = int(calibration_ids.shape[0])
    inputs = capture_block_inputs(
        model, sites.layers[0].layer, calibration_ids, prefix=prefix, batch_size=batch_size
    )
    fp_in = inputs.hidden
    q_in = [h.clone() for h in fp_in]
    kwargs = inputs.kwargs
    report: list[dict[str, Any]] = []
    for ls in tqdm(sites.layers, desc="mse init", disable=not progress):
        layer, attn = ls.layer, ls.attn
        with quantizers_enabled(layer, False):
            fp_out = [run_block(layer, h, kw) for h, kw in zip(fp_in, kwargs, strict=True)]
        stats: dict[str, Any] = {"layer": ls.index}
        for mod, x in _linear_inputs(layer, fp_in, kwargs).items():
            name = next(n for n, m in layer.named_modules() if m is mod)
            stats[f"weight:{name}"] = init_weight_clip_(mod, x)

        def block_loss(
            layer: nn.Module = layer, fp_out: list = fp_out, q_in: list = q_in
        ) -> torch.Tensor:
            tot = torch.zeros((), device=fp_out[0].device)
            with quantizers_enabled(layer, True):
                for h, kw, ref in zip(q_in, kwargs, fp_out, strict=True):
                    tot += (run_block(layer, h, kw).float() - ref.float()).square().mean()
            return tot / len(fp_out)

        if (
            getattr(attn, "k_quantizer", None) is not None
            or getattr(attn, "v_quantizer", None) is not None
        ):
            with quantizers_enabled(layer, True):
                qs, ks, vs = _capture_qkv(attn, layer, q_in, kwargs)
            if getattr(attn, "k_quantizer", None) is not None:
                stats["k_cache"] = _search_k(attn, qs, ks)
            if getattr(attn, "v_quantizer", None) is not None:
                stats["v_cache"] = _search_v(attn, vs)
            del qs, ks, vs
        sites_act = (
            ("input_layernorm", getattr(layer.input_layernorm, "output_quantizer", None)),
            ("o_proj", getattr(attn.o_proj, "input_quantizer", None)),
            (
                "post_attention_layernorm",
                getattr(layer.post_attention_layernorm, "output_quantizer", None),
            ),
            ("down_proj", getattr(ls.mlp.down_proj, "input_quantizer", None)),
        )
        for name, q in sites_act:
            if q is not None:
                stats[name] = _search_act(q, block_loss)
        with quantizers_enabled(layer, True):
            q_out = [run_block(layer, h, kw) for h, kw in zip(q_in, kwargs, strict=True)]
        stats["block_mse"] = float(
            sum((a.float() - b.float()).square().mean() for a, b in zip(q_out, fp_out, strict=True))
            / len(fp_out)
        )
        report.append(stats)
        logger.info("mse_init layer %d: block mse %.3e", ls.index, stats["block_mse"])
        fp_in, q_in = fp_out, q_out
    return report
