"""Metrics on hand-written answers and the multi-turn runner with scripted model and judge."""

import json

import pytest
from PIL import Image

from paperbricks.core_kernels.llm import ScriptedBackend
from paperbricks.pixtral.evaluation import (
    PROMPTS,
    MultiTurnRunner,
    anls,
    format_prompt,
    load_conversations,
    parse_anywhere,
    parse_explicit,
    parse_judge_score,
    parse_number,
    relaxed_correctness,
    score_dataset,
    vqa_match,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 12", "12"),
        ("**Final Answer:** 45%", "45%"),
        ("Final Answer**:** [Paris]", "Paris"),
        ("answer: 3\n...so the answer: 7", "7"),  # the last marker wins
        ("Final Answer:\n\n  _(B)_ \nextra", "B"),  # first non-empty line, markdown stripped
        ("No marker here, 42.", None),
        ("Answer:   \n  ", None),
    ],
)
def test_parse_explicit(text, expected):
    assert parse_explicit(text) == expected


def test_parse_number_forms():
    assert parse_number("1,234") == 1234.0
    assert parse_number("$7.50") == 7.5
    assert parse_number("12%") == 12.0
    assert parse_number("-0.5.") == -0.5
    assert parse_number("**3**") == 3.0
    assert parse_number("twelve") is None


def test_relaxed_correctness_5_percent_boundary():
    assert relaxed_correctness("105", "100") == 1.0
    assert relaxed_correctness("95", "100") == 1.0
    assert relaxed_correctness("105.01", "100") == 0.0
    assert relaxed_correctness("94.9", "100") == 0.0
    assert relaxed_correctness("0", "0") == 1.0
    assert relaxed_correctness("0.1", "0") == 0.0


def test_relaxed_correctness_percent_decimal_cross_check():
    assert relaxed_correctness("45%", "0.45") == 1.0
    assert relaxed_correctness("0.45", "45%") == 1.0
    assert relaxed_correctness("45%", "45") == 1.0  # percent sign alone: value as written
    assert relaxed_correctness("1,200", "1200") == 1.0
    assert relaxed_correctness("$12", "12") == 1.0


def test_relaxed_correctness_letters_and_text():
    assert relaxed_correctness("(B) 12 apples", "B") == 1.0
    assert relaxed_correctness("b", "B") == 1.0
    assert relaxed_correctness("C", "B") == 0.0
    assert relaxed_correctness("**Yes**", "yes") == 1.0
    assert relaxed_correctness("Blue line.", "blue line") == 1.0
    assert relaxed_correctness(None, "5") == 0.0
    with pytest.raises(TypeError, match="target"):
        relaxed_correctness("1", 1)


def test_vqa_match_min_n_over_3():
    refs = ["cat", "cat", "dog", "Cat.", "a cat"]
    assert vqa_match("cat", refs) == 1.0
    assert vqa_match("dog", refs) == pytest.approx(1 / 3)
    assert vqa_match("Two", ["2", "two", "three"]) == pytest.approx(2 / 3)
    assert vqa_match("bird", refs) == 0.0
    with pytest.raises(ValueError, match="references"):
        vqa_match("cat", [])


def test_anls_known_values():
    # lev(kitten, sitting) = 3 over max length 7
    assert anls("kitten", ["sitting"], threshold=0.0) == pytest.approx(1 - 3 / 7)
    assert anls("kitten", ["sitting"]) == pytest.approx(1 - 3 / 7)  # 0.571 >= 0.5
    assert anls("abcd", ["wxyz"], threshold=0.0) == 0.0
    assert anls("abcd", ["abxy"]) == pytest.approx(0.5)  # at the cut-off: kept
    assert anls("abcde", ["abxyz"]) == 0.0  # 0.4 < 0.5
    assert anls("  Hello   World ", ["hello world", "zzz"]) == 1.0  # best reference, case-folded
    with pytest.raises(ValueError, match="threshold"):
        anls("a", ["a"], threshold=2)


def test_parse_judge_score():
    assert parse_judge_score("ok [[7]]") == 7.0
    assert parse_judge_score("[[3]] then revised [[ 8.5 ]]") == 8.5
    assert parse_judge_score("Rating: 7") is None
    assert parse_judge_score("[[11]]") is None


