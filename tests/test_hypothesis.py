"""Property-based tests of the public entry points (hypothesis).

Inputs of random shapes (empty and one-row included), dtypes (float64/32, ints, bool),
memory orders (C, Fortran, strided views) and values (NaN, inf, subnormal and huge ones).
Every call either raises a clear exception that names the argument (ValueError or
TypeError), or returns finite numbers that agree with the plain NumPy references
(tests/reference.py, tests/empirical_ref.py, a direct NumPy solve).

derandomize=True: the examples are the same on every run, so CI is reproducible.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastntk.predict as predict

from empirical_ref import empirical_ntk_ref
from reference import ntk_gram_ref
from specs import ACTIVATION_SPECS, dense, to_fastntk

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Values a user's data may hold besides ordinary ones. "huge" values are large but with a
# representable squared norm for the smaller ones, 1e200 (|x|^2 overflows) for the last.
SPECIAL = {
    "nan": np.nan,
    "inf": np.inf,
    "-inf": -np.inf,
    "subnormal": 5e-324,
    "tiny": 1e-300,
    "huge": 1e60,
    "overflowing": 1e200,
}
DTYPES = ["float64", "float32", "int64", "int8", "bool"]
LAYOUTS = ["C", "F", "strided"]


_ROWS, _COLS = st.integers(0, 6), st.integers(1, 4)


@st.composite
def matrices(draw, rows=_ROWS, cols=_COLS, special=True):
    """(array as a user passes it, its float64 values) with the drawn dtype and layout."""
    n, d = draw(rows), draw(cols)
    base = np.array(
        draw(st.lists(st.floats(-3, 3, allow_nan=False, width=64), min_size=n * d, max_size=n * d)),
        dtype=np.float64,
    ).reshape(n, d)
    if special and n and draw(st.booleans()):
        kind = draw(st.sampled_from(sorted(SPECIAL)))
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))
        base[i, j] = SPECIAL[kind]
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == "bool":
        a = base > 0
    elif dtype.startswith("int"):
        a = np.clip(np.nan_to_num(base * 3, posinf=0, neginf=0), -100, 100).round().astype(dtype)
    else:
        with np.errstate(over="ignore"):  # 1e60 and up are inf in float32: bad input then
            a = base.astype(dtype)
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided":
        wide = np.zeros((n, 2 * d), dtype=a.dtype)
        wide[:, ::2] = a
        a = wide[:, ::2]  # a non-contiguous view
    return a, a.astype(np.float64)


def _names(exc: BaseException, *names: str) -> bool:
    return any(name in str(exc) for name in names)


def _ok_or_clear_error(call, bad: bool, *names: str):
    """The result of call(), or None when it raised a clear error for bad input. Fails on a
    crash, on an unclear exception, and when bad input was accepted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except (ValueError, TypeError) as exc:
        assert _names(exc, *names), f"the message does not name {names}: {exc}"
        if not bad:
            raise
        return None
    assert not bad, f"non-finite input was accepted (named {names})"
    return out


