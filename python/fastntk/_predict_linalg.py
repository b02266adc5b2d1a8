"""Array handling and linear algebra behind :mod:`fastntk.predict`.

- ``namespace``: NumPy or CuPy, chosen from the inputs' types (CuPy is imported only when
  a CuPy array is actually passed, so it is never a dependency);
- argument checks that raise before any work, naming the argument and what was expected;
- ``Factorization``: a (regularized) training kernel ``A = K + reg I`` factored on demand,
  by Cholesky (solves at infinite time) and by a symmetric eigendecomposition (every finite
  time; the pseudo-inverse when ``A`` is singular to working precision).

Everything is computed in float64 whatever the input dtype (DESIGN.md section 5: kernel
matrices are ill-conditioned and ridgeless solves need it).
"""

from __future__ import annotations

import atexit
import math
import numbers
import threading
import warnings

import numpy as np

from ._arrays import is_cupy


class SingularKernelWarning(RuntimeWarning):
    """A training kernel was solved through its eigendecomposition with a pseudo-inverse
    cutoff instead of Cholesky (it is not positive definite to working precision), or some
    of its eigenvalues were treated as zero."""


# ---------------------------------------------------------------------------------------
# Array namespace


def namespace(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if a is not None and is_cupy(a):
            import cupy  # only reached with a CuPy array in hand, so CuPy is installed

            return cupy
    return np


def is_numpy_namespace(xp) -> bool:
    return xp is np


def to_host(a) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array (or anything np.asarray takes)."""
    return a.get() if is_cupy(a) else np.asarray(a)


def _input_eps(dtype) -> float:
    """Machine epsilon of the precision the data was produced in: float32 kernels carry
    float32 round-off even after conversion, so cutoffs and symmetry checks use it."""
    if dtype.kind == "f" and dtype.itemsize < 8:
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def _real_array(xp, a, name: str):
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    if is_cupy(a) and xp is np:  # pragma: no cover - namespace() picks cupy then
        raise TypeError(f"{name} is a CuPy array but the other inputs are NumPy arrays")
    a = xp.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a


def _check_finite(xp, a, name: str) -> None:
    if a.size and not bool(xp.isfinite(a).all()):
        bad = to_host(~xp.isfinite(a))
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} has a non-finite value (NaN or Inf), first at index {where}")


def kernel_matrix(xp, k, name: str):
    """A square, symmetric, finite kernel as a fresh float64 array, exactly symmetric.

    The copy is owned by the caller (a predict_fn keeps it, so later changes to the user's
    array cannot reach cached factorizations). Extra memory beyond the copy is O(N) plus
    one block of rows: N = 8000 kernels are 512 MB each.

    Returns
    -------
    K : float64 (N, N)
    eps : float
        Machine epsilon of the input's precision (see ``_input_eps``).
    """
    k = _real_array(xp, k, name)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(k.shape)}")
    n = k.shape[0]
    if n == 0:
        raise ValueError(f"{name} must hold at least one training point, got shape {tuple(k.shape)}")
    eps = _input_eps(k.dtype)
    k = k.astype(xp.float64)  # the owned copy
    _check_finite(xp, k, name)
    # Symmetry up to round-off: a Gram matrix assembled in a different summation order on
    # each side differs from its transpose by ~sqrt(P) eps (P terms, random-walk round-off),
    # ~1e-12 relative even for 1e8 parameters; sqrt(eps) (1.5e-8 for float64) is far above
    # that and far below any genuinely non-symmetric matrix. Checked and symmetrized by row
    # blocks, in place, so that no N x N temporary is needed.
    scale = max(float(k.max()), -float(k.min()))
    if 0.0 < scale < np.finfo(np.float64).tiny:
        # Subnormal entries have lost their precision, and the inverse overflows float64:
        # the solves would return NaN.
        raise ValueError(
            f"{name} is too small to solve with: its largest entry |K| = {scale:.3g} is below the "
            f"smallest normal float64 ({np.finfo(np.float64).tiny:.3g}); scale the kernel up (and "
            "the test kernels with it)"
        )
    limit = math.sqrt(eps) * scale
    block = max(1, (1 << 22) // n)  # ~32 MB of float64 per block
    for i in range(0, n, block):
        j = min(i + block, n)
        # Rows i:j against columns i:j of the whole matrix: the upper part of the block row
        # (columns >= i) pairs each entry with its mirror once; columns < i were done earlier.
        d = k[i:j, i:] - k[i:, i:j].T
        asym = max(float(d.max()), -float(d.min()))
        if asym > limit:
            raise ValueError(
                f"{name} must be symmetric: max |K - K^T| = {asym:.3g} exceeds sqrt(eps) * max |K| = "
                f"{limit:.3g}"
            )
        if asym > 0:
            # Exact symmetry afterwards, so that Cholesky and eigh (each reads one triangle)
            # see the same matrix: both mirrors become the mean.
            mean = k[i:j, i:] - 0.5 * d
            k[i:j, i:] = mean
            k[i:, i:j] = mean.T
    return k, eps


def cross_kernel(xp, k, name: str, n_train: int, train_name: str = "k_train_train"):
    """A (M, N) test-train kernel as float64, finite, with N training columns."""
    k = _real_array(xp, k, name)
    if k.ndim != 2 or k.shape[1] != n_train:
        raise ValueError(
            f"{name} must have shape (M, N) with N = {n_train} training points (as {train_name}), "
            f"got shape {tuple(k.shape)}"
        )
    k = k.astype(xp.float64)
    _check_finite(xp, k, name)
    return k


def square_kernel(xp, k, name: str, n: int, other: str):
    """A (M, M) test-test kernel as float64, finite, with M matching ``other``."""
    k = _real_array(xp, k, name)
    if k.ndim != 2 or k.shape != (n, n):
        raise ValueError(f"{name} must have shape ({n}, {n}) to match {other}, got shape {tuple(k.shape)}")
    k = k.astype(xp.float64)
    _check_finite(xp, k, name)
    return k


def targets(xp, y, n_train: int, train_name: str = "k_train_train"):
    """y_train as float64 (N, n_out), and whether it was given 1-D.

    The kernels are scalar (the library returns Theta, and the output axis enters as
    Theta x I), so targets are (N,) or (N, n_out) with independent columns.
    """
    y = _real_array(xp, y, "y_train")
    if y.ndim not in (1, 2):
        raise ValueError(f"y_train must have shape (N,) or (N, n_out), got shape {tuple(y.shape)}")
    if y.shape[0] != n_train:
        raise ValueError(
            f"y_train has shape {tuple(y.shape)} but {train_name} has {n_train} training points: "
            f"y_train needs one row per training point"
        )
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError(f"y_train must have at least one output column, got shape {tuple(y.shape)}")
    y = y.astype(xp.float64)
    _check_finite(xp, y, "y_train")
    return (y[:, None] if y.ndim == 1 else y), y.ndim == 1


def outputs(xp, f, name: str, shape: tuple, shape_from: str):
    """An initial output (scalar or array broadcastable to ``shape``) as float64 of ``shape``.

    ``shape`` is 2-D (points, n_out); an (M,) array is accepted for a single output column.
    """
    f = _real_array(xp, f, name)
    if f.ndim == 1 and shape[1] == 1 and f.shape[0] == shape[0]:
        f = f[:, None]
    try:
        b = xp.broadcast_to(f, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {tuple(f.shape)}, which does not broadcast to the shape {shape} {shape_from}"
        ) from None
    b = b.astype(xp.float64)  # a fresh, writable copy
    _check_finite(xp, b, name)
    return b


def check_trace_axes(trace_axes, y_ndim: int) -> None:
    """Only the output axis can be traced: fastntk's kernels are scalar (N, N) and the
    matrix-valued kernel is Theta x I_{n_out} (DESIGN.md section 1), so the (N, N) kernel
    is exactly Neural Tangents' kernel with ``trace_axes=(-1,)``."""
    axes = (trace_axes,) if isinstance(trace_axes, numbers.Integral) else trace_axes
    try:
        axes = tuple(int(a) for a in axes)
    except TypeError:
        raise TypeError(f"trace_axes must be a tuple of ints, got {trace_axes!r}") from None
    ok = axes == (-1,) or (y_ndim == 2 and axes == (1,))
    if not ok:
        raise ValueError(
            f"trace_axes must be (-1,), got {trace_axes!r}: fastntk kernels are scalar (N, N) and "
            "stand for Theta x I over the output axis (the last axis of y_train), which is "
            "Neural Tangents' trace_axes=(-1,); other layouts would need (N, N, n_out, n_out) kernels"
        )


def positive_real(value, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {expected}, got {value!r}")
    return value


def times(t, name: str = "t") -> tuple[np.ndarray, tuple]:
    """Times as a flat float64 NumPy array and their shape; NaN and negative times raise.

    Infinity is allowed here (the callers that cannot take it check separately).
    """
    a = to_host(t)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real number or array of them, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if np.isnan(a).any():
        raise ValueError(f"{name} must not contain NaN, got {t!r}")
    if (a < 0).any():
        raise ValueError(f"{name} must be >= 0 (time since the start of training), got min {a.min()!r}")
    return a.reshape(-1), a.shape


def diagonal_regularizer(xp, k, diag_reg: float, absolute: bool) -> float:
    """Neural Tangents' convention: diag_reg * trace(K) / N unless absolute."""
    if diag_reg == 0.0:
        return 0.0
    if absolute:
        return diag_reg
    return diag_reg * float(xp.trace(k)) / k.shape[0]


# ---------------------------------------------------------------------------------------
# Factorizations


class Eigen:
    """``A = V diag(lam) V^T`` with the modes that count.

    Attributes
    ----------
    lam : float64 (N,)
    vecs : float64 (N, N), columns are eigenvectors
    mask : bool (N,)
        ``lam > cutoff``. The other modes are treated as exactly zero: a pseudo-inverse
        does not invert them and gradient flow does not move them.
    lam_safe : float64 (N,)
        ``lam`` where ``mask``, else 1, so that expressions of the masked modes never
        produce 0/0 or 0*inf (they are overwritten by their limit).
    cutoff : float
    """

    def __init__(self, xp, lam, vecs, cutoff: float):
        self.lam = lam
        self.vecs = vecs
        self.cutoff = cutoff
        self.mask = lam > cutoff
        self.lam_safe = xp.where(self.mask, lam, 1.0)


def cholesky(a: np.ndarray, rcond_floor: float, *, lower: bool = False):
    """Cholesky factor of a symmetric float64 NumPy matrix, refused when it is singular to
    working precision.

    Cholesky can succeed on a matrix that is singular to working precision (a duplicated
    point leaves a pivot of round-off size); solves with it would then be round-off
    amplified by ~1/eps. LAPACK's 1-norm reciprocal condition estimate (``dpocon``, O(N^2)
    given the factor) catches that: at or below ``rcond_floor`` the factor is refused.

    The factorization is NumPy's (LAPACK ``potrf``), which releases the GIL (SciPy's
    ``cho_factor`` holds it), so that :func:`interruptible` can honour Ctrl-C around it.

    Returns
    -------
    factor : (c, lower) as ``scipy.linalg.cho_solve`` takes it (the other triangle of ``c``
        is zero), or None
    reason : None, or why the factor was refused (for a warning)
    """
    import scipy.linalg

    try:
        c = np.linalg.cholesky(a)  # lower: a = c c^T
    except np.linalg.LinAlgError:
        return None, "Cholesky failed (the matrix is not positive definite)"
    if not lower:
        c = np.ascontiguousarray(c.T)
    anorm = float(np.abs(a).sum(axis=0).max())
    rcond, info = scipy.linalg.lapack.dpocon(c, anorm, uplo="L" if lower else "U")
    if info != 0 or not rcond > rcond_floor:
        return None, (
            f"it is numerically singular (reciprocal condition number estimate {rcond:.2g} "
            f"<= N * eps = {rcond_floor:.2g})"
        )
    return (c, lower), None


def _cholesky_cupy(xp, a, rcond_floor: float):
    """CuPy's counterpart of :func:`cholesky` (lower factor).

    CuPy's cholesky returns NaN (or raises, under cupyx.errstate(linalg='raise')) on
    failure. There is no condition estimator, so the test is the pivots: the smallest
    eigenvalue is at most min_i L_ii^2 and the largest at least max_i L_ii^2, so a pivot
    ratio below the floor proves numerical singularity (it can miss some).
    """
    try:
        low = xp.linalg.cholesky(a)
    except Exception:  # noqa: BLE001 - cupy's LinAlgError lives in numpy.linalg or cupy.linalg
        low = None
    if low is None or not bool(xp.isfinite(low).all()):
        return None, "Cholesky failed (the matrix is not positive definite)"
    piv = xp.diagonal(low) ** 2
    ratio = float(piv.min() / piv.max())
    if not ratio > rcond_floor:
        return (
            None,
            f"it is numerically singular (Cholesky pivot ratio {ratio:.2g} <= N * eps = {rcond_floor:.2g})",
        )
    return (low, True), None


# LAPACK calls on a matrix of at least this many entries (N >= 256) run in a worker thread
# so that Ctrl-C interrupts the wait (see `interruptible`); for smaller ones the thread's
# start (~0.1 ms) is not worth it: they take milliseconds.
_BACKGROUND_ENTRIES = 1 << 16


_abandoned: set = set()  # worker threads whose caller was interrupted, still in LAPACK


@atexit.register
def _finish_abandoned() -> None:
    # An interrupted LAPACK call still runs at exit: wait for it here, before the
    # interpreter tears down, rather than let it return into a finalizing interpreter.
    for worker in list(_abandoned):
        worker.join()


def interruptible(fn, entries: int):
    """``fn()``, with Ctrl-C honoured while it runs when ``entries`` is large.

    One LAPACK call (a Cholesky or an eigendecomposition of N = 4000 takes seconds to
    minutes) cannot be stopped from outside: a signal is only seen by Python between
    bytecodes. Run from the main thread, a large call therefore runs in a worker thread
    while the main thread waits, so that Ctrl-C raises KeyboardInterrupt at once. ``fn``
    must release the GIL while it computes (NumPy's LAPACK wrappers do; SciPy's do not).
    The abandoned call finishes in the background (its CPU time and memory are released
    when it ends, its result is discarded): the process stays usable meanwhile, and waits
    for it at exit.
    """
    if entries < _BACKGROUND_ENTRIES or threading.current_thread() is not threading.main_thread():
        return fn()
    box = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
        finally:
            _abandoned.discard(threading.current_thread())

    worker = threading.Thread(target=work, name="fastntk-lapack", daemon=True)
    worker.start()
    try:
        worker.join()  # interrupted by Ctrl-C (lock waits are, on POSIX)
    except BaseException:
        if worker.is_alive():
            _abandoned.add(worker)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


class Factorization:
    """A training kernel ``A = K + reg I`` (float64 (N, N)), factored on demand and cached.

    - ``solve(b)`` returns ``A^+ b``: by Cholesky when ``A`` is positive definite to
      working precision; otherwise (Cholesky fails, or the reciprocal condition number
      is below ``N eps``) by the pseudo-inverse from the eigendecomposition, with a
      :class:`SingularKernelWarning` saying so.
    - ``eigen()`` returns the eigendecomposition with the pseudo-inverse cutoff
      ``N * eps * max |lam|`` (``eps`` of the input's precision, as ``numpy.linalg.pinv``
      and ``scipy.linalg.pinvh`` use ``max(M, N) * eps``): eigenvalues at or below it are
      round-off of an exact zero (or a negative round-off of one) and are treated as zero.
      Eigenvalues below ``-cutoff`` mean that ``A`` is not positive semi-definite; they are
      treated as zero too (gradient flow on such a mode would diverge), with a warning.

    The factorizations of NumPy arrays honour Ctrl-C (:func:`interruptible`).
    """

    def __init__(self, xp, a, eps: float, name: str):
        self.xp = xp
        self.a = a
        self.n = a.shape[0]
        self.eps = eps
        self.name = name
        self._chol = None  # ('chol', factor) or ('eigen', reason)
        self._eig = None
        self._warned = False

    # -- Cholesky ------------------------------------------------------------------------
    def _cholesky(self):
        if self._chol is None:
            rcond_floor = self.n * self.eps  # same scale as the eigenvalue cutoff (see the class doc)
            if is_numpy_namespace(self.xp):
                factor, reason = interruptible(lambda: cholesky(self.a, rcond_floor, lower=True), self.a.size)
            else:
                factor, reason = _cholesky_cupy(self.xp, self.a, rcond_floor)
            self._chol = ("chol", factor) if factor is not None else ("eigen", reason)
        return self._chol

    @property
    def positive_definite(self) -> bool:
        """True when the solves go through Cholesky (A is PD to working precision)."""
        return self._cholesky()[0] == "chol"

    def _cho_solve(self, b):
        xp = self.xp
        factor, lower = self._cholesky()[1]
        if is_numpy_namespace(xp):
            import scipy.linalg

            return scipy.linalg.cho_solve((factor, lower), b, check_finite=False)
        from cupyx.scipy.linalg import solve_triangular

        z = solve_triangular(factor, b, lower=True)
        return solve_triangular(factor.T, z, lower=False)

    # -- eigendecomposition ---------------------------------------------------------------
    def eigen(self) -> Eigen:
        if self._eig is not None:
            return self._eig
        xp = self.xp
        # NumPy's eigh (LAPACK syevd) releases the GIL, so that Ctrl-C can interrupt the wait
        # for it (SciPy's holds the GIL throughout).
        if is_numpy_namespace(xp):
            lam, vecs = interruptible(lambda: np.linalg.eigh(self.a), self.a.size)
        else:
            lam, vecs = xp.linalg.eigh(self.a)
        top = float(xp.abs(lam).max())
        self._eig = Eigen(xp, lam, vecs, self.n * self.eps * top)
        return self._eig

    def _describe_eigen(self) -> str:
        e = self.eigen()
        dropped = int((~e.mask).sum())
        lowest = float(e.lam.min())
        text = (
            f"{dropped} of {self.n} eigenvalues are at or below the cutoff N * eps * max|lambda| = "
            f"{e.cutoff:.3g} and are treated as zero"
        )
        if lowest < -e.cutoff:
            text += (
                f"; it is not positive semi-definite (smallest eigenvalue {lowest:.3g}), and its "
                "negative modes are treated as zero too"
            )
        return text

    def warn_if_degenerate(self, stacklevel: int = 4) -> None:
        """Warn (once per factorization) when the eigendecomposition drops modes."""
        e = self.eigen()
        if self._warned or bool(e.mask.all()):
            return
        self._warned = True
        warnings.warn(
            f"{self.name} is singular to working precision: {self._describe_eigen()} "
            "(those modes do not move under gradient flow and are not inverted)",
            SingularKernelWarning,
            stacklevel=stacklevel,
        )

    def _warn_fallback(self, stacklevel: int) -> None:
        if self._warned:
            return
        self._warned = True
        reason = self._cholesky()[1]
        warnings.warn(
            f"{self.name}: {reason}; solving with the Moore-Penrose pseudo-inverse from its "
            f"symmetric eigendecomposition instead: {self._describe_eigen()}",
            SingularKernelWarning,
            stacklevel=stacklevel,
        )

    # -- solves --------------------------------------------------------------------------
    def solve(self, b, stacklevel: int = 4):
        """``A^+ b`` for b float64 (N, m)."""
        if self.positive_definite:
            return self._cho_solve(b)
        self._warn_fallback(stacklevel)
        e = self.eigen()
        inv = self.xp.where(e.mask, 1.0 / e.lam_safe, 0.0)
        return e.vecs @ (inv[:, None] * (e.vecs.T @ b))

    def project(self, b, stacklevel: int = 4):
        """``A A^+ b``: b itself when A is positive definite, else its part in the range."""
        if self.positive_definite:
            return b.copy()
        self._warn_fallback(stacklevel)
        e = self.eigen()
        return e.vecs @ (e.mask[:, None] * (e.vecs.T @ b))


def regularized(xp, k, eps: float, diag_reg: float, absolute: bool, name: str) -> Factorization:
    """The factorization of ``K + reg I`` (K is not modified)."""
    reg = diagonal_regularizer(xp, k, diag_reg, absolute)
    a = k
    if reg != 0.0:
        a = k.copy()
        idx = xp.arange(k.shape[0])
        a[idx, idx] += reg
    return Factorization(xp, a, eps, name)
