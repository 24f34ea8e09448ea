"""Tests of the Pixtral VLM: parity with HF ``LlavaForConditionalGeneration`` (Llava-Pixtral).

Oracle: a tiny random HF Llava-Pixtral (HF ``PixtralVisionConfig`` vision tower, tiny Mistral
decoder), saved with ``save_pretrained`` and loaded into ours; logits must agree in fp32.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
)
from transformers import PixtralVisionConfig as HFPixtralVisionConfig

from paperbricks.core_kernels.testing import assert_bitwise_equal, requires_cuda
from paperbricks.pixtral.models.configuration_pixtral_vlm import PixtralVLMConfig
from paperbricks.pixtral.models.modeling_pixtral_vlm import (
    PixtralForConditionalGeneration,
    VisionLanguageAdapter,
)

IMG, BREAK, END = 10, 11, 12
PATCH = 8
ATOL = 1e-5


def _hf_config() -> LlavaConfig:
    vision = HFPixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=PATCH,
        hidden_act="silu",
    )
    text = MistralConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMG,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(_hf_config())
    # Random biases in the projector so that a dropped bias would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf_llava_pixtral")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(hf_dir):
    hf = LlavaForConditionalGeneration.from_pretrained(hf_dir, attn_implementation="eager").eval()
    ours, info = PixtralForConditionalGeneration.from_pretrained(hf_dir, output_loading_info=True)
    return hf, ours.eval(), info


def _image_tokens(h: int, w: int) -> list[int]:
    n_h, n_w = h // PATCH, w // PATCH
    ids: list[int] = []
    for r in range(n_h):
        ids += [IMG] * n_w + [END if r == n_h - 1 else BREAK]
    return ids


def _prompt(sizes: list[tuple[int, int]]) -> torch.Tensor:
    ids = [1, 20]
    for h, w in sizes:
        ids += [*_image_tokens(h, w), 21, 22]
    ids += [23, 24]
    return torch.tensor([ids])


def _images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g) for h, w in sizes]


def _padded(images):
    hm = max(i.shape[1] for i in images)
    wm = max(i.shape[2] for i in images)
    batch = torch.zeros(len(images), 3, hm, wm)
    for k, im in enumerate(images):
        batch[k, :, : im.shape[1], : im.shape[2]] = im
    sizes = torch.tensor([list(im.shape[1:]) for im in images])
    return batch, sizes


def test_loads_hf_checkpoint_strictly(models):
    _, ours, info = models
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    assert not info["unexpected_keys"]
    assert not info.get("mismatched_keys")
    assert ours.config.image_token_id == IMG
    assert ours.config.vision_config.hidden_act == "silu"


def test_parity_one_image(models):
    hf, ours, _ = models
    sizes = [(24, 32)]
    ids = _prompt(sizes)
    imgs = _images(sizes)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=torch.stack(imgs)).logits
        out = ours(input_ids=ids, pixel_values=imgs).logits
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_parity_several_images_of_different_sizes(models):
    hf, ours, _ = models
    sizes = [(16, 40), (32, 16), (24, 24)]
    ids = _prompt(sizes)
    imgs = _images(sizes, seed=1)
    batch, image_sizes = _padded(imgs)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=batch, image_sizes=image_sizes).logits
        out_list = ours(input_ids=ids, pixel_values=imgs).logits
        out_pad = ours(input_ids=ids, pixel_values=batch, image_sizes=image_sizes).logits
    torch.testing.assert_close(out_list, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(out_pad, ref, atol=ATOL, rtol=0)


def test_parity_text_only(models):
    hf, ours, _ = models
    ids = torch.tensor([[1, 5, 9, 33, 17, 40, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        out = ours(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_only_img_positions_depend_on_the_image(models):
    _, ours, _ = models
    sizes = [(16, 24)]
    ids = _prompt(sizes)
    emb = ours.get_input_embeddings()(ids)
    with torch.no_grad():
        a = ours.merge_image_features(
            ids, emb, torch.cat(ours.get_image_features(_images(sizes, 0)))
        )
        b = ours.merge_image_features(
            ids, emb, torch.cat(ours.get_image_features(_images(sizes, 5)))
        )
    changed = (a != b).any(-1)[0]
    assert torch.equal(changed, ids[0] == IMG)
    assert_bitwise_equal(a[0, ids[0] != IMG], emb[0, ids[0] != IMG], "text embeddings")


def test_generate_equals_stepwise_greedy_and_hf(models):
    hf, ours, _ = models
    sizes = [(16, 24), (8, 16)]
    ids = _prompt(sizes)
    batch, image_sizes = _padded(_images(sizes, 2))
    n_new = 6
    kw = dict(max_new_tokens=n_new, do_sample=False, pad_token_id=0, eos_token_id=2)
    with torch.no_grad():
        gen = ours.generate(input_ids=ids, pixel_values=batch, image_sizes=image_sizes, **kw)
        ref_gen = hf.generate(input_ids=ids, pixel_values=batch, image_sizes=image_sizes, **kw)
        seq = ids
        for _ in range(n_new):
            logits = ours(input_ids=seq, pixel_values=batch, image_sizes=image_sizes).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            if int(seq[0, -1]) == 2:  # eos ends generation
                break
    assert gen.shape[1] > ids.shape[1]
    assert torch.equal(gen, seq)
    assert torch.equal(gen, ref_gen)


def test_save_load_round_trip_is_exact(models, tmp_path):
    _, ours, _ = models
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = PixtralForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.model_type == "paperbricks_pixtral"
    sd_a, sd_b = ours.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert_bitwise_equal(sd_a[k], sd_b[k], k)
    sizes = [(16, 16)]
    ids, imgs = _prompt(sizes), _images(sizes)
    with torch.no_grad():
        assert_bitwise_equal(
            ours(input_ids=ids, pixel_values=imgs).logits,
            loaded(input_ids=ids, pixel_values=imgs).logits,
            "logits",
        )
    # Auto classes resolve our model type.
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PixtralVLMConfig)
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert isinstance(auto, PixtralForConditionalGeneration)


def test_token_feature_count_mismatch_raises(models):
    _, ours, _ = models
    sizes = [(16, 24)]
    ids = _prompt(sizes)
    pos = int((ids[0] == IMG).nonzero()[0])
    short = ids.clone()
    short[0, pos] = 30  # one [IMG] fewer than the image's 6 features
    with pytest.raises(ValueError, match=r"5 \[IMG\] tokens.*6 features"):
        ours(input_ids=short, pixel_values=_images(sizes))
    with pytest.raises(ValueError, match="0 \\[IMG\\] tokens"):
        ours(input_ids=torch.tensor([[1, 2, 3]]), pixel_values=_images(sizes))


def test_bad_inputs_raise(models):
    _, ours, _ = models
    ids = _prompt([(8, 8)])
    with pytest.raises(ValueError, match="exactly one"):
        ours()
    with pytest.raises(ValueError, match="pixel_values"):
        ours(input_ids=ids, pixel_values=torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="pixel_values"):
        ours(input_ids=ids, pixel_values="image.png")
    with pytest.raises(ValueError, match="image_sizes"):
        ours(input_ids=ids, pixel_values=torch.zeros(1, 3, 8, 8), image_sizes=[[8, 8], [8, 8]])


def test_config_defaults_are_pixtrals_and_validated():
    cfg = PixtralVLMConfig(
        vision_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        ),
        text_config=dict(model_type="llama", hidden_size=16, num_attention_heads=2, vocab_size=32),
    )
    assert cfg.image_token_id == 10
    assert cfg.vision_feature_layer == -1
    assert cfg.vision_feature_select_strategy == "full"
    assert cfg.vision_config.hidden_act == "silu"
    assert type(cfg.text_config).__name__ == "LlamaConfig"
    with pytest.raises(ValueError, match="vision_feature_layer"):
        PixtralVLMConfig(vision_feature_layer=-2)
    with pytest.raises(ValueError, match="vision_feature_select_strategy"):
        PixtralVLMConfig(vision_feature_select_strategy="default")
    with pytest.raises(ValueError, match="vision_config"):
        PixtralVLMConfig(vision_config=dict(model_type="clip_vision_model"))


def test_adapter_matches_the_equation(seeded):
    ad = VisionLanguageAdapter(4, 6)
    x = torch.randn(3, 4, dtype=torch.float64)
    ad = ad.double()
    w1, b1 = ad.linear_1.weight, ad.linear_1.bias
    w2, b2 = ad.linear_2.weight, ad.linear_2.bias
    ref = torch.nn.functional.gelu(x @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(ad(x), ref, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="act"):
        VisionLanguageAdapter(4, 6, act="nope")


def test_from_decoder_reproduces_the_causal_lm(models, tmp_path):
    _, ours, _ = models
    lm = MistralForCausalLM(_hf_config().text_config).eval()
    lm.save_pretrained(tmp_path)
    vlm = PixtralForConditionalGeneration.from_decoder(ours.model.vision_tower, tmp_path)
    ids = torch.tensor([[1, 5, 9, 33, 17]])
    with torch.no_grad():
        torch.testing.assert_close(
            vlm(input_ids=ids).logits, lm(input_ids=ids).logits, atol=ATOL, rtol=0
        )
        sizes = [(16, 8)]
        imgs = _images(sizes)
        assert_bitwise_equal(
            torch.cat(vlm.model.vision_tower(imgs).image_features),
            torch.cat(ours.model.vision_tower(imgs).image_features),
            "vision features",
        )
    assert vlm.config.image_token_id == IMG
    with pytest.raises(ValueError, match="decoder_dir"):
        PixtralForConditionalGeneration.from_decoder(ours.model.vision_tower, tmp_path / "nope")


@requires_cuda
def test_parity_cuda_bf16(hf_dir):
    hf = LlavaForConditionalGeneration.from_pretrained(
        hf_dir, attn_implementation="eager", dtype=torch.bfloat16
    )
    hf = hf.cuda().eval()
    ours = PixtralForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.bfloat16)
    ours = ours.cuda().eval()
    sizes = [(16, 40), (32, 16)]
    ids = _prompt(sizes).cuda()
    imgs = [i.cuda().bfloat16() for i in _images(sizes, 3)]
    batch, image_sizes = _padded([i.float().cpu() for i in imgs])
    with torch.no_grad():
        ref = hf(
            input_ids=ids, pixel_values=batch.cuda().bfloat16(), image_sizes=image_sizes
        ).logits.float()
        out = ours(input_ids=ids, pixel_values=imgs).logits.float()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 3e-2, f"bf16 logits relative RMS error {rel:.3g}"
