"""The GPU driver's Python side (fastntk._cuda_backend: bands, offsets, captures, the host
streaming, the mirror and the exact diagonal, float32 storage, errors) run without a GPU, on
an emulator: CuPy replaced by NumPy arrays that carry a ``.data.ptr``, and ``fastntk._cuda``
replaced by NumPy functions that honour the contract of csrc/cuda/ntk_gram_cuda.hpp (the
same pointers, leading dimensions and plane strides) and walk the pairs with the CPU's own
dual maps (``_core.dual_map``). Results are compared with the CPU driver.

What this does not cover is the CUDA C++ itself (tests/test_cuda.py, on a GPU); it checks
that the Python driver hands the kernels the right buffers and assembles what they write.
Derivatives (Dual numbers) are not emulated.
"""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest

import fastntk as nt
from fastntk import _core, _engine
from fastntk import _cuda_backend as gpu

from conftest import assert_kernel_close

# ---------------------------------------------------------------------------------------
# A NumPy stand-in for CuPy


class _Device:
    def __init__(self, id=0):
        self.id = id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Data:
    def __init__(self, ptr):
        self.ptr = ptr


class FakeArray(np.ndarray):
    """A NumPy array dressed as a CuPy one: .data.ptr, .device, .get()."""

    @property
    def data(self):
        return _Data(self.ctypes.data if self.size else 0)

    @property
    def device(self):
        return _Device(0)

    def get(self, stream=None):
        return np.array(self).view(np.ndarray)


FakeArray.__module__ = "cupy._core.core"  # what fastntk._arrays.is_cupy looks at


def _fake(a):
    return a.view(FakeArray) if isinstance(a, np.ndarray) else a


def make_fake_cupy():
    cp = types.ModuleType("cupy")
    cp.ndarray = FakeArray
    cp.float32, cp.float64, cp.int32, cp.nan = np.float32, np.float64, np.int32, np.nan

    def asarray(a, dtype=None):
        if isinstance(a, FakeArray) and (dtype is None or a.dtype == dtype):
            return a
        return np.array(a, dtype=dtype).view(FakeArray)  # a copy, as to a device

    cp.asarray = asarray
    cp.empty = lambda shape, dtype=np.float64: np.empty(shape, dtype=dtype).view(FakeArray)
    cp.zeros = lambda shape, dtype=np.float64: np.zeros(shape, dtype=dtype).view(FakeArray)
    cp.ascontiguousarray = lambda a, dtype=None: _fake(np.ascontiguousarray(a, dtype=dtype))
    cp.isfinite = lambda a: _fake(np.isfinite(a))
    cp.argmax = lambda a: _fake(np.argmax(a))
    cp.arange = lambda *a: np.arange(*a).view(FakeArray)
    cp.matmul = lambda a, b, out=None: np.matmul(a, b, out=out)
    cp.array_equal = np.array_equal
    cp.asnumpy = lambda a, stream=None: np.array(a).view(np.ndarray)
    cp.einsum = lambda *a: _fake(np.einsum(*a))
    cp.eye = lambda m: np.eye(m).view(FakeArray)
    cp.exp = lambda a: _fake(np.exp(a))
    cp.broadcast_to = lambda a, shape: _fake(np.broadcast_to(a, shape))
    pool = types.SimpleNamespace(free_bytes=lambda: 0, free_all_blocks=lambda: None)
    cp.get_default_memory_pool = lambda: pool
    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(
        Device=_Device,
        get_current_stream=lambda: stream,
        memory=types.SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError", (MemoryError,), {})),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    )
    return cp


# ---------------------------------------------------------------------------------------
# A NumPy stand-in for fastntk._cuda


_OP = np.dtype(
    {
        "names": ["kind", "layer", "w_var", "b_var", "parameterization", "n_in", "t0"],
        "formats": ["<i4", "<i4", "<f8", "<f8", "<i4", "<f8", "<f8"],
        "offsets": [0, 4, 8, 16, 24, 32, 40],
        "itemsize": 48,
    }
)


def _view(ptr, count, dtype):
    """A NumPy view of count elements at a raw address."""
    dtype = np.dtype(dtype)
    if count <= 0:
        return np.empty(0, dtype)
    buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype)


