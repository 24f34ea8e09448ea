"""Configurations of the MLP-KAN vision transformer and function-learning regressor (HF-style).

``MLPKANConfig`` (model type ``"paperbricks_mlpkan_vit"``) describes a DeiT/ViT image classifier
(pre-LN blocks, class token, learned position embeddings) identical to timm's
``VisionTransformer`` except that the feed-forward of every block is chosen by ``ffn``:

- ``"mlp-kan"`` (default): :class:`~paperbricks.mlpkan.moe.MLPKANMoE` (MLP-KAN, arXiv 2410.03027);
- ``"mlp"``: a dense MLP ``d → dense_mlp_hidden → d`` (the plain DeiT baseline);
- ``"kan"``: a dense FasterKAN ``[d, dense_kan_hidden, d]`` (the KAN-only baseline).

``MLPKANRegressorConfig`` (model type ``"paperbricks_mlpkan_regressor"``) describes the
function-learning model: one token per sample, ``x (B, n_inputs) → Linear → num_layers × [x + FFN(
LN(x))] → LN → Linear → (B, n_outputs)`` with the same three ``ffn`` choices.

:func:`count_parameters` gives the trainable-parameter count of either config in closed form
(the KAN grids are non-trainable and not counted), and :func:`match_hidden` /
:func:`matched_config` pick the dense width that matches another config's count — how the
MLP-only and KAN-only baselines are built at matched parameter counts.
"""

from __future__ import annotations

import itertools

from transformers import PreTrainedConfig

from paperbricks.core_kernels.validate import check_float, check_int

from ..bases import BASES, num_bases

__all__ = [
    "FFN_TYPES",
    "MLPKANConfig",
    "MLPKANRegressorConfig",
    "count_parameters",
    "match_hidden",
    "matched_config",
]

FFN_TYPES: tuple[str, ...] = ("mlp-kan", "mlp", "kan")
_ROUTERS = ("topk", "soft")
_ACTIVATIONS = ("gelu", "silu")
_IMPLS = ("auto", "reference", "triton")


def _check_ffn(cfg: PreTrainedConfig) -> None:
    """Validate the feed-forward fields shared by both configs."""
    if cfg.ffn not in FFN_TYPES:
        raise ValueError(f"ffn: expected one of {FFN_TYPES}, got {cfg.ffn!r}")
    check_int("num_mlp_experts", cfg.num_mlp_experts, 0)
    check_int("num_kan_experts", cfg.num_kan_experts, 0)
    n_exp = cfg.num_mlp_experts + cfg.num_kan_experts
    if cfg.ffn == "mlp-kan" and n_exp < 1:
        raise ValueError("num_mlp_experts + num_kan_experts: expected >= 1 for ffn='mlp-kan'")
    check_int("top_k", cfg.top_k, 1)
    if cfg.ffn == "mlp-kan" and cfg.router == "topk" and cfg.top_k > n_exp:
        raise ValueError(f"top_k: expected <= the number of experts E={n_exp}, got {cfg.top_k}")
    check_int("mlp_expert_hidden", cfg.mlp_expert_hidden, 1)
    check_int("kan_hidden", cfg.kan_hidden, 1)
    if cfg.dense_mlp_hidden is not None:
        check_int("dense_mlp_hidden", cfg.dense_mlp_hidden, 1)
    if cfg.dense_kan_hidden is not None:
        check_int("dense_kan_hidden", cfg.dense_kan_hidden, 1)
    if cfg.mlp_activation not in _ACTIVATIONS:
        raise ValueError(
            f"mlp_activation: expected one of {_ACTIVATIONS}, got {cfg.mlp_activation!r}"
        )
    if cfg.kan_basis not in BASES:
        raise ValueError(f"kan_basis: expected one of {BASES}, got {cfg.kan_basis!r}")
    check_int("kan_num_grids", cfg.kan_num_grids, 1)
    check_int("kan_spline_order", cfg.kan_spline_order, 0)
    rng = cfg.kan_grid_range
    if not isinstance(rng, (list, tuple)) or len(rng) != 2 or not float(rng[0]) < float(rng[1]):
        raise ValueError(f"kan_grid_range: expected (lo, hi) with lo < hi, got {rng!r}")
    cfg.kan_grid_range = [float(rng[0]), float(rng[1])]  # JSON-stable form
    if cfg.kan_denominator is not None:
        check_float("kan_denominator", cfg.kan_denominator, 0.0, strict=True)
    if cfg.router not in _ROUTERS:
        raise ValueError(f"router: expected one of {_ROUTERS}, got {cfg.router!r}")
    check_int("soft_slots_per_expert", cfg.soft_slots_per_expert, 1)
    check_float("router_aux_loss_coef", cfg.router_aux_loss_coef, 0.0)
    check_float("router_z_loss_coef", cfg.router_z_loss_coef, 0.0)
    if cfg.router == "soft" and (cfg.router_aux_loss_coef > 0 or cfg.router_z_loss_coef > 0):
        raise ValueError("router_aux_loss_coef/router_z_loss_coef: must be 0 with router='soft'")
    if cfg.impl not in _IMPLS:
        raise ValueError(f"impl: expected one of {_IMPLS}, got {cfg.impl!r}")
    check_float("initializer_range", cfg.initializer_range, 0.0)


