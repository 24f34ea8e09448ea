"""Multimodal HF parity (spec oracle 1): a tiny random HF 5.x Aria checkpoint loads into ours
strictly and gives the same logits and greedy generations; padded pixels change nothing."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors import safe_open

from paperbricks.aria.models import AriaConfig, AriaForConditionalGeneration
from paperbricks.aria.processing import expand_image_tokens, random_pixel_batch
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    requires_cuda,
    rms_error_ratio,
)

IMG = 9
VISION = dict(
    model_type="idefics3_vision",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
)
TEXT = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    moe_num_experts=8,
    moe_topk=2,
    moe_num_shared_experts=2,
)
VARIANTS = {"mha": dict(num_key_value_heads=4), "gqa": dict(num_key_value_heads=2)}


def _randomise_(model: torch.nn.Module, seed: int) -> None:
    """O(1) random weights so that images, routing and positions all move the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.startswith("model.language_model"):
                p.copy_(0.08 * noise)
            else:
                p.copy_(0.2 * noise)


def _build(variant: str, path) -> tuple:
    """(HF eager model, our model, checkpoint dir) for one text variant."""
    torch.manual_seed(0)
    cfg = transformers.AriaConfig(
        vision_config=VISION,
        text_config={**TEXT, **VARIANTS[variant]},
        projector_patch_to_query_dict={4: 2, 16: 4},
    )
    hf = transformers.AriaForConditionalGeneration(cfg)
    _randomise_(hf, seed=1)
    hf.save_pretrained(path)
    hf = transformers.AriaForConditionalGeneration.from_pretrained(
        path, attn_implementation="eager", experts_implementation="eager"
    ).eval()
    ours, info = AriaForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return hf, ours.eval(), path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _build("mha", tmp_path_factory.mktemp("hf_aria_mha"))


def _ids(rows: list[list[int]], n_q: list[int] | int) -> torch.Tensor:
    out = expand_image_tokens(rows, n_q, image_token_index=IMG, pad_token_id=0)
    return out[0]


def _cases():
    g = torch.Generator().manual_seed(3)

    def text(n):
        return torch.randint(10, 96, (n,), generator=g).tolist()

    px56, mask56 = random_pixel_batch([(56, 56)], 56, seed=4)
    px2, mask2 = random_pixel_batch([(56, 56), (42, 56)], 56, seed=5)
    pxp, maskp = random_pixel_batch([(30, 44)], 56, seed=6)
    pxb, maskb = random_pixel_batch([(56, 56), (20, 50)], 56, seed=7)
    px28, _ = random_pixel_batch([(28, 28)], 28, seed=8)
    return {
        "text_only": (torch.tensor([[1, *text(11)]]), None, None),
        "one_image_28px": (_ids([[1, IMG, *text(6)]], 2), px28, None),
        "one_image_56px": (_ids([[1, *text(2), IMG, *text(5)]], 4), px56, mask56),
        "two_images": (_ids([[1, IMG, *text(3), IMG, *text(4)]], 4), px2, mask2),
        "padded_image": (_ids([[1, IMG, *text(7)]], 4), pxp, maskp),
        "batch_of_2_padded": (_ids([[1, IMG, *text(5)], [1, *text(5), IMG]], 4), pxb, maskb),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_hf_eager(models, case):
    hf, ours, _ = models
    ids, px, mask = CASES[case]
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        out = ours(input_ids=ids, pixel_values=px, pixel_mask=mask)
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=0)
    assert len(out.router_logits) == TEXT["num_hidden_layers"]
    assert out.router_logits[0].shape == (ids.numel(), TEXT["moe_num_experts"])


