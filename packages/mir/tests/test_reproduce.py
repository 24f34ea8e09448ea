"""The registered reproduction: mechanics at a tiny budget (the paper's direction is not tested)."""

import json
import math

import pytest
import torch

from paperbricks.core_kernels.repro import VERDICTS, ReproResult
from paperbricks.core_kernels.stats import spearman
from paperbricks.mir.reproduce import (
    FULL_BUDGET,
    QUICK_BUDGET,
    MirBudget,
    mir_predicts_sft,
    run_mir_experiment,
    verdict_from_correlations,
)
from paperbricks.mir.tinyvlm import TinyVLMConfig
from paperbricks.mir.train import PretrainStrategy

TINY = MirBudget(
    model=TinyVLMConfig(hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1),
    warmup_steps=3,
    warmup_stories=8,
    warmup_chats=16,
    checkpoints=(
        (PretrainStrategy(), 0),
        (PretrainStrategy(), 8),
        (PretrainStrategy(moca=True), 8),
    ),
    pretrain_batch=4,
    heldout_pairs=4,
    mir_pairs=4,
    sft_examples=8,
    sft_steps=2,
    sft_batch=4,
    test_questions=8,
)


def test_tiny_run_reports_everything(tmp_path):
    res = mir_predicts_sft(seed=0, out_dir=tmp_path, quick=True, _budget=TINY)
    assert isinstance(res, ReproResult)
    assert res.verdict in VERDICTS and res.seed_noisy and res.device == "cpu"
    assert res.figures == [tmp_path / "mir_vs_accuracy.png"]
    assert res.figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "checkpoints.json").read_text())["checkpoints"]
    assert [(r["strategy"], r["scale"]) for r in rows] == [
        ("projector", 0),
        ("projector", 8),
        ("projector+moca", 8),
    ]
    mir = torch.tensor([r["mir"] for r in rows], dtype=torch.float64)
    loss = torch.tensor([r["pretrain_loss"] for r in rows], dtype=torch.float64)
    acc = torch.tensor([r["accuracy"] for r in rows], dtype=torch.float64)
    rho_m, rho_l = float(spearman(mir, acc)), float(spearman(loss, acc))
    m = res.metrics
    for got, want in ((m["rho_mir_accuracy"], rho_m), (m["rho_loss_accuracy"], rho_l)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    assert res.verdict == verdict_from_correlations(rho_m, rho_l)
    for r in rows:
        assert math.log10(sum(r["per_layer_fd"])) == pytest.approx(r["mir"])
        assert 0.0 <= r["accuracy"] <= 1.0 and r["pretrain_loss"] > 0
    # scale 0 trains nothing before MIR; the MoCa checkpoint is compared at equal data
    assert m["MoCa MIR change @8"] == pytest.approx(rows[2]["mir"] - rows[1]["mir"])
    assert m["checkpoints"] == 3
    assert "rho_mir_accuracy (scale > 0)" not in m  # needs 3 pre-trained checkpoints


def test_runs_are_seeded():
    budget = MirBudget(**{**TINY.__dict__, "checkpoints": TINY.checkpoints[:2]})
    a = run_mir_experiment(budget, seed=3)
    b = run_mir_experiment(budget, seed=3)
    assert [(r.mir, r.pretrain_loss, r.accuracy) for r in a] == [
        (r.mir, r.pretrain_loss, r.accuracy) for r in b
    ]


@pytest.mark.parametrize(
    ("rho_mir", "rho_loss", "verdict"),
    [
        (-0.9, -0.5, "reproduced"),
        (-0.6, 0.5, "reproduced"),
        (-0.6, float("nan"), "reproduced"),
        (0.3, -0.1, "not reproduced"),
        (0.0, 0.0, "not reproduced"),
        (-0.3, -0.9, "not reproduced"),
        (-0.5, -0.6, "inconclusive"),
        (-0.5, 0.5, "inconclusive"),
        (float("nan"), -0.9, "inconclusive"),
    ],
)
def test_verdict_rule(rho_mir, rho_loss, verdict):
    assert verdict_from_correlations(rho_mir, rho_loss) == verdict


def test_budgets_and_registration():
    from paperbricks.core_kernels.plugins import discover

    assert len(QUICK_BUDGET.checkpoints) == 5 and len(FULL_BUDGET.checkpoints) == 10
    assert [n for _, n in FULL_BUDGET.checkpoints].count(0) == 1  # no duplicate untrained model
    plugin = discover("reproductions")["mir.predicts-sft"]
    assert plugin.load() is mir_predicts_sft
    with pytest.raises(ValueError, match="checkpoints"):
        MirBudget(checkpoints=((PretrainStrategy(), 0),))
    with pytest.raises(ValueError, match="checkpoints\\[1\\]"):
        MirBudget(checkpoints=((PretrainStrategy(), 0), ("projector", 4)))
    with pytest.raises(ValueError, match="sft_steps"):
        MirBudget(checkpoints=TINY.checkpoints, sft_steps=0)
