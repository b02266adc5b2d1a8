"""The spatial (CNN) GPU driver's Python side (fastntk._cuda_backend.spatial_gram: the launch
plan, bands, output offsets and row strides, the in-kernel mirror of device outputs, the host
streaming and host mirror of NumPy outputs, the exact diagonal, float32 storage, errors) run
without a GPU, on the emulator of test_cuda_emulated.py (NumPy arrays dressed as CuPy ones)
and a stand-in for ``fastntk._cuda``'s spatial functions that honours the memory contract of
csrc/cuda/spatial_gram_cuda.hpp and computes each pair it is handed with the CPU driver.

What this does not cover is the CUDA C++ itself (tests/test_cuda_cnn.py, on a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cuda_emulated import FakeArray, FakeCudaModule, _view, install_emulator

from fastntk import _core, _engine
from fastntk import _cuda_backend as gpu

from conftest import assert_kernel_close

F64 = 1e-12  # the stand-in is the CPU driver pair by pair: only the pair-vs-symmetric order differs


class FakeSpatialModule(FakeCudaModule):
    """fastntk._cuda with the spatial functions: each pair (point) the CPU driver's result,
    written where the contract says."""

    SPATIAL_MAX_THREADS = 256
    SPATIAL_MAX_SHARED_BYTES = 96 * 1024

    def __init__(self):
        super().__init__()
        self.sprog = None  # the _core.SpatialProgram of the current call (recorded by the fixture)
        p = _core.SpatialProgram([2], 1, True, 1).add_linear(0, 0, "identity", [2], [2])
        self.SPATIAL_OP_BYTES = len(p.ops_bytes) // p.n_ops
        self.launches = []

    def spatial_workspace_doubles(self, prog, ntk):
        return (prog[2] + 2) * prog[7] * (2 if ntk else 1)

    def spatial_resident_blocks(self, ntk, threads, shared_bytes, device):
        assert threads in (32, 64, 128, 256) and 0 <= shared_bytes <= self.SPATIAL_MAX_SHARED_BYTES
        return 3

    def _check_launch(self, prog, launch, ntk):
        blocks, threads, shared, ws = launch
        assert blocks >= 1 and threads in (32, 64, 128, 256)
        assert shared or ws != 0
        self.launches.append(launch)

    def _images(self, ptr, n, channels):
        row = int(np.prod(self.sprog.in_dims)) * channels
        return _view(ptr, n * row, np.float64).reshape(n, row)

    def _pair(self, a, b, names):
        """The CPU driver's kernels of images a, b (rows): {name: (out_size,)}."""
        m = self.sprog.out_size
        outs = {n: np.empty((1, 1, m)) for n in names}
        _core.spatial_gram(
            self.sprog, a[None], None if b is None else b[None], outs.get("nngp"), outs.get("ntk")
        )
        return {n: o[0, 0] for n, o in outs.items()}

    def spatial_points(self, prog, channels, x, n, records, record_stride, float32, nngp, ntk, ld_point, stopped,
                       not_finite, launch, stream, device):  # fmt: skip
        self._check_launch(prog, launch, bool(ntk))
        assert record_stride >= max(prog[8], 1)
        self.calls.append(("spatial_points", n, bool(nngp or ntk)))
        dtype = np.float32 if float32 else np.float64
        xs = self._images(x, n, channels)
        _view(records, n * record_stride, np.float64)[:] = 0.0
        m = self.sprog.out_size
        outs = {k: _view(p, (n - 1) * ld_point + m, dtype) for k, p in (("nngp", nngp), ("ntk", ntk)) if p}
        st = _view(stopped, n, np.int32)
        for p in range(n):
            try:
                vals = self._pair(xs[p], None, list(outs) or ["nngp"])
            except ValueError:  # a diverging Gaussian
                st[p] = 1
                continue
            for k, buf in outs.items():
                buf[p * ld_point : p * ld_point + m] = vals[k]
                if not np.isfinite(buf[p * ld_point : p * ld_point + m]).all():
                    _view(not_finite, 1, np.int32)[0] = 1

    @np.errstate(all="ignore")
    def spatial_pairs(self, prog, channels, x1, x2, rec1, rec2, record_stride, n1, n2, i0, rows, j0, cols, upper,
                      float32, nngp, ntk, out_size, out_i0, out_j0, ld_row, mirror, not_finite, launch, stream,
                      device):  # fmt: skip
        assert 0 <= i0 and i0 + rows <= n1 and 0 <= j0 and j0 + cols <= n2
        assert out_i0 <= i0 and out_j0 <= j0 and ld_row >= cols * out_size
        assert not mirror or (out_i0 == 0 and out_j0 == 0 and n1 == n2)
        assert out_size == self.sprog.out_size
        self._check_launch(prog, launch, bool(ntk))
        self.calls.append(("spatial_pairs", i0, rows, j0, cols, upper, mirror))
        dtype = np.float32 if float32 else np.float64
        a, b = self._images(x1, n1, channels), self._images(x2, n2, channels)
        m = out_size
        so = int(round(np.sqrt(m))) if self.sprog.full and m > 1 else 0
        rows_out = n1 if mirror else rows + i0 - out_i0
        outs = {k: _view(p, rows_out * ld_row, dtype) for k, p in (("nngp", nngp), ("ntk", ntk)) if p}
        for i in range(i0, i0 + rows):
            for j in range(j0, j0 + cols):
                if upper and j <= i:
                    continue
                vals = self._pair(a[i], b[j], list(outs))
                for k, buf in outs.items():
                    at = (i - out_i0) * ld_row + (j - out_j0) * m
                    buf[at : at + m] = vals[k]
                    if mirror:
                        at = (j - out_i0) * ld_row + (i - out_j0) * m
                        buf[at : at + m] = vals[k].reshape(so, so).T.ravel() if so else vals[k]
                    if not np.isfinite(buf[at : at + m]).all():
                        _view(not_finite, 1, np.int32)[0] = 1


