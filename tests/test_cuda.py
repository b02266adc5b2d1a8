"""The CUDA backend on a GPU: every result against the CPU driver on the same inputs (the CPU
driver is itself checked against the NumPy reference in test_ntk_gram.py and friends).

Skips without CuPy or without a usable CUDA device (the reason is printed with -rs); the
dispatch and error paths that need no GPU are in test_cuda_dispatch.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt
from fastntk import _cuda_backend as gpu
from fastntk import _engine

from conftest import assert_kernel_close, cupy_or_skip

cp = cupy_or_skip("the CUDA tests")

from specs import ACTIVATION_SPECS  # noqa: E402

# float64 GPU vs CPU: the same maps in the same order; only the GEMMs (cuBLAS vs OpenBLAS,
# different summation orders) and the device's libm (CUDA's acos & co. are within 2 ulp) differ:
# a few ulps per op over a few layers, far below the 1e-12.
F64 = 1e-12
# float32 storage vs float64: the float32 GEMM (d products summed in float32: about
# sqrt(d) * 2^-24 relative to |x| |y| for random data, d * 2^-24 at worst) feeds a float64 walk;
# the Lipschitz constants of the maps (<= 1 per layer for a normalized ReLU network; acos near
# parallel pairs is the exception, handled by the exact diagonal) keep it there, and the
# outputs round to float32 (2^-24). Documented bound: 1e-4 of the entry scale for d <= 1000.
F32 = 1e-4


def _net(act, parameterization="ntk", depth=2):
    layers = []
    for _ in range(depth):
        layers += [
            nt.Dense(64, W_std=1.3, b_std=0.2, parameterization=parameterization),
            ACTIVATION_SPECS[act][1](),
        ]
    layers.append(nt.Dense(1, W_std=1.1, b_std=0.1, parameterization=parameterization))
    return nt.serial(*layers)


def _scale(k):
    """Entry scale for relative errors: the diagonal's Cauchy-Schwarz bound where available."""
    return np.max(np.abs(k)) * 1e-3


@pytest.fixture
def xs(rng):
    return rng.standard_normal((37, 5)), rng.standard_normal((23, 5))


