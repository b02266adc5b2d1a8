"""fastntk.sklearn estimators: scikit-learn's own estimator checks, agreement with plain-NumPy
kernel regression on the reference kernels, the closed-form leave-one-out depth selection
against an explicit leave-one-out loop, a real classification task, and parameter errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastntk as nt
from fastntk.predict import SingularKernelWarning
from fastntk.sklearn import LeaveOneOutWarning, NNGPRegressor, NTKClassifier, NTKRegressor

from reference import ntk_gram_ref
from sklearn_ref import flow_ref, loo_ref
from specs import mlp

# The kernels agree with the reference to ~1e-14 of their scale (TOL['reference'] is 1e-12);
# a solve with A = K + ridge I multiplies a relative perturbation of A by at most cond(A)
# (first-order perturbation bound), and the finite-t filter (1 - exp(-lambda tau)) / lambda
# is no more sensitive than 1/lambda. Predictions are therefore compared to
# KERNEL_RTOL * cond(A) of their largest magnitude.
KERNEL_RTOL = 1e-12


# ---------------------------------------------------------------------------------------
# scikit-learn's estimator checks, on the defaults and on non-default configurations (a depth
# sweep, finite training time, ridge, the standard parameterization, another activation).

ESTIMATORS = [
    NTKRegressor(),
    NTKRegressor(depth=[0, 1, 3], t=20.0, ridge=1e-3),
    NNGPRegressor(),
    NNGPRegressor(depth=(1, 2), activation="erf", t=500.0, ridge=1e-4),
    NTKClassifier(),
    NTKClassifier(
        depth=[1, 2], parameterization="standard", width=64, activation=nt.LeakyRelu(0.1), ridge=1e-2
    ),
]


# scikit-learn's check data include duplicated rows (iris) and 2-feature sets on which a
# ridgeless NNGP is singular to working precision; the estimators then solve with the
# pseudo-inverse and say so with a SingularKernelWarning (documented behaviour), which the
# suite's warnings-as-errors setting would otherwise turn into failures.
@pytest.mark.filterwarnings("ignore::fastntk.predict.SingularKernelWarning")
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------
# Predictions against plain NumPy on the reference kernels


def _data(rng, n=30, m=12, d=5, n_out=None):
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    shape = (n,) if n_out is None else (n, n_out)
    y = np.sin(x[:, :1] * 1.3).reshape(n, 1) + 0.3 * rng.standard_normal((n, 1 if n_out is None else n_out))
    return x, xt, y.reshape(shape)


def _reference(kind, act, depth, W, b, x, xt, y, t, ridge, parameterization="ntk", width=None):
    widths = None if parameterization == "ntk" else [width] * depth
    spec = mlp(act, depth, W, b, parameterization, widths)
    index = 0 if kind == "nngp" else 1
    k, kt = ntk_gram_ref(spec, x)[index], ntk_gram_ref(spec, xt, x)[index]
    a = k + ridge * np.trace(k) / len(k) * np.eye(len(k))
    return flow_ref(k, kt, y, t, ridge), np.linalg.cond(a)


CASES = [
    # (estimator class, kernel, activation, depth, W_std, b_std, t / (y.size), ridge, n_out, param, width)
    (NTKRegressor, "ntk", "relu", 2, 2**0.5, 0.1, None, 0.0, None, "ntk", None),
    (NTKRegressor, "ntk", "erf", 3, 1.3, 0.4, 0.2, 1e-2, 3, "ntk", None),
    (NTKRegressor, "ntk", "gelu", 1, 1.1, 0.2, 0.05, 0.0, 2, "standard", 16),
    # depth 0: a linear model, rank <= d + 1 < N, so it needs a ridge
    (NTKRegressor, "ntk", "relu", 0, 1.0, 0.5, 0.3, 1e-2, None, "ntk", None),
    (NTKRegressor, "ntk", "abs", 2, 1.2, None, None, 1e-3, None, "ntk", None),  # no bias
    (NNGPRegressor, "nngp", "relu", 1, 1.4, 0.3, None, 1e-3, None, "ntk", None),
    (NNGPRegressor, "nngp", "erf", 2, 1.5, 0.2, 0.1, 0.0, 2, "ntk", None),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}-{c[2]}-depth{c[3]}-t{c[6]}")
def test_estimator_matches_numpy_kernel_regression(case, rng):
    cls, kind, act, depth, W, b, t_rel, ridge, n_out, param, width = case
    x, xt, y = _data(rng, n_out=n_out)
    t = None if t_rel is None else t_rel * y.size  # y.size sets the flow's time scale
    kwargs = dict(depth=depth, activation=act, W_std=W, b_std=b, t=t, ridge=ridge)
    if cls is NTKRegressor:
        kwargs.update(parameterization=param, width=16 if width is None else width)
    est = cls(**kwargs).fit(x, y)
    ref, cond = _reference(kind, act, depth, W, b, x, xt, y, t, ridge, param, width)
    pred = est.predict(xt)
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred, ref, rtol=0, atol=KERNEL_RTOL * cond * np.max(np.abs(ref)))
    assert est.depth_ == depth


def test_converged_regressor_interpolates_and_finite_t_moves_from_zero(rng):
    """t = None without ridge interpolates the training targets; t = 0 predicts the initial
    outputs (zero); t grows towards the converged answer."""
    x, _, y = _data(rng)
    np.testing.assert_allclose(NTKRegressor().fit(x, y).predict(x), y, rtol=0, atol=1e-8 * np.max(np.abs(y)))
    np.testing.assert_array_equal(NTKRegressor(t=0.0).fit(x, y).predict(x), 0.0)
    errors = [np.linalg.norm(NTKRegressor(t=t).fit(x, y).predict(x) - y) for t in (1.0, 30.0, 1000.0)]
    assert errors[0] > errors[1] > errors[2]
    # t = inf is the converged predictor, solved the same way
    np.testing.assert_array_equal(
        NTKRegressor(t=np.inf).fit(x, y).predict(x), NTKRegressor().fit(x, y).predict(x)
    )


def test_classifier_outputs_match_numpy_on_one_hot_targets(rng):
    x, xt, _ = _data(rng, n=40)
    labels = np.array(["a", "b", "c"])[(x[:, 0] > -0.4).astype(int) + (x[:, 1] > 0.4)]
    onehot = (labels[:, None] == np.array(["a", "b", "c"])[None, :]).astype(float)
    t = 0.3 * onehot.size
    clf = NTKClassifier(depth=2, activation="erf", W_std=1.3, b_std=0.2, t=t, ridge=1e-3).fit(x, labels)
    ref, cond = _reference("ntk", "erf", 2, 1.3, 0.2, x, xt, onehot, t, 1e-3)
    out = clf.decision_function(xt)
    np.testing.assert_allclose(out, ref, rtol=0, atol=KERNEL_RTOL * cond * np.max(np.abs(ref)))
    np.testing.assert_array_equal(clf.predict(xt), np.array(["a", "b", "c"])[np.argmax(ref, axis=1)])
    assert not hasattr(clf, "predict_proba")
    # Two classes: the decision function is the second output minus the first.
    two = NTKClassifier(depth=1).fit(x, labels == "a")
    ref2, cond2 = _reference("ntk", "relu", 1, 2**0.5, 0.1, x, xt, np.stack([labels != "a", labels == "a"], 1) * 1.0,
                             None, 0.0)  # fmt: skip
    np.testing.assert_allclose(
        two.decision_function(xt),
        ref2[:, 1] - ref2[:, 0],
        rtol=0,
        atol=KERNEL_RTOL * cond2 * np.max(np.abs(ref2)),
    )


# ---------------------------------------------------------------------------------------
# Depth sweep: one pass, closed-form leave-one-out


@pytest.mark.parametrize(
    "cls, kind, ridge",
    [(NTKRegressor, "ntk", 0.0), (NTKRegressor, "ntk", 1e-2), (NNGPRegressor, "nngp", 1e-3)],
)
def test_depth_selection_matches_explicit_leave_one_out(cls, kind, ridge, rng):
    x, _, y = _data(rng, n=28, d=6, n_out=2)
    # Any order: the estimator reports them ascending. Depth 0 (linear, rank <= d + 1 < N)
    # has a defined leave-one-out error only with a ridge.
    depths = [3, 0, 1, 5] if ridge > 0 else [3, 2, 1, 5]
    est = cls(depth=depths, activation="relu", W_std=1.4, b_std=0.3, ridge=ridge).fit(x, y)
    np.testing.assert_array_equal(est.depths_, sorted(depths))
    expected = []
    for depth in est.depths_:
        k = ntk_gram_ref(mlp("relu", depth, 1.4, 0.3), x)[0 if kind == "nngp" else 1]
        lam = ridge * np.trace(k) / len(k)
        cond = np.linalg.cond(k + lam * np.eye(len(k)))
        residuals = loo_ref(k, y, lam)
        mse = np.mean(residuals**2)
        # The closed form and the loop each solve with A (or its N-1 minors, whose condition
        # numbers are at most cond(A) by interlacing): each residual carries at most
        # cond(A) times the kernels' relative round-off, twice (two computations), and
        # squaring doubles a relative error.
        np.testing.assert_allclose(
            est.loo_mse_[list(est.depths_).index(depth)], mse, rtol=4 * KERNEL_RTOL * cond
        )
        expected.append(mse)
    assert est.depth_ == est.depths_[int(np.argmin(expected))]
    # The chosen model is that depth's model.
    single = cls(depth=est.depth_, activation="relu", W_std=1.4, b_std=0.3, ridge=ridge).fit(x, y)
    np.testing.assert_allclose(est.predict(x[:5]), single.predict(x[:5]), rtol=1e-13, atol=1e-13)


def test_refit_with_one_depth_drops_the_sweep_attributes(rng):
    x, _, y = _data(rng, n=12)
    est = NTKRegressor(depth=[1, 2], ridge=1e-3).fit(x, y)
    assert hasattr(est, "loo_mse_")
    est.set_params(depth=3).fit(x, y)
    assert est.depth_ == 3 and not hasattr(est, "loo_mse_") and not hasattr(est, "depths_")


def test_classifier_leave_one_out_accuracy_matches_the_loop(rng):
    x, _, _ = _data(rng, n=36, d=4)
    labels = (x[:, 0] + 0.5 * x[:, 1] ** 2 > 0.3).astype(int) + (x[:, 2] > 0.8)
    clf = NTKClassifier(depth=[1, 2, 4], ridge=1e-3).fit(x, labels)
    onehot = (labels[:, None] == np.arange(3)[None, :]).astype(float)
    for j, depth in enumerate(clf.depths_):
        k = ntk_gram_ref(mlp("relu", depth, 2**0.5, 0.1), x)[1]
        residuals = loo_ref(k, onehot, 1e-3 * np.trace(k) / len(k))
        accuracy = np.mean(np.argmax(onehot - residuals, axis=1) == labels)
        assert clf.loo_accuracy_[j] == accuracy
        np.testing.assert_allclose(clf.loo_mse_[j], np.mean(residuals**2), rtol=1e-8)


def test_singular_depth_is_scored_inf_with_a_warning(rng):
    """Depth 0 is a linear model: its kernel has rank <= d + 1 < N, so without ridge its
    leave-one-out error is undefined; the other depths are still compared."""
    x, _, y = _data(rng, n=20, d=3)
    with pytest.warns(LeaveOneOutWarning, match="at depth 0"):
        est = NTKRegressor(depth=[0, 2]).fit(x, y)
    assert est.loo_mse_[0] == np.inf and np.isfinite(est.loo_mse_[1]) and est.depth_ == 2
    x_dup = np.concatenate([x, x[:3]])  # every depth singular: duplicated points
    y_dup = np.concatenate([y, y[:3]])
    with pytest.warns(LeaveOneOutWarning), pytest.raises(ValueError, match="set ridge > 0"):
        NTKRegressor(depth=[1, 2]).fit(x_dup, y_dup)
    # ... and a ridge makes them well defined again.
    assert np.all(np.isfinite(NTKRegressor(depth=[1, 2], ridge=1e-3).fit(x_dup, y_dup).loo_mse_))


def test_ridgeless_fit_on_duplicates_warns_singular(rng):
    x, _, y = _data(rng, n=15)
    with pytest.warns(SingularKernelWarning):
        NTKRegressor().fit(np.concatenate([x, x[:2]]), np.concatenate([y, y[:2]]))


# ---------------------------------------------------------------------------------------
# A real task


def test_classifier_on_digits_well_above_chance():
    """300 training and 300 test images of load_digits (10 classes, chance 10 %); the
    infinite-width ReLU network reaches ~97 % (Arora et al. report NTKs on par with
    trained networks on small data); 90 % leaves room for other platforms' round-off
    in ties while being far above chance."""
    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))[:600]
    train, test = order[:300], order[300:]
    clf = NTKClassifier().fit(x[train], y[train])
    assert clf.score(x[test], y[test]) > 0.9
    # A depth sweep from one pass chooses a depth whose test accuracy is as good.
    sweep = NTKClassifier(depth=range(1, 6)).fit(x[train], y[train])
    assert sweep.depth_ in range(1, 6) and sweep.score(x[test], y[test]) > 0.9


# ---------------------------------------------------------------------------------------
# Parameter errors: raised at fit, naming the estimator and the argument


BAD = [
    (dict(depth=-1), ValueError, r"NTKRegressor: depth must be an integer >= 0, got -1"),
    (dict(depth=1.5), TypeError, r"NTKRegressor: depth must be an integer >= 0 or a non-empty sequence"),
    (dict(depth="3"), TypeError, r"NTKRegressor: depth must be an integer >= 0 or a non-empty sequence"),
    (dict(depth=[]), ValueError, r"NTKRegressor: depth is an empty sequence"),
    (dict(depth=[2, 1, 2]), ValueError, r"NTKRegressor: depth repeats a value"),
    (dict(depth=[1, 2.5]), TypeError, r"NTKRegressor: depth must be an integer, got 2.5"),
    (dict(activation="tanh"), ValueError, r"NTKRegressor: activation must be one of \[.*'relu'.*got 'tanh'"),
    (dict(activation=nt.Dense()), ValueError, r"NTKRegressor: activation must be one of"),
    (dict(W_std=0.0), ValueError, r"NTKRegressor: W_std must be > 0.0, got 0.0"),
    (dict(W_std=np.nan), ValueError, r"NTKRegressor: W_std must be a finite number"),
    (dict(W_std="1"), TypeError, r"NTKRegressor: W_std must be a real number, got '1'"),
    (dict(b_std=-0.1), ValueError, r"NTKRegressor: b_std must be >= 0.0, got -0.1"),
    (dict(parameterization="mup"), ValueError, r"NTKRegressor: parameterization must be 'ntk' or 'standard'"),
    (
        dict(parameterization="standard", width=0),
        ValueError,
        r"NTKRegressor: width must be an integer >= 1, got 0",
    ),
    (
        dict(parameterization="standard", width=None),
        TypeError,
        r"NTKRegressor: width must be an integer, got None",
    ),
    (dict(t=-1.0), ValueError, r"NTKRegressor: t must be >= 0.0, got -1.0"),
    (dict(t="long"), TypeError, r"NTKRegressor: t must be a real number, got 'long'"),
    (dict(ridge=-1e-3), ValueError, r"NTKRegressor: ridge must be >= 0.0, got -0.001"),
    (dict(ridge=np.inf), ValueError, r"NTKRegressor: ridge must be a finite number"),
]


@pytest.mark.parametrize("params, exc, match", BAD, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_bad_parameters_raise_at_fit(params, exc, match, rng):
    x, _, y = _data(rng, n=8)
    est = NTKRegressor(**params)  # constructing never raises (scikit-learn's rule)
    with pytest.raises(exc, match=match):
        est.fit(x, y)


def test_bad_parameters_name_each_estimator(rng):
    x, _, y = _data(rng, n=8)
    with pytest.raises(ValueError, match=r"NNGPRegressor: ridge must be >= 0.0"):
        NNGPRegressor(ridge=-1.0).fit(x, y)
    with pytest.raises(ValueError, match=r"NTKClassifier: activation must be one of"):
        NTKClassifier(activation="softmax").fit(x, y > 0)
    # width is only checked where it is used
    assert NTKRegressor(width=None).fit(x, y).depth_ == 2
