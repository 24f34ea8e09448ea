"""Gymnasium environments for the three GLEE families (spec §4 "Gymnasium environments").

Single-agent views of a two-player game: the agent plays one role (``"alice"`` by default) and
the other role is played by ``opponent`` (a rational bot by default: Rubinstein SPE in
bargaining, the negotiation SPE bot, a Bayesian buyer facing a seller agent and a
Kamenica–Gentzkow seller facing a buyer agent). An episode is one whole game; the reward is the
agent's normalised self-gain (spec §2 "Metrics", corrected formulas), paid when the game ends.

* ``paperbricks/GLEE-{Bargaining,Negotiation,Persuasion}-v0``: the action is the reply text
  (JSON, parsed tolerantly by :func:`paperbricks.glee.parsing.parse_action`). A malformed reply
  costs nothing but a step: the next observation repeats the turn with the error appended and
  ``info["format_error"]`` set; after ``max_format_errors`` consecutive malformed replies the
  episode terminates with reward 0 (``info["forfeit"] = True``).
* ``paperbricks/GLEE-{...}-Structured-v0``: the action is ``Dict{"decision": Discrete,
  "offer": Box[0, 1]}`` for RL. Decisions: bargaining 0 accept / 1 reject; negotiation
  0 accept / 1 reject / 2 outside option; persuasion 1 yes (buy, or recommend) / 0 no. Offers
  (used on proposing turns): bargaining, the proposer's own share of M; negotiation, the price as
  a fraction of 2·M.

Observations are ``Dict{"text": Text, "state": Box(6,)}``: the text is our prompt (rules,
format request, turn message; only what the role may know), ``state`` is
``[round, proposing, pending, own_param, other_param, record]`` (see :func:`state_vector`; -1
marks unknown/absent). All randomness (persuasion quality, default KG seller) comes from
``reset(seed=...)`` through ``self.np_random``.

Registration: importing this module calls :func:`register_envs` (idempotent). Gymnasium >= 1.0
no longer loads ``gymnasium.envs`` plugin entry points, so ``gymnasium.make`` needs either
``import paperbricks.glee.envs`` first or the ``"paperbricks.glee.envs:paperbricks/GLEE-..."``
module prefix form (the package declares no plugin entry point).
"""

from __future__ import annotations

import logging
import string
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .actions import Accept, Buy, NoBuy, Offer, OutsideOption, Reject, Signal
from .config import BASE_CONFIG, BargainingConfig, NegotiationConfig, PersuasionConfig
from .games import IllegalActionError, make_game
from .llm_player import validate_reply
from .parsing import FormatError
from .prompts import expected_move, format_request, rules, turn_message

__all__ = [
    "ENV_IDS",
    "BargainingEnv",
    "BargainingStructuredEnv",
    "GLEEEnv",
    "NegotiationEnv",
    "NegotiationStructuredEnv",
    "PersuasionEnv",
    "PersuasionStructuredEnv",
    "default_opponent",
    "register_envs",
    "state_vector",
]

logger = logging.getLogger(__name__)

CHARSET = string.printable
MAX_TEXT = 4096
_CONFIG_TYPES = {
    "bargaining": BargainingConfig,
    "negotiation": NegotiationConfig,
    "persuasion": PersuasionConfig,
}


def default_opponent(family: str, role: str, seed: int | None = None) -> Any:
    """The rational bot playing ``role`` (the opponent's role) in ``family``."""
    from . import bots

    if family == "bargaining":
        return bots.RubinsteinSPEBot()
    if family == "negotiation":
        return bots.NegotiationSPEBot()
    if role == "alice":
        return bots.KGSeller(seed=seed)
    return bots.BayesianBuyer()


def _clean(text: str) -> str:
    allowed = set(CHARSET)
    return "".join(ch if ch in allowed else "?" for ch in text)[:MAX_TEXT]


