"""Small, seeded training loops for the reproductions and the CLI (arXiv 2410.03027, §4).

- :func:`fit_regressor`: function learning on one :class:`~paperbricks.mlpkan.data.FunctionData`.
  Inputs and targets are standardised with the *training* mean and standard deviation, the model
  is trained with AdamW on the mean squared error of the standardised target (full batch by
  default, as the KAN paper trains its Feynman fits), and the result reports the test RMSE both
  in the target's own units and divided by the training target's standard deviation
  (``test_nrmse``), which makes equations with different scales comparable.
- :func:`fit_classifier`: image classification on an :class:`~paperbricks.mlpkan.data.ImageData`
  with mini-batches and cross-entropy; reports test accuracy.

Both add the model's auxiliary router loss when its output carries one (``aux_loss``), use a
linear warm-up then cosine decay of the learning rate, and run inside
``torch.random.fork_rng`` seeded with ``seed`` so dropout, drop-path and batch order are
reproducible without touching the caller's global RNG state. A tqdm bar shows the loss unless
``progress=False``.

The loops accept any ``nn.Module`` whose forward takes the input tensor and returns a tensor, a
tuple (first element used) or a ``ModelOutput``-like object with ``logits``, ``predictions`` or
``prediction``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from paperbricks.core_kernels.validate import check_int

from .data import FunctionData, ImageData

__all__ = [
    "ClassificationResult",
    "RegressionResult",
    "build_seeded",
    "classification_accuracy",
    "fit_classifier",
    "fit_regressor",
    "matched_regressor_configs",
    "matched_vit_configs",
    "model_output",
    "regression_rmse",
    "routing_share",
    "seeded",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's RNG seeded by ``seed``; restore the caller's state after.

    Used to build models (whose initialisers draw from the global RNG) and to train them
    reproducibly without changing anything outside the block.

    Examples:
        >>> with seeded(3):
        ...     a = torch.randn(2)
        >>> with seeded(3):
        ...     b = torch.randn(2)
        >>> bool((a == b).all())
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    # The CUDA generator is forked (and seeded by manual_seed) only when CUDA is already in use,
    # so that CPU-only callers never initialise it.
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def model_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(prediction, aux_loss or None)`` from whatever a model's forward returned.

    Accepts a tensor, a tuple/list (first element; an ``aux_loss`` is not looked for), or an
    object with ``logits``, ``predictions`` or ``prediction`` and optionally ``aux_loss``.
    """
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0], None
    for name in ("logits", "predictions", "prediction"):
        pred = getattr(out, name, None)
        if isinstance(pred, torch.Tensor):
            aux = getattr(out, "aux_loss", None)
            return pred, aux if isinstance(aux, torch.Tensor) else None
    raise TypeError(
        "model output: expected a tensor, a tuple, or an object with logits/predictions, "
        f"got {type(out).__name__}"
    )


def _check_lr(lr: Any) -> None:
    if not isinstance(lr, int | float) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")


def _schedule(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine to 5 %."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batched(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = _device_of(model)
    return torch.cat(
        [
            model_output(model(x[i : i + batch_size].to(dev)))[0]
            for i in range(0, len(x), batch_size)
        ]
    )


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc=desc, leave=False)


@dataclass
class RegressionResult:
    """What :func:`fit_regressor` measured.

    Attributes:
        test_rmse: test RMSE in the target's units.
        test_nrmse: ``test_rmse / std(y_train)`` (comparable across equations).
        train_rmse: training RMSE in the target's units (after training).
        losses: training loss (MSE of the standardised target, without aux loss) per step.
        seconds: wall time of the training loop.
        x_mean, x_std: ``(d,)`` input standardisation the model was trained with (the model
            expects ``(x - x_mean) / x_std``).
        y_mean, y_std: the model predicts ``(y - y_mean) / y_std``.
    """

    test_rmse: float
    test_nrmse: float
    train_rmse: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    x_mean: torch.Tensor | None = None
    x_std: torch.Tensor | None = None
    y_mean: float = 0.0
    y_std: float = 1.0