class FakeCudaModule:
    """The functions of fastntk._cuda with their documented memory contract, for P = 0."""

    OP_BYTES = 48
    MAX_DIRECTIONS = 3
    CudaError = type("CudaError", (RuntimeError,), {})

    def __init__(self):
        self.prog = None  # the _core.Program of the current call (recorded by the fixture)
        self.free = 1 << 40
        self.calls = []

    def build_info(self):
        return {
            "cuda": True,
            "version": nt.__version__,
            "cuda_architectures": "emulated",
            "cuda_compiler": "-",
        }

    def device_count(self):
        return 1, ""

    def device_info(self, k):
        return {"name": "emulated", "compute_capability": "9.0", "multiprocessors": 1, "total_memory": 1 << 34,
                "runtime_version": 0, "driver_version": 0}  # fmt: skip

    def mem_get_info(self, device):
        return self.free, 1 << 40

    def synchronize(self, stream, device):
        pass

    def _ops(self, ptr, n_ops):
        return _view(ptr, n_ops, _OP)

    @staticmethod
    def _dense(op, s, t, ntk):
        if op["parameterization"] == 1:  # standard
            if ntk:
                t = op["n_in"] * s + op["w_var"] * t + op["t0"]
            s = op["w_var"] * s + op["b_var"]
        else:
            s = op["w_var"] * s + op["b_var"]
            if ntk:
                t = s + op["w_var"] * t + op["t0"]
        return s, t

    def row_norms(self, x, float32, n, d, ld, scale, q0, stream, device):
        a = _view(x, n * ld, np.float32 if float32 else np.float64).reshape(n, ld)[:, :d].astype(np.float64)
        _view(q0, n, np.float64)[:] = scale * np.einsum("ij,ij->i", a, a)

    @np.errstate(all="ignore")  # a device computes IEEE arithmetic silently
    def point_pass(self, ops, n_ops, n_act, coef, seeds, P, q0, n, table, capture, capture_end, q_cap, t_cap,
                   stopped, stream, device):  # fmt: skip
        assert P == 0, "the emulator has no dual numbers"
        self.calls.append(("point_pass", n))
        op_list = self._ops(ops, n_ops)
        cap = _view(capture, n_ops, np.int32) if capture else None
        n_caps = (int(cap.max()) + 1) if cap is not None else capture_end + 1
        tab = _view(table, 4 * n_act * n, np.float64).reshape(n_act, 4, n)
        qc, tc = _view(q_cap, n_caps * n, np.float64), _view(t_cap, n_caps * n, np.float64)
        q, t = _view(q0, n, np.float64).copy(), np.zeros(n)
        a = 0
        for k, op in enumerate(op_list):
            if op["kind"] == 0:
                q, t = self._dense(op, q, t, True)
            else:
                tab[a, 0] = q
                f, dot = _core.dual_map_diag(self.prog, k, q)
                q, t = f, t * dot
                a += 1
            if cap is not None and cap[k] >= 0:
                qc[cap[k] * n : (cap[k] + 1) * n], tc[cap[k] * n : (cap[k] + 1) * n] = q, t
        if capture_end >= 0:
            qc[capture_end * n : (capture_end + 1) * n], tc[capture_end * n : (capture_end + 1) * n] = q, t
        _view(stopped, n, np.int32)[:] = -1

    @np.errstate(all="ignore")
    def gram_tile(self, ops, n_ops, n_act, coef, seeds, P, float32, s, ld_s, scale, table1, n1, table2, n2, i0, j0,
                  rows, cols, upper, nngp, ntk, ld_out, plane_stride, capture, capture_end, not_finite, stream,
                  device):  # fmt: skip
        assert P == 0, "the emulator has no dual numbers"
        assert 0 <= i0 and i0 + rows <= n1 and 0 <= j0 and j0 + cols <= n2 and ld_s >= cols and ld_out >= cols
        self.calls.append(("gram_tile", i0, j0, rows, cols, upper))
        dtype = np.dtype(np.float32 if float32 else np.float64)
        op_list = self._ops(ops, n_ops)
        cap = _view(capture, n_ops, np.int32) if capture else None
        n_caps = (int(cap.max()) + 1) if cap is not None else capture_end + 1
        t1 = _view(table1, 4 * n_act * n1, np.float64).reshape(n_act, 4, n1)
        t2 = _view(table2, 4 * n_act * n2, np.float64).reshape(n_act, 4, n2)
        sv = scale * _view(s, (rows - 1) * ld_s + cols, dtype).astype(np.float64)
        sv = np.lib.stride_tricks.as_strided(sv, (rows, cols), (ld_s * 8, 8)).copy()
        i = np.arange(i0, i0 + rows)[:, None]
        j = np.arange(j0, j0 + cols)[None, :]
        mask = (j > i) if upper else np.ones((rows, cols), bool)
        span = (n_caps - 1) * plane_stride + (rows - 1) * ld_out + cols
        outs = {name: _view(p, span, dtype) for name, p in (("nngp", nngp), ("ntk", ntk)) if p}
        flag = _view(not_finite, 1, np.int32)
        sval, tval = sv, np.zeros_like(sv)

        def store(c):
            for name, buf in outs.items():
                v = np.lib.stride_tricks.as_strided(
                    buf[c * plane_stride :], (rows, cols), (ld_out * dtype.itemsize, dtype.itemsize)
                )
                vals = (sval if name == "nngp" else tval).astype(dtype)
                v[mask] = vals[mask]
                if not np.isfinite(vals[mask]).all():
                    flag[0] = 1

        a = 0
        for k, op in enumerate(op_list):
            if op["kind"] == 0:
                sval, tval = self._dense(op, sval, tval, bool(ntk))
            else:
                qx = np.broadcast_to(t1[a, 0, i0 : i0 + rows][:, None], sv.shape)
                qy = np.broadcast_to(t2[a, 0, j0 : j0 + cols][None, :], sv.shape)
                f, dot = _core.dual_map(self.prog, k, qx.ravel(), qy.ravel(), sval.ravel())
                sval, tval = f.reshape(sv.shape), tval * dot.reshape(sv.shape)
                a += 1
            if cap is not None and cap[k] >= 0:
                store(int(cap[k]))
        if capture_end >= 0:
            store(capture_end)

    def mirror(self, a, float32, n, ld, stream, device):
        dtype = np.float32 if float32 else np.float64
        v = _view(a, (n - 1) * ld + n, dtype)
        m = np.lib.stride_tricks.as_strided(v, (n, n), (ld * v.itemsize, v.itemsize))
        low = np.tril_indices(n, -1)
        m[low] = m.T[low]


