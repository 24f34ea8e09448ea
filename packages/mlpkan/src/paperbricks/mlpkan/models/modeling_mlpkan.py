"""MLP-KAN models, HF-style: a DeiT/ViT image classifier and a function-learning regressor.

:class:`MLPKANForImageClassification` is timm's ``VisionTransformer`` (as used by the official
``VisionKAN``: conv patch embedding, class token, learned position embeddings, pre-LN blocks
``x + DropPath(Attn(LN(x)))``, ``x + DropPath(FFN(LN(x)))``, final LayerNorm, linear head on the
class token) whose block feed-forward is :class:`~paperbricks.mlpkan.moe.MLPKANMoE`
(``ffn="mlp-kan"``), a dense MLP (``"mlp"``) or a dense FasterKAN (``"kan"``). Differences from the
official ``kanBlock`` (spec §3): no unused dense ``mlp`` per block, ``qkv_bias`` and ``drop_path``
are honoured (``official_compat=True`` reproduces the released behaviour), attention is
core-kernels ``attention``. The parameter names follow timm's, so
:mod:`paperbricks.mlpkan.convert` maps an official checkpoint by renaming the FFN and stacking the
MLP experts.

:class:`MLPKANRegressor` is the function-learning model (the official code has none): each sample
is one token, ``x (B, n_inputs) → Linear → [x + FFN(LN(x))] × L → LN → Linear → (B, n_outputs)``.

Both return the per-layer router logits and the summed router auxiliary loss (added to ``loss``
when labels are given), and record per-layer routing statistics (:meth:`routing_stats`). They save
and load with ``save_pretrained``/``from_pretrained`` (safetensors) and are registered with
``AutoConfig``/``AutoModel``/``AutoModelForImageClassification`` on importing
:mod:`paperbricks.mlpkan.models`. Weight init: timm's (truncated normal(0, initializer_range) for
linear/conv weights, position embeddings and class token; zero biases; unit LayerNorms), with
the MoE and KAN layers keeping their own init (``nn.Linear``-style for the experts and router,
Xavier-uniform for KAN weights, as the official code); it uses torch's global RNG, so seed it
(``torch.manual_seed``) before building a model for reproducible weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from paperbricks.core_kernels.attention import attention

from ..kan import FasterKAN, KANLayer
from ..moe import ACTIVATIONS, MLPKANMoE
from .configuration_mlpkan import MLPKANConfig, MLPKANRegressorConfig

__all__ = [
    "MLPKANForImageClassification",
    "MLPKANImageClassifierOutput",
    "MLPKANPreTrainedModel",
    "MLPKANRegressor",
    "MLPKANRegressorOutput",
    "MLPKANRegressorPreTrainedModel",
    "MLPKANViTModel",
    "MLPKANViTOutput",
]


# ----------------------------------------------------------------------------------------------
# outputs


@dataclass
class MLPKANViTOutput(ModelOutput):
    """Output of :class:`MLPKANViTModel`.

    Attributes:
        last_hidden_state: (B, 1 + P, d) after the final LayerNorm.
        pooler_output: (B, d) the class token of ``last_hidden_state``.
        router_logits: per block (N, E) (soft: (N, E·p)) router logits; empty for dense FFNs.
        aux_loss: 0-d sum of the blocks' router auxiliary losses (0 when disabled).
        hidden_states: with ``output_hidden_states``, the input of every block and the output.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MLPKANImageClassifierOutput(ModelOutput):
    """Output of :class:`MLPKANForImageClassification`: ``loss`` (cross-entropy + aux loss, when
    labels are given), ``logits`` (B, num_labels), and the backbone's ``router_logits``,
    ``aux_loss`` and ``hidden_states``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MLPKANRegressorOutput(ModelOutput):
    """Output of :class:`MLPKANRegressor`: ``loss`` (MSE + aux loss, when labels are given),
    ``predictions`` (B, n_outputs), ``router_logits`` per layer and ``aux_loss``."""

    loss: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------
# building blocks


class DenseMLP(nn.Module):
    """``fc2(act(fc1(x)))`` with biases (timm ``Mlp``): the dense FFN of ``ffn="mlp"``."""

    def __init__(self, d: int, hidden: int, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(ACTIVATIONS[self.activation](self.fc1(x)))


def build_ffn(config: MLPKANConfig | MLPKANRegressorConfig) -> nn.Module:
    """The feed-forward a config asks for: :class:`MLPKANMoE`, :class:`DenseMLP` or
    :class:`FasterKAN`."""
    d = config.hidden_size
    kan_kw = {
        "denominator": config.kan_denominator,
        "order": config.kan_spline_order,
        "impl": config.impl,
    }
    grid_range = (float(config.kan_grid_range[0]), float(config.kan_grid_range[1]))
    if config.ffn == "mlp":
        return DenseMLP(d, config.dense_mlp_hidden or 4 * d, config.mlp_activation)
    if config.ffn == "kan":
        hidden = config.dense_kan_hidden or d
        return FasterKAN(
            [d, hidden, d], config.kan_basis, config.kan_num_grids, grid_range, **kan_kw
        )
    return MLPKANMoE(
        d,
        num_mlp_experts=config.num_mlp_experts,
        num_kan_experts=config.num_kan_experts,
        mlp_hidden=config.mlp_expert_hidden,
        kan_hidden=config.kan_hidden,
        top_k=config.top_k,
        router=config.router,
        slots_per_expert=config.soft_slots_per_expert,
        kan_basis=config.kan_basis,
        kan_num_grids=config.kan_num_grids,
        kan_grid_range=grid_range,
        kan_denominator=config.kan_denominator,
        kan_spline_order=config.kan_spline_order,
        mlp_activation=config.mlp_activation,
        aux_loss_coef=config.router_aux_loss_coef,
        z_loss_coef=config.router_z_loss_coef,
        impl=config.impl,
    )


def _run_ffn(
    ffn: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if isinstance(ffn, MLPKANMoE):
        return ffn(x)
    return ffn(x), None, None


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, 1)
    return x * mask / keep


class MLPKANAttention(nn.Module):
    """timm ``Attention``: fused qkv projection (rows q | k | v, heads contiguous), scaled dot
    product attention over all tokens (core-kernels ``attention``), output projection."""

    def __init__(self, config: MLPKANConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        self.qkv = nn.Linear(d, 3 * d, bias=config.qkv_bias)
        self.proj = nn.Linear(d, d)
        self.impl = config.attn_impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, Dh)
        o = attention(q, k, v, impl=self.impl)  # (B, H, T, Dh)
        return self.proj(o.transpose(1, 2).reshape(b, t, d))


class MLPKANBlock(nn.Module):
    """Pre-LN transformer block whose FFN is MLP-KAN (or a dense baseline)."""

    def __init__(self, config: MLPKANConfig, drop_path: float) -> None:
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=config.block_eps)
        self.attn = MLPKANAttention(config)
        self.norm2 = nn.LayerNorm(d, eps=config.block_eps)
        self.ffn = build_ffn(config)
        self.drop_path = drop_path

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = x + _drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        y, logits, aux = _run_ffn(self.ffn, self.norm2(x))
        return x + _drop_path(y, self.drop_path, self.training), logits, aux


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches → d by a stride-p convolution (timm ``PatchEmbed``)."""

    def __init__(self, config: MLPKANConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.image_size = config.image_size
        self.num_channels = config.num_channels
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.num_channels, self.image_size, self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values: expected shape (B, {', '.join(map(str, expected))}), got "
                f"{tuple(pixel_values.shape)}"
            )
        return self.proj(pixel_values).flatten(2).transpose(1, 2)  # (B, P, d)


