"""The training helper: lowers the loss, accumulates gradients like one big mean, schedules."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from paperbricks.aria.losses import AuxLossAutoScaler
from paperbricks.aria.models.configuration_aria import AriaTextConfig
from paperbricks.aria.models.modeling_aria_text import AriaTextForCausalLM
from paperbricks.aria.train import (
    StepLog,
    TrainConfig,
    accumulate_gradients,
    lr_multiplier,
    make_optimizer,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw) -> AriaTextForCausalLM:
    cfg = dict(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        moe_num_experts=4,
        moe_topk=2,
        moe_num_shared_experts=1,
        router_aux_loss_coef=0.1,
        router_z_loss_coef=0.01,
    )
    cfg.update(kw)
    torch.manual_seed(0)
    return AriaTextForCausalLM(AriaTextConfig(**cfg))


def _batch(seed: int, b: int = 2, t: int = 12) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 48, (b, t), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids}


def test_training_lowers_loss_and_logs_aux_separately(seeded):
    model = _model()
    logs = train(model, [_batch(0)], TrainConfig(steps=12, lr=1e-2, progress=False))
    assert len(logs) == 12 and all(isinstance(x, StepLog) for x in logs)
    assert logs[-1].loss < 0.8 * logs[0].loss
    assert all(x.aux_loss > 0 and x.z_loss > 0 for x in logs)
    # The logged loss is the LM loss: it equals the model's loss in autoscaler mode.
    model.eval()
    with torch.no_grad():
        first = _model()(**_batch(0))
    assert logs[0].loss == pytest.approx(float(first.loss), rel=1e-5)


@pytest.mark.parametrize("mode", ["autoscaler", "explicit"])
def test_grad_accumulation_equals_mean_of_explicit_losses(seeded, mode):
    """Accumulated grads = ∇ mean_i (LM_i + aux_i + z_i), whatever the aux mode."""
    micro = [_batch(1), _batch(2)]
    model = _model(aux_loss_mode=mode).train()
    stats = accumulate_gradients(model, micro)
    ref = _model(aux_loss_mode="explicit").train()
    total, lm = 0.0, 0.0
    for b in micro:
        out = ref(**b)
        total = total + out.loss / 2
        lm += float((out.loss - out.aux_loss - out.z_loss).detach()) / 2
    total.backward()
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert stats["loss"] == pytest.approx(lm, rel=1e-5)
    assert AuxLossAutoScaler.main_loss_backward_scale == 1.0  # restored


def test_train_with_accumulation_matches_manual_adamw_steps(seeded):
    micro = [_batch(3), _batch(4)]
    cfg = TrainConfig(steps=2, lr=1e-2, grad_accum=2, max_grad_norm=None, progress=False)
    a = _model()
    b = copy.deepcopy(a)
    train(a, micro, cfg)
    opt = make_optimizer(b, cfg)
    b.train()
    for step in range(2):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_multiplier(step, cfg)
        opt.zero_grad()
        accumulate_gradients(b, micro)
        opt.step()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_schedule_values():
    cfg = TrainConfig(steps=11, warmup_ratio=0.1, min_lr_ratio=0.1)
    assert lr_multiplier(0, cfg) == pytest.approx(0.5)  # ceil(1.1) = 2 warmup steps
    assert lr_multiplier(1, cfg) == pytest.approx(1.0)
    assert lr_multiplier(2, cfg) == pytest.approx(1.0)
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 9))
    assert lr_multiplier(6, cfg) == pytest.approx(mid)
    assert lr_multiplier(0, TrainConfig(schedule="constant")) == 1.0


def test_progress_false_prints_nothing(seeded, capsys):
    train(_model(), [_batch(0)], TrainConfig(steps=1, progress=False))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_iterator_that_runs_out_stops_early(seeded):
    logs = train(
        _model(), iter([_batch(0)] * 3), TrainConfig(steps=5, grad_accum=2, progress=False)
    )
    assert len(logs) == 1


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="batches"):
        train(_model(), [], TrainConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="labels"):
        accumulate_gradients(_model(), [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}])
