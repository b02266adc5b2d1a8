"""Properties every kernel must have, edge inputs, dtypes and threads."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt

from conftest import TOL, assert_kernel_close, entry_scale
from reference import ntk_gram_ref
from specs import ACTIVATION_SPECS, RANDOM_ACTIVATIONS, dense, mlp, random_spec, to_fastntk

EPS = np.finfo(np.float64).eps


def _min_eig_bound(k):
    """A symmetric matrix computed to within a few ulps of each entry is PSD up to
    eigenvalue perturbations of at most ||E||_2 <= N max|E_ij| (Weyl); 64 ulps of the
    largest diagonal entry per entry is a generous bound for E."""
    return -64 * EPS * k.shape[0] * np.max(np.abs(np.diag(k)))


@pytest.mark.parametrize("seed", range(25))
def test_train_kernels_are_symmetric_and_psd(seed):
    rng = np.random.default_rng(1000 + seed)
    spec = random_spec(rng)
    net = to_fastntk(spec)
    x = rng.standard_normal((int(rng.integers(2, 60)), int(rng.integers(2, 12))))
    k = net.kernel(x)
    for m in k:
        np.testing.assert_array_equal(m, m.T)  # mirrored, so exactly symmetric
        assert np.linalg.eigvalsh(m).min() >= _min_eig_bound(m)


def test_x2_is_x1_takes_the_symmetric_path(rng):
    """x2 is x1 means x2=None (documented): exactly the same numbers, and those are the
    reference's, so a wrong symmetric path cannot hide behind the equality."""
    spec = mlp("relu", 3, b_std=0.2)
    net = to_fastntk(spec)
    x = rng.standard_normal((40, 7))
    a, b = net.kernel(x), net.kernel(x, x)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)
    for got, ref in zip(a, ntk_gram_ref(spec, x)):
        d = np.diag(ref)
        assert_kernel_close(got, ref, TOL["reference"], entry_scale(ref, d, d))


@pytest.mark.parametrize("act", ["relu", "erf", "gelu"])
def test_x2_none_equals_a_copy_of_x1(act, rng):
    """x2 = x1.copy() goes through the cross path: identical rows then meet as a pair whose
    correlation is 1 only up to the round-off of two differently ordered dot products
    (delta <= (d + 2) eps). The NNGP maps are smooth there, the NTK factor of ReLU-like
    maps is not: acos(1 - delta) = sqrt(2 delta), so the diagonal NTK may differ by
    ~depth * sqrt(2 delta) / pi relative. Everything else agrees to round-off."""
    depth, d = 3, 7
    net = to_fastntk(mlp(act, depth, b_std=0.2))
    x = rng.standard_normal((40, d))
    a, b = net.kernel(x), net.kernel(x, x.copy())
    off = ~np.eye(40, dtype=bool)
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-13)
    np.testing.assert_allclose(b.ntk[off], a.ntk[off], rtol=1e-13)
    diag_tol = depth * math.sqrt(2 * (d + 2) * EPS) / math.pi
    np.testing.assert_allclose(np.diag(b.ntk), np.diag(a.ntk), rtol=diag_tol)


def test_float32_inputs_are_computed_in_float64(rng):
    net = to_fastntk(mlp("erf", 3, b_std=0.1))
    x32 = rng.standard_normal((30, 5)).astype(np.float32)
    y32 = rng.standard_normal((20, 5)).astype(np.float32)
    # float32 -> float64 is exact, so the result equals the float64 computation on the same values.
    for a, b in ((x32, None), (x32, y32)):
        k32 = net.kernel(a, b)
        k64 = net.kernel(a.astype(np.float64), None if b is None else b.astype(np.float64))
        np.testing.assert_array_equal(k32.nngp, k64.nngp)
        np.testing.assert_array_equal(k32.ntk, k64.ntk)


def test_integer_and_noncontiguous_inputs_are_converted(rng):
    net = to_fastntk(mlp("relu", 2, b_std=0.1))
    xi = rng.integers(-5, 6, size=(12, 8))
    expected = net.kernel(xi.astype(np.float64))
    k = net.kernel(xi)
    np.testing.assert_array_equal(k.ntk, expected.ntk)
    big = rng.standard_normal((24, 16))
    view = big[::2, ::2]  # non-contiguous
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(net.kernel(view).nngp, net.kernel(np.ascontiguousarray(view)).nngp)
    # Fortran order and lists too.
    np.testing.assert_array_equal(net.kernel(np.asfortranarray(view)).ntk, net.kernel(view).ntk)
    np.testing.assert_array_equal(net.kernel(view.tolist()).ntk, net.kernel(view).ntk)


