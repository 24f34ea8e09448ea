"""Synthetic data: seeded, drawn where the scene says, worded with known tokens, written to disk."""

import json

import numpy as np
import pytest

from paperbricks.mir import data as D


def _arr(img):
    return np.asarray(img, dtype=np.float64)  # (H, W, 3)


def test_scenes_and_images_are_seeded():
    a, b, c = D.caption_pairs(6, seed=3), D.caption_pairs(6, seed=3), D.caption_pairs(6, seed=4)
    assert [p.caption for p in a] == [p.caption for p in b]
    assert all(np.array_equal(_arr(x.image), _arr(y.image)) for x, y in zip(a, b, strict=True))
    assert [p.scene for p in a] != [p.scene for p in c]


@pytest.mark.parametrize("position", D.POSITIONS)
@pytest.mark.parametrize("shape", D.SHAPES)
def test_shape_is_drawn_in_its_quadrant_with_its_colour(shape, position):
    scene = D.Scene(shape, "yellow", position, "black", scale=0.8)
    img = _arr(D.render_scene(scene, size=32, noise=0.0))
    quads = {
        ("top", "left"): img[:16, :16],
        ("top", "right"): img[:16, 16:],
        ("bottom", "left"): img[16:, :16],
        ("bottom", "right"): img[16:, 16:],
    }
    yellow, black = np.array(D.COLORS["yellow"]), np.array(D.BACKGROUNDS["black"])
    for pos, quad in quads.items():
        px = quad.reshape(-1, 3)
        near_yellow = (np.abs(px - yellow).max(axis=1) < 30).mean()
        if pos == position:
            assert near_yellow > 0.15, (pos, near_yellow)
        else:  # untouched background
            assert np.abs(px - black).max() < 1e-9


def test_noise_is_bounded_and_changes_pixels():
    scene = D.Scene("circle", "red", ("top", "left"), "gray")
    clean = _arr(D.render_scene(scene, noise=0.0))
    noisy = _arr(D.render_scene(scene, noise=8.0, seed=1))
    diff = noisy - clean
    assert 4.0 < diff.std() < 12.0
    assert noisy.min() >= 0 and noisy.max() <= 255


def test_captions_name_the_scene_and_use_known_words():
    for pair in D.caption_pairs(40, seed=0):
        s = pair.scene
        words = pair.caption.split()
        assert s.color in words and s.shape in words
        assert s.position[0] in words and s.position[1] in words
        assert set(words) <= set(D.VOCAB_WORDS)
    assert D.describe_scene(D.Scene("square", "blue", ("bottom", "right"), "white"), pattern=1) == (
        "the picture shows a blue square in the bottom right corner ."
    )


def test_unrelated_pairs_do_not_describe_their_images():
    images, texts = D.unrelated_pairs(30, seed=0)
    assert len(images) == len(texts) == 30
    scene_words = set(D.SHAPES) | {"top", "bottom", "background", "picture", "image"}
    for t in texts:
        assert not scene_words & set(t.split())
        assert set(t.split()) <= set(D.VOCAB_WORDS)
        assert "\n" not in t
    # the images are not the caption-pair images of the same seed
    pairs = D.caption_pairs(30, seed=0)
    assert not all(
        np.array_equal(_arr(a), _arr(p.image)) for a, p in zip(images, pairs, strict=True)
    )


def test_visual_questions_answer_from_the_scene():
    qs = D.visual_questions(200, seed=1)
    kinds = {q.kind for q in qs}
    assert kinds == set(D.QUESTION_KINDS)
    for q in qs:
        expected = {
            "color": q.scene.color,
            "shape": q.scene.shape,
            "horizontal": q.scene.position[1],
            "vertical": q.scene.position[0],
        }[q.kind]
        assert q.answer == expected
        assert set(q.question.split()) <= set(D.VOCAB_WORDS)
    only = D.visual_questions(10, seed=1, kinds=("shape",))
    assert {q.kind for q in only} == {"shape"}
    with pytest.raises(ValueError, match="kinds"):
        D.visual_questions(3, kinds=("size",))


def test_text_conversations_are_consistent():
    convs = D.text_conversations(100, seed=2)
    answered = [(u, a) for u, a in convs if u.endswith("?")]
    described = [(u, a) for u, a in convs if not u.endswith("?")]
    assert answered and described
    for user, reply in answered:
        assert reply in user.split()  # the answer word is in the description
    for user, reply in described:
        key = lambda s: sorted(w for w in s.split() if w in D.COLORS or w in D.SHAPES)  # noqa: E731
        assert key(user) == key(reply)


def test_write_and_read_a_set(tmp_path):
    paths, texts_path = D.write_synthetic_set(tmp_path / "set", 5, seed=1)
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(5)]
    texts = D.read_texts(texts_path)
    images, expected = D.unrelated_pairs(5, seed=1)
    assert texts == expected
    from PIL import Image

    with Image.open(paths[2]) as im:
        assert np.array_equal(_arr(im.convert("RGB")), _arr(images[2]))  # PNG is lossless
    with pytest.raises(FileExistsError, match="overwrite"):
        D.write_synthetic_set(tmp_path / "set", 5)
    D.write_synthetic_set(tmp_path / "set", 3, seed=2, overwrite=True)
    assert len(D.read_texts(texts_path)) == 3


def test_read_texts_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["x y", "z"]))
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n"two"\n\n')
    (tmp_path / "c.txt").write_text("first line\n\nsecond\n")
    assert D.read_texts(tmp_path / "a.json") == ["x y", "z"]
    assert D.read_texts(tmp_path / "b.jsonl") == ["one", "two"]
    assert D.read_texts(tmp_path / "c.txt") == ["first line", "second"]
    (tmp_path / "bad.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="list of strings"):
        D.read_texts(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        D.read_texts(tmp_path / "missing.txt")


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"Scene\.shape"):
        D.Scene("star", "red", ("top", "left"), "black")
    with pytest.raises(ValueError, match=r"Scene\.scale"):
        D.Scene("circle", "red", ("top", "left"), "black", scale=2.0)
    with pytest.raises(ValueError, match="n: expected"):
        D.caption_pairs(-1)
    with pytest.raises(TypeError, match="seed"):
        D.stories(2, seed=1.5)
    with pytest.raises(ValueError, match="size"):
        D.unrelated_pairs(2, size=4)
    with pytest.raises(ValueError, match="num"):
        D.write_synthetic_set("unused", 0)