class MLPKANConfig(PreTrainedConfig):
    r"""Configuration of :class:`~paperbricks.mlpkan.models.MLPKANForImageClassification` (model
    type ``"paperbricks_mlpkan_vit"``). Defaults are DeiT-tiny with the official MLP-KAN FFN.

    Args:
        image_size (int): input resolution (square). Default 224.
        patch_size (int): patch side p (``image_size`` must be a multiple). Default 16.
        num_channels (int): input channels. Default 3.
        hidden_size (int): width d. Default 192.
        num_hidden_layers (int): blocks. Default 12.
        num_attention_heads (int): heads (d must be a multiple). Default 3.
        qkv_bias (bool): bias in the fused qkv projection. Default True (DeiT; the official
            MLP-KAN blocks silently drop it, see ``official_compat``).
        drop_path (float): stochastic-depth rate of the last block (linearly increasing from 0,
            timm's schedule). Default 0.0.
        layer_norm_eps (float): epsilon of the final LayerNorm (and of the blocks' unless
            ``block_norm_eps`` is set). Default 1e-6 (DeiT).
        block_norm_eps (float | None): epsilon of the blocks' LayerNorms. Default None =
            ``layer_norm_eps``.
        ffn (str): ``"mlp-kan"`` (default), ``"mlp"`` or ``"kan"``; see the module docstring.
        num_mlp_experts (int): MLP experts (default 4). num_kan_experts (int): KAN experts
            (default 4). top_k (int): experts per token of the top-k router (default 2).
        mlp_expert_hidden (int): hidden width of each MLP expert (official ``hdim_kan``).
            Default 192.
        kan_hidden (int): hidden width of each KAN expert ``[d, kan_hidden, d]`` (official
            ``hdim_kan // 2``). Default 96.
        dense_mlp_hidden (int | None): hidden width of the dense MLP when ``ffn="mlp"``.
            Default None = 4·d (DeiT).
        dense_kan_hidden (int | None): hidden width of the dense FasterKAN when ``ffn="kan"``.
            Default None = d.
        mlp_activation (str): ``"gelu"`` (default, exact erf) or ``"silu"``.
        kan_basis (str): ``"rswaf"`` (default), ``"rbf"`` or ``"bspline"``.
        kan_num_grids (int): grid centres (rswaf, rbf) / intervals (bspline). Default 8.
        kan_grid_range (tuple[float, float]): grid range. Default (−2.0, 2.0).
        kan_denominator (float | None): h of the rswaf/rbf basis; None = the basis default
            (0.33 for rswaf, the grid spacing for rbf). Default None.
        kan_spline_order (int): B-spline degree (bspline only). Default 3.
        router (str): ``"topk"`` (default, official code) or ``"soft"`` (Soft-MoE, paper text).
        soft_slots_per_expert (int): Soft-MoE slots per expert. Default 1.
        router_aux_loss_coef (float): Switch load-balancing coefficient. Default 0.0 (none).
        router_z_loss_coef (float): router z-loss coefficient. Default 0.0.
        official_compat (bool): reproduce the released code's behaviour: ``qkv_bias=False``,
            ``drop_path=0`` and block LayerNorm eps 1e-5 (its blocks use ``nn.LayerNorm``'s
            default) are set by this preset. Default False.
        initializer_range (float): std of the truncated-normal init of the attention, patch
            embedding, head and dense-MLP weights, position embeddings and class token.
            Default 0.02.
        impl (str): KAN-layer / grouped-GEMM backend, ``"auto"``, ``"reference"`` or
            ``"triton"``. Default ``"auto"``.
        attn_impl (str): core-kernels ``attention`` backend. Default ``"auto"``.
        num_labels (int): classes (HF field). Default 2 (set it).

    Examples:
        >>> cfg = MLPKANConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
        ...                    num_attention_heads=2, mlp_expert_hidden=16, kan_hidden=8,
        ...                    num_labels=10)
        >>> cfg.num_patches
        4
    """

    model_type = "paperbricks_mlpkan_vit"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 192
    num_hidden_layers: int = 12
    num_attention_heads: int = 3
    qkv_bias: bool = True
    drop_path: float = 0.0
    layer_norm_eps: float = 1e-6
    block_norm_eps: float | None = None
    ffn: str = "mlp-kan"
    num_mlp_experts: int = 4
    num_kan_experts: int = 4
    top_k: int = 2
    mlp_expert_hidden: int = 192
    kan_hidden: int = 96
    dense_mlp_hidden: int | None = None
    dense_kan_hidden: int | None = None
    mlp_activation: str = "gelu"
    kan_basis: str = "rswaf"
    kan_num_grids: int = 8
    kan_grid_range: list[float] | tuple[float, float] = (-2.0, 2.0)
    kan_denominator: float | None = None
    kan_spline_order: int = 3
    router: str = "topk"
    soft_slots_per_expert: int = 1
    router_aux_loss_coef: float = 0.0
    router_z_loss_coef: float = 0.0
    official_compat: bool = False
    initializer_range: float = 0.02
    impl: str = "auto"
    attn_impl: str = "auto"

    def __post_init__(self, **kwargs):
        for name in ("image_size", "patch_size", "num_channels", "hidden_size"):
            check_int(name, getattr(self, name), 1)
        check_int("num_hidden_layers", self.num_hidden_layers, 0)
        check_int("num_attention_heads", self.num_attention_heads, 1)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size: expected a multiple of patch_size={self.patch_size}, got "
                f"{self.image_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size: expected a multiple of num_attention_heads="
                f"{self.num_attention_heads}, got {self.hidden_size}"
            )
        if not isinstance(self.official_compat, bool):
            raise TypeError(f"official_compat: expected a bool, got {self.official_compat!r}")
        if self.official_compat:
            self.qkv_bias = False
            self.drop_path = 0.0
            self.block_norm_eps = 1e-5
        if not isinstance(self.qkv_bias, bool):
            raise TypeError(f"qkv_bias: expected a bool, got {self.qkv_bias!r}")
        check_float("drop_path", self.drop_path, 0.0)
        if self.drop_path >= 1:
            raise ValueError(f"drop_path: expected a rate in [0, 1), got {self.drop_path}")
        check_float("layer_norm_eps", self.layer_norm_eps, 0.0, strict=True)
        if self.block_norm_eps is not None:
            check_float("block_norm_eps", self.block_norm_eps, 0.0, strict=True)
        if self.attn_impl not in ("auto", "reference", "triton"):
            raise ValueError(
                f"attn_impl: expected one of ('auto', 'reference', 'triton'), got {self.attn_impl!r}"
            )
        _check_ffn(self)
        super().__post_init__(**kwargs)

    @property
    def num_patches(self) -> int:
        """Number of patch tokens, (image_size / patch_size)²."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def block_eps(self) -> float:
        """Epsilon of the blocks' LayerNorms."""
        return self.layer_norm_eps if self.block_norm_eps is None else self.block_norm_eps


