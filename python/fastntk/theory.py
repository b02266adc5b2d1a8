"""Generalization estimates of kernel ridge regression from the training kernel alone.

Kernel ridge regression (KRR) with a training kernel ``K`` (N, N), targets ``y`` (N,) or
(N, k) and an absolute ridge ``δ`` predicts ``f(x) = K(x, X) (K + δ I)^-1 y``; with
``δ = 0`` it is the converged network of Neural Tangents' ``predict`` (t = inf), and
``fastntk.predict``'s ``diag_reg`` is the relative ridge ``δ / (trace(K) / N)``. On the
training set the fit is ``H y`` with the hat matrix ``H = K (K + δ I)^-1``.

Everything here starts from ONE eigendecomposition ``K = U diag(λ) U^T`` (LAPACK's
``syevd`` through :func:`scipy.linalg.eigh`, O(N^3)); afterwards each ridge costs O(N^2)
(leave-one-out) or O(N) (GCV, KARE, eigenlearning), so a sweep over many ridges costs
about one factorization:

- :func:`leave_one_out` - the exact leave-one-out residuals and error, in closed form;
- :func:`gcv` - generalized cross-validation;
- :func:`kare` - the kernel alignment risk estimator of Jacot et al. (2020);
- :func:`eigenlearning` / :func:`eigenlearning_from_spectrum` - the eigenlearning
  prediction of the test error from the kernel's spectrum and the target's
  projections on it (Simon et al. 2021; Canatar, Bordelon and Pehlevan 2021);
- :func:`select_ridge` and :func:`select_depth` - the ridge, and the depth from
  ``net.kernel(x, every_layer=True)``, that minimize one of these criteria, with no
  validation split.

Errors are mean squared errors over points and output columns. Inputs are checked
before any work (:func:`spectrum` for the kernel): a non-square, non-symmetric or
non-finite ``K``, a ``K`` that is not positive semidefinite (the message gives its
smallest eigenvalue), non-finite targets, mismatched shapes and negative or non-finite
ridges raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.optimize

from ._predict_linalg import cholesky

__all__ = [
    "KernelSpectrum",
    "LeaveOneOut",
    "Eigenlearning",
    "RidgeSelection",
    "DepthSelection",
    "SingularRidgeWarning",
    "spectrum",
    "leave_one_out",
    "gcv",
    "kare",
    "eigenlearning",
    "eigenlearning_from_spectrum",
    "select_ridge",
    "select_depth",
]

_EPS = np.finfo(np.float64).eps
# A kernel built in float64 is PSD only up to round-off: each entry carries a relative
# error of a few eps, and LAPACK's eigh adds a backward error of O(N eps ||K||). An
# eigenvalue above -_PSD_SLACK * N * eps * max|λ| is round-off of a PSD matrix; one below
# is a kernel that is not PSD (a bug, or a matrix that is not a kernel).
_PSD_SLACK = 100.0
_CRITERIA = ("loo", "gcv", "kare")


class SingularRidgeWarning(RuntimeWarning):
    """``K + ridge I`` is singular to working precision (its smallest eigenvalue is at most
    N eps times its largest), so the criterion at that ridge is undefined and reported as
    inf."""


class KernelSpectrum(NamedTuple):
    """The eigendecomposition ``K = eigenvectors @ diag(eigenvalues) @ eigenvectors.T``.

    eigenvalues : (N,) float64, ascending; those within round-off of 0 (|λ| at most
        N eps max|λ| times a safety factor) are set to exactly 0.
    eigenvectors : (N, N) float64, orthonormal columns.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray


class LeaveOneOut(NamedTuple):
    """residuals : (R, N) or (R, N, k) - ``y_i`` minus the prediction at ``x_i`` of the
    regressor fitted to the other N - 1 points at the same ridge (inf where undefined).
    mse : (R,) - their mean square (over points and outputs)."""

    residuals: np.ndarray
    mse: np.ndarray


