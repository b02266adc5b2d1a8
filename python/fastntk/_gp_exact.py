"""The exact, one-dimensional fit of scikit-ntk's kernel bias: :class:`NTKGaussianProcessRegressor`.

scikit-ntk's kernel (``fastntk.sklearn.NeuralTangentKernel``, the drop-in of
``skntk.NeuralTangentKernel``) is, for depth L and bias beta,

    K(beta) = (A + beta^2 B) / (c (1 + beta^2)),    c = L + 1,

with A (the raw kernel at beta = 0) and B = dK_raw/d(beta^2) free of beta: beta^2 is a
constant the recursion adds to the NTK at every layer (K_h = K_{h-1} S'_h + S_h + beta^2,
S and S' free of beta), so the raw kernel is exactly affine in beta^2. Both come from ONE
native pass (the forward-mode derivative along the NTK-only bias term). With the noise
``alpha`` of a Gaussian process folded in,

    K(beta) + alpha I = (A' + beta^2 B') / (c (1 + beta^2)),   A' = A + c alpha I, B' = B + c alpha I.

Write G = A' + s B' (s = tr A' / tr B', so that neither part dominates) and H = s B'. Then
A' + beta^2 B' = G + (t - 1) H with t = beta^2 / s, and with G = L L^T,

    G + (t - 1) H = L Z (I + (t - 1) T) Z^T L^T,

where Z T Z^T = L^-1 H L^-T (the Cholesky-reduced pencil, LAPACK's dsygst) and T is a
band matrix with kd = 16 sub-diagonals (Z orthogonal): one O(N^3) reduction, LAPACK's
dsytrd_sy2sb, the first stage of its two-stage tridiagonalization, all matrix-matrix work.
(Its second stage, band to tridiagonal, runs on one thread and costs more than all the
likelihood evaluations of the fit below.) After it, log|K + alpha I| and
y^T (K + alpha I)^-1 y cost O(N kd^2) for every beta, from the symmetric elimination of
I + (t - 1) T from the last row up (native, vectorized over a batch of t; T's eigenvalues
lie in [0, 1] in exact arithmetic since 0 <= H <= G, so it is positive definite for every
t > 0), and so do their derivatives (forward mode). For one target the reduction needs no
Z at all: a Householder reflection first maps L^-1 y onto e_1, and the band reduction
leaves e_1 in place (its reflectors act on rows kd + 1..N), so Z^T L^-1 y = |L^-1 y| e_1
and y^T (K + alpha I)^-1 y is |L^-1 y|^2 (M^-1)_11, the reciprocal of the last pivot.
Several targets take a dense eigendecomposition instead (T diagonal). Below N = 256, and
wherever sy2sb is missing or its result fails the checks, SciPy's dsytrd gives a
tridiagonal T (kd = 1) and the same elimination.

The reduction works in place: G over A', H over B', each through its transpose (a Fortran
view); LAPACK writes only that view's lower triangle, so the other keeps G and H, from which
K(beta) + alpha I is rebuilt at the fitted bias for the final Cholesky factorization. The fit
holds two N x N arrays (the kernel's two parts) and LAPACK's workspaces, no copies.

The log marginal likelihood is then a cheap, exact function of theta = log(beta) on the
bounds, and its global maximum is found by a dense grid (every local maximum of the grid
refined by a root search on the exact derivative; the endpoints kept as candidates), not by
a local optimizer from one starting point.
"""

from __future__ import annotations

import ctypes
import math
import numbers
import os

import numpy as np
import scipy.linalg
import scipy.linalg.blas as _blas
import scipy.linalg.lapack as _lapack
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from . import _engine
from ._sklearn_arch import check_int, check_real
from .layers import Dense, Relu

_OWNER = "NTKGaussianProcessRegressor"
_LOG_2PI = math.log(2.0 * math.pi)
# The bounds' widest range: beta^2 must stay a normal float64 with room for c (1 + beta^2).
_BIAS_MIN, _BIAS_MAX = 1e-100, 1e100
# Grid step in theta = log(beta). Every term of the likelihood varies with log(beta) on a
# scale of at least ~1/2: each eigen-direction contributes log(1 + (t - 1) mu) and
# z^2 / (1 + (t - 1) mu), logistic-like in log t = 2 log(beta) - log(s) with unit width,
# and the scale factor 1 + beta^2 has unit width in log(beta^2). A step of a tenth of that
# puts several grid points on every bump, so no local maximum falls between two of them.
_GRID_STEP = 0.05
_GRID_MIN, _GRID_MAX = 65, 4001
_REFINE = 8  # local maxima of the grid refined (the highest first)
# Below this size the single-stage tridiagonal reduction is as fast and needs no foreign call.
_BAND_MIN_N = 256
# Sub-diagonals of the band. Measured at N = 2000 (2 cores): sy2sb takes 0.28 s at kd = 8,
# 0.19-0.20 s at 12-16 and 0.18 s at 24-32, and each likelihood evaluation costs
# N kd^2 / 2 multiply-adds (the 461-point grid: 12 ms at kd = 16, 39 ms at kd = 32).
_BAND_KD = 16


# ---------------------------------------------------------------------------------------
# The two beta-free parts of scikit-ntk's kernel