def _row_norms_overflow(x: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(x.size) and not np.isfinite(np.sum(x * x, axis=1)).all()


# ---------------------------------------------------------------------------------------
# Analytic kernels


KERNEL_SPECS = {
    "relu": [dense(1.2, 0.1), ACTIVATION_SPECS["relu"][0], dense(0.9, 0.2)],
    "erf": [
        dense(1.0, 0.3),
        ACTIVATION_SPECS["erf"][0],
        dense(1.1, 0.1),
        ACTIVATION_SPECS["relu"][0],
        dense(),
    ],
}


@SETTINGS
@given(
    arch=st.sampled_from(sorted(KERNEL_SPECS)),
    first=matrices(),
    second=st.none() | matrices(),
    get=st.sampled_from(["nngp", "ntk", ("nngp", "ntk")]),
)
def test_kernel(arch, first, second, get):
    spec = KERNEL_SPECS[arch]
    net = to_fastntk(spec)
    x1, v1 = first
    x2, v2 = (None, None) if second is None else second
    if v2 is not None and v2.shape[1] != v1.shape[1]:
        with pytest.raises(ValueError, match="x1|x2"):  # the mismatch, or a bad value found first
            net.kernel(x1, x2, get=get)
        return
    values = [v for v in (v1, v2) if v is not None]
    bad = any(not np.isfinite(v).all() for v in values)
    # An overflowing squared norm is refused too (the recursion starts from |x|^2 / d).
    bad = bad or any(_row_norms_overflow(v) for v in values)
    out = _ok_or_clear_error(lambda: net.kernel(x1, x2, get=get), bad, "x1", "x2")
    if out is None:
        return
    with np.errstate(all="ignore"):  # the reference overflows for |x|^2 / d beyond ~1e154
        refs = dict(zip(("nngp", "ntk"), ntk_gram_ref(spec, v1, v2)))
        diag1 = dict(zip(("nngp", "ntk"), (np.diag(k) for k in ntk_gram_ref(spec, v1))))
        diag2 = (
            diag1 if v2 is None else dict(zip(("nngp", "ntk"), (np.diag(k) for k in ntk_gram_ref(spec, v2))))
        )
    got = {get: out} if isinstance(get, str) else {"nngp": out.nngp, "ntk": out.ntk}
    n2 = v1.shape[0] if v2 is None else v2.shape[0]
    for name, value in got.items():
        assert value.shape == (v1.shape[0], n2) and value.dtype == np.float64
        assert np.isfinite(value).all(), f"{name}: non-finite result for finite input"
        if not all(np.isfinite(r).all() for r in (refs[name], diag1[name], diag2[name])):
            continue  # nothing to compare with
        # Relative to each entry's Cauchy-Schwarz scale (the biases keep it away from zero).
        scale = np.sqrt(np.abs(diag1[name])[:, None] * np.abs(diag2[name])[None, :])
        assert np.all(np.abs(value - refs[name]) <= 1e-11 * scale), f"{name} disagrees with the reference"


# ---------------------------------------------------------------------------------------
# Empirical kernels


EMPIRICAL_SPECS = {
    "relu": [dense(1.3, 0.1, out_dim=5), ACTIVATION_SPECS["relu"][0], dense(1.0, 0.2, out_dim=2)],
    "erf": [dense(1.0, 0.3, out_dim=4), ACTIVATION_SPECS["erf"][0], dense(0.8, None, out_dim=3)],
}


@SETTINGS
@given(
    arch=st.sampled_from(sorted(EMPIRICAL_SPECS)),
    first=matrices(cols=st.just(3)),
    second=st.none() | matrices(cols=st.just(3)),
)
def test_empirical_ntk(arch, first, second):
    spec = EMPIRICAL_SPECS[arch]
    net = to_fastntk(spec)
    params = net.init(3, 3)
    x1, v1 = first
    x2, v2 = (None, None) if second is None else second
    values = [v for v in (v1, v2) if v is not None]
    bad = any(not np.isfinite(v).all() for v in values)
    out = _ok_or_clear_error(lambda: net.empirical_ntk(params, x1, x2), bad, "x1", "x2")
    if out is None:
        return
    n2 = v1.shape[0] if v2 is None else v2.shape[0]
    assert out.shape == (v1.shape[0], n2) and out.dtype == np.float64
    if out.size == 0:
        return
    with np.errstate(all="ignore"):  # the reference overflows for inputs near 1e200
        ref = empirical_ntk_ref(spec, params, v1, v2)
        d1 = np.abs(np.diag(empirical_ntk_ref(spec, params, v1)))
        d2 = d1 if v2 is None else np.abs(np.diag(empirical_ntk_ref(spec, params, v2)))
    if np.isfinite(ref).all() and np.isfinite(d1).all() and np.isfinite(d2).all():
        assert np.isfinite(out).all(), "non-finite result where the reference is finite"
        # Compared on the scale of each entry's Cauchy-Schwarz bound.
        scale = np.sqrt(d1[:, None] * d2[None, :])
        assert np.all(np.abs(out - ref) <= 1e-11 * scale + 1e-300), "disagrees with the reference"
    else:
        # The true kernel exceeds float64: an error or inf, never NaN.
        assert not np.isnan(out).any(), "NaN where the kernel overflows float64"


# ---------------------------------------------------------------------------------------
# Predictions from kernels


@st.composite
def regression_problems(draw):
    """A positive definite training kernel (N, N), targets, a test kernel, in the drawn
    dtype and layout, with at most one special value in one of them."""
    n = draw(st.integers(1, 6))
    m = draw(st.integers(0, 4))
    d = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n + m, d))
    full = x @ x.T / d + 0.5 * np.eye(n + m) + 0.1  # a positive definite kernel on all points
    # 1e-310: subnormal kernels, refused (their inverse overflows float64).
    scale = draw(st.sampled_from([1.0, 1e-300, 1e300, 1e-310]))
    k, kt = full[:n, :n] * scale, full[n:, :n] * scale
    y = rng.standard_normal((n, draw(st.integers(1, 3)))) if draw(st.booleans()) else rng.standard_normal(n)
    where = draw(st.sampled_from(["none", "k_train_train", "y_train", "k_test_train"]))
    value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    arrays = {"k_train_train": k, "y_train": y, "k_test_train": kt}
    if where != "none" and arrays[where].size:
        a = arrays[where].copy()
        index = np.unravel_index(draw(st.integers(0, a.size - 1)), a.shape)
        a[index] = value
        if where == "k_train_train":  # keep it symmetric: only the non-finite value is wrong
            a[index[::-1]] = value
        arrays[where] = a
    bad = not all(np.isfinite(a).all() for a in arrays.values()) or scale < np.finfo(np.float64).tiny
    dtype = draw(st.sampled_from(["float64", "float32"]))
    layout = draw(st.sampled_from(LAYOUTS))
    passed = {}
    for name, a in arrays.items():
        b = a.astype(dtype) if dtype == "float32" and scale == 1.0 else a.copy()
        if layout == "F" and b.ndim == 2:
            b = np.asfortranarray(b)
        elif layout == "strided":
            wide = np.zeros((b.shape[0] * 2,) + b.shape[1:], dtype=b.dtype)
            wide[::2] = b
            b = wide[::2]
        passed[name] = b
    return passed, k, y, kt, bad


