"""The CUDA driver of the spatial (CNN) kernels on a GPU: every result against the OpenMP
driver on the same inputs (which tests/test_spatial_engine.py checks against a plain NumPy
loop over positions written from the contract's formulas).

Programs are built with the native builder directly (``_core.SpatialProgram``), as the
engine tests do, so that these tests need no layer classes. Skips without CuPy or without a
usable CUDA device (the reason is printed with -rs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_spatial_engine import _fc_program

from fastntk import _core, _engine
from fastntk import _cuda_backend as gpu

from conftest import assert_kernel_close, cupy_or_skip
from reference_cnn import out_size_and_pad

cp = cupy_or_skip("the CUDA CNN tests")

# float64 GPU vs CPU: the same walk (spatial_walk_impl.hpp) with the same terms in the same
# order per entry; what differs is the input covariance (C fused multiply-adds per entry on
# the GPU, OpenBLAS's GEMM on the CPU), the order of the block reduction in Flatten / Global /
# spatial LayerNorm, and the device's libm (CUDA's acos, atan2 & co. within 2 ulp): a few ulps
# per op over these short programs, far below the 1e-12.
F64 = 1e-12
# float32 storage: the walk is float64 on both sides, so the only new error is the rounding of
# each output to float32, at most 2^-24 relative (round to nearest), on top of F64.
F32 = 2.0**-24 + F64


def _scale(k):
    """Entry scale for relative errors (entries near 0 of a sum of signed terms)."""
    return np.max(np.abs(k)) * 1e-3


def _fc():
    """The engine tests' ReLU at op 1, Erf(0.7, 1.3, 0.2) at op 3, and Gaussian(1, 0.4) at
    op 5 (each after a Dense)."""
    fc = _fc_program()
    fc.add_dense(1.0, None, False, 1.0)
    fc.add_gaussian(1.0, 0.4)
    return fc


RELU, ERF, GAUSSIAN = 1, 3, 5


class Net:
    """A spatial program built op by op (Conv as NTK-parameterized layer ops)."""

    def __init__(self, dims, channels, full, registers=1):
        self.fc = _fc()
        self.p = _core.SpatialProgram(list(dims), channels, full, registers)
        self.dims = {0: tuple(dims)}

    def conv(self, reg, window, strides=None, padding="SAME", w_var=1.7, b_var=0.1, dst=None):
        dims = self.dims[reg]
        strides = strides or (1,) * len(dims)
        out, pads = map(
            list, zip(*(out_size_and_pad(n, k, s, padding) for n, k, s in zip(dims, window, strides)))
        )
        dst = reg if dst is None else dst
        self.p.add_linear(reg, dst, "conv", list(dims), out, list(window), list(strides), pads,
                          padding == "CIRCULAR", False, 1.0 / math.prod(window), w_var, b_var, w_var, w_var,
                          b_var)  # fmt: skip
        self.dims[dst] = tuple(out)
        return self

    def pool(self, reg, window, normalize_edges=False):
        dims = self.dims[reg]
        out, pads = map(list, zip(*(out_size_and_pad(n, k, k, "SAME") for n, k in zip(dims, window))))
        self.p.add_linear(reg, reg, "pool", list(dims), out, list(window), list(window), pads, False,
                          normalize_edges, 1.0 / math.prod(window), 1.0, 0.0, 0.0, 1.0, 0.0)  # fmt: skip
        self.dims[reg] = tuple(out)
        return self

    def readout(self, reg, map_):
        dims = self.dims[reg]
        scale = 1.0 / math.prod(dims) ** (2 if map_ == "global" else 1)
        self.p.add_linear(reg, reg, map_, list(dims), [], [], [], [], False, False, scale, 1.3, 0.05, 1.0, 1.3,
                          0.05)  # fmt: skip
        self.dims[reg] = ()
        return self

    def act(self, reg, which=RELU):
        self.p.add_activation(reg, self.fc, which)
        return self

    def layernorm(self, reg, spatial):
        self.p.add_layernorm(reg, spatial, 1e-3)
        return self

    def residual(self, reg, tmp):
        """reg += conv(relu(conv(reg))) through register tmp (a ResNet block)."""
        self.p.add_copy(reg, tmp)
        self.dims[tmp] = self.dims[reg]
        self.act(tmp).conv(tmp, (3,) * len(self.dims[reg])).act(tmp).conv(tmp, (3,) * len(self.dims[reg]))
        self.p.add_axpy(tmp, reg, 1.0)
        return self


def cnn(full, dims=(6, 5), channels=3):
    """Conv-ReLU-Conv(stride 2)-Erf, then Flatten (diagonal regime) or AvgPool + GAP (full)."""
    n = Net(dims, channels, full)
    n.conv(0, (3, 3)).act(0).conv(0, (3, 3), (2, 2), "VALID" if not full else "SAME").act(0, ERF)
    if full:
        n.pool(0, (2, 2)).readout(0, "global")
    else:
        n.readout(0, "flatten")
    return n.p


def resnet(full, dims=(5, 4), channels=2):
    """Conv, two residual blocks (one with LayerNorm), ReLU, readout."""
    n = Net(dims, channels, full, registers=3)
    n.conv(0, (3, 3)).residual(0, 1).layernorm(0, spatial=full).residual(0, 2).act(0)
    return n.readout(0, "global" if full else "flatten").p


def spatial_out(full):
    """No readout: the output keeps its positions (S_out^2 entries per pair in the full regime)."""
    n = Net((4, 3), 2, full)
    return n.conv(0, (3, 2), (1, 1), "CIRCULAR").act(0).conv(0, (2, 2), padding="VALID").p


def one_d(full):
    return Net((9,), 2, full).conv(0, (3,)).act(0).conv(0, (4,), (2,)).act(0, ERF).readout(0, "flatten").p


def three_d(full):
    n = Net((3, 4, 3), 2, full).conv(0, (2, 3, 2)).act(0).conv(0, (3, 3, 3), padding="CIRCULAR").act(0)
    return n.readout(0, "flatten").p


PROGRAMS = {
    "cnn": cnn,
    "resnet": resnet,
    "spatial_out": spatial_out,
    "1d": one_d,
    "3d": three_d,
}


def _images(rng, sprog, n):
    return rng.standard_normal((n, *sprog.in_dims, sprog.channels))


def _cpu(sprog, x1, x2, names=("nngp", "ntk")):
    return _engine.spatial_gram(sprog, x1, x2, names, device="cpu")


def _check(gpu_outs, cpu_outs, rtol):
    for name, expected in cpu_outs.items():
        actual = gpu_outs[name]
        actual = actual.get() if isinstance(actual, cp.ndarray) else actual
        assert actual.dtype == gpu_outs[name].dtype
        assert_kernel_close(actual, expected, rtol, scale=_scale(expected), what=name)


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_gpu_matches_cpu(rng, name, full):
    sprog = PROGRAMS[name](full)
    x1, x2 = _images(rng, sprog, 7), _images(rng, sprog, 5)
    for a, b in ((x1, None), (x1, x2)):
        cpu = _cpu(sprog, a, b)
        out = _engine.spatial_gram(
            sprog, cp.asarray(a), None if b is None else cp.asarray(b), ("nngp", "ntk")
        )
        assert all(isinstance(o, cp.ndarray) and o.dtype == np.float64 for o in out.values())
        assert out["nngp"].shape == (a.shape[0], (a if b is None else b).shape[0], sprog.out_size)
        _check(out, cpu, F64)


@pytest.mark.parametrize("workspace", ["shared", "global"])
@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
def test_workspace_in_shared_or_global_memory(rng, full, workspace):
    """Both places of a block's workspace give the CPU's numbers (the automatic choice takes
    shared memory for the small states here)."""
    sprog = resnet(full)
    x1, x2 = _images(rng, sprog, 6), _images(rng, sprog, 4)
    for a, b in ((x1, None), (x1, x2)):
        cpu = _cpu(sprog, a, b)
        out, bad = gpu.spatial_gram(sprog, cp.asarray(a), None if b is None else cp.asarray(b), ("nngp", "ntk"),
                                    workspace=workspace)  # fmt: skip
        assert bad == []
        _check(out, cpu, F64)


def test_larger_images_many_bands(rng):
    """16 x 16 images in the full regime (S^2 = 65536 entries: global workspaces) and enough
    images that the pairs span several bands and several pairs per block."""
    sprog = cnn(True, dims=(16, 16), channels=3)
    x = _images(rng, sprog, 24)
    _check(_engine.spatial_gram(sprog, cp.asarray(x), None, ("nngp", "ntk")), _cpu(sprog, x, None), F64)


def test_symmetric_is_mirrored_and_diagonal_exact(rng):
    """x2=None: the lower triangle mirrors the upper (transposed in the full regime), and the
    diagonal is each image's own walk (the CPU's, to F64)."""
    sprog = spatial_out(True)
    x = _images(rng, sprog, 6)
    out = _engine.spatial_gram(sprog, cp.asarray(x), None, ("nngp", "ntk"))
    so = int(np.prod(sprog.out_dims))
    for name in ("nngp", "ntk"):
        k = out[name].get().reshape(6, 6, so, so)
        np.testing.assert_array_equal(k, k.transpose(1, 0, 3, 2))
    _check(out, _cpu(sprog, x, None), F64)


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
def test_numpy_inputs_with_device_cuda(rng, full):
    """NumPy inputs with device='cuda': NumPy outputs streamed band by band, mirrored and with
    the diagonal on the host."""
    sprog = spatial_out(full)
    x1, x2 = _images(rng, sprog, 7), _images(rng, sprog, 3)
    for a, b in ((x1, None), (x1, x2)):
        out = _engine.spatial_gram(sprog, a, b, ("nngp", "ntk"), device="cuda")
        assert all(type(o) is np.ndarray for o in out.values())
        _check(out, _cpu(sprog, a, b), F64)


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
def test_float32_storage(rng, full):
    sprog = resnet(full)
    x1, x2 = _images(rng, sprog, 5), _images(rng, sprog, 4)
    for a, b in ((x1, None), (x1, x2)):
        out = _engine.spatial_gram(sprog, cp.asarray(a), None if b is None else cp.asarray(b), ("nngp", "ntk"),
                                   dtype=np.float32)  # fmt: skip
        assert all(o.dtype == np.float32 for o in out.values())
        _check(out, _cpu(sprog, a, b), F32)


def test_nngp_only(rng):
    """Without 'ntk' Theta is not walked; the NNGP is the same."""
    sprog = cnn(True)
    x = _images(rng, sprog, 5)
    alone = _engine.spatial_gram(sprog, cp.asarray(x), None, ("nngp",))
    assert set(alone) == {"nngp"}
    _check(alone, _cpu(sprog, x, None, ("nngp",)), F64)


def test_float32_inputs_and_image_shaped_inputs(rng):
    """Images may come as (N, *dims, C) and as float32; the walk reads them as float64."""
    sprog = cnn(False)
    x = _images(rng, sprog, 4).astype(np.float32)
    out = _engine.spatial_gram(sprog, cp.asarray(x), None, ("nngp", "ntk"))
    _check(out, _cpu(sprog, x.astype(np.float64), None), F64)


def test_empty_inputs(rng):
    sprog = cnn(True)
    x = _images(rng, sprog, 3)
    out = _engine.spatial_gram(sprog, cp.asarray(x[:0]), cp.asarray(x), ("nngp",))
    assert out["nngp"].shape == (0, 3, 1)


def test_errors(rng):
    sprog = cnn(False)
    x = _images(rng, sprog, 3)
    with pytest.raises(ValueError, match="device='cpu'"):
        _engine.spatial_gram(sprog, cp.asarray(x), None, ("nngp",), device="cpu")
    with pytest.raises(TypeError, match="NumPy"):
        _engine.spatial_gram(sprog, cp.asarray(x), x, ("nngp",))
    with pytest.raises(ValueError, match="values per image"):
        _engine.spatial_gram(sprog, cp.asarray(x[..., :2]), None, ("nngp",))


def test_overflow_raises(rng):
    n = Net((3,), 1, False)
    for _ in range(4):
        n.p.add_linear(0, 0, "conv", [3], [3], [3], [1], [1], False, False, 1e80, 1.0, 0.0, 1.0, 1.0, 0.0)
    with pytest.raises(FloatingPointError, match="CNN"):
        _engine.spatial_gram(n.p, cp.asarray(rng.standard_normal((2, 3, 1))), None, ("nngp", "ntk"))


def test_diverging_gaussian_names_the_image(rng):
    """A Gaussian whose kernel diverges for an image (4 b q >= 1): the CPU driver's message,
    naming the image of the GPU input."""
    n = Net((4,), 1, True).conv(0, (3,), w_var=1.0, b_var=0.0).act(0, GAUSSIAN).readout(0, "global")
    x = 0.1 * rng.standard_normal((5, 4, 1))
    x[3] *= 100.0
    with pytest.raises(ValueError, match="image 3 of x1"):
        _engine.spatial_gram(n.p, cp.asarray(x), None, ("nngp",))
