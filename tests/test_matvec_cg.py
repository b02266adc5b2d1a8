"""kernel_matvec, LazyKernel and kernel_regression(solver='cg'), against dense NumPy references:
the kernels of tests/reference.py, their products by plain matmul, and np.linalg.solve."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg

import fastntk as nt
from fastntk import _cg, _engine
from fastntk.predict import ConvergenceWarning, kernel_regression

from reference import ntk_gram_ref
from specs import mlp, to_fastntk

SPEC = mlp("relu", 2, b_std=0.3)
# A tile side of 40 (one kernel) cuts 137 x 91 points into ragged tiles: 4 x 3 of them.
SMALL = 8 * 40 * 40
MEDIUM = 8 * 70 * 70  # 2 x 2 tiles: for the many products of CG


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1212)
    x1 = rng.normal(size=(137, 5))
    x2 = rng.normal(size=(91, 5))
    return x1, x2


def product_close(actual, k, v, rtol=1e-12):
    """|actual - k @ v| <= rtol * (|k| @ |v|): round-off of a sum, relative to its terms."""
    expected = k @ v
    scale = np.abs(k) @ np.abs(v)
    assert actual.shape == expected.shape
    assert np.all(np.abs(actual - expected) <= rtol * scale)


def test_matvec_cross_matches_dense(data):
    x1, x2 = data
    nngp, ntk = ntk_gram_ref(SPEC, x1, x2)
    net = to_fastntk(SPEC)
    v = np.random.default_rng(0).normal(size=(91, 3))
    product_close(nt.kernel_matvec(net, x1, x2, v, memory_limit=SMALL), ntk, v)
    product_close(nt.kernel_matvec(net, x1, x2, v[:, 0], get="nngp", memory_limit=SMALL), nngp, v[:, 0])


def test_matvec_symmetric_matches_dense(data):
    x1, _ = data
    nngp, ntk = ntk_gram_ref(SPEC, x1)
    net = to_fastntk(SPEC)
    v = np.random.default_rng(1).normal(size=(137, 2))
    both = nt.kernel_matvec(net, x1, None, v, get=("ntk", "nngp"), memory_limit=2 * SMALL)
    product_close(both.ntk, ntk, v)
    product_close(both.nngp, nngp, v)
    # One tile or many: the same products.
    product_close(nt.kernel_matvec(net, x1, x1, v), ntk, v)


def test_matvec_counts_half_the_tiles_when_symmetric(data, monkeypatch):
    x1, _ = data
    net = to_fastntk(SPEC)
    entries = []
    real = _engine.gram

    def counting(prog, a1, a2, names, **kw):
        entries.append(a1.shape[0] * (a1.shape[0] if a2 is None else a2.shape[0]))
        return real(prog, a1, a2, names, **kw)

    monkeypatch.setattr(_engine, "gram", counting)
    nt.kernel_matvec(net, x1, None, np.ones(137), memory_limit=SMALL)
    # Tiles on and above the diagonal of 137 = 40 + 40 + 40 + 17: 137 * 138 / 2 entries and
    # the diagonal tiles' lower halves.
    blocks = [40, 40, 40, 17]
    upper = sum(a * b for i, a in enumerate(blocks) for b in blocks[i + 1 :]) + sum(b * b for b in blocks)
    assert sum(entries) == upper < 137 * 137


def test_lazy_kernel_interface(data):
    x1, x2 = data
    nngp, ntk = ntk_gram_ref(SPEC, x1)
    net = to_fastntk(SPEC)
    k = nt.LazyKernel(net, x1, memory_limit=SMALL)
    assert k.shape == (137, 137) and k.dtype == np.float64 and k.symmetric
    np.testing.assert_allclose(k.diag(), np.diag(ntk), rtol=1e-13)
    rows, cols = np.array([3, 0, 136]), np.array([5, 7])
    np.testing.assert_allclose(k.block(rows, cols), ntk[np.ix_(rows, cols)], rtol=1e-12)
    np.testing.assert_allclose(k.block(slice(10, 20), slice(10, 20)), ntk[10:20, 10:20], rtol=1e-12)
    v = np.random.default_rng(2).normal(size=137)
    product_close(k @ v, ntk, v)
    # SciPy takes it as a LinearOperator as it is.
    op = scipy.sparse.linalg.aslinearoperator(k)
    product_close(op.matvec(v), ntk, v)
    kn = nt.LazyKernel(net, x1, get="nngp")
    product_close(kn.matvec(v), nngp, v)
    cross = nt.LazyKernel(net, x1, x2)
    _, ntk12 = ntk_gram_ref(SPEC, x1, x2)
    w = np.ones((137, 2))
    product_close(cross.rmatvec(w), ntk12.T, w)
    with pytest.raises(ValueError, match="symmetric"):
        cross.diag()


def _ridge_reference(k, y, ridge, kt=None):
    alpha = np.linalg.solve(k + ridge * np.eye(k.shape[0]), y)
    return (k if kt is None else kt) @ alpha


@pytest.mark.parametrize("preconditioner", ["nystrom", None])
def test_cg_matches_direct_solve(data, preconditioner):
    x1, x2 = data
    _, k = ntk_gram_ref(SPEC, x1)
    _, kt = ntk_gram_ref(SPEC, x2, x1)
    net = to_fastntk(SPEC)
    rng = np.random.default_rng(3)
    y = rng.normal(size=(137, 3))
    y[:, 1] *= 1e-3  # columns of different scales converge separately
    ridge = 1e-2 * np.mean(np.diag(k))
    opts = dict(solver="cg", ridge=ridge, tol=1e-12, preconditioner=preconditioner, maxiter=500)
    if preconditioner:
        opts["n_landmarks"] = 40
    lazy = nt.LazyKernel(net, x1, memory_limit=MEDIUM)
    test = nt.LazyKernel(net, x2, x1, memory_limit=SMALL)
    expected = _ridge_reference(k, y, ridge, kt)
    scale = np.abs(expected).max(axis=0)
    for pred in (kernel_regression(lazy, y, test, **opts), kernel_regression(k, y, kt, **opts)):
        assert np.all(np.abs(pred - expected) <= 1e-9 * scale)
    # Training predictions, 1-D targets.
    pred = kernel_regression(lazy, y[:, 0], **opts)
    expected = _ridge_reference(k, y[:, 0], ridge)
    assert pred.shape == (137,)
    assert np.all(np.abs(pred - expected) <= 1e-9 * np.abs(expected).max())


def test_cg_preconditioner_cuts_iterations(data):
    x1, _ = data
    _, k = ntk_gram_ref(SPEC, x1)
    y = np.random.default_rng(4).normal(size=(137, 2))
    ridge = 1e-5 * np.mean(np.diag(k))
    counts = {}
    for pre in ("nystrom", None):
        kernel_regression(k, y, None, ridge, solver="cg", tol=1e-10, preconditioner=pre,
                          maxiter=1000, callback=lambda it, res, p=pre: counts.update({p: it}))  # fmt: skip
    assert counts["nystrom"] * 3 < counts[None]


def test_cg_columns_converge_separately_and_zero_column(data):
    x1, _ = data
    _, k = ntk_gram_ref(SPEC, x1)
    y = np.zeros((137, 2))
    y[:, 0] = k[:, 0]  # an easy right-hand side, next to a zero one
    ridge = 1e-3 * np.mean(np.diag(k))
    residuals = []
    pred = kernel_regression(k, y, None, ridge, solver="cg", tol=1e-11, preconditioner=None,
                             callback=lambda it, res: residuals.append(res))  # fmt: skip
    assert np.all(pred[:, 1] == 0.0)
    assert all(r[1] == 0.0 for r in residuals)
    np.testing.assert_allclose(pred[:, 0], _ridge_reference(k, y[:, 0], ridge), rtol=1e-8, atol=1e-10)


def test_direct_and_auto_with_lazy_kernels(data, monkeypatch):
    x1, x2 = data
    _, k = ntk_gram_ref(SPEC, x1)
    _, kt = ntk_gram_ref(SPEC, x2, x1)
    net = to_fastntk(SPEC)
    y = np.random.default_rng(5).normal(size=137)
    lazy, test = nt.LazyKernel(net, x1), nt.LazyKernel(net, x2, x1)
    expected = kt @ np.linalg.solve(k, y)
    for solver in ("direct", "auto"):  # 'auto': K fits, so direct; ridgeless is fine
        np.testing.assert_allclose(kernel_regression(lazy, y, test, solver=solver), expected, rtol=1e-8)
    # When K would not fit, 'auto' solves by CG, which refuses a zero ridge with a clear message.
    monkeypatch.setattr(_cg, "dense_fits", lambda n: False)
    with pytest.raises(ValueError, match=r"solver='cg' \(chosen by solver='auto'.*ridge > 0"):
        kernel_regression(lazy, y, test)
    ridge = 1e-2 * np.mean(np.diag(k))
    got = kernel_regression(lazy, y, test, ridge, tol=1e-12)
    np.testing.assert_allclose(got, _ridge_reference(k, y, ridge, kt), rtol=1e-8)


def test_cg_warns_when_not_converged(data):
    x1, _ = data
    _, k = ntk_gram_ref(SPEC, x1)
    y = np.random.default_rng(6).normal(size=137)
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        kernel_regression(k, y, None, 1e-8, solver="cg", preconditioner=None, maxiter=3)


def test_cg_progress_bar(data, capsys):
    x1, _ = data
    _, k = ntk_gram_ref(SPEC, x1)
    y = np.random.default_rng(7).normal(size=137)
    its = []
    kernel_regression(k, y, None, 1.0, solver="cg", progress=True, callback=lambda i, r: its.append(i))
    err = capsys.readouterr().err
    assert "cg" in err and f"{its[-1]}/" in err and "residual" in err
    kernel_regression(k, y, None, 1.0, solver="cg", progress=False)
    assert capsys.readouterr().err == ""


@pytest.fixture
def no_kernel_work(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a kernel was computed before the arguments were checked")

    monkeypatch.setattr(_engine, "gram", fail)
    monkeypatch.setattr(_engine, "diagonal", fail)


def test_bad_input_fails_before_work(data, no_kernel_work):
    x1, x2 = data
    net = to_fastntk(SPEC)
    lazy, test = nt.LazyKernel(net, x1), nt.LazyKernel(net, x2, x1)
    y = np.ones(137)
    with pytest.raises(ValueError, match=r"V must have shape \(91,\) or \(91, k\)"):
        nt.kernel_matvec(net, x1, x2, np.ones(137))
    with pytest.raises(ValueError, match="V must have shape"):
        nt.kernel_matvec(net, x1, None, np.ones((137, 2, 1)))
    with pytest.raises(ValueError, match="V has a non-finite value"):
        nt.kernel_matvec(net, x1, None, np.full(137, np.nan))
    with pytest.raises(ValueError, match="memory_limit"):
        nt.kernel_matvec(net, x1, None, y, memory_limit=100)
    with pytest.raises(TypeError, match="net must be a fastntk network"):
        nt.kernel_matvec("relu", x1, None, y)
    with pytest.raises(ValueError, match="ridge must be finite and >= 0"):
        kernel_regression(lazy, y, test, -1.0, solver="cg")
    bad_y = y.copy()
    bad_y[4] = np.inf
    with pytest.raises(ValueError, match="y_train has a non-finite value"):
        kernel_regression(lazy, bad_y, test, 1.0, solver="cg")
    with pytest.raises(ValueError, match="y_train has shape"):
        kernel_regression(lazy, np.ones(10), test, 1.0, solver="cg")
    with pytest.raises(ValueError, match="solver must be 'auto', 'direct' or 'cg', got 'lbfgs'"):
        kernel_regression(lazy, y, test, 1.0, solver="lbfgs")
    for tol in (0.0, -1e-3, 1.0):
        with pytest.raises(ValueError, match="tol must be"):
            kernel_regression(lazy, y, test, 1.0, solver="cg", tol=tol)
    with pytest.raises(ValueError, match="maxiter must be a positive integer"):
        kernel_regression(lazy, y, test, 1.0, solver="cg", maxiter=0)
    with pytest.raises(ValueError, match=r"n_landmarks must be an integer in \[1, N = 137\]"):
        kernel_regression(lazy, y, test, 1.0, solver="cg", n_landmarks=500)
    with pytest.raises(ValueError, match="preconditioner must be 'nystrom' or None"):
        kernel_regression(lazy, y, test, 1.0, solver="cg", preconditioner="jacobi")
    with pytest.raises(ValueError, match="needs ridge > 0"):
        kernel_regression(lazy, y, test, 0.0, solver="cg")
    with pytest.raises(ValueError, match="k_test_train must have shape"):
        kernel_regression(lazy, y, nt.LazyKernel(net, x2), 1.0, solver="cg")
    with pytest.raises(ValueError, match="k_train_train must be the symmetric kernel"):
        kernel_regression(test, np.ones(91), None, 1.0, solver="cg")
    with pytest.raises(ValueError, match="progress must be None"):
        kernel_regression(lazy, y, test, 1.0, solver="cg", progress="yes")
    with pytest.raises(ValueError, match="get must be one kernel name"):
        nt.LazyKernel(net, x1, get=("ntk", "nngp"))
