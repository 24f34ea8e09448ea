"""`paperbricks mlpkan ...`: info, list-equations, train-function, train-vision, bench; the
package's version, lean import and public surface."""

import importlib.metadata as md
import json

import pytest

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing import assert_lean_import


def test_version_matches_metadata():
    import paperbricks.mlpkan as pkg

    assert pkg.__version__ == md.version("paperbricks-mlpkan")


def test_import_is_lean():
    assert_lean_import("paperbricks.mlpkan")


def test_public_surface_resolves_including_lazy_model_names():
    import paperbricks.mlpkan as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    from paperbricks.mlpkan.models import MLPKANRegressor

    assert pkg.MLPKANRegressor is MLPKANRegressor
    with pytest.raises(AttributeError):
        pkg.does_not_exist  # noqa: B018


def test_info(capsys):
    assert main(["mlpkan", "info"]) == 0
    assert "arXiv:2410.03027" in capsys.readouterr().out


def test_list_equations_prints_every_equation(capsys):
    from paperbricks.mlpkan.data import EQUATIONS

    assert main(["mlpkan", "list-equations"]) == 0
    out = capsys.readouterr().out
    for name, eq in EQUATIONS.items():
        assert f"{name} " in out and eq.formula in out


def test_train_function_saves_a_model_that_reloads_to_the_same_rmse(tmp_path, capsys):
    from transformers import AutoModel

    from paperbricks.mlpkan.data import feynman_split
    from paperbricks.mlpkan.train import regression_rmse

    out = tmp_path / "fit"
    argv = ["mlpkan", "train-function", "--equation", "I.6.2", "--model", "mlp-kan",
            "--steps", "5", "--n-train", "32", "--n-test", "16", "--seed", "2",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["model"] == "mlp-kan" and metrics["steps"] == 5 and 0 <= metrics["kan_share"] <= 1
    )
    assert f"test RMSE {metrics['test_rmse']:.4g}" in printed
    assert (out / "model.safetensors").exists()

    model = AutoModel.from_pretrained(out)  # registered by paperbricks.mlpkan.models
    data = feynman_split("I.6.2", n_train=32, n_test=16, seed=2)
    mean, std = data.x_train.mean(0), data.x_train.std(0)
    ym, ys = float(data.y_train.mean()), float(data.y_train.std())
    got = regression_rmse(
        model, data.x_test, data.y_test, x_mean=mean, x_std=std, y_mean=ym, y_std=ys
    )
    assert got == pytest.approx(metrics["test_rmse"], rel=1e-5)

    assert main(argv) == 2  # a non-empty --out is refused without --force
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_train_function_rejects_bad_arguments(capsys):
    assert main(["mlpkan", "train-function", "--equation", "nope"]) == 2
    assert "--equation" in capsys.readouterr().err
    assert main(["mlpkan", "train-function", "--equation", "I.6.2", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mlpkan", "train-function", "--equation", "I.6.2", "--model", "cnn"])


def test_train_vision_on_shapes(tmp_path, capsys):
    out = tmp_path / "vit"
    argv = ["mlpkan", "train-vision", "--dataset", "shapes", "--model", "kan", "--steps", "3",
            "--n-train", "32", "--n-test", "16", "--hidden-size", "16", "--depth", "1",
            "--batch-size", "8", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "shapes" and metrics["model"] == "kan"
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in capsys.readouterr().out
    assert "kan_share" not in metrics  # only the mixture has a router


def test_bench_prints_the_rows_of_bench_run(monkeypatch, capsys):
    import paperbricks.mlpkan.bench as bench_mod
    from paperbricks.core_kernels.testing import BenchResult

    seen = {}

    def fake_run(*, quick, device):
        seen.update(quick=quick, device=device)
        return [BenchResult("fused", "eager", ms=1.0, baseline_ms=2.0, speedup=2.0, device="cpu")]

    monkeypatch.setattr(bench_mod, "run", fake_run)
    assert main(["mlpkan", "bench", "--device", "cpu"]) == 0
    assert seen == {"quick": True, "device": "cpu"}
    out = capsys.readouterr().out
    assert "fused" in out and "eager" in out
