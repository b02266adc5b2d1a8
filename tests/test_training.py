"""Training finite networks (fastntk.training): derivatives and training loops against
independent references in plain NumPy/SciPy (tests/training_ref.py, through the explicit
Jacobian of tests/empirical_ref.py, which tests/test_empirical.py checks against finite
differences).

- ``vjp`` equals ``J^T g`` and ``jvp`` equals ``J v`` from the explicit Jacobian, for every
  activation and both parameterizations;
- ``train_mse(discrete=True)`` equals gradient descent in parameter space with the explicit
  Jacobian, step by step, for the network and for its linearization; the returned NTK equals
  J J^T at the reference's parameters;
- ``train_mse(discrete=False)``: the linearized network's flow equals its closed form (SciPy's
  matrix exponential), the network's flow equals SciPy's ``solve_ivp`` on the reference
  gradient;
- ``linearize`` evaluates ``f_0 + J_0 (theta - theta_0)``;
- shapes, orders, 1-D targets, and errors.

The wide-network relation with fastntk.predict is in tests/test_training_wide.py.

Tolerances (derived, none tuned):

- RTOL = 1e-12 of the scale, fastntk against the explicit Jacobian: as in
  tests/test_empirical.py, both sides sum at most P ~ 100 products in different orders,
  within gamma_P ~ 1e-14 of the Cauchy-Schwarz scale (Higham 3.1), with a few roundings per
  layer of width <= 6. The scale of ``(J^T g)_p`` is ``sum_i |J_ip| |g_i|``, of ``(J v)_i``
  ``sum_p |J_ip| |v_p|``.
- STEP_RTOL = 1e-12 of the output scale after up to 20 gradient-descent steps: each step
  computes the same gradient to ~1e-15 relative (above); at half the stable learning rate the
  step map contracts the Gauss-Newton part of the error, so the differences add up at most
  about linearly, ~20 * 1e-15, with the curvature of these small O(1) networks adding at most
  a small factor. A wrong sign, scale, 1/n or index is an O(1) error.
- Flows: an error-per-step controlled Runge-Kutta method keeps the global error within a few
  times its rtol when the dynamics contract (the residual decays), measured <= 1.5 rtol here;
  the tests allow 100 rtol (times the output scale). The references are far tighter: the
  matrix exponential is exact to round-off, and solve_ivp runs DOP853 at rtol 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt

from empirical_ref import empirical_ntk_ref, flatten, forward_ref, jacobian_ref, unflatten
from specs import ACTIVATION_SPECS, dense, to_fastntk
from training_ref import flow_ref, full_jacobian, gd_ref, linearized_flow_ref, linearized_gd_ref

RTOL = 1e-12
STEP_RTOL = 1e-12
D_IN = 3
N_TRAIN, N_TEST, N_OUT = 5, 3, 2


def _spec(activation: str, parameterization: str):
    """Dense(6), act, Dense(5, no bias), act, Dense(2): every kind of Dense term, and more
    parameters (78 or so) than training outputs (10), so the linearized flow's kernel is invertible."""
    act = ACTIVATION_SPECS[activation][0]
    return [
        dense(1.3, 0.2, parameterization, 6),
        act,
        dense(1.1, None, parameterization, 5),
        act,
        dense(0.9, 0.3, parameterization, N_OUT),
    ]


def _setup(activation, parameterization, seed):
    spec = _spec(activation, parameterization)
    net = to_fastntk(spec)
    rng = np.random.default_rng(seed)
    params = net.init(seed, D_IN)
    x, xt = rng.standard_normal((N_TRAIN, D_IN)), rng.standard_normal((N_TEST, D_IN))
    y = rng.standard_normal((N_TRAIN, N_OUT))
    return spec, net, params, x, xt, y


def _half_max_lr(spec, params, x, y):
    """Half the stable learning rate of gradient descent at initialization: n / lambda_max(J J^T)."""
    j = full_jacobian(spec, params, x)
    return y.size / np.linalg.eigvalsh(j @ j.T)[-1]


