"""Configurations of Aria (arXiv 2410.05993, §2 "Model architecture"), HF-field-compatible.

Three classes, each with the field names of its HF transformers 5.x twin so that an HF ``config.json``
loads into it unchanged:

- :class:`AriaVisionConfig` (model type ``"paperbricks_aria_vision"``) mirrors HF
  ``Idefics3VisionConfig`` (``"idefics3_vision"``), the SigLIP-style ViT HF builds for Aria;
- :class:`AriaTextConfig` (``"paperbricks_aria_text"``) mirrors HF ``AriaTextConfig``
  (``"aria_text"``); ``intermediate_size`` is the **per-expert** SwiGLU width;
- :class:`AriaConfig` (``"paperbricks_aria"``) mirrors HF ``AriaConfig`` (``"aria"``).

What differs from HF's classes:

- the defaults are the **published Aria** sizes (ViT 27 x 1152, decoder 28 x 2560, 64 experts of
  width 1664, top-6, 2 shared, RoPE base 5e6, vocab 100,352), not HF's small placeholders
  (8 experts, top-2, d 4096 ...). A config dict that says ``model_type`` ``"aria"``,
  ``"aria_text"`` or ``"idefics3_vision"`` is first completed with **HF's** defaults (it is
  parsed by HF's own class), so a hub config that leaves a field out means what it means to HF;
- the text config carries the training terms HF lacks: ``router_aux_loss_coef`` (Switch
  load-balancing, official 1e-3), ``router_z_loss_coef`` (official 1e-5), ``aux_loss_mode``
  (``"autoscaler"``: the official gradient-only injection; ``"explicit"``: added to the returned
  loss; ``"none"``) and ``experts_backend`` (``"grouped"``: core-kernels permute + grouped GEMM
  with fused SwiGLU; ``"loop"``: a per-expert Python loop, the readable baseline);
- every value is validated in ``__post_init__`` with a ``ValueError`` naming the field.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PreTrainedConfig

from paperbricks.core_kernels.validate import check_choice, check_float, check_int

__all__ = ["AriaConfig", "AriaTextConfig", "AriaVisionConfig"]

_ATTN_IMPLS = ("auto", "reference", "triton")
_VISION_ACTS = ("gelu_pytorch_tanh", "gelu", "gelu_new", "gelu_fast", "quick_gelu", "relu")
_TEXT_ACTS = ("silu",)
_AUX_MODES = ("autoscaler", "explicit", "none")
_EXPERT_BACKENDS = ("grouped", "loop")
# Keys written by ``save_pretrained`` or HF that are not constructor arguments of ours.
_DROP_KEYS = ("transformers_version", "architectures", "model_type")


def _hf_completed(data: dict[str, Any], hf_model_type: str) -> dict[str, Any]:
    """Fill the fields an HF config dict leaves out with HF's defaults (by parsing it with HF)."""
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if k not in _DROP_KEYS}
    hf = AutoConfig.for_model(hf_model_type, **data)
    out = hf.to_dict()
    for key in _DROP_KEYS:
        out.pop(key, None)
    return out


class _HFCompatMixin:
    """Reads HF config dicts: their ``model_type`` is checked and dropped (we stay ours) and the
    fields they leave out are completed with HF's defaults, not ours."""

    _hf_model_types: ClassVar[tuple[str, ...]] = ()
    _complete_from_hf: ClassVar[bool] = True

    @classmethod
    def _drop_model_type(cls, kwargs: dict[str, Any]) -> None:
        model_type = kwargs.pop("model_type", None)
        if model_type is not None and model_type not in (*cls._hf_model_types, cls.model_type):
            raise ValueError(
                f"model_type: expected one of {(*cls._hf_model_types, cls.model_type)}, "
                f"got {model_type!r}"
            )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        data = dict(config_dict)
        model_type = data.get("model_type")
        cls._drop_model_type(data)
        if cls._complete_from_hf and model_type in cls._hf_model_types:
            data = _hf_completed(data, model_type)
        return super().from_dict(data, **kwargs)