def install_emulator(monkeypatch, mod, ctx="_Ctx", record="prog"):
    """Put the fake cupy and ``mod`` (a fake _cuda) under fastntk's CUDA backend, its context
    class ``gpu.<ctx>`` recording the native program it is given as ``mod.<record>``;
    returns (fake cupy, mod)."""
    cp = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(gpu, "_loaded", True)
    monkeypatch.setattr(gpu, "_module", mod)
    base = getattr(gpu, ctx)

    class Recording(base):
        def __init__(self, prog, *args, **kwargs):
            setattr(mod, record, prog)
            super().__init__(prog, *args, **kwargs)

    monkeypatch.setattr(gpu, ctx, Recording)
    return cp, mod


@pytest.fixture
def emulated(monkeypatch):
    """fastntk's CUDA backend on the emulator: (fake cupy, fake _cuda)."""
    return install_emulator(monkeypatch, FakeCudaModule())


F64 = 1e-12


def _net(act="relu", parameterization="ntk"):
    make = {"relu": nt.Relu, "erf": nt.Erf, "gelu": nt.Gelu, "rmono": lambda: nt.RectifiedMonomial(2)}[act]
    return nt.serial(
        nt.Dense(16, W_std=1.3, b_std=0.2, parameterization=parameterization), make(),
        nt.Dense(16, W_std=1.2, b_std=0.1, parameterization=parameterization), make(),
        nt.Dense(1, W_std=1.1, b_std=0.3, parameterization=parameterization),
    )  # fmt: skip


