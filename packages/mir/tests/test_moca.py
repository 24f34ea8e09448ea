"""MoCa: identity at init, vision positions only, gradients only through them, hooks on HF models."""

import numpy as np
import pytest
import torch
from PIL import Image

from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    requires_cuda,
    tiny_llama_config,
)
from paperbricks.mir.accumulator import MIRAccumulator
from paperbricks.mir.masks import modality_masks
from paperbricks.mir.metric import modality_integration_rate
from paperbricks.mir.moca import MoCa, apply_moca_, moca_param_groups

D = 8


def _h(b=2, t=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, D, generator=g).to(dtype)


def _mask(b=2, t=6):
    m = torch.zeros(b, t, dtype=torch.bool)
    m[0, 1:3] = True
    m[1, 4] = True
    return m


def test_identity_at_std_zero():
    moca = MoCa(D)
    h = _h()
    assert_bitwise_equal(moca(h, _mask()), h, "fp32")
    hb = _h(dtype=torch.bfloat16)
    assert_bitwise_equal(moca(hb, _mask()), hb, "bf16")
    assert torch.equal(moca.gamma, torch.ones(D)) and torch.equal(moca.beta, torch.zeros(D))


def test_init_draw_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = MoCa(D, std=0.02, generator=torch.Generator().manual_seed(3))
    b = MoCa(D, std=0.02, generator=torch.Generator().manual_seed(3))
    c = MoCa(D, std=0.02)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.gamma, b.gamma) and torch.equal(a.beta, b.beta)
    assert not torch.equal(a.gamma, torch.ones(D)) and not torch.equal(c.beta, torch.zeros(D))
    assert float((a.gamma.detach() - 1).abs().max()) < 0.2
    assert float(a.beta.detach().abs().max()) < 0.2


def test_changes_only_vision_positions_with_the_formula():
    moca = MoCa(D, std=0.5, generator=torch.Generator().manual_seed(1))
    h, m = _h(), _mask()
    out = moca(h, m)
    assert_bitwise_equal(out[~m], h[~m], "text rows")
    want = (1 - m.float())[..., None] * h + m.float()[..., None] * (moca.gamma * h + moca.beta)
    assert_close("vision rows", want, out, ratio=1e-7)
    assert bool((out[m] != h[m]).all(dim=-1).any())


def test_low_precision_is_computed_in_fp32_and_cast_back():
    moca = MoCa(D, std=0.5, generator=torch.Generator().manual_seed(2))
    for dtype in (torch.bfloat16, torch.float16):
        h, m = _h(dtype=dtype), _mask()
        want = torch.where(m[..., None], moca.gamma * h.float() + moca.beta, h.float()).to(dtype)
        out = moca(h, m)
        assert out.dtype == dtype
        assert_bitwise_equal(out, want, str(dtype))


def test_gradients_reach_gamma_beta_only_through_vision_positions():
    moca = MoCa(D, std=0.3, generator=torch.Generator().manual_seed(4))
    h, m = _h(), _mask()
    up = torch.randn(h.shape, generator=torch.Generator().manual_seed(5))
    (moca(h, m) * up).sum().backward()
    assert_close("dbeta", up[m].sum(0), moca.beta.grad, ratio=1e-6)
    assert_close("dgamma", (up * h)[m].sum(0), moca.gamma.grad, ratio=1e-6)
    moca.zero_grad()
    (moca(h, m) * up * (~m)[..., None]).sum().backward()  # a loss that reads text rows only
    assert torch.equal(moca.gamma.grad, torch.zeros(D))
    assert torch.equal(moca.beta.grad, torch.zeros(D))


def test_decode_step_is_a_no_op_and_bad_input_raises():
    moca = MoCa(D, std=0.5)
    h = _h(t=1)
    assert moca(h, torch.ones(2, 1, dtype=torch.bool)) is h
    with pytest.raises(ValueError, match="vision_mask"):
        moca(_h(), _mask().int())
    with pytest.raises(ValueError, match="hidden_states"):
        moca(torch.ones(2, 3, D + 1), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="std"):
        MoCa(D, std=-1.0)
    with pytest.raises(ValueError, match="hidden_size"):
        MoCa(0)


IMAGE_ID = 7  # any token id serves as the image token of a plain decoder


@pytest.fixture
def llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def _ids():
    return torch.tensor(
        [
            [1, 20, IMAGE_ID, IMAGE_ID, IMAGE_ID, 21, 22, 23],
            [1, 24, 25, IMAGE_ID, IMAGE_ID, 26, 27, 28],
        ]
    )


def test_apply_moca_identity_at_init_then_vision_only_effect(llama):
    ids = _ids()
    with torch.no_grad():
        before = llama(ids).logits
    handle = apply_moca_(llama, IMAGE_ID)
    assert len(handle.modules) == llama.config.num_hidden_layers
    names = [n for n, p in llama.named_parameters() if p.requires_grad and ".moca." in n]
    assert len(names) == 2 * llama.config.num_hidden_layers
    with torch.no_grad():
        assert_bitwise_equal(llama(ids).logits, before, "identity")
        for moca in handle.modules:
            moca.gamma.mul_(1.5)
            moca.beta.add_(0.1)
        after = llama(ids).logits
    # causal: positions before the first image token are untouched, later ones change
    assert_bitwise_equal(after[0, :2], before[0, :2], "prefix 0")
    assert_bitwise_equal(after[1, :3], before[1, :3], "prefix 1")
    assert bool((after[0, 2:] != before[0, 2:]).any(dim=-1).all())
    with pytest.raises(ValueError, match="already"):
        apply_moca_(llama, IMAGE_ID)
    handle.remove()
    with torch.no_grad():
        assert_bitwise_equal(llama(ids).logits, before, "removed")
    assert not any(".moca." in n for n, _ in llama.named_parameters())