class MLPKANRegressorConfig(PreTrainedConfig):
    r"""Configuration of :class:`~paperbricks.mlpkan.models.MLPKANRegressor` (model type
    ``"paperbricks_mlpkan_regressor"``), the function-learning model.

    Args:
        n_inputs (int): input variables. Default 2.
        n_outputs (int): regression targets. Default 1.
        hidden_size (int): token width d. Default 16.
        num_layers (int): residual FFN layers ``x + FFN(LN(x))``. Default 1.
        layer_norm_eps (float): LayerNorm epsilon. Default 1e-5.
        ffn, num_mlp_experts, num_kan_experts, top_k, mlp_expert_hidden, kan_hidden,
        dense_mlp_hidden, dense_kan_hidden, mlp_activation, kan_basis, kan_num_grids,
        kan_grid_range, kan_denominator, kan_spline_order, router, soft_slots_per_expert,
        router_aux_loss_coef, router_z_loss_coef, initializer_range, impl: as in
            :class:`MLPKANConfig` (defaults ``"mlp-kan"``, 4, 4, 2, 16, 8, None (= 4·d),
            None (= d), ``"gelu"``, ``"rswaf"``, 8, (−2, 2), None, 3, ``"topk"``, 1, 0.0, 0.0,
            0.02, ``"auto"``).

    Each sample is one token, so the soft router's "sequence" is that single token (its
    dispatch is trivial and the combine weights alone mix the experts).

    Examples:
        >>> cfg = MLPKANRegressorConfig(n_inputs=3, hidden_size=8, mlp_expert_hidden=8, kan_hidden=4)
        >>> cfg.model_type
        'paperbricks_mlpkan_regressor'
    """

    model_type = "paperbricks_mlpkan_regressor"

    n_inputs: int = 2
    n_outputs: int = 1
    hidden_size: int = 16
    num_layers: int = 1
    layer_norm_eps: float = 1e-5
    ffn: str = "mlp-kan"
    num_mlp_experts: int = 4
    num_kan_experts: int = 4
    top_k: int = 2
    mlp_expert_hidden: int = 16
    kan_hidden: int = 8
    dense_mlp_hidden: int | None = None
    dense_kan_hidden: int | None = None
    mlp_activation: str = "gelu"
    kan_basis: str = "rswaf"
    kan_num_grids: int = 8
    kan_grid_range: list[float] | tuple[float, float] = (-2.0, 2.0)
    kan_denominator: float | None = None
    kan_spline_order: int = 3
    router: str = "topk"
    soft_slots_per_expert: int = 1
    router_aux_loss_coef: float = 0.0
    router_z_loss_coef: float = 0.0
    initializer_range: float = 0.02
    impl: str = "auto"

    def __post_init__(self, **kwargs):
        for name in ("n_inputs", "n_outputs", "hidden_size"):
            check_int(name, getattr(self, name), 1)
        check_int("num_layers", self.num_layers, 0)
        check_float("layer_norm_eps", self.layer_norm_eps, 0.0, strict=True)
        _check_ffn(self)
        super().__post_init__(**kwargs)