@torch.no_grad()
def _init_mlpkan_module(module: nn.Module, std: float, kan_linears: set[int]) -> None:
    """Initialise one module with transformers' guarded init functions (which skip tensors
    already loaded by ``from_pretrained``)."""
    if isinstance(module, MLPKANMoE):
        if module.gate is not None:
            bound = 1.0 / math.sqrt(module.d_model)
            init.uniform_(module.gate.weight, -bound, bound)
        else:
            init.normal_(module.slot_embeds, 0.0, 1.0 / math.sqrt(module.d_model))
        if module.num_mlp_experts:
            for p, fan_in in (
                (module.mlp_w1, module.d_model),
                (module.mlp_b1, module.d_model),
                (module.mlp_w2, module.mlp_hidden),
                (module.mlp_b2, module.mlp_hidden),
            ):
                bound = 1.0 / math.sqrt(fan_in)
                init.uniform_(p, -bound, bound)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            init.ones_(module.weight)
            init.zeros_(module.bias)
    elif isinstance(module, nn.Linear) and id(module) in kan_linears:
        # A KANLayer's ``spline_linear``: Xavier-uniform, the official FasterKAN init. (The grid
        # is a fixed, non-trainable parameter built by the constructor and saved with the
        # weights.)
        init.xavier_uniform_(module.weight)
    elif isinstance(module, (nn.Linear, nn.Conv2d)):
        init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------