ACTS = [a for a in ACTIVATION_SPECS if a != "identity"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gpu_matches_cpu(act, parameterization, symmetric, xs):
    net = _net(act, parameterization)
    x1, x2 = xs
    x2 = None if symmetric else x2
    want = net.kernel(x1, x2)
    got = net.kernel(cp.asarray(x1), None if x2 is None else cp.asarray(x2))
    assert isinstance(got.nngp, cp.ndarray) and got.nngp.dtype == cp.float64
    assert got.nngp.device.id == cp.cuda.Device().id
    for name in ("nngp", "ntk"):
        assert_kernel_close(
            getattr(got, name).get(), getattr(want, name), F64, _scale(getattr(want, name)), name
        )
    if symmetric:  # an exactly symmetric matrix, as on the CPU
        assert bool(cp.array_equal(got.ntk, got.ntk.T))


@pytest.mark.parametrize("get", ["nngp", "ntk", ("ntk", "nngp")])
def test_only_the_requested_outputs(get, xs):
    net = _net("relu")
    want = net.kernel(xs[0], xs[1], get=get)
    got = net.kernel(cp.asarray(xs[0]), cp.asarray(xs[1]), get=get)
    if isinstance(get, str):
        assert_kernel_close(got.get(), want, F64)
    else:
        assert got._fields == want._fields
        for g, w in zip(got, want):
            assert_kernel_close(g.get(), w, F64)


@pytest.mark.parametrize("symmetric", [True, False])
def test_every_layer(symmetric, xs):
    net = nt.serial(
        nt.Dense(W_std=1.4, b_std=0.1), nt.Erf(), nt.Identity(), nt.Dense(), nt.Relu(), nt.Dense()
    )
    x1, x2 = xs[0], None if symmetric else xs[1]
    want = net.kernel(x1, x2, every_layer=True)
    got = net.kernel(cp.asarray(x1), None if x2 is None else cp.asarray(x2), every_layer=True)
    assert got.ntk.shape == (len(net.layers), x1.shape[0], x1.shape[0] if symmetric else x2.shape[0])
    for name in ("nngp", "ntk"):
        assert_kernel_close(
            getattr(got, name).get(), getattr(want, name), F64, _scale(getattr(want, name)), name
        )


def test_numpy_in_device_cuda_out_numpy_in_bands(monkeypatch, xs):
    """NumPy in with device='cuda': NumPy out, the bands streamed to the host; bands of 5 rows
    exercise the host mirror and the band offsets."""
    monkeypatch.setattr(gpu, "_band_rows", lambda cp_, n1, n2, per_row: 5)
    net = _net("gelu")
    for x2 in (None, xs[1]):
        want = net.kernel(xs[0], x2)
        got = net.kernel(xs[0], x2, device="cuda")
        assert isinstance(got.ntk, np.ndarray)
        for name in ("nngp", "ntk"):
            assert_kernel_close(getattr(got, name), getattr(want, name), F64)
    # The same through the global default, and every_layer on the host.
    nt.set_default_device("cuda")
    try:
        got = net.kernel(xs[0], every_layer=True)
    finally:
        nt.set_default_device("cpu")
    want = net.kernel(xs[0], every_layer=True)
    assert isinstance(got.nngp, np.ndarray)
    assert_kernel_close(got.nngp, want.nngp, F64)


def test_device_outputs_in_bands(monkeypatch, xs):
    monkeypatch.setattr(gpu, "_band_rows", lambda cp_, n1, n2, per_row: 4)
    net = _net("rect_monomial3")
    for x2 in (None, xs[1]):
        want = net.kernel(xs[0], x2)
        got = net.kernel(cp.asarray(xs[0]), None if x2 is None else cp.asarray(x2))
        assert_kernel_close(got.ntk.get(), want.ntk, F64)


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "rect_monomial2"])
def test_derivatives(act, xs):
    net = _net(act)
    d = xs[0].shape[1]
    prog = _engine.program(net, d)
    seeds = _engine.dense_seeds(prog, [(0, 1.0), (1, 1.0), (2, 1.0)])
    for x2 in (None, xs[1]):
        a2 = None if x2 is None else x2
        want = _engine.gram(prog, xs[0], a2, ("nngp", "ntk"), seeds=seeds)
        got = _engine.gram(prog, cp.asarray(xs[0]), None if x2 is None else cp.asarray(x2), ("nngp", "ntk"),
                           seeds=seeds)  # fmt: skip
        for name in ("nngp", "ntk"):
            assert (
                got[name].shape
                == want[name].shape
                == (1, 4, xs[0].shape[0], xs[0].shape[0] if x2 is None else 23)
            )
            assert_kernel_close(got[name].get(), want[name], F64, _scale(want[name]), name)


def test_derivatives_with_captures(xs):
    net = _net("erf")
    prog = _engine.program(net, 5)
    seeds = _engine.dense_seeds(prog, [(0, 1.0)])
    captures = [0, 2, prog.n_ops - 1]
    want = _engine.gram(prog, xs[0], None, ("ntk",), capture_after=captures, seeds=seeds)["ntk"]
    got = _engine.gram(prog, cp.asarray(xs[0]), None, ("ntk",), capture_after=captures, seeds=seeds)["ntk"]
    assert_kernel_close(got.get(), want, F64, _scale(want))


def test_diagonal(xs):
    net = _net("sin")
    prog = _engine.program(net, 5)
    want = _engine.diagonal(prog, xs[0])
    got = _engine.diagonal(prog, cp.asarray(xs[0]))
    for g, w in zip(got, want):
        assert isinstance(g, cp.ndarray)
        assert_kernel_close(g.get(), w, F64)