def _random_tree(rng, params):
    return [
        (rng.standard_normal(p[0].shape), None if p[1] is None else rng.standard_normal(p[1].shape))
        if p
        else ()
        for p in params
    ]


def _assert_close(actual, expected, bound, what):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    ratio = float((np.abs(actual - expected) / bound).max())
    assert ratio <= 1.0, f"{what}: worst error is {ratio:.3g} x its tolerance"


ACTIVATIONS = sorted(ACTIVATION_SPECS)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_vjp_and_jvp_match_the_explicit_jacobian(activation, parameterization):
    spec, net, params, x, _, _ = _setup(activation, parameterization, 11)
    rng = np.random.default_rng(5)
    j = full_jacobian(spec, params, x)  # (N m, P)
    g = rng.standard_normal((N_TRAIN, N_OUT))
    f, grads = nt.training.vjp(net, params, x, g)
    np.testing.assert_array_equal(f, net.apply(params, x))
    assert [() if not p else (p[0].shape, None if p[1] is None else p[1].shape) for p in grads] == [
        () if not p else (p[0].shape, None if p[1] is None else p[1].shape) for p in params
    ]
    scale = np.abs(j).T @ np.abs(g).ravel() + 1e-300
    _assert_close(flatten(grads), j.T @ g.ravel(), RTOL * scale, "vjp")

    v = _random_tree(rng, params)
    f2, df = nt.training.jvp(net, params, x, v)
    np.testing.assert_array_equal(f2, f)
    scale = (np.abs(j) @ np.abs(flatten(v))).reshape(df.shape) + 1e-300
    _assert_close(df, (j @ flatten(v)).reshape(df.shape), RTOL * scale, "jvp")


@pytest.mark.parametrize(
    "activation, parameterization",
    [
        ("relu", "ntk"),
        ("relu", "standard"),
        ("erf", "ntk"),
        ("gelu", "standard"),
        ("sin", "ntk"),
        ("abrelu", "ntk"),
    ],
)
def test_gradient_descent_matches_the_reference_loop(activation, parameterization):
    spec, net, params, x, xt, y = _setup(activation, parameterization, 21)
    lr = _half_max_lr(spec, params, x, y)
    steps = [0, 1, 5, 20]
    f_ref, ft_ref, loss_ref, p_ref = gd_ref(spec, params, x, y, xt, lr, steps)
    before = flatten(params).copy()
    r = nt.train_mse(net, params, x, y, steps, learning_rate=lr, x_test=xt, discrete=True, get_ntk=True)
    np.testing.assert_array_equal(flatten(params), before)  # params not modified
    scale = 1.0 + max(np.abs(f_ref).max(), np.abs(ft_ref).max())
    _assert_close(r.fx_train, f_ref, STEP_RTOL * scale, "fx_train")
    _assert_close(r.fx_test, ft_ref, STEP_RTOL * scale, "fx_test")
    _assert_close(r.loss, loss_ref, STEP_RTOL * scale**2, "loss")
    assert r.loss[-1] < r.loss[0]
    _assert_close(flatten(r.params), flatten(p_ref), STEP_RTOL * (1 + np.abs(flatten(p_ref))), "params")
    assert r.n_grad == 20
    # The NTK at the last step: J J^T at the reference's parameters (Cauchy-Schwarz scale).
    k_ref = empirical_ntk_ref(spec, p_ref, x)
    kt_ref = empirical_ntk_ref(spec, p_ref, xt, x)
    d, dt = np.sqrt(np.diag(k_ref)), np.sqrt(np.diag(empirical_ntk_ref(spec, p_ref, xt)))
    _assert_close(r.ntk_train[-1], k_ref, STEP_RTOL * np.outer(d, d), "ntk_train")
    _assert_close(r.ntk_test_train[-1], kt_ref, STEP_RTOL * np.outer(dt, d), "ntk_test_train")
    k0 = empirical_ntk_ref(spec, params, x)
    _assert_close(r.ntk_train[0], k0, STEP_RTOL * np.outer(d, d) * 2, "ntk_train at step 0")
    assert np.abs(r.ntk_train[-1] - r.ntk_train[0]).max() > 1e-6 * np.abs(k0).max()  # the NTK moves