def test_gqa_variant_logits_and_generation_match_hf(tmp_path):
    hf, ours, _ = _build("gqa", tmp_path)
    assert ours.config.text_config.num_key_value_heads == 2
    with torch.no_grad():
        for case, (ids, px, mask) in sorted(CASES.items()):
            ref = hf(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
            out = ours(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
            torch.testing.assert_close(
                out, ref, atol=1e-5, rtol=0, msg=lambda m, c=case: f"{c}: {m}"
            )
        ids, px, mask = CASES["two_images"]
        kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
        ref = hf.generate(input_ids=ids, pixel_values=px, pixel_mask=mask, **kw)
        out = ours.generate(input_ids=ids, pixel_values=px, pixel_mask=mask, **kw)
    assert torch.equal(out, ref)


def test_images_and_experts_backend_matter(models):
    """Sensitivity: the parity above would catch a wrong image path (the logits move)."""
    _, ours, _ = models
    ids, px, mask = CASES["padded_image"]
    with torch.no_grad():
        base = ours(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        moved = ours(input_ids=ids, pixel_values=px + 0.5, pixel_mask=mask).logits
        ours.model.language_model.set_experts_backend("loop")
        try:
            loop = ours(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        finally:
            ours.model.language_model.set_experts_backend("grouped")
    assert (moved - base).abs().max() > 1e-2
    assert_close("loop vs grouped", base, loop)


def test_generate_with_cache_matches_hf(models):
    hf, ours, _ = models
    ids, px, mask = CASES["batch_of_2_padded"]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, pixel_values=px, pixel_mask=mask, **kw)
        out = ours.generate(input_ids=ids, pixel_values=px, pixel_mask=mask, **kw)
        nocache = ours.generate(
            input_ids=ids, pixel_values=px, pixel_mask=mask, use_cache=False, **kw
        )
    assert torch.equal(out, ref)
    assert torch.equal(nocache, out)
    assert out.shape == (2, ids.shape[1] + 6)


def test_loss_matches_hf_and_explicit_aux(models):
    hf, ours, _ = models
    ids, px, mask = CASES["two_images"]
    labels = ids.masked_fill(ids == IMG, -100)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=px, pixel_mask=mask, labels=labels).loss
        out = ours(input_ids=ids, pixel_values=px, pixel_mask=mask, labels=labels)
    # default aux_loss_mode="autoscaler": the returned loss is the LM loss only
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=0)
    assert out.aux_loss is not None and out.aux_loss > 0 and out.z_loss > 0
    text_cfgs = {id(ours.config.text_config): ours.config.text_config}
    text_cfgs[id(ours.model.language_model.config)] = ours.model.language_model.config
    for c in text_cfgs.values():
        c.aux_loss_mode = "explicit"
    try:
        with torch.no_grad():
            exp = ours(input_ids=ids, pixel_values=px, pixel_mask=mask, labels=labels)
    finally:
        for c in text_cfgs.values():
            c.aux_loss_mode = "autoscaler"
    torch.testing.assert_close(exp.loss, ref + exp.aux_loss + exp.z_loss, atol=1e-5, rtol=0)


def test_training_backward_reaches_the_vision_tower(models, tmp_path):
    _, ours, _ = models
    ours.save_pretrained(tmp_path)  # a private copy: training mode and grads stay out of `models`
    model = AriaForConditionalGeneration.from_pretrained(tmp_path).train()
    ids, px, mask = CASES["batch_of_2_padded"]
    labels = ids.masked_fill(ids == IMG, -100)
    out = model(input_ids=ids, pixel_values=px, pixel_mask=mask, labels=labels)
    assert out.aux_loss is not None and out.z_loss is not None
    out.loss.backward()  # autoscaler mode: the aux terms reach the gradients only
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert grads["model.vision_tower.embeddings.patch_embedding.weight"].abs().sum() > 0
    assert grads["model.multi_modal_projector.query"][:4].abs().sum() > 0
    assert grads["model.language_model.layers.0.mlp.router.weight"].abs().sum() > 0


def test_fully_padded_patch_pixels_leave_logits_bit_unchanged(models):
    _, ours, _ = models
    ids, px, mask = CASES["batch_of_2_padded"]
    p = 14
    patch_pad = ~mask.reshape(2, 4, p, 4, p).any(4).any(2)  # (I, 4, 4) fully padded patches
    pix_pad = patch_pad.repeat_interleave(p, 1).repeat_interleave(p, 2)  # (I, 56, 56)
    assert pix_pad.any()
    px2 = px.clone()
    px2[pix_pad[:, None].expand_as(px)] = 77.0
    with torch.no_grad():
        a = ours(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        b = ours(input_ids=ids, pixel_values=px2, pixel_mask=mask).logits
    assert_bitwise_equal(a, b, "logits")


def test_image_token_count_mismatch_raises(models):
    _, ours, _ = models
    ids, px, mask = CASES["two_images"]
    with pytest.raises(ValueError, match="image tokens"):
        ours(input_ids=ids[:, :-6], pixel_values=px, pixel_mask=mask)
    with pytest.raises(ValueError, match="patches per image"):
        ours(input_ids=ids, pixel_values=torch.zeros(2, 3, 42, 42))


def test_save_pretrained_round_trip(models, tmp_path):
    _, ours, hf_path = models
    ours.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "paperbricks_aria"
    # on disk we write the same names HF 5.x writes
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        ours_keys = set(f.keys())
    with safe_open(str(hf_path / "model.safetensors"), "pt") as f:
        hf_keys = set(f.keys())
    assert ours_keys == hf_keys
    back, info = AriaForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert isinstance(back.config, AriaConfig)
    ids, px, mask = CASES["padded_image"]
    with torch.no_grad():
        a = ours(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        b = back.eval()(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
    assert_bitwise_equal(a, b, "logits after round trip")
    auto = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(auto) is AriaForConditionalGeneration


def _load_pair(path, dtype, device):
    hf = transformers.AriaForConditionalGeneration.from_pretrained(
        path, attn_implementation="eager", experts_implementation="eager", dtype=dtype
    )
    ours = AriaForConditionalGeneration.from_pretrained(path, dtype=dtype)
    return hf.to(device).eval(), ours.to(device).eval()


@requires_cuda
def test_cuda_fp32_logits_and_generation_match_hf(models):
    _, _, path = models
    hf, ours = _load_pair(path, torch.float32, "cuda")
    ids, px, mask = CASES["batch_of_2_padded"]
    ids, px, mask = ids.cuda(), px.cuda(), mask.cuda()
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        out = ours(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        gen_ref = hf.generate(input_ids=ids, pixel_values=px, pixel_mask=mask, **kw)
        gen = ours.generate(input_ids=ids, pixel_values=px, pixel_mask=mask, **kw)
    assert_close("logits", ref, out)
    assert torch.equal(gen, gen_ref)


@requires_cuda
def test_cuda_bf16_error_no_worse_than_hf_bf16(models):
    # bf16 routing may flip top-k choices differently in the two implementations, so the
    # oracle is the fp32 model: our bf16 error must be of the order of HF's own bf16 error.
    _, _, path = models
    hf32, _ = _load_pair(path, torch.float32, "cuda")
    hf16, ours16 = _load_pair(path, torch.bfloat16, "cuda")
    ids, px, mask = CASES["batch_of_2_padded"]
    ids, px, mask = ids.cuda(), px.cuda(), mask.cuda()
    with torch.no_grad():
        ref = hf32(input_ids=ids, pixel_values=px, pixel_mask=mask).logits
        px16 = px.to(torch.bfloat16)
        err_hf = rms_error_ratio(
            ref, hf16(input_ids=ids, pixel_values=px16, pixel_mask=mask).logits.float()
        )
        err_ours = rms_error_ratio(
            ref, ours16(input_ids=ids, pixel_values=px16, pixel_mask=mask).logits.float()
        )
    assert err_ours <= max(2.0 * err_hf, 1e-2), (err_ours, err_hf)


# ---- input helpers ---------------------------------------------------------------------------------


def test_expand_image_tokens():
    assert expand_image_tokens([1, IMG, 5], 3).tolist() == [1, IMG, IMG, IMG, 5]
    assert expand_image_tokens(torch.tensor([IMG, 2, IMG]), [1, 2]).tolist() == [IMG, 2, IMG, IMG]
    ids, mask = expand_image_tokens(
        torch.tensor([[0, 1, IMG], [1, IMG, IMG]]), [3, 1, 1], pad_token_id=0, padding_side="right"
    )
    assert ids.tolist() == [[1, IMG, IMG, IMG], [1, IMG, IMG, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(ValueError, match="2 counts for 1 image tokens"):
        expand_image_tokens([1, IMG], [2, 2])
    with pytest.raises(ValueError, match="pad_token_id"):
        expand_image_tokens([[1, IMG], [1]], 2)
    with pytest.raises(ValueError, match="padding_side"):
        expand_image_tokens([[IMG]], 2, padding_side="middle")


def test_hf_image_processor_without_torchvision_feeds_our_model():
    import numpy as np
    from PIL import Image

    from paperbricks.aria.models import patch_attention_mask
    from paperbricks.aria.processing import PAD_PIXEL_VALUE, image_processor

    proc = image_processor()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8))
    out = proc(images=[img], max_image_size=490, return_tensors="pt")
    px, mask = out["pixel_values"], out["pixel_mask"]
    assert px.shape == (1, 3, 490, 490) and mask.shape == (1, 490, 490)
    # long side -> 490, short side max(int(200 * 490 / 300), 336) = 336; pad bottom with 0 -> -1
    assert mask[0].any(1).sum() == 336 and mask[0].any(0).sum() == 490
    assert float(px[0, 0, -1, -1]) == PAD_PIXEL_VALUE
    pm = patch_attention_mask(mask, 14)
    assert pm.shape == (1, 35, 35) and int(pm[0].any(1).sum()) == 24  # ceil(336 / 14)
