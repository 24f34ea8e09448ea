"""Vision/text masks from expanded ids, checked against where HF models actually put image features."""

import numpy as np
import pytest
import torch

from paperbricks.core_kernels.testing import assert_close
from paperbricks.mir.accumulator import MIRAccumulator, find_language_model
from paperbricks.mir.masks import (
    image_span_token_ids,
    modality_masks,
    resolve_image_token_id,
    text_mask_after_images,
    vision_mask,
)
from paperbricks.mir.metric import modality_integration_rate

IMG = 9


def _rows(mask):
    return mask.int().tolist()


def test_hand_made_two_images_with_padding_on_either_side():
    ids = torch.tensor(
        [
            [1, IMG, IMG, 4, IMG, IMG, 5, 6, 0, 0],  # right padding
            [0, 0, 1, IMG, IMG, 4, IMG, IMG, 5, 6],  # left padding
        ]
    )
    att = (ids != 0).long()
    v, t = modality_masks(ids, IMG, att)
    assert _rows(v) == [[0, 1, 1, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 1, 1, 0, 0]]
    assert _rows(t) == [[0, 0, 0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]]
    assert not bool((v & t).any())


def test_text_between_images_is_not_text_and_image_free_rows_are_all_text():
    ids = torch.tensor([[1, IMG, 4, 4, IMG, 5], [1, 4, 5, 6, 7, 8]])
    v, t = modality_masks(ids, IMG)
    assert _rows(t) == [[0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]]
    assert _rows(v)[1] == [0] * 6


def test_span_tokens_end_the_image_span_but_are_not_vision_rows():
    brk, end = 11, 12  # Pixtral-style [IMG_BREAK], [IMG_END]
    ids = torch.tensor([[1, IMG, IMG, brk, IMG, IMG, end, 5, 6]])
    v, t = modality_masks(ids, IMG, span_token_ids=[brk, end])
    assert _rows(v) == [[0, 1, 1, 0, 1, 1, 0, 0, 0]]
    assert _rows(t) == [[0, 0, 0, 0, 0, 0, 0, 1, 1]]
    # without the span ids, [IMG_END] would count as text
    assert _rows(text_mask_after_images(ids, IMG))[0][6] == 1


def test_mask_inputs_are_validated():
    with pytest.raises(ValueError, match="input_ids"):
        vision_mask(torch.ones(3, dtype=torch.long), IMG)
    with pytest.raises(ValueError, match="input_ids"):
        vision_mask(torch.ones(2, 3), IMG)
    with pytest.raises(TypeError, match="image_token_id"):
        vision_mask(torch.ones(2, 3, dtype=torch.long), 9.0)
    with pytest.raises(ValueError, match="attention_mask"):
        modality_masks(torch.ones(2, 3, dtype=torch.long), IMG, torch.ones(2, 4))

    class _NoToken:
        config = object()

    with pytest.raises(ValueError, match="image_token_id"):
        resolve_image_token_id(_NoToken())


def _feature_positions(model, batch, other_pixels):
    """Positions whose language-model input changes with the pixels: where features were put."""
    lm = find_language_model(model)
    seen = []

    def grab(module, args, kwargs):
        seen.append(kwargs["inputs_embeds"].detach().clone())

    handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch)
            model(**{**batch, "pixel_values": other_pixels})
    finally:
        handle.remove()
    return (seen[0] - seen[1]).abs().amax(dim=-1) > 0  # (B, T)


def _upstream_mask(unexpanded_ids, image_token_id, n_features, t_expanded):
    """Test-only emulation of the official multi-image defect: spans start at the placeholder's
    position in the *unexpanded* ids, so later images are not shifted by earlier expansions."""
    out = torch.zeros(unexpanded_ids.shape[0], t_expanded, dtype=torch.bool)
    for b, row in enumerate(unexpanded_ids.tolist()):
        for p, tok in enumerate(row):
            if tok == image_token_id:
                out[b, p : p + n_features] = True
    return out


