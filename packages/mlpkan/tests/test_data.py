"""Feynman-style equations, the formula language, digits and procedural shapes."""

import math

import numpy as np
import pytest
import torch

from paperbricks.mlpkan.data import (
    EQUATIONS,
    QUICK_EQUATIONS,
    SHAPE_CLASSES,
    Equation,
    Variable,
    evaluate_formula,
    feynman,
    feynman_split,
    get_equation,
    list_equations,
    load_digits_split,
    shapes_split,
    synthetic_shapes,
)

# Independent numpy transcriptions (columns in the order of each equation's variables).
NUMPY = {
    "I.6.2a": lambda t: np.exp(-(t**2) / 2) / np.sqrt(2 * np.pi),
    "I.6.2": lambda t, s: np.exp(-((t / s) ** 2) / 2) / (np.sqrt(2 * np.pi) * s),
    "I.8.14": lambda x1, x2, y1, y2: np.hypot(x2 - x1, y2 - y1),
    "I.10.7": lambda m0, v, c: m0 / np.sqrt(1 - (v / c) ** 2),
    "I.12.11": lambda q, e, b, v, th: q * e + q * b * v * np.sin(th),
    "I.13.12": lambda m1, m2, r1, r2, g: g * m1 * m2 / r2 - g * m1 * m2 / r1,
    "I.18.4": lambda m1, m2, r1, r2: (m1 * r1 + m2 * r2) / (m1 + m2),
    "I.26.2": lambda n, th: np.arcsin(n * np.sin(th)),
    "I.29.16": lambda x1, x2, t1, t2: np.sqrt(x1**2 + x2**2 - 2 * x1 * x2 * np.cos(t1 - t2)),
    "I.37.4": lambda i1, i2, d: i1 + i2 + 2 * np.sqrt(i1 * i2) * np.cos(d),
    "I.41.16": lambda w, t, h, kb, c: (
        (h / (2 * np.pi)) * w**3 / (np.pi**2 * c**2 * np.expm1(h * w / (2 * np.pi * kb * t)))
    ),
    "I.50.26": lambda x1, w, t, a: x1 * np.cos(w * t) + a * x1 * np.cos(w * t) ** 2,
    "II.35.21": lambda n, m, b, kb, t: n * m * np.tanh(m * b / (kb * t)),
    "III.4.33": lambda h, w, kb, t: (h * w / (2 * np.pi)) / np.expm1(h * w / (2 * np.pi * kb * t)),
}


def test_registry_has_enough_equations_of_one_to_five_variables():
    eqs = list_equations()
    assert len(eqs) >= 10 and set(NUMPY) == set(EQUATIONS)
    assert {e.n_inputs for e in eqs} == {1, 2, 3, 4, 5}
    assert all(n in EQUATIONS for n in QUICK_EQUATIONS)
    assert get_equation("I.6.2") is EQUATIONS["I.6.2"]


@pytest.mark.parametrize("name", list(NUMPY))
def test_equations_match_an_independent_numpy_transcription(name):
    eq = get_equation(name)
    x, y = eq.sample(257, seed=3, dtype=torch.float64)
    ref = NUMPY[name](*x.numpy().T)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    for j, v in enumerate(eq.variables):  # inside the documented ranges
        assert v.low <= float(x[:, j].min()) and float(x[:, j].max()) <= v.high


def test_known_values():
    t = torch.zeros(1, 1, dtype=torch.float64)
    assert float(get_equation("I.6.2a").evaluate(t)) == pytest.approx(1 / math.sqrt(2 * math.pi))
    x = torch.tensor([[0.7, 1.0]], dtype=torch.float64)  # sigma = 1 is the standard density
    assert float(get_equation("I.6.2").evaluate(x)) == pytest.approx(
        float(get_equation("I.6.2a").evaluate(x[:, :1]))
    )
    # theta = 0: no magnetic force; r1 = r2: no potential change
    assert float(get_equation("I.12.11").evaluate(torch.tensor([[2.0, 3.0, 4.0, 5.0, 0.0]]))) == 6.0
    assert float(get_equation("I.13.12").evaluate(torch.tensor([[2.0, 3.0, 1.5, 1.5, 1.0]]))) == 0.0


def test_formula_language_evaluates_and_broadcasts():
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = evaluate_formula("-a ** 2 + sqrt(4) * pi / pi + tanh(0)", {"a": a})
    assert out.tolist() == [1.0, -2.0]
    assert evaluate_formula("2 * 3", {"a": a}).tolist() == [6.0, 6.0]  # broadcast to N