class AriaVisionConfig(_HFCompatMixin, PreTrainedConfig):
    r"""Configuration of :class:`~paperbricks.aria.models.AriaVisionModel` (SigLIP-style ViT).

    Field names are HF ``Idefics3VisionConfig``'s. Defaults are Aria's encoder (SigLIP-so400m
    shapes, 980 px, patch 14, so a 70 x 70 position table).

    Args:
        hidden_size (int): width d. Default 1152.
        intermediate_size (int): MLP inner width. Default 4304.
        num_hidden_layers (int): encoder layers. Default 27.
        num_attention_heads (int): heads; must divide ``hidden_size``. Default 16.
        num_channels (int): image channels C. Default 3.
        image_size (int): side of the square canvas the position table covers; the table has
            P x P entries with P = image_size // patch_size. Default 980.
        patch_size (int): square patch side (conv kernel = stride). Default 14.
        hidden_act (str): MLP activation. Default ``"gelu_pytorch_tanh"``.
        layer_norm_eps (float): LayerNorm epsilon. Default 1e-6.
        attention_dropout (float): accepted for HF compatibility; must be 0. Default 0.0.
        initializer_range (float): std of the init of linear/conv weights. Default 0.02.
        attn_impl (str): core-kernels attention backend ``"auto"|"reference"|"triton"``.
            Default ``"auto"``.

    Examples:
        >>> cfg = AriaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=56, patch_size=14)
        >>> cfg.num_patches_per_side
        4
    """

    model_type = "paperbricks_aria_vision"
    base_config_key = "vision_config"
    _hf_model_types: ClassVar[tuple[str, ...]] = ("idefics3_vision",)

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 980
    patch_size: int = 14
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    attn_impl: str = "auto"

    def __post_init__(self, **kwargs):
        self._drop_model_type(kwargs)
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_channels",
            "image_size",
            "patch_size",
        ):
            check_int(name, getattr(self, name), 1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads: must divide hidden_size={self.hidden_size}, "
                f"got {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size: expected a multiple of patch_size={self.patch_size}, "
                f"got {self.image_size}"
            )
        check_choice("hidden_act", self.hidden_act, _VISION_ACTS)
        check_float("layer_norm_eps", self.layer_norm_eps, 0, strict=True)
        if self.attention_dropout != 0:
            raise ValueError(
                f"attention_dropout: only 0 is supported, got {self.attention_dropout!r}"
            )
        check_float("initializer_range", self.initializer_range, 0)
        check_choice("attn_impl", self.attn_impl, _ATTN_IMPLS)
        super().__post_init__(**kwargs)

    @property
    def num_patches_per_side(self) -> int:
        """P = image_size // patch_size, the side of the position-embedding table."""
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class AriaTextConfig(_HFCompatMixin, PreTrainedConfig):
    r"""Configuration of the Aria MoE decoder (``AriaTextModel`` / ``AriaTextForCausalLM``).

    Field names are HF ``AriaTextConfig``'s plus four of ours (the last four below). Defaults are
    the published Aria decoder: 28 layers, d 2560, 20 heads of 128 (no GQA), RoPE base 5e6,
    64 routed SwiGLU experts of width 1664, top-6, 2 shared experts (one SwiGLU of width
    2 x 1664), vocab 100,352, 64K context.

    Args:
        vocab_size (int): vocabulary size. Default 100352.
        hidden_size (int): model width d. Default 2560.
        intermediate_size (int): **per-expert** SwiGLU width I. Default 1664.
        num_hidden_layers (int): decoder layers. Default 28.
        num_attention_heads (int): query heads H. Default 20.
        num_key_value_heads (int | None): K/V heads Hkv (must divide H); None = H. Default None.
        head_dim (int | None): per-head width D; None = hidden_size // H. Default None.
        hidden_act (str): expert activation; only ``"silu"`` (SwiGLU). Default ``"silu"``.
        max_position_embeddings (int): longest context. Default 65536.
        initializer_range (float): std of the normal init. Default 0.02.
        rms_norm_eps (float): RMSNorm epsilon. Default 1e-6.
        use_cache (bool): return a KV cache by default. Default True.
        pad_token_id / bos_token_id / eos_token_id: special ids. Defaults 2 / 1 / 2 (HF's).
        pretraining_tp (int | None): HF compatibility only; must be 1 or None. Default 1.
        tie_word_embeddings (bool): tie lm_head to the embeddings. Default False.
        rope_parameters (dict | None): ``{"rope_type": "default", "rope_theta": float}`` as HF 5.x
            stores it; a legacy ``rope_theta=`` keyword is accepted. Default theta 5e6.
        attention_bias (bool): biases in q/k/v/o. Default False.
        attention_dropout (float): must be 0. Default 0.0.
        mlp_bias (bool): HF compatibility only; must be False. Default False.
        moe_num_experts (int): routed experts E. Default 64.
        moe_topk (int): experts per token k (1 <= k <= E). Default 6.
        moe_num_shared_experts (int): shared experts (fused into one SwiGLU of width
            I x n_shared; 0 = none). Default 2.
        router_aux_loss_coef (float): Switch load-balancing coefficient c_aux (official 1e-3;
            fine-tune recipe 1e-4). Default 1e-3.
        router_z_loss_coef (float): router z-loss coefficient c_z. Default 1e-5.
        aux_loss_mode (str): ``"autoscaler"`` (official: aux terms injected into the gradient
            only, the returned loss is the LM loss), ``"explicit"`` (added to the returned loss)
            or ``"none"``. Default ``"autoscaler"``.
        experts_backend (str): ``"grouped"`` (core-kernels permute + grouped GEMM) or
            ``"loop"`` (per-expert loop). Default ``"grouped"``.
        attn_impl (str): core-kernels attention backend ``"auto"|"reference"|"triton"``.
            Default ``"auto"``.

    Examples:
        >>> cfg = AriaTextConfig(vocab_size=128, hidden_size=64, intermediate_size=32,
        ...                      num_hidden_layers=2, num_attention_heads=4, moe_num_experts=8,
        ...                      moe_topk=2)
        >>> cfg.head_dim, cfg.num_key_value_heads, cfg.rope_parameters["rope_theta"]
        (16, 4, 5000000.0)
    """

    model_type = "paperbricks_aria_text"
    base_config_key = "text_config"
    default_theta = 5_000_000.0
    _hf_model_types: ClassVar[tuple[str, ...]] = ("aria_text",)

    vocab_size: int = 100352
    hidden_size: int = 2560
    intermediate_size: int = 1664
    num_hidden_layers: int = 28
    num_attention_heads: int = 20
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 65536
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 2
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pretraining_tp: int | None = 1
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    moe_num_experts: int = 64
    moe_topk: int = 6
    moe_num_shared_experts: int = 2
    router_aux_loss_coef: float = 1e-3
    router_z_loss_coef: float = 1e-5
    aux_loss_mode: str = "autoscaler"
    experts_backend: str = "grouped"
    attn_impl: str = "auto"

    def __post_init__(self, **kwargs):
        self._drop_model_type(kwargs)
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "moe_num_experts",
            "moe_topk",
        ):
            check_int(name, getattr(self, name), 1)
        check_int("moe_num_shared_experts", self.moe_num_shared_experts, 0)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        check_int("num_key_value_heads", self.num_key_value_heads, 1)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads: must divide num_attention_heads={self.num_attention_heads}, "
                f"got {self.num_key_value_heads}"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"num_attention_heads: must divide hidden_size={self.hidden_size} when "
                    f"head_dim is not given, got {self.num_attention_heads}"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        check_int("head_dim", self.head_dim, 2)
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim: rotary embedding needs an even head_dim, got {self.head_dim}"
            )
        if self.moe_topk > self.moe_num_experts:
            raise ValueError(
                f"moe_topk: expected 1 <= moe_topk <= moe_num_experts={self.moe_num_experts}, "
                f"got {self.moe_topk}"
            )
        check_choice("hidden_act", self.hidden_act, _TEXT_ACTS)
        check_float("rms_norm_eps", self.rms_norm_eps, 0, strict=True)
        check_float("initializer_range", self.initializer_range, 0)
        if self.attention_dropout != 0:
            raise ValueError(
                f"attention_dropout: only 0 is supported, got {self.attention_dropout!r}"
            )
        if self.mlp_bias:
            raise ValueError("mlp_bias: Aria's experts have no biases; expected False, got True")
        if self.pretraining_tp not in (None, 1):
            raise ValueError(f"pretraining_tp: expected 1 or None, got {self.pretraining_tp!r}")
        check_float("router_aux_loss_coef", self.router_aux_loss_coef, 0)
        check_float("router_z_loss_coef", self.router_z_loss_coef, 0)
        check_choice("aux_loss_mode", self.aux_loss_mode, _AUX_MODES)
        check_choice("experts_backend", self.experts_backend, _EXPERT_BACKENDS)
        check_choice("attn_impl", self.attn_impl, _ATTN_IMPLS)
        if self.rope_parameters is not None and not isinstance(self.rope_parameters, dict):
            raise ValueError(
                f"rope_parameters: expected a dict or None, got {type(self.rope_parameters).__name__}"
            )
        if self.rope_parameters is not None:
            self.rope_parameters = dict(self.rope_parameters)
        super().__post_init__(**kwargs)
        rp = self.rope_parameters
        if rp.get("rope_type", "default") != "default":
            raise ValueError(
                f"rope_parameters: only rope_type 'default' is supported, got {rp['rope_type']!r}"
            )
        check_float("rope_parameters['rope_theta']", rp.get("rope_theta"), 0, strict=True)
        rp["rope_theta"] = float(rp["rope_theta"])