def ntk_parts(a: np.ndarray, depth: int):
    """(A, B), each (N, N) float64: scikit-ntk's raw kernel is ``A + beta^2 B``.

    ``a`` (N, d) is a checked input (:func:`fastntk._engine.as_input`). One native pass of
    the program of ``fastntk.sklearn.NeuralTangentKernel`` at bias 0, with the forward-mode
    derivative along the NTK-only bias term (``t0 = beta^2`` of every Dense op), which the
    raw kernel is affine in: B is that derivative, exact (no differencing). The two are
    views of one (1, 2, N, N) buffer."""
    d = a.shape[1]
    # The same program as NeuralTangentKernel._program: W_std^2 = d undoes the 1/d of the
    # input kernel (scikit-ntk uses raw inner products), ReLU layers with weight variance 2.
    layers = [Dense(None, float(d) ** 0.5, None)]
    for _ in range(depth):
        layers += [Relu(), Dense(None, 2.0**0.5, None)]
    prog = _engine.build_program(layers, d, ntk_bias=0.0)
    seeds = _engine.dense_seeds(prog, [(2, 1.0)])  # slot 2: the NTK-only bias term t0
    out = _engine.gram(prog, a, None, ("ntk",), seeds=seeds, layers=layers)["ntk"]
    return out[0, 0], out[0, 1]


# ---------------------------------------------------------------------------------------
# The band reduction


def _band_routines() -> list:
    """The dsytrd_sy2sb routines found, best first, each (fn, set_num_threads or None).
    SciPy does not wrap this routine: the first stage of LAPACK's two-stage tridiagonal
    reduction, a symmetric matrix to a band by orthogonal similarity, all matrix-matrix work
    (dsytrd spends half its flops in matrix-vector products).

    First: the LAPACK that scipy.linalg.lapack itself calls (looked up through its extension
    module's dependencies), so that the reduction runs in the same OpenBLAS instance, with
    the same threads, as the Cholesky factorizations and dsygst around it. Two instances back
    to back slow each other down: one's threads keep spinning for a while after its call
    while the other's work (25-50% slower here). Then fastntk's own OpenBLAS (the
    scipy-openblas32 package, already loaded by ``import fastntk``), run with fastntk's
    thread count."""
    found = []
    try:
        from scipy.linalg import _flapack

        lib = ctypes.CDLL(_flapack.__file__)
        for name in ("scipy_dsytrd_sy2sb_", "dsytrd_sy2sb_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = None
                found.append((fn, None))
                break
    except (ImportError, OSError):
        pass
    try:
        import scipy_openblas32

        lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True)))
        fn = lib.scipy_dsytrd_sy2sb_
        threads = getattr(lib, "scipy_openblas_set_num_threads", None)
    except (ImportError, OSError, AttributeError):
        return found
    fn.restype = None
    if threads is not None:
        threads.restype = None
        threads.argtypes = [ctypes.c_int]
    found.append((fn, threads))
    return found


_sy2sb = None
_sy2sb_loaded = False


def _band_reduction(c: np.ndarray, kd: int, routine=None):
    """The band B = Z^T C Z (kd sub-diagonals) of the lower triangle of the Fortran-ordered
    symmetric c (overwritten), with Z e_1 = e_1, as an (n, kd + 1) C array
    ``band[j, k] = B[j + k, j]`` (entries past the matrix zero); None when no routine is
    found or it reports an error. ``routine``: one of :func:`_band_routines` (default: the
    first)."""
    global _sy2sb, _sy2sb_loaded
    if routine is None:
        if not _sy2sb_loaded:
            routines = _band_routines()
            _sy2sb, _sy2sb_loaded = (routines[0] if routines else None), True
        routine = _sy2sb
    if routine is None:
        return None
    fn, set_threads = routine
    n = c.shape[0]
    ab = np.zeros((kd + 1, n), order="F")  # LAPACK's band array, LDAB = kd + 1
    tau = np.empty(max(n - kd, 1))
    info = ctypes.c_int(0)
    ptr = ctypes.POINTER(ctypes.c_double)

    def call(work, lwork):
        # Fortran: DSYTRD_SY2SB(UPLO, N, KD, A, LDA, AB, LDAB, TAU, WORK, LWORK, INFO), then
        # the hidden length of the character argument.
        fn(b"L", ctypes.byref(ctypes.c_int(n)), ctypes.byref(ctypes.c_int(kd)), c.ctypes.data_as(ptr),
           ctypes.byref(ctypes.c_int(n)), ab.ctypes.data_as(ptr), ctypes.byref(ctypes.c_int(kd + 1)),
           tau.ctypes.data_as(ptr), work.ctypes.data_as(ptr), ctypes.byref(ctypes.c_int(lwork)), ctypes.byref(info),
           ctypes.c_size_t(1))  # fmt: skip

    query = np.zeros(1)
    call(query, -1)
    if info.value != 0:
        return None
    lwork = max(int(query[0]), 1)
    # fastntk keeps its own OpenBLAS single-threaded (its drivers call it from OpenMP
    # threads, and set it back to one thread before each call); there the reduction runs
    # alone, with fastntk's thread count.
    if set_threads is not None:
        set_threads(_engine.get_num_threads())
    try:
        call(np.empty(lwork), lwork)
    finally:
        if set_threads is not None:
            set_threads(1)
    if info.value != 0:
        return None
    band = ab.T  # (n, kd + 1), C-contiguous: band[j, k] = B[j + k, j]
    for k in range(1, kd + 1):
        band[max(n - k, 0) :, k] = 0.0
    return band


