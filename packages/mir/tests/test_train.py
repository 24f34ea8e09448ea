"""Training stages: what each one trains, what it labels, and the evaluation helpers."""

import math

import pytest
import torch

from paperbricks.mir import data as D
from paperbricks.mir.moca import MoCa
from paperbricks.mir.tinyvlm import build_processor, build_tiny_vlm
from paperbricks.mir.train import (
    IGNORE_INDEX,
    EncodedSet,
    PretrainStrategy,
    caption_loss,
    encode_caption_pairs,
    encode_conversations,
    encode_texts,
    encode_visual_questions,
    finetune_vqa_,
    pretrain_projector_,
    vqa_accuracy,
    warm_up_language_model_,
)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_vlm(seed=0)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model):
    """Keys whose value moved; MoCa keys attached after the snapshot are compared with the
    identity they start from (gamma = 1, beta = 0, std 0)."""
    after = model.state_dict()
    out = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    for k, v in after.items():
        if k not in before and ".moca." in k:
            start = torch.ones_like(v) if k.endswith("gamma") else torch.zeros_like(v)
            if not torch.equal(v, start):
                out.add(k)
    return out


def _part(key):
    if "vision_tower" in key:
        return "vision"
    if "multi_modal_projector" in key:
        return "projector"
    if ".moca." in key:
        return "moca"
    if "lm_head" in key:
        return "head"
    if "language_model.layers.1." in key:
        return "lm_top"
    return "lm"


def test_only_the_target_is_labelled():
    proc = build_processor()
    pairs = D.caption_pairs(3, seed=0)
    enc = encode_caption_pairs(proc, pairs)
    tok = proc.tokenizer
    for i, p in enumerate(pairs):
        labelled = enc.labels[i][enc.labels[i] != IGNORE_INDEX]
        assert tok.decode(labelled) == f"{p.caption} </s>"
        # the labels are the ids at those positions, and no image token is labelled
        sel = enc.labels[i] != IGNORE_INDEX
        assert torch.equal(enc.input_ids[i][sel], labelled)
        assert not (enc.input_ids[i][sel] == proc.image_token_id).any()
    qs = encode_visual_questions(proc, D.visual_questions(4, seed=0))
    assert (qs.labels != IGNORE_INDEX).sum(dim=1).tolist() == [2, 2, 2, 2]  # answer + EOS
    assert qs.tags is not None and len(qs.tags) == 4


def test_text_only_encodings_and_concat():
    proc = build_processor()
    plain = encode_texts(proc.tokenizer, ["the cat .", "a red dog sees the box ."])
    assert ((plain.labels != IGNORE_INDEX) == plain.attention_mask.bool()).all()
    chats = encode_conversations(proc, ["red"], prompts=["what color ?"])
    assert chats.pixel_values is None
    both = EncodedSet.concat([plain, chats], proc.tokenizer.pad_token_id)
    assert len(both) == 3 and both.input_ids.shape[1] == max(
        plain.input_ids.shape[1], chats.input_ids.shape[1]
    )
    assert both.take(1).input_ids.shape[0] == 1
    with pytest.raises(ValueError, match="targets"):
        encode_conversations(proc, [], prompts=[])
    with pytest.raises(ValueError, match="prompts"):
        encode_conversations(proc, ["a", "b"], prompts=["x"])