@torch.no_grad()
def regression_rmse(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    x_mean: torch.Tensor | None = None,
    x_std: torch.Tensor | None = None,
    y_mean: float = 0.0,
    y_std: float = 1.0,
    batch_size: int = 4096,
) -> float:
    """RMSE of ``model`` on ``(x, y)`` in ``y``'s units.

    The model sees ``(x - x_mean) / x_std`` (when given) and its prediction is mapped back as
    ``pred * y_std + y_mean``. The model is put in eval mode and restored afterwards.

    Args:
        model: maps ``(N, d)`` to ``(N,)`` or ``(N, 1)``.
        x: ``(N, d)`` inputs; y: ``(N,)`` targets.
        x_mean, x_std: ``(d,)`` standardisation of the inputs (default none).
        y_mean, y_std: the model predicts ``(y - y_mean) / y_std``. Default 0 and 1.
        batch_size: evaluation batch. Default 4096.
    """
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"x, y: expected shapes (N, d) and (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    was = model.training
    model.eval()
    try:
        xs = x if x_mean is None else (x - x_mean) / x_std
        pred = _batched(model, xs, batch_size).reshape(-1).double().cpu()
    finally:
        model.train(was)
    if pred.shape != y.shape:
        raise ValueError(f"model: expected one prediction per row ({len(y)}), got {pred.numel()}")
    err = pred * y_std + y_mean - y.double().cpu()
    return float(err.square().mean().sqrt())


def fit_regressor(
    model: nn.Module,
    data: FunctionData,
    *,
    steps: int = 1000,
    lr: float = 1e-2,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    warmup: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> RegressionResult:
    """Train ``model`` in place to fit ``data``'s equation; return train/test RMSE.

    Args:
        model: maps standardised ``(B, d)`` inputs to ``(B,)`` or ``(B, 1)`` predictions of the
            standardised target (or an output object, see :func:`model_output`).
        data: the train/test split.
        steps: optimiser steps (>= 1). Default 1000.
        lr: peak AdamW learning rate. Default 1e-2.
        batch_size: rows per step; None (default) means full batch.
        weight_decay: AdamW weight decay. Default 0.
        warmup: linear warm-up steps (clipped to ``steps``). Default 20.
        seed: seeds the batch order and any randomness inside the model. Default 0.
        progress: show a tqdm bar. Default False.

    Examples:
        >>> from paperbricks.mlpkan.data import feynman_split
        >>> d = feynman_split("I.6.2a", n_train=64, n_test=64, seed=0)
        >>> net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        >>> r = fit_regressor(net, d, steps=50, seed=0)
        >>> r.test_nrmse < 1.0
        True
    """
    if not isinstance(data, FunctionData):
        raise TypeError(f"data: expected FunctionData, got {type(data).__name__}")
    check_int("steps", steps, 1)
    _check_lr(lr)
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    dev = _device_of(model)
    x_mean, x_std = data.x_train.mean(0), data.x_train.std(0).clamp_min(1e-12)
    y_mean, y_std = float(data.y_train.mean()), max(float(data.y_train.std()), 1e-12)
    xs = ((data.x_train - x_mean) / x_std).to(dev)  # (N, d)
    ys = ((data.y_train - y_mean) / y_std).to(dev)  # (N,)
    n = len(xs)
    bs = n if batch_size is None else min(batch_size, n)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    warm = min(warmup, steps)
    losses: list[float] = []
    t0 = time.perf_counter()
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        model.train()
        bar = _bar(steps, progress, "fit_regressor")
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr * _schedule(step, steps, warm)
            idx = None if bs == n else torch.randint(n, (bs,), generator=gen).to(dev)
            xb, yb = (xs, ys) if idx is None else (xs[idx], ys[idx])
            pred, aux = model_output(model(xb))
            loss = (pred.reshape(-1).float() - yb.float()).square().mean()
            total = loss if aux is None else loss + aux
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
        bar.close()
    seconds = time.perf_counter() - t0
    kw = dict(x_mean=x_mean, x_std=x_std, y_mean=y_mean, y_std=y_std)
    test = regression_rmse(model, data.x_test, data.y_test, **kw)
    train = regression_rmse(model, data.x_train, data.y_train, **kw)
    logger.info(
        "%s: train RMSE %.4g, test RMSE %.4g (NRMSE %.4g) after %d steps in %.1f s",
        data.equation.name, train, test, test / y_std, steps, seconds,
    )  # fmt: skip
    return RegressionResult(test, test / y_std, train, losses, seconds, **kw)


@dataclass
class ClassificationResult:
    """What :func:`fit_classifier` measured.

    Attributes:
        test_accuracy: share of test images classified correctly.
        train_accuracy: the same on the training images (after training).
        losses: cross-entropy (without aux loss) per step.
        seconds: wall time of the training loop.
    """

    test_accuracy: float
    train_accuracy: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def classification_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512
) -> float:
    """Share of rows of ``x`` whose argmax logit equals ``y`` (model in eval mode, restored).

    Args:
        model: maps ``(B, ...)`` images to ``(B, C)`` logits (or an output with ``logits``).
        x: ``(N, ...)`` inputs; y: ``(N,)`` int64 labels.
        batch_size: evaluation batch. Default 512.
    """
    if y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"x, y: expected N >= 1 rows and (N,) labels, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    was = model.training
    model.eval()
    try:
        logits = _batched(model, x, batch_size)
    finally:
        model.train(was)
    if logits.ndim != 2 or len(logits) != len(y):
        raise ValueError(f"model: expected (N, C) logits, got {tuple(logits.shape)}")
    return float((logits.argmax(-1).cpu() == y.cpu()).double().mean())


