"""Layers of fully connected networks, with Neural Tangents' names and conventions.

A layer is a small immutable description; :func:`fastntk.serial` chains them into a
network. Each layer knows how to add itself to the native layer program
(built by :func:`fastntk._engine.build_program`), which is where its kernel maps live. For finite networks
(``Network.init``/``apply``/``empirical_ntk``) each activation also evaluates itself and
its derivative on NumPy arrays (:meth:`Activation.fn`, :meth:`Activation.derivative`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._args import real_number
from ._engine import MAX_DEGREE

__all__ = [
    "Layer",
    "Dense",
    "Identity",
    "Activation",
    "ABRelu",
    "Relu",
    "LeakyRelu",
    "Abs",
    "Erf",
    "Sign",
    "Gelu",
    "Sin",
    "Cos",
    "Rbf",
    "Exp",
    "Gaussian",
    "Monomial",
    "RectifiedMonomial",
]


def _real(name: str, layer: str, value, *, nonneg: bool = False) -> float:
    return real_number(value, name, owner=layer, low=0.0 if nonneg else None)


def _special():
    """scipy.special, imported on first use: only Erf and Gelu need it (erf, ndtr), and
    only for finite networks, so importing fastntk stays fast without it."""
    try:
        import scipy.special
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ImportError("fastntk's finite Erf and Gelu layers need SciPy (pip install scipy)") from exc
    return scipy.special


def _degree(layer: str, degree) -> int:
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral):
        raise TypeError(f"{layer}: degree must be an integer, got {degree!r}")
    degree = int(degree)
    if not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"{layer}: degree must be an integer in [1, {MAX_DEGREE}], got {degree}")
    return degree


class Layer:
    """Base class of all layers."""

    is_activation = False
    _fields: tuple = ()

    def _emit(
        self, program, n_in: float, ntk_bias: float = 0.0
    ) -> None:  # pragma: no cover - every layer overrides it
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + tuple(getattr(self, f) for f in self._fields))

    def __setattr__(self, name, value):
        if name in self._fields and name in self.__dict__:
            raise AttributeError(f"{type(self).__name__} is immutable")
        super().__setattr__(name, value)


class Dense(Layer):
    """Fully connected layer.

    Parameters
    ----------
    out_dim : int, optional
        Output width. Needed by finite networks and by a later Dense layer in the
        standard parameterization (its input width); the infinite-width kernels
        in the ntk parameterization do not depend on it.
    W_std : float
        Weight standard deviation, >= 0.
    b_std : float or None
        Bias standard deviation, >= 0; ``None`` means no bias. Note that the
        default is 0.0 (a bias initialized at zero), not Neural Tangents' ``None``:
        the two differ only in the standard parameterization, where a trainable
        bias adds 1 to the NTK.
    parameterization : {'ntk', 'standard'}
        ``'ntk'``: z = W_std W x / sqrt(n_in) + b_std b with W, b standard normal;
        Sigma' = W_std^2 Sigma + b_std^2, Theta' = Sigma' + W_std^2 Theta.
        ``'standard'``: W ~ N(0, W_std^2 / n_in), b ~ N(0, b_std^2), z = W x + b;
        Theta' = n_in Sigma + W_std^2 Theta (+ 1 with a bias).
    """

    _fields = ("out_dim", "W_std", "b_std", "parameterization")

    def __init__(self, out_dim=None, W_std=1.0, b_std=0.0, parameterization="ntk"):
        name = "Dense"
        if out_dim is not None:
            if isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral) or out_dim < 1:
                raise ValueError(f"{name}: out_dim must be None or an integer >= 1, got {out_dim!r}")
            out_dim = int(out_dim)
        self.out_dim = out_dim
        self.W_std = _real("W_std", name, W_std, nonneg=True)
        self.b_std = None if b_std is None else _real("b_std", name, b_std, nonneg=True)
        if not isinstance(parameterization, str) or parameterization.lower() not in ("ntk", "standard"):
            raise ValueError(
                f"{name}: parameterization must be 'ntk' or 'standard', got {parameterization!r}"
            )
        self.parameterization = parameterization.lower()

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        # ntk_bias: an NTK-only term ntk_bias^2 (zero-initialized trainable biases, scikit-ntk's).
        program.add_dense(
            self.W_std, self.b_std, self.parameterization == "standard", float(n_in), ntk_bias=ntk_bias
        )


class Identity(Layer):
    """The identity: leaves the kernels unchanged (and does not count as an activation)."""

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        pass


class Activation(Layer):
    """Base class of elementwise nonlinearities. Each must follow a Dense layer.

    Finite networks evaluate an activation through two NumPy methods, both elementwise on
    float64 arrays of any shape, returning new arrays of the same shape:

    - ``fn(x)``: the activation itself;
    - ``derivative(x)``: its derivative. Where the activation has a kink, the value there
      is JAX's (what Neural Tangents' empirical kernels use), e.g. 1/2 for Relu at 0.
    """

    is_activation = True

    def fn(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - every activation overrides it
        raise NotImplementedError

    def derivative(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - every activation overrides it
        raise NotImplementedError


class ABRelu(Activation):
    """``a * min(x, 0) + b * max(x, 0)``."""

    _fields = ("a", "b")

    def __init__(self, a, b):
        self.a = _real("a", "ABRelu", a)
        self.b = _real("b", "ABRelu", b)

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_abrelu(self.a, self.b)

    def fn(self, x):
        if self.a == 0.0:  # Relu and its multiples: one pass
            out = np.maximum(x, 0.0)
            return out if self.b == 1.0 else self.b * out
        return self.a * np.minimum(x, 0.0) + self.b * np.maximum(x, 0.0)

    def derivative(self, x):
        # heaviside(x, 1/2) is 0, 1/2, 1 for x < 0, = 0, > 0: at 0, JAX's min/max split the
        # gradient evenly between their two arguments, (a + b) / 2.
        return self.a + (self.b - self.a) * np.heaviside(x, 0.5)


class Relu(ABRelu):
    """``max(x, 0)``."""

    _fields = ()

    def __init__(self):
        super().__init__(0.0, 1.0)


class LeakyRelu(ABRelu):
    """``alpha * min(x, 0) + max(x, 0)``."""

    _fields = ("alpha",)

    def __init__(self, alpha):
        self.alpha = _real("alpha", "LeakyRelu", alpha)
        super().__init__(self.alpha, 1.0)


class Abs(ABRelu):
    """``|x|``."""

    _fields = ()

    def __init__(self):
        super().__init__(-1.0, 1.0)


class Erf(Activation):
    """``a * erf(b * x) + c``."""

    _fields = ("a", "b", "c")

    def __init__(self, a=1.0, b=1.0, c=0.0):
        self.a, self.b, self.c = (_real(n, "Erf", v) for n, v in (("a", a), ("b", b), ("c", c)))

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_erf(self.a, self.b, self.c)

    def fn(self, x):
        return self.a * _special().erf(self.b * x) + self.c

    def derivative(self, x):
        return (self.a * self.b * 2.0 / math.sqrt(math.pi)) * np.exp(-((self.b * x) ** 2))


class Sign(Activation):
    """``sign(x)``. Its derivative vanishes almost everywhere, so the NTK after it is 0."""

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_sign()

    def fn(self, x):
        return np.sign(x)

    def derivative(self, x):
        return np.zeros_like(x)


class Gelu(Activation):
    """``x * Phi(x)``, the exact (not tanh-approximated) Gelu."""

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_gelu()

    def fn(self, x):
        return x * _special().ndtr(x)

    def derivative(self, x):
        # d/dx x Phi(x) = Phi(x) + x phi(x)
        return _special().ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


class Sin(Activation):
    """``a * sin(b * x + c)``."""

    _fields = ("a", "b", "c")

    def __init__(self, a=1.0, b=1.0, c=0.0):
        self.a, self.b, self.c = (_real(n, type(self).__name__, v) for n, v in (("a", a), ("b", b), ("c", c)))

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_sin(self.a, self.b, self.c)

    def fn(self, x):
        return self.a * np.sin(self.b * x + self.c)

    def derivative(self, x):
        return (self.a * self.b) * np.cos(self.b * x + self.c)


class Cos(Sin):
    """``a * cos(b * x + c)``."""

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_cos(self.a, self.b, self.c)

    def fn(self, x):
        return self.a * np.cos(self.b * x + self.c)

    def derivative(self, x):
        return (-self.a * self.b) * np.sin(self.b * x + self.c)


class Rbf(Activation):
    """``sqrt(2) * sin(sqrt(2 * gamma) * x + pi / 4)``, whose NNGP is the RBF kernel
    ``exp(-gamma * (q_x + q_y - 2 * Sigma))``; gamma >= 0."""

    _fields = ("gamma",)

    def __init__(self, gamma=1.0):
        self.gamma = _real("gamma", "Rbf", gamma, nonneg=True)

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_rbf(self.gamma)

    def fn(self, x):
        return math.sqrt(2.0) * np.sin(math.sqrt(2.0 * self.gamma) * x + math.pi / 4)

    def derivative(self, x):
        w = math.sqrt(2.0 * self.gamma)
        return (math.sqrt(2.0) * w) * np.cos(w * x + math.pi / 4)


class Exp(Activation):
    """``a * exp(b * x)``."""

    _fields = ("a", "b")

    def __init__(self, a=1.0, b=1.0):
        self.a, self.b = _real("a", "Exp", a), _real("b", "Exp", b)

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_exp(self.a, self.b)

    def fn(self, x):
        return self.a * np.exp(self.b * x)

    def derivative(self, x):
        return (self.a * self.b) * np.exp(self.b * x)


class Gaussian(Activation):
    """``a * exp(b * x**2)``. For b > 0 the kernel is finite only while 4 b q < 1
    (q: the input variance of the layer); larger variances raise ValueError."""

    _fields = ("a", "b")

    def __init__(self, a=1.0, b=-1.0):
        self.a, self.b = _real("a", "Gaussian", a), _real("b", "Gaussian", b)

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_gaussian(self.a, self.b)

    def fn(self, x):
        return self.a * np.exp(self.b * x * x)

    def derivative(self, x):
        return (2.0 * self.a * self.b) * x * np.exp(self.b * x * x)


class Monomial(Activation):
    """``x**degree``, degree an integer in [1, 20]."""

    _fields = ("degree",)

    def __init__(self, degree):
        self.degree = _degree("Monomial", degree)

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_monomial(self.degree)

    def fn(self, x):
        return x**self.degree

    def derivative(self, x):
        return self.degree * x ** (self.degree - 1)


class RectifiedMonomial(Activation):
    """``(x >= 0) * x**degree``, degree an integer in [1, 20] (degree 1 is Relu).

    Its kernel is the arc-cosine kernel of that order, exact also at correlation
    +-1 (every diagonal), where Neural Tangents returns NaN."""

    _fields = ("degree",)

    def __init__(self, degree):
        self.degree = _degree("RectifiedMonomial", degree)

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        program.add_rectified_monomial(self.degree)

    def fn(self, x):
        return np.where(x >= 0, x**self.degree, 0.0)

    def derivative(self, x):
        # x >= 0 selects the polynomial branch, also at 0 (JAX's where): 1 for degree 1.
        return np.where(x >= 0, self.degree * x ** (self.degree - 1), 0.0)