@pytest.mark.parametrize(
    "activation, parameterization",
    [("relu", "ntk"), ("erf", "standard"), ("gelu", "ntk"), ("leaky_relu", "standard")],
)
def test_linearized_gradient_descent_matches_the_reference_loop(activation, parameterization):
    spec, net, params, x, xt, y = _setup(activation, parameterization, 31)
    lr = _half_max_lr(spec, params, x, y)
    steps = [0, 3, 20]
    f_ref, ft_ref, loss_ref, p_ref = linearized_gd_ref(spec, params, x, y, xt, lr, steps)
    r = nt.train_mse(
        net, params, x, y, steps, learning_rate=lr, x_test=xt, discrete=True, linearized=True, get_ntk=True,
        trace_axes=(),
    )  # fmt: skip
    scale = 1.0 + max(np.abs(f_ref).max(), np.abs(ft_ref).max())
    _assert_close(r.fx_train, f_ref, STEP_RTOL * scale, "fx_train")
    _assert_close(r.fx_test, ft_ref, STEP_RTOL * scale, "fx_test")
    _assert_close(r.loss, loss_ref, STEP_RTOL * scale**2, "loss")
    _assert_close(flatten(r.params), flatten(p_ref), STEP_RTOL * (1 + np.abs(flatten(p_ref))), "params")
    # The linearized network's NTK is J_0 J_0^T at every step (full blocks with trace_axes=()).
    k0 = empirical_ntk_ref(spec, params, x, trace=False)
    bound = STEP_RTOL * (1 + np.abs(k0).max())
    for c in range(len(steps)):
        _assert_close(r.ntk_train[c], k0, bound, f"ntk_train[{c}]")
    assert r.ntk_test_train.shape == (len(steps), N_TEST, N_TRAIN, N_OUT, N_OUT)
    # linearize() is the same function: f_0 + J_0 (theta - theta_0) at the trained parameters.
    lin = nt.linearize(net, params)
    _assert_close(lin(r.params, xt), r.fx_test[-1], STEP_RTOL * scale, "linearize")


@pytest.mark.parametrize(
    "activation, parameterization", [("relu", "ntk"), ("erf", "standard"), ("gelu", "ntk")]
)
def test_linearized_flow_matches_the_closed_form(activation, parameterization):
    spec, net, params, x, xt, y = _setup(activation, parameterization, 41)
    lr = _half_max_lr(spec, params, x, y)
    t = np.array([0.0, 0.5, 3.0, 20.0])
    f_ref, ft_ref = linearized_flow_ref(spec, params, x, y, xt, lr * t)
    rtol = 1e-10
    r = nt.train_mse(
        net, params, x, y, t, learning_rate=lr, x_test=xt, linearized=True, rtol=rtol, atol=rtol * 1e-3
    )
    scale = 1.0 + max(np.abs(f_ref).max(), np.abs(ft_ref).max())
    _assert_close(r.fx_train, f_ref, 100 * rtol * scale, "fx_train")
    _assert_close(r.fx_test, ft_ref, 100 * rtol * scale, "fx_test")


@pytest.mark.parametrize("rtol", [1e-9, 1e-5])
@pytest.mark.parametrize(
    "activation, parameterization", [("erf", "ntk"), ("gelu", "standard"), ("sin", "ntk")]
)
def test_flow_matches_scipy_integration_of_the_reference_gradient(activation, parameterization, rtol):
    """Smooth activations: at a Relu kink the gradient jumps and no integrator reaches 1e-12."""
    spec, net, params, x, xt, y = _setup(activation, parameterization, 51)
    lr = _half_max_lr(spec, params, x, y)
    t = np.array([0.0, 1.0, 5.0, 20.0])
    f_ref, ft_ref = flow_ref(spec, params, x, y, xt, lr * t, rtol=1e-12, atol=1e-14)
    r = nt.train_mse(net, params, x, y, t, learning_rate=lr, x_test=xt, rtol=rtol, atol=rtol * 1e-3)
    scale = 1.0 + max(np.abs(f_ref).max(), np.abs(ft_ref).max())
    _assert_close(r.fx_train, f_ref, 100 * rtol * scale, "fx_train")
    _assert_close(r.fx_test, ft_ref, 100 * rtol * scale, "fx_test")
    assert r.n_grad > 0


