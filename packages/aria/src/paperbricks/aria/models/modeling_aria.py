"""Aria's vision encoder, projector and multimodal model (arXiv 2410.05993, §2 "Model architecture").

Three pieces, all our own code (HF transformers' ``AriaForConditionalGeneration`` and
``Idefics3VisionTransformer`` are the parity oracles; we neither wrap nor subclass them):

**Vision encoder** (:class:`AriaVisionModel`, SigLIP / Idefics3-style ViT). For an image padded to
an (H, W) canvas with a boolean ``pixel_mask``:

- a patch is valid iff **any** pixel of its p x p window is valid (``patch_attention_mask``);
- patch embedding = Conv2d(C, d, p, stride p) over the whole canvas (padded pixels included:
  a partially valid patch sees them, as upstream does);
- position ids by fractional bucketisation on the full P x P table (P = image_size / p): an image
  with h_p x w_p valid patches sends valid row k to table row ``bucketize(k / h_p, [1/P, ..., (P-1)/P])``
  (right-closed, float32, the fraction clamped below 1 - 1e-6), columns likewise; id = row·P + col;
  padded patches get id 0. Non-square images therefore get stretched positions, not a sub-grid;
- pre-LN encoder layers: ``x += out(attn(LN1 x))``, ``x += fc2(gelu_tanh(fc1(LN2 x)))``;
- the features Aria uses are the **last encoder hidden state without post-layernorm**
  (``vision_feature_layer=-1``; HF 5.x records the encoder-layer outputs, so its
  ``hidden_states[-1]`` is pre-``post_layernorm`` too). ``post_layernorm`` is kept (its weights
  are in every checkpoint) and applied only to ``last_hidden_state``.

What differs from the obvious ViT: attention runs as **packed variable-length attention over the
valid patches** (core-kernels ``attention`` with ``cu_seqlens``: FlashAttention-2-style Triton on
CUDA, per-segment SDPA on the CPU). Each image contributes two segments, its valid patches and
its padded patches, so valid patches never see padded ones (HF: an additive key-padding mask, the
same thing for the valid rows). Padded rows then attend among themselves instead of to the
valid patches as in HF; they are masked out of the projector, so logits are unaffected.

**Projector** (:class:`AriaProjector`). Learnable queries ``Q`` (max n_q, d_v); for N patches use
the first ``n_q = projector_patch_to_query_dict[N]`` (unknown N -> ``ValueError``)::

    q = W_q·LN(Q),  k = W_k·LN_kv(X),  v = W_v·LN_kv(X)            (no biases)
    a = MHA(q, k, v, key_padding_mask)                          (torch MHA: its own biased in/out proj)
    h = Dropout(Linear(a))                                      (no residual)
    out = W_out·gelu_tanh(W_in·LN(h))                           (no biases)

The double projection (W_q then MHA's in-projection) is kept for weight compatibility. Padded
patches are masked with MHA's ``key_padding_mask`` (B, N) rather than HF's per-head 3-D
``attn_mask`` (the batch-major ``repeat_interleave`` trap cannot happen).

**Multimodal model** (:class:`AriaForConditionalGeneration`): vision tower -> projector -> the
image features replace the ``<|img|>`` token embeddings in order (count mismatch -> ``ValueError``)
-> :class:`~paperbricks.aria.models.modeling_aria_text.AriaTextModel` (the MoE decoder) ->
``lm_head``. Returns the LM loss, logits, the cache, per-layer router logits and the aux losses
(per ``text_config.aux_loss_mode``). ``from_pretrained`` reads an HF 5.x Aria ``save_pretrained``
directory directly (legacy on-disk layout ``language_model.model.*`` / ``vision_tower.*`` /
``multi_modal_projector.*`` / ``experts.fc1.weight``, renamed on load and back on save).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForImageTextToText, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from paperbricks.core_kernels.attention import attention

from .configuration_aria import AriaConfig, AriaVisionConfig
from .modeling_aria_text import AriaCausalLMOutput, AriaTextModel, causal_lm_output

__all__ = [
    "AriaForConditionalGeneration",
    "AriaPreTrainedModel",
    "AriaProjector",
    "AriaVisionModel",
    "AriaVisionOutput",
    "patch_attention_mask",
    "vision_position_ids",
]

logger = logging.getLogger(__name__)


# ---- helpers --------------------------------------------------------------------------------------


def patch_attention_mask(pixel_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Valid-patch mask: a patch is valid iff any pixel of its ``patch_size``² window is valid.

    Args:
        pixel_mask: (B, H, W) bool or 0/1 integer tensor, True/1 = real pixel. H and W must be
            multiples of ``patch_size``.
        patch_size: patch side p (int >= 1).

    Returns:
        (B, H/p, W/p) bool.

    Examples:
        >>> m = torch.zeros(1, 28, 28, dtype=torch.bool); m[0, :15, :3] = True
        >>> patch_attention_mask(m, 14).int().tolist()
        [[[1, 0], [1, 0]]]
    """
    if not isinstance(pixel_mask, torch.Tensor) or pixel_mask.dim() != 3:
        raise ValueError(f"pixel_mask: expected a (B, H, W) tensor, got {_describe(pixel_mask)}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size: expected an int >= 1, got {patch_size!r}")
    b, h, w = pixel_mask.shape
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"pixel_mask: expected H and W to be multiples of patch_size={patch_size}, got {(h, w)}"
        )
    m = pixel_mask.bool().reshape(b, h // patch_size, patch_size, w // patch_size, patch_size)
    return m.any(dim=4).any(dim=2)  # (B, H/p, W/p)


def vision_position_ids(patch_mask: torch.Tensor, num_patches_per_side: int) -> torch.Tensor:
    """Fractionally bucketised position ids on the full P x P table (Idefics3 / NaViT style).

    For image b with ``h_b`` valid patch rows and ``w_b`` valid patch columns (counted along the
    first column / first row of ``patch_mask``), patch (i, j) gets
    ``bucketize(i / h_b) * P + bucketize(j / w_b)`` with boundaries ``arange(1/P, 1, 1/P)`` in
    float32, right-closed, the fractions clamped to ``1 - 1e-6``; padded patches get 0. The float
    steps are HF's, so edge cases (k/h landing on a boundary) match it exactly.

    Args:
        patch_mask: (B, h_p, w_p) bool, True = valid patch; every image needs one valid patch.
        num_patches_per_side: P, the side of the position table.

    Returns:
        (B, h_p·w_p) int64 ids in [0, P²).

    Examples:
        >>> vision_position_ids(torch.ones(1, 2, 2, dtype=torch.bool), 4).tolist()
        [[0, 2, 8, 10]]
    """
    if patch_mask.dim() != 3 or patch_mask.dtype != torch.bool:
        raise ValueError(f"patch_mask: expected (B, h_p, w_p) bool, got {_describe(patch_mask)}")
    b, hp, wp = patch_mask.shape
    p = num_patches_per_side
    dev = patch_mask.device
    rows = patch_mask[:, :, 0].sum(dim=1)  # (B,) valid patch rows
    cols = patch_mask[:, 0, :].sum(dim=1)  # (B,) valid patch columns
    if bool((rows == 0).any()) or bool((cols == 0).any()):
        empty = torch.nonzero((rows == 0) | (cols == 0)).flatten().tolist()
        raise ValueError(
            f"pixel_mask: image(s) {empty} have no valid patch in their first row/column "
            "(every image needs at least its top-left pixel valid)"
        )
    edges = torch.arange(1 / p, 1.0, 1 / p, device=dev)  # (P-1,) float32 bucket boundaries
    frac_r = torch.arange(hp, device=dev, dtype=torch.float32)[None] * (1.0 / rows)[:, None]
    frac_c = torch.arange(wp, device=dev, dtype=torch.float32)[None] * (1.0 / cols)[:, None]
    bucket_r = torch.bucketize(frac_r.clamp(max=1.0 - 1e-6), edges, right=True)  # (B, h_p)
    bucket_c = torch.bucketize(frac_c.clamp(max=1.0 - 1e-6), edges, right=True)  # (B, w_p)
    ids = (bucket_r[:, :, None] * p + bucket_c[:, None, :]).reshape(b, -1)  # (B, h_p·w_p)
    return torch.where(patch_mask.reshape(b, -1), ids, torch.zeros_like(ids))


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _padded_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None, impl: str
) -> torch.Tensor:
    """Bidirectional attention in which valid tokens see only the valid tokens of their image.

    q, k, v: (B, H, N, D); valid: (B, N) bool or None (= all valid). Returns (B, H, N, D).
    Tokens are reordered valid-first per image and packed into one row of 2·B segments
    ([valid_0, pad_0, valid_1, pad_1, ...]); core-kernels' varlen attention is block-diagonal.
    """
    if valid is None or bool(valid.all()):
        return attention(q, k, v, impl=impl)
    b, h, n, d = q.shape
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # (B, N) valid first
    idx = order[:, None, :, None].expand(b, h, n, d)

    def pack(x: torch.Tensor) -> torch.Tensor:  # (B, H, N, D) -> (1, H, B·N, D)
        return x.gather(2, idx).transpose(0, 1).reshape(1, h, b * n, d)

    n_valid = valid.sum(dim=1)  # (B,)
    lens = torch.stack([n_valid, n - n_valid], dim=1).reshape(-1)  # (2B,)
    cu = F.pad(lens.cumsum(0), (1, 0)).to(torch.int32)  # (2B+1,)
    o = attention(pack(q), pack(k), pack(v), cu_seqlens=cu, max_seqlen=n, impl=impl)
    o = o.reshape(h, b, n, d).transpose(0, 1)  # (B, H, N, D) in packed order
    return torch.empty_like(o).scatter_(2, idx, o)


