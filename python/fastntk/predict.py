"""What an infinitely wide network trained by gradient descent predicts, without training it.

The functions and their conventions are Neural Tangents' (``neural_tangents.predict``,
version 0.6.5); see DESIGN.md section 2.1:

- time enters as ``tau = learning_rate * t``;
- the MSE functions (:func:`gradient_descent_mse`, :func:`gradient_descent_mse_ensemble`)
  minimize ``||f - y||^2 / (2 n)`` with ``n = y_train.size``, so the training outputs follow
  ``f_t - y = exp(-Theta tau / n) (f_0 - y)``;
- :func:`gradient_descent` integrates ``df/dtau = -Theta grad_f loss`` (no ``1/n``: it is
  in the loss);
- ``diag_reg`` adds ``diag_reg * trace(K) / N * I`` to the training kernel, or
  ``diag_reg * I`` with ``diag_reg_absolute_scale=True``.

Kernels are scalar, shape (N, N) for the training set and (M, N) between test and training
points: the matrix-valued kernel is ``Theta x I_{n_out}`` (DESIGN.md section 1), so targets
``y_train`` of shape (N, n_out) have independent columns, and ``trace_axes`` must be ``(-1,)``.
``y_train`` of shape (N,) is accepted and the outputs then have no output axis either.

Where Neural Tangents returns NaN, these functions return the limit: a training kernel that
is singular to working precision (duplicated points, more points than features in a linear
network) is solved with the Moore-Penrose pseudo-inverse from its symmetric
eigendecomposition, and its zero modes do not move at finite times; a
:class:`SingularKernelWarning` says when that happens.

NumPy arrays are computed with NumPy/SciPy (LAPACK), CuPy arrays with CuPy (cuSOLVER/cuBLAS),
and results come back as the input's kind. Everything is computed in float64.

Ctrl-C: most of the time of a large problem is one LAPACK call (the Cholesky factorization
or the eigendecomposition of the training kernel), which cannot be stopped once started.
Called from the main thread, it runs in a worker thread while the caller waits, so that
Ctrl-C raises KeyboardInterrupt at once; the abandoned call still runs to its end in the
background (taking CPU meanwhile, and delaying the interpreter's exit until it ends) and its
result is discarded. The next call works normally.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import numbers
import warnings
from typing import Any

import numpy as np

from . import _predict_linalg as _la
from ._args import KERNEL_NAMES, parse_get
from ._cg import ConvergenceWarning
from ._predict_linalg import SingularKernelWarning
from ._progress import progress_bar

__all__ = [
    "ConvergenceWarning",
    "Gaussian",
    "LearningRateWarning",
    "ODEState",
    "SingularKernelWarning",
    "gp_inference",
    "gradient_descent",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "kernel_regression",
    "max_learning_rate",
    "momentum",
]


class LearningRateWarning(RuntimeWarning):
    """Discrete gradient-descent steps with a learning rate at or above the stable maximum."""


Gaussian = collections.namedtuple("Gaussian", ["mean", "covariance"])
Gaussian.__doc__ = """Mean and covariance of a Gaussian over outputs.

