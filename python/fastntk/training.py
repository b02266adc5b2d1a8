"""Training finite networks: gradient descent on MSE, its gradient flow, and the linearized network.

A network whose Dense layers all have an ``out_dim`` (see :mod:`fastntk.empirical`) can be
trained, and compared with what :mod:`fastntk.predict` says an infinitely wide one does:

- :func:`train_mse` trains it by full-batch gradient descent (``discrete=True``) or gradient
  flow (``discrete=False``, SciPy's explicit Runge-Kutta integrators) on the squared loss,
  and returns the outputs, the loss and on request the empirical NTK at chosen times;
  ``linearized=True`` trains the linearized network instead;
- :func:`jvp` and :func:`vjp` are the forward- and reverse-mode derivatives of the outputs
  with respect to the parameters;
- :func:`linearize` gives the linearized network
  ``f_lin(x; theta) = f(x; theta_0) + J(x; theta_0) (theta - theta_0)``, Neural Tangents'
  ``nt.linearize``.

Conventions (those of :mod:`fastntk.predict`, i.e. Neural Tangents')
-------------------------------------------------------------------
The loss is ``L(theta) = ||f(X; theta) - Y||^2 / (2 n)`` with ``n = y_train.size`` (Neural
Tangents' ``0.5 * mean((f - y)**2)``). With learning rate ``eta``, discrete steps are
``theta_{k+1} = theta_k - eta grad L(theta_k)`` and the flow is
``d theta / dt = -eta grad L(theta)``; time enters as ``tau = eta t``. In function space
``df / dtau = -Theta_emp (f - y) / n`` with the empirical NTK ``Theta_emp = J J^T``. For a
wide network in the ntk parameterization ``Theta_emp`` approaches ``net.kernel(X, get='ntk')
x I_{n_out}`` and stays there during training, so the outputs of

    train_mse(net, params, x, y, t, learning_rate=eta, x_test=xt, discrete=d)

approach (with ``f0 = net.apply(params, x)``, ``ft0 = net.apply(params, xt)``)

    predict.gradient_descent_mse(net.kernel(x, get='ntk'), y, eta, discrete=d)(
        t, f0, ft0, net.kernel(xt, x, get='ntk'))

as the width grows, with differences of order 1/sqrt(width). For the linearized network the
relation is exact at any width with the empirical NTK at initialization in place of the
analytic one (for one output, where the empirical NTK is a scalar kernel).

How the derivatives are computed
--------------------------------
Layer by layer, without Jacobians (which would take O(N n_out P) memory for P parameters).
The forward pass (:mod:`fastntk._finite`) keeps each Dense layer's input ``h`` and each
activation's derivative ``phi'(z)``. For a Dense layer ``z = c_W h @ W + c_b b``:

- reverse mode (:func:`vjp`, the gradient of ``<g, f>`` for a cotangent ``g`` of the
  outputs' shape): with ``delta = d<g, f>/dz`` at the layer's output, the parameter gradients
  are ``c_W h^T delta`` and ``c_b sum_n delta``, and ``delta`` passes to the layer's input as
  ``c_W delta W^T``, then through an activation as ``delta * phi'(z)``;
- forward mode (:func:`jvp`, the derivative along a parameter direction ``(dW, db)``):
  ``dz = c_W (dh @ W + h @ dW) + c_b db`` alongside the forward pass, and
  ``dh = phi'(z) * dz`` through an activation (``dh = 0`` at the inputs).

Each is one or two matrix products per layer on fastntk's BLAS and thread team; training
the linearized network computes the forward pass at ``theta_0`` once per input set and then
one JVP and one VJP per step, in memory O(N (sum of the widths)).

CuPy arrays
-----------
Parameters and inputs given as CuPy arrays (all of them, on one device: mixing NumPy and
CuPy, or two devices, is an error naming the argument) are computed with CuPy on that device
and CuPy's current stream, the matrix products on cuBLAS, in float64; the outputs, NTKs and
parameters come back as CuPy arrays (the NumPy path is unchanged). The namespace is chosen as
in :mod:`fastntk.predict`. What goes to the host: the loss, one float per step (divergence is
checked at every step) and ``TrainResult.loss`` / ``t``, NumPy arrays; and for the gradient
flow (``discrete=False``) the integrator's state, since SciPy's Runge-Kutta integrators run on
the host: each evaluation copies the P parameters to the device and the gradient back (2 P
float64 over the bus, next to the passes' O(N P) work on the device). ``discrete=True`` stays
on the device throughout. ``get_ntk`` uses the empirical NTK's GPU path (it needs fastntk's
CUDA build).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import _arrays, _engine, empirical
from ._args import finite_array, real_array, real_number
from ._arrays import is_cupy
from ._finite import (
    bias,
    check_input,
    check_params,
    describe_sequence,
    device_context,
    forward,
    matmul,
    multipliers,
    namespace,
    output_dim,
    tree_arrays,
)
from ._predict_linalg import times, to_host
from .layers import Dense

__all__ = ["Linearized", "TrainResult", "jvp", "linearize", "train_mse", "vjp"]

# SciPy's explicit Runge-Kutta integrators. Implicit ones (Radau, BDF, LSODA) need the
# Jacobian of the gradient, a P x P matrix for P parameters: not an option for networks.
_FLOW_METHODS = ("RK45", "DOP853", "RK23")


def _sum_sq(r) -> float:
    """sum(r**2) without NumPy's BLAS: a BLAS call for a small vector wakes NumPy's own
    thread pool, whose threads then spin-wait and take the cores from fastntk's OpenMP
    threads for milliseconds (on 2 cores it made whole training runs 2-3x slower). On a
    CuPy array: computed on its device, the float read back."""
    if is_cupy(r):
        return float((r * r).sum())
    return float(np.einsum("ij,ij->", r, r))


# ---------------------------------------------------------------------------------------
# Parameter trees (fastntk's layout: (W, b) per Dense layer, () otherwise).


def _check_like(tree, like, name: str, xp=np) -> list:
    """tree as float64 arrays (of the namespace xp) with exactly the structure and shapes of
    the checked params `like`."""
    if not isinstance(tree, (list, tuple)) or len(tree) != len(like):
        raise ValueError(
            f"{name} must have the structure of params: a list of {len(like)} entries ((dW, db) for a Dense "
            f"layer, () otherwise), got {describe_sequence(tree)}"
        )
    out = []
    for k, (t, p) in enumerate(zip(tree, like)):
        where = f"{name}[{k}]"
        if not p:
            if t is not None and not (isinstance(t, (tuple, list)) and len(t) == 0):
                raise ValueError(f"{where}: layer {k} has no parameters, expected (), got {t!r}")
            out.append(())
            continue
        if not isinstance(t, (tuple, list)) or len(t) != 2:
            raise ValueError(f"{where}: expected a pair (W, b) like params[{k}], got {t!r}")
        W = finite_array(t[0], f"{where}: W", xp, shape=p[0].shape)
        if p[1] is None:
            if t[1] is not None:
                raise ValueError(f"{where}: layer {k} has no bias, so b must be None, got {t[1]!r}")
            b = None
        else:
            b = bias(t[1], where, p[1].shape[0], xp)
        out.append((W, b))
    return out


def _copy(tree) -> list:
    return [(p[0].copy(), None if p[1] is None else p[1].copy()) if p else () for p in tree]


def _zeros_like(tree) -> list:
    # np.zeros_like gives a CuPy array for a CuPy one (__array_function__)
    return [(np.zeros_like(p[0]), None if p[1] is None else np.zeros_like(p[1])) if p else () for p in tree]


def _axpy(alpha: float, x, y) -> list:
    """alpha * x + y, leaf by leaf (new arrays)."""
    return [
        (alpha * a[0] + b[0], None if a[1] is None else alpha * a[1] + b[1]) if a else ()
        for a, b in zip(x, y)
    ]


def _leaves(tree):
    for p in tree:
        if p:
            yield p[0]
            if p[1] is not None:
                yield p[1]


def _flatten(tree, xp=np):
    leaves = [a.ravel() for a in _leaves(tree)]
    return xp.concatenate(leaves) if leaves else xp.zeros(0)


def _unflatten(v: np.ndarray, like) -> list:
    """Views into v with the structure of like (slices of a contiguous vector stay contiguous)."""
    out, i = [], 0
    for p in like:
        if not p:
            out.append(())
            continue
        W = v[i : i + p[0].size].reshape(p[0].shape)
        i += p[0].size
        b = None
        if p[1] is not None:
            b = v[i : i + p[1].size]
            i += p[1].size
        out.append((W, b))
    return out


# ---------------------------------------------------------------------------------------
# The derivatives.


class _Pass:
    """A forward pass kept for derivatives.

    f : (n, m) outputs; inputs : {layer: (n, fan_in)} each Dense layer's input;
    derivs : {layer: (n, width)} each activation's derivative at its pre-activation.
    """

    __slots__ = ("f", "inputs", "derivs", "first_dense")

    def __init__(self, net, params, x):
        self.f, self.inputs, self.derivs = forward(net, params, x, keep=True)
        self.first_dense = min(self.inputs) if self.inputs else None


def _vjp(net, params, p: _Pass, g: np.ndarray) -> list:
    """Gradient of <g, f> with respect to every parameter: (n, m) cotangent -> params' layout."""
    grads = [()] * len(net.layers)
    xp = namespace({"cotangent": g}) if is_cupy(g) else np
    delta = xp.ascontiguousarray(g, dtype=xp.float64)  # d<g, f> / d h at the current layer's output
    for k in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[k]
        if isinstance(layer, Dense):
            W, b = params[k]
            c_w, c_b = multipliers(layer, W.shape[0])
            gW = matmul(p.inputs[k].T, delta, c_w)  # c_W h^T delta (h^T copied contiguous by _matmul)
            gb = None if b is None else c_b * delta.sum(axis=0)
            grads[k] = (gW, gb)
            if k == p.first_dense:  # gradients never flow into the inputs
                break
            delta = matmul(delta, W, c_w, trans_b=True)
        elif k in p.derivs:
            delta = delta * p.derivs[k]
    return grads


