"""Training finite networks on a GPU (fastntk.training with CuPy parameters and inputs): every
result against the CPU path on the same inputs (the CPU path is itself checked against the
NumPy references of test_training.py). The same code on the emulator, without a GPU, is in
test_cuda_training_emulated.py.

Skips without CuPy or without a usable CUDA device (the reason is printed with -rs). The
training itself needs only CuPy (its GEMMs are cuBLAS through CuPy); ``get_ntk`` uses the
empirical NTK's GPU path and fastntk's CUDA build.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt
from fastntk.training import jvp, linearize, train_mse, vjp

cp = pytest.importorskip("cupy", reason="the CUDA training tests need CuPy")
try:
    _N_DEVICES = cp.cuda.runtime.getDeviceCount()
except Exception as exc:  # noqa: BLE001 - CuPy without a driver raises its own CUDARuntimeError
    pytest.skip(f"CuPy finds no usable CUDA device: {exc}", allow_module_level=True)
if _N_DEVICES == 0:
    pytest.skip("CuPy finds no CUDA device", allow_module_level=True)

# float64 GPU vs CPU: the same operations in the same order; only the GEMMs (cuBLAS vs
# OpenBLAS, different summation orders) and the device's libm differ: a few ulps per op.
F64 = 1e-12


def _net(act):
    make = {"relu": nt.Relu, "erf": nt.Erf, "gelu": nt.Gelu, "sin": nt.Sin}[act]
    return nt.serial(
        nt.Dense(64, W_std=1.3, b_std=0.2), make(),
        nt.Dense(32, W_std=1.2, b_std=None, parameterization="standard"), make(),
        nt.Dense(2, W_std=1.1, b_std=0.3),
    )  # fmt: skip


def _dev(tree):
    return [() if not p else (cp.asarray(p[0]), None if p[1] is None else cp.asarray(p[1])) for p in tree]


def _close(got, want, rel=F64):
    assert isinstance(got, cp.ndarray), type(got)
    got = got.get()
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * max(np.max(np.abs(want)), 1e-300))


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin"])
@pytest.mark.parametrize("linearized", [False, True])
def test_train_mse_steps_match_the_cpu(act, linearized, rng):
    net = _net(act)
    params = net.init(0, 5)
    x, y, xt = rng.standard_normal((40, 5)), rng.standard_normal((40, 2)), rng.standard_normal((11, 5))
    t = np.array([0, 5, 20])
    want = train_mse(net, params, x, y, t, learning_rate=0.5, x_test=xt, discrete=True, linearized=linearized)
    got = train_mse(net, _dev(params), cp.asarray(x), cp.asarray(y), t, learning_rate=0.5, x_test=cp.asarray(xt),
                    discrete=True, linearized=linearized)  # fmt: skip
    _close(got.fx_train, want.fx_train)
    _close(got.fx_test, want.fx_test)
    np.testing.assert_allclose(got.loss, want.loss, rtol=F64)
    for pg, pw in zip(got.params, want.params):
        for a, b in zip(pg, pw):
            if b is not None:
                _close(a, b)


@pytest.mark.parametrize("linearized", [False, True])
def test_train_mse_flow_matches_the_cpu(linearized, rng):
    """The flow with its state on the host: a smooth activation, so that the adaptive steps
    (decided from the same numbers to round-off) are the same on both."""
    net = _net("erf")
    params = net.init(1, 5)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 2))
    t = np.array([0.0, 0.3, 1.0])
    want = train_mse(net, params, x, y, t, linearized=linearized)
    got = train_mse(net, _dev(params), cp.asarray(x), cp.asarray(y), t, linearized=linearized)
    assert got.n_grad == want.n_grad
    _close(got.fx_train, want.fx_train, 1e-10)
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-10)


@pytest.mark.skipif(not nt.has_cuda(), reason="get_ntk on CuPy arrays needs fastntk's CUDA build")
def test_train_mse_get_ntk(rng):
    net = _net("relu")
    params = net.init(2, 5)
    x, y, xt = rng.standard_normal((20, 5)), rng.standard_normal((20, 2)), rng.standard_normal((7, 5))
    kw = dict(learning_rate=0.5, discrete=True, get_ntk=True)
    want = train_mse(net, params, x, y, [0, 3], x_test=xt, **kw)
    got = train_mse(net, _dev(params), cp.asarray(x), cp.asarray(y), [0, 3], x_test=cp.asarray(xt), **kw)
    _close(got.ntk_train, want.ntk_train)
    _close(got.ntk_test_train, want.ntk_test_train)


def test_jvp_vjp_linearize_match_the_cpu(rng):
    net = _net("gelu")
    params = net.init(3, 5)
    x, g = rng.standard_normal((25, 5)), rng.standard_normal((25, 2))
    tangent = [() if not p else (rng.standard_normal(p[0].shape), None if p[1] is None else
                                 rng.standard_normal(p[1].shape)) for p in params]  # fmt: skip
    f, df = jvp(net, _dev(params), cp.asarray(x), _dev(tangent))
    f_w, df_w = jvp(net, params, x, tangent)
    _close(f, f_w)
    _close(df, df_w)
    _, grads = vjp(net, _dev(params), cp.asarray(x), cp.asarray(g))
    _, grads_w = vjp(net, params, x, g)
    for pg, pw in zip(grads, grads_w):
        for a, b in zip(pg, pw):
            if b is not None:
                _close(a, b)
    theta = [() if not p else (p[0] + 0.1 * d[0], None if p[1] is None else p[1] + 0.1 * d[1])
             for p, d in zip(params, tangent)]  # fmt: skip
    _close(linearize(net, _dev(params))(_dev(theta), cp.asarray(x)), linearize(net, params)(theta, x))


def test_mixed_and_cross_device_errors(rng):
    net = _net("relu")
    params = net.init(0, 5)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 2))
    with pytest.raises(TypeError, match=r"x_train is not a CuPy array but y_train is"):
        train_mse(net, _dev(params), x, cp.asarray(y), 1.0)
    with pytest.raises(TypeError, match=r"params\[0\]: W is not a CuPy array but x_train is"):
        train_mse(net, params, cp.asarray(x), cp.asarray(y), 1.0)
    if _N_DEVICES < 2:
        pytest.skip("a second CUDA device is needed for the cross-device check")
    with cp.cuda.Device(1):
        x1 = cp.asarray(x)
    with pytest.raises(ValueError, match="y_train is on CUDA device 0 but x_train on device 1"):
        train_mse(net, _dev(params), x1, cp.asarray(y), 1.0)


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin"])
def test_apply_matches_the_cpu(act, rng):
    net = _net(act)
    params = net.init(4, 5)
    x = rng.standard_normal((33, 5))
    _close(net.apply(_dev(params), cp.asarray(x)), net.apply(params, x))
