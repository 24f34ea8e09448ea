"""Data for the two kinds of task MLP-KAN is meant to serve (arXiv 2410.03027, §4).

Function learning ("the KAN side"): Feynman-style equation datasets. The official repository has
no function-learning code, so the equation list, the input ranges and the sampling are ours. Each
equation is *data*: a name (its number in the Feynman Lectures, as used by AI Feynman and the KAN
paper), its variables with sampling ranges, and a formula string in a small arithmetic language
(``+ - * / **``, unary minus, numbers, ``pi``, and the functions ``exp log sqrt sin cos tan tanh
arcsin arccos``). The string is parsed with :mod:`ast` and walked node by node on torch tensors
(:func:`evaluate_formula`); nothing is passed to ``eval``. Inputs are drawn uniformly from the
documented ranges with a seeded ``torch.Generator`` in float64, and the formula is evaluated in
float64 before the cast to the requested dtype.

Representation learning ("the MLP side"): image classification on

- scikit-learn's bundled handwritten digits (:func:`load_digits_split`, 1797 images of 8×8
  pixels, 10 classes; ``sklearn.datasets.load_digits`` reads a file inside the wheel, nothing
  downloads), scaled from 0..16 to [0, 1];
- a procedural shapes set (:func:`synthetic_shapes`): 8 classes of shapes (disc, square,
  triangle, plus-cross, ring, frame, diamond, x-cross) drawn in numpy with a random centre, size,
  stroke width and brightness, plus Gaussian pixel noise, fully vectorised over the batch.

Images are returned as ``(N, 1, H, W)`` float32 tensors in [0, 1] (before noise for shapes, which
is not clipped), labels as ``(N,)`` int64.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "EQUATIONS",
    "QUICK_EQUATIONS",
    "SHAPE_CLASSES",
    "Equation",
    "FunctionData",
    "ImageData",
    "Variable",
    "evaluate_formula",
    "feynman",
    "feynman_split",
    "get_equation",
    "list_equations",
    "load_digits_split",
    "shapes_split",
    "synthetic_shapes",
]

# --------------------------------------------------------------------------------------------
# A small, safe formula language
# --------------------------------------------------------------------------------------------

_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "tanh": torch.tanh,
    "arcsin": torch.asin,
    "arccos": torch.acos,
}
_CONSTANTS = {"pi": math.pi}


def _check_node(node: ast.AST, variables: frozenset[str], formula: str) -> None:
    """Reject anything outside the formula language (names, calls, attributes, ...)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Expression | ast.Load | ast.operator | ast.unaryop):
            if isinstance(sub, ast.operator) and type(sub) not in _BINOPS:
                raise ValueError(
                    f"formula {formula!r}: operator {type(sub).__name__} is not allowed "
                    f"(allowed: + - * / **)"
                )
            if isinstance(sub, ast.unaryop) and not isinstance(sub, ast.USub | ast.UAdd):
                raise ValueError(f"formula {formula!r}: unary {type(sub).__name__} not allowed")
            continue
        if isinstance(sub, ast.BinOp | ast.UnaryOp):
            continue
        if isinstance(sub, ast.Constant):
            if isinstance(sub.value, bool) or not isinstance(sub.value, int | float):
                raise ValueError(f"formula {formula!r}: only numeric constants, got {sub.value!r}")
            continue
        if isinstance(sub, ast.Name):
            if sub.id not in variables and sub.id not in _CONSTANTS and sub.id not in _FUNCS:
                raise ValueError(
                    f"formula {formula!r}: unknown name {sub.id!r} (variables: "
                    f"{sorted(variables)}, constants: {sorted(_CONSTANTS)})"
                )
            continue
        if isinstance(sub, ast.Call):
            if not isinstance(sub.func, ast.Name) or sub.func.id not in _FUNCS:
                raise ValueError(
                    f"formula {formula!r}: only the functions {sorted(_FUNCS)} may be called"
                )
            if len(sub.args) != 1 or sub.keywords:
                raise ValueError(f"formula {formula!r}: {sub.func.id} takes exactly one argument")
            continue
        raise ValueError(f"formula {formula!r}: {type(sub).__name__} is not allowed")