def _jvp(net, params, p: _Pass, tangent) -> np.ndarray:
    """Derivative of the outputs along a parameter direction: (n, m)."""
    dh = None  # d h along the tangent; None while it is zero (before the first Dense layer)
    for k, layer in enumerate(net.layers):
        if isinstance(layer, Dense):
            W, b = params[k]
            dW, db = tangent[k]
            c_w, c_b = multipliers(layer, W.shape[0])
            dz = matmul(p.inputs[k], dW, c_w)
            if dh is not None:
                dz += matmul(dh, W, c_w)
            if db is not None and c_b != 0.0:
                dz += c_b * db
            dh = dz
        elif dh is not None and k in p.derivs:
            dh = dh * p.derivs[k]
    return np.zeros_like(p.f) if dh is None else dh


def jvp(net, params, x, tangent):
    """Forward-mode derivative of the outputs along a direction in parameter space.

    Parameters
    ----------
    net : fastntk.Network
        A finite network (every Dense layer has an out_dim).
    params : list
        As returned by ``net.init``.
    x : array_like, shape (N, input_dim)
        Inputs, any real dtype (computed in float64).
    tangent : list
        A direction with the structure and shapes of params: ``(dW, db)`` per Dense layer
        (``db`` None where the layer has no bias), ``()`` otherwise.

    params, x and tangent may all be CuPy arrays on one device (computed there, CuPy
    results; see the module docstring), not a mix of NumPy and CuPy.

    Returns
    -------
    (f, df) : two float64 arrays of shape (N, n_out)
        The outputs ``f(x; params)`` and ``J(x; params) @ tangent`` (the directional
        derivative), computed layer by layer alongside the forward pass, without a Jacobian.
    """
    xp = namespace({"x": x, **tree_arrays(params, "params"), **tree_arrays(tangent, "tangent")})
    with device_context(x):
        checked, input_dim = check_params(net, params, xp)
        tangent = _check_like(tangent, checked, "tangent", xp)
        a = check_input(x, "x", input_dim, xp)
        p = _Pass(net, checked, a)
        return p.f, _jvp(net, checked, p, tangent)


