"""Configurations of the Differential Transformer LM and its parameter-matched baseline.

``DiffTransformerConfig`` describes a decoder-only LM identical to Llama (pre-RMSNorm, SwiGLU,
RoPE, untied or tied embeddings) except that every attention layer is
:class:`~paperbricks.diffattn.modules.MultiheadDiffAttn` (arXiv 2410.05258). Its
``num_attention_heads`` counts **diff-heads** h (each of width 2d, d = hidden_size / (2h)), unlike
HF ``DiffLlamaConfig`` whose ``num_attention_heads`` counts the 2h component heads.

``BaselineTransformerConfig`` is the same LM with ordinary attention; built with
:meth:`BaselineTransformerConfig.from_diff_config` it has 2h heads of dim d and the same
projection sizes, so the two models differ by 6d parameters per layer (4d for the λ vectors, 2d
for γ; 4d with ``norm_affine=False``).
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from paperbricks.core_kernels.validate import check_bool, check_float, check_int

__all__ = ["BaselineTransformerConfig", "DiffTransformerConfig"]

_LAYOUTS = ("unilm", "hf")
_ROPE_LAYOUTS = ("interleaved", "half")
_ATTN_IMPLS = ("auto", "reference", "sdpa", "triton")


def _check_common(cfg: PreTrainedConfig) -> None:
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
        check_int(name, getattr(cfg, name), 1)
    check_int("num_attention_heads", cfg.num_attention_heads, 1)
    check_int("num_key_value_heads", cfg.num_key_value_heads, 1)
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ValueError(
            f"num_key_value_heads: num_attention_heads={cfg.num_attention_heads} must be a "
            f"multiple of num_key_value_heads, got {cfg.num_key_value_heads}"
        )
    check_int("max_position_embeddings", cfg.max_position_embeddings, 1)
    check_float("rms_norm_eps", cfg.rms_norm_eps, 0.0)
    check_float("rope_theta", cfg.rope_theta, 0.0, strict=True)
    check_float("initializer_range", cfg.initializer_range, 0.0)
    if cfg.rope_layout not in _ROPE_LAYOUTS:
        raise ValueError(f"rope_layout: expected one of {_ROPE_LAYOUTS}, got {cfg.rope_layout!r}")
    if cfg.attn_impl not in _ATTN_IMPLS:
        raise ValueError(f"attn_impl: expected one of {_ATTN_IMPLS}, got {cfg.attn_impl!r}")
    check_bool("tie_word_embeddings", cfg.tie_word_embeddings)


class DiffTransformerConfig(PreTrainedConfig):
    r"""Configuration of :class:`DiffTransformerForCausalLM` (model type
    ``"paperbricks_diff_transformer"``).

    Args:
        vocab_size (int): vocabulary size. Default 32000.
        hidden_size (int): model width E. Default 512.
        intermediate_size (int): SwiGLU inner width. Default 1376.
        num_hidden_layers (int): decoder layers. Default 8.
        num_attention_heads (int): h, the number of **diff-heads** (half the head count of a
            size-matched Transformer; the maintainers advise >= 8 at scale). Default 4.
        num_key_value_heads (int | None): diff-KV-heads for GQA (h must be a multiple).
            Default None = h.
        head_dim (int | None): component head dim d. Default None = hidden_size / (2h), which
            must divide evenly; set only for converted models (``double_proj``).
        max_position_embeddings (int): longest sequence the model is meant for (RoPE has no hard
            limit; recorded for ``generate``). Default 2048.
        rms_norm_eps (float): epsilon of the pre-norms and the final norm. Default 1e-5.
        head_norm_eps (float): epsilon of the per-head RMSNorm. Default 1e-5 (the official
            code's); HF DiffLlama uses its ``rms_norm_eps`` (the converter copies it).
        rope_theta (float): RoPE base. Default 10000.0.
        rope_layout (str): ``"interleaved"`` (official, GPT-J) or ``"half"`` (HF rotate_half).
            Default ``"interleaved"``.
        layout (str): component-head weight layout, ``"unilm"`` (official, interleaved pairs) or
            ``"hf"`` (DiffLlama, halves). Default ``"unilm"``.
        norm_affine (bool): learn the head-norm gain γ ∈ R^{2d} shared by the heads. Default
            True (official); HF DiffLlama has none.
        head_norm (bool): apply the per-head RMSNorm. Default True (the paper); False only for
            Llama conversions that must reproduce the original at step 0.
        lambda_scale (bool): multiply the head outputs by (1 − λ_init). Default True (the
            paper); ``convert_llama_to_diff(keep_lambda_scale=False)`` turns it off.
        lambda_init (float | None): None = the depth schedule 0.8 − 0.6·exp(−0.3·depth) (0-based
            depth); a float = that constant in every layer (the paper's ablation). Default None.
        lambda_std (float): std of the λ vectors' initialisation. Default 0.1.
        initializer_range (float): std of the normal init of linear and embedding weights.
            Default 0.02.
        tie_word_embeddings (bool): share the embedding and LM-head weights. Default False.
        attn_impl (str): ``diff_attention`` implementation: ``"auto"`` (fused Triton on CUDA,
            else two SDPA calls), ``"reference"``, ``"sdpa"`` or ``"triton"``. Default ``"auto"``.
        use_cache (bool): return a KV cache by default. Default True.
        pad_token_id, bos_token_id, eos_token_id (int | None): special tokens. Default None.

    Examples:
        >>> cfg = DiffTransformerConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...                             num_hidden_layers=2, num_attention_heads=2)
        >>> cfg.component_head_dim
        8
    """

    model_type = "paperbricks_diff_transformer"

    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1376
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    head_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_layout: str = "interleaved"
    layout: str = "unilm"
    norm_affine: bool = True
    head_norm: bool = True
    lambda_scale: bool = True
    lambda_init: float | None = None
    lambda_std: float = 0.1
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    attn_impl: str = "auto"
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _check_common(self)
        if self.head_dim is None:
            if self.hidden_size % (2 * self.num_attention_heads):
                raise ValueError(
                    f"hidden_size: expected a multiple of 2·num_attention_heads = "
                    f"{2 * self.num_attention_heads} (d = hidden_size / (2h)), got "
                    f"{self.hidden_size}"
                )
        else:
            check_int("head_dim", self.head_dim, 2)
        if self.component_head_dim % 2:
            raise ValueError(
                f"head_dim: RoPE needs an even component head dim d, got {self.component_head_dim}"
            )
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout: expected one of {_LAYOUTS}, got {self.layout!r}")
        for name in ("norm_affine", "head_norm", "lambda_scale"):
            check_bool(name, getattr(self, name))
        if self.norm_affine and not self.head_norm:
            raise ValueError("norm_affine: a head-norm gain γ needs head_norm=True")
        if self.lambda_init is not None:
            check_float("lambda_init", self.lambda_init)
        check_float("lambda_std", self.lambda_std, 0.0)
        check_float("head_norm_eps", self.head_norm_eps, 0.0)
        super().__post_init__(**kwargs)

    @property
    def component_head_dim(self) -> int:
        """d, the width of one query/key component (a diff-head's value width is 2d)."""
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // (2 * self.num_attention_heads)


class BaselineTransformerConfig(PreTrainedConfig):
    r"""Configuration of :class:`BaselineTransformerForCausalLM`, the ordinary-attention control
    (model type ``"paperbricks_baseline_transformer"``).

    The same fields as :class:`DiffTransformerConfig` minus the differential ones;
    ``num_attention_heads`` counts ordinary heads. Use :meth:`from_diff_config` for the
    parameter-matched control (2h heads of dim d).

    Args:
        vocab_size, hidden_size, intermediate_size, num_hidden_layers, max_position_embeddings,
        rms_norm_eps, rope_theta, rope_layout, initializer_range, tie_word_embeddings, use_cache,
        pad_token_id, bos_token_id, eos_token_id: as in :class:`DiffTransformerConfig`
            (defaults: 32000, 512, 1376, 8, 2048, 1e-5, 10000.0, ``"interleaved"``, 0.02, False,
            True, None, None, None).
        num_attention_heads (int): ordinary heads. Default 8.
        num_key_value_heads (int | None): KV heads (GQA). Default None = num_attention_heads.
        head_dim (int | None): head dim. Default None = hidden_size / num_attention_heads.
        attn_impl (str): core-kernels ``attention`` implementation ``"auto"``, ``"reference"``
            or ``"triton"`` (``"sdpa"`` is accepted and means ``"auto"``). Default ``"auto"``.

    Examples:
        >>> diff = DiffTransformerConfig(hidden_size=32, num_attention_heads=2)
        >>> BaselineTransformerConfig.from_diff_config(diff).num_attention_heads
        4
    """

    model_type = "paperbricks_baseline_transformer"

    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1376
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_layout: str = "interleaved"
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    attn_impl: str = "auto"
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _check_common(self)
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size: expected a multiple of num_attention_heads = "
                    f"{self.num_attention_heads}, got {self.hidden_size}"
                )
        else:
            check_int("head_dim", self.head_dim, 2)
        if self.attention_head_dim % 2:
            raise ValueError(
                f"head_dim: RoPE needs an even head dim, got {self.attention_head_dim}"
            )
        super().__post_init__(**kwargs)

    @property
    def attention_head_dim(self) -> int:
        """The head dim (``head_dim`` or hidden_size / num_attention_heads)."""
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_diff_config(
        cls, config: DiffTransformerConfig, **overrides
    ) -> BaselineTransformerConfig:
        """The parameter-matched control of a DIFF config: 2h heads and 2·Hkv KV heads of dim d.

        Every shared field (sizes, norms, RoPE, embeddings, special tokens) is copied; keyword
        ``overrides`` replace any field.
        """
        if not isinstance(config, DiffTransformerConfig):
            raise TypeError(
                f"config: expected a DiffTransformerConfig, got {type(config).__name__}"
            )
        fields = dict(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=2 * config.num_attention_heads,
            num_key_value_heads=2 * config.num_key_value_heads,
            head_dim=config.head_dim,
            max_position_embeddings=config.max_position_embeddings,
            rms_norm_eps=config.rms_norm_eps,
            rope_theta=config.rope_theta,
            rope_layout=config.rope_layout,
            initializer_range=config.initializer_range,
            tie_word_embeddings=config.tie_word_embeddings,
            attn_impl="auto" if config.attn_impl in ("sdpa", "auto") else config.attn_impl,
            use_cache=config.use_cache,
            pad_token_id=config.pad_token_id,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
        )
        fields.update(overrides)
        return cls(**fields)