def test_apply_moca_trains_through_vision_tokens_only(llama):
    handle = apply_moca_(llama, IMAGE_ID)
    llama.train()
    ids = _ids()
    llama(ids, labels=ids).loss.backward()
    for moca in handle.modules:
        assert float(moca.gamma.grad.abs().sum()) > 0 and float(moca.beta.grad.abs().sum()) > 0
    llama.zero_grad(set_to_none=False)
    no_image = torch.where(ids == IMAGE_ID, 9, ids)
    llama(no_image, labels=no_image).loss.backward()
    for moca in handle.modules:
        assert torch.equal(moca.gamma.grad, torch.zeros(llama.config.hidden_size))
        assert torch.equal(moca.beta.grad, torch.zeros(llama.config.hidden_size))
    groups = moca_param_groups(llama, lr=1e-3, weight_decay=0.1, moca_lr=1e-2)
    moca_ids = {id(p) for m in handle.modules for p in m.parameters()}
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert {id(p) for p in groups[1]["params"]} == moca_ids
    assert groups[1]["lr"] == 1e-2 and groups[0]["lr"] == 1e-3
    assert not moca_ids & {id(p) for p in groups[0]["params"]}
    n_trainable = sum(1 for p in llama.parameters() if p.requires_grad)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_trainable
    opt = torch.optim.AdamW(groups)
    llama.zero_grad()
    llama(ids, labels=ids).loss.backward()
    opt.step()
    assert not torch.equal(handle.modules[0].gamma, torch.ones(llama.config.hidden_size))
    with pytest.raises(ValueError, match="lr"):
        moca_param_groups(llama, lr=0)


def test_cached_generation_matches_full_forward(llama):
    handle = apply_moca_(llama, IMAGE_ID, std=0.05, generator=torch.Generator().manual_seed(0))
    ids = _ids()
    out = llama.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=3,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    with torch.no_grad():
        full = llama(out.sequences).logits  # no cache: MoCa at the prompt's vision rows only
    assert_close("decode", full[:, -4:-1], torch.stack(out.logits, dim=1), ratio=1e-5)
    handle.remove()


def test_apply_moca_on_llava_uses_the_expanded_image_tokens(make_tiny_llava):
    model, proc = make_tiny_llava()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    enc = dict(proc(images=[image], text=["<image>\nthe red cat ."], return_tensors="pt"))
    token = model.config.image_token_id
    with torch.no_grad():
        before = model(**enc, output_hidden_states=True).hidden_states
    acc = MIRAccumulator(model)  # its hooks predate MoCa's: they must still see MoCa's output
    handle = apply_moca_(model, std=0.1, generator=torch.Generator().manual_seed(0))
    assert handle.image_token_id == token
    with torch.no_grad():
        after = model(**enc, output_hidden_states=True).hidden_states
    vis = enc["input_ids"] == token
    first = int(vis[0].long().argmax())
    assert_bitwise_equal(after[0], before[0], "embeddings")
    assert_bitwise_equal(after[1][0, :first], before[1][0, :first], "prefix")
    assert bool((after[1][vis] != before[1][vis]).any())
    vis, txt = modality_masks(enc["input_ids"], token, enc["attention_mask"])
    res = acc.run([enc], progress=False)
    acc.remove()
    ref = modality_integration_rate(after[1:], vis, txt)
    assert_close("mir with MoCa", ref.per_layer_fd, res.per_layer_fd, ratio=1e-9)
    handle.remove()


def test_moca_import_is_lean():
    assert_lean_import("paperbricks.mir.moca")


@requires_cuda
def test_moca_bf16_on_cuda_matches_fp32_formula():
    moca = MoCa(64, std=0.1, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    g = torch.Generator("cuda").manual_seed(1)
    h = torch.randn(4, 300, 64, device="cuda", generator=g).to(torch.bfloat16)
    m = torch.rand(4, 300, device="cuda", generator=g) < 0.5
    want = torch.where(m[..., None], moca.gamma * h.float() + moca.beta, h.float())
    out = moca(h, m)
    assert out.dtype == torch.bfloat16
    assert_close("bf16", want, out.float(), ratio=1.6e-2)
    assert_bitwise_equal(out[~m], h[~m], "text rows")


def test_inputs_embeds_calls_use_the_given_mask_never_a_stale_one(llama):
    ids = _ids()
    handle = apply_moca_(llama, IMAGE_ID, std=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with_ids = llama(ids).logits
        embeds = llama.get_input_embeddings()(ids)
        plain = llama(inputs_embeds=embeds).logits  # no ids, no mask given: MoCa skipped
        handle.remove()
        base = llama(inputs_embeds=embeds).logits
    assert_bitwise_equal(plain, base, "skipped without a mask")
    handle = apply_moca_(llama, IMAGE_ID, std=0.5, generator=torch.Generator().manual_seed(0))
    handle.set_vision_mask(ids == IMAGE_ID)
    with torch.no_grad():
        given = llama(inputs_embeds=embeds).logits
    assert_bitwise_equal(given, with_ids, "given mask")
    with pytest.raises(TypeError, match="mask"):
        handle.set_vision_mask(ids)
    handle.remove()