class Eigenlearning(NamedTuple):
    """The eigenlearning prediction at each ridge (R ridges, M eigenmodes).

    test_mse : (R,) predicted test MSE against noisy test targets, ``E_0 (Σ (1-L_i)^2 v_i^2 + ε^2)``.
    train_mse : (R,) predicted training MSE, ``(δ / (n κ))^2 test_mse``.
    kappa : (R,) the effective regularization κ.
    overfitting : (R,) ``E_0 = n / (n - Σ L_i^2)``.
    learnabilities : (R, M) ``L_i = λ_i / (λ_i + κ)``, in the order of the given eigenvalues.
    """

    test_mse: np.ndarray
    train_mse: np.ndarray
    kappa: np.ndarray
    overfitting: np.ndarray
    learnabilities: np.ndarray


class RidgeSelection(NamedTuple):
    """ridge : the chosen ridge; index : its position in ``ridges``; scores : (R,) the
    criterion at every ridge (inf where undefined)."""

    ridge: float
    index: int
    scores: np.ndarray


class DepthSelection(NamedTuple):
    """depth : the chosen key (layer index or depth); ridge : the chosen ridge;
    depths : (D,) the candidates, in the order scored; scores : (D, R) the criterion of
    every candidate at every ridge."""

    depth: object
    ridge: float
    depths: list
    scores: np.ndarray


# ---------------------------------------------------------------------------------------
# Checks (all before any work)