def _tridiagonal_band(d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The (n, 2) band array of a tridiagonal matrix (diagonal d, off-diagonal e)."""
    band = np.zeros((d.shape[0], 2))
    band[:, 0] = d
    band[:-1, 1] = e
    return band


def _banded(make):
    """The band array (n, kd + 1) of B = Z^T C Z with Z e_1 = e_1 (see _band_reduction),
    where ``make()`` writes the symmetric C into the lower triangle of a Fortran array and
    returns it (which the reduction overwrites); called a second time only when the band
    reduction's result fails the checks below. Small matrices, and any failure, take
    SciPy's dsytrd (a tridiagonal B, kd = 1)."""
    c = make()
    n = c.shape[0]
    if n >= _BAND_MIN_N:
        # Trace and squared Frobenius norm of the symmetric matrix (its lower triangle, by
        # column blocks), kept to check the foreign call's result: both are invariant under
        # the orthogonal reduction.
        trace = float(np.trace(c))
        c00, col0 = float(c[0, 0]), float(np.dot(c[:, 0], c[:, 0]))
        # LAPACK's dlantr: the Frobenius norm of the lower triangle, one pass, no copy.
        lower_norm = float(_lapack.dlantr("F", c, uplo="L", diag="N"))
        frob2 = 2.0 * lower_norm * lower_norm - float(np.einsum("i,i->", np.diagonal(c), np.diagonal(c)))
        band = _band_reduction(c, _BAND_KD)
        if band is not None:
            # An orthogonal reduction keeps both to round-off: a few ulps of the norm
            # per entry, far below these bounds.
            norm = math.sqrt(max(frob2, 1e-300))
            diag, off = band[:, 0], band[:, 1:]
            # Z e_1 = e_1 (what the one-target likelihood relies on) implies B's first
            # column is Z^T C e_1: B_11 = C_11 and |B e_1| = |C e_1|.
            if (
                abs(float(diag.sum()) - trace) <= 1e-10 * norm * math.sqrt(n)
                and abs(float(diag @ diag) + 2.0 * float(np.sum(off * off)) - frob2) <= 1e-10 * norm * norm
                and abs(float(band[0, 0]) - c00) <= 1e-10 * norm
                and abs(float(band[0] @ band[0]) - col0) <= 1e-10 * norm * norm
            ):
                return band
            c = make()  # the reduction wrote over it
    _, d, e, _, info = _lapack.dsytrd(c, lower=1, overwrite_a=1)
    if info != 0:
        raise RuntimeError(f"{_OWNER}: LAPACK dsytrd failed (info={info})")
    return _tridiagonal_band(d, e)


def _reflect(c: np.ndarray, u: np.ndarray, norm: float) -> np.ndarray:
    """P C P in the lower triangle of the Fortran array c (in place), for the Householder
    P = I - tau v v^T with P u = -sign(u_0) |u| e_1: C minus a symmetric rank-2 term (LAPACK's
    dsytd2 update), p = tau C v, w = p - (tau/2)(p.v) v."""
    v = u.copy()
    v[0] += math.copysign(norm, v[0])
    tau = 2.0 / float(v @ v)
    p = _blas.dsymv(tau, c, v, lower=1)
    p -= (0.5 * tau * float(p @ v)) * v
    return _blas.dsyr2(-1.0, v, p, lower=1, a=c, overwrite_a=1)


def _mirror_into_lower(f: np.ndarray, diag: np.ndarray):
    """Copy the strict upper triangle of the square Fortran array f into its lower triangle
    and set its diagonal (the Fortran view's upper triangle is the C-order lower one)."""
    n = f.shape[0]
    lower = np.tril_indices(n, -1)
    f[lower] = f.T[lower]
    np.fill_diagonal(f, diag)


class Pencil:
    """The reduced pencil of ``A' + beta^2 B'`` against the targets: the log marginal
    likelihood of scikit-learn's GaussianProcessRegressor with scikit-ntk's kernel, and its
    derivative in theta = log(beta), for any beta in O(N) (module docstring).

    The reduction works in the two given buffers, no N x N copies: G = A' + s B' is built
    over A' and H = s B' over B'. Each is handed to LAPACK as its transpose (a Fortran view
    of the same symmetric matrix), and LAPACK reads and writes only that view's lower
    triangle (the Cholesky factor of G, then the reduced pencil), so the other triangle
    (the C-order strict lower triangle) keeps G and H, and with the diagonals kept aside,
    :meth:`noisy_kernel` rebuilds K(beta) + alpha I from them afterwards.

    Parameters
    ----------
    a_noisy, b_noisy : ndarray (N, N), float64, C-contiguous
        A' = A + c alpha and B' = B + c alpha on the diagonal (symmetric). OVERWRITTEN.
    c : float
        depth + 1.
    y : ndarray (N, k), float64
        The (normalized) targets.
    """

    def __init__(self, a_noisy: np.ndarray, b_noisy: np.ndarray, c: float, y: np.ndarray):
        n, k = y.shape
        if not (a_noisy.flags.c_contiguous and b_noisy.flags.c_contiguous):
            raise ValueError(f"{_OWNER}: the pencil's buffers must be C-contiguous")
        self.c, self.n, self.k = float(c), n, k
        trace_b = float(np.trace(b_noisy))
        self.s = float(np.trace(a_noisy)) / trace_b if trace_b > 0 else 1.0
        if not (self.s > 0 and math.isfinite(self.s)):
            self.s = 1.0
        # G = A' + s B' over A', H = s B' over B' (one BLAS pass each, in place).
        _blas.daxpy(b_noisy.reshape(-1), a_noisy.reshape(-1), a=self.s)
        _blas.dscal(self.s, b_noisy.reshape(-1))
        self._g, self._h = a_noisy, b_noisy
        self._diag_g, self._diag_h = np.diagonal(a_noisy).copy(), np.diagonal(b_noisy).copy()
        lower, info = _lapack.dpotrf(a_noisy.T, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            raise NotPositiveDefinite(self._full(self._g, self._diag_g) / (self.c * (1.0 + self.s)), math.sqrt(self.s))
        self.logdet_g = 2.0 * float(np.sum(np.log(np.diagonal(lower))))
        u, info = _lapack.dtrtrs(lower, y, lower=1)
        if info != 0:
            raise RuntimeError(f"{_OWNER}: LAPACK dtrtrs failed (info={info})")

        calls = [0]

        def reduced():
            """C = L^-1 H L^-T into the lower triangle of H's Fortran view; again from its
            intact other triangle when a reduction below has to start over."""
            h = b_noisy.T
            if calls[0]:
                _mirror_into_lower(h, self._diag_h)
            calls[0] += 1
            h, info = _lapack.dsygst(h, lower, itype=1, lower=1, overwrite_a=1)
            if info != 0:
                raise RuntimeError(f"{_OWNER}: LAPACK dsygst failed (info={info})")
            return h

        if k == 1:
            self.band, norm = self._reduce_one(reduced, u[:, 0])
            self.w_sq = norm * norm  # w = |L^-1 y| e_1
        else:
            # Several targets: T = diag(mu) from the dense eigendecomposition, and the
            # targets projected on its eigenvectors, z = U^T L^-1 y. LAPACK's dsyevr
            # destroys only the triangle it reads.
            self.mu, u_basis = scipy.linalg.eigh(reduced(), lower=True, overwrite_a=True, check_finite=False)
            self.z_sq = np.sum((u_basis.T @ u) ** 2, axis=1)  # summed over the targets

    @staticmethod
    def _full(buf: np.ndarray, diag: np.ndarray) -> np.ndarray:
        """A new full symmetric matrix from the buffer's C-order strict lower triangle and diag."""
        out = np.tril(buf, -1)
        out += out.T
        out[np.diag_indices_from(out)] = diag
        return out

    def smallest_eigenvalue_error(self, beta: float) -> "NotPositiveDefinite":
        """The error for K(beta) + alpha I not positive definite (kept parts, a copy)."""
        b2 = beta * beta
        k = self._full(self._g, self._diag_g)
        k += (b2 / self.s - 1.0) * self._full(self._h, self._diag_h)
        k /= self.c * (1.0 + b2)
        return NotPositiveDefinite(k, beta)

    def noisy_kernel(self, beta: float) -> np.ndarray:
        """K(beta) + alpha I = (G + (t - 1) H) / (c (1 + beta^2)), t = beta^2 / s, written
        over G's buffer (two BLAS passes), returned as a Fortran array whose UPPER triangle
        holds it (the lower one is garbage): for LAPACK with uplo='U'. The pencil's
        likelihood stays usable; this method can be called once."""
        b2 = beta * beta
        tm1 = b2 / self.s - 1.0
        inv_scale = 1.0 / (self.c * (1.0 + b2))
        flat = self._g.reshape(-1)
        _blas.daxpy(self._h.reshape(-1), flat, a=tm1)
        _blas.dscal(inv_scale, flat)
        np.fill_diagonal(self._g, (self._diag_g + tm1 * self._diag_h) * inv_scale)
        k = self._g.T
        self._g = self._h = None  # the buffers are the caller's now
        return k

    def release(self):
        """Drop the references to the two N x N buffers (the likelihood needs none)."""
        self._g = self._h = None

    @staticmethod
    def _reduce_one(reduced, u: np.ndarray):
        """(band, |u|) for one target: reflect u onto e_1, then reduce to a band (module
        docstring); it keeps e_1 in place, so w = |u| e_1. ``reduced()`` writes C into the
        lower triangle of a Fortran array and returns it (called again when the band
        reduction's result fails its checks)."""
        norm = float(np.linalg.norm(u))

        def reflected():
            c = reduced()
            if c.shape[0] > 1 and norm > 0:
                c = _reflect(c, u, norm)
            return c

        return _banded(reflected), norm

    # -- the likelihood ------------------------------------------------------------------

    # M(t) = I + (t - 1) T. For one target w = |w| e_1, and everything comes from the pivots
    # of M's UL factorization (Gaussian elimination from the last row up):
    #   r_N = M_NN,  r_i = M_ii - M_i,i+1^2 / r_i+1,
    # all > 0 exactly when M is positive definite (for which this elimination is as stable as
    # Cholesky), log|M| = sum_i log r_i and (M^-1)_11 = 1 / r_1, so w^T M^-1 w = |w|^2 / r_1.
    # Their derivatives in t follow the same recurrence (forward mode). For several targets
    # T is diagonal (mu) and the sums are closed forms.

    def _terms(self, t: np.ndarray):
        """(ok, log|M|, w^T M^-1 w) at each t (1-D array); ok: M positive definite."""
        tm1 = t - 1.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.k > 1:
                m = 1.0 + tm1[:, None] * self.mu[None, :]  # eigenvalues of M
                ok = np.all(m > 0, axis=1)
                logdet = np.sum(np.log1p(tm1[:, None] * self.mu[None, :]), axis=1)
                return ok, logdet, np.sum(self.z_sq[None, :] / m, axis=1)
            ok, logdet, r1 = _engine.pencil_pivots(self.band, tm1)
            return ok, logdet, self.w_sq / r1

    def _terms_and_derivatives(self, t: np.ndarray):
        """(ok, log|M|, its derivative in t, w^T M^-1 w, its derivative in t) at each t
        (1-D array); ok: M positive definite (the other entries are meaningless where not)."""
        tm1 = t - 1.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.k > 1:
                m = 1.0 + tm1[:, None] * self.mu[None, :]
                return (
                    np.all(m > 0, axis=1),
                    np.sum(np.log1p(tm1[:, None] * self.mu[None, :]), axis=1),
                    np.sum(self.mu[None, :] / m, axis=1),
                    np.sum(self.z_sq[None, :] / m, axis=1),
                    -np.sum(self.z_sq[None, :] * self.mu[None, :] / (m * m), axis=1),
                )
            ok, logdet, r, dlogdet, dr = _engine.pencil_pivots(self.band, tm1, derivatives=True)
            return ok, logdet, dlogdet, self.w_sq / r, -self.w_sq * dr / (r * r)

    def lml(self, theta: np.ndarray, gradient: bool = True):
        """(values, derivatives) of the log marginal likelihood at each theta = log(beta)
        (1-D array); -inf and 0 where K + alpha I is not positive definite (as scikit-learn).
        Without ``gradient`` the derivatives are not computed (zeros)."""
        theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        b2 = np.exp(2.0 * theta)
        t = b2 / self.s
        scale = self.c * (1.0 + b2)  # (K + alpha I) = (A' + beta^2 B') / scale
        values = np.full(theta.shape, -np.inf)
        grads = np.zeros(theta.shape)
        n, k = self.n, self.k
        const = -0.5 * k * (self.logdet_g + n * _LOG_2PI)
        if not gradient:
            ok, logdet_m, q = self._terms(t)
        else:
            ok, logdet_m, dlogdet_m, q, dq = self._terms_and_derivatives(t)
        values[ok] = const - 0.5 * scale[ok] * q[ok] - 0.5 * k * (logdet_m[ok] - n * np.log(scale[ok]))
        if gradient:
            # d/dtheta: d(beta^2) = 2 beta^2, dt = 2 t, d log(scale) = 2 beta^2 / (1 + beta^2).
            b2, t, scale = b2[ok], t[ok], scale[ok]
            d_quad = 2.0 * self.c * b2 * q[ok] + scale * 2.0 * t * dq[ok]
            d_logdet = 2.0 * t * dlogdet_m[ok] - n * 2.0 * b2 / (1.0 + b2)
            grads[ok] = -0.5 * d_quad - 0.5 * k * d_logdet
        return values, grads

    def maximize(self, low: float, high: float):
        """(theta, value): the global maximum of the log marginal likelihood over
        log(low) <= theta <= log(high), or None when it is -inf everywhere there."""
        lo, hi = math.log(low), math.log(high)
        if hi <= lo:
            value = float(self.lml(lo)[0][0])
            return (lo, value) if np.isfinite(value) else None
        n = int(min(max(math.ceil((hi - lo) / _GRID_STEP) + 1, _GRID_MIN), _GRID_MAX))
        grid = np.linspace(lo, hi, n)
        grid[0], grid[-1] = lo, hi
        values, _ = self.lml(grid, gradient=False)
        if not np.isfinite(values).any():
            return None
        left = np.concatenate(([-np.inf], values[:-1]))
        right = np.concatenate((values[1:], [-np.inf]))
        peaks = np.flatnonzero(np.isfinite(values) & (values >= left) & (values >= right))
        peaks = peaks[np.argsort(-values[peaks], kind="stable")][:_REFINE]

        def grad(x):
            return float(self.lml(x)[1][0])

        best = (float(grid[int(np.argmax(values))]), float(np.max(values)))
        # The derivative at every peak and its two neighbours, in one native call.
        around = np.unique(np.concatenate([peaks - 1, peaks, peaks + 1]).clip(0, n - 1))
        slope = dict(zip(around.tolist(), self.lml(grid[around])[1].tolist()))
        candidates = [float(grid[i]) for i in peaks]
        for i in peaks:
            for a, b in ((max(i - 1, 0), i), (i, min(i + 1, n - 1))):
                if a == b:
                    continue
                ga, gb = slope[a], slope[b]
                if np.isfinite(ga) and np.isfinite(gb) and ga > 0 > gb:
                    candidates.append(
                        scipy.optimize.brentq(
                            grad, float(grid[a]), float(grid[b]), xtol=1e-14, rtol=4 * np.finfo(float).eps
                        )
                    )
        cand_values = self.lml(np.array(candidates), gradient=False)[0]
        for x, value in zip(candidates, cand_values.tolist()):
            if value > best[1]:
                best = (x, value)
        return best


class NotPositiveDefinite(ValueError):
    """K(beta) + alpha I is not positive definite for any beta (numerically)."""

    def __init__(self, k: np.ndarray, beta: float):
        """``k``: K(beta) + alpha I (a copy, used up), at the bias ``beta`` of the message."""
        mean_diagonal = float(np.mean(np.diagonal(k)))
        smallest = float(
            scipy.linalg.eigh(k, eigvals_only=True, subset_by_index=(0, 0), check_finite=False, overwrite_a=True)[0]
        )
        self.smallest = smallest
        super().__init__(
            f"{_OWNER}: the kernel plus the noise alpha is not positive definite (numerically) for "
            f"any bias: the smallest eigenvalue of K(bias) + alpha I at bias = {beta:.4g} is "
            f"{smallest:.3e}. Increase alpha (the kernel's diagonal is about {mean_diagonal:.3g}), "
            "or remove duplicated or collinear training points"
        )


# ---------------------------------------------------------------------------------------
# Parameter checks


def check_bounds(bounds):
    """'fixed', or (low, high) as floats with 0 < low <= high, or ValueError naming bias_bounds."""
    if isinstance(bounds, str):
        if bounds == "fixed":
            return bounds
        raise ValueError(f"{_OWNER}: bias_bounds must be 'fixed' or a pair (low, high), got {bounds!r}")
    try:
        pair = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{_OWNER}: bias_bounds must be 'fixed' or a pair (low, high), got {bounds!r}"
        ) from None
    if pair.shape != (2,):
        raise ValueError(f"{_OWNER}: bias_bounds must be 'fixed' or a pair (low, high), got {bounds!r}")
    low, high = float(pair[0]), float(pair[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{_OWNER}: bias_bounds must be finite, got {bounds!r}")
    if low > high:
        raise ValueError(f"{_OWNER}: bias_bounds excludes every value: low {low!r} > high {high!r}")
    if low <= 0:
        raise ValueError(
            f"{_OWNER}: bias_bounds must be > 0 (the bias is fitted on a log scale, as scikit-learn "
            f"does), got {bounds!r}"
        )
    if low < _BIAS_MIN or high > _BIAS_MAX:
        raise ValueError(
            f"{_OWNER}: bias_bounds must lie within [{_BIAS_MIN:g}, {_BIAS_MAX:g}], got {bounds!r}"
        )
    return low, high


def check_alpha(alpha, n: int | None = None):
    """alpha as a float >= 0 or, with n, an (n,) float64 array of them; ValueError/TypeError
    naming alpha. Without n (before the data is seen) an array is checked for finiteness only."""
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        return check_real(_OWNER, "alpha", alpha, low=0.0)
    try:
        a = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{_OWNER}: alpha must be a real number >= 0 or a 1-D array of them, got {alpha!r}"
        ) from None
    if a.ndim == 0:
        return check_real(_OWNER, "alpha", float(a), low=0.0)
    if a.ndim != 1:
        raise ValueError(f"{_OWNER}: alpha must be a number or a 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{_OWNER}: alpha must be finite and >= 0 everywhere")
    if n is not None and a.shape[0] != n:
        if a.shape[0] == 1:
            return float(a[0])
        raise ValueError(
            f"{_OWNER}: alpha must be a number or have one entry per sample ({a.shape[0]} != {n})"
        )
    return a


# ---------------------------------------------------------------------------------------
# The estimator


class NTKGaussianProcessRegressor(RegressorMixin, BaseEstimator):
    """Gaussian-process regression with scikit-ntk's kernel and its bias fitted exactly.

    The same model as scikit-learn's ``GaussianProcessRegressor(kernel=
    skntk.NeuralTangentKernel(depth, bias, bias_bounds), alpha=alpha,
    normalize_y=normalize_y)``: the bias maximizes the log marginal likelihood within the
    bounds (on a log scale, no prior, as scikit-learn), and ``predict``,
    ``log_marginal_likelihood`` and ``sample_y`` mean what they mean there. The fit is not
    L-BFGS from the initial bias but the GLOBAL maximum over the bounds, found exactly:
    the kernel is (A + bias^2 B) / ((depth + 1)(1 + bias^2)) with A and B free of the bias
    (one native pass), and one O(N^3) reduction of that pencil gives the likelihood and its
    derivative for every bias in O(N); see :mod:`fastntk._gp_exact`. So the fit costs about
    three Cholesky factorizations, where scikit-learn's pays a kernel, a Cholesky and an
    N x N inverse per likelihood evaluation.

    Parameters
    ----------
    depth : int, default=2
        Hidden (ReLU) layers of scikit-ntk's network, >= 0.
    bias : float, default=0.1
        The bias when ``bias_bounds='fixed'``, >= 0; otherwise unused (the fit is global;
        scikit-learn starts its optimizer there).
    bias_bounds : pair of floats or 'fixed', default=(1e-5, 1e5)
        The bias is searched in [low, high], 0 < low <= high (within [1e-100, 1e100]).
    alpha : float or ndarray of shape (n_samples,), default=1e-10
        Added to the kernel's diagonal (noise variance, per sample with an array), >= 0.
    normalize_y : bool, default=False
        Standardize the targets (mean 0, variance 1) for the fit, as scikit-learn.
    copy_X_train : bool, default=True
        Store a copy of the training inputs (else a reference).

    Attributes
    ----------
    kernel_ : fastntk.sklearn.NeuralTangentKernel
        The kernel with the fitted bias.
    bias_ : float
        The fitted bias.
    log_marginal_likelihood_value_ : float
        The log marginal likelihood at the fitted bias.
    X_train_ : ndarray of shape (n_samples, n_features)
    y_train_ : ndarray of shape (n_samples,) or (n_samples, n_targets)
        The targets (normalized with ``normalize_y``).
    L_ : ndarray of shape (n_samples, n_samples)
        Lower Cholesky factor of ``kernel_(X_train_) + alpha I``.
    alpha_ : ndarray of shape (n_samples,) or (n_samples, n_targets)
        ``(kernel_(X_train_) + alpha I)^-1 y_train_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has feature names.

    Notes
    -----
    Differences from ``GaussianProcessRegressor``: ``predict`` before ``fit`` raises
    NotFittedError (scikit-learn predicts with the prior); the fitted bias is the global
    maximum (scikit-learn's is the local maximum its optimizer reaches from ``bias``, the
    same one when the likelihood has one maximum); ``alpha`` is not modified by ``fit``.
    A kernel plus noise that is not positive definite raises ValueError naming its smallest
    eigenvalue, before any optimization.

    Cost: one native kernel pass, then LAPACK (SciPy's, with its BLAS threads): two
    Cholesky factorizations, the reduction of the pencil to standard form (dsygst) and one
    reduction to a band of 16 sub-diagonals (dsytrd_sy2sb, from N = 256 on; SciPy's
    tridiagonal dsytrd below), then the likelihood on a grid of about 460 biases and its
    refinement by native band eliminations. Several targets replace the band reduction by
    a dense eigendecomposition (several times its cost). Memory: the kernel's two parts
    (two N x N float64 arrays, worked on in place; the Cholesky factor ``L_`` is one of
    them) and LAPACK's workspaces.
    """

    def __init__(
        self,
        depth=2,
        *,
        bias=0.1,
        bias_bounds=(1e-5, 1e5),
        alpha=1e-10,
        normalize_y=False,
        copy_X_train=True,
    ):
        self.depth = depth
        self.bias = bias
        self.bias_bounds = bias_bounds
        self.alpha = alpha
        self.normalize_y = normalize_y
        self.copy_X_train = copy_X_train

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _checked(self):
        depth = check_int(_OWNER, "depth", self.depth, low=0)
        bias = check_real(_OWNER, "bias", self.bias, low=0.0)
        bounds = check_bounds(self.bias_bounds)
        check_alpha(self.alpha)
        for name in ("normalize_y", "copy_X_train"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{_OWNER}: {name} must be a bool, got {getattr(self, name)!r}")
        return depth, bias, bounds

    @staticmethod
    def _kernel(depth, bias, bounds):
        from .sklearn import NeuralTangentKernel  # the module re-exports this class

        return NeuralTangentKernel(depth, bias=bias, bias_bounds=bounds)

    def fit(self, X, y):
        """Fit the bias and the posterior to inputs X (n_samples, n_features) and targets y
        (n_samples,) or (n_samples, n_targets). Returns self."""
        depth, bias, bounds = self._checked()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        alpha = check_alpha(self.alpha, X.shape[0])
        if self.normalize_y:
            self._y_train_mean = np.mean(y, axis=0)
            std = np.std(y, axis=0)
            # scikit-learn's _handle_zeros_in_scale: a constant target keeps scale 1 (for
            # one target only an exact 0 is replaced; for several, anything below 10 eps).
            if std.ndim == 0:
                std = 1.0 if std == 0.0 else std
            else:
                std[std < 10 * np.finfo(std.dtype).eps] = 1.0
            self._y_train_std = std
            y = (y - self._y_train_mean) / self._y_train_std
        else:
            shape = (y.shape[1],) if y.ndim == 2 else 1
            self._y_train_mean, self._y_train_std = np.zeros(shape), np.ones(shape)
        self.X_train_ = np.copy(X) if self.copy_X_train else X
        self.y_train_ = np.copy(y) if self.copy_X_train else y
        y2 = y[:, None] if y.ndim == 1 else y
        self._pencil = None
        c = depth + 1.0
        if bounds == "fixed":
            kernel = self._kernel(depth, bias, bounds)
            k_noisy = kernel(self.X_train_)
            k_noisy[np.diag_indices_from(k_noisy)] += alpha
        else:
            a, b = ntk_parts(_engine.as_input(self.X_train_, "X"), depth)
            noise = c * alpha
            a[np.diag_indices_from(a)] += noise
            b[np.diag_indices_from(b)] += noise
            self._pencil = Pencil(a, b, c, y2)
            best = self._pencil.maximize(*bounds)
            if best is None:
                raise self._pencil.smallest_eigenvalue_error(math.sqrt(self._pencil.s))
            theta, value = best
            if theta <= math.log(bounds[0]):
                bias = bounds[0]
            elif theta >= math.log(bounds[1]):
                bias = bounds[1]
            else:
                bias = float(np.clip(math.exp(theta), bounds[0], bounds[1]))
            kernel = self._kernel(depth, bias, bounds)
            del a, b
        self.kernel_ = kernel
        self.bias_ = bias
        # Factored in place. Without the pencil: the symmetric C array's transpose is a
        # Fortran array, whose lower Cholesky factor LAPACK writes over it. With it: the
        # pencil rebuilds K(bias) + alpha I in the upper triangle of a Fortran array, whose
        # factor U (K = U^T U) is, read in C order, the lower factor L = U^T.
        if self._pencil is None:
            factor, info = _lapack.dpotrf(k_noisy.T, lower=1, clean=1, overwrite_a=1)
            lower = True
        else:
            factor, info = _lapack.dpotrf(self._pencil.noisy_kernel(bias), lower=0, clean=1, overwrite_a=1)
            lower = False
        if info != 0:
            raise self._not_positive_definite(kernel, alpha)
        self.L_ = factor if lower else factor.T
        self.alpha_ = scipy.linalg.cho_solve((factor, lower), self.y_train_, check_finite=False)
        if self._pencil is None:
            self.log_marginal_likelihood_value_ = self._cholesky_lml(y2)
        else:
            self.log_marginal_likelihood_value_ = float(value)
        return self

    def _not_positive_definite(self, kernel, alpha):
        k = kernel(self.X_train_)
        k[np.diag_indices_from(k)] += alpha
        smallest = float(
            scipy.linalg.eigh(k, eigvals_only=True, subset_by_index=(0, 0), check_finite=False)[0]
        )
        return ValueError(
            f"{_OWNER}: the kernel plus the noise alpha is not positive definite (numerically) at "
            f"bias = {kernel.bias:.6g}: its smallest eigenvalue is {smallest:.3e}. Increase alpha"
        )

    def _cholesky_lml(self, y2):
        """The log marginal likelihood from L_ and alpha_ (as scikit-learn computes it)."""
        a2 = self.alpha_[:, None] if self.alpha_.ndim == 1 else self.alpha_
        n, k = y2.shape
        return float(
            -0.5 * np.einsum("ik,ik->", y2, a2)
            - k * np.sum(np.log(np.diagonal(self.L_)))
            - 0.5 * k * n * _LOG_2PI
        )

    def log_marginal_likelihood(self, theta=None, eval_gradient=False, clone_kernel=True):
        """The log marginal likelihood of theta = [log(bias)] on the training data, as
        ``GaussianProcessRegressor.log_marginal_likelihood`` (with its gradient in theta
        when ``eval_gradient``), in O(n_samples) per call. ``clone_kernel`` is accepted for
        compatibility; nothing is modified."""
        check_is_fitted(self, "L_")
        if theta is None:
            if eval_gradient:
                raise ValueError("Gradient can only be evaluated for theta!=None")
            return self.log_marginal_likelihood_value_
        theta = np.asarray(theta, dtype=np.float64).ravel()
        if self._pencil is None:  # bias fixed: no hyperparameter
            if theta.size != 0:
                raise ValueError(f"{_OWNER}: theta must be empty with bias_bounds='fixed', got {theta!r}")
            value = self.log_marginal_likelihood_value_
            return (value, np.zeros(0)) if eval_gradient else value
        if theta.size != 1 or not np.isfinite(theta[0]):
            raise ValueError(f"{_OWNER}: theta must be [log(bias)], one finite number, got {theta!r}")
        values, grads = self._pencil.lml(theta)
        if eval_gradient:
            return float(values[0]), grads.copy()
        return float(values[0])

    def predict(self, X, return_std=False, return_cov=False):
        """Posterior mean at X (n_samples, n_features); with ``return_std`` or
        ``return_cov`` (at most one) also its standard deviation or covariance, exactly as
        ``GaussianProcessRegressor.predict``."""
        if return_std and return_cov:
            raise RuntimeError("At most one of return_std or return_cov can be requested.")
        check_is_fitted(self, "L_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        k_trans = self.kernel_(X, self.X_train_)
        y_mean = k_trans @ self.alpha_
        y_mean = self._y_train_std * y_mean + self._y_train_mean
        if y_mean.ndim > 1 and y_mean.shape[1] == 1:
            y_mean = np.squeeze(y_mean, axis=1)
        if not (return_std or return_cov):
            return y_mean
        v = scipy.linalg.solve_triangular(self.L_, k_trans.T, lower=True, check_finite=False)
        if return_cov:
            y_cov = self.kernel_(X) - v.T @ v
            y_cov = np.outer(y_cov, self._y_train_std**2).reshape(*y_cov.shape, -1)
            if y_cov.shape[2] == 1:
                y_cov = np.squeeze(y_cov, axis=2)
            return y_mean, y_cov
        y_var = self.kernel_.diag(X).copy()
        y_var -= np.einsum("ij,ij->j", v, v)
        # Round-off can make a variance slightly negative where the posterior is sure.
        np.maximum(y_var, 0.0, out=y_var)
        y_var = np.outer(y_var, self._y_train_std**2).reshape(*y_var.shape, -1)
        if y_var.shape[1] == 1:
            y_var = np.squeeze(y_var, axis=1)
        return y_mean, np.sqrt(y_var)

    def sample_y(self, X, n_samples=1, random_state=0):
        """Samples of the posterior at X, shape (n_samples_X, n_samples) or (n_samples_X,
        n_targets, n_samples), as ``GaussianProcessRegressor.sample_y``."""
        n_samples = check_int(_OWNER, "n_samples", n_samples, low=1)
        rng = check_random_state(random_state)
        y_mean, y_cov = self.predict(X, return_cov=True)
        if y_mean.ndim == 1:
            return rng.multivariate_normal(y_mean, y_cov, n_samples).T
        return np.hstack(
            [
                rng.multivariate_normal(y_mean[:, j], y_cov[..., j], n_samples).T[:, np.newaxis]
                for j in range(y_mean.shape[1])
            ]
        )