def _solve_reference(k, y, kt):
    """kt (K)^-1 y by NumPy's LU solve."""
    return kt @ np.linalg.solve(k, y)


@SETTINGS
@given(problem=regression_problems(), ridge=st.sampled_from([0.0, 0.1]))
def test_kernel_regression(problem, ridge):
    passed, k, y, kt, bad = problem
    ridge = ridge * float(np.trace(k)) / k.shape[0]
    out = _ok_or_clear_error(
        lambda: predict.kernel_regression(
            passed["k_train_train"], passed["y_train"], passed["k_test_train"], ridge
        ),
        bad,
        "k_train_train",
        "y_train",
        "k_test_train",
    )
    if out is None:
        return
    f32 = passed["k_train_train"].dtype == np.float32
    if f32:  # the reference sees what was passed
        k, y, kt = (passed[n].astype(np.float64) for n in ("k_train_train", "y_train", "k_test_train"))
    ref = _solve_reference(k + ridge * np.eye(k.shape[0]), y, kt)
    assert out.shape == ref.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-8 * max(1.0, float(np.abs(ref).max(initial=0))))


@SETTINGS
@given(problem=regression_problems(), t=st.sampled_from([0.0, 0.7, 5.0, None]))
def test_gradient_descent_mse(problem, t):
    passed, k, y, kt, bad = problem

    def call():
        fn = predict.gradient_descent_mse(passed["k_train_train"], passed["y_train"])
        return fn(t, 0.0, 0.0, passed["k_test_train"])

    out = _ok_or_clear_error(call, bad, "k_train_train", "y_train", "k_test_train")
    if out is None:
        return
    if passed["k_train_train"].dtype == np.float32:
        k, y, kt = (passed[n].astype(np.float64) for n in ("k_train_train", "y_train", "k_test_train"))
    # f_t(X) = (I - e^{-K tau / n}) y, f_t(x) = kt K^-1 (I - e^{-K tau / n}) y from zero outputs.
    lam, v = np.linalg.eigh(k)
    n = y.size
    decay = np.zeros_like(lam) if t is None else np.exp(-lam * t / n)
    y2 = y.reshape(k.shape[0], -1)
    moved = v @ ((1 - decay)[:, None] * (v.T @ y2))
    train_ref = moved.reshape(y.shape)
    test_ref = (kt @ np.linalg.solve(k, moved)).reshape((kt.shape[0],) + y.shape[1:])
    train, test = out
    for got, ref in ((train, train_ref), (test, test_ref)):
        assert got.shape == ref.shape and np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-8 * max(1.0, float(np.abs(y).max())))


# ---------------------------------------------------------------------------------------
# scikit-learn estimator


# NTKRegressor's default network: depth 2 ReLU, W_std = sqrt(2), b_std = 0.1.
REGRESSOR_SPEC = [dense(math.sqrt(2), 0.1), ACTIVATION_SPECS["relu"][0]] * 2 + [dense(math.sqrt(2), 0.1)]


@SETTINGS
@given(
    train=matrices(rows=st.integers(0, 6), cols=st.integers(1, 3)),
    test_rows=st.integers(1, 4),
    data=st.data(),
)
def test_ntk_regressor(train, test_rows, data):
    from fastntk.sklearn import NTKRegressor

    x, v = train
    y = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=len(v), max_size=len(v))), dtype=np.float64)
    xt = np.random.default_rng(len(v)).standard_normal((test_rows, v.shape[1]))
    bad = (not np.isfinite(v).all()) or _row_norms_overflow(v) or len(v) == 0
    est = NTKRegressor()
    fitted = _ok_or_clear_error(lambda: est.fit(x, y), bad, "X", "x", "sample", "n_samples")
    if fitted is None:
        return
    pred = est.predict(xt)
    _, k = ntk_gram_ref(REGRESSOR_SPEC, v)
    _, kx = ntk_gram_ref(REGRESSOR_SPEC, xt, v)
    if not (np.isfinite(k).all() and np.isfinite(kx).all()):
        return  # the reference overflows (|x| near 1e154)
    lam, vecs = np.linalg.eigh(k)
    keep = lam > len(v) * np.finfo(float).eps * lam.max()  # the pseudo-inverse of repeated points
    ref = kx @ (vecs[:, keep] @ ((vecs[:, keep].T @ y) / lam[keep]))
    assert pred.shape == (test_rows,) and np.isfinite(pred).all()
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(y).max(initial=0))))