# ----------------------------------------------------------------------------------------------
# parameter counts


def _kan_params(widths: list[int], basis: str, num_grids: int, order: int) -> int:
    """Trainable parameters of a FasterKAN stack: per layer an affine LayerNorm (2·in) and the
    basis weight (out × in·G), no bias (spec §2); grids are not trainable."""
    g = num_bases(basis, num_grids, order)
    return sum(2 * i + o * i * g for i, o in itertools.pairwise(widths))


def _mlp_params(d: int, h: int) -> int:
    return 2 * d * h + h + d  # fc1 (d→h, bias) + fc2 (h→d, bias)


def _ffn_params(cfg: PreTrainedConfig) -> int:
    d = cfg.hidden_size
    if cfg.ffn == "mlp":
        return _mlp_params(d, cfg.dense_mlp_hidden or 4 * d)
    kan = (cfg.kan_basis, cfg.kan_num_grids, cfg.kan_spline_order)
    if cfg.ffn == "kan":
        return _kan_params([d, cfg.dense_kan_hidden or d, d], *kan)
    n_exp = cfg.num_mlp_experts + cfg.num_kan_experts
    router = d * n_exp * (cfg.soft_slots_per_expert if cfg.router == "soft" else 1)
    return (
        router
        + cfg.num_mlp_experts * _mlp_params(d, cfg.mlp_expert_hidden)
        + cfg.num_kan_experts * _kan_params([d, cfg.kan_hidden, d], *kan)
    )