@pytest.mark.parametrize("act", RANDOM_ACTIVATIONS)
def test_zero_input_vector(act, rng):
    """A zero row with no bias in the first layer has zero variance: the angle convention
    (pi/2, as Neural Tangents) must give finite numbers that match the reference."""
    spec = [
        dense(1.0, None),
        ACTIVATION_SPECS[act][0],
        dense(1.2, 0.3),
        ACTIVATION_SPECS[act][0],
        dense(1.0, 0.1),
    ]
    x = rng.standard_normal((6, 4))
    x[2] = 0.0
    y = rng.standard_normal((3, 4))
    y[0] = 0.0
    net = to_fastntk(spec)
    for a, b in ((x, None), (x, y)):
        k = net.kernel(a, b)
        ref = ntk_gram_ref(spec, a, b)
        for m, r in zip(k, ref):
            assert np.all(np.isfinite(m))
            assert_kernel_close(m, r, TOL["reference"], scale=np.max(np.abs(r)) * 1e-3)


def test_duplicated_rows(rng):
    """Identical rows give identical kernel rows (to round-off); the pair of two
    duplicates meets the correlation-1 bound of test_x2_none_equals_a_copy_of_x1."""
    depth, d = 3, 6
    net = to_fastntk(mlp("relu", depth, b_std=0.1))
    x = rng.standard_normal((30, d))
    x[7] = x[3]
    x[20] = x[3]
    k = net.kernel(x)
    others = [i for i in range(30) if i not in (3, 7, 20)]
    for m in k:
        assert np.all(np.isfinite(m))
        assert np.linalg.eigvalsh(m).min() >= _min_eig_bound(m)
        for dup in (7, 20):
            np.testing.assert_allclose(m[dup, others], m[3, others], rtol=1e-13)
            np.testing.assert_allclose(m[dup, dup], m[3, 3], rtol=1e-14)
    np.testing.assert_allclose(k.nngp[3, 7], k.nngp[3, 3], rtol=1e-13)
    diag_tol = depth * math.sqrt(2 * (d + 2) * EPS) / math.pi
    np.testing.assert_allclose(k.ntk[3, 7], k.ntk[3, 3], rtol=diag_tol)


def test_norms_from_1e_minus_8_to_1e8_relu_family(rng):
    """Without biases a ReLU-family network is positively homogeneous: K(a x, b y) =
    a b K(x, y) exactly in exact arithmetic. Rows of norm 1e-8 .. 1e8 must match the
    reference and the scaling law."""
    scales = 10.0 ** np.arange(-8, 9)
    base = rng.standard_normal((len(scales), 5))
    x = base * scales[:, None]
    for act in ("relu", "leaky_relu", "abs", "abrelu"):
        spec = mlp(act, 4, W_std=1.3, b_std=None)
        net = to_fastntk(spec)
        k, kb = net.kernel(x), net.kernel(base)
        ref = ntk_gram_ref(spec, x)
        for m, mb, r in zip(k, kb, ref):
            assert_kernel_close(m, r, TOL["reference"], entry_scale(r, np.diag(r), np.diag(r)))
            assert_kernel_close(m, mb * np.outer(scales, scales), 1e-13, what="homogeneity")


def test_erf_limits_at_tiny_and_huge_norms(rng):
    """Erf at tiny variance is linear: erf(b x) ~ 2 b x / sqrt(pi), so its kernel tends
    to (4 b^2 / pi) Sigma, relative error O(b^2 q). At huge variance erf(b x) -> sign(x),
    whose kernel is (2/pi) asin(c) (c: the correlation), error O(1/(b^2 q))."""
    d = 6
    x = rng.standard_normal((8, d))
    q = np.sum(x * x, axis=1) / d
    c = (x @ x.T / d) / np.sqrt(np.outer(q, q))
    net = nt.serial(nt.Dense(b_std=None), nt.Erf())
    tiny = net.kernel(x * 1e-8)
    lin = (4 / np.pi) * (x @ x.T / d) * 1e-16
    np.testing.assert_allclose(tiny.nngp, lin, rtol=1e-12, atol=0)
    huge = net.kernel(x * 1e8)
    arcsine = (2 / np.pi) * np.arcsin(np.clip(c, -1, 1))
    np.testing.assert_allclose(huge.nngp, arcsine, rtol=0, atol=1e-7)
    for m in (*tiny, *huge):
        assert np.all(np.isfinite(m))


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin", "gaussian", "sign"])
def test_mixed_scales_are_finite_symmetric_psd(act, rng):
    scales = 10.0 ** rng.uniform(-8, 8, size=40)
    x = rng.standard_normal((40, 5)) * scales[:, None]
    net = to_fastntk(mlp(act, 3, b_std=0.1))
    for m in net.kernel(x):
        assert np.all(np.isfinite(m))
        np.testing.assert_array_equal(m, m.T)
        assert np.linalg.eigvalsh(m).min() >= _min_eig_bound(m)


