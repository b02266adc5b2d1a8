"""Finite networks: ``net.init``, ``net.apply`` and the structured empirical kernels against
independent references (tests/empirical_ref.py, which shares no code with fastntk).

For every activation and both parameterizations, on small networks:

- ``apply`` equals the reference forward pass;
- the reference's explicit Jacobian (written out entry by entry from backprop, one output
  at a time) equals central finite differences of the reference forward pass;
- ``empirical_ntk`` equals J J^T from the explicit Jacobian and from the finite
  differences, traced and full, for x2=None and for x1 != x2;
- ``empirical_nngp`` equals f f^T of the reference outputs.

Tolerances (each derived, none tuned):

- RTOL = 1e-12 of the entry scale, for fastntk against the explicit Jacobian and the
  reference forward pass. Both sides compute the same sums of at most P ~ 100 products in
  different orders (BLAS blocks vs NumPy), and a float64 sum of K products is within
  gamma_K = K u / (1 - K u) ~ K * 1.1e-16 of its Cauchy-Schwarz scale (Higham 3.1), so
  the difference is ~1e-14 of the scale; the forward and backward passes (two or three
  layers of width <= 8) add a few roundings per layer, amplified at most by the
  activations' Lipschitz constants on these inputs (< 30). A wrong index, a missing
  layer or a misplaced scale is an O(1) relative error.
  The scale of an NTK entry is its Cauchy-Schwarz bound ||J_o(x_i)|| ||J_o'(x_j)||
  (averaged over o for the traced kernel); of an output, 1 + |f|.
- Finite differences: step H = 1e-5; per-entry error of a central difference is
  H^2 / 6 |f'''| (truncation, ~1e-11 for the O(1)-scaled smooth functions here) plus
  u |f| / H (round-off, ~1e-11). FD_ATOL = 1e-7 * max(1, max|J|) leaves four decades
  above that (as tests/test_monte_carlo.py does for its reference). Propagated to a
  kernel entry, |J_fd J_fd'^T - J J'^T| <= FD_ATOL (||J_i||_1 + ||J_j||_1) + P FD_ATOL^2.
  Points are drawn so that every pre-activation is at least MARGIN = 1e-3 from the kinks
  at 0 (a parameter step moves it by ~1e-5), so no difference quotient straddles one.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt

from empirical_ref import (
    empirical_nngp_ref,
    empirical_ntk_ref,
    flatten,
    forward_ref,
    jacobian_ref,
    unflatten,
)
from specs import ACTIVATION_SPECS, dense, random_spec, to_fastntk

RTOL = 1e-12
H = 1e-5
FD_REL = 1e-7
MARGIN = 1e-3

D_IN = 3


def _small_spec(activation: str, parameterization: str):
    """Dense(5), act, Dense(4, no bias), act, Dense(3): every kind of Dense term."""
    act = ACTIVATION_SPECS[activation][0]
    return [
        dense(1.3, 0.2, parameterization, 5),
        act,
        dense(1.1, None, parameterization, 4),
        act,
        dense(0.9, 0.3, parameterization, 3),
    ]


def _points(rng, spec, params, n):
    """n points whose pre-activations all lie at least MARGIN from 0 (rejection sampling)."""
    for _ in range(100):
        x = rng.standard_normal((n, D_IN))
        pre = [forward_ref(spec[:k], params[:k], x) for k, (name, _) in enumerate(spec) if name != "dense"]
        if all(np.abs(z).min() > MARGIN for z in pre):
            return x
    raise AssertionError("could not draw points away from the kinks")  # pragma: no cover


def _fd_jacobians(spec, params, x):
    """Central differences of the reference forward pass: (n_out, N, P)."""
    theta = flatten(params)
    cols = []
    for p in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[p] += H
        tm[p] -= H
        fp = forward_ref(spec, unflatten(tp, params), x)
        fm = forward_ref(spec, unflatten(tm, params), x)
        cols.append((fp - fm) / (2 * H))
    return np.stack(cols, axis=-1).transpose(1, 0, 2)


def _ntk_from(j1, j2, trace):
    """Kernel from Jacobians (n_out, N, P): traced mean over o, or [i, j, o, o']."""
    full = np.einsum("aip,bjp->ijab", j1, j2)
    return np.einsum("ijoo->ij", full) / j1.shape[0] if trace else full


def _cs_scale(j1, j2, trace):
    """Cauchy-Schwarz scale ||J_o(x_i)|| ||J_o'(x_j)|| of each entry."""
    n1, n2 = np.linalg.norm(j1, axis=2), np.linalg.norm(j2, axis=2)  # (n_out, N)
    full = np.einsum("ai,bj->ijab", n1, n2)
    return np.einsum("ijoo->ij", full) / j1.shape[0] if trace else full


def _fd_bound(j1, j2, atol, trace):
    """FD error bound of each kernel entry (module docstring)."""
    l1a, l1b = np.abs(j1).sum(axis=2).T, np.abs(j2).sum(axis=2).T  # (N, n_out)
    full = atol * (l1a[:, None, :, None] + l1b[None, :, None, :]) + j1.shape[2] * atol**2
    return np.einsum("ijoo->ij", full) / j1.shape[0] if trace else full


def _assert_within(actual, expected, bound, what):
    err = np.abs(actual - expected)
    ratio = float((err / bound).max())
    assert ratio <= 1.0, f"{what}: worst error is {ratio:.2f} x its tolerance"


def _assert_rel(actual, expected, scale, what):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    _assert_within(actual, expected, RTOL * scale, what)


ACTIVATIONS = sorted(ACTIVATION_SPECS)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_empirical_kernels_match_jacobian_and_finite_differences(rng, activation, parameterization):
    spec = _small_spec(activation, parameterization)
    net = to_fastntk(spec)
    params = net.init(int(rng.integers(2**31)), D_IN)
    x1 = _points(rng, spec, params, 4)
    x2 = _points(rng, spec, params, 3)

    # apply vs the reference forward pass
    f1 = net.apply(params, x1)
    _assert_rel(f1, forward_ref(spec, params, x1), 1 + np.abs(f1), "apply")

    m = f1.shape[1]
    jac1 = np.stack([jacobian_ref(spec, params, x1, o) for o in range(m)])  # (m, N1, P)
    jac2 = np.stack([jacobian_ref(spec, params, x2, o) for o in range(m)])
    fd1, fd2 = _fd_jacobians(spec, params, x1), _fd_jacobians(spec, params, x2)

    # the reference Jacobian itself vs finite differences
    atol = FD_REL * max(1.0, np.abs(fd1).max(), np.abs(fd2).max())
    _assert_within(jac1, fd1, atol, "reference Jacobian vs FD (x1)")
    _assert_within(jac2, fd2, atol, "reference Jacobian vs FD (x2)")

    for trace in (True, False):
        axes = (-1,) if trace else ()
        for b, j2, f2 in ((None, jac1, fd1), (x2, jac2, fd2)):
            what = f"{'traced' if trace else 'full'} x2={'None' if b is None else 'x2'}"
            ours = net.empirical_ntk(params, x1, b, trace_axes=axes)
            _assert_rel(
                ours, _ntk_from(jac1, j2, trace), _cs_scale(jac1, j2, trace), f"ntk vs Jacobian, {what}"
            )
            _assert_within(
                ours, _ntk_from(fd1, f2, trace), _fd_bound(fd1, f2, atol, trace), f"ntk vs FD, {what}"
            )
            nngp = net.empirical_nngp(params, x1, b, trace_axes=axes)
            ref = empirical_nngp_ref(spec, params, x1, b, trace)
            g1 = np.abs(forward_ref(spec, params, x1))
            g2 = g1 if b is None else np.abs(forward_ref(spec, params, b))
            scale = (g1 @ g2.T / m) if trace else g1[:, None, :, None] * g2[None, :, None, :]
            _assert_rel(nngp, ref, scale + 1e-300, f"nngp, {what}")


def _random_finite_spec(rng):
    """tests/specs.py's random architectures (Dense after Dense, Identity, b_std=None, both
    parameterizations) with a width for every Dense layer."""
    spec = random_spec(rng, max_depth=3)
    out = []
    for name, p in spec:
        if name == "dense":
            p = dict(p, out_dim=int(rng.integers(2, 7)))
        out.append((name, p))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_architectures_match_jacobian(seed):
    rng = np.random.default_rng(1000 + seed)
    spec = _random_finite_spec(rng)
    net = to_fastntk(spec)
    params = net.init(seed, D_IN)
    x1, x2 = rng.standard_normal((5, D_IN)), rng.standard_normal((3, D_IN))
    for trace in (True, False):
        for b in (None, x2):
            ours = net.empirical_ntk(params, x1, b, trace_axes=(-1,) if trace else ())
            m = forward_ref(spec, params, x1).shape[1]
            j1 = np.stack([jacobian_ref(spec, params, x1, o) for o in range(m)])
            j2 = j1 if b is None else np.stack([jacobian_ref(spec, params, b, o) for o in range(m)])
            ref = empirical_ntk_ref(spec, params, x1, b, trace)
            _assert_rel(ours, ref, _cs_scale(j1, j2, trace), f"{spec} trace={trace} x2={b is not None}")


def test_activation_after_the_last_dense_layer(rng):
    """An output activation: the back-propagated signal starts diagonal, not the identity."""
    spec = [dense(1.2, 0.1, "ntk", 6), ACTIVATION_SPECS["relu"][0], dense(1.0, 0.2, "ntk", 3),
            ACTIVATION_SPECS["erf_abc"][0]]  # fmt: skip
    net = to_fastntk(spec)
    params = net.init(3, D_IN)
    x = _points(rng, spec, params, 5)
    for trace in (True, False):
        ours = net.empirical_ntk(params, x, trace_axes=(-1,) if trace else ())
        j = np.stack([jacobian_ref(spec, params, x, o) for o in range(3)])
        _assert_rel(
            ours, empirical_ntk_ref(spec, params, x, None, trace), _cs_scale(j, j, trace), "output act"
        )


def test_network_without_parameters(rng):
    """No Dense layer: f = x, no parameters, so the NTK is 0 and the NNGP is x x'^T / d."""
    net = nt.serial(nt.Identity())
    params = net.init(0, 4)
    assert params == [()]
    x1, x2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    np.testing.assert_array_equal(net.apply(params, x1), x1)
    np.testing.assert_array_equal(net.empirical_ntk(params, x1, x2), 0.0)
    np.testing.assert_allclose(net.empirical_nngp(params, x1, x2), x1 @ x2.T / 4, rtol=1e-14)


@pytest.mark.parametrize("trace", [True, False], ids=["traced", "full"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_batched_kernels_match_jacobian(rng, trace, batch_size):
    """Points in blocks of batch_size (for x2=None, diagonal blocks plus mirrored
    off-diagonal ones) give the kernels of the explicit Jacobian, and x2=None stays
    exactly symmetric."""
    spec = _small_spec("erf_abc", "ntk")
    net = to_fastntk(spec)
    params = net.init(5, D_IN)
    x1, x2 = rng.standard_normal((7, D_IN)), rng.standard_normal((4, D_IN))
    axes = (-1,) if trace else ()
    m = 3
    for b in (None, x2):
        j1 = np.stack([jacobian_ref(spec, params, x1, o) for o in range(m)])
        j2 = j1 if b is None else np.stack([jacobian_ref(spec, params, b, o) for o in range(m)])
        batched = net.empirical_ntk(params, x1, b, trace_axes=axes, batch_size=batch_size)
        ref = empirical_ntk_ref(spec, params, x1, b, trace)
        _assert_rel(batched, ref, _cs_scale(j1, j2, trace), f"batch_size={batch_size}")
        if b is None:
            np.testing.assert_array_equal(batched, batched.T if trace else batched.transpose(1, 0, 3, 2))
        nngp = net.empirical_nngp(params, x1, b, trace_axes=axes, batch_size=batch_size)
        f1 = np.abs(forward_ref(spec, params, x1))
        f2 = f1 if b is None else np.abs(forward_ref(spec, params, b))
        scale = f1 @ f2.T / m if trace else f1[:, None, :, None] * f2[None, :, None, :]
        _assert_rel(nngp, empirical_nngp_ref(spec, params, x1, b, trace), scale, "nngp batched")


def test_traced_is_the_mean_of_the_full_diagonal(rng):
    """Neural Tangents' convention: trace_axes=(-1,) contracts the output axis and divides
    by its size."""
    net = to_fastntk(_small_spec("gelu", "standard"))
    params = net.init(11, D_IN)
    x = rng.standard_normal((6, D_IN))
    full = net.empirical_ntk(params, x, trace_axes=())
    traced = net.empirical_ntk(params, x)
    # The same sums, regrouped: the difference is round-off of the traced GEMM's longer sums.
    np.testing.assert_allclose(
        traced, np.einsum("ijoo->ij", full) / 3, rtol=1e-12, atol=1e-12 * np.abs(traced).max()
    )


def test_kinks_take_jax_values():
    """Where an activation has a kink, its derivative takes the value JAX's autodiff gives
    (what Neural Tangents' empirical kernels use): min/max split evenly at 0, and
    ``(x >= 0) * x**n`` takes its polynomial branch at 0."""
    z = np.array([0.0])
    assert nt.Relu().derivative(z)[0] == 0.5
    assert nt.ABRelu(0.3, 2.0).derivative(z)[0] == pytest.approx(1.15, abs=1e-15)
    assert nt.Abs().derivative(z)[0] == 0.0
    assert nt.RectifiedMonomial(1).derivative(z)[0] == 1.0
    assert nt.RectifiedMonomial(2).derivative(z)[0] == 0.0
    assert nt.Sign().derivative(np.array([-1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "identity"])
def test_activation_derivatives_match_finite_differences(activation):
    """Each layer's NumPy derivative against central differences of its own fn, away
    from kinks (error bound as in the module docstring, relative to max(1, |phi'|))."""
    layer = ACTIVATION_SPECS[activation][1]()
    z = np.concatenate([np.linspace(-2.5, -0.01, 40), np.linspace(0.01, 2.5, 40)])
    fd = (layer.fn(z + H) - layer.fn(z - H)) / (2 * H)
    d = layer.derivative(z)
    assert np.all(np.abs(d - fd) <= FD_REL * np.maximum(1.0, np.abs(d)))


# ---------------------------------------------------------------------------------------
# init


def test_init_is_deterministic_and_shaped():
    net = nt.serial(nt.Dense(6, b_std=0.1), nt.Relu(), nt.Dense(4, b_std=None), nt.Erf(), nt.Dense(2))
    a, b = net.init(7, 3), net.init(np.random.SeedSequence(7), 3)
    assert [() if not p else (p[0].shape, None if p[1] is None else p[1].shape) for p in a] == [
        ((3, 6), (6,)), (), ((6, 4), None), (), ((4, 2), (2,)),
    ]  # fmt: skip
    for p, q in zip(a, b):
        if p:
            np.testing.assert_array_equal(p[0], q[0])
            assert (p[1] is None) == (q[1] is None)
            if p[1] is not None:
                np.testing.assert_array_equal(p[1], q[1])
    c = net.init(8, 3)
    assert not np.array_equal(a[0][0], c[0][0])
    # a Generator is drawn from: two calls give two networks
    g = np.random.default_rng(7)
    assert not np.array_equal(net.init(g, 3)[0][0], net.init(g, 3)[0][0])


def test_init_standard_is_scaled_ntk_draw():
    """Both parameterizations draw standard normals in the same order; the standard one
    stores them scaled: W * W_std / sqrt(fan_in), b * b_std (Neural Tangents' init)."""
    ntk = nt.serial(nt.Dense(5, W_std=1.7, b_std=0.4), nt.Relu(), nt.Dense(3, W_std=0.8, b_std=0.2))
    std = nt.serial(*(nt.Dense(layer.out_dim, layer.W_std, layer.b_std, "standard") if isinstance(layer, nt.Dense)
                      else layer for layer in ntk.layers))  # fmt: skip
    p, q = ntk.init(3, 4), std.init(3, 4)
    np.testing.assert_array_equal(q[0][0], p[0][0] * (1.7 / 2.0))
    np.testing.assert_array_equal(q[0][1], p[0][1] * 0.4)
    np.testing.assert_allclose(q[2][0], p[2][0] * (0.8 / np.sqrt(5)), rtol=1e-15)
    # ... and the two networks compute the same function.
    x = np.random.default_rng(0).standard_normal((4, 4))
    np.testing.assert_allclose(ntk.apply(p, x), std.apply(q, x), rtol=1e-13, atol=1e-14)


def test_init_draws_standard_normals():
    """Mean 0 and variance 1 within 5 standard errors (n draws: se(mean) = 1/sqrt(n),
    se(variance) = sqrt(2/n))."""
    net = nt.serial(nt.Dense(300), nt.Relu(), nt.Dense(200))
    params = net.init(0, 400)
    w = np.concatenate([params[0][0].ravel(), params[2][0].ravel()])
    n = w.size
    assert abs(w.mean()) < 5 / np.sqrt(n)
    assert abs(w.var() - 1) < 5 * np.sqrt(2 / n)
    # and the layers are independent draws, not copies
    assert not np.array_equal(params[0][0][:200, :200], params[2][0][:200, :200])
