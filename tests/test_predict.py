"""fastntk.predict against independent references.

- closed forms against brute force: explicit small-step Euler integration of the
  function-space ODE (Richardson-extrapolated, with its own error estimate), the explicit
  gradient-descent loop, least squares in feature space for singular kernels, NumPy solves;
- real finite networks: an NTK-parameterized MLP trained by gradient descent in parameter
  space (tests/predict_nets.py), whose outputs approach the prediction as 1/sqrt(width);
- a Monte Carlo ensemble of finite networks, each trained in its own linearization, for the
  ensemble mean and covariance.
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np
import pytest
import scipy.linalg
from scipy.special import softmax

import fastntk as nt
from fastntk import predict

from predict_nets import MLP, euler_richardson, gd_loop, linearized_ensemble

EPS = np.finfo(np.float64).eps
W_STD, B_STD = 1.5, 0.1


def erf_net(n_out: int = 1, W_std: float = W_STD, b_std: float = B_STD):
    return nt.mlp("erf", 1, W_std=W_std, b_std=b_std, width=512, n_out=n_out)


@functools.cache
def problem(n: int = 12, m: int = 5, d: int = 3, n_out: int = 2, seed: int = 0):
    """A small regression problem with the analytic kernels of a one-hidden-layer erf net."""
    rng = np.random.default_rng(seed)
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    net = erf_net(n_out)
    k, kt, ktt = net.kernel(x), net.kernel(xt, x), net.kernel(xt)
    return types.SimpleNamespace(
        x=x,
        xt=xt,
        net=net,
        y=rng.standard_normal((n, n_out)),
        K=k.ntk,
        Kt=kt.ntk,
        k=k,
        kt=kt,
        ktt=ktt,
        f0=0.3 * rng.standard_normal((n, n_out)),
        ft0=0.3 * rng.standard_normal((m, n_out)),
    )


def regularized(k, diag_reg):
    return k + diag_reg * np.trace(k) / k.shape[0] * np.eye(k.shape[0])


def mse_flow_rhs(a, kt, y):
    """d(f_train, f_test)/dtau for MSE ||f - y||^2 / (2 n): the training outputs move with the
    (regularized) training kernel a, the test outputs with the test-train kernel."""
    n, k = y.shape
    size = n * k

    def rhs(s):
        r = (s[:size].reshape(n, k) - y) / y.size
        return np.concatenate([-(a @ r).ravel(), -(kt @ r).ravel()])

    return rhs


# ---------------------------------------------------------------------------------------
# Closed forms against brute force


@pytest.mark.parametrize("diag_reg", [0.0, 0.05])
def test_flow_matches_euler_integration(diag_reg):
    p = problem()
    lr = 0.7
    a = regularized(p.K, diag_reg)
    rate = np.linalg.eigvalsh(a)[-1] / p.y.size  # fastest decay rate per unit of tau
    ts = np.array([0.0, 0.5, 3.0, 10.0]) / (lr * rate)  # up to 10 e-folds of the fastest mode
    ref, err = euler_richardson(
        mse_flow_rhs(a, p.Kt, p.y), np.concatenate([p.f0.ravel(), p.ft0.ravel()]), lr * ts, 1e-3 / rate
    )
    fn = predict.gradient_descent_mse(p.K, p.y, lr, diag_reg)
    f, ft = fn(ts, p.f0, p.ft0, p.Kt)
    got = np.concatenate([f.reshape(len(ts), -1), ft.reshape(len(ts), -1)], axis=1)
    # err is three times the reference's estimated discretization error; the closed form's
    # round-off (an eigendecomposition and a few products, ~N eps relative) is below 1e-12
    # of the output scale.
    tol = err + 1e-12 * np.abs(ref).max()
    assert np.all(np.abs(got - ref) <= tol), np.abs(got - ref).max()
    assert err.max() < 1e-4 * np.abs(ref).max()  # the reference is accurate enough to mean something


@pytest.mark.parametrize("diag_reg", [0.0, 0.05])
def test_discrete_steps_match_the_loop(diag_reg):
    p = problem()
    a = regularized(p.K, diag_reg)
    lr = 0.9 * 2 * p.y.size / np.linalg.eigvalsh(a)[-1]  # 90 % of the stable maximum
    steps = [0, 1, 2, 7, 60]
    ref_f, ref_t = gd_loop(a, p.Kt, p.y, p.f0, p.ft0, lr, steps)
    fn = predict.gradient_descent_mse(p.K, p.y, lr, diag_reg, discrete=True)
    f, ft = fn(np.array(steps), p.f0, p.ft0, p.Kt)
    # Both sides are exact algebra evaluated in float64: the loop accumulates ~N eps relative
    # per step (60 steps: ~5e-14), the closed form ~N eps; 1e-11 leaves two orders of margin.
    scale = np.abs(ref_f).max()
    np.testing.assert_allclose(f, ref_f, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(ft, ref_t, rtol=0, atol=1e-11 * scale)


def test_infinite_time_interpolates_and_equals_kernel_regression():
    p = problem()
    fn = predict.gradient_descent_mse(p.K, p.y, 2.0)
    f, ft = fn(None, p.f0, p.ft0, p.Kt)
    np.testing.assert_array_equal(f, p.y)  # positive definite: the flow interpolates exactly
    expected = p.ft0 + predict.kernel_regression(p.K, p.y - p.f0, p.Kt)
    np.testing.assert_allclose(ft, expected, rtol=1e-13, atol=0)
    # The same limit through the eigendecomposition (t = inf inside an array of times); the two
    # routes differ by the solves' round-off, cond(K) * N * eps relative.
    f_inf, ft_inf = fn(np.array([1.0, np.inf]), p.f0, p.ft0, p.Kt)
    tol = np.linalg.cond(p.K) * p.K.shape[0] * EPS
    np.testing.assert_allclose(f_inf[1], p.y, rtol=0, atol=tol * np.abs(p.y).max())
    np.testing.assert_allclose(ft_inf[1], ft, rtol=0, atol=tol * np.abs(ft).max())


def test_kernel_regression_against_numpy_solve():
    p = problem()
    ref = p.Kt @ np.linalg.solve(p.K, p.y)
    tol = np.linalg.cond(p.K) * p.K.shape[0] * EPS  # perturbation bound of either solve
    np.testing.assert_allclose(
        predict.kernel_regression(p.K, p.y, p.Kt), ref, rtol=0, atol=tol * np.abs(ref).max()
    )
    np.testing.assert_array_equal(predict.kernel_regression(p.K, p.y), p.y)
    for ridge in (0.3, 5.0):
        a = p.K + ridge * np.eye(len(p.K))
        ref_t = p.Kt @ np.linalg.solve(a, p.y)
        ref_tr = p.K @ np.linalg.solve(a, p.y)
        tol = np.linalg.cond(a) * len(a) * EPS
        np.testing.assert_allclose(
            predict.kernel_regression(p.K, p.y, p.Kt, ridge=ridge),
            ref_t,
            rtol=0,
            atol=tol * np.abs(ref_t).max(),
        )
        np.testing.assert_allclose(
            predict.kernel_regression(p.K, p.y, ridge=ridge), ref_tr, rtol=0, atol=tol * np.abs(ref_tr).max()
        )
    # 1-D targets come back 1-D.
    out = predict.kernel_regression(p.K, p.y[:, 0], p.Kt)
    assert out.shape == (p.Kt.shape[0],)
    np.testing.assert_array_equal(out, predict.kernel_regression(p.K, p.y[:, :1], p.Kt)[:, 0])


@pytest.mark.parametrize("absolute", [False, True])
def test_diag_reg_convention(absolute):
    """diag_reg adds diag_reg * trace(K) / N (or diag_reg itself) to the diagonal: at t=None the
    test prediction is ridge regression with that ridge."""
    p = problem()
    diag_reg = 0.02
    ridge = diag_reg if absolute else diag_reg * np.trace(p.K) / len(p.K)
    fn = predict.gradient_descent_mse(p.K, p.y, diag_reg=diag_reg, diag_reg_absolute_scale=absolute)
    ft = fn(None, None, 0.0, p.Kt)
    ref = p.Kt @ np.linalg.solve(p.K + ridge * np.eye(len(p.K)), p.y)
    np.testing.assert_allclose(ft, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_time_shapes_and_outputs():
    p = problem()
    fn = predict.gradient_descent_mse(p.K, p.y)
    t = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    f, ft = fn(t, p.f0, p.ft0, p.Kt)
    assert f.shape == (2, 3) + p.y.shape and ft.shape == (2, 3) + p.ft0.shape
    assert f.dtype == np.float64
    np.testing.assert_array_equal(f[0, 0], p.f0)  # t = 0 is the initial state
    np.testing.assert_array_equal(ft[0, 0], p.ft0)
    # A scalar t gives the bare shape; each time agrees with the batched call.
    f1, ft1 = fn(4.0, p.f0, p.ft0, p.Kt)
    assert f1.shape == p.y.shape
    np.testing.assert_allclose(f1, f[1, 1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ft1, ft[1, 1], rtol=1e-13, atol=1e-15)
    # One of the two sets: fx_train_0=None returns only the test outputs (training outputs start at 0).
    only_test = fn(4.0, None, p.ft0, p.Kt)
    np.testing.assert_allclose(only_test, fn(4.0, 0.0, p.ft0, p.Kt)[1], rtol=1e-14, atol=0)
    assert fn(4.0, p.f0).shape == p.y.shape
    # Scalar initial outputs broadcast; 1-D targets give outputs without the output axis (and
    # n = y_train.size = N, as for one column).
    f1d, ft1d = predict.gradient_descent_mse(p.K, p.y[:, 0])(t, 0.0, 0.0, p.Kt)
    f2d, ft2d = predict.gradient_descent_mse(p.K, p.y[:, :1])(t, 0.0, 0.0, p.Kt)
    assert f1d.shape == (2, 3, len(p.K)) and ft1d.shape == (2, 3, len(p.Kt))
    np.testing.assert_array_equal(ft1d, ft2d[..., 0])
    np.testing.assert_array_equal(f1d, f2d[..., 0])


def test_one_eigendecomposition_serves_every_call(monkeypatch):
    p = problem()
    calls = []

    def counting(real):
        def eigh(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        return eigh

    # Whichever LAPACK wrapper does the work (NumPy's, which releases the GIL, today).
    monkeypatch.setattr(scipy.linalg, "eigh", counting(scipy.linalg.eigh))
    monkeypatch.setattr(np.linalg, "eigh", counting(np.linalg.eigh))
    fn = predict.gradient_descent_mse(p.K, p.y)
    for t in (0.5, np.array([1.0, 2.0]), np.linspace(0, 9, 7).reshape(7, 1)):
        fn(t, p.f0, p.ft0, p.Kt)
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------
# Singular kernels


def _duplicated():
    """Erf-network kernels with points 3 and 7 copies of point 0 and point 5 of point 1,
    the copies with different targets."""
    p = problem()
    x = p.x.copy()
    x[3] = x[7] = x[0]
    x[5] = x[1]
    groups = {0: [0, 3, 7], 1: [1, 5]}
    k, kt = p.net.kernel(x, get="ntk"), p.net.kernel(p.xt, x, get="ntk")
    return x, groups, k, kt


def test_duplicated_points_give_the_pseudo_inverse_solution():
    p = problem()
    x, groups, k, kt = _duplicated()
    # Reference: the minimum-norm least-squares fit averages duplicated points' targets, so it
    # is kernel regression on the distinct points with averaged targets (a regular solve).
    keep = [i for i in range(len(x)) if i not in (3, 5, 7)]
    y_avg = p.y.copy()
    for members in groups.values():
        y_avg[members] = p.y[members].mean(axis=0)
    ku = k[np.ix_(keep, keep)]
    alpha = np.linalg.solve(ku, y_avg[keep])
    ref_test, ref_train = kt[:, keep] @ alpha, k[:, keep] @ alpha
    tol = np.linalg.cond(ku) * len(k) * EPS  # perturbation bound of both solves
    with pytest.warns(predict.SingularKernelWarning, match="pseudo-inverse"):
        got = predict.kernel_regression(k, p.y, kt)
    np.testing.assert_allclose(got, ref_test, rtol=0, atol=tol * np.abs(ref_test).max())
    with pytest.warns(predict.SingularKernelWarning):
        got_train = predict.kernel_regression(k, p.y)
    np.testing.assert_allclose(got_train, ref_train, rtol=0, atol=tol * np.abs(ref_train).max())
    np.testing.assert_allclose(ref_train, y_avg, rtol=0, atol=tol * np.abs(y_avg).max())

    # Infinite time: the same answer (Neural Tangents returns NaN here).
    fn = predict.gradient_descent_mse(k, p.y)
    with pytest.warns(predict.SingularKernelWarning):
        f_inf, ft_inf = fn(None, 0.0, 0.0, kt)
    np.testing.assert_allclose(ft_inf, ref_test, rtol=0, atol=tol * np.abs(ref_test).max())
    np.testing.assert_allclose(f_inf, y_avg, rtol=0, atol=tol * np.abs(y_avg).max())


def test_duplicated_points_at_finite_time_follow_the_ode():
    """At finite t the flow of a singular kernel is still well defined (the zero modes do not
    move): the closed form must match integration of the ODE itself, without NaN."""
    p = problem()
    _, _, k, kt = _duplicated()
    lr = 1.3
    rate = np.linalg.eigvalsh(k)[-1] / p.y.size
    ts = np.array([0.0, 1.0, 6.0]) / (lr * rate)
    ref, err = euler_richardson(
        mse_flow_rhs(k, kt, p.y), np.concatenate([p.f0.ravel(), p.ft0.ravel()]), lr * ts, 1e-3 / rate
    )
    fn = predict.gradient_descent_mse(k, p.y, lr)
    with pytest.warns(predict.SingularKernelWarning, match="do not move"):
        f, ft = fn(ts, p.f0, p.ft0, kt)
    got = np.concatenate([f.reshape(len(ts), -1), ft.reshape(len(ts), -1)], axis=1)
    assert np.isfinite(got).all()
    tol = err + 1e-12 * np.abs(ref).max()  # as in test_flow_matches_euler_integration
    assert np.all(np.abs(got - ref) <= tol), np.abs(got - ref).max()
    # t = inf through the eigendecomposition equals the pseudo-inverse solution.
    with pytest.warns(predict.SingularKernelWarning):
        ref_inf = predict.kernel_regression(k, p.y - p.f0, kt) + p.ft0
    ft_inf = fn(np.inf, p.f0, p.ft0, kt)[1]
    np.testing.assert_allclose(ft_inf, ref_inf, rtol=0, atol=1e-9 * np.abs(ref_inf).max())


def test_numerically_singular_kernel_that_cholesky_accepts():
    """Cholesky succeeds on diag(2, 1, 0.5, 1e-18), but solving with it would amplify by 1e18:
    the condition estimate sends it to the pseudo-inverse, which drops the 1e-18 mode
    (below the cutoff N eps max|lambda| = 1.8e-15)."""
    k = np.diag([2.0, 1.0, 0.5, 1e-18])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    kt = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.0, 2.0, 1.0]])
    with pytest.warns(predict.SingularKernelWarning, match="numerically singular"):
        got = predict.kernel_regression(k, y, kt)
    np.testing.assert_allclose(got, [1 / 2 + 2 / 1 + 3 / 0.5, 0.5 / 2 + 2 * 3 / 0.5], rtol=1e-15)
    with pytest.warns(predict.SingularKernelWarning):
        f = predict.gradient_descent_mse(k, y)(None, 0.0)
    np.testing.assert_array_equal(f, [1.0, 2.0, 3.0, 0.0])  # the dropped mode does not move


def test_linear_network_with_fewer_features_than_points():
    """A linear network's kernel W^2 x.x'/d + b^2 has rank d + 1 < N: the pseudo-inverse
    solution is least squares in the d + 1 features, computed here by numpy.linalg.lstsq."""
    rng = np.random.default_rng(3)
    d, n, m = 3, 12, 6
    W_std, b_std = 1.2, 0.4
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y, f0 = rng.standard_normal((n, 2)), 0.2 * rng.standard_normal((n, 2))
    net = nt.serial(nt.Dense(1, W_std=W_std, b_std=b_std))
    k, kt = net.kernel(x, get="ntk"), net.kernel(xt, x, get="ntk")

    def features(z):
        return np.hstack([W_std * z / math.sqrt(d), np.full((len(z), 1), b_std)])

    phi, phit = features(x), features(xt)
    np.testing.assert_allclose(phi @ phi.T, k, rtol=1e-13, atol=1e-14)  # the features are right
    w = np.linalg.lstsq(phi, y - f0, rcond=None)[0]
    # lstsq and the eigen route each lose ~cond(phi)^2 eps of the output scale (cond ~ 10 here).
    tol = 1e3 * np.linalg.cond(phi) ** 2 * EPS
    with pytest.warns(predict.SingularKernelWarning):
        got = predict.kernel_regression(k, y - f0, kt)
    np.testing.assert_allclose(got, phit @ w, rtol=0, atol=tol * np.abs(y).max())
    fn = predict.gradient_descent_mse(k, y, 0.5)
    with pytest.warns(predict.SingularKernelWarning):
        f_inf = fn(None, f0)
    # The flow converges to the projection of y - f0 onto the features' span, not to y.
    np.testing.assert_allclose(f_inf, f0 + phi @ w, rtol=0, atol=tol * np.abs(y).max())
    assert np.abs(f_inf - y).max() > 0.1
    f_big = fn(np.array([np.inf]), f0)[0]
    np.testing.assert_allclose(f_big, f_inf, rtol=0, atol=tol * np.abs(y).max())


# ---------------------------------------------------------------------------------------
# A real network trained by gradient descent


def test_real_network_follows_the_prediction_and_converges_with_width():
    """NTK-parameterized one-hidden-layer erf MLPs (tests/predict_nets.py, plain NumPy backprop)
    trained by full-batch gradient descent on MSE in parameter space, against
    gradient_descent_mse(discrete=True) with the analytic NTK and the network's own outputs at
    initialization. The difference is the finite-width effect: the empirical NTK at
    initialization and its drift during training both deviate by O(1/sqrt(width)).

    - trend: 1/sqrt(width) predicts err(4096) / err(1024) = 0.5. Over 16 seeds the measured
      ratio of 4-seed means was 0.48-0.60 (0.57 overall, the next order adding a little).
      A prediction that stayed off at infinite width would give ~1, an O(1/width) error ~0.25;
      the window [0.3, 0.75] separates these;
    - bound: err <= C_W * rms(y) / sqrt(width), with the constant of the leading order not
      known in closed form; measured err * sqrt(w) / rms(y) = 1.0 +- 0.3 over 16 seeds at both
      widths, so C_W = 3 (a wrong time scale or normalization gives errors of order rms(y)).
    """
    d, n, m, n_out = 4, 20, 10, 2
    rng = np.random.default_rng(1)
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y = np.sin(1.3 * x[:, :n_out])
    net = nt.serial(
        nt.Dense(1, W_std=W_STD, b_std=B_STD), nt.Erf(), nt.Dense(n_out, W_std=W_STD, b_std=B_STD)
    )
    k, kt = net.kernel(x, get="ntk"), net.kernel(xt, x, get="ntk")
    lr = y.size / np.linalg.eigvalsh(k)[-1]  # half the stable maximum
    steps = np.array([0, 10, 30, 100, 300])
    fn = predict.gradient_descent_mse(k, y, lr, discrete=True)
    rms_y = np.sqrt(np.mean(y**2))
    errors = {}
    for width in (1024, 4096):
        per_seed = []
        for seed in range(4):
            mlp = MLP((d, width, n_out), "erf", W_STD, B_STD)
            params = mlp.init(np.random.default_rng(100 + seed))
            f_net, ft_net = mlp.train(params, x, y, xt, lr, steps)
            f, ft = fn(steps, f_net[0], ft_net[0], kt)
            diff = np.concatenate(
                [(f - f_net).reshape(len(steps), -1), (ft - ft_net).reshape(len(steps), -1)], 1
            )
            per_seed.append(np.sqrt(np.mean(diff**2, axis=1)).max())  # worst checkpoint, rms over outputs
        errors[width] = float(np.mean(per_seed))
    print(f"real network vs prediction, rms error: {errors}, ratio {errors[4096] / errors[1024]:.3f}")
    for width, err in errors.items():
        assert err <= 3.0 * rms_y / math.sqrt(width), (width, err)
    assert 0.3 <= errors[4096] / errors[1024] <= 0.75, errors


# ---------------------------------------------------------------------------------------
# Ensembles and Gaussian posteriors

# Monte Carlo tolerance (test_monte_carlo.py's rule): |MC - predicted| <= Z * se + C_BIAS * scale / width.
# Z = 5: ~300 entries are checked, P(|z| > 5) = 6e-7 each, false alarm ~2e-4 for a fresh seed.
# Finite-width bias: each network's trained output is a smooth function of averages over its
# `width` hidden units, so its mean and covariance are off by O(1/width). Measured with 1e5
# networks at widths 32, 64, 128, width * |bias| / scale was <= 0.58 (covariances) and
# <= 0.40 (means); C_BIAS takes 1.0. At width 512 that is 0.2 % of the scale.
Z, C_BIAS = 5.0, 1.0


@pytest.mark.parametrize("mode", ["ntk", "nngp"])
def test_ensemble_against_monte_carlo_over_finite_networks(mode):
    rng = np.random.default_rng(5)
    d, n, m = 2, 4, 3
    x = rng.standard_normal((n + m, d))
    y = np.array([0.5, -1.0, 0.8, 0.2])
    W_std, b_std = 1.5, 0.3
    net = nt.serial(nt.Dense(1, W_std=W_std, b_std=b_std), nt.Erf(), nt.Dense(1, W_std=W_std, b_std=b_std))
    ens = predict.gradient_descent_mse_ensemble(net, x[:n], y)
    taus = np.array([0.5, 3.0, 30.0, np.inf])
    width, count = 512, 4000
    samples = linearized_ensemble(x, n, y, width, count, taus, W_std, b_std, np.random.default_rng(7), mode)
    k = net.kernel(x)
    scale = max(np.diag(getattr(k, mode)).max(), np.diag(k.nngp).max(), (y**2).max())
    bias = C_BIAS * scale / width
    # Predictions on all points at once (x_test = every point) and on the training points alone.
    for points, got in ((slice(None), ens(taus, x, mode, True)), (slice(0, n), ens(taus, None, mode, True))):
        s = samples[:, :, points]
        mean = s.mean(axis=0)
        se_mean = s.std(axis=0) / math.sqrt(count)
        assert np.all(np.abs(got.mean - mean) <= Z * se_mean + bias), np.abs(got.mean - mean).max()
        c = s - mean
        products = np.einsum("stp,stq->stpq", c, c)
        cov = products.sum(axis=0) / (count - 1)
        se_cov = products.std(axis=0) / math.sqrt(count)
        assert np.all(np.abs(got.covariance - cov) <= Z * se_cov + bias), np.abs(got.covariance - cov).max()


def test_ensemble_infinite_time():
    p = problem(n_out=1)
    y = p.y[:, 0]
    ens = predict.gradient_descent_mse_ensemble(p.net, p.x, y, learning_rate=0.5)
    train = ens(None, None, ("nngp", "ntk"), compute_cov=True)
    for g in ("nngp", "ntk"):
        np.testing.assert_array_equal(getattr(train, g).mean, y)  # interpolation
        np.testing.assert_array_equal(getattr(train, g).covariance, np.zeros((len(y), len(y))))
    # At finite but long times the training covariance goes to 0 as exp(-2 lambda_min tau / n).
    late = ens(1e4 * y.size / np.linalg.eigvalsh(p.K)[0], None, "ntk", True)
    assert np.abs(late.covariance).max() < 1e-8 * np.abs(p.k.nngp).max()
    # Test points: gp_inference's definitions; t = inf through the eigendecomposition agrees.
    test = ens(None, p.xt, None, True)
    gp = predict.gp_inference(p.k, y)(None, p.kt, p.ktt)
    tol = np.linalg.cond(p.K) * len(p.K) * EPS * np.abs(p.k.nngp).max()
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(test, g).mean, getattr(gp, g).mean, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(getattr(test, g).covariance, getattr(gp, g).covariance, rtol=0, atol=1e-13)
        inf = ens(np.inf, p.xt, g, True)
        np.testing.assert_allclose(inf.mean, getattr(gp, g).mean, rtol=0, atol=tol)
        np.testing.assert_allclose(inf.covariance, getattr(gp, g).covariance, rtol=0, atol=tol)
    # Means only, one name: the array itself; t of shape (2, 2).
    mean = ens(np.ones((2, 2)), p.xt, "ntk")
    assert mean.shape == (2, 2, len(p.xt))


def test_gp_inference_closed_forms():
    p = problem()
    post = predict.gp_inference(p.k, p.y)(("nngp", "ntk", "ntkgp"), p.kt, p.ktt)
    K, Th, Kt, Tht = p.k.nngp, p.k.ntk, p.kt.nngp, p.kt.ntk
    refs = {
        "nngp": (Kt @ np.linalg.solve(K, p.y), p.ktt.nngp - Kt @ np.linalg.solve(K, Kt.T)),
        "ntk": (
            Tht @ np.linalg.solve(Th, p.y),
            p.ktt.nngp
            + Tht @ np.linalg.solve(Th, K @ np.linalg.solve(Th, Tht.T))
            - Tht @ np.linalg.solve(Th, Kt.T)
            - Kt @ np.linalg.solve(Th, Tht.T),
        ),
        "ntkgp": (Tht @ np.linalg.solve(Th, p.y), p.ktt.ntk - Tht @ np.linalg.solve(Th, Tht.T)),
    }
    for g, (mean, cov) in refs.items():
        a = K if g == "nngp" else Th
        tol = np.linalg.cond(a) * len(a) * EPS  # perturbation bound of both sides' solves
        np.testing.assert_allclose(getattr(post, g).mean, mean, rtol=0, atol=tol * np.abs(mean).max())
        np.testing.assert_allclose(
            getattr(post, g).covariance, cov, rtol=0, atol=tol * np.abs(p.ktt.ntk).max()
        )
    # Posterior covariances are positive semi-definite up to round-off.
    for g in refs:
        assert np.linalg.eigvalsh(getattr(post, g).covariance).min() > -1e-10 * np.abs(p.ktt.ntk).max()
    # Training set: N(y, 0); a single name returns the mean alone.
    train = predict.gp_inference(p.k, p.y)("nngp", None, True)
    np.testing.assert_array_equal(train.mean, p.y)
    np.testing.assert_array_equal(train.covariance, np.zeros_like(p.K))
    mean = predict.gp_inference(p.K, p.y)("ntk", p.Kt)
    np.testing.assert_allclose(mean, refs["ntk"][0], rtol=0, atol=1e-10 * np.abs(mean).max())


# ---------------------------------------------------------------------------------------
# General losses and momentum


def _classification(n=10, m=4, n_classes=3, seed=2):
    p = problem(n=n, m=m, n_out=n_classes, seed=seed)
    labels = np.random.default_rng(seed).integers(0, n_classes, n)
    # Smoothed labels whose rows sum to 1.1, so that the sum_j y_ij factor of the gradient matters.
    return p, 0.8 * np.eye(n_classes)[labels] + 0.1


def test_cross_entropy_matches_euler_integration():
    p, y = _classification()
    n, k = y.shape
    lr = 3.0

    def rhs(s):
        f = s[: n * k].reshape(n, k)
        g = (softmax(f, axis=1) * y.sum(axis=1, keepdims=True) - y) / y.size  # d(-mean(y log softmax f))/df
        return np.concatenate([-(p.K @ g).ravel(), -(p.Kt @ g).ravel()])

    # Fastest rate: lambda_max(K) times the softmax Hessian's bound 1/(2 n).
    rate = np.linalg.eigvalsh(p.K)[-1] / (2 * y.size)
    ts = np.array([0.0, 2.0, 10.0, 40.0]) / (lr * rate)
    ref, err = euler_richardson(rhs, np.concatenate([p.f0.ravel(), p.ft0.ravel()]), lr * ts, 2e-3 / rate)
    f, ft = predict.gradient_descent("cross_entropy", p.K, y, lr)(ts, p.f0, p.ft0, p.Kt)
    got = np.concatenate([f.reshape(len(ts), -1), ft.reshape(len(ts), -1)], axis=1)
    # err: three times the reference's error estimate; the solver's rtol=1e-10 over a few
    # hundred steps adds < 1e-8 of the output scale.
    tol = err + 1e-8 * np.abs(ref).max()
    assert np.all(np.abs(got - ref) <= tol), np.abs(got - ref).max()
    assert err.max() < 1e-4 * np.abs(ref).max()
    # The logits keep growing (no finite minimizer) while the predicted classes match the labels.
    assert (f[-1].argmax(axis=1) == y.argmax(axis=1)).all()

    # A user gradient function gives the same; so does the fixed-step RK4 (CuPy's integrator).
    def user(fx, yy):
        return (softmax(fx, axis=1) * yy.sum(axis=1, keepdims=True) - yy) / yy.size

    fu, ftu = predict.gradient_descent(user, p.K, y, lr)(ts, p.f0, p.ft0, p.Kt)
    np.testing.assert_allclose(fu, f, rtol=0, atol=1e-8 * np.abs(f).max())
    fr, ftr = predict.gradient_descent("cross_entropy", p.K, y, lr, integrator="rk4")(ts, p.f0, p.ft0, p.Kt)
    # RK4 at 0.05 of the fastest rate: ~3e-9 relative per step on a decaying mode.
    np.testing.assert_allclose(fr, f, rtol=0, atol=1e-6 * np.abs(f).max())
    np.testing.assert_allclose(ftr, ft, rtol=0, atol=1e-6 * np.abs(ft).max())


def test_mse_loss_ode_equals_the_closed_form():
    p = problem()
    lr = 0.8
    ts = np.array([0.0, 0.4, 3.0, 25.0]) * p.y.size / (lr * np.linalg.eigvalsh(p.K)[-1])
    f, ft = predict.gradient_descent_mse(p.K, p.y, lr)(ts, p.f0, p.ft0, p.Kt)
    # 'mse' is ||f - y||^2 / (2 y.size): the same flow. Tolerances: solver rtol 1e-10 (adaptive,
    # global error well below 1e-8) and RK4's 1e-7 (see gradient_descent's docstring).
    for integrator, tol in (("scipy", 1e-8), ("rk4", 1e-6)):
        fo, fto = predict.gradient_descent("mse", p.K, p.y, lr, integrator=integrator)(ts, p.f0, p.ft0, p.Kt)
        np.testing.assert_allclose(fo, f, rtol=0, atol=tol * np.abs(f).max())
        np.testing.assert_allclose(fto, ft, rtol=0, atol=tol * np.abs(ft).max())
    # Times in any order and repeated: each is answered.
    order = np.array([3, 0, 2, 2])
    fo = predict.gradient_descent("mse", p.K, p.y, lr)(ts[order], p.f0)
    np.testing.assert_allclose(fo, f[order], rtol=0, atol=1e-8 * np.abs(f).max())


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_momentum_matches_euler_integration(loss):
    p, y = _classification()
    if loss == "mse":
        y = p.y
    n, k = y.shape
    lr, mom = 2.0, 0.8
    damping = (mom - 1) / math.sqrt(lr)  # Neural Tangents' continuous-time heavy ball

    def grad(f):
        if loss == "mse":
            return (f - y) / y.size
        return (softmax(f, axis=1) * y.sum(axis=1, keepdims=True) - y) / y.size

    sizes = [n * k, p.ft0.size]

    def rhs(s):
        f, ft, q, qt = np.split(s, np.cumsum([sizes[0], sizes[1], sizes[0]]))
        g = grad(f.reshape(n, k))
        return np.concatenate([q, qt, -(p.K @ g).ravel() + damping * q, -(p.Kt @ g).ravel() + damping * qt])

    curv = 1.0 if loss == "mse" else 0.5
    rate = abs(damping) + math.sqrt(np.linalg.eigvalsh(p.K)[-1] * curv / y.size)
    ts = np.array([0.0, 3.0, 15.0]) / (math.sqrt(lr) * rate)
    s0 = np.concatenate([p.f0.ravel(), p.ft0.ravel(), np.zeros(sum(sizes))])
    ref, err = euler_richardson(rhs, s0, math.sqrt(lr) * ts, 1e-3 / rate)
    fn = predict.gradient_descent(loss, p.K, y, lr, momentum=mom)
    f, ft = fn(ts, p.f0, p.ft0, p.Kt)
    got = np.concatenate([f.reshape(len(ts), -1), ft.reshape(len(ts), -1)], axis=1)
    ref = ref[:, : got.shape[1]]
    err = err[:, : got.shape[1]]
    tol = err + 1e-8 * np.abs(ref).max()  # as in test_cross_entropy_matches_euler_integration
    assert np.all(np.abs(got - ref) <= tol), np.abs(got - ref).max()
    assert err.max() < 1e-4 * np.abs(ref).max()
    # momentum() is the same function; resuming from an ODEState continues the trajectory.
    np.testing.assert_array_equal(predict.momentum(loss, p.K, y, lr, mom)(ts, p.f0, p.ft0, p.Kt)[0], f)
    half = fn(ts[1], predict.ODEState(p.f0, p.ft0), None, p.Kt)
    assert isinstance(half, predict.ODEState) and half.qx_train.shape == y.shape
    rest = fn(ts[2] - ts[1], half, None, p.Kt)
    np.testing.assert_allclose(rest.fx_train, f[2], rtol=0, atol=1e-8 * np.abs(f).max())
    np.testing.assert_allclose(rest.fx_test, ft[2], rtol=0, atol=1e-8 * np.abs(ft).max())


# ---------------------------------------------------------------------------------------
# Learning rates


def test_max_learning_rate():
    p = problem()
    lam = np.linalg.eigvalsh(p.K)[-1]
    assert predict.max_learning_rate(p.K) == pytest.approx(2 * len(p.K) / (lam + 1e-12), rel=1e-13)
    assert predict.max_learning_rate(p.K, p.y.size, momentum=0.5) == pytest.approx(
        2 * 1.5 * p.y.size / (lam + 1e-12), rel=1e-13
    )


def test_discrete_learning_rate_above_the_maximum_warns():
    p = problem()
    lr_max = predict.max_learning_rate(p.K, p.y.size)
    predict.gradient_descent_mse(p.K, p.y, 0.99 * lr_max, discrete=True)  # no warning (warnings are errors)
    with pytest.warns(predict.LearningRateWarning, match=f"stable maximum .* = {lr_max:.6g}"):
        fn = predict.gradient_descent_mse(p.K, p.y, 1.01 * lr_max, discrete=True)
    # And indeed the top mode grows: the residual after many steps is larger than at the start.
    f = fn(np.array([0, 2000]), p.f0)
    assert np.abs(f[1] - p.y).max() > np.abs(f[0] - p.y).max()
    # The flow has no such limit.
    predict.gradient_descent_mse(p.K, p.y, 100 * lr_max)


# ---------------------------------------------------------------------------------------
# Bad input: a clear exception before any work


def _bad_calls():
    p = problem()
    K, Kt, y = p.K, p.Kt, p.y
    asym = K.copy()
    asym[0, 1] += 1e-3 * np.abs(K).max()
    nan_k = K.copy()
    nan_k[2, 2] = np.nan
    gd = predict.gradient_descent_mse(K, y)
    gdl = predict.gradient_descent("mse", K, y)
    return [
        ("not square", lambda: predict.gradient_descent_mse(K[:, :-1], y), ValueError, "square"),
        ("not symmetric", lambda: predict.kernel_regression(asym, y), ValueError, "symmetric"),
        ("NaN kernel", lambda: predict.gradient_descent_mse(nan_k, y), ValueError, r"non-finite.*\(2, 2\)"),
        (
            "inf test kernel",
            lambda: gd(1.0, 0.0, 0.0, Kt * np.inf),
            ValueError,
            "k_test_train has a non-finite",
        ),
        (
            "y rows",
            lambda: predict.gradient_descent_mse(K, y[:-1]),
            ValueError,
            r"y_train has shape \(11, 2\)",
        ),
        ("y 3-D", lambda: predict.kernel_regression(K, y[:, :, None]), ValueError, r"\(N,\) or \(N, n_out\)"),
        ("fx_train_0", lambda: gd(1.0, np.zeros((12, 3))), ValueError, r"fx_train_0 has shape \(12, 3\)"),
        (
            "fx_test_0",
            lambda: gd(1.0, 0.0, np.zeros((4, 2)), Kt),
            ValueError,
            r"fx_test_0 has shape \(4, 2\)",
        ),
        (
            "k_test_train cols",
            lambda: gd(1.0, 0.0, 0.0, Kt[:, :-1]),
            ValueError,
            r"k_test_train must have shape",
        ),
        ("kr k_test_train", lambda: predict.kernel_regression(K, y, Kt.T), ValueError, "k_test_train"),
        ("negative t", lambda: gd(-1.0, 0.0), ValueError, "t must be >= 0"),
        ("NaN t", lambda: gd(np.array([1.0, np.nan]), 0.0), ValueError, "t must not contain NaN"),
        ("complex t", lambda: gd(1j, 0.0), TypeError, "t must be a real"),
        ("test without kernel", lambda: gd(1.0, 0.0, 0.0), ValueError, "k_test_train"),
        ("nothing", lambda: gd(1.0, None, None), ValueError, "both None"),
        ("trace_axes", lambda: predict.gradient_descent_mse(K, y, trace_axes=()), ValueError, "trace_axes"),
        ("learning rate", lambda: predict.gradient_descent_mse(K, y, 0.0), ValueError, "learning_rate"),
        ("diag_reg", lambda: predict.gradient_descent_mse(K, y, diag_reg=-1.0), ValueError, "diag_reg"),
        ("ridge", lambda: predict.kernel_regression(K, y, ridge=np.nan), ValueError, "ridge"),
        ("string kernel", lambda: predict.kernel_regression(K.astype(str), y), TypeError, "real numeric"),
        (
            "discrete fraction",
            lambda: predict.gradient_descent_mse(K, y, 0.1, discrete=True)(2.5, 0.0),
            ValueError,
            "integers",
        ),
        ("ode t=None", lambda: gdl(None, 0.0), ValueError, "t=None"),
        ("ode t=inf", lambda: gdl(np.inf, 0.0), ValueError, "finite"),
        (
            "loss returns a value",
            lambda: predict.gradient_descent(lambda f, yy: float(np.sum((f - yy) ** 2)), K, y)(1.0, 0.0),
            ValueError,
            "gradient",
        ),
        ("unknown loss", lambda: predict.gradient_descent("hinge", K, y), ValueError, "hinge"),
        (
            "ce on 1-D y",
            lambda: predict.gradient_descent("cross_entropy", K, y[:, 0]),
            ValueError,
            "n_classes",
        ),
        ("momentum", lambda: predict.gradient_descent("mse", K, y, momentum=np.nan), ValueError, "momentum"),
        (
            "rk4 user loss",
            lambda: predict.gradient_descent(lambda f, yy: f - yy, K, y, integrator="rk4"),
            ValueError,
            "step_size",
        ),
        (
            "state with momentum vars",
            lambda: gdl(1.0, predict.ODEState(0.0, None, 0.0, None)),
            ValueError,
            "momentum is None",
        ),
        (
            "ensemble kernel_fn",
            lambda: predict.gradient_descent_mse_ensemble(3, p.x, y),
            TypeError,
            "kernel_fn",
        ),
        (
            "ensemble y rows",
            lambda: predict.gradient_descent_mse_ensemble(p.net, p.x, y[:-1])(1.0),
            ValueError,
            r"shape \(11, 2\)",
        ),
        (
            "ensemble get",
            lambda: predict.gradient_descent_mse_ensemble(p.net, p.x, y)(1.0, get="x"),
            ValueError,
            "get",
        ),
        (
            "gp ntk cov from arrays",
            lambda: predict.gp_inference(p.k, y)("ntk", Kt, p.ktt.nngp),
            ValueError,
            "both test-train kernels",
        ),
        (
            "gp k_test_test shape",
            lambda: predict.gp_inference(p.k, y)("nngp", p.kt, p.ktt.nngp[:-1]),
            ValueError,
            "k_test_test",
        ),
        ("max lr size", lambda: predict.max_learning_rate(K, 0), ValueError, "y_train_size"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())), ids=[c[0] for c in _bad_calls()])
def test_bad_input_raises_clearly(index):
    _, call, exc, match = _bad_calls()[index]
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------
# CuPy


def _cupy():
    cp = pytest.importorskip("cupy")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no driver, no device: CuPy raises its own runtime errors
        count = 0
    if count == 0:
        pytest.skip("no GPU")
    return cp


def test_cupy_inputs_give_cupy_results_equal_to_numpy():
    cp = _cupy()
    p = problem()
    K, Kt, y = cp.asarray(p.K), cp.asarray(p.Kt), cp.asarray(p.y)
    ts = np.array([0.0, 1.0, 10.0])
    pairs = [
        (predict.kernel_regression(K, y, Kt), predict.kernel_regression(p.K, p.y, p.Kt)),
        (
            predict.gradient_descent_mse(K, y)(ts, cp.asarray(p.f0), cp.asarray(p.ft0), Kt)[1],
            predict.gradient_descent_mse(p.K, p.y)(ts, p.f0, p.ft0, p.Kt)[1],
        ),
        (
            predict.gradient_descent("mse", K, y)(ts, cp.asarray(p.f0)),
            predict.gradient_descent_mse(p.K, p.y)(ts, p.f0),
        ),
        (
            predict.gp_inference(cp.asarray(p.k.nngp), y)("nngp", Kt, cp.asarray(p.ktt.nngp)).covariance,
            predict.gp_inference(p.k.nngp, p.y)("nngp", p.Kt, p.ktt.nngp).covariance,
        ),
    ]
    for got, ref in pairs:
        assert isinstance(got, cp.ndarray)
        # Different LAPACKs (cuSOLVER vs OpenBLAS): round-off of the solves, cond(K) N eps;
        # the RK4 case: its 1e-7 (gradient_descent's docstring).
        np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    assert predict.max_learning_rate(K) == pytest.approx(predict.max_learning_rate(p.K), rel=1e-10)
    # Duplicated points: the pseudo-inverse fallback on the device.
    _, _, k, kt = _duplicated()
    with pytest.warns(predict.SingularKernelWarning):
        got = predict.kernel_regression(cp.asarray(k), y, cp.asarray(kt))
    with pytest.warns(predict.SingularKernelWarning):
        ref = predict.kernel_regression(k, p.y, kt)
    np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=0, atol=1e-8 * np.abs(ref).max())
