"""Training finite networks on CuPy arrays (fastntk.training's CuPy path) run without a GPU,
on the emulator of test_cuda_emulated.py: CuPy replaced by NumPy arrays dressed as CuPy ones.

The CuPy path is array code written against the namespace (``a @ b`` for the GEMMs, the
activations through fastntk._cuda_empirical); on the emulator it runs that code with NumPy
underneath, so the results must match the CPU path (fastntk's BLAS, checked against plain
NumPy references in test_training.py) to round-off, come back as (emulated) CuPy arrays, and
never touch fastntk's CPU BLAS. The GPU itself is in test_cuda.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cuda_emulated import FakeArray, emulated  # noqa: F401  (the fixture)

import fastntk as nt
from fastntk import _arrays, _engine
from fastntk.training import jvp, linearize, train_mse, vjp

REL = 1e-12


@pytest.fixture
def fake(emulated, monkeypatch):  # noqa: F811
    """The emulated CuPy, with fastntk's CPU GEMM made to fail: the CuPy path must not use it."""
    cp, _ = emulated
    cp.concatenate = lambda arrays: np.concatenate(arrays).view(FakeArray)
    cp.zeros = lambda shape, dtype=np.float64: np.zeros(shape, dtype=dtype).view(FakeArray)

    def cpu_matmul(*args, **kwargs):
        raise AssertionError("the CuPy path called fastntk's CPU matmul")

    monkeypatch.setattr(_engine, "matmul", cpu_matmul)
    return cp


def _net(act):
    make = {"relu": nt.Relu, "erf": nt.Erf, "gelu": nt.Gelu, "sin": nt.Sin}[act]
    return nt.serial(
        nt.Dense(12, W_std=1.3, b_std=0.2), make(),
        nt.Dense(12, W_std=1.2, b_std=0.1), make(),
        nt.Dense(2, W_std=1.1, b_std=0.3),
    )  # fmt: skip


def _dev(a):
    return np.array(a, dtype=float).view(FakeArray)


def _tree(params, to):
    return [() if not p else (to(p[0]), None if p[1] is None else to(p[1])) for p in params]


def _host(a):
    return np.array(a).view(np.ndarray)


def _close(got, want, rel=REL):
    assert _arrays.is_cupy(got), type(got)
    got, want = _host(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * max(np.max(np.abs(want)), 1e-300))


@pytest.fixture
def problem(rng):
    x = rng.standard_normal((9, 3))
    y = rng.standard_normal((9, 2))
    xt = rng.standard_normal((4, 3))
    return x, y, xt


def _cpu(net, params, x, y, xt, **kw):
    """The CPU path's result, computed before the CPU GEMM is disabled."""
    return train_mse(net, params, x, y, **kw, x_test=xt)


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin"])
@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("linearized", [False, True])
def test_train_mse_on_device_arrays(emulated, monkeypatch, act, discrete, linearized, problem):  # noqa: F811
    x, y, xt = problem
    net = _net(act)
    params = net.init(0, 3)
    t = np.array([[0, 3], [7, 3]]) if discrete else np.array([0.0, 0.4, 1.1])
    kw = dict(t=t, learning_rate=0.5, discrete=discrete, linearized=linearized, get_ntk=True)
    want = _cpu(net, params, x, y, xt, **kw)
    cp, _ = emulated
    cp.concatenate = lambda arrays: np.concatenate(arrays).view(FakeArray)
    cp.zeros = lambda shape, dtype=np.float64: np.zeros(shape, dtype=dtype).view(FakeArray)
    monkeypatch.setattr(_engine, "matmul", lambda *a, **k: pytest.fail("the CuPy path used the CPU matmul"))
    got = train_mse(net, _tree(params, _dev), _dev(x), _dev(y), x_test=_dev(xt), **kw)
    for name in ("fx_train", "fx_test", "ntk_train", "ntk_test_train"):
        _close(getattr(got, name), getattr(want, name))
    # loss and t: NumPy, on the host
    assert isinstance(got.loss, np.ndarray) and not _arrays.is_cupy(got.loss)
    np.testing.assert_allclose(got.loss, want.loss, rtol=REL)
    np.testing.assert_array_equal(got.t, want.t)
    assert got.n_grad == want.n_grad
    for pg, pw in zip(got.params, want.params):
        for a, b in zip(pg, pw):
            _close(a, b)


def test_one_dimensional_targets_and_integer_inputs(fake, rng):
    net = nt.serial(nt.Dense(8), nt.Relu(), nt.Dense(1))
    params = net.init(1, 2)
    x = rng.integers(-3, 4, size=(6, 2))
    y = rng.standard_normal(6)
    got = train_mse(net, _tree(params, _dev), x.view(FakeArray), _dev(y), 5, discrete=True, learning_rate=0.3)
    assert got.fx_train.shape == (6,) and _arrays.is_cupy(got.fx_train)