# vision transformer


class MLPKANPreTrainedModel(PreTrainedModel):
    """Base class of the MLP-KAN ViT: config class and weight init."""

    config: MLPKANConfig
    config_class = MLPKANConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    _no_split_modules: ClassVar[list[str]] = ["MLPKANBlock"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        _init_weights(self, module)


class MLPKANViTModel(MLPKANPreTrainedModel):
    """The ViT backbone (no head). ``forward(pixel_values (B, C, H, W))`` returns
    :class:`MLPKANViTOutput`."""

    def __init__(self, config: MLPKANConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, d))
        n = config.num_hidden_layers
        rates = [config.drop_path * i / max(n - 1, 1) for i in range(n)]  # timm's linear rule
        self.blocks = nn.ModuleList(MLPKANBlock(config, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, **kwargs
    ) -> MLPKANViTOutput:
        x = self.patch_embed(pixel_values.to(self.cls_token.dtype))  # (B, P, d)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        hidden, logits_all = [], []
        aux_total = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            if output_hidden_states:
                hidden.append(x)
            x, logits, aux = block(x)
            if logits is not None:
                logits_all.append(logits)
                aux_total = aux_total + aux
        x = self.norm(x)
        if output_hidden_states:
            hidden.append(x)
        return MLPKANViTOutput(
            last_hidden_state=x,
            pooler_output=x[:, 0],
            router_logits=tuple(logits_all),
            aux_loss=aux_total,
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )

    def routing_stats(self) -> list[dict[str, torch.Tensor]]:
        """The :attr:`MLPKANMoE.last_routing_stats` of every block from the last forward (empty
        list for dense FFNs)."""
        return [b.ffn.last_routing_stats for b in self.blocks if isinstance(b.ffn, MLPKANMoE)]


class MLPKANForImageClassification(MLPKANPreTrainedModel):
    """MLP-KAN ViT image classifier: backbone + linear head on the class token.

    Args:
        config: an :class:`MLPKANConfig` (set ``num_labels``).

    ``forward(pixel_values (B, C, H, W), labels=None (B,) int64)`` returns
    :class:`MLPKANImageClassifierOutput`; with labels, ``loss`` = cross-entropy + the summed
    router auxiliary loss (0 by default).

    Examples:
        >>> import torch
        >>> cfg = MLPKANConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
        ...                    num_attention_heads=2, mlp_expert_hidden=16, kan_hidden=8,
        ...                    num_labels=3)
        >>> model = MLPKANForImageClassification(cfg)
        >>> out = model(torch.randn(2, 3, 8, 8), labels=torch.tensor([0, 2]))
        >>> out.logits.shape, out.loss.dim()
        (torch.Size([2, 3]), 0)
    """

    def __init__(self, config: MLPKANConfig) -> None:
        super().__init__(config)
        self.vit = MLPKANViTModel(config)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> MLPKANImageClassifierOutput:
        out = self.vit(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.head(out.pooler_output)  # (B, L)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(
                    f"labels: expected shape ({logits.shape[0]},), got {tuple(labels.shape)}"
                )
            loss = F.cross_entropy(logits.float(), labels) + out.aux_loss
        return MLPKANImageClassifierOutput(
            loss=loss,
            logits=logits,
            router_logits=out.router_logits,
            aux_loss=out.aux_loss,
            hidden_states=out.hidden_states,
        )

    def routing_stats(self) -> list[dict[str, torch.Tensor]]:
        """Per-block routing statistics of the last forward (see :meth:`MLPKANViTModel.routing_stats`)."""
        return self.vit.routing_stats()


# ----------------------------------------------------------------------------------------------
# regressor


class MLPKANRegressorPreTrainedModel(PreTrainedModel):
    """Base class of the function-learning regressor: config class and weight init."""

    config: MLPKANRegressorConfig
    config_class = MLPKANRegressorConfig
    base_model_prefix = "regressor"
    main_input_name = "inputs"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        _init_weights(self, module)


class MLPKANRegressor(MLPKANRegressorPreTrainedModel):
    """Function-learning model: one token per sample through residual MLP-KAN (or dense) FFNs.

    Args:
        config: an :class:`MLPKANRegressorConfig`.

    ``forward(inputs (B, n_inputs), labels=None (B,) or (B, n_outputs))`` returns
    :class:`MLPKANRegressorOutput`; with labels, ``loss`` = MSE + the summed router aux loss.

    Examples:
        >>> import torch
        >>> cfg = MLPKANRegressorConfig(n_inputs=3, hidden_size=8, mlp_expert_hidden=8,
        ...                             kan_hidden=4)
        >>> model = MLPKANRegressor(cfg)
        >>> model(torch.randn(5, 3)).predictions.shape
        torch.Size([5, 1])
    """

    def __init__(self, config: MLPKANRegressorConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.embed = nn.Linear(config.n_inputs, d)
        self.norms = nn.ModuleList(
            nn.LayerNorm(d, eps=config.layer_norm_eps) for _ in range(config.num_layers)
        )
        self.ffns = nn.ModuleList(build_ffn(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.head = nn.Linear(d, config.n_outputs)
        self.post_init()

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> MLPKANRegressorOutput:
        n_in = self.config.n_inputs
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.shape[1] != n_in:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)
            raise ValueError(f"inputs: expected shape (B, n_inputs={n_in}), got {got}")
        x = self.embed(inputs.to(self.embed.weight.dtype))[:, None]  # (B, 1, d): one token
        logits_all = []
        aux_total = x.new_zeros((), dtype=torch.float32)
        for norm, ffn in zip(self.norms, self.ffns, strict=True):
            y, logits, aux = _run_ffn(ffn, norm(x))
            x = x + y
            if logits is not None:
                logits_all.append(logits)
                aux_total = aux_total + aux
        pred = self.head(self.norm(x[:, 0]))  # (B, n_out)
        loss = None
        if labels is not None:
            target = labels.reshape(pred.shape[0], -1).to(pred.dtype)
            if target.shape != pred.shape:
                raise ValueError(
                    f"labels: expected shape ({pred.shape[0]},) or {tuple(pred.shape)}, got "
                    f"{tuple(labels.shape)}"
                )
            loss = F.mse_loss(pred, target) + aux_total
        return MLPKANRegressorOutput(
            loss=loss, predictions=pred, router_logits=tuple(logits_all), aux_loss=aux_total
        )

    def routing_stats(self) -> list[dict[str, torch.Tensor]]:
        """Per-layer :attr:`MLPKANMoE.last_routing_stats` of the last forward."""
        return [f.last_routing_stats for f in self.ffns if isinstance(f, MLPKANMoE)]


def _init_weights(model: PreTrainedModel, module: nn.Module) -> None:
    if isinstance(module, MLPKANViTModel):
        init.trunc_normal_(module.pos_embed, std=model.config.initializer_range)
        init.trunc_normal_(module.cls_token, std=model.config.initializer_range)
    # KANLayer holds no parameter of its own, so transformers never calls this hook on it;
    # its weight is recognised at the nn.Linear level instead.
    kan_linears = model.__dict__.get("_kan_linear_ids")
    if kan_linears is None:  # built once per model (all layers exist by post_init)
        kan_linears = {id(m.spline_linear) for m in model.modules() if isinstance(m, KANLayer)}
        model.__dict__["_kan_linear_ids"] = kan_linears
    _init_mlpkan_module(module, model.config.initializer_range, kan_linears)
