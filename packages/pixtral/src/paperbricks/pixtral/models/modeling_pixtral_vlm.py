"""Pixtral VLM (arXiv 2410.07073 §2): our Pixtral-ViT + 2-layer GeLU adapter + any HF causal LM.

The decoder input is the text embedding sequence with the adapter's output written at the
``[IMG]`` positions only, row-major, image after image::

    e_t = W2 · GELU(W1 · f_k + b1) + b2     if token t is the k-th [IMG] of the prompt
    e_t = Embed(x_t)                        otherwise ([IMG_BREAK] / [IMG_END] included)

What differs from the obvious baseline (HF ``LlavaForConditionalGeneration``): the vision tower is
our packed-attention ``PixtralVisionModel`` (no dense N×N mask), the defaults are Pixtral's (see
``PixtralVLMConfig``), images may be a list of differently sized ``(C, H, W)`` tensors instead of a
padded batch, and a token/feature count mismatch raises a ``ValueError`` naming both counts. The
module tree and parameter names equal HF Llava's (``model.vision_tower``,
``model.multi_modal_projector.linear_{1,2}``, ``model.language_model``, ``lm_head``), so an HF
Llava-Pixtral ``save_pretrained`` directory loads with no missing or unexpected keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModel, AutoModelForImageTextToText, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from paperbricks.core_kernels.hf_compat import make_output, output_cache
from paperbricks.pixtral.models.configuration_pixtral_vlm import PixtralVLMConfig

__all__ = ["PixtralForConditionalGeneration", "VisionLanguageAdapter"]

logger = logging.getLogger(__name__)


class VisionLanguageAdapter(nn.Module):
    """The 2-layer adapter: ``Linear(d_vision→d_text) → GELU → Linear(d_text→d_text)``.

    Names ``linear_1``/``linear_2`` match HF Llava's ``multi_modal_projector``.

    Args:
        vision_dim: encoder width (1024 for Pixtral-12B).
        text_dim: decoder width (5120 for Pixtral-12B).
        act: activation name in ``transformers.activations.ACT2FN`` (default ``"gelu"``, exact).
        bias: biases in both linears (default ``True``).

    Examples:
        >>> adapter = VisionLanguageAdapter(8, 16)
        >>> adapter(torch.zeros(5, 8)).shape
        torch.Size([5, 16])
    """

    def __init__(self, vision_dim: int, text_dim: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        if act not in ACT2FN:
            raise ValueError(f"act: expected a name in transformers ACT2FN, got {act!r}")
        self.linear_1 = nn.Linear(vision_dim, text_dim, bias=bias)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_dim, text_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` (..., d_vision) → (..., d_text)."""
        return self.linear_2(self.act(self.linear_1(features)))


def _vision_model(config: Any) -> nn.Module:
    from paperbricks.pixtral.models.modeling_pixtral_vision import PixtralVisionModel

    return PixtralVisionModel(config)


class _PixtralVLMBody(nn.Module):
    """Holds the three parts under HF Llava's names (``vision_tower``, ``multi_modal_projector``,
    ``language_model``)."""

    def __init__(self, config: PixtralVLMConfig):
        super().__init__()
        self.vision_tower = _vision_model(config.vision_config)
        self.multi_modal_projector = VisionLanguageAdapter(
            config.vision_config.hidden_size,
            config.text_config.hidden_size,
            act=config.projector_hidden_act,
            bias=config.multimodal_projector_bias,
        )
        self.language_model = AutoModel.from_config(config.text_config)


class PixtralPreTrainedModel(PreTrainedModel):
    """Base class wiring :class:`PixtralVLMConfig` into HF ``PreTrainedModel``."""

    config_class = PixtralVLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True