@pytest.fixture
def emulated(monkeypatch):
    """fastntk's CUDA backend on the emulator: (fake cupy, fake _cuda)."""
    return install_emulator(monkeypatch, FakeSpatialModule(), "_SpatialCtx", "sprog")


def _fc():
    fc = _core.Program()
    fc.add_dense(1.0, None, False, 1.0)
    fc.add_abrelu(0.0, 1.0)
    fc.add_dense(1.0, None, False, 1.0)
    fc.add_gaussian(1.0, 0.4)
    return fc


_FC = _fc()


def _program(full, readout=True, dims=(4, 3), channels=2, gaussian=False):
    """Conv 3x3 SAME, ReLU (or Gaussian), Conv 2x2 VALID, then GAP / Flatten, or no readout."""
    p = _core.SpatialProgram(list(dims), channels, full, 1)
    p.add_linear(0, 0, "conv", list(dims), list(dims), [3, 3], [1, 1], [1, 1], False, False, 1 / 9,
                 1.5, 0.1, 1.5, 1.5, 0.1)  # fmt: skip
    p.add_activation(0, _FC, 3 if gaussian else 1)
    out = [n - 1 for n in dims]
    p.add_linear(
        0, 0, "conv", list(dims), out, [2, 2], [1, 1], [0, 0], False, False, 1 / 4, 1.2, 0.0, 1.2, 1.2, 0.0
    )
    if readout:
        p.add_linear(0, 0, "global" if full else "flatten", out, [], [], [], [], False, False, 1 / np.prod(out),
                     1.0, 0.0, 0.0, 1.0, 0.0)  # fmt: skip
    return p