def test_linearize_evaluates_the_first_order_expansion():
    spec, net, params, x, _, _ = _setup("gelu", "ntk", 61)
    rng = np.random.default_rng(3)
    v = _random_tree(rng, params)
    theta = flatten(params) + 0.3 * flatten(v)
    new = unflatten(theta, params)
    lin = nt.linearize(net, params)
    j = full_jacobian(spec, params, x)
    expected = forward_ref(spec, params, x) + (j @ (theta - flatten(params))).reshape(N_TRAIN, N_OUT)
    scale = (
        1
        + np.abs(forward_ref(spec, params, x))
        + (np.abs(j) @ np.abs(theta - flatten(params))).reshape(N_TRAIN, N_OUT)
    )
    _assert_close(lin(new, x), expected, RTOL * scale, "f_lin")
    _assert_close(lin.apply(params, x), forward_ref(spec, params, x), RTOL * scale, "f_lin at theta_0")
    g = rng.standard_normal((N_TRAIN, N_OUT))
    _assert_close(
        flatten(lin.vjp(x, g)), j.T @ g.ravel(), RTOL * (np.abs(j).T @ np.abs(g).ravel()), "lin.vjp"
    )
    # The network itself differs from its linearization at second order: halving the step
    # quarters the difference (up to the third-order term, a few percent here).
    d1 = np.abs(
        net.apply(unflatten(flatten(params) + 1e-2 * flatten(v), params), x)
        - lin(unflatten(flatten(params) + 1e-2 * flatten(v), params), x)
    ).max()
    d2 = np.abs(
        net.apply(unflatten(flatten(params) + 5e-3 * flatten(v), params), x)
        - lin(unflatten(flatten(params) + 5e-3 * flatten(v), params), x)
    ).max()
    assert 0.2 <= d2 / d1 <= 0.3, (d1, d2)


def test_times_in_any_order_and_shape_and_one_dimensional_targets():
    spec = [dense(1.2, 0.1, "ntk", 7), ACTIVATION_SPECS["erf"][0], dense(1.0, 0.1, "ntk", 1)]
    net = to_fastntk(spec)
    rng = np.random.default_rng(7)
    params = net.init(1, D_IN)
    x, xt, y = rng.standard_normal((4, D_IN)), rng.standard_normal((2, D_IN)), rng.standard_normal(4)
    sorted_run = nt.train_mse(
        net, params, x, y[:, None], [0, 2, 3, 6], learning_rate=0.5, x_test=xt, discrete=True
    )
    t = np.array([[6, 0], [3, 3], [2, 6]])
    r = nt.train_mse(net, params, x, y, t, learning_rate=0.5, x_test=xt, discrete=True, get_ntk=True)
    where = {0: 0, 2: 1, 3: 2, 6: 3}
    idx = np.vectorize(where.get)(t)
    assert r.fx_train.shape == (3, 2, 4) and r.fx_test.shape == (3, 2, 2) and r.loss.shape == (3, 2)
    assert r.ntk_train.shape == (3, 2, 4, 4) and r.ntk_test_train.shape == (3, 2, 2, 4)
    np.testing.assert_array_equal(r.t, t)
    np.testing.assert_array_equal(r.fx_train, sorted_run.fx_train[idx][..., 0])
    np.testing.assert_array_equal(r.fx_test, sorted_run.fx_test[idx][..., 0])
    np.testing.assert_array_equal(r.loss, sorted_run.loss[idx])
    assert r.n_grad == 6
    # A scalar time: no time axis.
    one = nt.train_mse(net, params, x, y[:, None], 3, learning_rate=0.5, discrete=True)
    assert (
        one.fx_train.shape == (4, 1)
        and one.loss.shape == ()
        and one.fx_test is None
        and one.ntk_train is None
    )
    np.testing.assert_array_equal(one.fx_train, sorted_run.fx_train[2])
    # Loss: ||f - y||^2 / (2 y.size), from the reference forward pass.
    f3 = forward_ref(spec, one.params, x)
    assert abs(float(one.loss) - 0.5 * np.sum((f3 - y[:, None]) ** 2) / y.size) <= 1e-14


