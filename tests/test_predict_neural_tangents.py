"""fastntk.predict against neural_tangents.predict 0.6.5 (optional: runs where Neural Tangents
and JAX are installed, e.g. the separate environment DESIGN.md section 2 describes; skipped
otherwise).

Both sides get the same kernels (fastntk's), so the comparison isolates the predict
conventions: time scaling, the 1/y_train.size normalization, diag_reg, momentum, the
ensemble and posterior formulas, the output shapes.

Tolerances: the closed forms agree to the solves' round-off, ~cond(K) N eps of the output
scale (both use float64 LAPACK); the ODE comparisons are limited by Neural Tangents' odeint
(rtol = atol = 1.4e-8, global error ~1e-7), so they use 1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastntk as nt
from fastntk import predict

nt_predict = pytest.importorskip("neural_tangents").predict
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n, m, d, n_out = 14, 6, 3, 3
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    net = nt.serial(nt.Dense(1, W_std=1.4, b_std=0.2), nt.Relu(), nt.Dense(n_out, W_std=1.4, b_std=0.2))
    return dict(
        net=net,
        x=x,
        xt=xt,
        k=net.kernel(x),
        kt=net.kernel(xt, x),
        ktt=net.kernel(xt),
        y=rng.standard_normal((n, n_out)),
        f0=0.3 * rng.standard_normal((n, n_out)),
        ft0=0.3 * rng.standard_normal((m, n_out)),
    )


def close(ours, theirs, tol):
    theirs = np.asarray(theirs)
    assert np.shape(ours) == theirs.shape, (np.shape(ours), theirs.shape)
    scale = max(np.abs(theirs).max(), 1e-300)
    assert np.abs(np.asarray(ours) - theirs).max() <= tol * scale, (
        np.abs(np.asarray(ours) - theirs).max() / scale
    )


@pytest.mark.parametrize("diag_reg, absolute", [(0.0, False), (0.02, False), (0.05, True)])
def test_gradient_descent_mse(data, diag_reg, absolute):
    K, Kt = data["k"].ntk, data["kt"].ntk
    lr = 1.7
    ts = np.array([[0.0, 0.3], [2.0, 11.0]])
    ours = predict.gradient_descent_mse(K, data["y"], lr, diag_reg, absolute)
    theirs = nt_predict.gradient_descent_mse(K, data["y"], lr, diag_reg, absolute)
    tol = max(1e-11, np.linalg.cond(K) * len(K) * EPS)
    for t in (ts, 5.0, None):
        for a, b in zip(ours(t, data["f0"], data["ft0"], Kt), theirs(t, data["f0"], data["ft0"], Kt)):
            close(a, b, tol)
    close(ours(3.0, None, data["ft0"], Kt), theirs(3.0, None, data["ft0"], Kt), tol)


@pytest.mark.parametrize("momentum", [None, 0.7])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gradient_descent(data, loss, momentum):
    K, Kt = data["k"].ntk, data["kt"].ntk
    y = data["y"] if loss == "mse" else np.eye(3)[np.arange(len(K)) % 3]
    if loss == "mse":

        def their_loss(fx, yy):
            return 0.5 * jnp.mean((fx - yy) ** 2)
    else:

        def their_loss(fx, yy):
            return -jnp.mean(jax.nn.log_softmax(fx) * yy)

    lr = 2.0
    ts = np.array([0.5, 3.0, 20.0])
    a = predict.gradient_descent(loss, K, y, lr, momentum)(ts, data["f0"], data["ft0"], Kt)
    b = nt_predict.gradient_descent(their_loss, K, y, lr, momentum)(ts, data["f0"], data["ft0"], Kt)
    for ours, theirs in zip(a, b):
        close(ours, theirs, 1e-6)


def test_gp_inference(data):
    get = ("nngp", "ntk", "ntkgp")
    ours = predict.gp_inference(data["k"], data["y"], 1e-3)(get, data["kt"], data["ktt"])
    theirs = nt_predict.gp_inference(data["k"], data["y"], 1e-3)(get, data["kt"], data["ktt"])
    tol = max(1e-11, np.linalg.cond(data["k"].nngp) * len(data["y"]) * EPS)
    for g in get:
        close(getattr(ours, g).mean, getattr(theirs, g).mean, tol)
        close(getattr(ours, g).covariance, getattr(theirs, g).covariance, tol)


@pytest.mark.parametrize("diag_reg", [0.0, 0.01])
def test_gradient_descent_mse_ensemble(data, diag_reg):
    kernel_fn = data["net"].kernel
    ours = predict.gradient_descent_mse_ensemble(kernel_fn, data["x"], data["y"], 0.8, diag_reg)
    theirs = nt_predict.gradient_descent_mse_ensemble(kernel_fn, data["x"], data["y"], 0.8, diag_reg)
    tol = max(1e-11, np.linalg.cond(data["k"].nngp) * len(data["y"]) * EPS)
    for t in (np.array([0.5, 4.0, 30.0]), None):
        for x_test in (None, data["xt"]):
            a = ours(t, x_test, ("nngp", "ntk"), True)
            b = theirs(t, x_test, ("nngp", "ntk"), True)
            for g in ("nngp", "ntk"):
                close(getattr(a, g).mean, getattr(b, g).mean, tol)
                close(getattr(a, g).covariance, getattr(b, g).covariance, tol)


def test_max_learning_rate(data):
    K = data["k"].ntk
    for size, momentum in ((None, 0.0), (K.shape[0] * 3, 0.9)):
        ours = predict.max_learning_rate(K, size, momentum)
        with warnings.catch_warnings():
            # Neural Tangents 0.6.5 calls scipy.linalg.eigh(eigvals=...), deprecated in SciPy 1.12.
            warnings.simplefilter("ignore", DeprecationWarning)
            theirs = float(nt_predict.max_learning_rate(K, size, momentum))
        assert ours == pytest.approx(theirs, rel=1e-12)
