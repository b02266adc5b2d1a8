"""The point of the library: a wide network trained with fastntk.train_mse follows
fastntk.predict.gradient_descent_mse with the analytic NTK (same learning rate, same steps or
times), and its linearization follows it exactly with its own empirical NTK.

Setting (the one of tests/test_predict.py's real-network test, whose plain-NumPy MLP draws
the same networks as ``net.init`` from the same seed): NTK-parameterized one-hidden-layer erf
networks, d = 4, 20 training and 10 test points, 2 outputs, learning rate half the stable
maximum of the analytic NTK, 300 steps (or the same time of gradient flow).

Tolerances (measured over 16 seeds with this code, 100..115; the tests use seeds 100..103):

- the network against the prediction differs by the finite-width effect, O(1/sqrt(width)):
  the empirical NTK at initialization and its drift both deviate by that order. Measured
  err * sqrt(width) / rms(y) = 0.7 .. 1.8 (steps and flow alike, widths 1024 and 4096);
  the bound takes C_W = 3. A wrong time scale, 1/n or learning-rate convention gives errors
  of order rms(y), 20x the bound at width 4096;
- trend: 1/sqrt(width) predicts err(4096) / err(1024) = 0.5; measured ratios of 4-seed means
  0.48 .. 0.60; an error that stayed at infinite width gives ~1, an O(1/width) one ~0.25: the
  window [0.3, 0.75] separates them;
- the linearized network with one output against the prediction with its empirical NTK at
  initialization: the same linear dynamics, computed two ways (steps of JVPs/VJPs against
  an eigendecomposition): round-off only. Per step both are within ~N eps of the output scale
  and the step map contracts, so after k = 300 steps the difference is below
  k * N * eps ~ 1e-12 of the scale; LIN_RTOL = 1e-10.
"""

from __future__ import annotations

import math

import numpy as np

import fastntk as nt
from fastntk import predict

W_STD, B_STD = 1.5, 0.1
D, N, M, N_OUT = 4, 20, 10, 2
STEPS = np.array([0, 10, 30, 100, 300])
C_W = 3.0
LIN_RTOL = 1e-10


def _data(n_out=N_OUT):
    rng = np.random.default_rng(1)
    x, xt = rng.standard_normal((N, D)), rng.standard_normal((M, D))
    return x, xt, np.sin(1.3 * x[:, :n_out])


def _net(width, n_out=N_OUT):
    return nt.mlp("erf", 1, W_std=W_STD, b_std=B_STD, width=width, n_out=n_out)


def _rms_error(f, ft, r):
    """Worst over the recorded times of the rms difference over all train and test outputs."""
    diff = np.concatenate([(f - r.fx_train).reshape(len(f), -1), (ft - r.fx_test).reshape(len(f), -1)], 1)
    return float(np.sqrt(np.mean(diff**2, axis=1)).max())


def test_wide_network_follows_the_prediction_steps_and_flow():
    x, xt, y = _data()
    analytic = _net(None)
    k, kt = analytic.kernel(x, get="ntk"), analytic.kernel(xt, x, get="ntk")
    lr = y.size / np.linalg.eigvalsh(k)[-1]  # half the stable maximum 2 n / lambda_max
    rms_y = float(np.sqrt(np.mean(y**2)))
    steps_fn = predict.gradient_descent_mse(k, y, lr, discrete=True)
    flow_fn = predict.gradient_descent_mse(k, y, lr)
    errors = {}
    for width in (1024, 4096):
        net = _net(width)
        per_seed = []
        for seed in range(4):
            params = net.init(100 + seed, D)
            r = nt.train_mse(net, params, x, y, STEPS, learning_rate=lr, x_test=xt, discrete=True)
            f, ft = steps_fn(STEPS, r.fx_train[0], r.fx_test[0], kt)
            per_seed.append(_rms_error(f, ft, r))
        errors[width] = float(np.mean(per_seed))
    print(f"steps: rms error {errors}, ratio {errors[4096] / errors[1024]:.3f}")
    for width, err in errors.items():
        assert err <= C_W * rms_y / math.sqrt(width), (width, err)
    assert 0.3 <= errors[4096] / errors[1024] <= 0.75, errors

    # Gradient flow for the same time (t = steps): the flow's prediction, at the widest network.
    net = _net(4096)
    for seed in range(2):
        params = net.init(100 + seed, D)
        r = nt.train_mse(net, params, x, y, STEPS, learning_rate=lr, x_test=xt)
        f, ft = flow_fn(STEPS, r.fx_train[0], r.fx_test[0], kt)
        err = _rms_error(f, ft, r)
        print(f"flow, seed {seed}: rms error {err:.4g}")
        assert err <= C_W * rms_y / math.sqrt(4096), (seed, err)


def test_linearized_network_follows_the_prediction_with_its_empirical_ntk():
    x, xt, y = _data(n_out=1)
    net = _net(512, n_out=1)
    params = net.init(7, D)
    k_emp = net.empirical_ntk(params, x)  # one output: the scalar kernel predict takes
    kt_emp = net.empirical_ntk(params, xt, x)
    lr = y.size / np.linalg.eigvalsh(k_emp)[-1]
    for discrete in (True, False):
        # The flow integrated with tight tolerances (the closed form has no integration error).
        r = nt.train_mse(
            net, params, x, y, STEPS, learning_rate=lr, x_test=xt, discrete=discrete, linearized=True,
            rtol=1e-11, atol=1e-13,
        )  # fmt: skip
        f, ft = predict.gradient_descent_mse(k_emp, y, lr, discrete=discrete)(
            STEPS, r.fx_train[0], r.fx_test[0], kt_emp
        )
        scale = 1.0 + max(np.abs(f).max(), np.abs(ft).max())
        # The flow adds the integrator's error, 100 rtol (tests/test_training.py) = 1e-9.
        tol = LIN_RTOL if discrete else 1e-9
        assert np.abs(r.fx_train - f).max() <= tol * scale
        assert np.abs(r.fx_test - ft).max() <= tol * scale
        assert r.loss[-1] < 0.05 * r.loss[0]  # it trained