# ---- vision encoder --------------------------------------------------------------------------------


@dataclass
class AriaVisionOutput(ModelOutput):
    """Output of :class:`AriaVisionModel`.

    Attributes:
        last_hidden_state: (B, N, d) after ``post_layernorm`` (what HF returns as
            ``last_hidden_state``).
        features: (B, N, d) the last encoder layer's output **without** post-layernorm: what
            Aria's projector consumes (``vision_feature_layer=-1``).
        patch_mask: (B, N) bool, True = valid patch.
        hidden_states: tuple of (B, N, d): the embeddings then every layer's output, when
            ``output_hidden_states=True``.
    """

    last_hidden_state: torch.Tensor | None = None
    features: torch.Tensor | None = None
    patch_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class AriaVisionEmbeddings(nn.Module):
    """Patch conv + bucketised position embedding (see :func:`vision_position_ids`)."""

    def __init__(self, config: AriaVisionConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_patches_per_side = config.num_patches_per_side
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            padding="valid",
        )
        self.position_embedding = nn.Embedding(self.num_patches_per_side**2, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, d)
        pos = vision_position_ids(patch_mask, self.num_patches_per_side)  # (B, N)
        return x + self.position_embedding(pos)


class AriaVisionAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections (SigLIP)."""

    def __init__(self, config: AriaVisionConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        self.attn_impl = config.attn_impl
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, H, N, D)
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        o = _padded_varlen_attention(q, k, v, valid, self.attn_impl)  # (B, H, N, D)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, -1))


class AriaVisionMLP(nn.Module):
    def __init__(self, config: AriaVisionConfig):
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AriaVisionEncoderLayer(nn.Module):
    """Pre-LN transformer block: ``x += attn(LN1 x)``; ``x += mlp(LN2 x)``."""

    def __init__(self, config: AriaVisionConfig):
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn = AriaVisionAttention(config)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = AriaVisionMLP(config)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), valid)
        return x + self.mlp(self.layer_norm2(x))


class AriaVisionEncoder(nn.Module):
    def __init__(self, config: AriaVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [AriaVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)]
        )


def _init_common(module: nn.Module, std: float) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        init.xavier_uniform_(module.in_proj_weight)
        init.zeros_(module.in_proj_bias)
    elif isinstance(module, AriaProjector):
        init.trunc_normal_(module.query, std=std)


class AriaVisionPreTrainedModel(PreTrainedModel):
    """Wires :class:`AriaVisionConfig` into HF ``PreTrainedModel``."""

    config_class = AriaVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    _no_split_modules: ClassVar[list[str]] = ["AriaVisionEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        _init_common(module, self.config.initializer_range)


class AriaVisionModel(AriaVisionPreTrainedModel):
    """Aria's ViT (SigLIP / Idefics3 layout), parameter names identical to HF's vision tower.

    Args:
        config: :class:`AriaVisionConfig`.

    ``forward(pixel_values, pixel_mask=None, patch_mask=None, output_hidden_states=False)``:

    - ``pixel_values``: (B, C, H, W) float, H and W multiples of ``patch_size`` (the processor
      pads to 490 x 490 or 980 x 980);
    - ``pixel_mask``: (B, H, W) bool, True = real pixel (None = all real); or
    - ``patch_mask``: (B, H/p, W/p) bool directly (overrides ``pixel_mask``).

    Returns :class:`AriaVisionOutput`. Padded patches do not influence valid ones.

    Examples:
        >>> cfg = AriaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=56, patch_size=14)
        >>> model = AriaVisionModel(cfg).eval()
        >>> px = torch.randn(2, 3, 56, 56); mask = torch.ones(2, 56, 56, dtype=torch.bool)
        >>> mask[1, :, 28:] = False
        >>> out = model(px, pixel_mask=mask)
        >>> out.features.shape, out.patch_mask.sum(1).tolist()
        (torch.Size([2, 16, 32]), [16, 8])
    """

    def __init__(self, config: AriaVisionConfig):
        super().__init__(config)
        self.embeddings = AriaVisionEmbeddings(config)
        self.encoder = AriaVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs: Any,
    ) -> AriaVisionOutput:
        cfg = self.config
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values: expected a (B, C, H, W) tensor, got {_describe(pixel_values)}"
            )
        b, c, h, w = pixel_values.shape
        p = cfg.patch_size
        if c != cfg.num_channels or h % p or w % p:
            raise ValueError(
                f"pixel_values: expected (B, {cfg.num_channels}, H, W) with H, W multiples of "
                f"patch_size={p}, got {tuple(pixel_values.shape)}"
            )
        if patch_mask is None:
            if pixel_mask is None:
                patch_mask = torch.ones(
                    b, h // p, w // p, dtype=torch.bool, device=pixel_values.device
                )
            else:
                if tuple(pixel_mask.shape) != (b, h, w):
                    raise ValueError(
                        f"pixel_mask: expected shape {(b, h, w)} like pixel_values' (B, H, W), "
                        f"got {tuple(pixel_mask.shape)}"
                    )
                patch_mask = patch_attention_mask(pixel_mask, p)
        elif tuple(patch_mask.shape) != (b, h // p, w // p) or patch_mask.dtype != torch.bool:
            raise ValueError(
                f"patch_mask: expected a {(b, h // p, w // p)} bool tensor, got "
                f"{_describe(patch_mask)}"
            )
        x = self.embeddings(
            pixel_values.to(self.embeddings.patch_embedding.weight.dtype), patch_mask
        )
        valid = patch_mask.reshape(b, -1)  # (B, N)
        all_hidden = [x] if output_hidden_states else None
        for layer in self.encoder.layers:
            x = layer(x, valid)
            if all_hidden is not None:
                all_hidden.append(x)
        return AriaVisionOutput(
            last_hidden_state=self.post_layernorm(x),
            features=x,
            patch_mask=valid,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )


# ---- projector -------------------------------------------------------------------------------------


class AriaProjectorMLP(nn.Module):
    """``W_out · gelu_tanh(W_in · x)``, no biases (d_v -> d_text -> d_text)."""

    def __init__(self, in_features: int, hidden_features: int, output_dim: int):
        super().__init__()
        self.linear_in = nn.Linear(in_features, hidden_features, bias=False)
        self.linear_out = nn.Linear(hidden_features, output_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_out(F.gelu(self.linear_in(x), approximate="tanh"))


class AriaCrossAttention(nn.Module):
    """Queries attend to the patch features: LN + bias-free W_q/W_k/W_v, then torch MHA (its own
    biased in/out projections), then Linear + dropout. No residual."""

    def __init__(self, config: AriaConfig, dropout_rate: float = 0.0):
        super().__init__()
        d = config.vision_config.hidden_size
        self.num_heads = config.vision_config.num_attention_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.multihead_attn = nn.MultiheadAttention(d, self.num_heads, batch_first=True)
        self.linear = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout_rate)
        self.layer_norm = nn.LayerNorm(d)
        self.layer_norm_kv = nn.LayerNorm(d)

    def forward(
        self, features: torch.Tensor, queries: torch.Tensor, padded: torch.Tensor | None
    ) -> torch.Tensor:
        q = self.q_proj(self.layer_norm(queries))  # (B, n_q, d)
        kv = self.layer_norm_kv(features)  # (B, N, d)
        a, _ = self.multihead_attn(
            q, self.k_proj(kv), self.v_proj(kv), key_padding_mask=padded, need_weights=False
        )
        return self.dropout(self.linear(a))


class AriaProjector(nn.Module):
    """Cross-attention projector: ViT patches (B, N, d_v) -> n_q tokens (B, n_q, d_text).

    n_q is chosen by the patch count N from ``config.projector_patch_to_query_dict``
    (Aria: 1225 -> 128, 4900 -> 256). Args: config: :class:`AriaConfig`.

    ``forward(features, patch_mask=None)``: ``features`` (B, N, d_v); ``patch_mask`` (B, N) bool,
    True = valid patch (None = all valid); every image needs one valid patch. Padded patches are
    excluded from the attention, so they cannot change the output.

    Examples:
        >>> cfg = AriaConfig(
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=56, patch_size=14),
        ...     text_config=dict(vocab_size=64, hidden_size=48, intermediate_size=16,
        ...                      num_hidden_layers=1, num_attention_heads=4, moe_num_experts=4,
        ...                      moe_topk=2),
        ...     projector_patch_to_query_dict={4: 2, 16: 4})
        >>> proj = AriaProjector(cfg)
        >>> proj(torch.randn(3, 16, 32)).shape, proj(torch.randn(1, 4, 32)).shape
        (torch.Size([3, 4, 48]), torch.Size([1, 2, 48]))
    """

    def __init__(self, config: AriaConfig):
        super().__init__()
        self.patch_to_query_dict = dict(config.projector_patch_to_query_dict)
        d_v = config.vision_config.hidden_size
        d_t = config.text_config.hidden_size
        self.in_features = d_v
        self.query = nn.Parameter(torch.zeros(config.max_value_projector_patch_to_query_dict, d_v))
        self.cross_attn = AriaCrossAttention(config)
        self.layer_norm = nn.LayerNorm(d_v)
        self.feed_forward = AriaProjectorMLP(d_v, d_t, d_t)

    def num_queries(self, num_patches: int) -> int:
        """n_q for ``num_patches`` patches; ``ValueError`` naming the known counts otherwise."""
        if num_patches not in self.patch_to_query_dict:
            raise ValueError(
                f"num_patches: {num_patches} patches per image is not in "
                f"projector_patch_to_query_dict (known patch counts: "
                f"{sorted(self.patch_to_query_dict)})"
            )
        return self.patch_to_query_dict[num_patches]

    def forward(
        self, features: torch.Tensor, patch_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            raise ValueError(f"features: expected (B, N, d_v), got {_describe(features)}")
        b, n, d = features.shape
        if d != self.in_features:
            raise ValueError(f"features: expected last dim {self.in_features}, got {d}")
        n_q = self.num_queries(n)
        padded = None
        if patch_mask is not None:
            if tuple(patch_mask.shape) != (b, n) or patch_mask.dtype != torch.bool:
                raise ValueError(
                    f"patch_mask: expected a {(b, n)} bool tensor, got {_describe(patch_mask)}"
                )
            if not bool(patch_mask.any(dim=1).all()):
                raise ValueError("patch_mask: every image needs at least one valid patch")
            padded = ~patch_mask  # (B, N) True = ignore
        queries = self.query[:n_q].unsqueeze(0).expand(b, -1, -1)  # (B, n_q, d_v)
        h = self.cross_attn(features, queries, padded)  # (B, n_q, d_v)
        return self.feed_forward(self.layer_norm(h))  # (B, n_q, d_text)


# ---- multimodal model ------------------------------------------------------------------------------


class AriaPreTrainedModel(PreTrainedModel):
    """Wires :class:`AriaConfig` into HF ``PreTrainedModel`` (init, save/load)."""

    config_class = AriaConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules: ClassVar[list[str]] = ["AriaTextDecoderLayer", "AriaVisionEncoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        _init_common(module, self.config.initializer_range)


class _AriaBody(nn.Module):
    """``model.`` namespace of the HF 5.x parameter names: vision tower, projector, decoder."""

    def __init__(self, config: AriaConfig):
        super().__init__()
        self.vision_tower = AriaVisionModel(config.vision_config)
        self.multi_modal_projector = AriaProjector(config)
        self.language_model = AriaTextModel(config.text_config)


class AriaForConditionalGeneration(AriaPreTrainedModel, GenerationMixin):
    """Aria: ViT -> cross-attention projector -> fine-grained MoE decoder -> LM head.

    Args:
        config: :class:`AriaConfig` (an HF ``"aria"`` config.json loads into it).

    ``forward(input_ids, pixel_values=None, pixel_mask=None, attention_mask=None,
    position_ids=None, cache=None, inputs_embeds=None, labels=None, use_cache=None,
    logits_to_keep=0, output_attentions=None, output_hidden_states=None)``:

    - ``input_ids`` (B, T) with every ``<|img|>`` already expanded to n_q tokens per image
      (:func:`paperbricks.aria.processing.expand_image_tokens`);
    - ``pixel_values`` (I, C, H, W) — all images (crops) of the batch in order of their tokens;
      ``pixel_mask`` (I, H, W) bool. Used only on a prefill step (T > 1), as in HF;
    - ``labels`` (B, T), -100 = ignored: ``loss`` is the shifted cross-entropy, plus
      ``aux_loss + z_loss`` when ``text_config.aux_loss_mode == "explicit"``.

    Returns :class:`~paperbricks.aria.models.modeling_aria_text.AriaCausalLMOutput` (``loss``,
    ``aux_loss``, ``z_loss``, ``logits``, ``cache``, ``hidden_states``, ``attentions``,
    ``router_logits``). ``generate`` works with the KV cache.

    Examples:
        >>> cfg = AriaConfig(
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=56, patch_size=14),
        ...     text_config=dict(vocab_size=64, hidden_size=48, intermediate_size=16,
        ...                      num_hidden_layers=1, num_attention_heads=4, moe_num_experts=4,
        ...                      moe_topk=2),
        ...     projector_patch_to_query_dict={4: 2, 16: 4})
        >>> model = AriaForConditionalGeneration(cfg).eval()
        >>> ids = torch.tensor([[1, 9, 9, 5, 6]])          # one 28 px image -> 4 patches -> 2 tokens
        >>> px = torch.randn(1, 3, 28, 28)
        >>> model(ids, pixel_values=px).logits.shape
        torch.Size([1, 5, 64])
        >>> model.generate(ids, pixel_values=px, max_new_tokens=3, do_sample=False).shape
        torch.Size([1, 8])
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "lm_head.weight": "model.language_model.embed_tokens.weight"
    }

    def __init__(self, config: AriaConfig):
        super().__init__(config)
        self.model = _AriaBody(config)
        self.lm_head = nn.Linear(
            config.text_config.hidden_size, config.text_config.vocab_size, bias=False
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.language_model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @property
    def vision_tower(self) -> AriaVisionModel:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> AriaProjector:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> AriaTextModel:
        return self.model.language_model

    def get_image_features(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (I, C, H, W) (+ ``pixel_mask`` (I, H, W)) -> projected tokens (I, n_q, d_text)."""
        vis = self.model.vision_tower(pixel_values, pixel_mask=pixel_mask)
        patch_mask = vis.patch_mask if pixel_mask is not None else None
        return self.model.multi_modal_projector(vis.features, patch_mask)

    def merge_image_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Write ``image_features`` (I, n_q, d) over the ``<|img|>`` embeddings, in order.

        Raises ``ValueError`` when the number of image tokens differs from I·n_q.
        """
        is_img = input_ids == self.config.image_token_index  # (B, T)
        n_tokens = int(is_img.sum())
        n_feats = image_features.shape[0] * image_features.shape[1]
        if n_tokens != n_feats:
            raise ValueError(
                f"input_ids: {n_tokens} image tokens (id {self.config.image_token_index}) but the "
                f"images give {image_features.shape[0]} x {image_features.shape[1]} = {n_feats} "
                "features; expand each <|img|> to n_q tokens per image/crop "
                "(paperbricks.aria.processing.expand_image_tokens)"
            )
        feats = image_features.reshape(-1, image_features.shape[-1]).to(inputs_embeds.dtype)
        out = inputs_embeds.clone()
        out[is_img] = feats
        return out

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> AriaCausalLMOutput:
        """See the class docstring; ``past_key_values=`` is accepted as the old name of ``cache``."""
        if "past_key_values" in kwargs:
            if cache is not None:
                raise ValueError("cache/past_key_values: pass only one of them")
            cache = kwargs.pop("past_key_values")
        # HF plumbing we accept and ignore: outputs are always a dataclass with router logits;
        # the loss is a mean over the labelled tokens of this batch (Trainer's count is unused).
        for key in (
            "return_dict",
            "cache_position",
            "num_logits_to_keep",
            "output_router_logits",
            "num_items_in_batch",
        ):
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"forward: unexpected keyword arguments {sorted(kwargs)}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids/inputs_embeds: pass exactly one of them")
        if inputs_embeds is None:
            if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
                raise ValueError(f"input_ids: expected (B, T) int64, got {_describe(input_ids)}")
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, T, d)
        if pixel_values is not None and inputs_embeds.shape[1] != 1:
            if input_ids is None:
                raise ValueError("pixel_values: need input_ids to locate the image tokens")
            feats = self.get_image_features(pixel_values, pixel_mask)  # (I, n_q, d)
            inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, feats)
        out = self.model.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            compute_aux=self.training or labels is not None,
        )
        return causal_lm_output(
            out, self.lm_head, labels, logits_to_keep, self.config.text_config.aux_loss_mode
        )

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs: Any) -> dict:
        """HF's preparation, plus: images go in on the first (prefill) step only."""
        first = kwargs.get("is_first_iteration")
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        cache = model_inputs.get("cache", model_inputs.get("past_key_values"))
        prefill = first if first is not None else (cache is None or cache.get_seq_length() == 0)
        if not prefill:
            model_inputs["pixel_values"] = None
            model_inputs["pixel_mask"] = None
        return model_inputs


def _register() -> None:
    """Auto-class registration and the on-disk renaming HF ``save_pretrained`` uses for Aria."""
    from transformers import conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    rules = [
        (r"^language_model\.lm_head", "lm_head"),
        (r"^language_model\.model", "model.language_model"),
        (r"^vision_tower", "model.vision_tower"),
        (r"^multi_modal_projector", "model.multi_modal_projector"),
        (r"mlp\.experts\.fc1\.weight", "mlp.experts.gate_up_proj"),
        (r"mlp\.experts\.fc2\.weight", "mlp.experts.down_proj"),
    ]
    conversion_mapping.register_checkpoint_conversion_mapping(
        AriaConfig.model_type,
        [WeightRenaming(source_patterns=s, target_patterns=d) for s, d in rules],
        overwrite=True,
    )
    AutoModel.register(AriaVisionConfig, AriaVisionModel, exist_ok=True)
    AutoModelForImageTextToText.register(AriaConfig, AriaForConditionalGeneration, exist_ok=True)


_register()