def vjp(net, params, x, cotangent):
    """Reverse-mode derivative: the gradient of ``sum(cotangent * f(x; params))`` with respect
    to the parameters.

    Parameters
    ----------
    net : fastntk.Network
        A finite network (every Dense layer has an out_dim).
    params : list
        As returned by ``net.init``.
    x : array_like, shape (N, input_dim)
        Inputs, any real dtype (computed in float64).
    cotangent : array_like, shape (N, n_out)
        A weight per output; e.g. ``(f - y) / y.size`` gives the gradient of the loss
        ``||f - y||^2 / (2 y.size)``.

    params, x and cotangent may all be CuPy arrays on one device (computed there, CuPy
    results; see the module docstring), not a mix of NumPy and CuPy.

    Returns
    -------
    (f, grads)
        ``f`` float64 (N, n_out), the outputs; ``grads`` the gradient ``J(x; params)^T
        cotangent`` in params' layout (``(gW, gb)`` per Dense layer, float64, ``gb`` None where
        the layer has no bias; ``()`` otherwise).
    """
    xp = namespace({"x": x, **tree_arrays(params, "params"), "cotangent": cotangent})
    with device_context(x):
        checked, input_dim = check_params(net, params, xp)
        a = check_input(x, "x", input_dim, xp)
        p = _Pass(net, checked, a)
        g = finite_array(cotangent, "cotangent", xp, shape=p.f.shape)
        return p.f, _vjp(net, checked, p, g)


