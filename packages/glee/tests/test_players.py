"""LLM players: format retries with feedback, exhausted retries, choice scoring always legal."""

from __future__ import annotations

import copy
import json

import pytest

from paperbricks.core_kernels.llm import FormatRetriesExhausted, ScriptedBackend
from paperbricks.core_kernels.testing import requires_cuda
from paperbricks.glee.actions import Offer, Signal
from paperbricks.glee.bots import RandomBot, RubinsteinSPEBot
from paperbricks.glee.config import BargainingConfig, NegotiationConfig, PersuasionConfig
from paperbricks.glee.games import BargainingGame, NegotiationGame, PersuasionGame, make_game
from paperbricks.glee.llm_player import ChoiceScoringPolicy, LLMPlayer, candidate_actions
from paperbricks.glee.players_base import play


def _view(cfg=None, who="alice"):
    return BargainingGame(cfg or BargainingConfig(money=100.0)).observation(who)


def test_bad_reply_then_good_feeds_the_error_back():
    backend = ScriptedBackend(["I want sixty", '{"alice_gain": "$60", "bob_gain": "40"}'])
    player = LLMPlayer(backend)
    assert player.act(_view()) == Offer(60.0)
    assert player.format_errors == 1 and len(backend.requests) == 2
    second = backend.requests[1].messages
    assert second[-2] == {"role": "assistant", "content": "I want sixty"}
    assert second[-1]["role"] == "user"
    assert "expected a JSON object with keys ['alice_gain', 'bob_gain']" in second[-1]["content"]
    assert "summing to 100" in second[-1]["content"]
    # the first request is our prompt: rules + format request, then the turn
    first = backend.requests[0].messages
    assert first[0]["role"] == "system" and "divide $100" in first[0]["content"]


def test_wrong_sum_is_fed_back_with_the_numbers():
    backend = ScriptedBackend(
        ['{"alice_gain": 70, "bob_gain": 40}', '{"alice_gain": 70, "bob_gain": 30}']
    )
    assert LLMPlayer(backend).act(_view()) == Offer(70.0)
    assert (
        "must equal 100 exactly, got 70 + 40 = 110" in backend.requests[1].messages[-1]["content"]
    )


def test_exhausted_retries_raise_a_clear_error():
    backend = ScriptedBackend(["no"] * 3)
    player = LLMPlayer(backend, retries=2)
    with pytest.raises(FormatRetriesExhausted, match="no valid reply after 3 attempt") as info:
        player.act(_view())
    assert len(info.value.errors) == 3 and player.format_errors == 3
    assert "alice_gain" in str(info.value)


def test_messages_are_dropped_when_the_config_disables_them():
    cfg = BargainingConfig(money=100.0, messages=False)
    backend = ScriptedBackend(['{"alice_gain": 50, "bob_gain": 50, "message": "deal?"}'])
    action = LLMPlayer(backend).act(_view(cfg))
    assert action == Offer(50.0) and action.message is None
    game = BargainingGame(cfg)
    game.apply(action)  # legal for the engine


def test_llm_player_plays_a_full_game_against_the_spe_bot():
    # A scripted "model" that always asks for 60% and, as responder, accepts.
    def reply(messages, request):
        sys = messages[0]["content"]
        if '"alice_gain"' in sys and "accept" not in sys.split("Answer")[-1]:
            return 'Offer: {"alice_gain": "6,000", "bob_gain": "4,000"}'
        return '{"decision": "accept"}'

    cfg = BargainingConfig(delta_alice=0.9, delta_bob=0.9)
    out = play(BargainingGame(cfg), LLMPlayer(ScriptedBackend(reply)), RubinsteinSPEBot())
    # SPE Bob rejects 40% (< 1 - 0.5263), then offers Alice δ_A·x*; the scripted Alice accepts.
    assert out.agreed and out.rounds == 2


def test_seller_text_mode_and_binary_mode():
    cfg = PersuasionConfig(rounds=1, message_type="binary")
    view = PersuasionGame(cfg, seed=0).observation("alice")
    b = ScriptedBackend(["a great product", '{"decision": "yes"}'])
    assert LLMPlayer(b).act(view) == Signal(True)
    assert "['yes', 'no']" in b.requests[1].messages[-1]["content"]