@pytest.mark.parametrize("act", ["relu", "erf", "gelu"])
def test_float32_within_the_documented_bound(act, rng):
    net = _net(act, depth=3)
    x = rng.standard_normal((300, 100))
    want = net.kernel(x)
    got = net.kernel(cp.asarray(x, dtype=cp.float32))
    assert got.ntk.dtype == cp.float32
    for name in ("nngp", "ntk"):
        w = getattr(want, name)
        scale = np.sqrt(np.abs(np.diag(w))[:, None] * np.abs(np.diag(w))[None, :])
        assert_kernel_close(getattr(got, name).get().astype(np.float64), w, F32, scale, name)
    host = net.kernel(x.astype(np.float32), device="cuda")
    assert host.ntk.dtype == np.float32
    # mixed float32 / float64 inputs compute in float64
    mixed = net.kernel(cp.asarray(x, dtype=cp.float32), cp.asarray(x[:10]))
    assert mixed.ntk.dtype == cp.float64


def test_non_default_stream(xs):
    """Launches go to CuPy's current stream: computed inside a stream context and read after
    synchronizing that stream alone, the results are complete."""
    net = _net("relu", depth=4)
    want = net.kernel(xs[0])
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        x = cp.asarray(xs[0])
        got = net.kernel(x)
        host = cp.asnumpy(got.ntk, stream=stream)
    stream.synchronize()
    assert_kernel_close(host, want.ntk, F64)


def test_other_devices(xs):
    n = cp.cuda.runtime.getDeviceCount()
    net = _net("erf")
    want = net.kernel(xs[0], xs[1])
    for dev in range(n):
        with cp.cuda.Device(dev):
            a, b = cp.asarray(xs[0]), cp.asarray(xs[1])
        got = net.kernel(a, b)  # computed on the inputs' device, whatever the current one
        assert got.ntk.device.id == dev
        assert_kernel_close(got.ntk.get(), want.ntk, F64)
    if n < 2:
        pytest.skip("one CUDA device: device 0 checked, no second device")
    with cp.cuda.Device(1):
        b = cp.asarray(xs[1])
    with pytest.raises(ValueError, match="x1 is on CUDA device 0 and x2 on device 1"):
        net.kernel(cp.asarray(xs[0]), b)


def test_errors_on_the_gpu(monkeypatch, rng):
    x = rng.standard_normal((6, 3))
    deep = nt.serial(*[nt.Dense(W_std=40.0), nt.Relu()] * 120, nt.Dense())
    with pytest.raises(FloatingPointError, match="stops being finite at layer"):
        deep.kernel(cp.asarray(x))
    gauss = nt.serial(nt.Dense(W_std=3.0), nt.Gaussian(1.0, 0.5))
    with pytest.raises(ValueError, match=r"Gaussian\(b=0.5.*row \d+ of x1"):
        gauss.kernel(cp.asarray(x))
    bad = cp.asarray(x)
    bad[3, 1] = cp.nan
    with pytest.raises(ValueError, match=r"x1 has a non-finite value \(NaN or Inf\) in row 3"):
        _net("relu").kernel(bad)
    monkeypatch.setattr(gpu, "free_device_bytes", lambda cp_: 1000)
    with pytest.raises(MemoryError, match=r"needs 28800 bytes .* but only 1000 bytes .* free on CUDA device"):
        _net("relu").kernel(cp.asarray(rng.standard_normal((60, 3))))


@pytest.mark.parametrize("trace_axes", [(-1,), ()])
@pytest.mark.parametrize("act", ["relu", "erf", "gelu"])
def test_empirical_kernels(trace_axes, act, rng):
    net = nt.serial(
        nt.Dense(64, W_std=1.3, b_std=0.2), ACTIVATION_SPECS[act][1](),
        nt.Dense(32, W_std=1.1, b_std=None, parameterization="standard"), ACTIVATION_SPECS[act][1](),
        nt.Dense(3, W_std=1.2, b_std=0.1),
    )  # fmt: skip
    params = net.init(1, 6)
    x1, x2 = rng.standard_normal((20, 6)), rng.standard_normal((9, 6))
    for b in (None, x2):
        for fn in ("empirical_ntk", "empirical_nngp"):
            want = getattr(net, fn)(params, x1, b, trace_axes=trace_axes)
            got = getattr(net, fn)(
                params, cp.asarray(x1), None if b is None else cp.asarray(b), trace_axes=trace_axes
            )
            assert isinstance(got, cp.ndarray) and got.shape == want.shape
            assert_kernel_close(got.get(), want, F64, np.max(np.abs(want)) * 1e-12, fn)