def test_llava_two_images_per_sample_match_feature_positions(make_tiny_llava):
    n_tokens = 16
    model, proc = make_tiny_llava()
    token = model.config.image_token_id
    prompts = ["<image><image>\nthe red cat .", "<image>\nthe <image> box sees a dog"]
    enc = proc(
        images=[[_img(0), _img(1)], [_img(2), _img(3)]],
        text=prompts,
        return_tensors="pt",
        padding=True,
    )
    enc = dict(enc)
    v, t = modality_masks(enc["input_ids"], token, enc["attention_mask"])
    assert v.sum(dim=1).tolist() == [2 * n_tokens] * 2
    other = torch.randn(enc["pixel_values"].shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(v, _feature_positions(model, enc, other))
    assert image_span_token_ids(proc, token) == []
    # text starts right after the second image's last token and stops at padding
    last = (v.long() * torch.arange(v.shape[1])).amax(dim=1)
    assert torch.equal(t.long().argmax(dim=1), last + 1)
    assert t.sum(dim=1).tolist() == [4, 4]
    # the official way (unexpanded placeholder + feature count) misplaces the second image
    unexpanded = proc.tokenizer(prompts[:1], return_tensors="pt")["input_ids"]
    ours = v[:1, : enc["attention_mask"][0].sum()]
    theirs = _upstream_mask(unexpanded, token, n_tokens, ours.shape[1])
    assert int((ours & ~theirs).sum()) == n_tokens - 1  # the second span is shifted by 15


def _img(seed):
    from PIL import Image

    g = np.random.default_rng(seed)
    return Image.fromarray(g.integers(0, 256, (20, 24, 3), dtype=np.uint8))


def _mistral3():
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralVisionConfig,
    )

    vis = PixtralVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=4,
        head_dim=8,
    )
    text = MistralConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg = Mistral3Config(
        vision_config=vis,
        text_config=text,
        image_token_index=10,
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    return Mistral3ForConditionalGeneration(cfg).eval()


def _pixtral_span(h, w, img=10, brk=11, end=12):
    rows = [[img] * w + [brk] for _ in range(h)]
    rows[-1][-1] = end
    return [tok for row in rows for tok in row]


def test_llava_pixtral_masks_and_streaming():
    model = _mistral3()
    # what PixtralProcessor produces for two 16×24 images (4×6 patches, merged 2×2 -> 2×3)
    ids = [1, 20, *_pixtral_span(2, 3), 21, *_pixtral_span(2, 3), 22, 23, 24, 2]
    batch = {
        "input_ids": torch.tensor([ids, ids]),
        "pixel_values": torch.randn(4, 3, 16, 24, generator=torch.Generator().manual_seed(0)),
        "image_sizes": torch.tensor([[16, 24]] * 4),
    }
    v, t = modality_masks(batch["input_ids"], 10, span_token_ids=[11, 12])
    other = torch.randn(4, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    assert torch.equal(v, _feature_positions(model, batch, other))
    assert v.sum(dim=1).tolist() == [12, 12]
    assert t.sum(dim=1).tolist() == [4, 4]  # after [IMG_END]: 22 23 24 </s>
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    ref = modality_integration_rate(hs[1:], v, t)
    acc = MIRAccumulator(model, span_token_ids=[11, 12])
    assert acc.image_token_id == 10
    res = acc.run([batch], progress=False)
    acc.remove()
    assert_close("pixtral", ref.per_layer_fd, res.per_layer_fd, ratio=1e-9)


def test_aria_masks_and_streaming():
    from transformers import (
        AriaConfig,
        AriaForConditionalGeneration,
        AriaTextConfig,
        Idefics3VisionConfig,
    )

    vis = Idefics3VisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
    )
    text = AriaTextConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        moe_num_experts=2,
        moe_topk=1,
        moe_num_shared_experts=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg = AriaConfig(
        vision_config=vis,
        text_config=text,
        image_token_index=9,
        projector_patch_to_query_dict={16: 4},
    )
    torch.manual_seed(0)
    model = AriaForConditionalGeneration(cfg).eval()
    # AriaProcessor expands each image into (queries per image) image tokens: 4 here
    ids = [1, 20, *[9] * 4, 21, *[9] * 4, 22, 23, 24, 25, 2]
    batch = {
        "input_ids": torch.tensor([ids, [*ids[:-1], 0]]),
        "attention_mask": torch.tensor([[1] * len(ids), [1] * (len(ids) - 1) + [0]]),
        "pixel_values": torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
    }
    v, t = modality_masks(batch["input_ids"], 9, batch["attention_mask"])
    other = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(v, _feature_positions(model, batch, other))
    assert t.sum(dim=1).tolist() == [5, 4]
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    ref = modality_integration_rate(hs[1:], v, t)
    acc = MIRAccumulator(model)
    res = acc.run([batch], progress=False)
    acc.remove()
    assert_close("aria", ref.per_layer_fd, res.per_layer_fd, ratio=1e-9)