class Linearized:
    """The network linearized in its parameters around ``params0`` (Neural Tangents'
    ``nt.linearize``): ``f_lin(x; theta) = f(x; theta_0) + J(x; theta_0) (theta - theta_0)``.

    Build it with :func:`linearize`. Calling it evaluates ``f_lin`` by one forward pass at
    ``theta_0`` and a JVP along ``theta - theta_0``, without a Jacobian.

    Attributes
    ----------
    net : fastntk.Network
    params0 : list
        The expansion point (a float64 copy, in params' layout).
    """

    def __init__(self, net, params0):
        arrays = tree_arrays(params0, "params0")
        self._xp = namespace(arrays)
        with device_context(*arrays.values()):
            checked, input_dim = check_params(net, params0, self._xp)
        self.net = net
        self.params0 = _copy(checked)
        self._input_dim = input_dim

    def __repr__(self) -> str:
        return f"Linearized({self.net!r})"

    def __call__(self, params, x):
        """f_lin(x; params).

        Parameters
        ----------
        params : list
            Parameters with the structure and shapes of params0.
        x : array_like, shape (N, input_dim)

        Returns
        -------
        numpy.ndarray, float64, shape (N, n_out)
        """
        namespace({**tree_arrays(self.params0, "params0"), "x": x, **tree_arrays(params, "params")})
        with device_context(x):
            theta = _check_like(params, self.params0, "params", self._xp)
            a = check_input(x, "x", self._input_dim, self._xp)
            p = _Pass(self.net, self.params0, a)
            return p.f + _jvp(self.net, self.params0, p, _axpy(-1.0, self.params0, theta))

    apply = __call__

    def vjp(self, x, cotangent) -> list:
        """``J(x; theta_0)^T cotangent``: the gradient of ``sum(cotangent * f_lin(x; theta))``,
        the same for every theta. ``cotangent`` (N, n_out); returns params' layout."""
        namespace({**tree_arrays(self.params0, "params0"), "x": x, "cotangent": cotangent})
        with device_context(x):
            a = check_input(x, "x", self._input_dim, self._xp)
            p = _Pass(self.net, self.params0, a)
            g = finite_array(cotangent, "cotangent", self._xp, shape=p.f.shape)
            return _vjp(self.net, self.params0, p, g)


def linearize(net, params0) -> Linearized:
    """The linearized network around params0; see :class:`Linearized`.

    Parameters
    ----------
    net : fastntk.Network
        A finite network (every Dense layer has an out_dim).
    params0 : list
        The expansion point, as returned by ``net.init`` (NumPy or CuPy arrays; with CuPy
        the linearized network takes CuPy parameters and inputs on the same device).

    Returns
    -------
    Linearized
        ``lin(params, x)`` is ``f(x; params0) + J(x; params0) (params - params0)``.
    """
    return Linearized(net, params0)