def test_gradient_descent_with_too_large_a_learning_rate_raises():
    spec, net, params, x, _, y = _setup("erf", "ntk", 71)
    lr = 50 * _half_max_lr(spec, params, x, y)
    with pytest.raises(FloatingPointError, match="diverged.*learning_rate"):
        nt.train_mse(net, params, x, y, 100000, learning_rate=lr, discrete=True)


def _bad_calls():
    spec = _spec("relu", "ntk")
    net = to_fastntk(spec)
    params = net.init(0, D_IN)
    x = np.ones((4, D_IN))
    y = np.zeros((4, N_OUT))
    tangent = [
        (np.zeros_like(p[0]), None if p[1] is None else np.zeros_like(p[1])) if p else () for p in params
    ]
    bad_tangent = list(tangent)
    bad_tangent[0] = (np.zeros((D_IN + 1, 6)), tangent[0][1])
    T = nt.train_mse
    return [
        (
            lambda: T(net, params, x, y, 1, learning_rate=0.0),
            ValueError,
            "learning_rate must be > 0",
        ),
        (lambda: T(net, params, x, y, 1.5, discrete=True), ValueError, "t counts gradient-descent steps"),
        (lambda: T(net, params, x, y, -1.0), ValueError, "t must be >= 0"),
        (lambda: T(net, params, x, y, np.inf), ValueError, "t must be finite"),
        (lambda: T(net, params, x, y[:, :1], 1), ValueError, r"y_train must have shape \(4, 2\)"),
        (lambda: T(net, params, x, y[:3], 1), ValueError, r"y_train must have shape \(4, 2\)"),
        (lambda: T(net, params, x, y.astype(complex), 1), TypeError, "y_train must be a real"),
        (lambda: T(net, params, x, y, 1, x_test=np.ones((2, D_IN + 1))), ValueError, "x_test has 4 features"),
        (lambda: T(net, params, x, y, 1, method="BDF"), ValueError, "method must be one of"),
        (lambda: T(net, params, x, y, 1, rtol=0.0), ValueError, "rtol must be > 0"),
        (lambda: T(net, params, x, y, 1, discrete=1), TypeError, "discrete must be True or False"),
        (lambda: T(net, params, x, y, 1, get_ntk=True, trace_axes=(0,)), ValueError, "trace_axes must be"),
        (lambda: T(net, params[:-1], x, y, 1), ValueError, "params must be a list with one entry per layer"),
        (lambda: T(net, params, x[:0], y[:0], 1), ValueError, "x_train must have at least one point"),
        (lambda: T(nt.serial(nt.Identity()), [()], x, x, 1), ValueError, "net has no Dense layer"),
        (
            lambda: nt.training.jvp(net, params, x, tangent[:-1]),
            ValueError,
            "tangent must have the structure",
        ),
        (
            lambda: nt.training.jvp(net, params, x, bad_tangent),
            ValueError,
            r"tangent\[0\]: W must have shape",
        ),
        (
            lambda: nt.training.vjp(net, params, x, np.ones((4, 3))),
            ValueError,
            r"cotangent must have shape \(4, 2\)",
        ),
        (lambda: nt.linearize(net, params)(params, np.ones((4, 2))), ValueError, "x has 2 features"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_arguments_raise_clearly(index):
    call, kind, match = _bad_calls()[index]
    with pytest.raises(kind, match=match):
        call()


def test_reference_jacobian_rows_are_point_major():
    """full_jacobian's row order (point i, output o) -> i * n_out + o, which the other tests rely on."""
    spec, _, params, x, _, _ = _setup("erf", "ntk", 81)
    j = full_jacobian(spec, params, x)
    np.testing.assert_array_equal(j[1 * N_OUT + 1], jacobian_ref(spec, params, x, 1)[1])