def test_constructor_validation():
    with pytest.raises(TypeError, match="backend"):
        LLMPlayer(object())
    with pytest.raises(ValueError, match="retries"):
        LLMPlayer(ScriptedBackend([]), retries=-1)
    with pytest.raises(TypeError, match="backend"):
        ChoiceScoringPolicy(object())
    with pytest.raises(TypeError, match="game_view"):
        LLMPlayer(ScriptedBackend(["x"])).act("not a view")


def test_choice_scoring_picks_the_argmax():
    want = json.dumps({"alice_gain": 65, "bob_gain": 35})
    backend = ScriptedBackend([], score_fn=lambda m, c: [1.0 if x == want else 0.0 for x in c])
    assert ChoiceScoringPolicy(backend).act(_view()) == Offer(65.0)


@pytest.mark.parametrize(
    "cfg",
    [
        BargainingConfig(money=100.0, max_rounds=6),
        NegotiationConfig(money=100.0, max_rounds=5, complete_information=False),
        PersuasionConfig(rounds=3, message_type="text"),
        PersuasionConfig(rounds=3, message_type="binary"),
    ],
    ids=["bargaining", "negotiation", "persuasion-text", "persuasion-binary"],
)
def test_every_candidate_is_legal(cfg):
    game = make_game(cfg, seed=0)
    rng_bot = RandomBot(seed=1)
    while not game.done:
        view = game.observation(game.current_player)
        for action in candidate_actions(view):
            trial = copy.deepcopy(game)
            trial.apply(action)  # raises IllegalActionError if not legal
        game.apply(rng_bot.act(view))


@pytest.fixture(scope="module")
def tiny_backend():
    pytest.importorskip("transformers")
    import torch
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.llm import TransformersBackend
    from paperbricks.core_kernels.testing.factories import tiny_llama_config, tiny_tokenizer

    torch.manual_seed(0)
    return TransformersBackend(LlamaForCausalLM(tiny_llama_config()), tiny_tokenizer())


@pytest.mark.parametrize(
    "cfg",
    [
        BargainingConfig(money=100.0, max_rounds=4),
        NegotiationConfig(money=100.0, max_rounds=4),
        PersuasionConfig(rounds=3, message_type="binary"),
    ],
    ids=["bargaining", "negotiation", "persuasion"],
)
def test_tiny_random_model_always_makes_a_legal_move(tiny_backend, cfg):
    policy = ChoiceScoringPolicy(tiny_backend, step=0.1)
    for seat in ("alice", "bob"):
        players = {"alice": RandomBot(seed=3), "bob": RandomBot(seed=4)}
        players[seat] = policy
        game = make_game(cfg, seed=0)
        out = play(game, players["alice"], players["bob"])  # the engine rejects illegal moves
        assert out.family == cfg.family
        # deterministic: the same game again gives the same transcript
        players2 = {"alice": RandomBot(seed=3), "bob": RandomBot(seed=4), seat: policy}
        game2 = make_game(cfg, seed=0)
        play(game2, players2["alice"], players2["bob"])
        assert game2.transcript == game.transcript


def test_negotiation_candidates_cover_both_values():
    view = NegotiationGame(NegotiationConfig(money=100.0)).observation("alice")
    prices = {a.amount for a in candidate_actions(view)}
    assert {100.0, 120.0, 200.0} <= prices and min(prices) > 0


@requires_cuda
def test_choice_scoring_on_cuda_matches_cpu():
    pytest.importorskip("transformers")
    import torch
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.llm import TransformersBackend, score_choices
    from paperbricks.core_kernels.testing.factories import tiny_llama_config, tiny_tokenizer
    from paperbricks.glee.parsing import format_action
    from paperbricks.glee.prompts import build_messages

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    cpu = TransformersBackend(copy.deepcopy(model), tiny_tokenizer())
    gpu = TransformersBackend(model, tiny_tokenizer(), device="cuda")
    for cfg in (BargainingConfig(money=100.0), NegotiationConfig(money=100.0)):
        game = make_game(cfg, seed=0)
        view = game.observation("alice")
        texts = [format_action(a, cfg.family, money=100.0) for a in candidate_actions(view)]
        msgs = build_messages(view)
        ref = torch.tensor(score_choices(cpu, msgs, texts))
        out = torch.tensor(score_choices(gpu, msgs, texts))
        # compare scores, not argmaxes: exact ties may break either way in float noise
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)
        game.apply(ChoiceScoringPolicy(gpu).act(view))  # legal on CUDA too