def state_vector(view: dict[str, Any]) -> np.ndarray:
    """``[round, proposing, pending, own_param, other_param, record]`` (float32; -1 = unknown).

    pending: bargaining, the agent's share of the pending offer; negotiation, price/M; persuasion
    seller, this round's quality (1/0); persuasion buyer, the seller's recommendation (1/0, -1
    for free text). own/other_param: δ (bargaining), value F (negotiation); persuasion p and v
    (-1 when hidden). record: persuasion sales per played round, else 0.
    """
    fam, me, cfg = view["family"], view["role"], view["config"]
    other = "bob" if me == "alice" else "alice"
    proposing = 1.0 if expected_move(view) == "offer" else 0.0
    pending, own, oth, record = -1.0, -1.0, -1.0, 0.0
    if fam == "bargaining":
        if view.get("pending_offer") is not None:
            share = float(view["pending_offer"]) / float(cfg["money"])
            pending = share if me == "alice" else 1.0 - share
        own = float(cfg[f"delta_{me}"])
        oth = float(cfg.get(f"delta_{other}", -1.0))
    elif fam == "negotiation":
        if view.get("pending_offer") is not None:
            pending = float(view["pending_offer"]) / float(cfg["money"])
        keys = ("seller_value", "buyer_value") if me == "alice" else ("buyer_value", "seller_value")
        own, oth = float(cfg[keys[0]]), float(cfg.get(keys[1], -1.0))
    else:
        if me == "alice" and view.get("quality_high") is not None:
            pending = 1.0 if view["quality_high"] else 0.0
        sig = view.get("signal") or {}
        if me == "bob" and sig.get("kind") == "signal":
            pending = 1.0 if sig["recommend"] else 0.0
        own, oth = float(cfg["p"]), float(cfg.get("v", -1.0))
        rec = view.get("record") or {}
        if rec.get("rounds_played"):
            record = rec["sales"] / rec["rounds_played"]
    return np.array([view["round"], proposing, pending, own, oth, record], dtype=np.float32)


