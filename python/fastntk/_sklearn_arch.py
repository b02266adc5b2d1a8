"""Private helpers of :mod:`fastntk.sklearn`: parameter checks, the MLP the estimators and
GP kernels describe, its kernels (one pass for a depth sweep, derivatives in the Dense
parameters), and the closed-form leave-one-out error of kernel ridge regression.

The public classes store their constructor arguments untouched (scikit-learn's rule); these
functions check them when they are used, with messages that name the class and the argument.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import scipy.linalg

from . import _arrays, _core, _threads
from ._predict_linalg import cholesky
from .layers import Abs, Activation, Cos, Dense, Erf, Gelu, Identity, Rbf, Relu, Sign, Sin
from .network import Network, serial

# Activation names the estimators and GP kernels take as strings (any fastntk Activation
# instance, e.g. LeakyRelu(0.1), is accepted too). 'identity' gives a deep linear network.
ACTIVATIONS = {
    "relu": Relu,
    "erf": Erf,
    "gelu": Gelu,
    "abs": Abs,
    "sign": Sign,
    "sin": Sin,
    "cos": Cos,
    "rbf": Rbf,
    "identity": Identity,
}


class LeaveOneOutWarning(RuntimeWarning):
    """A candidate depth's regularized training kernel is not positive definite to working
    precision, so its closed-form leave-one-out error is undefined (reported as inf)."""


# ---------------------------------------------------------------------------------------
# Parameter checks


def check_real(owner: str, name: str, value, *, low=None, low_open=False, allow_inf=False) -> float:
    """value as a float, or TypeError/ValueError naming ``owner`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    return value


def check_int(owner: str, name: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_depths(owner: str, depth, *, allow_sequence: bool) -> list:
    """The candidate depths (hidden layers), ascending: [depth] for an int; the sorted
    entries of a sequence (allow_sequence) with none repeated."""
    if isinstance(depth, numbers.Integral) and not isinstance(depth, bool):
        return [check_int(owner, "depth", depth, low=0)]
    if not allow_sequence:
        raise TypeError(f"{owner}: depth must be an integer >= 0 (hidden layers), got {depth!r}")
    if isinstance(depth, (str, bytes)) or not hasattr(depth, "__iter__"):
        raise TypeError(
            f"{owner}: depth must be an integer >= 0 or a non-empty sequence of them, got {depth!r}"
        )
    items = list(depth)
    if not items:
        raise ValueError(f"{owner}: depth is an empty sequence; give at least one depth")
    depths = [check_int(owner, "depth", d, low=0) for d in items]
    if len(set(depths)) != len(depths):
        raise ValueError(f"{owner}: depth repeats a value: {items!r}")
    return sorted(depths)


def check_activation(owner: str, activation):
    """A fresh fastntk layer for ``activation`` (a name in ACTIVATIONS or an Activation)."""
    if isinstance(activation, (Activation, Identity)):
        return activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.lower()]()
    raise ValueError(
        f"{owner}: activation must be one of {sorted(ACTIVATIONS)} or a fastntk activation layer "
        f"(e.g. fastntk.LeakyRelu(0.1)), got {activation!r}"
    )


def check_architecture(owner: str, *, depth, activation, W_std, b_std, parameterization="ntk", width=None,
                       allow_sequence=True) -> dict:  # fmt: skip
    """The checked architecture: depths (ascending), the activation layer, W_std, b_std,
    parameterization and width (None unless the standard parameterization uses it)."""
    depths = check_depths(owner, depth, allow_sequence=allow_sequence)
    act = check_activation(owner, activation)
    W_std = check_real(owner, "W_std", W_std, low=0.0, low_open=True)
    if b_std is not None:
        b_std = check_real(owner, "b_std", b_std, low=0.0)
    if not isinstance(parameterization, str) or parameterization.lower() not in ("ntk", "standard"):
        raise ValueError(f"{owner}: parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    parameterization = parameterization.lower()
    if parameterization == "standard":
        width = check_int(owner, "width", width, low=1)
    else:
        width = None
    return dict(
        depths=depths, act=act, W_std=W_std, b_std=b_std, parameterization=parameterization, width=width
    )


# ---------------------------------------------------------------------------------------
# The network


def mlp(arch: dict, depth: int) -> Network:
    """``Dense, act, Dense, act, ..., Dense`` with ``depth`` activations, every Dense alike.

    In the standard parameterization the hidden Dense layers have out_dim = width (the NTK
    of the next layer needs it); the last one's out_dim does not enter the kernels. Layer
    ``2 l`` of the network of depth L is the last layer of the network of depth l <= L, so
    one pass of the deepest network gives every shallower one (see kernels_by_depth).
    """
    W, b, param, width = arch["W_std"], arch["b_std"], arch["parameterization"], arch["width"]
    layers = [Dense(width if depth > 0 else None, W, b, param)]
    for k in range(depth):
        layers += [arch["act"], Dense(width if k < depth - 1 else None, W, b, param)]
    return serial(*layers)


def kernels_by_depth(arch: dict, x: np.ndarray, name: str) -> dict:
    """{depth: training kernel (N, N)} for every candidate depth, from ONE pass of the
    deepest network: the native recursion writes the kernel after the last op of layer
    2 l for each candidate l (capture_after), so a sweep costs one evaluation and only
    the requested kernels are stored."""
    depths = arch["depths"]
    net = mlp(arch, max(depths))
    a, _ = net._inputs(x, None)
    if len(depths) == 1:
        return {depths[0]: net._gram(a, None, (name,))[name]}
    program = net._program(a.shape[1])
    last_op = {}
    for op, layer in enumerate(program.op_layers):
        last_op[layer] = op
    ops = [last_op[2 * depth] for depth in depths]  # every layer 2l is a Dense: it has an op
    out = net._gram(a, None, (name,), capture_after=ops)[name]  # (captures, 1, N, N)
    return {depth: out[c, 0] for c, depth in enumerate(depths)}


def predict_kernel(net: Network, x: np.ndarray, x_train: np.ndarray, name: str, dual_coef: np.ndarray):
    """K(x, x_train) @ dual_coef, in row blocks of at most ~2^23 kernel entries (64 MiB),
    so predicting many points never holds their whole cross kernel."""
    n_train = x_train.shape[0]
    rows = max(1, (1 << 23) // max(n_train, 1))
    a_train = np.ascontiguousarray(x_train, dtype=np.float64)
    out = np.empty((x.shape[0],) + dual_coef.shape[1:], dtype=np.float64)
    for start in range(0, x.shape[0], rows):
        a, _ = net._inputs(x[start : start + rows], None)
        k = net._gram(a, a_train, (name,))[name]
        out[start : start + rows] = k @ dual_coef
    return out


def dense_seeds(program, directions) -> np.ndarray:
    """Seeds (n_ops, P, 3) for the derivatives along P directions, each a (slot, value)
    pair applied to every Dense op: slot 0 = W_std^2, 1 = b_std^2, 2 = the NTK-only bias
    term; value = d(that quantity) along the direction."""
    seeds = np.zeros((program.n_ops, len(directions), 3))
    dense = np.asarray(program.dense_ops, dtype=bool)
    for p, (slot, value) in enumerate(directions):
        seeds[dense, p, slot] = value
    return seeds


def diagonals(program, x: np.ndarray):
    """(nngp, ntk) diagonals of the rows of x, O(N (d + layers))."""
    a = _arrays.as_input(x, "X")
    return _core.ntk_diag(program, a, n_threads=_threads.get_num_threads())


# ---------------------------------------------------------------------------------------
# Leave-one-out error of kernel ridge regression, in closed form


def loo_residuals(k: np.ndarray, y: np.ndarray, ridge: float):
    """Leave-one-out residuals of kernel ridge regression with the absolute ridge ``ridge``,
    or None when ``K + ridge I`` is not positive definite to working precision.

    With A = K + ridge I and alpha = A^-1 y, the prediction at x_i of the regressor fitted
    to the other N - 1 points (same ridge) misses y_i by exactly alpha_i / (A^-1)_ii
    (the bordered-inverse identity: removing row and column i of A), for every output
    column. Cost: one Cholesky, the inverse of its triangular factor, two triangular solves.

    k : (N, N) float64, symmetric; y : (N, n_out) float64. Returns (N, n_out) float64.
    """
    n = k.shape[0]
    a = k + ridge * np.eye(n)
    # Refused when A is singular to working precision (LAPACK's condition estimate at or
    # below N eps): the residuals would then be noise.
    factor, _ = cholesky(a, n * np.finfo(np.float64).eps, lower=True)
    if factor is None:
        return None
    c, lower = factor
    alpha = scipy.linalg.cho_solve((c, lower), y, check_finite=False)
    # diag(A^-1) = diag(L^-T L^-1): the column sums of squares of L^-1. The triangular inverse
    # (LAPACK trtri, N^3/3 flops) is all it needs; the full inverse (potri) would cost twice that.
    inv_l, info = scipy.linalg.lapack.dtrtri(c, lower=1)
    if info != 0:  # pragma: no cover - trtri fails only on a zero pivot, which potrf rejected
        return None
    inv_l = np.tril(inv_l)  # the upper triangle holds what cho_factor left there
    return alpha / np.einsum("ij,ij->j", inv_l, inv_l)[:, None]


def select_depth(owner: str, kernels: dict, y2: np.ndarray, ridge: float, onehot: bool = False) -> dict:
    """Closed-form LOO error of every candidate depth's converged (t = inf) predictor.

    ridge is relative: each depth's absolute ridge is ridge * trace(K) / N of its own
    full training kernel, held fixed while a point is left out. Returns depths, loo_mse
    (mean over points and outputs of the squared LOO residual; inf where undefined), the
    chosen depth (smallest LOO MSE; the shallowest on ties), and with onehot the LOO
    accuracy (argmax of the LOO prediction y_i - residual_i).
    """
    depths = sorted(kernels)
    mse = np.empty(len(depths))
    acc = np.empty(len(depths))
    for j, depth in enumerate(depths):
        k = kernels[depth]
        lam = ridge * np.trace(k) / k.shape[0]
        res = loo_residuals(k, y2, lam)
        if res is None:
            warnings.warn(
                f"{owner}: at depth {depth} the training kernel plus ridge is not positive definite to "
                "working precision (duplicated points without ridge?), so its leave-one-out error is "
                "undefined and recorded as inf; set ridge > 0 to score it",
                LeaveOneOutWarning,
                stacklevel=4,
            )
            mse[j], acc[j] = np.inf, np.nan
            continue
        mse[j] = np.mean(res**2)
        if onehot:
            acc[j] = np.mean(np.argmax(y2 - res, axis=1) == np.argmax(y2, axis=1))
    if not np.isfinite(mse).any():
        raise ValueError(
            f"{owner}: no candidate depth has a defined leave-one-out error (every training kernel is "
            "singular to working precision); set ridge > 0"
        )
    out = dict(depths=np.array(depths), loo_mse=mse, depth=depths[int(np.argmin(mse))])
    if onehot:
        out["loo_accuracy"] = acc
    return out