def test_warm_up_trains_only_the_language_model():
    model, proc = build_tiny_vlm(seed=0)
    before = _snapshot(model)
    losses = warm_up_language_model_(
        model,
        proc,
        D.stories(32, seed=0),
        conversations=D.text_conversations(32, seed=0),
        steps=12,
        batch_size=16,
        progress=False,
    )
    assert len(losses) == 12 and losses[-1] < losses[0]
    parts = {_part(k) for k in _changed(before, model)}
    assert parts == {"lm", "lm_top", "head"}
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (PretrainStrategy(), {"projector"}),
        (PretrainStrategy(moca=True), {"projector", "moca"}),
        (PretrainStrategy(tune_top_layers=1), {"projector", "lm_top"}),
    ],
)
def test_pretraining_trains_what_the_strategy_says(strategy, expected):
    model, proc = build_tiny_vlm(seed=0)
    before = _snapshot(model)
    losses = pretrain_projector_(
        model, proc, D.caption_pairs(10, seed=0), strategy=strategy, batch_size=4, progress=False
    )
    assert len(losses) == math.ceil(10 / 4)
    assert {_part(k) for k in _changed(before, model)} == expected
    assert any(isinstance(m, MoCa) for m in model.modules()) == strategy.moca


def test_zero_pairs_leave_the_model_untouched():
    model, proc = build_tiny_vlm(seed=0)
    before = _snapshot(model)
    assert pretrain_projector_(model, proc, [], progress=False) == []
    assert not _changed(before, model)


def test_training_is_seeded():
    runs = []
    for _ in range(2):
        model, proc = build_tiny_vlm(seed=0)
        pairs = D.caption_pairs(12, seed=0)
        runs.append(pretrain_projector_(model, proc, pairs, batch_size=4, seed=5, progress=False))
    assert runs[0] == runs[1]


def test_finetune_keeps_the_vision_tower_frozen():
    model, proc = build_tiny_vlm(seed=0)
    pretrain_projector_(
        model, proc, D.caption_pairs(4), strategy=PretrainStrategy(moca=True), progress=False
    )
    before = _snapshot(model)
    losses = finetune_vqa_(
        model, proc, D.visual_questions(16, seed=0), steps=3, batch_size=8, progress=False
    )
    assert len(losses) == 3
    parts = {_part(k) for k in _changed(before, model)}
    assert "vision" not in parts and {"projector", "lm", "moca", "head"} <= parts


def test_caption_loss_matches_the_models_own_loss(tiny):
    model, proc = tiny
    enc = encode_caption_pairs(proc, D.caption_pairs(5, seed=1))
    with torch.no_grad():
        ref = model(**enc.batch(torch.arange(5))).loss  # transformers' shifted mean CE
    assert caption_loss(model, proc, enc, batch_size=2) == pytest.approx(float(ref), rel=1e-5)


def test_vqa_accuracy_matches_greedy_generation(tiny):
    model, proc = tiny
    questions = D.visual_questions(12, seed=2)
    acc = vqa_accuracy(model, proc, questions, batch_size=5)
    hits = []
    for q in questions:
        msgs = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q.question}]}
        ]
        prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        batch = proc(images=[q.image], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=1, do_sample=False)
        hits.append(int(out[0, -1]) == proc.tokenizer.convert_tokens_to_ids(q.answer))
    assert acc["accuracy"] == pytest.approx(sum(hits) / len(hits))
    for kind in {q.kind for q in questions}:
        sel = [h for h, q in zip(hits, questions, strict=True) if q.kind == kind]
        assert acc[kind] == pytest.approx(sum(sel) / len(sel))


def test_bad_arguments_raise(tiny):
    model, proc = tiny
    with pytest.raises(ValueError, match="tune_top_layers"):
        PretrainStrategy(tune_top_layers=-1)
    with pytest.raises(ValueError, match="lr"):
        PretrainStrategy(lr=0.0)
    with pytest.raises(ValueError, match="tune_top_layers"):
        pretrain_projector_(
            model, proc, D.caption_pairs(2), strategy=PretrainStrategy(tune_top_layers=5)
        )
    with pytest.raises(TypeError, match="processor"):
        caption_loss(model, proc.tokenizer, D.caption_pairs(2))
    with pytest.raises(ValueError, match="questions"):
        finetune_vqa_(model, proc, [])
    with pytest.raises(ValueError, match="texts, conversations"):
        warm_up_language_model_(model, proc)
    assert PretrainStrategy(moca=True, tune_top_layers=1).name == "projector+top1+moca"