class PixtralForConditionalGeneration(PixtralPreTrainedModel, GenerationMixin):
    """Pixtral: our encoder + adapter + causal-LM decoder, with ``generate()``.

    Args:
        config: a :class:`PixtralVLMConfig` (an HF Llava-Pixtral ``config.json`` loads into it).

    Examples:
        >>> from paperbricks.pixtral.models.configuration_pixtral_vlm import PixtralVLMConfig
        >>> cfg = PixtralVLMConfig(
        ...     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=32, patch_size=8),
        ...     text_config=dict(model_type="mistral", hidden_size=16, intermediate_size=32,
        ...                      num_hidden_layers=1, num_attention_heads=2,
        ...                      num_key_value_heads=1, vocab_size=32))
        >>> model = PixtralForConditionalGeneration(cfg).eval()
        >>> ids = torch.tensor([[1] + [10] * 2 + [11] + [10] * 2 + [12] + [5]])
        >>> model(input_ids=ids, pixel_values=[torch.zeros(3, 16, 16)]).logits.shape
        torch.Size([1, 8, 32])
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "lm_head.weight": "model.language_model.embed_tokens.weight"
    }

    def __init__(self, config: PixtralVLMConfig):
        super().__init__(config)
        self.model = _PixtralVLMBody(config)
        self.lm_head = nn.Linear(
            config.text_config.hidden_size, config.text_config.vocab_size, bias=False
        )
        self.post_init()

    @classmethod
    def from_decoder(
        cls,
        vision: Any,
        decoder_dir: str | os.PathLike[str],
        **config_kwargs: Any,
    ) -> PixtralForConditionalGeneration:
        """Assemble a VLM from a vision encoder and a causal LM saved in a local directory.

        The decoder (any ``AutoModelForCausalLM`` architecture) is read with
        ``local_files_only=True``; its body becomes ``model.language_model`` and its output layer
        ``lm_head``. The adapter is freshly initialised (it must be trained or loaded).

        Args:
            vision: a ``PixtralVisionModel`` (weights are copied) or a vision config / dict
                (random encoder).
            decoder_dir: directory written by a causal LM's ``save_pretrained``.
            **config_kwargs: further :class:`PixtralVLMConfig` fields (``image_token_index``...).

        Returns:
            A :class:`PixtralForConditionalGeneration` in eval mode.

        Examples:
            >>> model = PixtralForConditionalGeneration.from_decoder(
            ...     vision_model, "/path/to/mistral-dir", image_token_index=10
            ... )  # doctest: +SKIP
        """
        from transformers import AutoModelForCausalLM

        if not os.path.isdir(decoder_dir):
            raise ValueError(f"decoder_dir: expected an existing directory, got {decoder_dir!r}")
        lm = AutoModelForCausalLM.from_pretrained(decoder_dir, local_files_only=True)
        vision_model = vision if isinstance(vision, nn.Module) else None
        vision_config = vision.config if vision_model is not None else vision
        config = PixtralVLMConfig(
            vision_config=vision_config, text_config=lm.config, **config_kwargs
        )
        model = cls(config)
        if vision_model is not None:
            model.model.vision_tower.load_state_dict(vision_model.state_dict())
        model.model.language_model.load_state_dict(lm.get_decoder().state_dict())
        model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
        return model.eval()

    # ---- HF plumbing ---------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.model.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    # ---- images --------------------------------------------------------------------------
    def get_image_features(
        self,
        pixel_values: torch.Tensor | Sequence[torch.Tensor],
        image_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ) -> list[torch.Tensor]:
        """Encode images and project them to the decoder width.

        Args:
            pixel_values: a list of ``(C, H_i, W_i)`` tensors, or a padded ``(B, C, H, W)`` batch.
            image_sizes: ``(B, 2)`` true ``(H_i, W_i)`` of a padded batch; ``None`` means every
                image fills the batch (ignored for lists).

        Returns:
            One ``(n_h_i · n_w_i, d_text)`` tensor per image, rows in row-major patch order.
        """
        patch = self.config.vision_config.patch_size
        patch = patch if isinstance(patch, int) else int(patch[0])
        if isinstance(pixel_values, torch.Tensor):
            if pixel_values.dim() != 4:
                raise ValueError(
                    "pixel_values: expected a (B, C, H, W) tensor or a list of (C, H, W) "
                    f"tensors, got shape {tuple(pixel_values.shape)}"
                )
            if image_sizes is None:
                sizes = [tuple(pixel_values.shape[-2:])] * pixel_values.shape[0]
            else:
                sizes = [tuple(int(v) for v in s) for s in torch.as_tensor(image_sizes).tolist()]
                if len(sizes) != pixel_values.shape[0]:
                    raise ValueError(
                        f"image_sizes: expected {pixel_values.shape[0]} rows (one per image), "
                        f"got {len(sizes)}"
                    )
            out = self.model.vision_tower(pixel_values, image_sizes=sizes)
        elif isinstance(pixel_values, Sequence) and all(
            isinstance(p, torch.Tensor) for p in pixel_values
        ):
            if len(pixel_values) == 0 or any(p.dim() != 3 for p in pixel_values):
                raise ValueError(
                    "pixel_values: expected a non-empty list of (C, H, W) tensors, got shapes "
                    f"{[tuple(p.shape) for p in pixel_values]}"
                )
            sizes = [tuple(p.shape[-2:]) for p in pixel_values]
            out = self.model.vision_tower(list(pixel_values))
        else:
            raise TypeError(
                "pixel_values: expected a (B, C, H, W) tensor or a list of (C, H, W) tensors, "
                f"got {type(pixel_values).__name__}"
            )
        feats = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
        if isinstance(feats, (tuple, list)) and not isinstance(feats, torch.Tensor):
            feats = feats[0]
        feats = feats.reshape(-1, feats.shape[-1])  # (N_patches, d_vision)
        splits = [(h // patch) * (w // patch) for h, w in sizes]
        if sum(splits) != feats.shape[0]:
            raise ValueError(
                f"vision tower returned {feats.shape[0]} patch features, expected {sum(splits)} "
                f"for image sizes {sizes} with patch size {patch}"
            )
        projected = self.model.multi_modal_projector(feats)  # (N_patches, d_text)
        return list(torch.split(projected, splits, dim=0))

    def merge_image_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """Write ``features`` (N, D) at the ``[IMG]`` positions of ``input_ids`` (B, T), in order.

        Raises:
            ValueError: if the number of ``[IMG]`` tokens differs from ``N``.
        """
        mask = input_ids == self.config.image_token_index  # (B, T)
        n_tokens = int(mask.sum())
        if n_tokens != features.shape[0]:
            raise ValueError(
                f"input_ids: found {n_tokens} [IMG] tokens (id {self.config.image_token_index}) "
                f"but the images give {features.shape[0]} features; expand the prompt with "
                "n_h·(n_w+1) image tokens per image"
            )
        out = inputs_embeds.clone()
        out[mask] = features.to(out.dtype)
        return out

    # ---- forward -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | Sequence[torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_sizes: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits for ``input_ids`` (B, T) with image features at the ``[IMG]`` positions.

        Args:
            input_ids: ``(B, T)`` token ids (exactly one of ``input_ids``/``inputs_embeds``).
            pixel_values: list of ``(C, H_i, W_i)`` or padded ``(B_img, C, H, W)``; ``None`` for
                text-only input. Images are consumed in order by the ``[IMG]`` tokens.
            attention_mask, position_ids: passed to the decoder.
            inputs_embeds: ``(B, T, D)``; with images it requires ``input_ids`` to locate [IMG].
            labels: ``(B, T)`` for the shifted cross-entropy loss (``-100`` ignored).
            image_sizes: ``(B_img, 2)`` true sizes of a padded batch.
            logits_to_keep: keep only the last ``n`` positions' logits (0 keeps all).
            **kwargs: forwarded to the decoder (cache, ``use_cache``, ...).

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` ``(B, T, vocab)``, ``loss``, the cache.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids/inputs_embeds: pass exactly one of them")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, T, D)
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("input_ids: required with pixel_values to locate [IMG] tokens")
            feats = torch.cat(self.get_image_features(pixel_values, image_sizes), dim=0)
            inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, feats)
        outputs = self.model.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = outputs[0]  # (B, T, D)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
            loss = nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        return make_output(
            CausalLMOutputWithPast,
            loss=loss,
            logits=logits,
            cache=output_cache(outputs),
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


def _register_llava_key_mapping() -> None:
    """Let our model type read (and write) the layout HF ``save_pretrained`` gives Llava.

    HF 5.x writes Llava checkpoints in the legacy layout (``language_model.model.*``,
    ``language_model.lm_head``, top-level ``vision_tower`` / ``multi_modal_projector``) and renames
    on load. These renamings (applied in reverse on save) map that layout onto our module tree.
    """
    from transformers import conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    rules = [
        (r"^language_model\.lm_head", "lm_head"),
        (r"^language_model\.model", "model.language_model"),
        (r"^vision_tower", "model.vision_tower"),
        (r"^multi_modal_projector", "model.multi_modal_projector"),
    ]
    conversion_mapping.register_checkpoint_conversion_mapping(
        PixtralVLMConfig.model_type,
        [WeightRenaming(source_patterns=src, target_patterns=dst) for src, dst in rules],
        overwrite=True,
    )


_register_llava_key_mapping()
AutoModelForImageTextToText.register(
    PixtralVLMConfig, PixtralForConditionalGeneration, exist_ok=True
)