def _x(rng, p, n):
    return rng.standard_normal((n, *p.in_dims, p.channels))


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
@pytest.mark.parametrize("readout", [True, False], ids=["scalar", "spatial"])
@pytest.mark.parametrize("to_host", [False, True], ids=["cupy", "numpy"])
@pytest.mark.parametrize("band", [None, 2])
def test_outputs_where_the_contract_says(emulated, monkeypatch, rng, full, readout, to_host, band):
    cp, mod = emulated
    if band:
        monkeypatch.setattr(gpu, "_spatial_band_rows", lambda *a: band)
    p = _program(full, readout)
    x1, x2 = _x(rng, p, 7), _x(rng, p, 4)
    for a, b in ((x1, None), (x1, x2)):
        want = _engine.spatial_gram(p, a, b, ("nngp", "ntk"), device="cpu")
        mod.calls.clear()
        if to_host:
            got = _engine.spatial_gram(p, a, b, ("nngp", "ntk"), device="cuda")
            assert all(type(o) is np.ndarray for o in got.values())
        else:
            got = _engine.spatial_gram(
                p, cp.asarray(a), None if b is None else cp.asarray(b), ("nngp", "ntk")
            )
            assert all(type(o) is FakeArray for o in got.values())
        for name in ("nngp", "ntk"):
            assert_kernel_close(np.asarray(got[name]), want[name], F64, what=name)
        pairs = [c for c in mod.calls if c[0] == "spatial_pairs"]
        # x2=None: upper bands only, mirrored in the kernel into device outputs (on the host
        # for NumPy ones); the diagonal from the point pass.
        assert pairs and all(c[5] == (b is None) for c in pairs)
        assert all(c[6] == (b is None and not to_host) for c in pairs)
        assert [c[2] for c in mod.calls if c[0] == "spatial_points"] == (
            [True] if b is None else [False, False]
        )
        if band:
            assert len(pairs) > 1


def test_float32_storage_and_nngp_only(emulated, rng):
    cp, _ = emulated
    p = _program(True, readout=False)
    x = _x(rng, p, 5)
    want = _engine.spatial_gram(p, x, None, ("nngp",), device="cpu")
    got = _engine.spatial_gram(p, cp.asarray(x), None, ("nngp",), dtype=np.float32)
    assert set(got) == {"nngp"} and got["nngp"].dtype == np.float32
    assert_kernel_close(np.asarray(got["nngp"]), want["nngp"], 2.0**-24 + F64)


def test_workspace_plan(emulated, rng):
    """Small states take shared memory; a forced global workspace is one slice per block,
    at most the resident blocks and at most the pairs."""
    cp, mod = emulated
    p = _program(True)
    x = cp.asarray(_x(rng, p, 4))
    gpu.spatial_gram(p, x, None, ("nngp", "ntk"))
    assert all(launch[2] for launch in mod.launches)
    mod.launches.clear()
    outs, bad = gpu.spatial_gram(p, x, None, ("nngp", "ntk"), workspace="global")
    assert bad == []
    blocks = {launch[0] for launch in mod.launches}
    assert blocks == {3} and not any(launch[2] for launch in mod.launches)


def test_overflow_names_the_kernels(emulated, rng):
    cp, _ = emulated
    p = _core.SpatialProgram([3], 1, False, 1)
    for _ in range(4):
        p.add_linear(0, 0, "conv", [3], [3], [3], [1], [1], False, False, 1e80, 1.0, 0.0, 1.0, 1.0, 0.0)
    with pytest.raises(FloatingPointError, match="CNN NNGP and NTK"):
        _engine.spatial_gram(p, cp.asarray(rng.standard_normal((2, 3, 1))), None, ("nngp", "ntk"))


def test_diverging_gaussian_names_the_image(emulated, rng):
    cp, _ = emulated
    p = _program(True, gaussian=True)
    x = 0.1 * _x(rng, p, 4)
    x[2] *= 100.0
    with pytest.raises(ValueError, match="image 2 of x2"):
        _engine.spatial_gram(p, cp.asarray(x[:2]), cp.asarray(x), ("nngp",))