def test_d_equals_one(rng):
    """With d = 1 every pair of inputs is exactly parallel or antiparallel; with a bias
    in the first layer the pairs are no longer parallel and all entries are well
    conditioned."""
    x = rng.standard_normal((9, 1))
    y = rng.standard_normal((4, 1))
    spec = mlp("erf_abc", 2, b_std=0.5)
    for a, b in ((x, None), (x, y)):
        ref = ntk_gram_ref(spec, a, b)
        k = to_fastntk(spec).kernel(a, b)
        for m, r in zip(k, ref):
            assert_kernel_close(m, r, TOL["reference"], np.max(np.abs(r)))
    # No bias: correlations are +-1 up to an ulp; the NNGP (smooth in c) still matches.
    spec = mlp("relu", 2, b_std=None)
    k = to_fastntk(spec).kernel(x)
    ref = ntk_gram_ref(spec, x)
    assert_kernel_close(k.nngp, ref[0], TOL["reference"], np.max(np.abs(ref[0])))
    assert np.all(np.isfinite(k.ntk))


def test_single_point(rng):
    spec = mlp("gelu", 2, b_std=0.3)
    x = rng.standard_normal((1, 5))
    k = to_fastntk(spec).kernel(x)
    ref = ntk_gram_ref(spec, x)
    assert k.nngp.shape == (1, 1)
    np.testing.assert_allclose(k.nngp, ref[0], rtol=1e-14)
    np.testing.assert_allclose(k.ntk, ref[1], rtol=1e-14)


@pytest.mark.parametrize(
    "act, W_std, b_std",
    [
        ("relu", 1.0, 0.1),  # ordered phase: every pair converges to correlation 1
        ("relu", math.sqrt(2.0), 0.0),  # critical: correlations approach 1 only polynomially
        ("erf", 1.0, 0.1),
        ("abrelu", 1.0, 0.1),
    ],
)
def test_depth_100(act, W_std, b_std, rng):
    spec = mlp(act, 100, W_std=W_std, b_std=b_std)
    x = rng.standard_normal((20, 4))
    k = to_fastntk(spec).kernel(x)
    ref = ntk_gram_ref(spec, x)
    for m, r in zip(k, ref):
        assert np.all(np.isfinite(m))
        assert_kernel_close(m, r, TOL["reference"], entry_scale(r, np.diag(r), np.diag(r)))


def test_empty_inputs(rng):
    net = to_fastntk(mlp("relu", 2))
    x = rng.standard_normal((5, 3))
    for a, b, shape in (
        (np.empty((0, 3)), None, (0, 0)),
        (np.empty((0, 3)), x, (0, 5)),
        (x, np.empty((0, 3)), (5, 0)),
    ):
        k = net.kernel(a, b)
        assert k.nngp.shape == shape and k.ntk.shape == shape
        assert k.nngp.dtype == np.float64


def test_one_thread_equals_two_threads(rng):
    net = to_fastntk(mlp("erf_abc", 4, b_std=0.2))
    x1 = rng.standard_normal((600, 11))
    x2 = rng.standard_normal((350, 11))
    try:
        nt.set_num_threads(1)
        assert nt.get_num_threads() == 1
        one = [net.kernel(x1), net.kernel(x1, x2)]
        nt.set_num_threads(2)
        two = [net.kernel(x1), net.kernel(x1, x2)]
    finally:
        nt.set_num_threads(None)
    for a, b in zip(one, two):
        for m1, m2 in zip(a, b):
            np.testing.assert_allclose(m1, m2, rtol=TOL["threads"], atol=0)