def fit_classifier(
    model: nn.Module,
    data: ImageData,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> ClassificationResult:
    """Train ``model`` in place on ``data``'s training images; return test accuracy.

    Batches are drawn with replacement from the training set by a generator seeded with
    ``seed`` (so the number of steps, not epochs, is the budget).

    Args:
        model: maps ``(B, 1, H, W)`` images to ``(B, C)`` logits (or an output with ``logits``).
        data: the train/test split.
        steps: optimiser steps (>= 1). Default 300.
        batch_size: images per step (>= 1). Default 64.
        lr: peak AdamW learning rate. Default 3e-3.
        weight_decay: AdamW weight decay. Default 0.05 (the official DeiT recipe's).
        warmup: linear warm-up steps (clipped to ``steps``). Default 20.
        seed: seeds batch order and any randomness inside the model. Default 0.
        progress: show a tqdm bar. Default False.

    Examples:
        >>> from paperbricks.mlpkan.data import shapes_split
        >>> d = shapes_split(n_train=64, n_test=32, seed=0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(256, 8))
        >>> r = fit_classifier(net, d, steps=20, seed=0)
        >>> 0.0 <= r.test_accuracy <= 1.0
        True
    """
    if not isinstance(data, ImageData):
        raise TypeError(f"data: expected ImageData, got {type(data).__name__}")
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    _check_lr(lr)
    dev = _device_of(model)
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    warm = min(warmup, steps)
    losses: list[float] = []
    t0 = time.perf_counter()
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        model.train()
        bar = _bar(steps, progress, "fit_classifier")
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr * _schedule(step, steps, warm)
            idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen).to(dev)
            logits, aux = model_output(model(x[idx]))
            loss = nn.functional.cross_entropy(logits.float(), y[idx])
            total = loss if aux is None else loss + aux
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
    seconds = time.perf_counter() - t0
    test = classification_accuracy(model, data.x_test, data.y_test)
    train = classification_accuracy(model, data.x_train, data.y_train)
    logger.info(
        "%s: train accuracy %.3f, test accuracy %.3f after %d steps in %.1f s",
        data.name, train, test, steps, seconds,
    )  # fmt: skip
    return ClassificationResult(test, train, losses, seconds)


def build_seeded(factory: Callable[[], T], seed: int) -> T:
    """``factory()`` called under :func:`seeded` (reproducible initialisation)."""
    with seeded(seed):
        return factory()


# --------------------------------------------------------------------------------------------
# Parameter-matched model families and routing statistics
# --------------------------------------------------------------------------------------------