def _to_sub_config(cls: type[PreTrainedConfig], name: str, value: Any) -> PreTrainedConfig:
    """Turn None / a dict / an HF or our config into ``cls``; HF dicts get HF's defaults first."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, PreTrainedConfig):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(
            f"{name}: expected None, a dict or a PreTrainedConfig, got {type(value).__name__}"
        )
    data = dict(value)
    model_type = data.get("model_type")
    if model_type is not None and model_type not in (*cls._hf_model_types, cls.model_type):
        raise ValueError(
            f"{name}: expected model_type one of {(*cls._hf_model_types, cls.model_type)}, "
            f"got {model_type!r}"
        )
    if model_type in cls._hf_model_types:
        data = _hf_completed(data, model_type)
    for key in _DROP_KEYS:
        data.pop(key, None)
    if cls is AriaTextConfig and "rope_theta" in data and data.get("rope_parameters") is None:
        data["rope_parameters"] = {"rope_type": "default", "rope_theta": data.pop("rope_theta")}
    return cls(**data)


class AriaConfig(_HFCompatMixin, PreTrainedConfig):
    r"""Configuration of :class:`~paperbricks.aria.models.AriaForConditionalGeneration`.

    Field names are HF ``AriaConfig``'s. An HF ``config.json`` with ``model_type`` ``"aria"``
    (sub-configs ``"idefics3_vision"`` and ``"aria_text"``) loads directly; the model types are
    rewritten to ours.

    Args:
        vision_config (dict | PreTrainedConfig | None): the ViT; None = Aria's.
        text_config (dict | PreTrainedConfig | None): the MoE decoder; None = Aria's.
        vision_feature_layer (int): which encoder hidden state feeds the projector; only -1 (the
            last, no post-layernorm) is supported, as in Aria. Default -1.
        projector_patch_to_query_dict (dict[int, int] | None): patches per image -> number of
            learnable queries n_q; JSON string keys are converted to int. Default
            ``{1225: 128, 4900: 256}`` (490 px and 980 px images).
        image_token_index (int): id of ``<|img|>``; also readable as ``image_token_id``.
            Default 9.
        initializer_range (float): std of the normal init. Default 0.02.
        tie_word_embeddings (bool): tie lm_head to the embeddings. Default False.

    Examples:
        >>> cfg = AriaConfig(
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=56, patch_size=14),
        ...     text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=32,
        ...                      num_hidden_layers=2, num_attention_heads=4, moe_num_experts=8,
        ...                      moe_topk=2),
        ...     projector_patch_to_query_dict={"4": 2, "16": 4})
        >>> cfg.projector_patch_to_query_dict, cfg.max_value_projector_patch_to_query_dict
        ({4: 2, 16: 4}, 4)
    """

    model_type = "paperbricks_aria"
    _hf_model_types: ClassVar[tuple[str, ...]] = ("aria",)
    _complete_from_hf: ClassVar[bool] = False  # sub-configs are completed one by one
    attribute_map: ClassVar[dict[str, str]] = {"image_token_id": "image_token_index"}
    sub_configs_defaults: ClassVar[dict[str, Any]] = {
        "vision_config": AriaVisionConfig,
        "text_config": AriaTextConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_feature_layer: int = -1
    projector_patch_to_query_dict: dict | None = None
    image_token_index: int = 9
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self._drop_model_type(kwargs)
        kwargs.pop("max_value_projector_patch_to_query_dict", None)  # derived, recomputed below
        self.vision_config = _to_sub_config(AriaVisionConfig, "vision_config", self.vision_config)
        self.text_config = _to_sub_config(AriaTextConfig, "text_config", self.text_config)
        if self.vision_feature_layer != -1:
            raise ValueError(
                "vision_feature_layer: only -1 (the encoder's last hidden state, as in Aria) is "
                f"supported, got {self.vision_feature_layer!r}"
            )
        if self.projector_patch_to_query_dict is None:
            self.projector_patch_to_query_dict = {1225: 128, 4900: 256}
        if not isinstance(self.projector_patch_to_query_dict, dict) or not (
            self.projector_patch_to_query_dict
        ):
            raise ValueError(
                "projector_patch_to_query_dict: expected a non-empty dict {num_patches: "
                f"num_queries}}, got {self.projector_patch_to_query_dict!r}"
            )
        table: dict[int, int] = {}
        for k, v in self.projector_patch_to_query_dict.items():
            try:
                ki, vi = int(k), int(v)
            except (TypeError, ValueError):
                raise ValueError(
                    "projector_patch_to_query_dict: expected integer keys and values, got "
                    f"{k!r}: {v!r}"
                ) from None
            if ki < 1 or vi < 1:
                raise ValueError(
                    f"projector_patch_to_query_dict: expected positive entries, got {k!r}: {v!r}"
                )
            table[ki] = vi
        self.projector_patch_to_query_dict = table
        self.max_value_projector_patch_to_query_dict = max(table.values())
        check_int("image_token_index", self.image_token_index, 0)
        check_float("initializer_range", self.initializer_range, 0)
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        out["text_config"] = self.text_config.to_dict()
        return out
