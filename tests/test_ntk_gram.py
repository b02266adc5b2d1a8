"""The native Gram driver against the plain NumPy reference (tests/reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt
from fastntk import _engine

from conftest import TOL, assert_kernel_close, entry_scale
from reference import ntk_gram_ref
from specs import ACTIVATION_SPECS, dense, mlp, random_spec, to_fastntk


def _check_against_reference(spec, x1, x2=None, rtol=TOL["reference"]):
    net = to_fastntk(spec)
    k = net.kernel(x1, x2)
    ref_nngp, ref_ntk = ntk_gram_ref(spec, x1, x2)
    d1_nngp, d1_ntk = (np.diag(m) for m in ntk_gram_ref(spec, x1))
    if x2 is None:
        d2_nngp, d2_ntk = d1_nngp, d1_ntk
    else:
        d2_nngp, d2_ntk = (np.diag(m) for m in ntk_gram_ref(spec, x2))
    assert_kernel_close(k.nngp, ref_nngp, rtol, entry_scale(ref_nngp, d1_nngp, d2_nngp), "nngp")
    assert_kernel_close(k.ntk, ref_ntk, rtol, entry_scale(ref_ntk, d1_ntk, d2_ntk), "ntk")
    return k


@pytest.mark.parametrize("seed", range(60))
def test_random_architectures_match_reference(seed):
    """Random depth (0-5), activations and their parameters, W_std, b_std (incl. None),
    both parameterizations, Dense after Dense, Identity, and random N1, N2, d."""
    rng = np.random.default_rng(seed)
    spec = random_spec(rng)
    n1, n2, d = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(2, 30))
    x1 = rng.standard_normal((n1, d)) * rng.uniform(0.3, 3.0)
    x2 = rng.standard_normal((n2, d)) * rng.uniform(0.3, 3.0)
    _check_against_reference(spec, x1)
    _check_against_reference(spec, x1, x2)


@pytest.mark.parametrize("name", sorted(ACTIVATION_SPECS))
def test_each_activation_in_a_deep_net(name, rng):
    spec = mlp(name, 3, W_std=1.2, b_std=0.3)
    x1 = rng.standard_normal((17, 6))
    x2 = rng.standard_normal((11, 6))
    _check_against_reference(spec, x1)
    _check_against_reference(spec, x1, x2)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_many_tiles_and_remainders(parameterization, rng):
    """Sizes that are not multiples of the tile or the vector width, several tiles
    per side, symmetric and cross, against the reference."""
    widths = [13, 7, 5] if parameterization == "standard" else None
    spec = mlp("erf_abc", 3, W_std=1.1, b_std=0.2, parameterization=parameterization, widths=widths)
    x1 = rng.standard_normal((517, 9))
    x2 = rng.standard_normal((300, 9))
    _check_against_reference(spec, x1)
    _check_against_reference(spec, x1, x2)


@pytest.mark.parametrize("get", [("nngp", "ntk"), ("nngp",), ("ntk",)])
def test_wide_tiles_computed_in_the_outputs(get, rng):
    """One thread at N=2300 takes the default 256 x 2048 tiles: a band's diagonal tile holds
    its triangle (dsyrk) and a dgemm part, the last bands are narrow remainders, rows wider
    than 1024 pairs are walked in segments, and the plain kernels are computed inside the
    outputs (the NTK alone walks the NNGP in a copy), mirrored by bands of 8 rows. Against
    the reference, symmetric path and cross path (a copy of x), exactly mirrored."""
    n = 2300
    assert nt._core.default_tile(n, n, True, 1) == (256, 2048)
    spec = mlp("relu", 2, W_std=1.3, b_std=0.2)
    net = to_fastntk(spec)
    x = rng.standard_normal((n, 6))
    program = _engine.program(net, 6)
    for b in (None, x.copy()):
        ref = dict(zip(("nngp", "ntk"), ntk_gram_ref(spec, x, b)))
        outs = {name: np.empty((n, n)) for name in get}
        nt._core.ntk_gram(program, x, b, outs.get("nngp"), outs.get("ntk"), n_threads=1)
        # The cross path's pairs (i, i) are parallel only up to GEMM round-off, which acos
        # turns into ~1e-8 (DESIGN.md section 5: only x2=None has the exact diagonal).
        off = ~np.eye(n, dtype=bool) if b is not None else np.ones((n, n), bool)
        for name, out in outs.items():
            diag = np.diag(ref[name])
            scale = entry_scale(ref[name], diag, diag)[off]
            assert_kernel_close(out[off], ref[name][off], TOL["reference"], scale, name)
            if b is None:
                np.testing.assert_array_equal(out, out.T)


@pytest.mark.parametrize("threads", [1, 2, 16, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_default_tiles_give_every_thread_work(threads, symmetric):
    """At least 4 tiles per thread at N=4000 (the dynamic schedule balances them; thread
    scaling needs them), wide tiles when there are enough, never a tile below 32 rows."""
    n = 4000
    rows, cols = nt._core.default_tile(n, n, symmetric, threads)
    if symmetric:
        count = sum(math.ceil((n - i0) / cols) for i0 in range(0, n, rows))
        assert cols % rows == 0  # no tile straddles the diagonal but a band's first
    else:
        count = math.ceil(n / rows) * math.ceil(n / cols)
    assert count >= 4 * threads or rows == 32
    assert rows >= 32 and cols >= rows
    if threads <= 2:
        assert (rows, cols) == (256, 2048)


@pytest.mark.parametrize("tile", [1, 7, 8, 33, 100, 4096])
def test_tile_size_does_not_change_the_result(tile, rng):
    net = to_fastntk(mlp("relu", 3, b_std=0.1))
    x1 = rng.standard_normal((203, 5))
    x2 = rng.standard_normal((77, 5))
    program = _engine.program(net, 5)
    for a, b in ((x1, None), (x1, x2)):
        expected = net.kernel(a, b)
        shape = (a.shape[0], a.shape[0] if b is None else b.shape[0])
        nngp, ntk = np.empty(shape), np.empty(shape)
        nt._core.ntk_gram(program, a, b, nngp, ntk, n_threads=2, tile=tile)
        np.testing.assert_allclose(nngp, expected.nngp, rtol=1e-14, atol=0)
        np.testing.assert_allclose(ntk, expected.ntk, rtol=1e-14, atol=0)


def _relu_maps(s, qx, qy):
    """The arc-cosine kernel of degree 1 and its derivative kernel, written out."""
    c = max(-1.0, min(1.0, s / math.sqrt(qx * qy)))
    theta = math.acos(c)
    f = math.sqrt(qx * qy) * (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
    fdot = (math.pi - theta) / (2 * math.pi)
    return f, fdot


def test_seed_recursion_relu_literally(rng):
    """The seed's recursion with W_std = b_std = 1, pair by pair in plain Python:
    Sigma^1 = x.y/n_in + 1, Theta^1 = Sigma^1,
    Sigma^{l+1} = E[relu(u) relu(v)] + 1, Sigma-dot^{l+1} = E[relu'(u) relu'(v)] under N(0, Sigma^l),
    Theta^{l+1} = Theta^l * Sigma-dot^{l+1} + Sigma^{l+1}."""
    depth = 4
    x = rng.standard_normal((9, 5))
    n_in = x.shape[1]
    expected_nngp = np.empty((9, 9))
    expected_ntk = np.empty((9, 9))
    for i in range(9):
        for j in range(9):
            s = float(x[i] @ x[j]) / n_in + 1
            qx = float(x[i] @ x[i]) / n_in + 1
            qy = float(x[j] @ x[j]) / n_in + 1
            t = s
            for _ in range(depth):
                f, fdot = _relu_maps(s, qx, qy)
                fx, _ = _relu_maps(qx, qx, qx)
                fy, _ = _relu_maps(qy, qy, qy)
                s, qx, qy = f + 1, fx + 1, fy + 1
                t = t * fdot + s
            expected_nngp[i, j] = s
            expected_ntk[i, j] = t
    layers = [nt.Dense(W_std=1.0, b_std=1.0)]
    for _ in range(depth):
        layers += [nt.Relu(), nt.Dense(W_std=1.0, b_std=1.0)]
    k = nt.serial(*layers).kernel(x)
    # Away from the diagonal the plain-Python angles are as accurate as ours; on the
    # diagonal the literal recursion rounds its correlation to 1 - 1e-16, whose
    # arc-cosine is off by ~1e-8 (the issue fastntk's exact diagonal maps avoid), so
    # the diagonal is compared with its own derived bound: depth * sqrt(2 * 4 eps) / pi.
    off = ~np.eye(9, dtype=bool)
    np.testing.assert_allclose(k.nngp[off], expected_nngp[off], rtol=1e-13)
    np.testing.assert_allclose(k.ntk[off], expected_ntk[off], rtol=1e-13)
    np.testing.assert_allclose(np.diag(k.nngp), np.diag(expected_nngp), rtol=1e-13)
    diag_tol = depth * math.sqrt(8 * np.finfo(float).eps) / math.pi
    np.testing.assert_allclose(np.diag(k.ntk), np.diag(expected_ntk), rtol=diag_tol)


def test_depth_zero_is_the_linear_kernel(rng):
    x1, x2 = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    k = nt.serial(nt.Dense(W_std=1.7, b_std=0.4)).kernel(x1, x2)
    expected = 1.7**2 * (x1 @ x2.T) / 4 + 0.4**2
    np.testing.assert_allclose(k.nngp, expected, rtol=1e-14)
    np.testing.assert_allclose(k.ntk, expected, rtol=1e-14)  # ntk parameterization: Theta = Sigma
    ks = nt.serial(nt.Dense(W_std=1.7, b_std=0.4, parameterization="standard")).kernel(x1, x2)
    np.testing.assert_allclose(ks.ntk, x1 @ x2.T + 1, rtol=1e-14)  # d * Sigma^0 + 1


def test_get_variants(rng):
    net = to_fastntk(mlp("gelu", 2, b_std=0.1))
    x = rng.standard_normal((8, 3))
    both = net.kernel(x)
    assert both._fields == ("nngp", "ntk")
    nngp = net.kernel(x, get="nngp")
    ntk = net.kernel(x, get="ntk")
    assert isinstance(nngp, np.ndarray) and isinstance(ntk, np.ndarray)
    np.testing.assert_array_equal(nngp, both.nngp)
    np.testing.assert_array_equal(ntk, both.ntk)
    rev = net.kernel(x, get=("ntk", "nngp"))
    assert rev._fields == ("ntk", "nngp")
    np.testing.assert_array_equal(rev.ntk, both.ntk)
    only = net.kernel(x, get=["ntk"])
    assert only._fields == ("ntk",)
    np.testing.assert_array_equal(only.ntk, both.ntk)


def test_outputs_are_float64_numpy(rng):
    net = to_fastntk(mlp("relu", 1))
    k = net.kernel(rng.standard_normal((4, 3)).astype(np.float32))
    for m in k:
        assert type(m) is np.ndarray and m.dtype == np.float64 and m.flags.c_contiguous


def test_dense_after_dense_and_identity_match_reference(rng):
    spec = [
        dense(1.3, 0.2),
        dense(0.8, None),
        ("identity", {}),
        ACTIVATION_SPECS["relu"][0],
        ("identity", {}),
        dense(1.1, 0.5),
        dense(0.9, 0.1),
    ]
    x = rng.standard_normal((12, 4))
    _check_against_reference(spec, x)


@pytest.mark.parametrize("seed", range(6))
def test_diagonal_alone_equals_the_gram_diagonal(seed):
    """_core.ntk_diag (O(N d), for GP kernels' diag) gives the symmetric Gram's diagonal
    exactly: both come from the same exact diagonal maps."""
    rng = np.random.default_rng(seed)
    spec = random_spec(rng)
    net = to_fastntk(spec)
    x = rng.standard_normal((int(rng.integers(1, 30)), 4))
    q, t = nt._core.ntk_diag(_engine.program(net, 4), x)
    k = net.kernel(x)
    np.testing.assert_array_equal(q, np.diag(k.nngp))
    np.testing.assert_array_equal(t, np.diag(k.ntk))
    ref = ntk_gram_ref(spec, x)
    np.testing.assert_allclose(t, np.diag(ref[1]), rtol=TOL["reference"])
