"""Configuration of our Pixtral-ViT (arXiv 2410.07073, §2 "Pixtral-ViT"), HF-field-compatible.

``PixtralVisionConfig`` has the field names of HF ``transformers.PixtralVisionConfig`` (model type
``"pixtral"``), so an HF ``config.json`` loads into it unchanged. Differences from HF's class:

- model type ``"paperbricks_pixtral_vision"`` (registered with ``AutoConfig``);
- ``hidden_act`` defaults to ``"silu"`` (Pixtral's gated FFN is SiLU; HF's default ``"gelu"`` is a
  known trap), but a loaded config's value is honoured;
- ``attn_impl`` selects the core-kernels attention backend (``"auto"|"reference"|"triton"``);
- values are validated with errors that name the field.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

from paperbricks.core_kernels.validate import check_int

__all__ = ["PixtralVisionConfig"]

_ATTN_IMPLS = ("auto", "reference", "triton")
_ACTS = ("silu", "gelu", "gelu_pytorch_tanh", "relu")


class PixtralVisionConfig(PreTrainedConfig):
    r"""Configuration of :class:`~paperbricks.pixtral.models.PixtralVisionModel`.

    Defaults are the published Pixtral-12B encoder (403,489,792 parameters).

    Args:
        hidden_size (int): model width d. Default 1024.
        intermediate_size (int): gated-FFN inner width. Default 4096.
        num_hidden_layers (int): transformer blocks. Default 24.
        num_attention_heads (int): heads; head_dim = hidden_size / heads must be divisible by 4
            (2-D RoPE splits it into height and width halves). Default 16.
        num_channels (int): image channels C. Default 3.
        image_size (int): largest image side the encoder was trained for (max grid
            image_size / patch_size per side; not enforced). Default 1024.
        patch_size (int): square patch side P (conv kernel = stride). Default 16.
        hidden_act (str): FFN gate activation. Default ``"silu"``.
        attention_dropout (float): accepted for HF compatibility; must be 0 (no dropout is
            implemented). Default 0.0.
        rope_parameters (dict | None): ``{"rope_theta": float, "rope_type": "axial"}``.
            Default None = theta 10000, axial.
        initializer_range (float): std of the normal init of linear/conv weights. Default 0.02.
        rms_norm_eps (float): epsilon of every RMSNorm (HF hard-codes 1e-5). Default 1e-5.
        attn_impl (str): core-kernels attention/RoPE implementation, ``"auto"`` (Triton on CUDA),
            ``"reference"`` or ``"triton"``. Default ``"auto"``.

    Examples:
        >>> cfg = PixtralVisionConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2)
        >>> cfg.head_dim
        16
    """

    model_type = "paperbricks_pixtral_vision"

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 1024
    patch_size: int = 16
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    rope_parameters: dict | None = None
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    attn_impl: str = "auto"
    head_dim: int | None = None

    def __post_init__(self, **kwargs):
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
        hd = self.hidden_size // self.num_attention_heads
        if self.head_dim is not None and self.head_dim != hd:
            raise ValueError(
                f"head_dim: expected hidden_size / num_attention_heads = {hd}, got {self.head_dim}"
            )
        if hd % 4:
            raise ValueError(f"head_dim: 2-D RoPE needs a multiple of 4, got {hd}")
        self.head_dim = hd
        if self.hidden_act not in _ACTS:
            raise ValueError(f"hidden_act: expected one of {_ACTS}, got {self.hidden_act!r}")
        if self.attention_dropout != 0:
            raise ValueError(
                f"attention_dropout: only 0 is supported, got {self.attention_dropout}"
            )
        rp = dict(self.rope_parameters or {})
        rp.setdefault("rope_theta", 10000.0)
        rp.setdefault("rope_type", "axial")
        if rp["rope_type"] != "axial":
            raise ValueError(f"rope_parameters: rope_type must be 'axial', got {rp['rope_type']!r}")
        theta = rp["rope_theta"]
        if not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
            raise ValueError(
                f"rope_parameters: rope_theta must be a finite float > 0, got {theta!r}"
            )
        rp["rope_theta"] = float(theta)
        self.rope_parameters = rp
        if not (isinstance(self.rms_norm_eps, float) and self.rms_norm_eps > 0):
            raise ValueError(f"rms_norm_eps: expected a float > 0, got {self.rms_norm_eps!r}")
        if self.attn_impl not in _ATTN_IMPLS:
            raise ValueError(f"attn_impl: expected one of {_ATTN_IMPLS}, got {self.attn_impl!r}")
        super().__post_init__(**kwargs)