def _walk(node: ast.AST, env: Mapping[str, torch.Tensor]) -> torch.Tensor | float:
    if isinstance(node, ast.Expression):
        return _walk(node.body, env)
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_walk(node.left, env), _walk(node.right, env))
    if isinstance(node, ast.UnaryOp):
        v = _walk(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id] if node.id in env else _CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        arg = _walk(node.args[0], env)
        if not isinstance(arg, torch.Tensor):
            arg = torch.tensor(arg, dtype=torch.float64)
        return _FUNCS[node.func.id](arg)
    raise AssertionError(f"unreachable: {type(node).__name__}")  # _check_node ran first


def _parse(formula: str, variables: frozenset[str]) -> ast.Expression:
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(f"formula: expected a non-empty string, got {formula!r}")
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"formula {formula!r}: not a valid expression ({exc.msg})") from None
    _check_node(tree, variables, formula)
    return tree


def evaluate_formula(formula: str, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate a formula of the package's small arithmetic language on tensors.

    Args:
        formula: e.g. ``"exp(-(theta / sigma) ** 2 / 2) / (sqrt(2 * pi) * sigma)"``; allowed are
            numbers, the variables in ``values``, ``pi``, ``+ - * / **``, unary minus and the
            functions ``exp log sqrt sin cos tan tanh arcsin arccos`` (one argument each).
        values: variable name -> tensor; all tensors broadcast together (typically ``(N,)``
            float64).

    Returns:
        the value, broadcast to the common shape of ``values`` (a constant formula gives a
        0-d tensor).

    Raises:
        ValueError: a syntax error, an unknown name or a construct outside the language.

    Examples:
        >>> t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> evaluate_formula("2 * x ** 2 + cos(pi * x)", {"x": t})
        tensor([1., 1.], dtype=torch.float64)
    """
    tree = _parse(formula, frozenset(values))
    out = _walk(tree, values)
    if not isinstance(out, torch.Tensor):
        out = torch.tensor(out, dtype=torch.float64)
    if values:
        # broadcast_tensors (a C++ op) rather than broadcast_shapes, which imports torch._refs
        shape = torch.broadcast_tensors(*values.values())[0].shape
        out = out.expand(shape) if out.shape != shape else out
    return out


# --------------------------------------------------------------------------------------------
# Feynman-style equations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One input of an equation, sampled uniformly from ``[low, high]``.

    Attributes:
        name: identifier used in the formula.
        low: lower end of the sampling range.
        high: upper end of the sampling range (> ``low``).
    """

    name: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"Variable.name: expected an identifier, got {self.name!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"Variable {self.name!r}: expected finite low < high, got [{self.low}, {self.high}]"
            )


