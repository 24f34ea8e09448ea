"""Training loops, evaluation, parameter-matched model families and the routing share."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from paperbricks.core_kernels.testing import requires_cuda
from paperbricks.mlpkan.data import (
    Equation,
    FunctionData,
    ImageData,
    Variable,
    feynman_split,
    shapes_split,
)
from paperbricks.mlpkan.train import (
    build_seeded,
    classification_accuracy,
    fit_classifier,
    fit_regressor,
    matched_regressor_configs,
    matched_vit_configs,
    model_output,
    regression_rmse,
    routing_share,
    seeded,
)

LINEAR = Equation(
    "lin", "a plane", "2 * a - 3 * b + 1", (Variable("a", 0, 4), Variable("b", -1, 1))
)


def _linear_data(n=128):
    x_tr, y_tr = LINEAR.sample(n, seed=0)
    x_te, y_te = LINEAR.sample(n, seed=1)
    return FunctionData(LINEAR, x_tr, y_tr, x_te, y_te)


class _Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x[:, :1] * 0 + self.p  # (B, 1)


def test_seeded_is_reproducible_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    with seeded(7):
        a = torch.randn(3)
    with seeded(7):
        b = torch.randn(3)
    assert torch.equal(a, b) and torch.equal(before, torch.random.get_rng_state())
    lin1 = build_seeded(lambda: nn.Linear(3, 2), 1)
    lin2 = build_seeded(lambda: nn.Linear(3, 2), 1)
    assert torch.equal(lin1.weight, lin2.weight)
    with pytest.raises(TypeError, match="seed"), seeded("0"):
        pass


def test_model_output_unpacks_every_supported_form():
    t = torch.ones(2, 1)

    @dataclass
    class Out:
        predictions: torch.Tensor
        aux_loss: torch.Tensor | None = None

    assert model_output(t) == (t, None)
    assert model_output((t, 5))[0] is t
    pred, aux = model_output(Out(t, torch.tensor(2.0)))
    assert pred is t and float(aux) == 2.0
    with pytest.raises(TypeError, match="model output"):
        model_output({"x": t})


def test_regression_rmse_against_hand_computed_values():
    x = torch.randn(50, 2, dtype=torch.float64)
    y = torch.randn(50, dtype=torch.float64) * 3 + 1
    zero = _Zero()
    assert regression_rmse(zero, x, y) == pytest.approx(float(y.square().mean().sqrt()))
    # a zero prediction of the standardised target is the mean: RMSE = population std
    got = regression_rmse(zero, x, y, y_mean=float(y.mean()), y_std=3.0)
    assert got == pytest.approx(float(y.std(unbiased=False)))
    zero.train()
    regression_rmse(zero, x, y)
    assert zero.training  # mode restored
    with pytest.raises(ValueError, match="x, y"):
        regression_rmse(zero, x, y[:3])


def test_fit_regressor_solves_a_linear_equation_with_a_linear_model():
    data = _linear_data()
    net = build_seeded(lambda: nn.Linear(2, 1), 0)
    res = fit_regressor(net, data, steps=400, lr=0.05, seed=0)
    assert res.test_nrmse < 1e-3 and res.train_rmse < 5e-3
    assert res.test_rmse == pytest.approx(res.test_nrmse * float(data.y_train.std()), rel=1e-6)
    assert len(res.losses) == 400 and res.losses[-1] < res.losses[0]
    # standardisation is returned and the model expects it
    xs = (data.x_test - res.x_mean) / res.x_std
    with torch.no_grad():
        pred = net(xs).squeeze(1).double() * res.y_std + res.y_mean
    rmse = float((pred - data.y_test.double()).square().mean().sqrt())
    assert rmse == pytest.approx(res.test_rmse, rel=1e-6, abs=1e-12)


def test_fit_regressor_is_seeded_and_adds_the_aux_loss():
    data = feynman_split("I.6.2", n_train=64, n_test=32, seed=0)
    before = torch.random.get_rng_state()
    runs = []
    for _ in range(2):
        net = build_seeded(
            lambda: nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.2), nn.Linear(8, 1)), 3
        )
        runs.append(fit_regressor(net, data, steps=20, batch_size=16, seed=3).losses)
    assert runs[0] == runs[1] and torch.equal(before, torch.random.get_rng_state())

    @dataclass
    class Out:
        predictions: torch.Tensor
        aux_loss: torch.Tensor

    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)
            self.q = nn.Parameter(torch.tensor(1.0))  # only the aux loss depends on q

        def forward(self, x):
            return Out(self.lin(x), 10 * self.q.square())

    m = WithAux()
    fit_regressor(m, data, steps=30, lr=0.05, seed=0)
    assert abs(float(m.q.detach())) < 0.5


def test_fit_regressor_rejects_bad_arguments():
    data = _linear_data(8)
    net = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="steps"):
        fit_regressor(net, data, steps=0)
    with pytest.raises(ValueError, match="lr"):
        fit_regressor(net, data, lr=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        fit_regressor(net, data, batch_size=0)
    with pytest.raises(TypeError, match="FunctionData"):
        fit_regressor(net, (data.x_train, data.y_train))


def test_classification_accuracy_and_fit_classifier():
    x = torch.randn(40, 1, 2, 2)
    y = (x.flatten(1).sum(1) > 0).long()
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():  # the exact rule: logit_1 - logit_0 = sum of pixels
        net[1].weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        net[1].bias.zero_()
    assert classification_accuracy(net, x, y, batch_size=7) == 1.0
    assert classification_accuracy(net, x, 1 - y) == 0.0
    with pytest.raises(ValueError, match="x, y"):
        classification_accuracy(net, x, y[:3])

    data = ImageData("toy", x[:30], y[:30], x[30:], y[30:], ("neg", "pos"))
    fresh = build_seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 0)
    res = fit_classifier(fresh, data, steps=150, batch_size=16, lr=0.05, seed=0)
    assert res.train_accuracy >= 0.9 and len(res.losses) == 150
    with pytest.raises(ValueError, match="batch_size"):
        fit_classifier(fresh, data, batch_size=0)


def test_matched_families_have_equal_parameter_counts():
    from paperbricks.mlpkan.models import MLPKANForImageClassification, MLPKANRegressor
    from paperbricks.mlpkan.models.configuration_mlpkan import count_parameters

    cfgs = matched_regressor_configs(3, hidden_size=8)
    assert {k: c.ffn for k, c in cfgs.items()} == {"mlp-kan": "mlp-kan", "mlp": "mlp", "kan": "kan"}
    counts = {k: count_parameters(c) for k, c in cfgs.items()}
    for k, c in cfgs.items():
        model = MLPKANRegressor(c)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == counts[k]
    ref = counts["mlp-kan"]
    assert abs(counts["mlp"] - ref) <= 2 * 8 + 1  # the count moves by 2d + 1 per MLP width
    assert abs(counts["kan"] - ref) / ref < 0.02
    vit = matched_vit_configs(image_size=8, num_labels=10, hidden_size=16, depth=1)
    assert vit["mlp-kan"].patch_size == 2 and vit["mlp-kan"].num_channels == 1
    vcounts = {k: count_parameters(c) for k, c in vit.items()}
    assert max(vcounts.values()) - min(vcounts.values()) < 0.02 * vcounts["mlp-kan"]
    m = MLPKANForImageClassification(vit["kan"])
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == vcounts["kan"]


def test_routing_share_equals_router_stats_of_the_logits():
    from paperbricks.mlpkan.models import MLPKANRegressor
    from paperbricks.mlpkan.moe import router_stats

    cfg = matched_regressor_configs(2, hidden_size=8)["mlp-kan"]
    cfg2 = type(cfg)(**{**cfg.to_dict(), "num_layers": 2})
    model = build_seeded(lambda: MLPKANRegressor(cfg2), 0).train()
    x = torch.randn(37, 2)
    shares = routing_share(model, x, batch_size=10, per_layer=True)
    assert model.training and len(shares) == 2
    model.eval()
    logits = model(x).router_logits
    want = [float(router_stats(z, 4, 4, top_k=2)["kan_share"]) for z in logits]
    assert shares == pytest.approx(want, abs=1e-6)
    assert routing_share(model, x) == pytest.approx(sum(want) / 2, abs=1e-6)
    dense = MLPKANRegressor(matched_regressor_configs(2)["mlp"])
    with pytest.raises(ValueError, match="MLPKANMoE"):
        routing_share(dense, x)


def test_tiny_end_to_end_fits_of_the_real_models():
    """One MLP-KAN regressor and one MLP-KAN ViT: finite, improving losses (mechanics only)."""
    from paperbricks.mlpkan.models import MLPKANForImageClassification, MLPKANRegressor

    data = feynman_split("I.12.11", n_train=64, n_test=32, seed=0)
    cfg = matched_regressor_configs(5, hidden_size=8)["mlp-kan"]
    res = fit_regressor(build_seeded(lambda: MLPKANRegressor(cfg), 0), data, steps=40, seed=0)
    assert res.losses[-1] < res.losses[0] and torch.isfinite(torch.tensor(res.test_rmse))
    img = shapes_split(n_train=64, n_test=16, size=8, seed=0)
    vcfg = matched_vit_configs(image_size=8, num_labels=8, hidden_size=16, depth=1)["mlp-kan"]
    model = build_seeded(lambda: MLPKANForImageClassification(vcfg), 0)
    r = fit_classifier(model, img, steps=10, batch_size=16, seed=0)
    assert 0.0 <= r.test_accuracy <= 1.0 and all(torch.isfinite(torch.tensor(r.losses)))


@requires_cuda
def test_gpu_training_and_evaluation_on_cuda():
    """Models on CUDA: the loops move batches to the model's device, the metrics come back to the
    CPU, training is seeded on the GPU too, and the CUDA metric equals the CPU evaluation of the
    same weights."""
    import copy

    from paperbricks.mlpkan.models import MLPKANForImageClassification, MLPKANRegressor

    data = feynman_split("I.12.11", n_train=256, n_test=128, seed=0)
    cfg = matched_regressor_configs(5, hidden_size=8)["mlp-kan"]
    runs = []
    for _ in range(2):
        model = build_seeded(lambda: MLPKANRegressor(cfg), 0).cuda()
        runs.append(fit_regressor(model, data, steps=30, batch_size=64, seed=0))
    res = runs[-1]
    assert res.losses[-1] < res.losses[0]
    # index_add (unpermute) may use atomics on CUDA: equal up to float reassociation
    assert runs[0].losses == pytest.approx(runs[1].losses, rel=1e-2)
    cpu = copy.deepcopy(model).cpu()
    kw = dict(x_mean=res.x_mean, x_std=res.x_std, y_mean=res.y_mean, y_std=res.y_std)
    assert regression_rmse(cpu, data.x_test, data.y_test, **kw) == pytest.approx(
        res.test_rmse, rel=1e-3
    )
    xs = (data.x_test - res.x_mean) / res.x_std
    assert 0.0 <= routing_share(model, xs) <= 1.0

    img = shapes_split(n_train=128, n_test=64, size=16, seed=0)
    vcfg = matched_vit_configs(image_size=16, num_labels=8, patch_size=4)["mlp-kan"]
    vit = build_seeded(lambda: MLPKANForImageClassification(vcfg), 0).cuda()
    r = fit_classifier(vit, img, steps=20, batch_size=32, seed=0)
    assert all(torch.isfinite(torch.tensor(r.losses)))
    acc_cpu = classification_accuracy(copy.deepcopy(vit).cpu(), img.x_test, img.y_test)
    assert abs(acc_cpu - r.test_accuracy) <= 2 / 64  # near-tie logits may flip on another device