def test_jvp_vjp_linearize_on_device_arrays(emulated, monkeypatch, rng):  # noqa: F811
    net = _net("erf")
    params = net.init(2, 3)
    x = rng.standard_normal((7, 3))
    tangent = [
        () if not p else (rng.standard_normal(p[0].shape), rng.standard_normal(p[1].shape)) for p in params
    ]
    g = rng.standard_normal((7, 2))
    f_w, df_w = jvp(net, params, x, tangent)
    _, grads_w = vjp(net, params, x, g)
    lin = linearize(net, params)
    theta = [() if not p else (p[0] + 0.1 * d[0], p[1] + 0.1 * d[1]) for p, d in zip(params, tangent)]
    lin_w, lvjp_w = lin(theta, x), lin.vjp(x, g)

    cp, _ = emulated
    monkeypatch.setattr(_engine, "matmul", lambda *a, **k: pytest.fail("the CuPy path used the CPU matmul"))
    dp, dx = _tree(params, _dev), _dev(x)
    f, df = jvp(net, dp, dx, _tree(tangent, _dev))
    _close(f, f_w)
    _close(df, df_w)
    f, grads = vjp(net, dp, dx, _dev(g))
    _close(f, f_w)
    for pg, pw in zip(grads, grads_w):
        for a, b in zip(pg, pw):
            _close(a, b)
    dlin = linearize(net, dp)
    _close(dlin(_tree(theta, _dev), dx), lin_w)
    for pg, pw in zip(dlin.vjp(dx, _dev(g)), lvjp_w):
        for a, b in zip(pg, pw):
            _close(a, b)


class _OtherDevice:
    def __init__(self):
        self.id = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _FakeArrayOnDevice1(FakeArray):
    @property
    def device(self):
        return _OtherDevice()


_FakeArrayOnDevice1.__module__ = "cupy._core.core"


def test_mixed_and_cross_device_inputs_name_the_argument(fake, rng):
    net = nt.serial(nt.Dense(8), nt.Relu(), nt.Dense(1))
    params = net.init(0, 3)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 1))
    dp = _tree(params, _dev)
    with pytest.raises(TypeError, match=r"x_train is not a CuPy array but y_train is"):
        train_mse(net, dp, x, _dev(y), 1.0)
    with pytest.raises(TypeError, match=r"y_train is not a CuPy array but x_train is"):
        train_mse(net, dp, _dev(x), y, 1.0)
    with pytest.raises(TypeError, match=r"x_test is not a CuPy array"):
        train_mse(net, dp, _dev(x), _dev(y), 1.0, x_test=x)
    mixed = [dp[0], (), (params[2][0], dp[2][1])]
    with pytest.raises(TypeError, match=r"params\[2\]: W is not a CuPy array"):
        train_mse(net, mixed, _dev(x), _dev(y), 1.0)
    with pytest.raises(TypeError, match=r"cotangent is not a CuPy array"):
        vjp(net, dp, _dev(x), y)
    with pytest.raises(TypeError, match=r"tangent\[0\]: W is not a CuPy array"):
        jvp(net, dp, _dev(x), params)
    with pytest.raises(TypeError, match=r"x is not a CuPy array but params0\[0\]: W is"):
        linearize(net, dp)(dp, x)
    with pytest.raises(TypeError, match=r"params0\[0\]: W is not a CuPy array but x is"):
        linearize(net, params)(params, _dev(x))
    other = np.array(x).view(_FakeArrayOnDevice1)
    with pytest.raises(ValueError, match=r"x_test is on CUDA device 1 but x_train on device 0"):
        train_mse(net, dp, _dev(x), _dev(y), 1.0, x_test=other)
    with pytest.raises(ValueError, match=r"params\[0\]: W is on CUDA device 1 but x_train on device 0"):
        train_mse(net, [(np.array(params[0][0]).view(_FakeArrayOnDevice1), dp[0][1]), (), dp[2]],
                  _dev(x), _dev(y), 1.0)  # fmt: skip


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin"])
def test_apply_on_device_arrays(fake, act, rng):
    net = _net(act)
    params = net.init(4, 3)
    x = rng.standard_normal((8, 3))
    with pytest.raises(AssertionError):  # the fixture's CPU GEMM fails: this is the CPU path
        net.apply(params, x)
    _close(net.apply(_tree(params, _dev), _dev(x)), _reference(net, params, x))


def _reference(net, params, x):
    """Plain NumPy forward pass (ntk parameterization throughout)."""
    h = x
    for layer, p in zip(net.layers, params):
        if isinstance(layer, nt.Dense):
            h = layer.W_std / np.sqrt(p[0].shape[0]) * (h @ p[0]) + layer.b_std * p[1]
        else:
            h = layer.fn(h)
    return h


def test_apply_non_finite_names_the_layer(fake, rng):
    net = nt.serial(*[nt.Dense(8, W_std=1e80), nt.Relu()] * 6, nt.Dense(1))
    params = net.init(0, 3)
    with pytest.raises(FloatingPointError, match=r"network's output is not finite .* at layer \d"):
        net.apply(_tree(params, _dev), _dev(rng.standard_normal((4, 3))))
    with pytest.raises(TypeError, match=r"x is not a CuPy array but params\[0\]: W is"):
        net.apply(_tree(params, _dev), rng.standard_normal((4, 3)))


def test_get_ntk_on_device_arrays_needs_the_cuda_build(fake, monkeypatch, rng):
    from fastntk import _cuda_backend as gpu

    monkeypatch.setattr(gpu, "_module", None)  # a build without the CUDA backend
    net = nt.serial(nt.Dense(8), nt.Relu(), nt.Dense(1))
    dp = _tree(net.init(0, 3), _dev)
    x, y = _dev(rng.standard_normal((5, 3))), _dev(rng.standard_normal((5, 1)))
    with pytest.raises(
        TypeError, match=r"get_ntk=True with CuPy arrays .* but fastntk was built without CUDA"
    ):
        train_mse(net, dp, x, y, 1.0, get_ntk=True)
    assert _arrays.is_cupy(train_mse(net, dp, x, y, 1.0).fx_train)  # training itself needs CuPy only
