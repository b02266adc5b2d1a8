"""Maximum-likelihood fits of an MLP's NTK or NNGP as a Gaussian-process kernel, for
:class:`fastntk.sklearn.MLPGaussianProcessRegressor`.

The model is ``y ~ N(0, K + noise I)`` with ``K`` the NTK or NNGP of the MLP
``Dense, act, ..., act, Dense`` (``depth`` activations, every Dense with the same ``W_std`` and
``b_std``). The free hyperparameters are optimized on a log scale, ``theta = log(W_std, b_std,
noise)`` (scikit-learn's order for ``NTK() + WhiteKernel()``), by L-BFGS-B on the log marginal
likelihood with its analytic gradient. One evaluation costs one native kernel pass (the kernel
and its derivatives in log W_std and log b_std together, every candidate depth captured from
the same pass of the deepest network), one Cholesky per depth, and for the gradient one
inversion of the best depth's factor (LAPACK potri); see :meth:`Problem.evaluate` and
:func:`gradient`.

Depth: with several candidate depths, each evaluation of the search gets every depth's log
likelihood from the one pass, and the search climbs the largest of them. Its maxima
are maxima of the individual depths' likelihoods (where two depths tie is a crease the ascent
crosses, never a maximum unless both are stationary there). Every evaluation also records, for
each depth, the best point seen; each depth is then polished alone (passes of its own network)
from its best point, and the largest polished likelihood wins. That costs ``n_restarts + 1``
shared searches plus one short search per depth, where fitting each depth separately costs
``(n_restarts + 1) * n_depths`` searches.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.optimize

from . import _engine
from ._predict_linalg import cholesky
from ._sklearn_arch import mlp

_LOG_2PI = math.log(2.0 * math.pi)
NAMES = ("W_std", "b_std", "noise")


class NotPositiveDefiniteError(ValueError):
    """K + noise I is not positive definite (its Cholesky factorization failed)."""


# ---------------------------------------------------------------------------------------
# One evaluation: every depth's log likelihood and gradient from one kernel pass


def depth_kernels(arch: dict, depths: list, a: np.ndarray, name: str, free: tuple):
    """{depth: (K, [dK/dlog p for p in free kernel parameters])} from ONE native pass of the
    network of depth max(depths), W_std and b_std taken from ``arch``.

    ``free`` lists the kernel hyperparameters differentiated ('W_std', 'b_std'); the
    derivative planes come from the forward-mode seeds of the same pass (d(W^2)/dlog W =
    2 W^2, likewise for b). a : (N, d) float64, checked. The arrays are views of one
    (depths, 1 + len(free), N, N) buffer the caller owns.
    """
    net = mlp(arch, max(depths))
    program = _engine.build_program(net.layers, a.shape[1])
    if not free and len(depths) == 1:  # the plain kernel (the driver's plain output shape)
        return {depths[0]: (_engine.gram(program, a, None, (name,), layers=net.layers)[name], [])}
    last_op = _engine.last_ops(program)
    ops = [last_op[2 * depth] for depth in depths]  # layer 2l, a Dense, ends depth l
    directions = [(0 if p == "W_std" else 1, 2.0 * arch[p] ** 2) for p in free]
    seeds = _engine.dense_seeds(program, directions) if directions else None
    out = _engine.gram(program, a, None, (name,), capture_after=ops, seeds=seeds, layers=net.layers)[name]
    return {depth: (out[c, 0], [out[c, 1 + p] for p in range(len(free))]) for c, depth in enumerate(depths)}


def log_likelihood(k: np.ndarray, noise: float, y: np.ndarray):
    """(log marginal likelihood, factor, alpha) of ``y ~ N(0, K + noise I)``, columns of y
    independent; K is overwritten (K + noise I).

    LML = -1/2 y^T A^-1 y - sum log diag(L) - N/2 log 2 pi per column, A = K + noise I = L L^T,
    alpha = A^-1 y. Returns (-inf, None, None) when the Cholesky factorization fails (A not
    positive definite to working precision), as scikit-learn's likelihood does, so that a
    search steps back. k : (N, N); y : (N, m).
    """
    n, m = y.shape
    k.flat[:: n + 1] += noise
    factor, _ = cholesky(k, 0.0, lower=True)
    if factor is None:
        return -np.inf, None, None
    alpha = scipy.linalg.cho_solve(factor, y, check_finite=False)
    logdet = float(np.log(np.diagonal(factor[0])).sum())
    return -0.5 * float(np.vdot(y, alpha)) - m * logdet - 0.5 * m * n * _LOG_2PI, factor, alpha


def gradient(factor, alpha: np.ndarray, grads: list, noise: float, noise_free: bool) -> np.ndarray:
    """The gradient of the log likelihood in the free log-hyperparameters (kernel ones, whose
    dK are ``grads``, then the noise), from the factor and alpha of :func:`log_likelihood`.

    dLML/dtheta_j = 1/2 tr((a a^T - m A^-1) dA_j) summed over the m columns a of alpha.
    The trace term is the Frobenius product <A^-1, dA_j> with a dense dA_j, so it needs every
    entry of A^-1: the cheapest exact way is LAPACK's potri on the factor (triangular inverse
    then L^-T L^-1, N^3/3 + N^3/3 flops, lower triangle only), where scikit-learn's
    cho_solve(L, I) is two full triangular solves (2 N^3). A stochastic trace estimate would
    avoid it but is not exact. Because A^-1 and dA_j are symmetric, <A^-1, dA_j> =
    2 sum_{i >= j} (A^-1)_ij (dA_j)_ij - sum_i (A^-1)_ii (dA_j)_ii from the lower triangle
    alone (the other triangle of the factor is zero). The noise direction dA = noise I needs
    only diag(A^-1). grads : list of (N, N); alpha : (N, m).
    """
    m = alpha.shape[1]
    inv, info = scipy.linalg.lapack.dpotri(factor[0].T, lower=0)  # .T: the factor in Fortran order
    if info != 0:  # pragma: no cover - potri fails only on a zero pivot, which potrf rejected
        raise np.linalg.LinAlgError(f"potri failed (info {info}) on a Cholesky factor")
    inv = inv.T  # lower triangle of A^-1 (C order), zeros above
    diag_inv = np.diagonal(inv)
    grad = []
    for g in grads:
        data = float(np.vdot(alpha, g @ alpha))
        trace = 2.0 * float(np.vdot(inv, g)) - float(np.dot(diag_inv, np.diagonal(g)))
        grad.append(0.5 * (data - m * trace))
    if noise_free:
        grad.append(0.5 * noise * (float(np.vdot(alpha, alpha)) - m * float(diag_inv.sum())))
    return np.array(grad)


def failure_detail(k: np.ndarray) -> str:
    """Why K (already with the noise on its diagonal) is not positive definite: the failed
    Cholesky pivot and the smallest eigenvalue (an O(N^3) diagnosis, on the error path only)."""
    _, info = scipy.linalg.lapack.dpotrf(k, lower=1, clean=1, overwrite_a=0)
    lam = float(scipy.linalg.eigvalsh(k, subset_by_index=[0, 0], check_finite=False)[0])
    pivot = f"the Cholesky factorization failed at pivot {int(info)} of {k.shape[0]}" if info > 0 else (
        "the Cholesky factorization failed")  # fmt: skip
    return f"{pivot}; the smallest eigenvalue of K + noise I is {lam:.6g}"


# ---------------------------------------------------------------------------------------
# The search


class Problem:
    """The likelihood of one data set as a function of the free log-hyperparameters.

    spec: dict(arch=checked architecture (W_std and b_std are the starting values), name=
    'ntk' or 'nngp', noise=float, free=tuple of free names in NAMES order, bounds=(n_free, 2)
    log-bounds). Counts the evaluations (``n_evaluations``) and keeps, for every depth, the
    best log likelihood seen and its theta (``best``)."""

    def __init__(self, spec: dict, a: np.ndarray, y: np.ndarray):
        self.spec = spec
        self.a = a
        self.y = y
        self.n_evaluations = 0
        self.best = {}  # depth -> (lml, theta)

    def values(self, theta) -> dict:
        """{name: value} of every hyperparameter at theta (free ones from theta)."""
        arch = self.spec["arch"]
        out = dict(W_std=arch["W_std"], b_std=arch["b_std"], noise=self.spec["noise"])
        for name, t in zip(self.spec["free"], theta):
            out[name] = float(np.exp(t))
        return out

    def evaluate(self, theta, depths: list, keep_factor: bool = False):
        """(depth, lml, gradient, factor) at theta for the depth of the largest likelihood
        (ties: the shallowest), from one kernel pass: a Cholesky per depth, the gradient's
        inversion for that depth alone. gradient and factor are None where lml is -inf;
        factor is None unless keep_factor."""
        self.n_evaluations += 1
        v = self.values(theta)
        arch = dict(self.spec["arch"], W_std=v["W_std"], b_std=v["b_std"])
        free = self.spec["free"]
        kernel_free = tuple(p for p in free if p != "noise")
        kernels = depth_kernels(arch, depths, self.a, self.spec["name"], kernel_free)
        best = (depths[0], -np.inf, None, None)
        for depth, (k, _) in kernels.items():
            lml, factor, alpha = log_likelihood(k, v["noise"], self.y)
            if lml > self.best.get(depth, (-np.inf, None))[0]:
                self.best[depth] = (lml, np.array(theta, dtype=float))
            if lml > best[1]:
                best = (depth, lml, factor, alpha)
        depth, lml, factor, alpha = best
        if factor is None:
            return depth, lml, None, None
        grad = gradient(factor, alpha, kernels[depth][1], v["noise"], "noise" in free)
        return depth, lml, grad, factor if keep_factor else None

    def objective(self, depths: list):
        """(f, grad) to minimize: minus the largest log likelihood over ``depths`` and the
        gradient of that depth's (L-BFGS-B sees a function it can step back from: +inf where
        no depth's kernel is positive definite)."""

        def fn(theta):
            _, lml, grad, _ = self.evaluate(theta, depths)
            if not np.isfinite(lml):
                return np.inf, np.zeros(len(theta))
            return -lml, -grad

        return fn

    def search(self, theta0, depths: list):
        """(theta, -f) of one L-BFGS-B run from theta0 within the bounds."""
        bounds = self.spec["bounds"]
        if len(theta0) == 0:
            return np.asarray(theta0, dtype=float), -self.objective(depths)(theta0)[0]
        res = scipy.optimize.minimize(
            self.objective(depths), theta0, jac=True, method="L-BFGS-B", bounds=bounds
        )
        return np.asarray(res.x, dtype=float), -float(res.fun)