@pytest.fixture
def xs(rng):
    return rng.standard_normal((19, 4)), rng.standard_normal((11, 4))


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "rmono"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("band", [None, 4])
def test_device_arrays_in_and_out(emulated, monkeypatch, act, parameterization, band, xs):
    cp, mod = emulated
    assert nt.has_cuda()
    if band:
        monkeypatch.setattr(gpu, "_band_rows", lambda cp_, n1, n2, per_row: band)
    net = _net(act, parameterization)
    for x2 in (None, xs[1]):
        want = net.kernel(xs[0], x2)
        got = net.kernel(cp.asarray(xs[0]), None if x2 is None else cp.asarray(x2))
        assert type(got.ntk) is FakeArray and got.ntk.dtype == np.float64
        for name in ("nngp", "ntk"):
            assert_kernel_close(np.asarray(getattr(got, name)), getattr(want, name), F64, what=name)
        if x2 is None:
            assert np.array_equal(got.ntk, got.ntk.T)
    tiles = [c for c in mod.calls if c[0] == "gram_tile"]
    assert tiles and all(c[5] for c in tiles[: len(tiles) // 2])  # the symmetric call's bands are upper


@pytest.mark.parametrize("get", ["nngp", "ntk", ("ntk", "nngp")])
def test_requested_outputs(emulated, get, xs):
    cp, _ = emulated
    net = _net("erf")
    want = net.kernel(xs[0], xs[1], get=get)
    got = net.kernel(cp.asarray(xs[0]), cp.asarray(xs[1]), get=get)
    for g, w in zip((got,) if isinstance(get, str) else got, (want,) if isinstance(get, str) else want):
        assert_kernel_close(np.asarray(g), w, F64)


@pytest.mark.parametrize("band", [None, 3])
def test_numpy_with_device_cuda_streams_bands_to_the_host(emulated, monkeypatch, band, xs):
    if band:
        monkeypatch.setattr(gpu, "_band_rows", lambda cp_, n1, n2, per_row: band)
    net = _net("gelu")
    for x2 in (None, xs[1]):
        want = net.kernel(xs[0], x2)
        got = net.kernel(xs[0], x2, device="cuda")
        assert type(got.nngp) is np.ndarray
        for name in ("nngp", "ntk"):
            assert_kernel_close(getattr(got, name), getattr(want, name), F64, what=name)


@pytest.mark.parametrize("device", ["gpu-arrays", "host"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_layer(emulated, monkeypatch, device, symmetric, xs):
    cp, _ = emulated
    monkeypatch.setattr(gpu, "_band_rows", lambda cp_, n1, n2, per_row: 5)
    net = nt.serial(
        nt.Identity(), nt.Dense(W_std=1.4, b_std=0.1), nt.Erf(), nt.Identity(), nt.Dense(), nt.Relu()
    )
    x2 = None if symmetric else xs[1]
    want = net.kernel(xs[0], x2, every_layer=True)
    if device == "host":
        got = net.kernel(xs[0], x2, every_layer=True, device="cuda")
        assert type(got.ntk) is np.ndarray
    else:
        got = net.kernel(cp.asarray(xs[0]), None if x2 is None else cp.asarray(x2), every_layer=True)
        assert type(got.ntk) is FakeArray
    for name in ("nngp", "ntk"):
        assert_kernel_close(np.asarray(getattr(got, name)), getattr(want, name), F64, 1e-300, name)


def test_float32_storage(emulated, rng):
    cp, _ = emulated
    x = rng.standard_normal((25, 30))
    net = _net("relu")
    want = net.kernel(x)
    got = net.kernel(cp.asarray(x, dtype=np.float32))
    assert got.ntk.dtype == np.float32
    scale = np.sqrt(np.outer(np.diag(want.ntk), np.diag(want.ntk)))
    assert_kernel_close(np.asarray(got.ntk, dtype=np.float64), want.ntk, 1e-5, scale)
    host = net.kernel(x.astype(np.float32), device="cuda")
    assert type(host.ntk) is np.ndarray and host.ntk.dtype == np.float32


def test_diagonal(emulated, xs):
    cp, _ = emulated
    prog = _engine.program(_net("rmono"), 4)
    want = _engine.diagonal(prog, xs[0])
    got = _engine.diagonal(prog, cp.asarray(xs[0]))
    for g, w in zip(got, want):
        assert type(g) is FakeArray
        assert_kernel_close(np.asarray(g), w, F64)


def test_out_of_device_memory(emulated, xs):
    cp, mod = emulated
    mod.free = 1000
    with pytest.raises(
        MemoryError, match=r"the nngp kernel needs 2888 bytes .* but only 1000 bytes .* are free"
    ):
        _net().kernel(cp.asarray(xs[0]))
    # NumPy with device='cuda' needs only a band: one row of 19 doubles fits in half of 1000 bytes.
    want = _net().kernel(xs[0])
    got = _net().kernel(xs[0], device="cuda")
    assert_kernel_close(got.ntk, want.ntk, F64)
    mod.free = 100
    with pytest.raises(MemoryError, match="one row of a Gram tile needs"):
        _net().kernel(xs[0], device="cuda")


def test_non_finite_kernels_name_the_layer(emulated, rng):
    cp, _ = emulated
    deep = nt.serial(*[nt.Dense(W_std=40.0), nt.Relu()] * 120, nt.Dense())
    x = rng.standard_normal((5, 3))
    for x2 in (None, rng.standard_normal((4, 3))):
        with pytest.raises(FloatingPointError, match="stops being finite at layer"):
            deep.kernel(cp.asarray(x), None if x2 is None else cp.asarray(x2))


def test_bad_device_inputs(emulated, rng):
    cp, _ = emulated
    x = cp.asarray(rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="x2 must|x1 and x2 must have the same number of features"):
        _net().kernel(x, cp.asarray(rng.standard_normal((5, 4))))
    bad = cp.asarray(rng.standard_normal((5, 3)))
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"x1 has a non-finite value \(NaN or Inf\) in row 2"):
        _net().kernel(bad)
    with pytest.raises(ValueError, match="x1 must be a 2-D array"):
        _net().kernel(cp.asarray(np.ones(3)))
    # integer inputs become float64; float32 with float64 computes in float64
    k = _net().kernel(cp.asarray(np.arange(15).reshape(5, 3)))
    assert k.ntk.dtype == np.float64
    k = _net().kernel(cp.asarray(np.ones((5, 3), np.float32)), cp.asarray(np.ones((2, 3))))
    assert k.ntk.dtype == np.float64


# ---------------------------------------------------------------------------------------
# Empirical kernels of finite networks on device arrays (the CuPy array code, run on the
# NumPy stand-in: the same calls CuPy receives on a GPU).


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("trace_axes", [(-1,), ()])
def test_empirical_kernels_on_device_arrays(emulated, act, parameterization, trace_axes, rng):
    cp, _ = emulated
    make = {
        "relu": nt.Relu,
        "erf": lambda: nt.Erf(0.7, 1.3, 0.2),
        "gelu": nt.Gelu,
        "sin": lambda: nt.Sin(1.1, 0.9, 0.3),
    }
    net = nt.serial(
        nt.Dense(12, W_std=1.3, b_std=0.2, parameterization=parameterization), make[act](),
        nt.Dense(9, W_std=1.1, b_std=None, parameterization=parameterization), make[act](),
        nt.Dense(3, W_std=1.2, b_std=0.1, parameterization=parameterization),
    )  # fmt: skip
    params = net.init(3, 4)
    x1, x2 = rng.standard_normal((7, 4)), rng.standard_normal((5, 4))
    dev_params = [
        () if not p else (cp.asarray(p[0]), None if p[1] is None else cp.asarray(p[1])) for p in params
    ]
    for b in (None, x2):
        for fn in ("empirical_ntk", "empirical_nngp"):
            want = getattr(net, fn)(params, x1, b, trace_axes=trace_axes)
            got = getattr(net, fn)(
                dev_params, cp.asarray(x1), None if b is None else cp.asarray(b), trace_axes=trace_axes
            )
            assert type(got) is FakeArray and got.shape == want.shape
            assert_kernel_close(np.asarray(got), want, F64, np.max(np.abs(want)) * 1e-12, fn)


def test_empirical_on_device_arrays_errors(emulated, rng):
    cp, _ = emulated
    net = nt.serial(nt.Dense(5), nt.Relu(), nt.Dense(1))
    params = net.init(0, 3)
    with pytest.raises(TypeError, match=r"x2 is a CuPy \(CUDA\) array but x1 is a NumPy array"):
        net.empirical_ntk(params, rng.standard_normal((4, 3)), cp.asarray(rng.standard_normal((4, 3))))
    with pytest.raises(ValueError, match="params are for input_dim=3"):
        net.empirical_ntk(params, cp.asarray(rng.standard_normal((4, 2))))
    deep = nt.serial(*[nt.Dense(8, W_std=1e30), nt.Relu()] * 12, nt.Dense(1))
    with pytest.raises(FloatingPointError, match="overflows float64 at layer"):
        deep.empirical_ntk(deep.init(0, 3), cp.asarray(rng.standard_normal((4, 3))))
