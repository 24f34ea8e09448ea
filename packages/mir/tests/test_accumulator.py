"""Streaming MIR (hooks, two passes) against the in-memory metric on a tiny HF LLaVA."""

import math
import os

import numpy as np
import pytest
import torch

from paperbricks.core_kernels.testing import assert_close, requires_cuda
from paperbricks.mir.accumulator import MIRAccumulator, find_decoder_layers, find_language_model
from paperbricks.mir.compute import build_prompt, compute_mir
from paperbricks.mir.masks import modality_masks
from paperbricks.mir.metric import modality_integration_rate

F64 = torch.float64
IMAGE_SIZE, PATCH = 16, 4
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # CLS dropped ("default" strategy)


@pytest.fixture(scope="module")
def tiny(make_tiny_llava):
    return make_tiny_llava()


def _images(n, seed=0):
    from PIL import Image

    g = np.random.default_rng(seed)
    return [Image.fromarray(g.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(n)]


def _texts(n, seed=0):
    from paperbricks.core_kernels.testing import synthetic_text

    return synthetic_text(n, seed=seed, min_words=4, max_words=12)


def _encode(proc, n, images_per_sample=1, seed=0, template="plain"):
    imgs = _images(n * images_per_sample, seed)
    groups = [imgs[i * images_per_sample : (i + 1) * images_per_sample] for i in range(n)]
    prompts = [build_prompt(proc, t, images_per_sample, template) for t in _texts(n, seed)]
    images = [g[0] for g in groups] if images_per_sample == 1 else groups
    return dict(proc(images=images, text=prompts, return_tensors="pt", padding=True))


def _slice(batch, a, b):
    n_img = batch["pixel_values"].shape[0] // batch["input_ids"].shape[0]
    out = {k: v[a:b] for k, v in batch.items() if k != "pixel_values"}
    out["pixel_values"] = batch["pixel_values"][a * n_img : b * n_img]
    return out


def _in_memory(model, batches, image_token_id, **kwargs):
    """output_hidden_states of every batch, padded to one T and concatenated, then the metric."""
    states, vis, txt = None, [], []
    t_max = max(b["input_ids"].shape[1] for b in batches)
    for b in batches:
        with torch.no_grad():
            hs = model(**b, output_hidden_states=True).hidden_states
        pad = t_max - b["input_ids"].shape[1]
        hs = [torch.nn.functional.pad(h, (0, 0, 0, pad)) for h in hs]
        v, t = modality_masks(b["input_ids"], image_token_id, b.get("attention_mask"))
        vis.append(torch.nn.functional.pad(v, (0, pad)))
        txt.append(torch.nn.functional.pad(t, (0, pad)))
        states = (
            hs if states is None else [torch.cat([s, h]) for s, h in zip(states, hs, strict=True)]
        )
    return modality_integration_rate(states[1:], torch.cat(vis), torch.cat(txt), **kwargs), states


def test_finds_the_language_model_and_its_layers(tiny):
    model, _ = tiny
    assert find_language_model(model) is model.model.language_model
    assert find_decoder_layers(model) == list(model.model.language_model.layers)


def test_streaming_equals_in_memory_on_tiny_llava(tiny):
    model, proc = tiny
    enc = _encode(proc, 6, seed=1)
    batches = [_slice(enc, 0, 3), _slice(enc, 3, 6)]
    ref, _ = _in_memory(model, batches, model.config.image_token_id)
    with MIRAccumulator(model) as acc:
        res = acc.run(batches, progress=False)
    assert res.layers == [1, 2]  # hidden-state numbering, embedding output skipped
    assert_close("per_layer_fd", ref.per_layer_fd, res.per_layer_fd, ratio=1e-9)
    assert_close("scales", ref.scales, res.scales, ratio=1e-12)
    assert abs(ref.mir - res.mir) < 1e-9
    for mod in ("vision", "text"):
        assert torch.equal(ref.n_outliers[mod], res.n_outliers[mod])
    assert res.n_vision == 6 * N_IMAGE_TOKENS == ref.n_vision
    assert res.n_text == ref.n_text
    # the last state of output_hidden_states is after the final norm (transformers 5.x)
    lm = model.model.language_model
    with torch.no_grad():
        hs_all = model(**batches[0], output_hidden_states=True).hidden_states
    assert_close("post-norm", lm.norm(_pre_norm_last(model, batches[0])), hs_all[-1], ratio=1e-6)


def _pre_norm_last(model, batch):
    seen = {}
    layer = find_decoder_layers(model)[-1]
    handle = layer.register_forward_hook(lambda m, a, o: seen.setdefault("h", o))
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    h = seen["h"]
    return h[0] if isinstance(h, tuple) else h


def test_pre_norm_option_changes_only_the_last_layer(tiny):
    model, proc = tiny
    enc = _encode(proc, 4, seed=2)
    post = MIRAccumulator(model).run([enc], progress=False)
    acc = MIRAccumulator(model, last_hidden="pre_norm", layers=[0, 1, 2])
    pre = acc.run([enc], progress=False)
    acc.remove()
    assert_close("shared", post.per_layer_fd[:1], pre.per_layer_fd[1:2], ratio=1e-12)
    assert _rel(pre.per_layer_fd[2], post.per_layer_fd[1]) > 1e-3
    # layer 0 = decoder input (embeddings with image features), pre-norm last = raw layer output
    vis, txt = modality_masks(enc["input_ids"], model.config.image_token_id, enc["attention_mask"])
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    ref = modality_integration_rate([hs[0], hs[1], _pre_norm_last(model, enc)], vis, txt)
    assert_close("pre_norm", ref.per_layer_fd, pre.per_layer_fd, ratio=1e-9)


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


def test_disk_spill_and_reservoir_give_the_exact_result(tiny, tmp_path):
    model, proc = tiny
    enc = _encode(proc, 4, seed=3)
    batches = [_slice(enc, 0, 2), _slice(enc, 2, 4)]
    exact = MIRAccumulator(model).run(batches, progress=False)
    acc = MIRAccumulator(model, memory_limit_bytes=0, spill_dir=str(tmp_path))
    acc.observe(batches[0])
    assert len(os.listdir(tmp_path)) == 4  # one memmap per (layer, modality)
    acc.observe(batches[1])
    acc.end_stats()
    assert os.listdir(tmp_path) == []  # removed once the medians are known
    for b in batches:
        acc.observe(b)
    spilled = acc.result()
    acc.remove()
    assert torch.equal(exact.per_layer_fd, spilled.per_layer_fd)
    big = MIRAccumulator(model, median="reservoir", reservoir_size=10_000)
    res_big = big.run(batches, progress=False)
    big.remove()
    assert torch.equal(exact.per_layer_fd, res_big.per_layer_fd)
    small = [MIRAccumulator(model, median="reservoir", reservoir_size=8, seed=7) for _ in range(2)]
    vals = [a.run(batches, progress=False).per_layer_fd for a in small]
    for a in small:
        a.remove()
    assert torch.equal(vals[0], vals[1])  # seeded
    assert bool(torch.isfinite(vals[0]).all())


def test_streaming_states_with_planted_outliers_matches_in_memory():
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(3, 4, 40, 5, generator=g, dtype=F64)
    hs[:, :, 20:] = 0.5 * hs[:, :, 20:] + 1.0
    hs[:, 0, 3] *= 50.0
    hs[:, 2, 30] *= 50.0
    hs[1, 1, 35] *= -60.0
    vis = torch.zeros(4, 40, dtype=torch.bool)
    vis[:, 1:20] = True
    txt = torch.zeros(4, 40, dtype=torch.bool)
    txt[:, 20:] = True
    ref = modality_integration_rate(hs, vis, txt)
    assert int(ref.n_outliers["vision"].sum()) >= 3 and int(ref.n_outliers["text"].sum()) >= 3
    for median in ("exact", "reservoir"):
        acc = MIRAccumulator(None, layers=[0, 1, 2], median=median, reservoir_size=1000)
        for b in (slice(0, 1), slice(1, 4)):
            acc.observe_states(hs[:, b], vis[b], txt[b])
        acc.end_stats()
        for b in (slice(0, 3), slice(3, 4)):  # the batching may differ between passes
            acc.observe_states(hs[:, b], vis[b], txt[b])
        res = acc.result()
        assert_close(median, ref.per_layer_fd, res.per_layer_fd, ratio=1e-10)
        assert torch.equal(ref.n_outliers["text"], res.n_outliers["text"])
    with pytest.warns(RuntimeWarning, match="official"):
        fast_ref = modality_integration_rate(hs, vis, txt, method="official_fast")
    acc = MIRAccumulator(None, layers=[0, 1, 2])
    acc.observe_states(hs, vis, txt)
    acc.end_stats()
    acc.observe_states(hs, vis, txt)
    with pytest.warns(RuntimeWarning, match="official"):
        fast = acc.result("official_fast")
    assert_close("official_fast", fast_ref.per_layer_fd, fast.per_layer_fd, ratio=1e-9)


def test_compute_mir_two_images_per_sample_matches_in_memory(tiny):
    model, proc = tiny
    n, k = 4, 2
    imgs = _images(n * k, seed=4)
    groups = [imgs[i * k : (i + 1) * k] for i in range(n)]
    texts = _texts(n, seed=4)
    res = compute_mir(
        model, proc, groups, texts, template="vicuna_v1", batch_size=3, progress=False
    )
    batches = []
    for a, b in ((0, 3), (3, 4)):
        prompts = [build_prompt(proc, t, k, "vicuna_v1") for t in texts[a:b]]
        batches.append(
            dict(proc(images=groups[a:b], text=prompts, return_tensors="pt", padding=True))
        )
    ref, _ = _in_memory(model, batches, model.config.image_token_id)
    assert res.n_vision == n * k * N_IMAGE_TOKENS
    assert_close("per_layer_fd", ref.per_layer_fd, res.per_layer_fd, ratio=1e-9)
    assert res.extra["num"] == n and res.to_dict()["layers"] == [1, 2]
    assert not model.training


def test_compute_mir_reads_image_paths(tiny, tmp_path):
    model, proc = tiny
    imgs, texts = _images(3, seed=9), _texts(3, seed=9)
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    a = compute_mir(model, proc, paths, texts, template="plain", progress=False)
    b = compute_mir(model, proc, imgs, texts, template="plain", progress=False)
    assert torch.equal(a.per_layer_fd, b.per_layer_fd)


def test_compute_mir_validates_inputs(tiny):
    model, proc = tiny
    with pytest.raises(ValueError, match="num"):
        compute_mir(model, proc, _images(2), _texts(2), num=3, progress=False)
    with pytest.raises(ValueError, match="method"):
        compute_mir(model, proc, _images(2), _texts(2), method="gram", progress=False)
    with pytest.raises(ValueError, match="template"):
        compute_mir(model, proc, _images(2), _texts(2), template="llama", progress=False)


def test_accumulator_rejects_misuse(tiny):
    model, proc = tiny
    enc = _encode(proc, 2, seed=5)
    with pytest.raises(ValueError, match="layers"):
        MIRAccumulator(model, layers=[5])
    with pytest.raises(ValueError, match="median"):
        MIRAccumulator(model, median="approx")
    acc = MIRAccumulator(model)
    with pytest.raises(ValueError, match="end_stats"):
        acc.result()
    acc.observe(enc)
    acc.end_stats()
    acc.observe(_slice(enc, 0, 1))  # pass 2 sees fewer rows than pass 1
    with pytest.raises(ValueError, match="both passes"):
        acc.result()
    with pytest.raises(ValueError, match="gram"):
        acc.result("gram")
    acc.remove()
    acc.remove()  # idempotent
    no_img = {k: v for k, v in enc.items() if k != "pixel_values"}
    no_img["input_ids"] = torch.where(
        no_img["input_ids"] == model.config.image_token_id, 8, no_img["input_ids"]
    )
    acc = MIRAccumulator(model)
    acc.observe(no_img)
    with pytest.raises(ValueError, match="empty modality"):
        acc.end_stats()
    acc.remove()


def test_user_mask_fn(tiny):
    model, proc = tiny
    enc = _encode(proc, 3, seed=6)
    calls = []

    def mask_fn(batch):
        calls.append(1)
        return modality_masks(
            batch["input_ids"], model.config.image_token_id, batch["attention_mask"]
        )

    a = MIRAccumulator(model, mask_fn=mask_fn).run([enc], progress=False)
    b = MIRAccumulator(model).run([enc], progress=False)
    assert len(calls) == 2 and torch.equal(a.per_layer_fd, b.per_layer_fd)
    assert math.isfinite(a.mir)


@requires_cuda
def test_streaming_equals_in_memory_bf16_on_cuda(make_tiny_llava):
    model, proc = make_tiny_llava(torch.bfloat16)
    model = model.cuda()
    enc = _encode(proc, 8, seed=7)
    enc = {
        k: (v.cuda().to(torch.bfloat16) if v.is_floating_point() else v.cuda())
        for k, v in enc.items()
    }
    batches = [_slice(enc, 0, 4), _slice(enc, 4, 8)]
    ref, _ = _in_memory(model, batches, model.config.image_token_id)
    acc = MIRAccumulator(model)
    res = acc.run(batches, progress=False)
    acc.remove()
    assert_close(
        "per_layer_fd", ref.per_layer_fd, res.per_layer_fd.to(ref.per_layer_fd.device), ratio=1e-8
    )


_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> "
    "{% for item in m['content'] %}{% if item['type'] == 'image' %}<image> "
    "{% else %}{{ item['text'] }} {% endif %}{% endfor %}{{ eos_token }} {% endfor %}"
)


def test_chat_template_prompt_and_compute_mir(tiny):
    model, proc = tiny
    proc.chat_template = _CHAT
    try:
        prompt = build_prompt(proc, "the red cat .", 2, "chat")
        assert prompt == "<s><|user|> <image> <image> </s> <|assistant|> the red cat . </s> "
        imgs, texts = _images(3, seed=8), _texts(3, seed=8)
        res = compute_mir(model, proc, imgs, texts, batch_size=3, progress=False)
        enc = dict(
            proc(
                images=imgs,
                text=[build_prompt(proc, t, 1, "chat") for t in texts],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
        )
        assert int((enc["input_ids"] == 1).sum()) == 3  # one BOS per sample, not two
        ref, _ = _in_memory(model, [enc], model.config.image_token_id)
        assert_close("chat", ref.per_layer_fd, res.per_layer_fd, ratio=1e-9)
    finally:
        proc.chat_template = None
    assert build_prompt(proc, "a box", 1, "chat") == "<image>\na box"  # plain fallback