# ---------------------------------------------------------------------------------------
# Training.


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_mse` returns. ``S`` is the shape of the requested times ``t``.

    Attributes
    ----------
    Arrays are NumPy arrays, or CuPy arrays on the inputs' device when train_mse was given
    CuPy arrays (except ``t`` and ``loss``, NumPy arrays either way).

    t : numpy.ndarray, float64, shape S
        The requested times (step counts when ``discrete=True``).
    fx_train : numpy.ndarray, float64, shape S + (N, n_out)
        Outputs on the training points (S + (N,) for 1-D targets).
    fx_test : numpy.ndarray or None, float64, shape S + (M, n_out)
        Outputs on ``x_test`` (S + (M,) for 1-D targets); None without ``x_test``.
    loss : numpy.ndarray, float64, shape S
        ``||f(X) - Y||^2 / (2 n)``, ``n = y_train.size``.
    ntk_train : numpy.ndarray or None, float64
        With ``get_ntk``: the empirical NTK on the training points, S + (N, N) with
        ``trace_axes=(-1,)``, S + (N, N, n_out, n_out) with ``()``.
    ntk_test_train : numpy.ndarray or None, float64
        With ``get_ntk`` and ``x_test``: the empirical NTK between test and training points,
        S + (M, N) or S + (M, N, n_out, n_out).
    params : list
        The parameters at the largest requested time.
    n_grad : int
        Number of gradient evaluations on the training set (steps, or the ODE solver's
        evaluations).
    """

    t: np.ndarray
    fx_train: np.ndarray
    fx_test: np.ndarray | None
    loss: np.ndarray
    ntk_train: np.ndarray | None
    ntk_test_train: np.ndarray | None
    params: list
    n_grad: int


class _Model:
    """The network being trained, evaluated on fixed training (and test) points.

    state: the parameters (nonlinear) or their displacement theta - theta_0 (linearized),
    in params' layout.
    """

    def __init__(self, net, params0, x_train, x_test, linearized: bool):
        self.net, self.params0, self.linearized = net, params0, linearized
        self.x_train, self.x_test = x_train, x_test
        if linearized:  # the forward passes at theta_0, kept for every JVP and VJP
            self.p_train = _Pass(net, params0, x_train)
            self.p_test = None if x_test is None else _Pass(net, params0, x_test)
            self._ntk = None

    def initial_state(self):
        return _zeros_like(self.params0) if self.linearized else _copy(self.params0)

    def params(self, state):
        return _axpy(1.0, state, self.params0) if self.linearized else state

    def outputs_and_grad(self, state):
        """(training outputs (N, m), a function: cotangent (N, m) -> its gradient, params' layout)."""
        if self.linearized:
            p = self.p_train
            f = p.f + _jvp(self.net, self.params0, p, state)
            return f, (lambda r: _vjp(self.net, self.params0, p, r))
        p = _Pass(self.net, state, self.x_train)
        return p.f, (lambda r: _vjp(self.net, state, p, r))

    def train_outputs(self, state):
        if self.linearized:
            return self.p_train.f + _jvp(self.net, self.params0, self.p_train, state)
        return forward(self.net, state, self.x_train, keep=False)[0]

    def test_outputs(self, state):
        if self.linearized:
            return self.p_test.f + _jvp(self.net, self.params0, self.p_test, state)
        return forward(self.net, state, self.x_test, keep=False)[0]

    def ntk(self, state, trace_axes):
        """(ntk_train, ntk_test_train or None): constant, at theta_0, for the linearized network."""
        if self.linearized:
            if self._ntk is None:
                self._ntk = self._empirical(self.params0, trace_axes)
            return self._ntk
        return self._empirical(state, trace_axes)

    def _empirical(self, params, trace_axes):
        names = ("ntk",)
        kernels = _engine.empirical_gpu if is_cupy(self.x_train) else empirical.kernels
        k = kernels(self.net, params, self.x_train, None, names, trace_axes)["ntk"]
        kt = None
        if self.x_test is not None:
            kt = kernels(self.net, params, self.x_test, self.x_train, names, trace_axes)["ntk"]
        return k, kt


def _diverged(where: str, loss: float, lr: float, n: float, discrete: bool):
    if discrete:
        cause = (
            f"Gradient-descent steps on this loss are stable only for learning_rate < 2 n / lambda_max "
            f"(lambda_max: of the empirical NTK; n = y_train.size = {int(n)}; see "
            f"fastntk.predict.max_learning_rate); learning_rate = {lr!r}"
        )
    else:
        cause = "The gradient flow itself blew up: the outputs or parameters overflowed"
    return FloatingPointError(f"training diverged: the loss is {loss!r} {where}. {cause}")


def train_mse(
    net,
    params,
    x_train,
    y_train,
    t,
    *,
    learning_rate: float = 1.0,
    x_test=None,
    discrete: bool = False,
    linearized: bool = False,
    get_ntk: bool = False,
    trace_axes=(-1,),
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-8,
) -> TrainResult:
    """Train a finite network by full-batch gradient descent or gradient flow on MSE.

    The loss is ``||f(X) - Y||^2 / (2 n)`` with ``n = y_train.size`` and time enters as
    ``tau = learning_rate * t``, the conventions of :func:`fastntk.predict.gradient_descent_mse`,
    whose outputs a wide network's approach (module docstring).

    Parameters
    ----------
    net : fastntk.Network
        A finite network (every Dense layer has an out_dim).
    params : list
        The initial parameters, as returned by ``net.init`` (not modified). NumPy arrays, or
        CuPy arrays: then x_train, y_train and x_test must be CuPy arrays on the same device,
        and everything is computed there (module docstring, "CuPy arrays").
    x_train : array_like, shape (N, input_dim)
        Training inputs, any real dtype (computed in float64).
    y_train : array_like, shape (N, n_out), or (N,) for a network with one output
        Targets. With 1-D targets the outputs have no output axis either.
    t : float, int or array_like of any shape S
        Times at which to record the outputs: non-negative step counts (integers) when
        ``discrete=True``, non-negative times when ``discrete=False``; any order, repeats
        allowed. Training runs to the largest.
    learning_rate : float, > 0
    x_test : array_like, shape (M, input_dim), optional
        Points whose outputs are recorded too (not trained on).
    discrete : bool
        True: gradient-descent steps ``theta <- theta - learning_rate * grad L``. False
        (the default, as in predict): the gradient flow ``d theta / dt = -learning_rate *
        grad L``, integrated in ``tau`` by SciPy's ``method`` with error control
        (``rtol``, ``atol`` per parameter), outputs read off its dense output.
    linearized : bool
        Train the linearized network ``f(x; theta_0) + J(x; theta_0)(theta - theta_0)``
        (one JVP and one VJP per gradient, no Jacobian) instead of the network itself.
    get_ntk : bool
        Also return the empirical NTK at every recorded time (for the linearized network it
        is the one at ``theta_0``, the same at every time).
    trace_axes : (-1,) or ()
        Layout of the returned NTK: the mean over outputs, or the full blocks (as
        ``net.empirical_ntk``).
    method : {'RK45', 'DOP853', 'RK23'}
        Explicit Runge-Kutta integrator of ``scipy.integrate`` for the flow.
    rtol, atol : float
        The integrator's tolerances per parameter (flow only); the outputs then come out
        within about ``rtol`` of their scale (1e-5 and 1e-8 by default; tighten both for
        more digits). ``atol`` is absolute: the default suits parameters of order one (ntk
        parameterization); in the standard one weights are of order ``W_std / sqrt(fan_in)``
        and a smaller ``atol`` may be needed. With Relu-like activations the gradient jumps
        where a pre-activation crosses a kink, and the step-size control takes many small
        steps there, the more the tighter rtol is (on a width-64 Relu net, 10x tighter rtol
        cost about 8x the evaluations); ``discrete=True`` with a small learning rate (the
        explicit Euler method, error O(learning_rate)) is then an alternative.

    Returns
    -------
    TrainResult
        ``t``, ``fx_train``, ``fx_test``, ``loss``, ``ntk_train``, ``ntk_test_train``,
        ``params`` (at the largest time) and ``n_grad``; shapes in :class:`TrainResult`.

    Raises
    ------
    FloatingPointError
        If the loss becomes non-finite (a learning rate above the stable maximum, for steps).
    TypeError
        If some of params, x_train, y_train, x_test are CuPy arrays and others are not
        (naming the first that is not).
    ValueError
        If CuPy arrays among them live on different devices (naming both).
    """
    with device_context(x_train):  # CuPy inputs: their device is the current one throughout
        problem = _Problem(net, params, x_train, y_train, t, learning_rate, x_test, discrete, linearized, get_ntk,
                           trace_axes, method, rtol, atol)  # fmt: skip
        model = _Model(net, problem.params, problem.x_train, problem.x_test, linearized)
        records = _Records(problem, model)
        state = model.initial_state()
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported
            run = _steps if discrete else _flow
            state, n_grad = run(model, state, problem, records.record)
        return records.result(_copy(model.params(state)), n_grad)


class _Problem:
    """train_mse's arguments, checked, all before any work.

    params : checked parameters; x_train (N, d), x_test (M, d) or None; y (N, m) float64 and
    flat (1-D targets); n = y.size; lr; trace (trace_axes); t_flat and shape: the requested
    times and their shape; times: the distinct ones, ascending, and inverse: t_flat =
    times[inverse]; method, rtol, atol (the flow's).
    """

    def __init__(self, net, params, x_train, y_train, t, learning_rate, x_test, discrete, linearized,
                 get_ntk, trace_axes, method, rtol, atol):  # fmt: skip
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, **tree_arrays(params, "params")}
        self.xp = xp = namespace(arrays)
        self.params, input_dim = check_params(net, params, xp)
        if input_dim is None:
            raise ValueError(f"net has no Dense layer, so no parameters to train: {net!r}")
        self.x_train = check_input(x_train, "x_train", input_dim, xp)
        self.x_test = None if x_test is None else check_input(x_test, "x_test", self.x_train.shape[1], xp)
        for name, value in (("discrete", discrete), ("linearized", linearized), ("get_ntk", get_ntk)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.get_ntk, self.trace_axes = get_ntk, trace_axes
        if get_ntk and xp is not np:  # the empirical NTK of CuPy arrays runs on fastntk's CUDA backend
            from . import _cuda_backend  # noqa: PLC0415

            _cuda_backend.require("get_ntk=True with CuPy arrays computes the empirical NTK on the GPU")
        self.lr = real_number(learning_rate, "learning_rate", low=0, low_open=True)
        self.trace = empirical.parse_trace_axes(trace_axes)
        if self.x_train.shape[0] == 0:
            raise ValueError(f"x_train must have at least one point, got shape {self.x_train.shape}")
        self.y, self.flat = self._targets(y_train, output_dim(self.params, input_dim))
        self.n = float(self.y.size)
        self.t_flat, self.shape = times(t, "t")
        if not np.isfinite(self.t_flat).all():
            raise ValueError(f"t must be finite (a network is trained for a finite time), got {t!r}")
        if discrete and not np.all(self.t_flat == np.floor(self.t_flat)):
            raise ValueError(
                f"t counts gradient-descent steps when discrete=True: it must hold non-negative integers, got {t!r}"
            )
        self.method, self.rtol, self.atol = method, rtol, atol
        if not discrete:
            if not isinstance(method, str) or method.upper() not in _FLOW_METHODS:
                raise ValueError(
                    f"method must be one of {_FLOW_METHODS} (explicit Runge-Kutta), got {method!r}"
                )
            self.method = method.upper()
            self.rtol = real_number(rtol, "rtol", low=0, low_open=True)
            self.atol = real_number(atol, "atol", low=0, low_open=True)
        self.times, self.inverse = np.unique(self.t_flat, return_inverse=True)  # ascending

    def _targets(self, y_train, m: int):
        """(y as float64 (N, m), whether it was given 1-D)."""
        n_points = self.x_train.shape[0]
        y = real_array(y_train, "y_train", self.xp)
        flat = y.ndim == 1
        expected = (n_points,) if (flat and m == 1) else (n_points, m)
        if y.shape != expected:
            raise ValueError(
                f"y_train must have shape {(n_points, m)} (x_train rows, network outputs)"
                + (f" or {(n_points,)}" if m == 1 else "")
                + f", got {y.shape}"
            )
        return finite_array(y, "y_train", self.xp).reshape(n_points, m), flat


class _Records:
    """What train_mse records at each distinct time, allocated up front (a MemoryError
    before any work rather than at the end), and the TrainResult made from it."""

    def __init__(self, problem: _Problem, model: _Model):
        self.problem, self.model = problem, model
        xp = problem.xp
        n_times = problem.times.size
        n_points, m = problem.y.shape
        m_test = 0 if problem.x_test is None else problem.x_test.shape[0]
        self.train = xp.empty((n_times, n_points, m))
        self.test = None if problem.x_test is None else xp.empty((n_times, m_test, m))
        self.loss = np.empty(n_times)  # on the host: one float per time, read back anyway
        self.ntk = self.ntk_test = None
        if problem.get_ntk:
            block = (n_points, n_points) if problem.trace else (n_points, n_points, m, m)
            block_t = (m_test, n_points) if problem.trace else (m_test, n_points, m, m)
            if xp is np:
                self.ntk = _arrays.empty_kernels(("ntk",), (n_times,) + block)["ntk"]
                if problem.x_test is not None:
                    self.ntk_test = _arrays.empty_kernels(("ntk",), (n_times,) + block_t)["ntk"]
            else:
                from . import _cuda_backend  # noqa: PLC0415

                what = "empirical NTK at every recorded time"
                self.ntk = _cuda_backend.empty_device(xp, (n_times,) + block, xp.float64, what)
                if problem.x_test is not None:
                    self.ntk_test = _cuda_backend.empty_device(xp, (n_times,) + block_t, xp.float64, what)

    def record(self, i: int, state, f_train) -> None:
        """Record the i-th distinct time: the state and its training outputs f_train."""
        r = f_train - self.problem.y
        self.train[i] = f_train
        self.loss[i] = 0.5 * _sum_sq(r) / self.problem.n
        if self.test is not None:
            self.test[i] = self.model.test_outputs(state)
        if self.ntk is not None:
            k, kt = self.model.ntk(state, self.problem.trace_axes)
            self.ntk[i] = k
            if self.ntk_test is not None:
                self.ntk_test[i] = kt

    def result(self, params, n_grad: int) -> TrainResult:
        """The TrainResult: every record at the requested times, in their shape."""
        inverse, shape = self.problem.inverse, self.problem.shape

        def at_times(a):  # (T, ...) -> S + (...)
            if a is None:
                return None
            index = self.problem.xp.asarray(inverse) if is_cupy(a) else inverse
            return a[index].reshape(shape + a.shape[1:])

        def outputs(a):  # S + (points, m), or S + (points,) for 1-D targets
            out = at_times(a)
            return out[..., 0] if out is not None and self.problem.flat else out

        return TrainResult(
            t=self.problem.t_flat.reshape(shape),
            fx_train=outputs(self.train),
            fx_test=outputs(self.test),
            loss=at_times(self.loss),
            ntk_train=at_times(self.ntk),
            ntk_test_train=at_times(self.ntk_test),
            params=params,
            n_grad=n_grad,
        )


def _steps(model, state, problem: _Problem, record):
    """Gradient-descent steps up to the last of problem.times, recording at each of them."""
    y, n, lr, steps = problem.y, problem.n, problem.lr, problem.times
    k, i = 0, 0
    last = int(steps[-1])
    n_grad = 0
    while True:
        f, grad_of = model.outputs_and_grad(state)
        r = f - y
        loss = 0.5 * _sum_sq(r) / n
        if not math.isfinite(loss):
            raise _diverged(f"after {k} steps", loss, lr, n, True)
        while i < steps.size and steps[i] == k:
            record(i, state, f)
            i += 1
        if k == last:
            return state, n_grad
        state = _axpy(-lr, grad_of(r / n), state)
        n_grad += 1
        k += 1


def _flow(model, state, problem: _Problem, record):
    """The gradient flow in tau = lr t, integrated by SciPy, recorded at problem.times."""
    from scipy import integrate

    y, n, lr, taus_t = problem.y, problem.n, problem.lr, problem.times
    method, rtol, atol = problem.method, problem.rtol, problem.atol

    # With CuPy the integrator's state (the P parameters, a float64 vector) lives on the host,
    # where SciPy works: every evaluation copies it to the device and the gradient back
    # (2 P floats over the bus); the network's passes stay on the device.
    xp = problem.xp
    like = state
    v0 = to_host(_flatten(state, xp))
    taus = lr * taus_t
    count = [0]

    def rhs(_tau, v):
        s = _unflatten(v if xp is np else xp.asarray(v), like)
        f, grad_of = model.outputs_and_grad(s)
        g = to_host(_flatten(grad_of((f - y) / n), xp))
        count[0] += 1
        if not np.isfinite(g).all():
            raise _diverged(f"at tau = learning_rate * t = {_tau!r}", float("nan"), lr, n, False)
        return -g

    def record_at(i, v):
        s = _unflatten(xp.asarray(np.ascontiguousarray(v)), like)
        record(i, s, model.train_outputs(s))

    i = 0
    while i < taus.size and taus[i] == 0.0:
        record_at(i, v0)
        i += 1
    if i == taus.size:
        return _unflatten(xp.asarray(v0), like), 0
    solver = getattr(integrate, method)(rhs, 0.0, v0, taus[-1], rtol=rtol, atol=atol)
    while i < taus.size:
        message = solver.step()
        if solver.status == "failed":
            raise RuntimeError(f"the gradient-flow integration failed at tau = {solver.t!r}: {message}")
        if i < taus.size and taus[i] <= solver.t:
            interpolant = solver.dense_output()
            while i < taus.size and taus[i] <= solver.t:
                record_at(i, solver.y if taus[i] == solver.t else interpolant(taus[i]))
                i += 1
    return _unflatten(solver.y.copy() if xp is np else xp.asarray(solver.y), like), count[0]