def test_input_errors(emulated, rng):
    cp, _ = emulated
    p = _program(False)
    x = _x(rng, p, 3)
    with pytest.raises(ValueError, match="device='cpu'"):
        _engine.spatial_gram(p, cp.asarray(x), None, ("nngp",), device="cpu")
    with pytest.raises(TypeError, match="NumPy array"):
        _engine.spatial_gram(p, cp.asarray(x), x, ("nngp",))
    with pytest.raises(ValueError, match="values per image"):
        _engine.spatial_gram(p, cp.asarray(x[..., :1]), None, ("nngp",))


def test_empty_inputs(emulated, rng):
    cp, mod = emulated
    p = _program(True)
    x = _x(rng, p, 3)
    out = _engine.spatial_gram(p, cp.asarray(x[:0]), cp.asarray(x), ("nngp", "ntk"))
    assert out["nngp"].shape == (0, 3, 1) and out["ntk"].shape == (0, 3, 1)
    out = _engine.spatial_gram(p, x[:0], None, ("nngp",), device="cuda")
    assert out["nngp"].shape == (0, 0, 1)
    assert not [c for c in mod.calls if c[0].startswith("spatial")]


# ---------------------------------------------------------------------------------------
# The real fastntk._cuda where this build has it (no device needed): layout and argument checks


def _real_module():
    if not gpu.built():
        pytest.skip("this build has no CUDA backend (fastntk._cuda)")
    return gpu.native()


def _prog_tuple(p):
    return (1, p.n_ops, p.n_registers, p.n_activations, p.full, list(p.in_dims), list(p.out_dims),
            p.max_entries, p.point_stride, 0)  # fmt: skip


def test_real_module_spatial_op_layout_and_workspace():
    mod = _real_module()
    p = _program(True)
    assert len(p.ops_bytes) == p.n_ops * mod.SPATIAL_OP_BYTES
    # (R + 2) buffers of max_entries doubles, for Sigma and Theta
    assert mod.spatial_workspace_doubles(_prog_tuple(p), True) == 2 * (p.n_registers + 2) * p.max_entries
    assert mod.spatial_workspace_doubles(_prog_tuple(p), False) == (p.n_registers + 2) * p.max_entries


def test_real_module_spatial_argument_errors():
    """Bad arguments raise ValueError before anything reaches CUDA."""
    mod = _real_module()
    p = _program(True)
    t = _prog_tuple(p)
    launch = (1, 256, False, 1)
    m = p.out_size
    with pytest.raises(ValueError, match="the band lies outside"):
        mod.spatial_pairs(t, 2, 1, 1, 1, 1, 1, 3, 3, 2, 2, 0, 3, False, False, 1, 0, m, 0, 0, 3 * m, False, 1,
                          launch, 0, 0)  # fmt: skip
    with pytest.raises(ValueError, match="mirror needs the whole square output"):
        mod.spatial_pairs(t, 2, 1, 1, 1, 1, 1, 3, 3, 1, 1, 1, 2, True, False, 1, 0, m, 1, 1, 2 * m, True, 1,
                          launch, 0, 0)  # fmt: skip
    with pytest.raises(ValueError, match="row stride"):
        mod.spatial_pairs(t, 2, 1, 1, 1, 1, 1, 3, 3, 0, 3, 0, 3, False, False, 1, 0, m, 0, 0, m, False, 1,
                          launch, 0, 0)  # fmt: skip
    with pytest.raises(ValueError, match="10 fields"):
        mod.spatial_points(t[:9], 2, 1, 3, 1, 1, False, 0, 0, 0, 1, 1, launch, 0, 0)
    with pytest.raises(ValueError, match="max_entries"):
        mod.spatial_points(t[:7] + (1,) + t[8:], 2, 1, 3, 1, 1, False, 0, 0, 0, 1, 1, launch, 0, 0)
    with pytest.raises(ValueError, match="channels"):
        mod.spatial_points(t, 0, 1, 3, 1, 1, False, 0, 0, 0, 1, 1, launch, 0, 0)