class GLEEEnv(gym.Env):
    """One GLEE game as a single-agent gymnasium environment (text actions).

    Args:
        config: the game configuration (default: the family's base configuration, with
            persuasion's paper default of 20 rounds).
        role: the agent's role, ``"alice"`` (bargaining first mover, seller) or ``"bob"``.
        opponent: the other role's player: an object with ``act(game_view)``, a factory
            ``fn(seed) -> player`` called at every reset with a seed drawn from
            ``self.np_random``, or ``None`` for the default rational bot.
        max_format_errors: consecutive malformed replies before the episode is forfeited
            (default 3).
        render_mode: ``None`` or ``"ansi"`` (returns the current observation text).

    Examples:
        >>> env = BargainingEnv(BargainingConfig(delta_alice=0.9, delta_bob=0.9, money=100.0))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step('{"alice_gain": 52, "bob_gain": 47}')
        >>> info["format_error"]
        'offer: alice_gain + bob_gain must equal 100 exactly, got 52 + 47 = 99'
        >>> obs, reward, terminated, truncated, info = env.step('{"alice_gain": 52, "bob_gain": 48}')
        >>> terminated, round(reward, 2)
        (True, 0.52)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}
    family = ""

    def __init__(
        self,
        config: Any = None,
        role: str = "alice",
        opponent: Any = None,
        max_format_errors: int = 3,
        render_mode: str | None = None,
    ) -> None:
        ctype = _CONFIG_TYPES[self.family]
        if config is None:
            config = BASE_CONFIG[self.family]
        if not isinstance(config, ctype):
            raise TypeError(f"config: expected {ctype.__name__}, got {type(config).__name__}")
        if role not in ("alice", "bob"):
            raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
        if opponent is not None and not (
            callable(getattr(opponent, "act", None)) or callable(opponent)
        ):
            raise TypeError(
                "opponent: expected a player with act(), a factory fn(seed) or None, got "
                f"{type(opponent).__name__}"
            )
        if isinstance(max_format_errors, bool) or not isinstance(max_format_errors, int):
            raise TypeError(f"max_format_errors: expected an int, got {max_format_errors!r}")
        if max_format_errors < 1:
            raise ValueError(f"max_format_errors: expected >= 1, got {max_format_errors}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode: expected None or 'ansi', got {render_mode!r}")
        self.config = config
        self.role = role
        self.opponent_spec = opponent
        self.max_format_errors = max_format_errors
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "text": spaces.Text(max_length=MAX_TEXT, min_length=0, charset=CHARSET),
                "state": spaces.Box(-1.0, np.inf, shape=(6,), dtype=np.float32),
            }
        )
        self.action_space = self._make_action_space()
        self.game: Any = None
        self.opponent: Any = None
        self._errors = 0
        self._last_text = ""

    # ----------------------------------------------------------------- hooks
    def _make_action_space(self) -> spaces.Space:
        return spaces.Text(max_length=2048, min_length=0, charset=CHARSET)

    def _to_action(self, action: Any, view: dict[str, Any]) -> Any:
        if not isinstance(action, str):
            raise FormatError(f"action: expected the reply text (str), got {type(action).__name__}")
        return validate_reply(action, view)

    # ------------------------------------------------------------- machinery
    @property
    def _other(self) -> str:
        return "bob" if self.role == "alice" else "alice"

    def _view(self) -> dict[str, Any]:
        return self.game.observation(self.role)

    def _observe(self, error: str | None = None) -> dict[str, Any]:
        view = self._view()
        if self.game.done:
            out = self.game.outcome()
            gain = out.alice_gain if self.role == "alice" else out.bob_gain
            text = (
                f"The game is over after {out.rounds} round(s). Your normalised gain: {gain:.4f}."
            )
        else:
            text = rules(view) + "\n\n" + turn_message(view) + "\n" + format_request(view)
            if error:
                text += f"\nYour previous reply could not be used: {error}"
        self._last_text = _clean(text)
        return {"text": self._last_text, "state": state_vector(view)}

    def _run_opponent(self) -> None:
        while not self.game.done and self.game.current_player == self._other:
            self.game.apply(self.opponent.act(self.game.observation(self._other)))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start a new game; ``seed`` seeds the game and the default opponent."""
        super().reset(seed=seed)
        game_seed = int(self.np_random.integers(2**31 - 1))
        opp_seed = int(self.np_random.integers(2**31 - 1))
        spec = self.opponent_spec
        if spec is None:
            self.opponent = default_opponent(self.family, self._other, seed=opp_seed)
        elif callable(getattr(spec, "act", None)):
            self.opponent = spec
        else:
            self.opponent = spec(opp_seed)
        self.game = make_game(self.config, seed=game_seed)
        self._errors = 0
        self._run_opponent()
        return self._observe(), {"round": self.game.round, "format_errors": 0}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Play the agent's move, then the opponent's until it is the agent's turn again."""
        if self.game is None:
            raise RuntimeError("step: call reset() before step()")
        if self.game.done:
            raise RuntimeError("step: the episode has terminated; call reset()")
        view = self._view()
        try:
            move = self._to_action(action, view)
            self.game.apply(move)
        except (FormatError, IllegalActionError) as err:
            self._errors += 1
            info = {"format_error": str(err), "format_errors": self._errors}
            if self._errors >= self.max_format_errors:
                info["forfeit"] = True
                obs = {"text": self._last_text, "state": state_vector(view)}
                return obs, 0.0, True, False, info
            return self._observe(error=str(err)), 0.0, False, False, info
        self._errors = 0
        self._run_opponent()
        reward = 0.0
        info: dict[str, Any] = {"round": self.game.round, "format_errors": 0}
        if self.game.done:
            out = self.game.outcome()
            reward = float(out.alice_gain if self.role == "alice" else out.bob_gain)
            info["outcome"] = out.to_dict()
        return self._observe(), reward, self.game.done, False, info

    def render(self) -> str | None:
        """``"ansi"``: the current observation text."""
        if self.render_mode == "ansi":
            return self._last_text
        return None

    @property
    def transcript(self) -> list[dict[str, Any]]:
        """The game's transcript so far (a copy)."""
        return [] if self.game is None else [dict(e) for e in self.game.transcript]