def count_parameters(
    config: MLPKANConfig | MLPKANRegressorConfig, *, per_block: bool = False
) -> int:
    """Trainable parameters of the model a config describes, in closed form.

    ViT: patch embedding ``C·p²·d + d``, class token ``d``, position embeddings
    ``(P + 1)·d``, per block ``2d`` (norm1) ``+ 3d² (+3d with qkv_bias) + d² + d`` (attention)
    ``+ 2d`` (norm2) ``+ FFN``, final norm ``2d``, head ``d·L + L``. Regressor: ``n_in·d + d``,
    per layer ``2d + FFN``, final norm ``2d``, head ``d·n_out + n_out``. FFN: dense MLP
    ``2dh + h + d``; FasterKAN ``[d, h, d]``: ``2d + h·d·G + 2h + d·h·G``; MLP-KAN: router
    ``d·E`` (soft: ``d·E·p``) + the experts. DeiT-tiny MLP-KAN (d = 192, h = 192, KAN hidden 96):
    MLP expert 74,112, KAN expert 295,488, router 1,536, FFN 1,479,936 (spec §2).

    Args:
        config: an :class:`MLPKANConfig` or :class:`MLPKANRegressorConfig`.
        per_block: return only the feed-forward parameters of one block (default False).

    Examples:
        >>> count_parameters(MLPKANConfig(), per_block=True)
        1479936
    """
    if not isinstance(config, (MLPKANConfig, MLPKANRegressorConfig)):
        raise TypeError(
            f"config: expected MLPKANConfig or MLPKANRegressorConfig, got {type(config).__name__}"
        )
    ffn = _ffn_params(config)
    if per_block:
        return ffn
    d = config.hidden_size
    if isinstance(config, MLPKANRegressorConfig):
        head = d * config.n_outputs + config.n_outputs
        return config.n_inputs * d + d + config.num_layers * (2 * d + ffn) + 2 * d + head
    c, p, n_lab = config.num_channels, config.patch_size, config.num_labels
    attn = 3 * d * d + (3 * d if config.qkv_bias else 0) + d * d + d
    block = 4 * d + attn + ffn
    embed = c * p * p * d + d + d + (config.num_patches + 1) * d
    return embed + config.num_hidden_layers * block + 2 * d + d * n_lab + n_lab


def match_hidden(
    config: MLPKANConfig | MLPKANRegressorConfig, ffn: str, *, target: int | None = None
) -> int:
    """The hidden width of a dense ``ffn`` (``"mlp"`` or ``"kan"``) whose model's parameter count
    is closest to ``target``.

    Args:
        config: the reference config (its other fields are kept).
        ffn: ``"mlp"`` (sets ``dense_mlp_hidden``) or ``"kan"`` (sets ``dense_kan_hidden``).
        target: parameter count to match; default ``count_parameters(config)``.

    Returns:
        The width h >= 1 (the count is affine in h, so this is exact up to rounding).

    Examples:
        >>> cfg = MLPKANRegressorConfig(n_inputs=2, hidden_size=8, mlp_expert_hidden=8, kan_hidden=4)
        >>> h = match_hidden(cfg, "mlp")
        >>> abs(count_parameters(matched_config(cfg, "mlp")) - count_parameters(cfg)) < 2 * 8 + 1
        True
    """
    if ffn not in ("mlp", "kan"):
        raise ValueError(f"ffn: expected 'mlp' or 'kan', got {ffn!r}")
    if target is None:
        target = count_parameters(config)
    check_int("target", target, 1)
    field = "dense_mlp_hidden" if ffn == "mlp" else "dense_kan_hidden"

    def count(h: int) -> int:
        return count_parameters(_with(config, ffn=ffn, **{field: h}))

    c1, c2 = count(1), count(2)
    slope = c2 - c1
    guess = max(1, round(1 + (target - c1) / slope))
    best = min(
        (h for h in (guess - 1, guess, guess + 1) if h >= 1), key=lambda h: abs(count(h) - target)
    )
    return best


def matched_config(
    config: MLPKANConfig | MLPKANRegressorConfig, ffn: str, *, target: int | None = None
) -> MLPKANConfig | MLPKANRegressorConfig:
    """A copy of ``config`` with ``ffn`` (``"mlp"`` or ``"kan"``) at the width of
    :func:`match_hidden`, i.e. the parameter-matched dense baseline."""
    h = match_hidden(config, ffn, target=target)
    field = "dense_mlp_hidden" if ffn == "mlp" else "dense_kan_hidden"
    return _with(config, ffn=ffn, **{field: h})


def _with(config, **changes):
    d = config.to_dict()
    for k in ("model_type", "transformers_version", "architectures"):
        d.pop(k, None)
    d.update(changes)
    return type(config)(**d)