def fit(spec: dict, a: np.ndarray, y: np.ndarray, depths: list, n_restarts: int, rng) -> dict:
    """The maximum-likelihood hyperparameters and depth.

    Starts: the given values, then ``n_restarts`` points drawn uniformly in the log-bounds
    (``rng.uniform(low, high)`` per restart, scikit-learn's draw: with the same seed and
    bounds, the same starts as its GaussianProcessRegressor). Each start runs L-BFGS-B on the
    largest log likelihood over the depths (every depth from one pass per evaluation); each
    depth is then polished alone from the best point seen for it, and the best one wins. Raises
    NotPositiveDefiniteError when no evaluation had a positive definite K + noise I.
    """
    problem = Problem(spec, a, y)
    bounds = spec["bounds"]
    theta0 = np.array([math.log(problem.values(())[p]) for p in spec["free"]])
    starts = [theta0] + [rng.uniform(bounds[:, 0], bounds[:, 1]) for _ in range(n_restarts)]
    best_theta, best_lml = None, -np.inf
    for start in starts:
        theta, lml = problem.search(start, depths)
        if lml > best_lml or best_theta is None:
            best_theta, best_lml = theta, lml
    if not np.isfinite(best_lml):
        raise_not_pd(problem, theta0, max(depths))
    if len(depths) > 1:
        # Polish every depth alone from the best point the shared search saw for it: the
        # search climbs the winner's likelihood, so a depth whose basin it never entered would
        # otherwise be judged by a point far from its own maximum.
        polished = {d: problem.search(problem.best[d][1], [d]) for d in depths if d in problem.best}
        depth = max(polished, key=lambda d: (polished[d][1], -d))
        best_theta = polished[depth][0]
        by_depth = {d: polished[d][1] if d in polished else -np.inf for d in depths}
    else:
        depth = depths[0]
    _, lml, _, factor = problem.evaluate(best_theta, [depth], keep_factor=True)
    if len(depths) == 1:
        by_depth = {depth: lml}
    return dict(
        theta=best_theta,
        depth=depth,
        values=problem.values(best_theta),
        lml=lml,
        factor=factor,
        lml_by_depth=by_depth,
        n_evaluations=problem.n_evaluations,
    )


def raise_not_pd(problem: Problem, theta, depth: int):
    """NotPositiveDefiniteError at theta (the starting values): the pivot and eigenvalue."""
    v = problem.values(theta)
    arch = dict(problem.spec["arch"], W_std=v["W_std"], b_std=v["b_std"])
    k, _ = depth_kernels(arch, [depth], problem.a, problem.spec["name"], ())[depth]
    k.flat[:: k.shape[0] + 1] += v["noise"]
    raise NotPositiveDefiniteError(
        f"MLPGaussianProcessRegressor: the training kernel plus noise is not positive definite at any "
        f"point the search evaluated (at the starting values W_std={v['W_std']:.6g}, b_std={v['b_std']:.6g}, "
        f"noise={v['noise']:.6g}, depth {depth}: {failure_detail(k)}); raise noise or its lower bound "
        "(duplicated training points need noise > 0)"
    )
