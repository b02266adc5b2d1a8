"""Preconditioned conjugate gradients for ``(K + ridge I) alpha = y``, K given by its products.

The operator is anything with ``shape``, ``matvec`` (an (N, k) block at a time) and ``block``
(rows by columns): a :class:`fastntk.LazyKernel` (tiles computed by the native core), its Dask
counterpart :class:`fastntk.dask.DaskKernel` (tiles computed on a cluster), or a dense matrix
wrapped by :class:`DenseOperator`.

Why our own loop, not ``scipy.sparse.linalg.cg``: a product with a lazy kernel recomputes
every tile of K, which costs as much for one vector as for a block of k (the GEMM with the
tile is cheap next to the kernel recursion). SciPy's ``cg`` takes one right-hand side at a
time, so k columns would cost k passes over K per iteration; here the k recurrences run side
by side (each column has its own step sizes, its own preconditioned residual and its own
convergence test) and share one pass per iteration. Converged columns leave the block.
This is k independent CG recurrences, not block CG in O'Leary's sense (which shares one Krylov
space between the columns and needs rank-revealing care when columns become dependent).

The preconditioner is Nystrom's (as in Falkon): m landmarks drawn uniformly at random, the
columns ``C = K[:, L]`` and ``W = K[L, L] = L L^T`` (Cholesky, with a jitter at round-off
scale when W is singular), ``B = C L^-T``, so that ``K ~ B B^T = C W^-1 C^T``, and

    P = B B^T + ridge I,    P^-1 r = (r - B (ridge I + B^T B)^-1 B^T r) / ridge

by Woodbury, with a Cholesky of the m x m core ``ridge I + B^T B`` (eigenvalues >= ridge:
well conditioned where ``W^-1`` itself would not be). P captures the top of K's spectrum,
which is what slows CG down: the preconditioned system's condition number is about
``1 + lambda_m+1(K) / ridge`` instead of ``1 + lambda_max(K) / ridge``. Uniform landmarks
cost nothing to choose, and every pass over K is expensive here; pivoted (greedy) landmarks
would need m passes over the diagonal and columns. Memory: two (N, m) arrays at the peak.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.linalg

from ._progress import progress_bar


class ConvergenceWarning(RuntimeWarning):
    """Conjugate gradients stopped at ``maxiter`` before every column reached ``tol``."""


# Default landmarks: up to 1000, and at most 32 MiB of columns (N x m float64), so that the
# preconditioner stays small next to the tiles at any N.
_MAX_LANDMARKS = 1000
_LANDMARK_BYTES = 32 << 20


def default_landmarks(n: int) -> int:
    """min(N, 1000, 2^22 / N) landmarks, at least min(N, 100)."""
    return min(n, max(min(n, 100), min(_MAX_LANDMARKS, _LANDMARK_BYTES // (8 * n))))


class DenseOperator:
    """A kernel matrix in memory, with the operator interface of :class:`fastntk.LazyKernel`."""

    def __init__(self, k):
        self.k = k
        self.shape = k.shape

    def matvec(self, v):
        return self.k @ v

    def block(self, rows=slice(None), cols=slice(None)):
        if isinstance(rows, slice) or isinstance(cols, slice):
            return self.k[rows][:, cols]
        return self.k[np.ix_(rows, cols)]


def _jittered_cholesky(w):
    """The lower Cholesky factor of ``w + jitter I``, jitter from ``m eps max(diag w)`` up.

    W = K[L, L] is positive semi-definite but can be singular to working precision (landmarks
    equal or nearly so, a low-rank kernel): a jitter at round-off scale makes it definite. It
    changes the preconditioner only, never the solution. (A Cholesky, not an eigendecomposition,
    for its cost: m^3/3 flops, and it stays fast when other processes load the machine.)
    """
    m = w.shape[0]
    scale = max(float(np.max(np.diag(w))), np.finfo(np.float64).tiny)
    jitter = m * np.finfo(np.float64).eps * scale
    for _ in range(8):
        try:
            return np.linalg.cholesky(w + jitter * np.eye(m))
        except np.linalg.LinAlgError:
            jitter *= 100.0
    raise np.linalg.LinAlgError(
        "the Nystrom preconditioner's landmark kernel K[L, L] is not positive semi-definite even "
        f"with a jitter of {jitter:.3g}: the kernel is not a valid covariance"
    )


class Nystrom:
    """The Nystrom preconditioner ``(B B^T + ridge I)^-1`` (see the module doc)."""

    def __init__(self, op, ridge: float, m: int, seed):
        n = op.shape[0]
        rng = np.random.default_rng(seed)
        self.landmarks = np.sort(rng.choice(n, size=m, replace=False))
        c = np.asarray(op.block(slice(None), self.landmarks), dtype=np.float64)  # (N, m)
        w = c[self.landmarks]
        factor = _jittered_cholesky(0.5 * (w + w.T))
        # B = C L^-T, so that B B^T = C W^-1 C^T: the Nystrom approximation of K.
        self.b = scipy.linalg.solve_triangular(factor, c.T, lower=True, check_finite=False).T  # (N, m)
        del c
        self.rank = m
        self.ridge = ridge
        core = self.b.T @ self.b
        core[np.diag_indices_from(core)] += ridge
        self.core = scipy.linalg.cho_factor(core, lower=True, check_finite=False)

    def __call__(self, r):
        """P^-1 r for r (N, k)."""
        t = scipy.linalg.cho_solve(self.core, self.b.T @ r, check_finite=False)
        return (r - self.b @ t) / self.ridge


@dataclasses.dataclass
class CGResult:
    """The solution and how it was reached, per column."""

    x: np.ndarray  # (N, k)
    residual: np.ndarray  # (N, k): the recursively updated residual y - (K + ridge I) x
    iterations: np.ndarray  # (k,) int: iterations each column took
    residual_norms: np.ndarray  # (k,): ||residual|| / ||y|| at the end
    converged: np.ndarray  # (k,) bool
    rank: int | None  # the Nystrom landmarks (None without a preconditioner)


def _colnorms(a):
    return np.sqrt(np.einsum("ij,ij->j", a, a))


def solve(op, y, ridge: float, *, tol: float, maxiter: int, preconditioner, n_landmarks, seed,
          callback=None, progress=None, stacklevel: int = 3) -> CGResult:  # fmt: skip
    """Solve ``(K + ridge I) x = y`` for float64 y (N, k), column by column, one pass of K per
    iteration (see the module doc). Stops a column when ``||r|| <= tol ||y||``.

    ``callback(iteration, residual_norms)`` (relative, (k,); converged columns keep their
    final value) is called after each iteration. ``progress``: the bar's policy (see
    :mod:`fastntk._progress`): iterations out of maxiter, with the largest residual.
    """
    n, k = y.shape
    precond = None
    if preconditioner == "nystrom":
        precond = Nystrom(op, ridge, n_landmarks, seed)
    x = np.zeros((n, k))
    r = y.copy()
    ynorm = _colnorms(y)
    target = tol * ynorm
    rel = np.where(ynorm > 0, 1.0, 0.0)
    active = ynorm > 0  # a zero right-hand side is solved by x = 0
    iterations = np.zeros(k, dtype=np.int64)
    z = r if precond is None else precond(r)
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    breakdown = []
    it = 0
    with progress_bar(total=maxiter, desc="cg", progress=progress, unit="it") as bar:
        while active.any() and it < maxiter:
            a = np.flatnonzero(active)
            pa = p[:, a]
            q = op.matvec(pa) + ridge * pa
            pq = np.einsum("ij,ij->j", pa, q)
            # K + ridge I is positive definite (ridge > 0): pq <= 0 only if K is not positive
            # semi-definite to working precision; that column stops where it is.
            bad = ~(pq > 0)
            if bad.any():
                breakdown.extend(a[bad].tolist())
                active[a[bad]] = False
                a, pa, q, pq = a[~bad], pa[:, ~bad], q[:, ~bad], pq[~bad]
            step = rz[a] / pq
            x[:, a] += step * pa
            r[:, a] -= step * q
            it += 1
            iterations[a] = it
            rn = _colnorms(r[:, a])
            rel[a] = rn / ynorm[a]
            done = rn <= target[a]
            active[a[done]] = False
            bar.update(1)
            bar.set_postfix_str(f"residual {float(rel.max()):.2e}", refresh=False)
            if callback is not None:
                callback(it, rel.copy())
            a = a[~done]
            if a.size:
                ra = r[:, a]
                za = ra if precond is None else precond(ra)
                rz_new = np.einsum("ij,ij->j", ra, za)
                beta = rz_new / rz[a]
                rz[a] = rz_new
                p[:, a] = za + beta * p[:, a]
    converged = rel <= tol
    if breakdown:
        warnings.warn(
            f"conjugate gradients: the kernel is not positive semi-definite to working precision "
            f"(p^T (K + ridge I) p <= 0) for column(s) {sorted(breakdown)}; they stopped at relative "
            f"residual {rel[breakdown].max():.3g}. A larger ridge makes the system better conditioned",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    elif not converged.all():
        worst = float(rel.max())
        warnings.warn(
            f"conjugate gradients did not reach tol = {tol:.3g} in maxiter = {maxiter} iterations: the "
            f"largest relative residual ||y - (K + ridge I) alpha|| / ||y|| is {worst:.3g} "
            f"(columns {np.flatnonzero(~converged).tolist()[:10]}). Raise maxiter, the ridge or "
            "n_landmarks, or use preconditioner='nystrom'",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    return CGResult(x, r, iterations, rel, converged, None if precond is None else precond.rank)


def check_options(n: int, tol, maxiter, preconditioner, n_landmarks, owner: str):
    """(tol, maxiter, preconditioner, n_landmarks) checked, defaults filled in; ValueError
    naming the argument otherwise."""
    from ._args import real_number

    tol = real_number(tol, "tol", owner=owner, low=0.0, low_open=True)
    if tol >= 1.0:
        raise ValueError(f"{owner}: tol must be in (0, 1), a relative residual, got {tol!r}")
    if maxiter is None:
        maxiter = max(100, min(n, 1000))
    elif isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise ValueError(f"{owner}: maxiter must be a positive integer or None, got {maxiter!r}")
    if preconditioner not in ("nystrom", None):
        raise ValueError(f"{owner}: preconditioner must be 'nystrom' or None, got {preconditioner!r}")
    if preconditioner is None:
        if n_landmarks is not None:
            raise ValueError(f"{owner}: n_landmarks is given but preconditioner is None")
    elif n_landmarks is None:
        n_landmarks = default_landmarks(n)
    elif (
        isinstance(n_landmarks, bool)
        or not isinstance(n_landmarks, (int, np.integer))
        or not 1 <= n_landmarks <= n
    ):
        raise ValueError(f"{owner}: n_landmarks must be an integer in [1, N = {n}], got {n_landmarks!r}")
    return tol, int(maxiter), preconditioner, None if n_landmarks is None else int(n_landmarks)


def dense_fits(n: int) -> bool:
    """The rule of ``solver='auto'`` for a lazy kernel: the direct solve holds about three
    N x N float64 arrays at once (the kernel, its symmetrized copy, the regularized factor);
    it is chosen when they take at most half of the memory available now."""
    from ._arrays import available_memory

    available = available_memory()
    if available is None:  # unknown (not Linux, no sysconf): assume a modest 8 GiB machine
        available = 8 << 30
    return 3 * 8 * n * n <= available / 2
