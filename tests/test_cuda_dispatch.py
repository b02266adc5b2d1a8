"""The CUDA dispatch paths that need no GPU: a build without CUDA, no device, no CuPy, mixed
and misplaced inputs, CUDA errors turned into exceptions, and the host-side pieces of the
GPU driver. They run everywhere (CI included); tests/test_cuda.py holds the GPU runs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import fastntk as nt
from fastntk import _cuda_backend as gpu
from fastntk import _engine


class FakeDeviceArray:
    """Carries __cuda_array_interface__ (as a CuPy, Numba or PyTorch CUDA array does) and
    nothing else: the dispatch must recognize it as a device array without importing CuPy."""

    def __init__(self, shape=(4, 3), device=0):
        self.shape = shape
        self.device = type("Device", (), {"id": device})()
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f8", "data": (0, False), "version": 3}


@pytest.fixture
def no_cuda_build(monkeypatch):
    """As a build whose fastntk._cuda is missing (or cannot load)."""
    monkeypatch.setattr(gpu, "_loaded", True)
    monkeypatch.setattr(gpu, "_module", None)
    monkeypatch.setattr(
        gpu, "_reason", "fastntk._cuda could not be imported: No module named 'fastntk._cuda'"
    )


@pytest.fixture
def one_device(monkeypatch):
    """As a CUDA build that sees one device (the dispatch then goes on to CuPy)."""
    if not gpu.built():
        pytest.skip("this build has no CUDA backend (fastntk._cuda)")
    monkeypatch.setattr(gpu, "device_count", lambda: (1, ""))


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError


@pytest.fixture
def reset_default_device():
    yield
    nt.set_default_device("cpu")


NET = nt.serial(nt.Dense(), nt.Relu(), nt.Dense())


def test_import_and_build_info_without_a_gpu():
    info = nt.build_info()
    assert isinstance(info["cuda_build"], bool)
    assert isinstance(info["cuda_devices"], list)
    # has_cuda (and build_info's cuda) needs both the build and a device.
    assert nt.has_cuda() is info["cuda"] is (info["cuda_build"] and len(info["cuda_devices"]) > 0)
    if info["cuda_build"] and not info["cuda_devices"]:
        assert "no usable CUDA device" in info["cuda_note"]


def test_build_info_of_a_build_without_cuda(no_cuda_build):
    info = nt.build_info()
    assert info["cuda"] is False and info["cuda_build"] is False and info["cuda_devices"] == []
    assert "fastntk._cuda" in info["cuda_note"]
    assert nt.has_cuda() is False


def test_device_array_to_a_build_without_cuda(no_cuda_build):
    with pytest.raises(TypeError, match=r"x1 is a CuPy array, but fastntk was built without CUDA: reinstall"):
        NET.kernel(FakeDeviceArray())
    with pytest.raises(
        TypeError, match="device='cuda' was requested, but fastntk was built without CUDA: reinstall"
    ):
        NET.kernel(np.ones((3, 2)), device="cuda")


def test_device_array_to_the_numpy_only_entry_points(no_cuda_build):
    params = nt.serial(nt.Dense(4), nt.Relu(), nt.Dense(1)).init(0, 3)
    with pytest.raises(TypeError, match="x1 is a CuPy array, but fastntk was built without CUDA"):
        nt.serial(nt.Dense(4), nt.Relu(), nt.Dense(1)).empirical_ntk(params, FakeDeviceArray())


def test_device_array_without_a_device():
    if not gpu.built() or nt.has_cuda():
        pytest.skip("needs a CUDA build on a machine without a usable GPU")
    with pytest.raises(RuntimeError, match="finds no usable CUDA device"):
        NET.kernel(FakeDeviceArray())
    with pytest.raises(
        RuntimeError,
        match="device='cuda' was requested, but fastntk's CUDA backend finds no usable CUDA device",
    ):
        NET.kernel(np.ones((3, 2)), device="cuda")


def test_device_cuda_without_cupy(one_device, no_cupy):
    with pytest.raises(ImportError, match=r"needs CuPy.*pip install cupy-cuda12x"):
        NET.kernel(np.ones((3, 2)), device="cuda")
    with pytest.raises(ImportError, match="pip install cupy-cuda13x"):
        NET.kernel(FakeDeviceArray())


def test_default_device_routes_numpy_inputs(one_device, no_cupy, reset_default_device):
    assert nt.get_default_device() == "cpu"
    nt.set_default_device("cuda")
    assert nt.get_default_device() == "cuda"
    with pytest.raises(ImportError, match="needs CuPy"):
        NET.kernel(np.ones((3, 2)))
    # An explicit device wins over the default.
    k = NET.kernel(np.ones((3, 2)), device="cpu")
    assert isinstance(k.ntk, np.ndarray) and k.ntk.shape == (3, 3)


def test_bad_device_values(reset_default_device):
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        NET.kernel(np.ones((3, 2)), device="tpu")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 0"):
        nt.set_default_device(0)
    assert nt.get_default_device() == "cpu"


def test_numpy_mixed_with_device_arrays():
    x = np.ones((3, 2))
    with pytest.raises(TypeError, match=r"x2 is a CuPy \(CUDA\) array but x1 is a NumPy array"):
        NET.kernel(x, FakeDeviceArray((3, 2)))
    with pytest.raises(TypeError, match=r"x1 is a CuPy \(CUDA\) array but x2 is a NumPy array"):
        NET.kernel(FakeDeviceArray((3, 2)), x)


def test_device_cpu_with_a_device_array():
    with pytest.raises(ValueError, match="device='cpu' but x1 is a CuPy"):
        NET.kernel(FakeDeviceArray(), device="cpu")


def test_arrays_on_two_devices():
    with pytest.raises(ValueError, match="x1 is on CUDA device 0 and x2 on device 1"):
        gpu.same_device(FakeDeviceArray(device=0), FakeDeviceArray(device=1), ("x1", "x2"))
    gpu.same_device(FakeDeviceArray(device=1), FakeDeviceArray(device=1), ("x1", "x2"))
    gpu.same_device(FakeDeviceArray(device=1), None, ("x1", "x2"))


def test_cpu_results_unchanged_by_the_device_keyword(rng):
    x = rng.standard_normal((7, 3))
    a = NET.kernel(x)
    b = NET.kernel(x, device="cpu")
    assert np.array_equal(a.nngp, b.nngp) and np.array_equal(a.ntk, b.ntk)


def test_host_inputs_for_the_gpu_keep_float32(rng):
    x = rng.standard_normal((4, 3))
    assert gpu.host_input(x.astype(np.float32), "x1").dtype == np.float32
    assert gpu.host_input(x.astype(np.int64), "x1").dtype == np.float64
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x1 has a non-finite value \(NaN or Inf\) in row 2"):
        gpu.host_input(bad, "x1")
    with pytest.raises(ValueError, match="x1 must be a 2-D array"):
        gpu.host_input(x[0], "x1")


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_host_mirror_by_bands(rows, rng):
    """The lower triangles of host outputs (the GPU's x2=None bands only write the upper
    one): against np.triu of a symmetric reference."""
    a = rng.standard_normal((2, 7, 7))
    ref = np.triu(a) + np.swapaxes(np.triu(a, 1), 1, 2)
    out = np.triu(a) + np.tril(np.full_like(a, np.nan), -1)  # garbage below the diagonal
    gpu._mirror_host(out, rows)
    assert np.array_equal(out, ref)


def test_cuda_module_errors_are_python_exceptions():
    """Runtime failures come back as fastntk._cuda.CudaError (a RuntimeError) with CUDA's
    own message; bad arguments as ValueError; nothing aborts."""
    if not gpu.built():
        pytest.skip("this build has no CUDA backend (fastntk._cuda)")
    mod = gpu.native()
    assert issubclass(mod.CudaError, RuntimeError)
    n, why = mod.device_count()
    if n == 0:
        with pytest.raises(mod.CudaError, match=r"fastntk CUDA error: .* failed: cuda\w+: "):
            mod.mem_get_info(0)
        assert why  # the reason, e.g. "cudaErrorNoDevice: no CUDA-capable device is detected"
    with pytest.raises(ValueError, match="the tile lies outside"):
        mod.gram_tile(
            0, 0, 0, 0, 0, 0, False, 1, 4, 1.0, 1, 2, 1, 2, 0, 0, 3, 1, False, 1, 0, 4, 4, 0, 0, 1, 0, 0
        )
    with pytest.raises(ValueError, match="n_directions must be in"):
        mod.point_pass(0, 0, 0, 0, 0, 4, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="derivatives are computed in float64 only|seeds needed"):
        mod.gram_tile(
            0, 0, 0, 0, 0, 1, True, 1, 4, 1.0, 1, 2, 1, 2, 0, 0, 1, 1, False, 1, 0, 4, 4, 0, 0, 1, 0, 0
        )


def test_cuda_module_op_layout_matches_the_core():
    if not gpu.built():
        pytest.skip("this build has no CUDA backend (fastntk._cuda)")
    prog = _engine.program(nt.serial(nt.Dense(), nt.Erf(), nt.Dense(), nt.RectifiedMonomial(2)), 3)
    assert len(prog.ops_bytes) == prog.n_ops * gpu.native().OP_BYTES
    assert gpu.native().build_info()["cuda"] is True
