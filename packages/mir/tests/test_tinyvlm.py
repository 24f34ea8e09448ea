"""The tiny LLaVA: built from configs, image tokens expanded as configured, reloadable offline."""

import pytest
import torch

from paperbricks.core_kernels.testing import assert_close, requires_cuda
from paperbricks.mir.data import caption_pairs, unrelated_pairs
from paperbricks.mir.tinyvlm import TinyVLMConfig, build_processor, build_tiny_vlm


def _batch(proc, n=2, questions=None):
    pairs = caption_pairs(n, seed=0, size=proc.image_processor.crop_size["height"])
    msgs = [{"role": "user", "content": [{"type": "image"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    texts = [f"{prompt} {p.caption}" for p in pairs]
    return proc(images=[p.image for p in pairs], text=texts, return_tensors="pt", padding=True)


@pytest.mark.parametrize(
    ("tower", "image_size", "patch"), [("clip", 32, 8), ("siglip", 32, 8), ("clip", 24, 4)]
)
def test_image_tokens_match_the_vision_tower(tower, image_size, patch):
    cfg = TinyVLMConfig(vision_tower=tower, image_size=image_size, patch_size=patch)
    model, proc = build_tiny_vlm(cfg, seed=0)
    batch = _batch(proc)
    n_img = (batch["input_ids"] == proc.image_token_id).sum(dim=1)
    assert n_img.tolist() == [cfg.num_image_tokens] * 2
    # The model checks the same count against its vision features (it raises on a mismatch).
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert out.logits.shape == (*batch["input_ids"].shape, len(proc.tokenizer))
    assert len(out.hidden_states) == cfg.num_layers + 1
    assert model.config.image_token_id == proc.image_token_id


def test_the_image_changes_the_output():
    model, proc = build_tiny_vlm(seed=0)
    batch = _batch(proc)
    swapped = dict(batch, pixel_values=batch["pixel_values"].flip(0))
    with torch.no_grad():
        a, b = model(**batch).logits, model(**swapped).logits
    assert not torch.allclose(a, b)


def test_chat_template_and_vocabulary():
    proc = build_processor()
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color ?"}]},
        {"role": "assistant", "content": "red"},
    ]
    assert proc.apply_chat_template(msgs, tokenize=False) == (
        "<s><|user|> <image> what color ? </s> <|assistant|> red </s> "
    )
    ids = proc.tokenizer(" ".join(p.caption for p in caption_pairs(20)))["input_ids"]
    assert proc.tokenizer.unk_token_id not in ids
    assert proc.tokenizer.padding_side == "right"


def test_seeded_initialisation_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, _ = build_tiny_vlm(seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    b, _ = build_tiny_vlm(seed=1)
    c, _ = build_tiny_vlm(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_and_reload_offline(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, proc = build_tiny_vlm(TinyVLMConfig(vision_tower="siglip"), seed=0)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    proc2 = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    model2 = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True)
    batch, batch2 = _batch(proc), _batch(proc2)
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    assert torch.equal(batch["pixel_values"], batch2["pixel_values"])
    with torch.no_grad():
        ref, out = model(**batch).logits, model2(**batch2).logits
    assert_close("reloaded logits", ref, out)


def test_compute_mir_runs_on_the_tiny_model():
    from paperbricks.mir import compute_mir

    cfg = TinyVLMConfig(num_layers=3)
    model, proc = build_tiny_vlm(cfg, seed=0)
    images, texts = unrelated_pairs(6, seed=0)
    res = compute_mir(model, proc, images, texts, batch_size=3, progress=False)
    assert res.layers == [1, 2, 3]
    assert res.n_vision == 6 * cfg.num_image_tokens
    assert torch.isfinite(res.per_layer_fd).all()


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="vision_tower"):
        TinyVLMConfig(vision_tower="vit")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        TinyVLMConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="num_heads"):
        TinyVLMConfig(hidden_size=64, num_heads=3)
    with pytest.raises(ValueError, match="vision_feature_layer"):
        TinyVLMConfig(vision_feature_layer=5)
    with pytest.raises(TypeError, match="config"):
        build_tiny_vlm({"hidden_size": 64})


@requires_cuda
def test_bf16_on_cuda_matches_float32_cpu():
    model, proc = build_tiny_vlm(seed=0)
    batch = _batch(proc, n=4)
    with torch.no_grad():
        ref = model(**batch).logits
        gpu = model.to("cuda", torch.bfloat16)
        cuda_batch = {k: v.to("cuda") for k, v in batch.items()}
        cuda_batch["pixel_values"] = cuda_batch["pixel_values"].to(torch.bfloat16)
        out = gpu(**cuda_batch).logits.float().cpu()
    assert_close("bf16 logits", ref, out, ratio=3e-2)