def matched_regressor_configs(
    n_inputs: int,
    *,
    hidden_size: int = 8,
    num_layers: int = 1,
    num_mlp_experts: int = 4,
    num_kan_experts: int = 4,
    top_k: int = 2,
    router: str = "topk",
    impl: str = "auto",
) -> dict[str, Any]:
    """Regressor configs ``{"mlp-kan", "mlp", "kan"}`` with (nearly) equal parameter counts.

    The MLP-KAN config follows the official expert layout (4 MLP experts of hidden width d,
    4 FasterKAN experts ``[d, d/2, d]``, top-2); the dense MLP and dense KAN baselines get the
    hidden width that matches its parameter count
    (:func:`paperbricks.mlpkan.models.configuration_mlpkan.matched_config`). With d = 8 and
    4 + 4 experts that is about 3k parameters, the 2–5k the spec suggests.

    Args:
        n_inputs: number of equation variables.
        hidden_size: token width d. Default 8.
        num_layers: residual feed-forward layers. Default 1.
        num_mlp_experts, num_kan_experts, top_k, router: the mixture. Defaults 4, 4, 2,
            ``"topk"``.
        impl: KAN / grouped-GEMM backend. Default ``"auto"``.

    Examples:
        >>> from paperbricks.mlpkan.models.configuration_mlpkan import count_parameters
        >>> cfgs = matched_regressor_configs(2)
        >>> sorted(cfgs), count_parameters(cfgs["mlp-kan"])
        (['kan', 'mlp', 'mlp-kan'], 2893)
    """
    from .models.configuration_mlpkan import MLPKANRegressorConfig, matched_config

    base = MLPKANRegressorConfig(
        n_inputs=n_inputs,
        hidden_size=hidden_size,
        num_layers=num_layers,
        ffn="mlp-kan",
        num_mlp_experts=num_mlp_experts,
        num_kan_experts=num_kan_experts,
        top_k=top_k,
        mlp_expert_hidden=hidden_size,
        kan_hidden=max(1, hidden_size // 2),
        router=router,
        impl=impl,
    )
    return {
        "mlp-kan": base,
        "mlp": matched_config(base, "mlp"),
        "kan": matched_config(base, "kan"),
    }


def matched_vit_configs(
    *,
    image_size: int,
    num_labels: int,
    patch_size: int | None = None,
    num_channels: int = 1,
    hidden_size: int = 32,
    depth: int = 2,
    num_heads: int = 2,
    num_mlp_experts: int = 4,
    num_kan_experts: int = 4,
    top_k: int = 2,
    router: str = "topk",
    impl: str = "auto",
) -> dict[str, Any]:
    """Tiny ViT configs ``{"mlp-kan", "mlp", "kan"}`` with (nearly) equal parameter counts.

    MLP-KAN FFN: 4 MLP experts of hidden width d and 4 FasterKAN experts ``[d, d/2, d]``, top-2
    (the official layout, scaled down); the dense-MLP and dense-KAN ViTs get the hidden width
    that matches the MLP-KAN model's total count.

    Args:
        image_size: side of the (square) images.
        num_labels: classes.
        patch_size: patch side; default ``image_size // 4`` (a 4 × 4 grid of patches).
        num_channels: image channels. Default 1.
        hidden_size, depth, num_heads: ViT width, blocks and heads. Defaults 32, 2, 2.
        num_mlp_experts, num_kan_experts, top_k, router: the mixture. Defaults 4, 4, 2,
            ``"topk"``.
        impl: KAN / grouped-GEMM backend. Default ``"auto"``.
    """
    from .models.configuration_mlpkan import MLPKANConfig, matched_config

    base = MLPKANConfig(
        image_size=image_size,
        patch_size=patch_size if patch_size is not None else max(1, image_size // 4),
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        ffn="mlp-kan",
        num_mlp_experts=num_mlp_experts,
        num_kan_experts=num_kan_experts,
        top_k=top_k,
        mlp_expert_hidden=hidden_size,
        kan_hidden=max(1, hidden_size // 2),
        router=router,
        impl=impl,
        num_labels=num_labels,
    )
    return {
        "mlp-kan": base,
        "mlp": matched_config(base, "mlp"),
        "kan": matched_config(base, "kan"),
    }


@torch.no_grad()
def routing_share(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024, per_layer: bool = False
) -> float | list[float]:
    """Share of the routing mass that ``model``'s MLP-KAN layers send to KAN experts on ``x``.

    Forward hooks collect the router logits of every
    :class:`~paperbricks.mlpkan.moe.MLPKANMoE` inside ``model`` while it runs on ``x`` (eval
    mode, restored afterwards); :func:`paperbricks.mlpkan.moe.router_stats` turns them into the
    mean routing mass on KAN experts (top-k: the renormalised top-k weights; soft: the combine
    weights), over all tokens the layer saw.

    Args:
        model: a model containing at least one ``MLPKANMoE``.
        x: a batch of inputs as the model takes them (standardised for regressors).
        batch_size: evaluation batch. Default 1024.
        per_layer: return one share per MoE layer instead of their mean. Default False.

    Returns:
        the mean KAN share in [0, 1] (or the list per layer, in module order).
    """
    from .moe import MLPKANMoE, router_stats

    layers = [m for m in model.modules() if isinstance(m, MLPKANMoE)]
    if not layers:
        raise ValueError("model: expected at least one MLPKANMoE layer (ffn='mlp-kan'), found none")
    store: dict[int, list[torch.Tensor]] = {id(m): [] for m in layers}

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        store[id(mod)].append(out[1].detach().float().cpu())

    handles = [m.register_forward_hook(hook) for m in layers]
    was = model.training
    model.eval()
    try:
        _batched(model, x, batch_size)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    shares = []
    for m in layers:
        stats = router_stats(
            torch.cat(store[id(m)]),
            m.num_mlp_experts,
            m.num_kan_experts,
            router=m.router,
            top_k=m.top_k,
            slots_per_expert=m.slots_per_expert,
        )
        shares.append(float(stats["kan_share"]))
    return shares if per_layer else sum(shares) / len(shares)
