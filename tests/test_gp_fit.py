"""fastntk.sklearn.MLPGaussianProcessRegressor: the maximum-likelihood fit of an MLP kernel's
W_std, b_std, noise and depth.

References: scikit-learn's GaussianProcessRegressor with the same kernel (fastntk's NTK/NNGP
kernel object + WhiteKernel, alpha=0) for the likelihood, its gradient and the fit; central
finite differences for the gradient where scikit-learn has no counterpart (the standard
parameterization); draws from the GP prior with known hyperparameters for the fitted values;
plain NumPy for the predictive mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
import pytest
import threadpoolctl
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastntk
from fastntk.sklearn import NNGP, NTK, MLPGaussianProcessRegressor

from reference import ntk_gram_ref
from specs import mlp


@pytest.fixture(autouse=True)
def _one_thread():
    """The matrices here are tiny (N <= 300): one thread for fastntk's passes and for BLAS
    spares the thread teams' hand-offs, which dominate such sizes on a loaded 2-core machine
    (measured there: a 300 x 300 potri 2 s with two OpenBLAS threads, 3-10 ms with one)."""
    fastntk.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        yield
    fastntk.set_num_threads(None)


def _data(rng, n=40, d=4, n_out=None):
    x = rng.standard_normal((n, d))
    f = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    y = f + 0.1 * rng.standard_normal(n)
    if n_out is not None:
        y = np.stack([y] + [np.cos(x[:, j]) for j in range(1, n_out)], axis=1)
    return x, y


def _sklearn_gp(kernel="ntk", depth=2, activation="relu", W_std=2**0.5, b_std=0.1, noise=1.0, **kw):
    cls = NTK if kernel == "ntk" else NNGP
    k = cls(depth=depth, activation=activation, W_std=W_std, b_std=b_std) + WhiteKernel(noise)
    return GaussianProcessRegressor(k, alpha=0.0, **kw)


# ---------------------------------------------------------------------------------------
# The likelihood and its gradient

# Same model, same arithmetic up to the order of the sums: the log likelihood is O(N) and
# the gradient entries O(N) to O(N^2) at these points, so agreement to 1e-9 relative leaves
# room for round-off amplified by the condition number (<= ~1e5 here) and nothing more.
LML_RTOL = 1e-9


@pytest.mark.parametrize(
    "kernel, activation, n_out",
    [("ntk", "relu", None), ("nngp", "relu", None), ("ntk", "erf", None), ("nngp", "gelu", 2)],
)
def test_log_likelihood_and_gradient_match_sklearn(rng, kernel, activation, n_out):
    x, y = _data(rng, n_out=n_out)
    ours = MLPGaussianProcessRegressor(kernel=kernel, depth=2, activation=activation).fit(x, y)
    ref = _sklearn_gp(kernel, activation=activation, optimizer=None).fit(x, y)
    for w, b, noise in [(1.4, 0.1, 1.0), (0.7, 1.5, 0.05), (2.5, 0.01, 1e-3)]:
        theta = np.log([w, b, noise])
        lml, grad = ours.log_marginal_likelihood(theta, eval_gradient=True)
        lml_ref, grad_ref = ref.log_marginal_likelihood(theta, eval_gradient=True)
        np.testing.assert_allclose(lml, lml_ref, rtol=LML_RTOL)
        np.testing.assert_allclose(grad, grad_ref, rtol=LML_RTOL, atol=LML_RTOL * np.abs(grad_ref).max())
        assert ours.log_marginal_likelihood(theta) == lml


@pytest.mark.parametrize(
    "params",
    [
        dict(kernel="ntk", parameterization="standard", width=64, activation="relu"),
        dict(kernel="ntk", activation="leaky_relu", depth=3),
        dict(kernel="nngp", activation="erf", depth=1),
    ],
)
def test_gradient_matches_finite_differences(rng, params):
    x, y = _data(rng, n=25)
    est = MLPGaussianProcessRegressor(**params).fit(x, y)
    theta = np.log([1.1, 0.3, 0.2])
    _, grad = est.log_marginal_likelihood(theta, eval_gradient=True)
    # Central differences with Richardson extrapolation (steps h, h/2): truncation
    # ~h^4/480 |d^5 LML| and round-off ~eps |LML| / h; at h = 1e-3 with |LML| ~ 1e2 and
    # derivatives of order ~1e2 both are < 1e-7 absolute; 1e-6 relative to the gradient's
    # scale is far below any wrong term.
    h = 1e-3

    def central(j, step):
        e = np.zeros(3)
        e[j] = step
        return (est.log_marginal_likelihood(theta + e) - est.log_marginal_likelihood(theta - e)) / (2 * step)

    fd = np.array([(4 * central(j, h / 2) - central(j, h)) / 3 for j in range(3)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_predictions_match_numpy(rng):
    """Posterior mean and the std of a noisy observation against plain NumPy on the
    reference kernel, at the fitted hyperparameters."""
    x, y = _data(rng, n=30)
    xt = rng.standard_normal((7, x.shape[1]))
    est = MLPGaussianProcessRegressor(depth=2, n_restarts=1, random_state=0).fit(x, y)
    net = mlp("relu", 2, W_std=est.W_std_, b_std=est.b_std_)
    k = ntk_gram_ref(net, x)[1] + est.noise_ * np.eye(len(x))
    ks = ntk_gram_ref(net, xt, x)[1]
    kss = ntk_gram_ref(net, xt)[1]
    mean = ks @ np.linalg.solve(k, y)
    var = np.diag(kss - ks @ np.linalg.solve(k, ks.T)) + est.noise_
    m, s = est.predict(xt, return_std=True)
    np.testing.assert_allclose(m, mean, rtol=1e-8, atol=1e-10 * np.abs(y).max())
    np.testing.assert_allclose(s, np.sqrt(var), rtol=1e-8)
    np.testing.assert_array_equal(est.predict(xt), m)


# ---------------------------------------------------------------------------------------
# The fit


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # bounds reached: fine here
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_fit_reaches_sklearn_likelihood_from_the_same_starts(rng, kernel):
    x, y = _data(rng, n=50)
    ours = MLPGaussianProcessRegressor(kernel=kernel, depth=2, n_restarts=3, random_state=0).fit(x, y)
    ref = _sklearn_gp(kernel, n_restarts_optimizer=3, random_state=0).fit(x, y)
    # Same starts (the same draws from the same seed), same optimizer: the best local maxima
    # agree up to L-BFGS-B's stopping tolerance (relative change of the objective 2.2e-9).
    lml_ref = ref.log_marginal_likelihood_value_
    assert ours.log_marginal_likelihood_value_ >= lml_ref - 1e-7 * abs(lml_ref)
    # The reported value is the likelihood at the reported hyperparameters.
    theta = np.log([ours.W_std_, ours.b_std_, ours.noise_])
    np.testing.assert_allclose(
        ref.log_marginal_likelihood(theta), ours.log_marginal_likelihood_value_, rtol=LML_RTOL
    )


def _prior_draw(rng, n, depth, w, b, noise, d=5):
    x = rng.standard_normal((n, d))
    k = NTK(depth=depth, W_std=w, b_std=b)(x) + noise * np.eye(n)
    return x, np.linalg.cholesky(k) @ rng.standard_normal(n)


def test_fit_recovers_hyperparameters_of_a_prior_draw():
    rng = np.random.default_rng(7)
    truth = dict(depth=2, w=1.2, b=0.5, noise=0.1)
    x, y = _prior_draw(rng, 300, **truth)
    est = MLPGaussianProcessRegressor(depth=2, n_restarts=1, random_state=0).fit(x, y)
    theta0 = np.log([truth["w"], truth["b"], truth["noise"]])
    # The maximum is at least the likelihood at the truth.
    assert est.log_marginal_likelihood_value_ >= est.log_marginal_likelihood(theta0) - 1e-9 * abs(
        est.log_marginal_likelihood_value_
    )
    # The tolerance: the maximum-likelihood estimate is asymptotically normal around the truth
    # with covariance the inverse Fisher information I_jk = 1/2 tr(A^-1 dA_j A^-1 dA_k)
    # (A = K + noise I, derivatives in log-hyperparameters), computed here in NumPy from
    # scikit-learn's kernel gradient at the truth. 5 standard deviations per coordinate
    # (two-sided probability ~6e-7 under that approximation; the draw is seeded). At N = 300
    # the approximation's tails are heavier for the noise (eight seeds: |z| up to 3.2, this
    # one's), hence 5 and not 3.
    kernel = NTK(depth=2, W_std=truth["w"], b_std=truth["b"]) + WhiteKernel(truth["noise"])
    a, da = kernel(x, eval_gradient=True)
    ainv_da = [np.linalg.solve(a, da[:, :, j]) for j in range(3)]
    fisher = np.array([[0.5 * np.sum(p * q.T) for q in ainv_da] for p in ainv_da])
    sd = np.sqrt(np.diag(np.linalg.inv(fisher)))
    theta = np.log([est.W_std_, est.b_std_, est.noise_])
    assert np.all(np.abs(theta - theta0) <= 5 * sd), (theta, theta0, sd)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # bounds reached: fine here
def test_depth_selection_maximizes_the_likelihood_over_depths():
    rng = np.random.default_rng(3)
    x, y = _prior_draw(rng, 80, depth=4, w=1.6, b=0.3, noise=0.05)
    depths = [1, 2, 4, 6]
    est = MLPGaussianProcessRegressor(depth=depths, n_restarts=1, random_state=0).fit(x, y)
    # Independent reference: scikit-learn's fit of each depth on its own, same starts.
    ref = {d: _sklearn_gp(depth=d, n_restarts_optimizer=1, random_state=0).fit(x, y) for d in depths}
    lml_ref = {d: g.log_marginal_likelihood_value_ for d, g in ref.items()}
    best = max(depths, key=lambda d: lml_ref[d])
    runner_up = max(v for d, v in lml_ref.items() if d != best)
    assert lml_ref[best] - runner_up > 0.1  # the choice is not decided by round-off
    assert est.depth_ == best
    assert est.log_marginal_likelihood_value_ >= lml_ref[best] - 1e-7 * abs(lml_ref[best])
    np.testing.assert_array_equal(est.depths_, depths)
    np.testing.assert_allclose(
        est.log_marginal_likelihood_by_depth_[depths.index(best)],
        est.log_marginal_likelihood_value_,
        rtol=1e-12,
    )
    assert np.all(est.log_marginal_likelihood_by_depth_ <= est.log_marginal_likelihood_value_)


def test_fixed_hyperparameters_stay_fixed(rng):
    x, y = _data(rng, n=30)
    est = MLPGaussianProcessRegressor(noise=0.3, noise_bounds="fixed", b_std=0.2, b_std_bounds="fixed").fit(
        x, y
    )
    assert est.noise_ == 0.3 and est.b_std_ == 0.2 and est.theta_.shape == (1,)
    ref = _sklearn_gp(b_std=0.2, noise=0.3, optimizer=None).fit(x, y)
    lml, grad = est.log_marginal_likelihood(est.theta_, eval_gradient=True)
    full = ref.log_marginal_likelihood(np.log([est.W_std_, 0.2, 0.3]), eval_gradient=True)
    np.testing.assert_allclose(lml, full[0], rtol=LML_RTOL)
    np.testing.assert_allclose(grad, full[1][:1], rtol=1e-8, atol=1e-8)
    assert abs(grad[0]) < 1e-3 * abs(lml)  # a stationary point of the one free parameter


@parametrize_with_checks([MLPGaussianProcessRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------
# Bad input: clear errors before any work


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(W_std_bounds=(5.0, 1.0)), "W_std_bounds .* admits no value"),
        (dict(noise_bounds=(0.0, 1.0)), "noise_bounds .* admits no value"),
        (dict(b_std_bounds=(1e-3, np.inf)), "b_std_bounds .* admits no value"),
        (dict(b_std_bounds="free"), "b_std_bounds must be a pair"),
        (dict(W_std_bounds=(1.0, 2.0, 3.0)), "W_std_bounds must be a pair"),
        (dict(W_std=50.0, W_std_bounds=(1.0, 2.0)), "starting W_std=50.0 is outside"),
        (dict(depth=[]), "depth is an empty sequence"),
        (dict(depth=[1, 1]), "depth repeats"),
        (dict(kernel="rbf"), "kernel must be 'ntk' or 'nngp'"),
        (dict(noise=-1.0), "noise"),
        (dict(n_restarts=-1), "n_restarts"),
        (dict(activation="swish"), "activation"),
        (dict(parameterization="mup"), "parameterization"),
    ],
)
def test_bad_parameters(rng, params, match, monkeypatch):
    x, y = _data(rng, n=10)
    calls = []
    monkeypatch.setattr(fastntk._engine, "gram", lambda *a, **k: calls.append(1))
    with pytest.raises((ValueError, TypeError), match=match):
        MLPGaussianProcessRegressor(**params).fit(x, y)
    assert not calls  # refused before any kernel


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_targets_and_inputs(rng, bad, monkeypatch):
    x, y = _data(rng, n=10)
    monkeypatch.setattr(fastntk._engine, "gram", lambda *a, **k: pytest.fail("kernel computed"))
    y[3] = bad
    with pytest.raises(ValueError, match="y"):
        MLPGaussianProcessRegressor().fit(x, y)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="X"):
        MLPGaussianProcessRegressor().fit(x, np.zeros(len(x)))


def test_not_positive_definite_names_pivot_and_eigenvalue():
    # Zero inputs, no bias, no noise: K + noise I is exactly the zero matrix at every W_std,
    # so the first Cholesky pivot is 0 and every point of the search fails.
    x = np.zeros((6, 3))
    est = MLPGaussianProcessRegressor(b_std=0.0, b_std_bounds="fixed", noise=0.0, noise_bounds="fixed")
    with pytest.raises(ValueError, match=r"pivot 1 of 6.*smallest eigenvalue of K \+ noise I is 0"):
        est.fit(x, np.arange(6.0))


def test_unfitted_and_bad_theta(rng):
    x, y = _data(rng, n=10)
    est = MLPGaussianProcessRegressor()
    with pytest.raises(Exception, match="not fitted"):
        est.predict(x)
    est.fit(x, y)
    with pytest.raises(ValueError, match="theta must hold 3 finite values"):
        est.log_marginal_likelihood([0.0, 0.0])
    with pytest.raises(ValueError, match="theta must hold 3 finite values"):
        est.log_marginal_likelihood([0.0, np.nan, 0.0])
