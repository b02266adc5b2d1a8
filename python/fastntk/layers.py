"""Layers, with Neural Tangents' names and conventions: fully connected ones, convolutional
and pooling ones for images, and the combinators of residual networks.

A layer is a small immutable description; :func:`fastntk.serial` chains them into a
network. Images are NHWC: (batch, spatial..., channels), with 1, 2 or 3 spatial axes;
Dense and every activation act on the channel axis of an image, position by position. Each layer knows how to add itself to the native layer program
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
    "Conv",
    "AvgPool",
    "SumPool",
    "GlobalAvgPool",
    "GlobalSumPool",
    "Flatten",
    "LayerNorm",
    "FanOut",
    "FanInSum",
    "FanInConcat",
    "Parallel",
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


# ---------------------------------------------------------------------------------------
# Images and branches. These layers have no op in the fully connected layer program: a
# network holding one is compiled by fastntk._spatial_program.

PADDINGS = ("VALID", "SAME", "CIRCULAR")
MAX_SPATIAL_DIMS = 3


def _positive_int(layer: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{layer}: {name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{layer}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _spatial_tuple(layer: str, name: str, value, n: int | None = None, what: str = "") -> tuple:
    """value as a tuple of 1 to 3 positive ints (of length n when n is given)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
        raise TypeError(
            f"{layer}: {name} must be a tuple of 1 to {MAX_SPATIAL_DIMS} integers >= 1 (one per spatial "
            f"axis, e.g. (3, 3)), got {value!r}"
        )
    items = tuple(value)
    if not 1 <= len(items) <= MAX_SPATIAL_DIMS:
        raise ValueError(
            f"{layer}: {name} must have 1 to {MAX_SPATIAL_DIMS} entries (one per spatial axis), got {value!r}"
        )
    if n is not None and len(items) != n:
        raise ValueError(
            f"{layer}: {name} must have one entry per spatial axis ({n}, as the {what}), got {value!r}"
        )
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{layer}: {name} must be a tuple of integers >= 1, got {value!r}")
        if v < 1:
            raise ValueError(f"{layer}: {name} must be a tuple of integers >= 1, got {value!r}")
    return tuple(int(v) for v in items)


def _strides(layer: str, strides, n: int, what: str) -> tuple:
    """A window's strides: 1 on each of its n axes by default (Neural Tangents' default)."""
    return (1,) * n if strides is None else _spatial_tuple(layer, "strides", strides, n, what)


def _padding(layer: str, padding) -> str:
    if not isinstance(padding, str) or padding.upper() not in PADDINGS:
        raise ValueError(f"{layer}: padding must be 'VALID', 'SAME' or 'CIRCULAR', got {padding!r}")
    return padding.upper()