mean : float64 (..., M, n_out), or (..., M) for 1-D targets
covariance : float64 (..., M, M), shared by every output column (the kernel is Theta x I)
"""


@dataclasses.dataclass
class ODEState:
    """State of :func:`gradient_descent`'s ODE: outputs and, with momentum, their velocities.

    Attributes
    ----------
    fx_train : array (N, n_out) or None
    fx_test : array (M, n_out) or None
    qx_train, qx_test : array or None
        Velocities d f / d tau (only with ``momentum``); None means zero at the start.
    """

    fx_train: Any = None
    fx_test: Any = None
    qx_train: Any = None
    qx_test: Any = None


_STACK = 4  # warnings.warn stacklevel that points at the user's call of a predict_fn


def _finish(out, flat: bool):
    """Drop the output axis again when the targets were 1-D."""
    return out[..., 0] if flat else out


def _check_requested(fx_train_0, fx_test_0, k_test_train) -> None:
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("fx_test_0 is given but k_test_train is None: test predictions need k_test_train")


def _batched(vecs, coef, c):
    """``vecs @ (coef[t][:, None] * c)`` for every time t as one matrix product.

    vecs : (P, N); coef : (T, N); c : (N, k)  ->  (T, P, k)
    """
    t, n = coef.shape
    k = c.shape[1]
    z = (coef.T[:, :, None] * c[:, None, :]).reshape(n, t * k)
    out = vecs @ z
    return out.reshape(vecs.shape[0], t, k).transpose(1, 0, 2)


# ---------------------------------------------------------------------------------------
# Kernel regression


def kernel_regression(
    k_train_train,
    y_train,
    k_test_train=None,
    ridge: float = 0.0,
    *,
    solver: str = "auto",
    tol: float = 1e-8,
    maxiter=None,
    preconditioner="nystrom",
    n_landmarks=None,
    seed=0,
    callback=None,
    progress=None,
):
    """Ridgeless (or ridge) kernel regression ``K(x, X) (K(X, X) + ridge I)^+ y``.

    The infinite-time prediction of gradient flow on MSE from zero initial outputs.

    ``solver='direct'``: ``K(X, X) + ridge I`` is solved by Cholesky when it is positive
    definite to working precision; otherwise (Cholesky fails, or LAPACK's reciprocal condition
    estimate is at or below ``N eps``) by the Moore-Penrose pseudo-inverse from its symmetric
    eigendecomposition, where eigenvalues at or below ``N * eps * max |lambda|`` count as
    zero (``eps`` of the kernel's dtype), with a :class:`SingularKernelWarning` that says so.

    ``solver='cg'``: matrix-free. Preconditioned conjugate gradients on
    ``(K + ridge I) alpha = y``, one product with K per iteration for all output columns
    together (each column with its own recurrence and convergence test, stopping at
    ``||y - (K + ridge I) alpha|| <= tol ||y||``), with a Nystrom preconditioner (uniformly
    drawn landmarks; Woodbury with a Cholesky of its m x m core). With a
    :class:`fastntk.LazyKernel` (or :class:`fastntk.dask.DaskKernel`) every product is computed
    tile by tile and K is never stored, so N is bounded by time, not memory; the test
    predictions ``K(x, X) alpha`` are products too. It needs ``ridge > 0``: without a ridge
    the system is as ill-conditioned as K itself (NTK eigenvalues decay polynomially, to
    round-off), CG would stall, and a singular K has no unique solution; a ValueError then
    suggests a ridge. Iterations stop at ``maxiter`` with a
    :class:`ConvergenceWarning`.

    ``solver='auto'`` (default): ``'direct'`` for kernel matrices (already in memory); for a
    lazy kernel, ``'direct'`` when about three N x N float64 matrices (the kernel, its
    symmetrized copy and its factor) fit in half of the memory available now, else ``'cg'``.

    Parameters
    ----------
    k_train_train : array (N, N) or LazyKernel
        Symmetric training kernel (NNGP or NTK), any real dtype, or a lazy kernel
        (:class:`fastntk.LazyKernel` with x2=None, or a :class:`fastntk.dask.DaskKernel`).
    y_train : array (N,) or (N, n_out)
        Targets; columns are independent.
    k_test_train : array (M, N) or LazyKernel, optional
        Test-train kernel (a lazy one: ``LazyKernel(net, x_test, x_train)``). None predicts on
        the training points, ``K (K + ridge I)^+ y`` (``y`` itself when ``ridge = 0`` and ``K``
        is positive definite).
    ridge : float, >= 0
        Absolute ridge added to the diagonal (> 0 for ``solver='cg'``).
    solver : {'auto', 'direct', 'cg'}, keyword-only
    tol : float in (0, 1), keyword-only
        CG: relative residual at which a column stops.
    maxiter : int, optional, keyword-only
        CG: the most iterations (default ``max(100, min(N, 1000))``).
    preconditioner : {'nystrom', None}, keyword-only
        CG: the Nystrom preconditioner, or none.
    n_landmarks : int, optional, keyword-only
        CG: Nystrom landmarks m (default ``min(N, 1000)``, fewer when N m float64 would pass
        32 MiB, never fewer than ``min(N, 100)``). More landmarks: fewer iterations, more memory
        (two N x m arrays).
    seed : int or numpy.random.Generator, keyword-only
        CG: draws the landmarks.
    callback : callable, optional, keyword-only
        CG: ``callback(iteration, residuals)`` after every iteration, ``residuals`` the
        relative residual of each column (n_out,).
    progress : None, True or False, keyword-only
        CG: a progress bar over the iterations, with the largest residual (None: automatic,
        in a terminal once the solve has taken 2 s; True: always; False: never).

    Returns
    -------
    float64 array (M, n_out) or (M,) like ``y_train`` (N rows without ``k_test_train``),
    NumPy or CuPy like the kernels (NumPy for lazy kernels).
    """
    if solver not in ("auto", "direct", "cg"):
        raise ValueError(f"kernel_regression: solver must be 'auto', 'direct' or 'cg', got {solver!r}")
    lazy_train, lazy_test = _is_lazy(k_train_train), _is_lazy(k_test_train)
    if lazy_train or lazy_test or solver == "cg":
        return _kernel_regression_operator(
            k_train_train, y_train, k_test_train, ridge, solver, tol, maxiter, preconditioner,
            n_landmarks, seed, callback, progress,
        )  # fmt: skip
    xp = _la.namespace(k_train_train, y_train, k_test_train)
    k, eps = _la.kernel_matrix(xp, k_train_train, "k_train_train")
    y, flat = _la.targets(xp, y_train, k.shape[0])
    ridge = _la.positive_real(ridge, "ridge", allow_zero=True)
    kt = None if k_test_train is None else _la.cross_kernel(xp, k_test_train, "k_test_train", k.shape[0])
    fac = _la.regularized(xp, k, eps, ridge, True, "k_train_train")
    if kt is not None:
        return _finish(kt @ fac.solve(y, stacklevel=4), flat)
    # On the training points K A^+ y = A A^+ y - ridge A^+ y with A = K + ridge I: exact,
    # and free of the cancellation in K @ (A^+ y) when A is ill-conditioned.
    out = fac.project(y, stacklevel=4)
    if ridge:
        out -= ridge * fac.solve(y, stacklevel=4)
    return _finish(out, flat)


def _is_lazy(k) -> bool:
    from ._matvec import LazyKernel

    return isinstance(k, LazyKernel)


def _kernel_regression_operator(kk, y_train, kt, ridge, solver, tol, maxiter, preconditioner,
                                n_landmarks, seed, callback, progress):  # fmt: skip
    """kernel_regression with a lazy kernel on either side, or with solver='cg'."""
    from . import _cg
    from ._progress import check_progress

    owner = "kernel_regression"
    if _is_lazy(kk):
        if not kk.symmetric:
            raise ValueError(
                f"{owner}: k_train_train must be the symmetric kernel of the training points "
                f"(LazyKernel(net, x_train), x2=None), got {kk!r}"
            )
        n = kk.shape[0]
    else:
        if _la.namespace(kk, y_train, None if _is_lazy(kt) else kt) is not np:
            raise TypeError(f"{owner}: solver='cg' and lazy kernels take NumPy arrays, not CuPy arrays")
        kk, _ = _la.kernel_matrix(np, kk, "k_train_train")
        n = kk.shape[0]
    y, flat = _la.targets(np, y_train, n)
    ridge = _la.positive_real(ridge, "ridge", allow_zero=True)
    if kt is not None:
        if _is_lazy(kt):
            if kt.shape[1] != n:
                raise ValueError(
                    f"{owner}: k_test_train must have shape (M, N) with N = {n} training points (as "
                    f"k_train_train), got shape {kt.shape}"
                )
        else:
            kt = _la.cross_kernel(np, kt, "k_test_train", n)
    tol, maxiter, preconditioner, n_landmarks = _cg.check_options(
        n, tol, maxiter, preconditioner, n_landmarks, owner
    )
    if callback is not None and not callable(callback):
        raise TypeError(f"{owner}: callback must be callable or None, got {callback!r}")
    progress = check_progress(progress)
    if solver == "auto":
        solver = "direct" if not _is_lazy(kk) or _cg.dense_fits(n) else "cg"
        why = " (chosen by solver='auto': K would not fit in memory)"
    else:
        why = ""
    if solver == "direct":
        k = kk.to_dense() if _is_lazy(kk) else kk
        fac = _la.regularized(np, k, np.finfo(np.float64).eps, ridge, True, "k_train_train")
        del k
        if kt is None:
            out = fac.project(y, stacklevel=5)
            if ridge:
                out -= ridge * fac.solve(y, stacklevel=5)
            return _finish(out, flat)
        alpha = fac.solve(y, stacklevel=5)
        return _finish(kt @ alpha, flat)
    if ridge <= 0:
        raise ValueError(
            f"{owner}: solver='cg'{why} needs ridge > 0, got ridge = {ridge!r}: without a ridge the "
            "system is as ill-conditioned as the kernel itself and conjugate gradients stall (a "
            "singular kernel has no unique solution at all). Give a small ridge, e.g. 1e-6 times "
            "the mean of the kernel's diagonal, or use solver='direct' (pseudo-inverse) when K fits"
        )
    op = kk if _is_lazy(kk) else _cg.DenseOperator(kk)
    res = _cg.solve(
        op, y, ridge, tol=tol, maxiter=maxiter, preconditioner=preconditioner,
        n_landmarks=n_landmarks, seed=seed, callback=callback, progress=progress, stacklevel=4,
    )  # fmt: skip
    if kt is None:
        # K alpha = y - r - ridge alpha (r the residual CG tracks): no extra pass over K.
        return _finish(y - res.residual - ridge * res.x, flat)
    return _finish(kt @ res.x, flat)


# ---------------------------------------------------------------------------------------
# Gradient descent on MSE, closed form


def _flow_factor(xp, e, tau, n: float):
    """``expm1(-lambda tau / n)`` per (time, mode): (T, N); 0 on the modes treated as zero."""
    tau = xp.asarray(tau)
    x = tau[:, None] * (e.lam_safe[None, :] / n)
    return xp.where(e.mask[None, :], xp.expm1(-x), 0.0)


def _discrete_factor(xp, e, steps, lr: float, n: float):
    """``(1 - lr lambda / n)^k - 1`` per (step count, mode): (T, N); 0 on the zero modes.

    For ``a = lr lambda / n < 1`` it is ``expm1(k log1p(-a))``, accurate for small a and
    large k; for ``a >= 1`` (the base is <= 0, only below the stable maximum when a < 2)
    the integer power is taken directly.
    """
    k = xp.asarray(steps)[:, None]
    a = lr * e.lam_safe[None, :] / n
    small = a < 1.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        smooth = xp.expm1(k * xp.log1p(-xp.where(small, a, 0.0)))
        power = xp.power(1.0 - a, k) - 1.0
    return xp.where(e.mask[None, :], xp.where(small, smooth, power), 0.0)


def gradient_descent_mse(
    k_train_train,
    y_train,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes=(-1,),
    *,
    discrete: bool = False,
):
    """Outputs of gradient descent on MSE in function space, at any time, in closed form.

    With ``n = y_train.size`` and ``tau = learning_rate * t`` the training outputs obey
    ``df/dtau = -Theta (f - y) / n``, so (``A = Theta + reg I``, the regularized kernel)

        f_t(X) = f_0(X) + (exp(-A tau / n) - I) (f_0(X) - y)
        f_t(x) = f_0(x) + Theta(x, X) A^+ (exp(-A tau / n) - I) (f_0(X) - y).

    One symmetric eigendecomposition of ``A`` serves every finite ``t`` and is cached;
    ``t=None`` solves by Cholesky instead (cached too), like :func:`kernel_regression`.
    Modes whose eigenvalue is at or below ``N * eps * max |lambda|`` are treated as exactly
    zero: they do not move (a :class:`SingularKernelWarning` says so); the exact limit
    ``-tau / n`` of ``expm1(-lambda tau / n) / lambda`` multiplies the test kernel's
    component along that mode, which is zero for a positive semi-definite kernel on
    train and test points together.

    Parameters
    ----------
    k_train_train : array (N, N)
        Training kernel (usually the NTK).
    y_train : array (N,) or (N, n_out)
    learning_rate : float, > 0
    diag_reg : float, >= 0
        Diagonal regularizer: ``diag_reg * trace(K) / N`` is added to the diagonal
        (``diag_reg`` itself with ``diag_reg_absolute_scale=True``).
    diag_reg_absolute_scale : bool
    trace_axes : (-1,)
        The only layout of scalar kernels (kept for Neural Tangents' signature).
    discrete : bool, keyword-only
        False: gradient flow. True: discrete gradient-descent steps
        ``f_{k+1} = f_k - learning_rate * A (f_k - y) / n``, i.e. ``(I - learning_rate A / n)^k``;
        ``t`` then counts steps (non-negative integers or ``inf``), and a learning rate at or
        above the stable maximum ``2 n / lambda_max`` (:func:`max_learning_rate`) warns
        (:class:`LearningRateWarning`) with that maximum.

    Returns
    -------
    predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)
        ``t`` : None (= inf), a scalar or an array of any shape of times >= 0.
        ``fx_train_0`` : initial training outputs, scalar or broadcastable to
        ``y_train.shape``; None for no training predictions. ``fx_test_0`` : initial test
        outputs (M, n_out) or scalar; None for no test predictions. ``k_test_train`` :
        array (M, N), needed for test predictions. Returns ``fx_train_t``, ``fx_test_t``
        or both (a tuple, train first), each float64 of shape ``t.shape + (points, n_out)``
        (no output axis for 1-D targets). At ``t=None`` the training outputs are
        ``f_0 + A A^+ (y - f_0)``, which is ``y`` when ``A`` is positive definite.
    """
    xp = _la.namespace(k_train_train, y_train)
    k, eps = _la.kernel_matrix(xp, k_train_train, "k_train_train")
    n_train = k.shape[0]
    y, flat = _la.targets(xp, y_train, n_train)
    _la.check_trace_axes(trace_axes, 1 if flat else 2)
    lr = _la.positive_real(learning_rate, "learning_rate")
    diag_reg = _la.positive_real(diag_reg, "diag_reg", allow_zero=True)
    if not isinstance(discrete, bool):
        raise TypeError(f"discrete must be True or False, got {discrete!r}")
    n = float(y.size)
    fac = _la.regularized(xp, k, eps, diag_reg, bool(diag_reg_absolute_scale), "k_train_train")
    del k
    stable = _check_discrete_rate(fac, lr, n) if discrete else True

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        f0, ft0, kt = _initial_outputs(xp, y, n_train, fx_train_0, fx_test_0, k_test_train)
        want_train = fx_train_0 is not None
        if t is None and stable:
            return _mse_at_infinity(fac, y, flat, f0, ft0, kt, want_train)
        tau, shape = (np.array([np.inf]), ()) if t is None else _la.times(t)
        if discrete and not np.all((tau == np.floor(tau)) | np.isinf(tau)):
            raise ValueError(
                f"t counts gradient-descent steps when discrete=True: it must hold non-negative "
                f"integers (or inf), got {t!r}"
            )
        e = fac.eigen()
        fac.warn_if_degenerate(stacklevel=_STACK - 1)  # called from predict_fn itself
        phi = _discrete_factor(xp, e, tau, lr, n) if discrete else _flow_factor(xp, e, lr * tau, n)
        return _mse_at_times(e, phi, shape, y, flat, f0, ft0, kt, want_train)

    return predict_fn


def _check_discrete_rate(fac, lr: float, n: float) -> bool:
    """Whether discrete steps of ``lr`` are below the stable maximum ``2 n / lambda_max``;
    warns (:class:`LearningRateWarning`) when not.

    The check needs the spectrum, and any finite step count needs the eigendecomposition
    anyway: it is computed here, so that the warning comes when the predictor is built.
    """
    lam_max = float(fac.eigen().lam.max())
    lr_max = 2.0 * n / lam_max if lam_max > 0 else math.inf
    if lr < lr_max:
        return True
    warnings.warn(
        f"learning_rate = {lr:.6g} is at or above the stable maximum 2 n / lambda_max = "
        f"{lr_max:.6g} (n = y_train.size = {int(n)}, lambda_max = {lam_max:.6g}) for discrete "
        "gradient-descent steps: the modes with learning_rate * lambda / n >= 2 do not converge",
        LearningRateWarning,
        stacklevel=3,
    )
    return False


def _initial_outputs(xp, y, n_train: int, fx_train_0, fx_test_0, k_test_train):
    """A predict_fn's initial outputs and test kernel, checked: (f0 (N, n_out), ft0 (M, n_out)
    or None, kt (M, N) or None). ``fx_train_0=None`` (no training outputs) starts at 0."""
    _check_requested(fx_train_0, fx_test_0, k_test_train)
    kt = None
    if k_test_train is not None:
        kt = _la.cross_kernel(xp, k_test_train, "k_test_train", n_train)
    f0 = _la.outputs(
        xp, 0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", y.shape, "of y_train (N, n_out)"
    )
    ft0 = None
    if fx_test_0 is not None:
        ft0 = _la.outputs(
            xp, fx_test_0, "fx_test_0", (kt.shape[0], y.shape[1]), "(k_test_train rows, y_train columns)"
        )
    return f0, ft0, kt


def _mse_at_infinity(fac, y, flat: bool, f0, ft0, kt, want_train: bool):
    """Converged MSE outputs: ``f0 + A A^+ (y - f0)`` on the training points and
    ``ft0 + kt A^+ (y - f0)`` on the test points."""
    r = y - f0
    out = []
    if want_train:
        # Positive definite: the flow interpolates, and y itself is the exact answer
        # (f0 + (y - f0) would carry an ulp of round-off).
        train = y.copy() if fac.positive_definite else f0 + fac.project(r, stacklevel=_STACK + 1)
        out.append(_finish(train, flat))
    if ft0 is not None:
        out.append(_finish(ft0 + kt @ fac.solve(r, stacklevel=_STACK + 1), flat))
    return out[0] if len(out) == 1 else tuple(out)


def _mse_at_times(e, phi, shape: tuple, y, flat: bool, f0, ft0, kt, want_train: bool):
    """MSE outputs at finite times, from the eigendecomposition ``e`` of A and the factors
    ``phi`` (T, N) of :func:`_flow_factor` or :func:`_discrete_factor`."""
    c = e.vecs.T @ (f0 - y)  # (N, n_out): the residual in the eigenbasis
    out = []
    if want_train:
        d = _batched(e.vecs, phi, c)
        out.append(_finish((f0[None] + d).reshape(shape + y.shape), flat))
    if ft0 is not None:
        psi = phi / e.lam_safe[None, :]  # A^+ (e^{-A tau/n} - I) in the eigenbasis; 0 on zero modes
        n_train = e.vecs.shape[0]
        m, t_count = kt.shape[0], phi.shape[0]
        # Either (kt @ V) @ Z or kt @ (V @ Z), Z of shape (N, T n_out): take the cheaper.
        if m * n_train <= n_train * t_count * y.shape[1]:
            d = _batched(kt @ e.vecs, psi, c)
        else:
            d = _batched(e.vecs, psi, c)  # (T, N, n_out)
            d = (kt @ d.transpose(1, 0, 2).reshape(n_train, -1)).reshape(m, t_count, -1).transpose(1, 0, 2)
        out.append(_finish((ft0[None] + d).reshape(shape + ft0.shape), flat))
    return out[0] if len(out) == 1 else tuple(out)


# ---------------------------------------------------------------------------------------
# Gradient descent on any loss: ODE integration


class _MSE:
    """``||f - y||^2 / (2 n)`` with ``n = y.size`` (Neural Tangents' ``0.5 * mean((f - y)**2)``),
    so that ``gradient_descent('mse', ...)`` is the flow of :func:`gradient_descent_mse`."""

    name = "mse"

    def grad(self, xp, f, y):
        return (f - y) / y.size

    def curvature(self, y) -> float:
        return 1.0 / y.size


class _CrossEntropy:
    """Softmax cross-entropy over the output axis, averaged over all ``n = y.size`` entries
    (Neural Tangents' ``-mean(log_softmax(f) * y)``): the gradient is
    ``(softmax(f) * sum_j y_ij - y) / n``; ``y`` holds (soft) labels, one row per point."""

    name = "cross_entropy"

    def grad(self, xp, f, y):
        z = f - f.max(axis=1, keepdims=True)  # the shift leaves softmax unchanged, avoids overflow
        p = xp.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return (p * y.sum(axis=1, keepdims=True) - y) / y.size

    def curvature(self, y) -> float:
        # Hessian of row i: s_i (diag(p) - p p^T) / n, whose eigenvalues are <= |s_i| / 2.
        return float(abs(y).sum(axis=1).max()) / (2.0 * y.size)


_LOSSES = {"mse": _MSE(), "cross_entropy": _CrossEntropy(), "softmax_cross_entropy": _CrossEntropy()}


class _UserLoss:
    """A user function ``grad(fx_train, y_train)`` returning the gradient of the loss."""

    name = "user"

    def __init__(self, fn, y_shape):
        self.fn = fn
        self.y_shape = y_shape

    def grad(self, xp, f, y):
        g = self.fn(f.reshape(self.y_shape), y.reshape(self.y_shape))
        g = xp.asarray(g, dtype=xp.float64)
        if g.shape != self.y_shape:
            raise ValueError(
                f"loss must return the gradient of the loss with respect to fx_train, an array of "
                f"shape {self.y_shape} (y_train's shape); it returned shape {tuple(g.shape)}. fastntk "
                "has no automatic differentiation: pass a function (fx_train, y_train) -> d loss / d fx_train, "
                "or one of the built-in losses 'mse', 'cross_entropy'"
            )
        return g.reshape(f.shape)

    def curvature(self, y):
        return None


def _rk4(xp, rhs, state0, taus, step):
    """Classical Runge-Kutta 4 with steps of at most ``step``, landing exactly on every
    requested time (sorted, unique). Returns (len(taus), state size)."""
    out = []
    state, now = state0, 0.0
    with _OdeProgress(float(taus[-1])) as bar:
        for target in taus:
            span = float(target) - now
            if span > 0:
                count = max(1, math.ceil(span / step))
                h = span / count
                for i in range(count):
                    k1 = rhs(state)
                    k2 = rhs(state + (0.5 * h) * k1)
                    k3 = rhs(state + (0.5 * h) * k2)
                    k4 = rhs(state + h * k3)
                    state = state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
                    bar.reach(now + (i + 1) * h)
                now = float(target)
            out.append(state)
    return xp.stack(out)


class _OdeProgress:
    """A bar over an ODE integration from 0 to ``end`` (in percent of the span), shown only
    in a terminal once the integration has taken 2 s (see :mod:`fastntk._progress`)."""

    def __init__(self, end: float):
        self.end = end
        self.bar = progress_bar(100, "gradient_descent", None, unit="%")

    def reach(self, tau: float) -> None:
        done = min(100, int(100 * tau / self.end)) if self.end > 0 else 100
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def gradient_descent(
    loss,
    k_train_train,
    y_train,
    learning_rate: float = 1.0,
    momentum: float | None = None,
    trace_axes=(-1,),
    *,
    integrator: str = "auto",
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    step_size: float | None = None,
):
    """Outputs of gradient descent on any loss in function space, by ODE integration.

    Without momentum, ``tau = learning_rate * t`` and

        df_train/dtau = -Theta(X, X) g,   df_test/dtau = -Theta(x, X) g,   g = d loss / d f_train.

    With ``momentum = m`` (Neural Tangents' continuous-time heavy ball), ``tau =
    sqrt(learning_rate) * t``, ``q = df/dtau`` starts at 0 and

        dq/dtau = -Theta g + (m - 1) / sqrt(learning_rate) * q   (the same for the test outputs).

    NumPy inputs are integrated by SciPy's ``solve_ivp`` (``method``, ``rtol``, ``atol``),
    CuPy inputs by a fixed-step classical Runge-Kutta 4 on the device (``integrator='rk4'``
    selects it on NumPy too): its step is ``step_size`` or ``0.05 / rate`` in units of tau,
    with ``rate`` a bound on the ODE's fastest rate (Gershgorin's bound on lambda_max(Theta)
    times the loss's curvature bound, plus ``|m - 1| / sqrt(learning_rate)`` with momentum).
    At 0.05 per step RK4's relative error on a decaying mode is about 0.05^5 / 120 = 3e-9 per
    step, ~1e-7 over the whole decay.

    Parameters
    ----------
    loss : 'mse', 'cross_entropy' or callable
        ``'mse'``: ``||f - y||^2 / (2 y.size)``; ``'cross_entropy'``: softmax cross-entropy
        ``-mean(log_softmax(f) * y)`` over all ``y.size`` entries (as in Neural Tangents'
        example). A callable is ``grad(fx_train, y_train) -> d loss / d fx_train`` (an array of
        y_train's shape; there is no automatic differentiation). With ``integrator='rk4'`` a
        callable needs ``step_size``.
    k_train_train : array (N, N)
        Training NTK.
    y_train : array (N,) or (N, n_out)
    learning_rate : float, > 0
    momentum : float or None
    trace_axes : (-1,)
    integrator : {'auto', 'scipy', 'rk4'}, keyword-only
        'auto': 'scipy' for NumPy inputs, 'rk4' for CuPy inputs.
    method, rtol, atol : keyword-only
        Passed to ``scipy.integrate.solve_ivp``.
    step_size : float, keyword-only
        RK4 step in units of tau.

    Returns
    -------
    predict_fn(t, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)
        ``t`` : finite times >= 0, a scalar or an array of any shape (any order: the ODE
        is solved once up to the largest). ``fx_train_or_state_0`` : initial training
        outputs (scalar or broadcastable to y_train's shape; None for no training outputs,
        which then start at 0) or an :class:`ODEState` (then an :class:`ODEState` of arrays
        with leading ``t.shape`` is returned). Otherwise returns ``fx_train_t``,
        ``fx_test_t`` or both, float64 of shape ``t.shape + (points, n_out)``.
    """
    xp = _la.namespace(k_train_train, y_train)
    k, _ = _la.kernel_matrix(xp, k_train_train, "k_train_train")
    n_train = k.shape[0]
    y, flat = _la.targets(xp, y_train, n_train)
    y_shape = (n_train,) if flat else y.shape
    _la.check_trace_axes(trace_axes, 1 if flat else 2)
    lr = _la.positive_real(learning_rate, "learning_rate")
    if momentum is not None:
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not math.isfinite(momentum)
        ):
            raise ValueError(f"momentum must be None or a finite real number, got {momentum!r}")
        momentum = float(momentum)
    loss_obj = _loss_object(loss, y_shape, flat)
    integrator = _integrator_for(integrator, xp)
    rtol = _la.positive_real(rtol, "rtol")
    atol = _la.positive_real(atol, "atol")
    if step_size is not None:
        step_size = _la.positive_real(step_size, "step_size")
    if integrator == "rk4" and step_size is None and loss_obj.curvature(y) is None:
        raise ValueError(
            "integrator='rk4' with a user loss needs step_size (in units of tau): the step bound "
            "comes from the loss's curvature, known only for the built-in losses"
        )

    if momentum is None:
        time_scale, damping = lr, None
    else:
        time_scale, damping = math.sqrt(lr), (momentum - 1.0) / math.sqrt(lr)

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        request = _ode_request(momentum, fx_train_or_state_0, fx_test_0, k_test_train)
        tau, shape = _ode_times(t)
        tau = tau * time_scale
        start = _ode_start(xp, y, n_train, momentum, request, k_test_train)
        rhs = _ode_rhs(
            xp, loss_obj, y, k, start.kt if start.has_test else None, damping, start.shapes, start.sizes
        )
        state0 = xp.concatenate([p.ravel() for p in start.parts])
        uniq, inverse = np.unique(tau, return_inverse=True)
        if uniq[-1] == 0.0:
            traj = xp.stack([state0] * len(uniq))
        elif integrator == "scipy":
            traj = _solve_ivp(rhs, state0, uniq, method, rtol, atol)
        else:
            step = step_size
            if step is None:
                step = _rk4_step(xp, k, loss_obj.curvature(y), damping, float(uniq[-1]))
            traj = _rk4(xp, rhs, state0, uniq, step)
        traj = traj[xp.asarray(inverse.reshape(-1))]
        return _ode_result(traj, shape, start, flat, momentum is not None)

    return predict_fn


def _loss_object(loss, y_shape: tuple, flat: bool):
    """The loss's gradient (and curvature bound) behind gradient_descent's ``loss``."""
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(
                f"loss: unknown built-in loss {loss!r}; expected one of {sorted(_LOSSES)} or a callable"
            )
        loss_obj = _LOSSES[loss]
        if loss_obj.name == "cross_entropy" and flat:
            raise ValueError(
                f"loss='cross_entropy' needs y_train of shape (N, n_classes) (one row of labels per "
                f"point), got shape {y_shape}"
            )
        return loss_obj
    if callable(loss):
        return _UserLoss(loss, y_shape)
    raise TypeError(f"loss must be 'mse', 'cross_entropy' or a callable gradient, got {loss!r}")


def _integrator_for(integrator, xp) -> str:
    """'scipy' or 'rk4' from gradient_descent's ``integrator`` and the arrays' kind."""
    if integrator not in ("auto", "scipy", "rk4"):
        raise ValueError(f"integrator must be 'auto', 'scipy' or 'rk4', got {integrator!r}")
    if integrator == "auto":
        return "scipy" if _la.is_numpy_namespace(xp) else "rk4"
    if integrator == "scipy" and not _la.is_numpy_namespace(xp):
        raise ValueError("integrator='scipy' runs on the CPU and needs NumPy arrays; CuPy arrays use 'rk4'")
    return integrator


@dataclasses.dataclass
class _ODEStart:
    """The checked start of gradient_descent's ODE.

    parts : the state's pieces, in the order (f_train, f_test, q_train, q_test) (the test
        pieces only with test outputs, the velocities only with momentum)
    shapes, sizes : of each piece
    kt : test-train kernel (M, N) or None
    has_test : whether test outputs are integrated
    as_state : whether the caller passed (and gets back) an :class:`ODEState`
    want_train : whether the caller asked for training outputs
    """

    parts: list
    shapes: list
    sizes: list
    kt: Any
    has_test: bool
    as_state: bool
    want_train: bool


def _ode_request(momentum, fx_train_or_state_0, fx_test_0, k_test_train):
    """What a gradient_descent predict_fn was asked for: (as_state, fx_train_0, fx_test_0,
    q_train_0, q_test_0), with the combinations that cannot work refused."""
    as_state = isinstance(fx_train_or_state_0, ODEState)
    if as_state:
        if fx_test_0 is not None:
            raise ValueError("fx_test_0 is part of the ODEState passed as fx_train_or_state_0: pass None")
        st = fx_train_or_state_0
        fx_train_0, fx_test_0, q_train_0, q_test_0 = st.fx_train, st.fx_test, st.qx_train, st.qx_test
        if momentum is None and (q_train_0 is not None or q_test_0 is not None):
            raise ValueError("the ODEState has velocities qx_train/qx_test, but momentum is None")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("the ODEState has fx_test, but k_test_train is None")
    else:
        fx_train_0, q_train_0, q_test_0 = fx_train_or_state_0, None, None
        _check_requested(fx_train_0, fx_test_0, k_test_train)
    return as_state, fx_train_0, fx_test_0, q_train_0, q_test_0


def _ode_start(xp, y, n_train: int, momentum, request, k_test_train) -> _ODEStart:
    """The checked initial outputs (and velocities) and test kernel of a request (see
    :func:`_ode_request`)."""
    as_state, fx_train_0, fx_test_0, q_train_0, q_test_0 = request
    kt = None
    if k_test_train is not None:
        kt = _la.cross_kernel(xp, k_test_train, "k_test_train", n_train)
    parts = [_la.outputs(xp, 0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", y.shape, "of y_train")]
    if fx_test_0 is not None:
        parts.append(
            _la.outputs(
                xp, fx_test_0, "fx_test_0", (kt.shape[0], y.shape[1]), "(k_test_train rows, y_train columns)"
            )
        )
    if momentum is not None:
        parts.append(
            _la.outputs(xp, 0.0 if q_train_0 is None else q_train_0, "qx_train", y.shape, "of y_train")
        )
        if fx_test_0 is not None:
            parts.append(
                _la.outputs(
                    xp, 0.0 if q_test_0 is None else q_test_0, "qx_test", parts[1].shape, "of fx_test"
                )
            )
    return _ODEStart(
        parts=parts,
        shapes=[p.shape for p in parts],
        sizes=[p.size for p in parts],
        kt=kt,
        has_test=fx_test_0 is not None,
        as_state=as_state,
        want_train=fx_train_0 is not None,
    )


def _ode_times(t):
    """gradient_descent's times, checked: (flat float64 times, their shape)."""
    if t is None:
        raise ValueError(
            "t=None (infinite time) is not available for a general loss: the flow need not "
            "converge (cross-entropy drives the logits to infinity). Pass finite times, or use "
            "gradient_descent_mse for the closed-form t=inf of MSE"
        )
    tau, shape = _la.times(t)
    if np.isinf(tau).any():
        raise ValueError(f"t must be finite for gradient_descent (it integrates an ODE), got {t!r}")
    return tau, shape


def _ode_rhs(xp, loss_obj, y, k, kt, damping, shapes, sizes):
    """The right-hand side of gradient_descent's ODE on the flat state.

    Without momentum the state is (f_train, f_test) and the rate ``-Theta g``; with momentum
    the state is (f_train, f_test, q_train, q_test) and the rate (q_train, q_test, acc_train,
    acc_test) with ``acc = -Theta g + damping q``.
    """

    def unpack(v):
        out, i = [], 0
        for s, size in zip(shapes, sizes):
            out.append(v[i : i + size].reshape(s))
            i += size
        return out

    def rhs(v):
        s = unpack(v)
        g = loss_obj.grad(xp, s[0], y)
        d = [-(k @ g)]
        if kt is not None:
            d.append(-(kt @ g))
        if damping is None:
            return xp.concatenate([a.ravel() for a in d])
        q = s[len(d) :]
        acc = [di + damping * qi for di, qi in zip(d, q)]
        return xp.concatenate([a.ravel() for a in q + acc])

    return rhs


def _solve_ivp(rhs, state0, taus, method: str, rtol: float, atol: float):
    """SciPy's solve_ivp from 0 to the last of the sorted unique ``taus``: (T, state size)."""
    from scipy.integrate import solve_ivp

    with _OdeProgress(float(taus[-1])) as bar:

        def f(tau, v):
            bar.reach(tau)
            return rhs(v)

        sol = solve_ivp(f, (0.0, float(taus[-1])), state0, method=method, t_eval=taus, rtol=rtol, atol=atol)
    if sol.status != 0:
        raise RuntimeError(f"gradient_descent: the ODE solver failed: {sol.message}")
    return sol.y.T


def _rk4_step(xp, k, curvature: float, damping, span: float) -> float:
    """RK4's default step in tau: 0.05 over a bound on the ODE's fastest rate."""
    # Gershgorin: lambda_max(Theta) <= max row sum of |Theta|.
    lam_bound = float(xp.abs(k).sum(axis=1).max())
    rate = lam_bound * curvature
    if damping is not None:
        rate = abs(damping) + math.sqrt(rate)
    return 0.05 / rate if rate > 0 else span


def _ode_result(traj, shape: tuple, start: _ODEStart, flat: bool, with_momentum: bool):
    """What a gradient_descent predict_fn returns, from the trajectory (times, state size)."""
    states = [a.reshape(shape + s) for a, s in zip(_split(traj, start.sizes), start.shapes)]
    f_train = _finish(states[0], flat)
    f_test = _finish(states[1], flat) if start.has_test else None
    if start.as_state:
        q_train = q_test = None
        if with_momentum:
            q_train = _finish(states[2 if start.has_test else 1], flat)
            q_test = _finish(states[3], flat) if start.has_test else None
        return ODEState(f_train, f_test, q_train, q_test)
    if start.want_train and start.has_test:
        return f_train, f_test
    return f_test if start.has_test else f_train


def _split(traj, sizes):
    out, i = [], 0
    for size in sizes:
        out.append(traj[:, i : i + size])
        i += size
    return out


def momentum(
    loss,
    k_train_train,
    y_train,
    learning_rate: float = 1.0,
    momentum: float = 0.9,
    trace_axes=(-1,),
    **kwargs,
):
    """Gradient descent with momentum: :func:`gradient_descent` with ``momentum`` set.

    Time is measured as ``tau = sqrt(learning_rate) * t`` (Neural Tangents' convention for
    the continuous-time heavy ball); see :func:`gradient_descent` for the equations,
    arguments and the returned ``predict_fn``.
    """
    if momentum is None:
        raise ValueError("momentum must be a finite real number, got None (use gradient_descent for none)")
    return gradient_descent(loss, k_train_train, y_train, learning_rate, momentum, trace_axes, **kwargs)


# ---------------------------------------------------------------------------------------
# Gaussian posteriors and infinite ensembles


_GET_NAMES = KERNEL_NAMES


def _pack(out: dict, single: bool):
    if single:
        return next(iter(out.values()))
    return collections.namedtuple("Gaussians", tuple(out))(*out.values())


def _is_array(k) -> bool:
    return isinstance(k, np.ndarray) or _la.is_cupy(k)


def _part(k, g: str, what: str):
    """Kernel g of k: k itself if k is an array, else its attribute or key g."""
    if _is_array(k):
        return k
    if isinstance(k, dict):
        value = k.get(g)
    else:
        value = getattr(k, g, None)
    if value is None:
        raise ValueError(f"{what} has no {g!r} kernel: pass an array or an object with .{g}")
    return value


def _sym(c):
    return 0.5 * (c + c.swapaxes(-1, -2))


def _posterior_inf(
    xp, g, fac, y, k_dd_g, k_dd_init, k_dd_nngp, k_td, k_td_init, k_tt, compute_cov, stacklevel
):
    """Mean and covariance at t = inf.

    g : 'nngp' (NNGP posterior), 'ntk' (infinite-time ensemble, all layers trained) or
    'ntkgp' (GP posterior with the NTK). fac factors the (regularized) kernel of g (the NTK
    for 'ntkgp'). k_td / k_td_init : (M, N) test-train kernels of g and of the initial
    covariance ('nngp', or 'ntk' for 'ntkgp'); None means the training points, where the
    mean is ``A A^+ y`` (``y`` for positive definite A) and the covariance is exactly zero
    for positive definite A, and otherwise the same formulas with the training kernels.
    """
    train = k_td is None
    if train:
        mean = fac.project(y, stacklevel=stacklevel)
        if not compute_cov:
            return mean, None
        if fac.positive_definite:
            return mean, xp.zeros((y.shape[0], y.shape[0]))
        if k_dd_init is None or (g == "ntk" and k_dd_nngp is None):
            raise ValueError(
                f"the {g!r} covariance on the training points of a singular kernel needs the NNGP kernel too"
            )
        k_td, k_td_init, k_tt = k_dd_g, k_dd_init, k_dd_init
    else:
        mean = k_td @ fac.solve(y, stacklevel=stacklevel)
        if not compute_cov:
            return mean, None
    if g in ("nngp", "ntkgp"):
        cov = k_tt - k_td @ fac.solve(k_td_init.T, stacklevel=stacklevel)
    else:
        term1 = fac.solve(k_td.T, stacklevel=stacklevel)  # A^+ Theta(X, x): (N, M)
        cov = term1.T @ (k_dd_nngp @ term1)
        term2 = k_td @ fac.solve(k_td_init.T, stacklevel=stacklevel)  # Theta A^+ K(X, x)
        cov = cov - term2 - term2.T + k_tt
    return mean, _sym(cov)


def gp_inference(
    k_train_train,
    y_train,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes=(-1,),
):
    """Posterior mean and covariance of the NNGP, of the infinite-time NTK ensemble, and of
    the GP with the NTK as covariance (Neural Tangents' ``gp_inference``).

    With ``A`` the (regularized) training kernel of the mode and ``K`` the NNGP:

    - ``'nngp'``: ``mean = K(x, X) A^+ y``, ``cov = K(x, x) - K(x, X) A^+ K(X, x)`` (the exact
      Bayesian posterior of an infinitely wide network);
    - ``'ntk'``: ``mean = Theta(x, X) A^+ y``, ``cov = K(x, x) + Theta(x, X) A^+ K(X, X) A^+
      Theta(X, x) - (Theta(x, X) A^+ K(X, x) + transpose)`` (the infinite ensemble of
      infinitely wide networks trained to convergence; needs both kernels);
    - ``'ntkgp'``: ``mean = Theta(x, X) A^+ y``, ``cov = Theta(x, x) - Theta(x, X) A^+ Theta(X, x)``.

    ``A^+`` is Cholesky's inverse, or the pseudo-inverse when ``A`` is singular to working
    precision (as in :func:`kernel_regression`, with a warning).

    Parameters
    ----------
    k_train_train : array (N, N) or object with ``.nngp`` / ``.ntk`` (a fastntk kernel
        result, a named tuple, a dict). An array serves as every kernel.
    y_train : array (N,) or (N, n_out)
    diag_reg, diag_reg_absolute_scale, trace_axes : as in :func:`gradient_descent_mse`.

    Returns
    -------
    predict_fn(get=None, k_test_train=None, k_test_test=None)
        ``get``: 'nngp', 'ntk', 'ntkgp' or a tuple of them; None = ('nngp', 'ntk').
        ``k_test_train``: (M, N) array or object with the kernels (None: the training
        points). ``k_test_test``: (M, M) array or object (for 'ntk' and 'nngp' its NNGP, for
        'ntkgp' its NTK); None for means only; with ``k_test_train=None`` any non-None value
        asks for the training covariance. One string ``get`` returns its result alone, a
        tuple returns a named tuple ``Gaussians`` with one field per mode; each result is
        the mean (M, n_out) or a :class:`Gaussian` ``(mean, covariance (M, M))``.
    """
    first = k_train_train if _is_array(k_train_train) else None
    if first is None:
        first = next(
            (_part(k_train_train, g, "k_train_train") for g in _GET_NAMES if _has(k_train_train, g)), None
        )
        if first is None:
            raise ValueError("k_train_train must be an array or have .nngp and/or .ntk")
    xp = _la.namespace(first, y_train)
    kernels = {}
    for g in _GET_NAMES:
        if _is_array(k_train_train) or _has(k_train_train, g):
            name = "k_train_train" if _is_array(k_train_train) else f"k_train_train.{g}"
            kernels[g] = _la.kernel_matrix(xp, _part(k_train_train, g, "k_train_train"), name)
    n_train = next(iter(kernels.values()))[0].shape[0]
    for kg, _ in kernels.values():
        if kg.shape[0] != n_train:
            raise ValueError(
                f"k_train_train.nngp and .ntk must have the same shape, got {kernels['nngp'][0].shape} "
                f"and {kernels['ntk'][0].shape}"
            )
    y, flat = _la.targets(xp, y_train, n_train)
    _la.check_trace_axes(trace_axes, 1 if flat else 2)
    diag_reg = _la.positive_real(diag_reg, "diag_reg", allow_zero=True)
    facs = {}

    def fac(g):
        if g not in kernels:
            raise ValueError(f"k_train_train has no {g!r} kernel: pass an array or an object with .{g}")
        if g not in facs:
            k, eps = kernels[g]
            name = "k_train_train" if _is_array(k_train_train) else f"k_train_train.{g}"
            facs[g] = _la.regularized(xp, k, eps, diag_reg, bool(diag_reg_absolute_scale), name)
        return facs[g]

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names, single = parse_get(get, ("nngp", "ntk", "ntkgp"), what="mode")
        compute_cov = k_test_test is not None
        out = {}
        for g in names:
            kg = "ntk" if g == "ntkgp" else g
            init = "ntk" if g == "ntkgp" else "nngp"
            f = fac(kg)
            k_td = k_td_init = k_tt = None
            if k_test_train is not None:
                k_td = _la.cross_kernel(
                    xp, _part(k_test_train, kg, "k_test_train"), f"k_test_train.{kg}", n_train
                )
                if compute_cov:
                    if g == "ntk" and "nngp" not in kernels:
                        raise ValueError(
                            "the 'ntk' covariance needs both training kernels: k_train_train must have "
                            ".nngp and .ntk"
                        )
                    if g == "ntk" and _is_array(k_test_train):
                        raise ValueError(
                            "the 'ntk' covariance needs both test-train kernels: k_test_train must have "
                            ".nngp and .ntk"
                        )
                    k_td_init = _la.cross_kernel(
                        xp, _part(k_test_train, init, "k_test_train"), f"k_test_train.{init}", n_train
                    )
                    m = k_td.shape[0]
                    k_tt = _la.square_kernel(
                        xp,
                        _part(k_test_test, init, "k_test_test"),
                        f"k_test_test.{init}",
                        m,
                        "k_test_train's rows",
                    )
            mean, cov = _posterior_inf(
                xp,
                g,
                f,
                y,
                kernels[kg][0],
                kernels[init][0] if init in kernels else None,
                kernels["nngp"][0] if "nngp" in kernels else None,
                k_td,
                k_td_init,
                k_tt,
                compute_cov,
                stacklevel=_STACK + 1,
            )
            mean = _finish(mean, flat)
            out[g] = Gaussian(mean, cov) if compute_cov else mean
        return _pack(out, single)

    return predict_fn


def _has(k, g) -> bool:
    if isinstance(k, dict):
        return k.get(g) is not None
    return getattr(k, g, None) is not None


def gradient_descent_mse_ensemble(
    kernel_fn,
    x_train,
    y_train,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes=(-1,),
    **kernel_fn_kwargs,
):
    """Mean and covariance of the outputs of an infinite ensemble of infinitely wide
    networks trained by gradient flow on MSE for time t (Neural Tangents'
    ``gradient_descent_mse_ensemble``).

    With ``K`` the NNGP (the covariance at initialization), ``Theta`` the NTK, ``n =
    y_train.size``, ``tau = learning_rate * t``, ``A`` the (regularized) training kernel of the
    mode and ``E = exp(-A tau / n)``, ``H = A^+ (I - E)``:

    - ``get='ntk'`` (all layers trained): mean ``Theta(x, X) H y``; covariance
      ``K(x, x) + Theta(x, X) H K(X, X) H Theta(X, x) - (Theta(x, X) H K(X, x) + transpose)``;
      on the training points mean ``(I - E) y`` and covariance ``E K(X, X) E``;
    - ``get='nngp'`` (only the last layer trained, its kernel is the NNGP): mean
      ``K(x, X) H y``; covariance ``K(x, x) - K(x, X) A^+ (I - E^2) K(X, x)``; on the training
      points ``(I - E) y`` and ``A E^2`` (Neural Tangents' formula, with ``A`` the regularized
      kernel).

    At ``t = None`` (infinity) these are :func:`gp_inference`'s 'nngp' and 'ntk' posteriors;
    on the training points the covariance then vanishes (the networks interpolate). Zero
    modes of ``A`` (singular to working precision) do not move, as in
    :func:`gradient_descent_mse`.

    Parameters
    ----------
    kernel_fn : fastntk network or callable
        A :class:`fastntk.Network` (its ``.kernel`` is used) or any
        ``kernel_fn(x1, x2, get, **kwargs)`` returning an object with ``.nngp`` / ``.ntk``
        (or a dict; or the array itself for a single name).
    x_train : array (N, d)
        Training inputs, passed to ``kernel_fn`` as they are.
    y_train : array (N,) or (N, n_out)
    learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes : as in :func:`gradient_descent_mse`.
    **kernel_fn_kwargs
        Passed to every ``kernel_fn`` call.

    Returns
    -------
    predict_fn(t=None, x_test=None, get=None, compute_cov=False)
        ``t``: None (= inf), a scalar or an array of any shape. ``x_test``: (M, d), or None
        for the training points. ``get``: 'nngp', 'ntk' or a tuple; None = ('nngp', 'ntk').
        Each result is the mean, shape ``t.shape + (M, n_out)``, or with ``compute_cov`` a
        :class:`Gaussian` with the covariance ``t.shape + (M, M)``; one string ``get`` returns
        its result alone, otherwise a named tuple ``Gaussians``.
    """
    kernel_fn = _as_kernel_fn(kernel_fn)
    lr = _la.positive_real(learning_rate, "learning_rate")
    diag_reg = _la.positive_real(diag_reg, "diag_reg", allow_zero=True)
    y_shape = tuple(getattr(y_train, "shape", np.shape(y_train)))
    if len(y_shape) not in (1, 2):
        raise ValueError(f"y_train must have shape (N,) or (N, n_out), got shape {y_shape}")
    _la.check_trace_axes(trace_axes, len(y_shape))

    def call(x1, x2, names):
        return _call_kernel_fn(kernel_fn, kernel_fn_kwargs, x1, x2, names)

    train = _EnsembleTraining(call, x_train, y_train, y_shape, diag_reg, bool(diag_reg_absolute_scale))

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False):
        names, single = parse_get(get, _GET_NAMES, what="mode")
        deps = tuple(g for g in _GET_NAMES if g in names or (g == "nngp" and compute_cov))
        tau = shape = None
        if t is not None:
            tau, shape = _la.times(t)
        kdd = train.kernels(deps)
        xp, y, flat = train.xp, train.y, train.flat
        k_td = k_tt = None
        if x_test is not None:
            k_td, k_tt = _ensemble_test_kernels(call, xp, x_test, x_train, deps, compute_cov, train.n_train)
        out = {}
        for g in names:
            f = train.factorization(g)
            if t is None:
                # Both modes start from the NNGP covariance (only the NTK mode trains all layers).
                td = td_init = None
                if k_td is not None:
                    td, td_init = k_td[g], k_td.get("nngp")
                nngp = kdd.get("nngp")
                mean, cov = _posterior_inf(
                    xp, g, f, y, kdd[g], nngp, nngp, td, td_init, k_tt, compute_cov, stacklevel=_STACK + 1
                )
                tshape = ()
            else:
                mean, cov = _ensemble_finite(xp, g, f, y, lr * tau, kdd, k_td, k_tt, compute_cov)
                tshape = shape
            points = mean.shape[-2]
            mean = _finish(mean.reshape(tshape + (points, y.shape[1])), flat)
            out[g] = Gaussian(mean, cov.reshape(tshape + cov.shape[-2:])) if compute_cov else mean
        return _pack(out, single)

    return predict_fn


def _as_kernel_fn(kernel_fn):
    """A fastntk network's ``.kernel``, or the callable itself."""
    if not callable(kernel_fn) and callable(getattr(kernel_fn, "kernel", None)):
        kernel_fn = kernel_fn.kernel
    if not callable(kernel_fn):
        raise TypeError(
            f"kernel_fn must be a fastntk network or a callable kernel_fn(x1, x2, get), got {kernel_fn!r}"
        )
    return kernel_fn


def _call_kernel_fn(kernel_fn, kwargs: dict, x1, x2, names: tuple) -> dict:
    """``{name: kernel}`` from ``kernel_fn(x1, x2, names, **kwargs)``, whatever it returns
    (an object with the kernels as attributes, a dict, or one array for one name)."""
    res = kernel_fn(x1, x2, names, **kwargs)
    if _is_array(res):
        if len(names) != 1:
            raise TypeError(
                f"kernel_fn returned one array for the kernels {names}; expected an object with "
                ".nngp and .ntk (or a dict)"
            )
        return {names[0]: res}
    return {g: _part(res, g, "kernel_fn's result") for g in names}


class _EnsembleTraining:
    """The training side of :func:`gradient_descent_mse_ensemble`: the training kernels,
    computed when first needed (``kernels``), and their factorizations (``factorization``).
    The array namespace and the checked targets come with the first kernel."""

    def __init__(self, call, x_train, y_train, y_shape, diag_reg: float, absolute: bool):
        self.call = call
        self.x_train = x_train
        self.y_train = y_train
        self.y_shape = y_shape
        self.n_train = y_shape[0]
        self.diag_reg = diag_reg
        self.absolute = absolute
        self.xp = self.y = self.flat = None
        self._k = {}  # g -> (float64 (N, N), eps)
        self._facs = {}

    def kernels(self, names) -> dict:
        missing = tuple(g for g in names if g not in self._k)
        if missing:
            res = self.call(self.x_train, None, missing)
            for g in missing:
                name = f"kernel_fn(x_train, None).{g}"
                xp = _la.namespace(res[g], self.y_train)
                k, eps = _la.kernel_matrix(xp, res[g], name)
                if k.shape[0] != self.n_train:
                    raise ValueError(
                        f"{name} has shape {tuple(k.shape)} but y_train has shape {self.y_shape}: they "
                        "must have the same number of training points"
                    )
                self._k[g] = (k, eps)
                if self.xp is None:
                    self.xp = xp
                    self.y, self.flat = _la.targets(xp, self.y_train, self.n_train, name)
        return {g: self._k[g][0] for g in names}

    def factorization(self, g):
        if g not in self._facs:
            k, eps = self._k[g]
            name = f"kernel_fn(x_train, None).{g}"
            self._facs[g] = _la.regularized(self.xp, k, eps, self.diag_reg, self.absolute, name)
        return self._facs[g]


def _ensemble_test_kernels(call, xp, x_test, x_train, deps, compute_cov: bool, n_train: int):
    """The test-train kernels {g: (M, N)} of the modes ``deps`` and, with ``compute_cov``,
    the test-test NNGP (M, M), checked."""
    res = call(x_test, x_train, deps)
    k_td = {g: _la.cross_kernel(xp, res[g], f"kernel_fn(x_test, x_train).{g}", n_train) for g in deps}
    k_tt = None
    if compute_cov:
        m = k_td[deps[0]].shape[0]
        k_tt = _la.square_kernel(
            xp, call(x_test, None, ("nngp",))["nngp"], "kernel_fn(x_test, None).nngp", m, "x_test"
        )
    return k_td, k_tt


def _ensemble_finite(xp, g, fac, y, tau, kdd, k_td, k_tt, compute_cov):
    """Finite-time ensemble moments for mode g ('nngp' or 'ntk') at scaled times tau (T,).

    Returns mean (T, M, n_out) and covariance (T, M, M) (or None); M = N without a test set.
    """
    e = fac.eigen()
    fac.warn_if_degenerate(stacklevel=_STACK)
    n = float(y.size)
    vecs = e.vecs
    lam_pos = xp.maximum(e.lam, 0.0)
    moved = -_flow_factor(xp, e, tau, n)  # 1 - e^{-lambda tau / n}, 0 on zero modes: (T, N)
    h = moved / e.lam_safe[None, :]  # (1 - e^{-lambda tau / n}) / lambda
    vy = vecs.T @ y
    if k_td is None:
        mean = _batched(vecs, moved, vy)
    else:
        mean = _batched(k_td[g] @ vecs, h, vy)
    if not compute_cov:
        return mean, None
    t_count = moved.shape[0]
    if k_td is None:
        stay = 1.0 - moved  # e^{-lambda tau / n}; 1 on zero modes (they do not move)
        if g == "nngp":
            w = lam_pos[None, :] * stay**2
            cov = xp.stack([(vecs * w[i][None, :]) @ vecs.T for i in range(t_count)])
        else:
            gram = vecs.T @ (kdd["nngp"] @ vecs)  # K(X, X) in the eigenbasis of A
            cov = xp.stack(
                [vecs @ ((stay[i][:, None] * gram * stay[i][None, :]) @ vecs.T) for i in range(t_count)]
            )
        return mean, _sym(cov)
    if g == "nngp":
        b = vecs.T @ k_td["nngp"].T  # (N, M)
        h2 = -_flow_factor(xp, e, 2.0 * np.asarray(tau), n) / e.lam_safe[None, :]
        cov = xp.stack([k_tt - b.T @ (h2[i][:, None] * b) for i in range(t_count)])
    else:
        bt = vecs.T @ k_td["ntk"].T  # V^T Theta(X, x): (N, M)
        cn = vecs.T @ k_td["nngp"].T  # V^T K(X, x)
        gram = vecs.T @ (kdd["nngp"] @ vecs)
        covs = []
        for i in range(t_count):
            hb = h[i][:, None] * bt  # H Theta(X, x) in the eigenbasis
            term2 = hb.T @ cn
            covs.append(hb.T @ (gram @ hb) - term2 - term2.T + k_tt)
        cov = xp.stack(covs)
    return mean, _sym(cov)


# ---------------------------------------------------------------------------------------
# Learning rate


def max_learning_rate(
    ntk_train_train, y_train_size: int | None = None, momentum: float = 0.0, eps: float = 1e-12
):
    """The largest learning rate for which discrete gradient descent on MSE converges.

    The loss is ``||f - y||^2 / (2 n)`` with ``n = y_train_size``; a step multiplies the
    residual by ``I - learning_rate * Theta / n``, a contraction iff ``learning_rate < 2 n /
    lambda_max``; with momentum the bound is ``2 (1 + momentum) n / lambda_max``. Same
    convention as Neural Tangents: ``2 (1 + momentum) n / (lambda_max + eps)``.

    Parameters
    ----------
    ntk_train_train : array (N, N)
    y_train_size : int, optional
        ``y_train.size`` (N * n_out); None means N (one output).
    momentum : float
    eps : float
        Guards the division when lambda_max is 0.

    Returns
    -------
    float
    """
    xp = _la.namespace(ntk_train_train)
    k, _ = _la.kernel_matrix(xp, ntk_train_train, "ntk_train_train")
    n = k.shape[0]
    if y_train_size is None:
        factor = n
    else:
        if (
            isinstance(y_train_size, bool)
            or not isinstance(y_train_size, numbers.Integral)
            or y_train_size <= 0
        ):
            raise ValueError(f"y_train_size must be a positive integer (y_train.size), got {y_train_size!r}")
        factor = int(y_train_size)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not math.isfinite(momentum):
        raise ValueError(f"momentum must be a finite real number, got {momentum!r}")
    if _la.is_numpy_namespace(xp):
        # NumPy's eigvalsh releases the GIL (Ctrl-C can interrupt the wait, see
        # _predict_linalg.interruptible); the tridiagonalization dominates either way.
        lam_max = float(_la.interruptible(lambda: np.linalg.eigvalsh(k), k.size)[-1])
    else:
        lam_max = float(xp.linalg.eigvalsh(k)[-1])
    return 2.0 * (1.0 + float(momentum)) * factor / (lam_max + eps)