def test_score_dataset_reports_explicit_and_fallback_separately():
    responses = ["Step...\nFinal Answer: 45%", "The value is 12, I think"]
    s = score_dataset("relaxed", responses, ["0.45", "12"])
    assert s["explicit"] == 0.5  # the second has no answer: line
    assert s["anywhere"] == 1.0
    assert "12" in parse_anywhere(responses[1])


def test_prompts_are_templates():
    assert set(PROMPTS) >= {"vqa", "anls", "relaxed", "multiple_choice"}
    assert "Final Answer:" in format_prompt("relaxed", "What is the max?")
    with pytest.raises(ValueError, match="task"):
        format_prompt("nope", "q")


def _write_set(tmp_path):
    Image.new("RGB", (40, 24), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGBA", (8, 64)).save(tmp_path / "b.png")
    convs = [
        {
            "id": "c1",
            "category": "chart",
            "images": ["a.png"],
            "turns": [
                {"user": "What colour?", "reference": "red"},
                {"user": "Width?", "reference": "40"},
            ],
        },
        {
            "id": "c2",
            "category": "doc",
            "images": ["b.png"],
            "turns": [{"user": "Tall or wide?", "reference": "tall"}],
        },
    ]
    (tmp_path / "conversations.jsonl").write_text("\n".join(json.dumps(c) for c in convs))
    return convs


def test_multi_turn_runner_uses_reference_history_and_aggregates(tmp_path):
    _write_set(tmp_path)
    convs = load_conversations(tmp_path)
    assert convs[0]["images"][0]["size"] == (40, 24)
    model = ScriptedBackend(["blue", "40", "tall"])
    judge = ScriptedBackend(["wrong [[2]]", "right [[10]]", "no score given"])
    res = MultiTurnRunner(model, judge).run(convs)
    # second model request: earlier user turn with the REFERENCE answer, not the model's "blue"
    second = model.requests[1].messages
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == "red"
    first = model.requests[0].messages[0]["content"]  # images as data-URL parts, then the text
    assert [p["type"] for p in first] == ["image_url", "text"]
    assert first[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "<image>" in judge.requests[0].messages[1]["content"]  # the judge sees text only
    assert all(r.temperature == 0.0 for r in model.requests + judge.requests)
    assert judge.requests[0].messages[0]["role"] == "system"
    assert "[[" in judge.requests[0].messages[0]["content"]
    assert res.unparsed == 1
    assert res.micro == pytest.approx(6.0)
    assert res.per_turn == {1: 2.0, 2: 10.0}
    assert res.per_category == {"chart": 6.0}
    assert res.macro == pytest.approx(6.0)
    assert [r["score"] for r in res.records] == [2.0, 10.0, None]


def test_load_conversations_rejects_bad_data(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps([{"turns": [], "images": []}]))
    with pytest.raises(ValueError, match="turns"):
        load_conversations(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps([{"turns": [{"user": "x"}], "images": ["no.png"]}]))
    with pytest.raises(ValueError, match="does not exist"):
        load_conversations(tmp_path / "d.json")
    Image.new("LA", (4, 4)).save(tmp_path / "two.png")
    (tmp_path / "e.json").write_text(
        json.dumps([{"turns": [{"user": "x"}], "images": ["two.png"]}])
    )
    with pytest.raises(ValueError, match="channels"):
        load_conversations(tmp_path / "e.json")
    with pytest.raises(ValueError, match="JSON/JSONL"):
        load_conversations(tmp_path / "missing_dir_or_file")
    with pytest.raises(TypeError, match="judge"):
        MultiTurnRunner(ScriptedBackend(["a"]), object())


def test_multi_turn_runner_marker_mode_for_text_only_backends(tmp_path):
    _write_set(tmp_path)
    convs = load_conversations(tmp_path)
    model = ScriptedBackend(["blue", "40", "tall"])
    judge = ScriptedBackend(["[[2]]", "[[10]]", "[[5]]"])
    MultiTurnRunner(model, judge, images="markers").run(convs)
    assert "<image: a.png 40x24>" in model.requests[0].messages[0]["content"]
    with pytest.raises(ValueError, match="images"):
        MultiTurnRunner(model, judge, images="pixels")


def test_image_part_round_trips_the_file(tmp_path):
    import base64

    from paperbricks.pixtral.evaluation import image_part

    _write_set(tmp_path)
    png = tmp_path / "a.png"
    url = image_part(png)["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == png.read_bytes()