def _parameterization(layer: str, parameterization) -> str:
    if not isinstance(parameterization, str) or parameterization.lower() not in ("ntk", "standard"):
        raise ValueError(f"{layer}: parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    return parameterization.lower()


class SpatialLayer(Layer):
    """Base class of the layers that only make sense on images (convolution, pooling,
    Flatten) and of the branch combinators; networks holding one compile through
    :mod:`fastntk._spatial_program`."""

    def _emit(self, program, n_in: float, ntk_bias: float = 0.0) -> None:
        # Reached only from an entry point that takes fully connected networks alone.
        raise NotImplementedError(
            f"{type(self).__name__}: this function takes networks of Dense layers and activations only; "
            "networks with convolutions, pooling or branches have net.kernel (and "
            "fastntk.monte_carlo_kernel)"
        )


class Conv(SpatialLayer):
    """Convolution over the spatial axes of NHWC images (1 to 3 spatial axes), weights shared
    across positions, as ``neural_tangents.stax.Conv``.

    Parameters
    ----------
    out_chan : int or None
        Output channels. Needed by finite networks and, in the standard parameterization,
        by a later Conv or Dense layer (its fan-in); the ntk kernels do not depend on it.
    filter_shape : tuple of int
        Filter size per spatial axis, e.g. ``(3, 3)``; its length is the number of spatial
        axes of the images it takes.
    strides : tuple of int, optional
        Stride per spatial axis; None means 1 on every axis.
    padding : {'VALID', 'SAME', 'CIRCULAR'}
        'VALID': no padding, the output shrinks by ``filter - 1``; 'SAME': zero padding,
        output size ``ceil(n / stride)``; 'CIRCULAR': periodic (wrap-around) padding with the
        sizes of 'SAME'.
    W_std : float
        Weight standard deviation, >= 0.
    b_std : float or None
        Bias standard deviation, >= 0; None: no bias. The default 0.0 is a bias initialized
        at zero, as :class:`Dense` (Neural Tangents' default is None; the two differ only
        in the standard parameterization's NTK).
    parameterization : {'ntk', 'standard'}
        As :class:`Dense`, with fan-in ``channels * prod(filter_shape)``: 'ntk' divides the
        weights by its square root in the forward pass; 'standard' draws them with variance
        ``W_std**2 / fan_in``.
    """

    _fields = ("out_chan", "filter_shape", "strides", "padding", "W_std", "b_std", "parameterization")

    def __init__(
        self,
        out_chan=None,
        filter_shape=None,
        strides=None,
        padding="VALID",
        W_std=1.0,
        b_std=0.0,
        parameterization="ntk",
    ):
        name = "Conv"
        if out_chan is not None:
            out_chan = _positive_int(name, "out_chan", out_chan)
        self.out_chan = out_chan
        if filter_shape is None:
            raise TypeError(f"{name}: filter_shape is required, e.g. Conv(64, (3, 3))")
        self.filter_shape = _spatial_tuple(name, "filter_shape", filter_shape)
        self.strides = _strides(name, strides, len(self.filter_shape), "filter_shape")
        self.padding = _padding(name, padding)
        self.W_std = _real("W_std", name, W_std, nonneg=True)
        self.b_std = None if b_std is None else _real("b_std", name, b_std, nonneg=True)
        self.parameterization = _parameterization(name, parameterization)


class AvgPool(SpatialLayer):
    """Average pooling over windows of the spatial axes, as ``neural_tangents.stax.AvgPool``.

    Parameters
    ----------
    window_shape : tuple of int
        Window size per spatial axis.
    strides : tuple of int, optional
        Stride per spatial axis; None means 1 on every axis (Neural Tangents' default, not
        the window size).
    padding : {'VALID', 'SAME', 'CIRCULAR'}
        As :class:`Conv`.
    normalize_edges : bool
        With 'SAME' padding: False divides every window by its full size (the zero padding
        counts), True by the number of positions it covers inside the image.
    """

    _fields = ("window_shape", "strides", "padding", "normalize_edges")

    def __init__(self, window_shape=None, strides=None, padding="VALID", normalize_edges=False):
        name = type(self).__name__
        if window_shape is None:
            raise TypeError(f"{name}: window_shape is required, e.g. {name}((2, 2))")
        self.window_shape = _spatial_tuple(name, "window_shape", window_shape)
        self.strides = _strides(name, strides, len(self.window_shape), "window_shape")
        self.padding = _padding(name, padding)
        if not isinstance(normalize_edges, (bool, np.bool_)):
            raise TypeError(f"{name}: normalize_edges must be True or False, got {normalize_edges!r}")
        self.normalize_edges = bool(normalize_edges)


class SumPool(AvgPool):
    """Sum pooling over windows of the spatial axes, as ``neural_tangents.stax.SumPool``
    (arguments as :class:`AvgPool`, without normalize_edges)."""

    _fields = ("window_shape", "strides", "padding")

    def __init__(self, window_shape=None, strides=None, padding="VALID"):
        super().__init__(window_shape, strides, padding, False)


class GlobalAvgPool(SpatialLayer):
    """The mean over all spatial positions: (N, *spatial, C) -> (N, C)."""


class GlobalSumPool(SpatialLayer):
    """The sum over all spatial positions: (N, *spatial, C) -> (N, C)."""


class Flatten(SpatialLayer):
    """Flattens every non-batch axis: (N, *spatial, C) -> (N, prod(spatial) * C). Its kernel
    is the mean over positions of the per-position kernels (Neural Tangents' scaling). Its
    output is not Gaussian per entry (the entries have different variances), so an activation
    right after Flatten has no closed form: put a Dense layer in between."""


class LayerNorm(SpatialLayer):
    """Layer normalization ``(x - mean) / sqrt(var + eps)`` over ``axis``, as
    ``neural_tangents.stax.LayerNorm``.

    Parameters
    ----------
    axis : int or tuple of int
        Axes of the input (batch first, channels last) to normalize over; they must include
        the channel axis (-1). For images either the channel axis alone (per position) or
        the channel axis with every spatial axis (per image). Not the batch axis.
    eps : float
        Added to the variance, >= 0.
    """

    _fields = ("axis", "eps")

    def __init__(self, axis=-1, eps=1e-12):
        name = "LayerNorm"
        items = (axis,) if isinstance(axis, numbers.Integral) and not isinstance(axis, bool) else axis
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise TypeError(f"{name}: axis must be an integer or a tuple of integers, got {axis!r}")
        items = tuple(items)
        if not items or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in items):
            raise TypeError(f"{name}: axis must be an integer or a non-empty tuple of integers, got {axis!r}")
        self.axis = tuple(int(a) for a in items)
        self.eps = _real("eps", name, eps, nonneg=True)


