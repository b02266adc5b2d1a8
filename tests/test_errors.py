"""Bad input: a clear exception naming the argument, raised before any work."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastntk as nt
from fastntk import _engine


@pytest.fixture
def net():
    return nt.serial(nt.Dense(b_std=0.1), nt.Relu(), nt.Dense())


def test_wrong_ndim(net):
    with pytest.raises(ValueError, match=re.escape("x1 must be a 2-D array of shape (N, d), got shape (5,)")):
        net.kernel(np.ones(5))
    with pytest.raises(
        ValueError, match=re.escape("x2 must be a 2-D array of shape (N, d), got shape (2, 3, 4)")
    ):
        net.kernel(np.ones((2, 3)), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="x1 must be a 2-D array"):
        net.kernel(3.0)


def test_no_features(net):
    with pytest.raises(
        ValueError, match=re.escape("x1 must have at least one feature (d >= 1), got shape (4, 0)")
    ):
        net.kernel(np.ones((4, 0)))


def test_mismatched_feature_dimensions(net):
    with pytest.raises(
        ValueError, match=r"same number of features: x1 has shape \(3, 4\), x2 has shape \(2, 5\)"
    ):
        net.kernel(np.ones((3, 4)), np.ones((2, 5)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_name_the_first_bad_row(net, bad):
    x = np.ones((10, 3))
    x[6, 1] = bad
    x[8, 0] = bad
    with pytest.raises(ValueError, match=r"x1 has a non-finite value \(NaN or Inf\) in row 6"):
        net.kernel(x)
    with pytest.raises(ValueError, match=r"x2 has a non-finite value \(NaN or Inf\) in row 6"):
        net.kernel(np.ones((2, 3)), x)


def test_rows_whose_norm_overflows(net):
    """Finite values whose row sum overflows are not mistaken for NaN/Inf; a row whose
    squared norm overflows float64 cannot give a finite kernel and is refused by name."""
    x = np.full((3, 4), 1e100)
    x[1, 2] = 1e308  # the row sum overflows: an exact re-check finds the values finite
    with pytest.raises(ValueError, match=r"row 1 of x1: its squared norm overflows float64"):
        net.kernel(x)
    with pytest.raises(ValueError, match=r"row 1 of x2: its squared norm overflows"):
        net.kernel(np.ones((1, 4)), x)
    k = net.kernel(x[[0, 2]] / 1e100)
    assert np.all(np.isfinite(k.nngp))


def test_non_real_dtypes(net):
    with pytest.raises(TypeError, match="x1 must be a real numeric array, got dtype complex128"):
        net.kernel(np.ones((2, 2), dtype=complex))
    with pytest.raises(TypeError, match="x1 must be a real numeric array"):
        net.kernel(np.array([["a", "b"]]))


def test_cupy_like_input_without_cuda(net, monkeypatch):
    from fastntk import _cuda_backend

    # As a build without the CUDA backend (this one may have it, with or without a GPU).
    monkeypatch.setattr(_cuda_backend, "_loaded", True)
    monkeypatch.setattr(_cuda_backend, "_module", None)

    class FakeCupy:  # an object whose type lives in a module named cupy
        pass

    FakeCupy.__module__ = "cupy._core.core"
    with pytest.raises(TypeError, match="x1 is a CuPy array, but fastntk was built without CUDA"):
        net.kernel(FakeCupy())


@pytest.mark.parametrize(
    "get, message",
    [
        ("nngps", "get: unknown kernel 'nngps'"),
        (("nngp", "cov"), "get: unknown kernel 'cov'"),
        ((), "get must be one of ('nngp', 'ntk') or a non-empty tuple of them, got ()"),
        (3, "get must be one of ('nngp', 'ntk') or a non-empty tuple of them, got 3"),
        (("ntk", "ntk"), "get names a kernel twice"),
    ],
)
def test_bad_get(net, get, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        net.kernel(np.ones((2, 2)), get=get)


def test_activation_first():
    with pytest.raises(
        ValueError, match=r"layer 0 \(Relu\(\)\) is an activation with no Dense layer before it"
    ):
        nt.serial(nt.Relu(), nt.Dense())
    with pytest.raises(ValueError, match=r"layer 1 \(Erf.*\) is an activation with no Dense layer before it"):
        nt.serial(nt.Identity(), nt.Erf(), nt.Dense())


def test_two_activations_in_a_row():
    with pytest.raises(
        ValueError, match=r"layer 2 \(Gelu\(\)\) follows another activation \(layer 1, Relu\(\)\)"
    ):
        nt.serial(nt.Dense(), nt.Relu(), nt.Gelu(), nt.Dense())
    with pytest.raises(ValueError, match=r"layer 3 \(Sign\(\)\) follows another activation \(layer 1"):
        nt.serial(nt.Dense(), nt.Relu(), nt.Identity(), nt.Sign())


def test_native_program_enforces_the_order_too():
    p = nt._core.Program()
    with pytest.raises(ValueError, match="must follow a Dense layer"):
        p.add_abrelu(0.0, 1.0)


def test_unknown_parameterization():
    with pytest.raises(ValueError, match="parameterization must be 'ntk' or 'standard', got 'NTKish'"):
        nt.Dense(parameterization="NTKish")
    assert nt.Dense(parameterization="Standard").parameterization == "standard"


@pytest.mark.parametrize("kwargs, message", [
    (dict(W_std=-1.0), "W_std must be >= 0"),
    (dict(b_std=-0.5), "b_std must be >= 0"),
    (dict(W_std=np.nan), "W_std must be a finite number"),
    (dict(b_std=np.inf), "b_std must be a finite number"),
    (dict(out_dim=0), "out_dim must be None or an integer >= 1"),
    (dict(out_dim=2.5), "out_dim must be None or an integer >= 1"),
])  # fmt: skip
def test_bad_dense_parameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        nt.Dense(**kwargs)


def test_bad_dense_parameter_types():
    with pytest.raises(TypeError, match="W_std must be a real number"):
        nt.Dense(W_std="1")
    with pytest.raises(TypeError, match="b_std must be a real number"):
        nt.Dense(b_std=True)


@pytest.mark.parametrize("make, err, message", [
    (lambda: nt.Monomial(0), ValueError, "Monomial: degree must be an integer in [1, 20], got 0"),
    (lambda: nt.Monomial(-2), ValueError, "Monomial: degree must be an integer in [1, 20], got -2"),
    (lambda: nt.Monomial(21), ValueError, "degree must be an integer in [1, 20], got 21"),
    (lambda: nt.Monomial(2.0), TypeError, "Monomial: degree must be an integer, got 2.0"),
    (lambda: nt.RectifiedMonomial(0), ValueError, "RectifiedMonomial: degree must be an integer in [1, 20]"),
    (lambda: nt.Rbf(-1.0), ValueError, "Rbf: gamma must be >= 0"),
    (lambda: nt.Erf(a=np.nan), ValueError, "Erf: a must be a finite number"),
    (lambda: nt.Sin(b=np.inf), ValueError, "Sin: b must be a finite number"),
    (lambda: nt.Cos(c="x"), TypeError, "Cos: c must be a real number"),
    (lambda: nt.LeakyRelu(np.nan), ValueError, "LeakyRelu: alpha must be a finite number"),
    (lambda: nt.ABRelu(1.0, None), TypeError, "ABRelu: b must be a real number"),
    (lambda: nt.Exp(a=np.inf), ValueError, "Exp: a must be a finite number"),
    (lambda: nt.Gaussian(b=np.nan), ValueError, "Gaussian: b must be a finite number"),
])  # fmt: skip
def test_bad_activation_parameters(make, err, message):
    with pytest.raises(err, match=re.escape(message)):
        make()


def test_gaussian_with_diverging_variance():
    """a exp(b x^2) with b > 0 has a finite kernel only while 4 b q < 1."""
    net = nt.serial(nt.Dense(b_std=None), nt.Gaussian(1.0, 0.5), nt.Dense())
    x = np.array([[0.1, 0.2], [3.0, 1.0], [5.0, 0.0]])  # q = 0.025, 5, 12.5
    with pytest.raises(
        ValueError, match=r"Gaussian\(b=0\.5.*\) at layer 1: row 1 of x1 .*q=5\.0.*4\*b\*q < 1"
    ):
        net.kernel(x)
    with pytest.raises(ValueError, match=r"row 1 of x2"):
        net.kernel(x[:1], x)
    k = net.kernel(x[:1])  # q = 0.025: fine
    assert np.all(np.isfinite(k.ntk))
    # The layer index is the one in serial(), Identity layers included.
    net = nt.serial(nt.Dense(b_std=None), nt.Identity(), nt.Gaussian(1.0, 0.5), nt.Dense())
    with pytest.raises(ValueError, match=r"at layer 2: row 1 of x1"):
        net.kernel(x)


def test_standard_parameterization_needs_the_widths():
    with pytest.raises(
        ValueError, match=r"layer 2 \(Dense.*standard.*\) .* give out_dim to the Dense layer 0"
    ):
        nt.serial(nt.Dense(), nt.Relu(), nt.Dense(parameterization="standard"))
    nt.serial(nt.Dense(parameterization="standard"), nt.Relu())  # the first layer's width is d


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match="serial: argument 1 is not a fastntk layer or network"):
        nt.serial(nt.Dense(), "relu")


def test_output_too_large_to_allocate(net, monkeypatch):
    n = 10**7  # two (1e7, 1e7) float64 outputs: 1.6e15 bytes
    calls = []
    monkeypatch.setattr(nt._core, "ntk_gram", lambda *a, **k: calls.append(a))
    x = np.broadcast_to(np.ones((1, 2)), (n, 2))
    with pytest.raises(
        MemoryError,
        match=r"need 1600000000000000 bytes \(1\.4 PiB\) for 2 float64 arrays of "
        r"shape \(10000000, 10000000\), but only \d+ bytes",
    ):
        net.kernel(x)
    with pytest.raises(MemoryError, match=r"need 800000000000000 bytes .* 1 float64 array of shape"):
        net.kernel(x, get="ntk")
    assert calls == []  # no native work started


def test_native_binding_checks_its_buffers(net):
    program = _engine.program(net, 3)
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"nngp must have shape \(4, 4\), got \(4, 3\)"):
        nt._core.ntk_gram(program, x, None, np.empty((4, 3)), None)
    with pytest.raises(ValueError, match=r"x2 must be 2-D \(N2, 3\), got shape \(2, 2\)"):
        nt._core.ntk_gram(program, x, np.ones((2, 2)), np.empty((4, 2)), None)
    with pytest.raises(ValueError, match="neither nngp nor ntk requested"):
        nt._core.ntk_gram(program, x, None, None, None)
    with pytest.raises(TypeError):  # float32 is converted by the Python layer, never by the binding
        nt._core.ntk_gram(program, x.astype(np.float32), None, np.empty((4, 4)), None)
    ro = np.empty((4, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="nngp must be writeable"):
        nt._core.ntk_gram(program, x, None, ro, None)


def test_set_num_threads_validation():
    with pytest.raises(ValueError, match="set_num_threads: n must be an integer >= 1 or None, got 0"):
        nt.set_num_threads(0)
    with pytest.raises(ValueError, match="got 1.5"):
        nt.set_num_threads(1.5)