@pytest.mark.parametrize(
    "formula",
    [
        "__import__('os').system('true')",
        "a.real",
        "open('x')",
        "exp(a, 2)",
        "exp(x=a)",
        "a if a else a",
        "a < 1",
        "b + 1",
        "lambda: 1",
        "a // 2",
        "'text'",
        "a +",
        "",
    ],
)
def test_formula_language_rejects_everything_else(formula):
    with pytest.raises(ValueError, match="formula"):
        evaluate_formula(formula, {"a": torch.ones(2)})


def test_sampling_is_seeded_and_splits_are_stable():
    a = feynman("I.12.11", 64, seed=5)
    b = feynman("I.12.11", 64, seed=5)
    c = feynman("I.12.11", 64, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.float32 and a[0].shape == (64, 5) and a[1].shape == (64,)
    s1 = feynman_split("I.6.2", n_train=32, n_test=8, seed=2)
    s2 = feynman_split("I.6.2", n_train=32, n_test=100, seed=2)
    assert torch.equal(s1.x_train, s2.x_train) and torch.equal(s1.x_test, s2.x_test[:8])
    assert not torch.equal(s1.x_train[:8], s1.x_test)  # train and test are different draws
    g = torch.Generator().manual_seed(0)
    x1, _ = get_equation("I.6.2").sample(4, generator=g)
    x2, _ = get_equation("I.6.2").sample(4, generator=g)
    assert not torch.equal(x1, x2)  # the generator advances


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"equation: unknown 'I\.99'"):
        get_equation("I.99")
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        feynman("I.6.2", 0)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2\)"):
        get_equation("I.6.2").evaluate(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="floating-point"):
        get_equation("I.6.2").evaluate(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="low < high"):
        Variable("a", 2.0, 1.0)
    with pytest.raises(ValueError, match="duplicate"):
        Equation("e", "", "a", (Variable("a", 0, 1), Variable("a", 0, 1)))
    with pytest.raises(ValueError, match="unknown name 'b'"):
        Equation("e", "", "a + b", (Variable("a", 0, 1),))
    bad = Equation("e", "", "log(a)", (Variable("a", -1.0, 0.0),))
    with pytest.raises(ValueError, match="non-finite"):
        bad.sample(16, seed=0)


def test_digits_split_is_the_bundled_set():
    from sklearn.datasets import load_digits

    ref = load_digits()
    d = load_digits_split(seed=0)
    assert d.x_train.shape == (1348, 1, 8, 8) and d.x_test.shape == (449, 1, 8, 8)
    assert d.num_classes == 10 and d.image_size == 8 and d.x_train.dtype == torch.float32
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert float(x.min()) >= 0.0 and float(x.max()) == 1.0
    assert torch.equal(y.bincount(), torch.from_numpy(np.bincount(ref.target)))
    # the same images, reordered: compare sorted flattened rows
    got = np.sort(x.reshape(len(x), -1).numpy() * 16, axis=0)
    want = np.sort(ref.images.reshape(len(ref.images), -1), axis=0)
    np.testing.assert_array_equal(got, want)
    again, other = load_digits_split(seed=0), load_digits_split(seed=1)
    assert torch.equal(again.y_test, d.y_test) and not torch.equal(other.y_test, d.y_test)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.0)


def test_shapes_are_seeded_balanced_and_noise_is_additive():
    x, y = synthetic_shapes(80, size=12, seed=4, noise=0.0)
    assert x.shape == (80, 1, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.bincount().tolist() == [10] * len(SHAPE_CLASSES)
    for img in x[:, 0]:  # one brightness in [0.6, 1] on a black background, never empty
        vals = img.unique()
        assert len(vals) == 2 and vals[0] == 0 and 0.6 <= float(vals[1]) <= 1.0
    xn, yn = synthetic_shapes(80, size=12, seed=4, noise=0.1)
    assert torch.equal(y, yn)
    assert float((xn - x).std()) == pytest.approx(0.1, rel=0.05)
    assert not torch.equal(synthetic_shapes(80, size=12, seed=5)[1], y)
    d = shapes_split(n_train=16, n_test=8, size=16, seed=1)
    assert d.num_classes == 8 and d.x_test.shape == (8, 1, 16, 16)
    with pytest.raises(ValueError, match="size"):
        synthetic_shapes(4, size=4)
    with pytest.raises(ValueError, match="noise"):
        synthetic_shapes(4, noise=-1.0)


def test_shapes_classes_are_distinguishable_by_a_linear_classifier():
    """A data sanity check with an outside classifier (scikit-learn), far above chance (1/8)."""
    from sklearn.neighbors import KNeighborsClassifier

    d = shapes_split(n_train=800, n_test=200, seed=0)
    clf = KNeighborsClassifier(5).fit(d.x_train.flatten(1).numpy(), d.y_train.numpy())
    assert clf.score(d.x_test.flatten(1).numpy(), d.y_test.numpy()) > 0.5