class _StructuredMixin:
    """Structured actions ``Dict{"decision": Discrete(n), "offer": Box[0, 1]}``."""

    family: str
    role: str

    def _make_action_space(self) -> spaces.Space:
        n = {"bargaining": 2, "negotiation": 3, "persuasion": 2}[self.family]
        return spaces.Dict(
            {
                "decision": spaces.Discrete(n),
                "offer": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
            }
        )

    def _to_action(self, action: Any, view: dict[str, Any]) -> Any:
        if not isinstance(action, dict) or "decision" not in action or "offer" not in action:
            raise TypeError(
                "action: expected a dict {'decision': int, 'offer': array of shape (1,)}, got "
                f"{type(action).__name__}"
            )
        d = int(action["decision"])
        offer = float(np.asarray(action["offer"], dtype=np.float64).reshape(-1)[0])
        if not 0.0 <= offer <= 1.0:
            raise ValueError(f"action['offer']: expected a value in [0, 1], got {offer}")
        cfg = view["config"]
        M = float(cfg["money"])
        if self.family == "persuasion":
            if self.role == "alice":
                return Signal(d == 1)
            return Buy() if d == 1 else NoBuy()
        if expected_move(view) == "offer":
            if self.family == "bargaining":
                own = round(offer * M, 6)
                return Offer(own if self.role == "alice" else M - own)
            return Offer(round(offer * 2.0 * M, 6))
        if self.family == "bargaining":
            return [Accept(), Reject()][d]
        return [Accept(), Reject(), OutsideOption()][d]


class BargainingEnv(GLEEEnv):
    """``paperbricks/GLEE-Bargaining-v0`` (text actions)."""

    family = "bargaining"


class NegotiationEnv(GLEEEnv):
    """``paperbricks/GLEE-Negotiation-v0`` (text actions)."""

    family = "negotiation"


class PersuasionEnv(GLEEEnv):
    """``paperbricks/GLEE-Persuasion-v0`` (text actions)."""

    family = "persuasion"


class BargainingStructuredEnv(_StructuredMixin, BargainingEnv):
    """``paperbricks/GLEE-Bargaining-Structured-v0``."""


class NegotiationStructuredEnv(_StructuredMixin, NegotiationEnv):
    """``paperbricks/GLEE-Negotiation-Structured-v0``."""


class PersuasionStructuredEnv(_StructuredMixin, PersuasionEnv):
    """``paperbricks/GLEE-Persuasion-Structured-v0``."""


ENV_IDS = {
    "paperbricks/GLEE-Bargaining-v0": "BargainingEnv",
    "paperbricks/GLEE-Negotiation-v0": "NegotiationEnv",
    "paperbricks/GLEE-Persuasion-v0": "PersuasionEnv",
    "paperbricks/GLEE-Bargaining-Structured-v0": "BargainingStructuredEnv",
    "paperbricks/GLEE-Negotiation-Structured-v0": "NegotiationStructuredEnv",
    "paperbricks/GLEE-Persuasion-Structured-v0": "PersuasionStructuredEnv",
}


def register_envs() -> list[str]:
    """Register the six environments with gymnasium (idempotent; returns the ids).

    Examples:
        >>> import gymnasium as gym
        >>> _ = register_envs()
        >>> env = gym.make("paperbricks/GLEE-Negotiation-Structured-v0")
    """
    for env_id, cls in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        name = env_id.split("/", 1)[1]
        # An old-style plugin loader sets the namespace itself; pass the bare name then.
        from gymnasium.envs import registration

        rid = name if registration.current_namespace is not None else env_id
        gym.register(id=rid, entry_point=f"{__name__}:{cls}")
    return list(ENV_IDS)


register_envs()