def _check_kernel(k, name: str = "K") -> np.ndarray:
    k = np.asarray(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {k.shape}")
    if k.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {k.shape}")
    if not (np.issubdtype(k.dtype, np.floating) or np.issubdtype(k.dtype, np.integer)):
        raise ValueError(f"{name} must be real, got dtype {k.dtype}")
    k = np.asarray(k, dtype=np.float64)
    if not np.all(np.isfinite(k)):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")
    scale = np.max(np.abs(k))
    # A kernel matrix is symmetric exactly (fastntk mirrors the upper triangle) or to
    # round-off; anything larger than this is a different matrix, not noise.
    asym = np.max(np.abs(k - k.T))
    if asym > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric: max |K - K^T| = {asym:.3g} (max |K| = {scale:.3g})")
    return k


def _check_targets(y, n: int, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(
            f"{name} must have shape ({n},) or ({n}, k) to match K ({n}, {n}), got shape {y.shape}"
        )
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"{name} must be real, got dtype {y.dtype}")
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        raise ValueError(f"{name} must have at least one column, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        bad = int(np.count_nonzero(~np.isfinite(y)))
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return y


def _check_ridges(ridges, name: str = "ridges") -> tuple[np.ndarray, bool]:
    """(ridges as a 1-D float64 array, whether a scalar was given)."""
    r = np.asarray(ridges)
    scalar = r.ndim == 0
    if r.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-D sequence, got shape {r.shape}")
    if not (np.issubdtype(r.dtype, np.floating) or np.issubdtype(r.dtype, np.integer)):
        raise ValueError(f"{name} must be real numbers, got dtype {r.dtype}")
    r = np.atleast_1d(np.asarray(r, dtype=np.float64))
    if r.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} must be finite, got {r[~np.isfinite(r)][:5].tolist()}")
    if np.any(r < 0):
        raise ValueError(f"{name} must be >= 0, got negative value(s) {r[r < 0][:5].tolist()}")
    return r, scalar


def _check_criterion(criterion) -> str:
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    return criterion


# ---------------------------------------------------------------------------------------
# The one eigendecomposition


def spectrum(K) -> KernelSpectrum:
    """Check ``K`` and return its eigendecomposition, to reuse across criteria.

    Parameters
    ----------
    K : array_like, shape (N, N)
        A kernel matrix: real, finite, symmetric, positive semidefinite.

    Returns
    -------
    KernelSpectrum
        Eigenvalues ascending; those within round-off of 0 set to 0 (see below).

    Raises
    ------
    ValueError
        If K is not square, not finite, not symmetric (to 1e-10 of max |K|), or not
        positive semidefinite: its smallest eigenvalue is below
        ``-100 N eps max|λ|``, the round-off band of a PSD matrix built and
        factored in float64 (entries with a few eps of relative error each, and
        eigh's backward error of O(N eps ||K||)). The message names that eigenvalue.
    """
    if isinstance(K, KernelSpectrum):
        return K
    k = _check_kernel(K)
    # The symmetric part: eigh reads one triangle, so make the two agree first.
    lam, u = scipy.linalg.eigh(0.5 * (k + k.T), check_finite=False, driver="evd")
    n = k.shape[0]
    top = max(abs(lam[0]), abs(lam[-1]))
    band = _PSD_SLACK * n * _EPS * top
    if lam[0] < -band:
        raise ValueError(
            f"K is not positive semidefinite: its smallest eigenvalue is {lam[0]:.6g} "
            f"(largest {lam[-1]:.6g}; round-off allows down to {-band:.3g})"
        )
    lam = np.where(np.abs(lam) <= band, 0.0, lam)
    return KernelSpectrum(lam, u)


def _inputs(K, y, ridges):
    """Checked (spectrum, targets as (N, k), ridges (R,), y was 1-D, ridges was scalar);
    the cheap checks run before the eigendecomposition."""
    if isinstance(K, KernelSpectrum):
        n = K.eigenvalues.shape[0]
    else:
        K = _check_kernel(K)
        n = K.shape[0]
    y = _check_targets(y, n)
    r, scalar = _check_ridges(ridges)
    return spectrum(K), y.reshape(n, -1), r, y.ndim == 1, scalar


def _resolvent(lam: np.ndarray, ridges: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """s[r, k] = 1 / (λ_k + δ_r) (R, N), and a mask (R,) of the ridges where K + δ I is
    singular to working precision (smallest eigenvalue at most N eps times the largest,
    the threshold the Cholesky refusal in fastntk.predict uses); there s is set to 0
    and the caller reports inf, with a SingularRidgeWarning."""
    n = lam.shape[0]
    shifted = lam[None, :] + ridges[:, None]  # (R, N), ascending along N
    singular = shifted[:, 0] <= n * _EPS * shifted[:, -1]
    if np.any(singular):
        warnings.warn(
            f"{what}: K + ridge I is singular to working precision at ridge(s) "
            f"{ridges[singular][:5].tolist()} (K's smallest eigenvalue is {lam[0]:.3g}); "
            "the criterion there is undefined and reported as inf; use a ridge > 0",
            SingularRidgeWarning,
            stacklevel=3,
        )
    with np.errstate(divide="ignore"):
        s = np.where(singular[:, None], 0.0, 1.0 / np.where(singular[:, None], 1.0, shifted))
    return s, singular


# ---------------------------------------------------------------------------------------
# Leave-one-out, GCV, KARE


def leave_one_out(K, y, ridges) -> LeaveOneOut:
    """Exact leave-one-out residuals and error of kernel ridge regression, at every ridge.

    For A = K + δ I and α = A^-1 y, the regressor fitted to all points but x_i (same
    ridge) misses y_i by exactly ``α_i / (A^-1)_ii`` (the bordered-inverse identity;
    equivalently ``(y - H y)_i / (1 - H_ii)`` with H = K A^-1 when δ > 0). From
    ``K = U diag(λ) U^T``: ``α = U diag(1/(λ+δ)) U^T y`` and
    ``(A^-1)_ii = Σ_k U_ik^2 / (λ_k + δ)``, O(N^2 k) per ridge after the one eigh.
    This is the refit's error itself, not an estimate: only round-off (of order
    cond(A) eps) separates it from N explicit refits.

    Parameters
    ----------
    K : array_like (N, N) or KernelSpectrum
        Training kernel, or its :func:`spectrum`.
    y : array_like, shape (N,) or (N, k)
        Targets.
    ridges : float or sequence of float >= 0
        Absolute ridges δ (added to K's diagonal).

    Returns
    -------
    LeaveOneOut
        ``residuals`` (R, N) or (R, N, k) and ``mse`` (R,); a scalar ridge drops the R
        axis. Where K + δ I is singular to working precision (δ = 0 and K singular) the
        leave-one-out fit is undefined: inf, with a :class:`SingularRidgeWarning`.
    """
    spec, y2, r, vector, scalar = _inputs(K, y, ridges)
    lam, u = spec
    s, singular = _resolvent(lam, r, "leave_one_out")
    c = u.T @ y2  # (N, k)
    alpha = np.matmul(u, s[:, :, None] * c[None])  # (R, N, k)
    diag = (s @ (u * u).T)[:, :, None]  # (R, N, 1): (A^-1)_ii
    with np.errstate(divide="ignore", invalid="ignore"):
        res = alpha / diag
    res[singular] = np.inf
    mse = np.mean(res**2, axis=(1, 2))
    if vector:
        res = res[:, :, 0]
    if scalar:
        return LeaveOneOut(res[0], mse[0])
    return LeaveOneOut(res, mse)


def gcv(K, y, ridges) -> np.ndarray:
    """Generalized cross-validation (Craven and Wahba 1979; Golub, Heath and Wahba 1979).

    ``GCV(δ) = (1/N) ||(I - H) y||^2 / ((1/N) tr(I - H))^2`` with H = K (K + δ I)^-1, i.e.
    the training MSE inflated by the effective degrees of freedom; divided by k for k
    output columns. Since ``I - H = δ (K + δ I)^-1``, δ cancels:
    ``GCV = N Σ_j c_j^2/(λ_j+δ)^2 / (Σ_j 1/(λ_j+δ))^2`` with c = U^T y, so it is O(N) per
    ridge after the one eigh and stays exact as δ -> 0 for a nonsingular K.

    It estimates the test MSE against noisy targets; it is the rotation-invariant
    version of leave-one-out, and under the assumptions of :func:`kare` its error
    relative to the true risk shrinks like O(1/sqrt(N)). Near interpolation
    (tr(H)/N -> 1) it divides by a small number and is least reliable: with a depth-2
    ReLU NTK at N = 300 (bench/theory_validation.py, means of 10 draws) it was 17% high
    on a teacher-network task and 25% low on scikit-learn's digits at ridge
    1e-4 trace(K)/N, within 6% (teacher) and 3% (digits) from ridge 1 trace(K)/N up;
    :func:`leave_one_out` was within 4% (teacher) and 1% (digits) at every ridge.

    Parameters
    ----------
    K : array_like (N, N) or KernelSpectrum
    y : array_like, shape (N,) or (N, k)
    ridges : float or sequence of float >= 0
        Absolute ridges δ.

    Returns
    -------
    ndarray (R,), or a float for a scalar ridge; inf (with a SingularRidgeWarning)
    where K + δ I is singular to working precision.
    """
    spec, y2, r, _, scalar = _inputs(K, y, ridges)
    lam, u = spec
    n, k = y2.shape
    s, singular = _resolvent(lam, r, "gcv")
    c2 = np.sum((u.T @ y2) ** 2, axis=1)  # (N,): Σ over outputs of c_j^2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = n * (s**2 @ c2) / np.sum(s, axis=1) ** 2 / k
    out[singular] = np.inf
    return out[0] if scalar else out


def kare(K, y, ridges) -> np.ndarray:
    """The kernel alignment risk estimator, KARE (Jacot, Şimşek, Spadaro, Hongler and
    Gabriel, "Kernel alignment risk estimator: risk prediction from training data",
    NeurIPS 2020).

    In the paper's normalization KRR with ridge λ > 0 minimizes
    ``(1/N) Σ_i (f(x_i) - y_i)^2 + λ ||f||^2``, i.e. ``f = K(x, X) (K + N λ I)^-1 y``, and

        ρ(λ) = (1/N) y^T (K/N + λ I)^-2 y / ((1/N) tr (K/N + λ I)^-1)^2,

    an estimate of the expected test MSE (against noisy targets) that uses the
    training data only. Here the ridge is fastntk's absolute one, δ = N λ. (With that
    substitution ρ equals :func:`gcv` exactly: both are
    ``N y^T A^-2 y / tr(A^-1)^2`` with A = K + δ I; it is computed here in the
    paper's own variables.) Assumptions: i.i.d. training points, λ > 0, and the
    paper's universality hypothesis (the KRR predictor's moments depend on the
    data only through the first two moments of the features); for a fixed task
    its relative error shrinks like O(1/sqrt(N)). For k output columns, the mean over
    columns.

    Parameters
    ----------
    K : array_like (N, N) or KernelSpectrum
    y : array_like, shape (N,) or (N, k)
    ridges : float or sequence of float >= 0
        Absolute ridges δ = N λ.

    Returns
    -------
    ndarray (R,), or a float for a scalar ridge; inf (with a SingularRidgeWarning)
    where K + δ I is singular to working precision.
    """
    spec, y2, r, _, scalar = _inputs(K, y, ridges)
    lam, u = spec
    n, k = y2.shape
    mu = lam / n  # eigenvalues of K / N
    g, singular = _resolvent(mu, r / n, "kare")  # eigenvalues of (K/N + λ I)^-1
    c2 = np.sum((u.T @ y2) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (g**2 @ c2 / n) / (np.sum(g, axis=1) / n) ** 2 / k
    out[singular] = np.inf
    return out[0] if scalar else out


# ---------------------------------------------------------------------------------------
# Eigenlearning


def _solve_kappa(mu: np.ndarray, n: float, ridge: float) -> float:
    """κ > 0 with Σ_i μ_i/(μ_i+κ) + δ/κ = n; 0 when δ = 0 and the kernel has at most n
    nonzero eigenvalues (then the equation has no positive root: KRR interpolates with
    every mode it has, and the predicted error is infinite).

    The left side decreases strictly in κ from +inf (δ > 0; or the rank when δ = 0) to 0,
    so the root is unique; it lies in [δ/n, (Σμ + δ)/n] (at κ = δ/n the δ-term alone is n,
    at κ = (Σμ + δ)/n the sum is at most (Σμ + δ)/κ = n)."""
    total = float(np.sum(mu))

    def g(log_kappa):
        kappa = np.exp(log_kappa)
        return float(np.sum(mu / (mu + kappa)) + ridge / kappa - n)

    hi = (total + ridge) / n
    if ridge > 0:
        lo = ridge / n
    else:
        if np.count_nonzero(mu > 0) <= n:
            return 0.0
        lo = hi
        while g(np.log(lo)) <= 0:  # halve until the sum of learnabilities exceeds n
            lo *= 0.5
            if lo < 1e-300:  # pragma: no cover - needs a spectrum spanning 300 decades
                return 0.0
    if hi <= lo:
        return lo
    return float(np.exp(scipy.optimize.brentq(g, np.log(lo), np.log(hi), xtol=1e-14, rtol=1e-14)))


def eigenlearning_from_spectrum(eigenvalues, coefficients, n_train, ridges, noise=0.0) -> Eigenlearning:
    """The eigenlearning prediction of KRR's test and training error (Simon, Dickens,
    Karkada and DeWeese, "The eigenlearning framework", TMLR 2023, arXiv:2110.03922;
    the same equations as Canatar, Bordelon and Pehlevan, Nat. Commun. 2021).

    The kernel's Mercer decomposition over the input distribution p is
    ``K(x, x') = Σ_i λ_i φ_i(x) φ_i(x')`` with ``E_p[φ_i φ_j] = δ_ij``; the target is
    ``f = Σ_i v_i φ_i`` and the training labels ``y = f(x) + noise`` of variance ε^2.
    KRR on n i.i.d. points with ridge δ, ``f̂(x) = K(x, X) (K + δ I)^-1 y``, has
    (to leading order in 1/n):

    - the effective regularization κ > 0: ``Σ_i λ_i/(λ_i + κ) + δ/κ = n``;
    - the learnabilities ``L_i = λ_i/(λ_i + κ)``;
    - the overfitting coefficient ``E_0 = n / (n - Σ_i L_i^2)``;
    - the test MSE (against noisy test labels) ``E_0 (Σ_i (1 - L_i)^2 v_i^2 + ε^2)``;
    - the training MSE ``(δ / (n κ))^2`` times the test MSE.

    Assumptions: the eigenfunctions behave like independent Gaussian features
    (the Gaussian-universality ansatz of those papers), n large; the prediction is the
    mean over training sets. It is exact only as n -> inf with n's fluctuations
    O(1/sqrt(n)) relative, and it needs the whole spectrum: modes left out of
    ``eigenvalues`` are neither learned nor counted.

    Parameters
    ----------
    eigenvalues : array_like (M,)
        The operator's eigenvalues λ_i >= 0 (any order).
    coefficients : array_like (M,) or (M, k)
        The target's coefficients v_i (one column per output; the MSE is averaged over
        columns).
    n_train : int
        Number of training points n.
    ridges : float or sequence of float >= 0
        Absolute ridges δ (on the n x n Gram matrix).
    noise : float >= 0
        Label-noise variance ε^2.

    Returns
    -------
    Eigenlearning
        With δ = 0 and at most n nonzero eigenvalues, κ = 0 and the errors are inf.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("eigenvalues must be finite and >= 0")
    v = _check_targets(coefficients, lam.size, name="coefficients")
    v2 = np.mean(v.reshape(lam.size, -1) ** 2, axis=1)  # (M,) mean over outputs
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train must be an integer >= 1, got {n_train!r}")
    r, scalar = _check_ridges(ridges)
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite variance >= 0, got {noise}")
    n = float(n_train)
    kappa = np.array([_solve_kappa(lam, n, float(d)) for d in r])
    with np.errstate(divide="ignore", invalid="ignore"):
        learn = np.where(kappa[:, None] > 0, lam[None] / (lam[None] + kappa[:, None]), (lam[None] > 0) * 1.0)
        e0 = np.where(kappa > 0, n / (n - np.sum(learn**2, axis=1)), np.inf)
        test = np.where(kappa > 0, e0 * (((1.0 - learn) ** 2) @ v2 + noise), np.inf)
        train = np.where(kappa > 0, (r / (n * kappa)) ** 2 * test, np.inf)
    out = Eigenlearning(test, train, kappa, e0, learn)
    if scalar:
        return Eigenlearning(*(a[0] for a in out))
    return out


def eigenlearning(K, y, ridges, n_train=None, noise=0.0) -> Eigenlearning:
    """The eigenlearning prediction (:func:`eigenlearning_from_spectrum`) with the spectrum
    and the target's coefficients estimated from a kernel matrix on M sample points.

    The operator ``T g(x) = E_p[K(x, x') g(x')]`` is approximated by ``K / M`` on the M
    points: its eigenvalues by ``λ_j(K) / M`` and its eigenfunctions, at the sample, by
    ``sqrt(M) U_j``; so the target's coefficients are ``v_j = U_j^T y / sqrt(M)``
    (``Σ_j v_j^2 = mean(y^2)``, as ``||f||^2`` should be).

    The estimate of the top of the spectrum converges as M grows (relative error
    O(1/sqrt(M)) per mode), but a sample has only M modes: with the training kernel
    itself (M = n, the default) the modes that KRR cannot resolve are missing, the
    prediction is biased low at small ridges, and at δ = 0 it is infinite (κ = 0).
    Use a larger sample from the same distribution - unlabelled inputs suffice for the
    spectrum; the coefficients need the target at those points, or noiseless targets
    of a known teacher - for an estimate of the learning curve at n << M. (Measured, a
    depth-2 ReLU NTK on 300 digits: the training kernel alone predicts 0.00016 at ridge
    1e-4 trace(K)/N where the held-out MSE is 0.0138; the spectrum of all 1797 digits
    predicts 0.0108 against 0.0115 measured over those 1797, and is within 6% of it at
    every ridge of bench/theory_validation.py; on the teacher task, from 3000 inputs,
    within 6% of the held-out error.) When the sample is a finite data set, the
    population of the prediction is that set: compare it with the error over the whole
    set, training points included.

    Parameters
    ----------
    K : array_like (M, M) or KernelSpectrum
        Kernel on the sample.
    y : array_like (M,) or (M, k)
        Targets at the sample (noiseless if known; noise in them counts as signal spread
        over all modes).
    ridges : float or sequence of float >= 0
        Absolute ridges δ on the n x n training Gram matrix.
    n_train : int, optional
        Training-set size n; default M.
    noise : float >= 0
        Label-noise variance ε^2 of the training (and test) labels.
    """
    spec, y2, r, _, scalar = _inputs(K, y, ridges)
    lam, u = spec
    m = lam.shape[0]
    n_train = m if n_train is None else n_train
    coefficients = (u.T @ y2) / np.sqrt(m)
    return eigenlearning_from_spectrum(lam / m, coefficients, n_train, r[0] if scalar else r, noise=noise)


# ---------------------------------------------------------------------------------------
# Choosing the ridge and the depth


def _scores(spec: KernelSpectrum, y, ridges, criterion: str) -> np.ndarray:
    if criterion == "loo":
        return leave_one_out(spec, y, ridges).mse
    if criterion == "gcv":
        return gcv(spec, y, ridges)
    return kare(spec, y, ridges)


def select_ridge(K, y, ridges, criterion: str = "loo") -> RidgeSelection:
    """The ridge of ``ridges`` with the smallest estimated test error, from one eigh.

    Parameters
    ----------
    K : array_like (N, N) or KernelSpectrum
    y : array_like (N,) or (N, k)
    ridges : sequence of float >= 0
        Absolute ridges δ.
    criterion : {'loo', 'gcv', 'kare'}
        Exact leave-one-out MSE (:func:`leave_one_out`), :func:`gcv` or :func:`kare`.
        Ties go to the largest ridge (the more regular fit).

    Raises
    ------
    ValueError
        Bad input (see the module), or no ridge has a defined criterion.
    """
    criterion = _check_criterion(criterion)
    spec, y2, r, _, _ = _inputs(K, y, ridges)
    scores = _scores(spec, y2, r, criterion)
    return _best_ridge(r, scores)


def _best_ridge(r: np.ndarray, scores: np.ndarray) -> RidgeSelection:
    if not np.any(np.isfinite(scores)):
        raise ValueError(
            "no ridge has a defined criterion (K + ridge I is singular at every one); use a ridge > 0"
        )
    best = np.min(scores)
    idx = int(np.flatnonzero(scores == best)[np.argmax(r[scores == best])])
    return RidgeSelection(float(r[idx]), idx, scores)


def select_depth(kernels, y, ridges, criterion: str = "loo", relative: bool = False) -> DepthSelection:
    """The depth (and ridge) with the smallest estimated test error, no validation split.

    Parameters
    ----------
    kernels : mapping {depth: (N, N) array} or array (L, N, N)
        Candidate training kernels; an array is what ``net.kernel(x, get='ntk',
        every_layer=True)`` returns (one pass: entry ``l`` is the network cut after layer
        ``l``; for an MLP entry ``2 d`` is the MLP with ``d`` hidden layers), keyed by
        its index. Entries that are identically zero (the NTK before any layer) are
        skipped.
    y : array_like (N,) or (N, k)
    ridges : float or sequence of float >= 0
        Absolute ridges δ, the same for every candidate; with ``relative=True``, ridges
        relative to each candidate's own scale (δ = ridge * trace(K) / N per kernel, the
        ``diag_reg`` convention of fastntk.predict), which compares depths whose kernels
        have different scales on an equal footing.
    criterion : {'loo', 'gcv', 'kare'}
    relative : bool, default False

    Returns
    -------
    DepthSelection
        Ties go to the shallowest candidate, then the largest ridge. ``ridge`` is as given
        (relative with ``relative=True``).
    """
    criterion = _check_criterion(criterion)
    if isinstance(kernels, Mapping):
        items = list(kernels.items())
    else:
        arr = np.asarray(kernels)
        if arr.ndim != 3:
            raise ValueError(
                f"kernels must be a mapping of (N, N) arrays or an (L, N, N) array, got shape {arr.shape}"
            )
        items = list(enumerate(arr))
    if not items:
        raise ValueError("kernels must not be empty")
    checked = [(key, _check_kernel(k, name=f"kernels[{key!r}]")) for key, k in items]
    n = checked[0][1].shape[0]
    for key, k in checked:
        if k.shape[0] != n:
            raise ValueError(f"kernels[{key!r}] has shape {k.shape}, the first has ({n}, {n})")
    y2 = _check_targets(y, n)
    r, _ = _check_ridges(ridges)
    checked = [(key, k) for key, k in checked if np.any(k != 0)]
    if not checked:
        raise ValueError("every kernel in kernels is zero")
    keys = [key for key, _ in checked]
    scale = [np.trace(k) / n if relative else 1.0 for _, k in checked]
    scores = np.stack(
        [_scores(spectrum(k), y2, r * c, criterion) for (_, k), c in zip(checked, scale)]
    )  # (D, R)
    if not np.any(np.isfinite(scores)):
        raise ValueError("no candidate has a defined criterion at any ridge; use a ridge > 0")
    best = np.min(scores)
    d_idx, r_idx = np.argwhere(scores == best)[0]  # row-major: shallowest depth first
    r_idx = int(np.flatnonzero(scores[d_idx] == best)[np.argmax(r[scores[d_idx] == best])])
    return DepthSelection(keys[d_idx], float(r[r_idx]), keys, scores)


# ---------------------------------------------------------------------------------------
# One ridge, one Cholesky: the fast path of the scikit-learn estimators' depth sweep


def loo_residuals_cholesky(k: np.ndarray, y: np.ndarray, ridge: float):
    """Leave-one-out residuals at ONE absolute ridge, or None when ``K + ridge I`` is not
    positive definite to working precision; the same closed form as
    :func:`leave_one_out`, by a Cholesky factorization where a single ridge is wanted
    (potrf and trtri, N^3/3 flops each, against eigh's several N^3). Unchecked: for
    internal callers with valid arrays.

    ``alpha_i / (A^-1)_ii`` with A = K + ridge I and alpha = A^-1 y; cost: one Cholesky,
    the inverse of its triangular factor, two triangular solves.

    k : (N, N) float64, symmetric; y : (N, n_out) float64. Returns (N, n_out) float64.
    """
    n = k.shape[0]
    a = k + ridge * np.eye(n)
    # Refused when A is singular to working precision (LAPACK's condition estimate at or
    # below N eps): the residuals would then be noise.
    factor, _ = cholesky(a, n * _EPS, lower=True)
    if factor is None:
        return None
    c, lower = factor
    alpha = scipy.linalg.cho_solve((c, lower), y, check_finite=False)
    # diag(A^-1) = diag(L^-T L^-1): the column sums of squares of L^-1. The triangular inverse
    # (LAPACK trtri, N^3/3 flops) is all it needs; the full inverse (potri) would cost twice that.
    inv_l, info = scipy.linalg.lapack.dtrtri(c, lower=1)
    if info != 0:  # pragma: no cover - trtri fails only on a zero pivot, which potrf rejected
        return None
    inv_l = np.tril(inv_l)  # only the triangle of the factor
    return alpha / np.einsum("ij,ij->j", inv_l, inv_l)[:, None]