class FanOut(SpatialLayer):
    """Copies its input into ``num`` branches (for :func:`fastntk.parallel`)."""

    _fields = ("num",)

    def __init__(self, num):
        self.num = _positive_int("FanOut", "num", num)


class FanInSum(SpatialLayer):
    """Sums its branches (equal shapes) into one: residual connections."""


class FanInConcat(SpatialLayer):
    """Concatenates its branches along ``axis``: only the channel axis (-1) is supported by
    the kernels; the kernel is the channel-weighted mean of the branches' kernels.

    Parameters
    ----------
    axis : int
        The concatenation axis; -1 (channels).
    """

    _fields = ("axis",)

    def __init__(self, axis=-1):
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"FanInConcat: axis must be an integer, got {axis!r}")
        self.axis = int(axis)


class Parallel(SpatialLayer):
    """Applies branch ``i`` to input branch ``i`` (made by :class:`FanOut` or another
    Parallel); build it with :func:`fastntk.parallel`.

    Attributes
    ----------
    branches : tuple of tuple of Layer
        The layer sequence of each branch (a layer alone is a sequence of one).
    """

    _fields = ("branches",)

    def __init__(self, branches):
        branches = tuple(tuple(b) for b in branches)
        if not branches:
            raise ValueError("parallel: needs at least one branch")
        for i, branch in enumerate(branches):
            for layer in branch:
                if not isinstance(layer, Layer):
                    raise TypeError(f"parallel: branch {i} holds {layer!r}, which is not a fastntk layer")
        self.branches = branches

    def __repr__(self) -> str:
        def one(branch):
            return repr(branch[0]) if len(branch) == 1 else "serial(" + ", ".join(map(repr, branch)) + ")"

        return "parallel(" + ", ".join(one(b) for b in self.branches) + ")"


def walk(layers):
    """Every layer of a layer sequence, the branches of Parallel layers included (depth first)."""
    for layer in layers:
        yield layer
        if isinstance(layer, Parallel):
            for branch in layer.branches:
                yield from walk(branch)


def has_spatial_layer(layers) -> bool:
    """True when a layer sequence (branches included) holds a layer that needs the spatial
    modules (images or branches): a :class:`SpatialLayer`."""
    return any(isinstance(layer, SpatialLayer) for layer in walk(layers))