@dataclass(frozen=True)
class Equation:
    """A Feynman-style equation written as data.

    Attributes:
        name: the equation's number in the Feynman Lectures (e.g. ``"I.6.2"``).
        description: what it computes, in words.
        formula: the expression (see :func:`evaluate_formula` for the language).
        variables: the inputs, in column order of the sampled ``x``.
    """

    name: str
    description: str
    formula: str
    variables: tuple[Variable, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.variables) <= 8:
            raise ValueError(
                f"Equation {self.name!r}: expected 1..8 variables, got {len(self.variables)}"
            )
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"Equation {self.name!r}: duplicate variable names {names}")
        _parse(self.formula, frozenset(names))  # fail at definition, not at first use

    @property
    def n_inputs(self) -> int:
        """Number of input variables."""
        return len(self.variables)

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The equation's value at ``x``.

        Args:
            x: ``(N, n_inputs)`` floating tensor, columns in the order of ``variables``.

        Returns:
            ``(N,)`` tensor of ``x``'s dtype.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(
                f"x: expected shape (N, {self.n_inputs}) for {self.name}, got {tuple(x.shape)}"
            )
        env = {v.name: x[:, i] for i, v in enumerate(self.variables)}
        return evaluate_formula(self.formula, env).to(x.dtype)

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` inputs uniformly from the variables' ranges and evaluate the equation.

        Sampling and evaluation run in float64; the results are cast to ``dtype``.

        Args:
            n: number of points (>= 1).
            seed: seed of a fresh generator (used when ``generator`` is None; default 0).
            generator: a CPU ``torch.Generator`` to draw from (advanced by the call).
            dtype: floating dtype of the outputs. Default float32.

        Returns:
            ``x`` ``(n, n_inputs)`` and ``y`` ``(n,)``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an int >= 1, got {n!r}")
        gen = _generator(seed, generator)
        low = torch.tensor([v.low for v in self.variables], dtype=torch.float64)
        high = torch.tensor([v.high for v in self.variables], dtype=torch.float64)
        u = torch.rand(n, self.n_inputs, generator=gen, dtype=torch.float64)
        x = low + (high - low) * u  # (n, d)
        y = self.evaluate(x)
        if not torch.isfinite(y).all():
            raise ValueError(f"Equation {self.name}: non-finite values inside the sampling ranges")
        return x.to(dtype), y.to(dtype)


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator)}")
        return generator
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _eq(name: str, description: str, formula: str, *variables: tuple[str, float, float]):
    return Equation(name, description, formula, tuple(Variable(*v) for v in variables))


# Our own transcription of formulas from the Feynman Lectures on Physics. Ranges are ours, chosen
# to keep every formula finite and away from its singularities (e.g. v < c, n·sin θ < 1).
_EQUATION_LIST: tuple[Equation, ...] = (
    _eq("I.6.2a", "standard normal density", "exp(-theta ** 2 / 2) / sqrt(2 * pi)",
        ("theta", -3.0, 3.0)),
    _eq("I.6.2", "normal density with width sigma",
        "exp(-(theta / sigma) ** 2 / 2) / (sqrt(2 * pi) * sigma)",
        ("theta", -3.0, 3.0), ("sigma", 1.0, 3.0)),
    _eq("I.8.14", "distance between two points", "sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2)",
        ("x1", 1.0, 5.0), ("x2", 1.0, 5.0), ("y1", 1.0, 5.0), ("y2", 1.0, 5.0)),
    _eq("I.10.7", "relativistic mass", "m0 / sqrt(1 - v ** 2 / c ** 2)",
        ("m0", 1.0, 5.0), ("v", 1.0, 2.0), ("c", 3.0, 10.0)),
    _eq("I.12.11", "Lorentz force on a charge", "q * (Ef + B * v * sin(theta))",
        ("q", 1.0, 5.0), ("Ef", 1.0, 5.0), ("B", 1.0, 5.0), ("v", 1.0, 5.0),
        ("theta", 1.0, 5.0)),
    _eq("I.13.12", "change of gravitational potential energy", "G * m1 * m2 * (1 / r2 - 1 / r1)",
        ("m1", 1.0, 5.0), ("m2", 1.0, 5.0), ("r1", 1.0, 5.0), ("r2", 1.0, 5.0),
        ("G", 1.0, 2.0)),
    _eq("I.18.4", "centre of mass of two bodies", "(m1 * r1 + m2 * r2) / (m1 + m2)",
        ("m1", 1.0, 5.0), ("m2", 1.0, 5.0), ("r1", 1.0, 5.0), ("r2", 1.0, 5.0)),
    _eq("I.26.2", "Snell's law (refraction angle)", "arcsin(n * sin(theta2))",
        ("n", 0.0, 1.0), ("theta2", 1.0, 5.0)),
    _eq("I.29.16", "sum of two waves (law of cosines)",
        "sqrt(x1 ** 2 + x2 ** 2 - 2 * x1 * x2 * cos(theta1 - theta2))",
        ("x1", 1.0, 5.0), ("x2", 1.0, 5.0), ("theta1", 1.0, 5.0), ("theta2", 1.0, 5.0)),
    _eq("I.37.4", "interference of two sources", "I1 + I2 + 2 * sqrt(I1 * I2) * cos(delta)",
        ("I1", 1.0, 5.0), ("I2", 1.0, 5.0), ("delta", 1.0, 5.0)),
    _eq("I.41.16", "Planck's radiation law",
        "h / (2 * pi) * omega ** 3 / (pi ** 2 * c ** 2 * (exp(h / (2 * pi) * omega / (kb * T)) - 1))",
        ("omega", 1.0, 5.0), ("T", 1.0, 5.0), ("h", 1.0, 5.0), ("kb", 1.0, 5.0),
        ("c", 1.0, 5.0)),
    _eq("I.50.26", "anharmonic oscillator response",
        "x1 * (cos(omega * t) + alpha * cos(omega * t) ** 2)",
        ("x1", 1.0, 3.0), ("omega", 1.0, 3.0), ("t", 1.0, 3.0), ("alpha", 1.0, 3.0)),
    _eq("II.35.21", "magnetisation of a paramagnet", "n_rho * mom * tanh(mom * B / (kb * T))",
        ("n_rho", 1.0, 5.0), ("mom", 1.0, 5.0), ("B", 1.0, 5.0), ("kb", 1.0, 5.0),
        ("T", 1.0, 5.0)),
    _eq("III.4.33", "mean energy of a quantum oscillator",
        "h / (2 * pi) * omega / (exp(h / (2 * pi) * omega / (kb * T)) - 1)",
        ("h", 1.0, 5.0), ("omega", 1.0, 5.0), ("kb", 1.0, 5.0), ("T", 1.0, 5.0)),
)  # fmt: skip

#: Every built-in equation by name (insertion order = the order of :func:`list_equations`).
EQUATIONS: dict[str, Equation] = {e.name: e for e in _EQUATION_LIST}

#: The few equations the quick reproduction uses (1, 2, 5 and 5 variables; smooth, product,
#: oscillating and saturating shapes).
QUICK_EQUATIONS: tuple[str, ...] = ("I.6.2a", "I.6.2", "I.12.11", "II.35.21")


def list_equations() -> list[Equation]:
    """All built-in equations, in a fixed order."""
    return list(EQUATIONS.values())


def get_equation(name: str) -> Equation:
    """The built-in equation called ``name`` (e.g. ``"I.6.2"``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in EQUATIONS:
        raise ValueError(f"equation: unknown {name!r}; known: {', '.join(EQUATIONS)}")
    return EQUATIONS[name]


def feynman(
    name: str, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded samples ``(x (n, d), y (n,))`` of the built-in equation ``name``.

    Examples:
        >>> x, y = feynman("I.6.2", 4, seed=0)
        >>> x.shape, y.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """
    return get_equation(name).sample(n, seed=seed, dtype=dtype)


@dataclass
class FunctionData:
    """A train/test split of one equation's samples.

    Attributes:
        equation: the equation.
        x_train: ``(n_train, d)`` inputs; ``y_train``: ``(n_train,)`` targets.
        x_test: ``(n_test, d)`` inputs; ``y_test``: ``(n_test,)`` targets.
    """

    equation: Equation
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def feynman_split(
    name: str | Equation,
    *,
    n_train: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> FunctionData:
    """Independent train and test samples of one equation from one seeded generator.

    Both sets are drawn uniformly from the same ranges (an interpolation test, as in the KAN
    paper's Feynman benchmark); the test points follow the train points in the generator's
    stream, so changing ``n_test`` never changes the training set.

    Args:
        name: a built-in equation's name, or an :class:`Equation`.
        n_train: training points (>= 1). Default 1000.
        n_test: test points (>= 1). Default 1000.
        seed: seed of the generator. Default 0.
        dtype: dtype of the tensors. Default float32.

    Examples:
        >>> d = feynman_split("I.12.11", n_train=8, n_test=4, seed=1)
        >>> d.x_train.shape, d.y_test.shape
        (torch.Size([8, 5]), torch.Size([4]))
    """
    eq = name if isinstance(name, Equation) else get_equation(name)
    gen = _generator(seed, None)
    x_tr, y_tr = eq.sample(n_train, generator=gen, dtype=dtype)
    x_te, y_te = eq.sample(n_test, generator=gen, dtype=dtype)
    return FunctionData(eq, x_tr, y_tr, x_te, y_te)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """A train/test split of an image classification set.

    Attributes:
        name: ``"digits"`` or ``"shapes"``.
        x_train: ``(N, 1, H, W)`` float32; ``y_train``: ``(N,)`` int64.
        x_test: ``(M, 1, H, W)`` float32; ``y_test``: ``(M,)`` int64.
        class_names: one name per class.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def _check_fraction(test_fraction: float) -> None:
    if not isinstance(test_fraction, int | float) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")


def load_digits_split(*, test_fraction: float = 0.25, seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8×8 digits, scaled to [0, 1], shuffled and split with ``seed``.

    Args:
        test_fraction: share of the 1797 images held out (rounded). Default 0.25 (449 test images).
        seed: seed of the shuffle. Default 0.

    Examples:
        >>> d = load_digits_split(seed=0)
        >>> d.x_train.shape, d.num_classes
        (torch.Size([1348, 1, 8, 8]), 10)
    """
    from sklearn.datasets import load_digits

    _check_fraction(test_fraction)
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(digits.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=_generator(seed, None))
    n_test = round(len(y) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    names = tuple(str(i) for i in range(10))
    return ImageData("digits", x[tr], y[tr], x[te], y[te], names)


#: Class names of :func:`synthetic_shapes`, in label order.
SHAPE_CLASSES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "plus",
    "ring",
    "frame",
    "diamond",
    "x-cross",
)


def synthetic_shapes(
    n: int, *, size: int = 16, seed: int = 0, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural grey-scale shapes: ``n`` images of ``size × size`` with balanced random labels.

    Each image holds one shape of class :data:`SHAPE_CLASSES` ``[label]`` at a random centre
    (within the middle of the canvas), radius (a quarter to 0.4 of the side), stroke width
    (outlines and crosses) and brightness in [0.6, 1], on a black background, plus Gaussian
    pixel noise of standard deviation ``noise``. Labels cycle through the classes and are then
    shuffled, so every class has ``n // 8`` or one more images.

    Args:
        n: number of images (>= 1).
        size: side in pixels (>= 8). Default 16.
        seed: seed of a numpy ``Generator``. Default 0.
        noise: standard deviation of the additive noise (>= 0). Default 0.1.

    Returns:
        images ``(n, 1, size, size)`` float32 and labels ``(n,)`` int64.

    Examples:
        >>> x, y = synthetic_shapes(16, size=16, seed=0)
        >>> x.shape, sorted(y.bincount().tolist())
        (torch.Size([16, 1, 16, 16]), [2, 2, 2, 2, 2, 2, 2, 2])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size: expected an int >= 8, got {size!r}")
    if not isinstance(noise, int | float) or not noise >= 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    rng = np.random.default_rng(seed)
    k = len(SHAPE_CLASSES)
    labels = rng.permutation(np.arange(n) % k)
    s = float(size)
    r = rng.uniform(0.25, 0.4, n) * s  # radius, pixels
    cx = s / 2 + rng.uniform(-0.12, 0.12, n) * s
    cy = s / 2 + rng.uniform(-0.12, 0.12, n) * s
    w = rng.uniform(0.07, 0.12, n) * s  # stroke half-width, pixels
    bright = rng.uniform(0.6, 1.0, n)
    rot = rng.uniform(-0.25, 0.25, n)  # small rotation (radians)

    grid = np.arange(size, dtype=np.float64) + 0.5
    col = lambda a: a[:, None, None]  # noqa: E731  (n,) -> (n, 1, 1)
    dx = grid[None, None, :] - col(cx)  # (n, 1, W)
    dy = grid[None, :, None] - col(cy)  # (n, H, 1)
    c, sn = np.cos(col(rot)), np.sin(col(rot))
    u, v = c * dx + sn * dy, -sn * dx + c * dy  # rotated coordinates, (n, H, W)
    rr, ww = col(r), col(w)
    dist = np.sqrt(u**2 + v**2)
    cheb = np.maximum(np.abs(u), np.abs(v))
    l1 = np.abs(u) + np.abs(v)
    du, dv = (u - v) / np.sqrt(2), (u + v) / np.sqrt(2)  # 45° rotated axes
    # triangle pointing up: below two edges through the apex (0, -r), above the base y = r/2
    tri = (v <= rr / 2) & (np.sqrt(3) * np.abs(u) <= v + rr)
    masks = np.stack(
        [
            dist <= rr,  # disc
            cheb <= 0.8 * rr,  # square
            tri,  # triangle
            ((np.abs(u) <= ww) | (np.abs(v) <= ww)) & (cheb <= rr),  # plus
            np.abs(dist - 0.8 * rr) <= ww,  # ring
            np.abs(cheb - 0.75 * rr) <= ww,  # frame
            l1 <= rr,  # diamond
            ((np.abs(du) <= ww) | (np.abs(dv) <= ww)) & (dist <= rr),  # x-cross
        ]
    )  # (k, n, H, W)
    img = masks[labels, np.arange(n)].astype(np.float64) * col(bright)
    img = img + noise * rng.standard_normal(img.shape)
    x = torch.from_numpy(img.astype(np.float32)).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def shapes_split(
    *, n_train: int = 2000, n_test: int = 500, size: int = 16, seed: int = 0, noise: float = 0.1
) -> ImageData:
    """Train and test sets of :func:`synthetic_shapes` from disjoint seeds (``2·seed``, ``2·seed+1``).

    Examples:
        >>> d = shapes_split(n_train=16, n_test=8, seed=0)
        >>> d.x_test.shape, d.num_classes
        (torch.Size([8, 1, 16, 16]), 8)
    """
    x_tr, y_tr = synthetic_shapes(n_train, size=size, seed=seed * 2, noise=noise)
    x_te, y_te = synthetic_shapes(n_test, size=size, seed=seed * 2 + 1, noise=noise)
    return ImageData("shapes", x_tr, y_tr, x_te, y_te, SHAPE_CLASSES)
