"""paperbricks.glee: GLEE, language-based economic games (arXiv:2410.05254).

Three game families (bargaining, negotiation, persuasion) as seedable engines and gymnasium
environments, rational bots, LLM players over any core-kernels chat backend, the corrected metrics
(with ``glee_compat=True`` for the official numbers), resumable sweeps and the regression-imputed
analysis behind the paper's tables.

The public names below are loaded lazily on first access (PEP 562), so ``import paperbricks.glee``
stays cheap: no torch, no transformers, no triton until a name that needs them is used.

Examples:
    >>> from paperbricks.glee import BargainingConfig, RubinsteinSPEBot, play_game
    >>> out, _ = play_game(BargainingConfig(0.9, 0.9), (RubinsteinSPEBot(), RubinsteinSPEBot()), 0)
    >>> round(out.alice_gain, 4), out.rounds
    (0.5263, 1)
"""

from importlib.metadata import PackageNotFoundError, version

from paperbricks.core_kernels.lazy import lazy_exports

try:
    __version__ = version("paperbricks-glee")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "GLEE: A Unified Framework and Benchmark for Language-based Economic Environments",
    "arxiv": "2410.05254",
}

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # configurations
    "BASE_CONFIG": "config",
    "FAMILIES": "config",
    "BargainingConfig": "config",
    "GameConfig": "config",
    "NegotiationConfig": "config",
    "PersuasionConfig": "config",
    "config_from_dict": "config",
    "official_grid": "config",
    # actions and engines
    "Accept": "actions",
    "Action": "actions",
    "Buy": "actions",
    "Message": "actions",
    "NoBuy": "actions",
    "Offer": "actions",
    "OutsideOption": "actions",
    "Reject": "actions",
    "Signal": "actions",
    "action_from_dict": "actions",
    "action_to_dict": "actions",
    "BargainingGame": "games",
    "NegotiationGame": "games",
    "PersuasionGame": "games",
    "Game": "games",
    "IllegalActionError": "games",
    "Outcome": "games",
    "make_game": "games",
    # players
    "Player": "players_base",
    "play": "players_base",
    "BayesianBuyer": "bots",
    "FairSplitBot": "bots",
    "HonestSeller": "bots",
    "KGSeller": "bots",
    "NegotiationSPEBot": "bots",
    "RandomBot": "bots",
    "RubinsteinSPEBot": "bots",
    "kg_low_recommend_prob": "bots",
    "rubinstein_finite_shares": "bots",
    "rubinstein_share": "bots",
    "ChoiceScoringPolicy": "llm_player",
    "LLMPlayer": "llm_player",
    "candidate_actions": "llm_player",
    "GLEEHttpBackend": "http",
    "GLEEHttpPlayer": "http",
    "GLEEServer": "http",
    "game_params": "http",
    "serve_http": "http",
    # gymnasium environments
    "ENV_IDS": "envs",
    "BargainingEnv": "envs",
    "BargainingStructuredEnv": "envs",
    "GLEEEnv": "envs",
    "NegotiationEnv": "envs",
    "NegotiationStructuredEnv": "envs",
    "PersuasionEnv": "envs",
    "PersuasionStructuredEnv": "envs",
    "register_envs": "envs",
    # parsing and prompts
    "FormatError": "parsing",
    "format_action": "parsing",
    "parse_action": "parsing",
    "parse_amount": "parsing",
    "parse_decision": "parsing",
    "build_messages": "prompts",
    # metrics, analysis, data
    "efficiency": "metrics",
    "fairness": "metrics",
    "game_metrics": "metrics",
    "self_gain": "metrics",
    "ImputationResult": "analysis",
    "marginal_effects": "analysis",
    "metric_table": "analysis",
    "regression_impute": "analysis",
    "load_glee_dir": "io",
    "load_glee_game": "io",
    # runs
    "analyze": "runner",
    "base_grid": "runner",
    "game_id": "runner",
    "load_results": "runner",
    "outcome_record": "runner",
    "play_game": "runner",
    "player_from_spec": "runner",
    "sweep": "runner",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = ["PAPER", "__version__", *_EXPORTS]
