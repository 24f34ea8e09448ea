"""Pixtral-ViT (arXiv 2410.07073, §2): native-resolution encoder with 2-D RoPE and packed images.

    x = RMSNorm(Conv_P(img))                         # (N_i, d) patches per image, no CLS/abs-pos
    x += Attn(RMSNorm(x))   with RoPE-2D on q, k   # block-diagonal over the images of a call
    x += W2(act(W1 x) ⊙ W3 x)                       # act = SiLU for Pixtral

All images of one call are packed into a single sequence of N = Σ N_i patches and attention runs
through core-kernels ``varlen_attention`` with ``cu_seqlens`` (one segment per image): **no dense
N×N mask is ever built** (HF's eager/SDPA path builds one; the official code uses xformers'
``BlockDiagonalMask``). RoPE-2D angles come from core-kernels ``rope_2d_angles`` ([height | width]
pair order, even frequencies → rows, odd → columns) and are applied in the rotate-half layout, so
parameter names and Wq/Wk row layout equal HF's ``PixtralVisionModel``: an HF ``save_pretrained``
directory loads directly (see :func:`~paperbricks.pixtral.convert.mistral_to_hf` for the official
mistral-inference layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from paperbricks.core_kernels.attention import varlen_attention
from paperbricks.core_kernels.norm import RMSNorm
from paperbricks.core_kernels.rope import apply_rope, rope_2d_angles

from .configuration_pixtral import PixtralVisionConfig

__all__ = [
    "PixtralVisionModel",
    "PixtralVisionOutput",
    "PixtralVisionPreTrainedModel",
    "count_parameters",
]


def count_parameters(config: PixtralVisionConfig) -> int:
    """Analytic parameter count: ``C·P²·d + d + L·(4d² + 3·d·F + 2d)`` (no biases).

    Args:
        config: a :class:`PixtralVisionConfig`.

    Returns:
        The number of parameters of ``PixtralVisionModel(config)``.

    Examples:
        >>> count_parameters(PixtralVisionConfig())  # the published Pixtral-12B encoder
        403489792
    """
    if not isinstance(config, PixtralVisionConfig):
        raise TypeError(f"config: expected a PixtralVisionConfig, got {type(config).__name__}")
    d, f, c, p = (
        config.hidden_size,
        config.intermediate_size,
        config.num_channels,
        config.patch_size,
    )
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    return c * p * p * d + d + config.num_hidden_layers * per_layer


@dataclass
class PixtralVisionOutput(ModelOutput):
    """Output of :class:`PixtralVisionModel`.

    Attributes:
        last_hidden_state: (1, N, d) packed features of all images, row-major patches per image,
            images in input order (HF's layout).
        image_features: tuple of (n_h·n_w, d) views of ``last_hidden_state``, one per image.
        grid_sizes: (n_images, 2) int64 patch grids (n_h, n_w).
        cu_seqlens: (n_images + 1,) int32 cumulative patch counts.
    """

    last_hidden_state: torch.Tensor | None = None
    image_features: tuple[torch.Tensor, ...] | None = None
    grid_sizes: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None


class PixtralAttention(nn.Module):
    """Multi-head self-attention over packed images with RoPE-2D on q and k (no biases)."""

    def __init__(self, config: PixtralVisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.impl = config.attn_impl
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu_seqlens: torch.Tensor
    ) -> torch.Tensor:
        """x (N, d), cos/sin (N, D/2), cu_seqlens (n+1,) int32 -> (N, d)."""
        n = x.shape[0]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, self.num_heads, self.head_dim).transpose(0, 1).unsqueeze(0)

        q = heads(self.q_proj(x))  # (1, H, N, D)
        k = heads(self.k_proj(x))
        v = heads(self.v_proj(x))
        q = apply_rope(q, cos, sin, layout="half", impl=self.impl)
        k = apply_rope(k, cos, sin, layout="half", impl=self.impl)
        o = varlen_attention(q, k, v, cu_seqlens, impl=self.impl)  # (1, H, N, D)
        o = o[0].transpose(0, 1).reshape(n, -1)  # (N, d)
        return self.o_proj(o)


class PixtralMLP(nn.Module):
    """Gated FFN ``down(act(gate x) ⊙ up x)``; official names W1 = gate, W3 = up, W2 = down."""

    def __init__(self, config: PixtralVisionConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class PixtralBlock(nn.Module):
    """Pre-norm block: ``x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x))``."""

    def __init__(self, config: PixtralVisionConfig) -> None:
        super().__init__()
        eps, impl = config.rms_norm_eps, config.attn_impl
        self.attention_norm = RMSNorm(config.hidden_size, eps=eps, impl=impl)
        self.attention = PixtralAttention(config)
        self.ffn_norm = RMSNorm(config.hidden_size, eps=eps, impl=impl)
        self.feed_forward = PixtralMLP(config)

    def forward(self, x, cos, sin, cu_seqlens):
        x = x + self.attention(self.attention_norm(x), cos, sin, cu_seqlens)
        return x + self.feed_forward(self.ffn_norm(x))


class PixtralTransformer(nn.Module):
    """The stack of blocks (named ``transformer.layers.i`` as in HF)."""

    def __init__(self, config: PixtralVisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PixtralBlock(config) for _ in range(config.num_hidden_layers))


class PixtralVisionPreTrainedModel(PreTrainedModel):
    """Base class: config class and weight init (normal(0, initializer_range), norms = 1)."""

    config: PixtralVisionConfig
    config_class = PixtralVisionConfig
    base_model_prefix = "vision_encoder"
    main_input_name = "pixel_values"
    _no_split_modules: ClassVar[list[str]] = ["PixtralBlock"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


def _check_image(name: str, img: object, channels: int, patch: int, exact: bool) -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (C, H, W), got {type(img).__name__}")
    if img.dim() != 3:
        raise ValueError(f"{name}: expected shape (C, H, W), got {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {img.dtype}")
    c, h, w = img.shape
    if c != channels:
        raise ValueError(f"{name}: expected {channels} channels, got shape {tuple(img.shape)}")
    if h < patch or w < patch:
        raise ValueError(
            f"{name}: expected H, W >= patch_size={patch}, got {h}×{w} (resize with the processor)"
        )
    if exact and (h % patch or w % patch):
        raise ValueError(
            f"{name}: H and W must be multiples of patch_size={patch}, got {h}×{w} "
            f"(the processor resizes to a multiple; a padded batch with image_sizes floors as HF)"
        )


class PixtralVisionModel(PixtralVisionPreTrainedModel):
    """Pixtral-ViT: patch conv → ln_pre → blocks with RoPE-2D and packed block-diagonal attention.

    Parameter names equal HF ``PixtralVisionModel``'s, so ``from_pretrained`` reads an HF
    ``save_pretrained`` directory (config type ``"pixtral"``) as well as our own.

    Args:
        config: a :class:`PixtralVisionConfig`.

    Examples:
        >>> import torch
        >>> cfg = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                           num_attention_heads=2, patch_size=4)
        >>> model = PixtralVisionModel(cfg).eval()
        >>> out = model([torch.randn(3, 8, 12), torch.randn(3, 4, 4)])
        >>> out.last_hidden_state.shape, [f.shape[0] for f in out.image_features]
        (torch.Size([1, 7, 32]), [6, 1])
    """

    def __init__(self, config: PixtralVisionConfig) -> None:
        super().__init__(config)
        self.patch_size = config.patch_size
        self.patch_conv = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=False,
        )
        self.ln_pre = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, impl=config.attn_impl)
        self.transformer = PixtralTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.patch_conv

    def _split_inputs(
        self, pixel_values: torch.Tensor | Sequence[torch.Tensor], image_sizes
    ) -> list[torch.Tensor]:
        c, p = self.config.num_channels, self.patch_size
        if isinstance(pixel_values, torch.Tensor):
            if pixel_values.dim() == 3:
                pixel_values = pixel_values.unsqueeze(0)
            if pixel_values.dim() != 4:
                raise ValueError(
                    f"pixel_values: expected (B, C, H, W) or a list of (C, H, W), got shape "
                    f"{tuple(pixel_values.shape)}"
                )
            b, _, h, w = pixel_values.shape
            if b == 0:
                raise ValueError("pixel_values: expected at least one image, got batch size 0")
            if image_sizes is None:
                sizes = [(h, w)] * b
            else:
                sizes = torch.as_tensor(image_sizes).tolist()
                if len(sizes) != b or any(len(s) != 2 for s in sizes):
                    raise ValueError(
                        f"image_sizes: expected {b} (height, width) pairs, got {image_sizes!r}"
                    )
            images = []
            for idx, (ih, iw) in enumerate(sizes):
                if not (0 < ih <= h and 0 < iw <= w):
                    raise ValueError(
                        f"image_sizes[{idx}]: expected 0 < (h, w) <= padded ({h}, {w}), "
                        f"got ({ih}, {iw})"
                    )
                # HF crops the conv output to floor(size / P) patches: do the same on pixels.
                img = pixel_values[idx, :, : (ih // p) * p, : (iw // p) * p]
                _check_image(f"pixel_values[{idx}]", img, c, p, exact=False)
                images.append(img)
            return images
        if image_sizes is not None:
            raise ValueError("image_sizes: only valid with a padded (B, C, H, W) batch")
        if not isinstance(pixel_values, (list, tuple)) or len(pixel_values) == 0:
            raise TypeError(
                f"pixel_values: expected a non-empty list of (C, H, W) tensors or a (B, C, H, W) "
                f"tensor, got {type(pixel_values).__name__}"
            )
        for idx, img in enumerate(pixel_values):
            _check_image(f"pixel_values[{idx}]", img, c, p, exact=True)
        return list(pixel_values)

    def forward(
        self,
        pixel_values: torch.Tensor | Sequence[torch.Tensor],
        image_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> PixtralVisionOutput:
        """Encode images of different sizes in one packed sequence.

        Args:
            pixel_values: a list of n (C, H, W) float tensors of different sizes (H, W multiples
                of patch_size), or a padded (B, C, H, W) batch.
            image_sizes: for a padded batch, (B, 2) (height, width) of each image inside the
                padding; as in HF, each is cropped to ``floor(size / P)`` patches. Default None =
                the full (H, W) for every image.
            return_dict: accepted for HF compatibility; the output is always a
                :class:`PixtralVisionOutput` (indexable like a tuple).
            **kwargs: HF-style flags; any set to something other than None/False (e.g.
                ``output_hidden_states=True``) raises ``TypeError``.

        Returns:
            :class:`PixtralVisionOutput` with ``last_hidden_state`` (1, N, d) and per-image
            ``image_features`` (n_h·n_w, d).
        """
        unsupported = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
        if unsupported:
            raise TypeError(
                f"PixtralVisionModel.forward: unsupported arguments {unsupported} (hidden states "
                f"and attention maps are not returned)"
            )
        images = self._split_inputs(pixel_values, image_sizes)
        dtype = self.patch_conv.weight.dtype
        device = self.patch_conv.weight.device
        feats, rows, cols, grids = [], [], [], []
        for img in images:
            emb = self.patch_conv(img.to(device=device, dtype=dtype).unsqueeze(0))[0]  # (d, h, w)
            nh, nw = emb.shape[-2:]
            feats.append(emb.flatten(1).T)  # (h·w, d), row-major patches
            ii, jj = torch.meshgrid(
                torch.arange(nh, device=device), torch.arange(nw, device=device), indexing="ij"
            )
            rows.append(ii.reshape(-1))
            cols.append(jj.reshape(-1))
            grids.append((nh, nw))
        x = self.ln_pre(torch.cat(feats, dim=0))  # (N, d)
        cos, sin = rope_2d_angles(
            torch.cat(rows),
            torch.cat(cols),
            self.config.head_dim,
            base=self.config.rope_parameters["rope_theta"],
            dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
        )  # (N, D/2) each, float32 (float64 for a float64 model)
        lengths = [h * w for h, w in grids]
        cu = torch.tensor([0, *lengths], device=device).cumsum(0).to(torch.int32)
        for layer in self.transformer.layers:
            x = layer(x, cos, sin, cu)
        return PixtralVisionOutput(
            last_hidden_state=x.unsqueeze(0),
            image_features=tuple(torch.split(x, lengths, dim=0)),
            grid_sizes=torch.tensor(grids, dtype=torch.int64),
            cu_seqlens=cu,
        )
