"""``fastntk.monte_carlo_kernel``: the average of empirical kernels over independent
networks, against the analytic infinite-width kernels ``net.kernel``.

Each check draws the same S networks the estimate uses (sample s is
``net.init(SeedSequence(seed).spawn(S)[s], d)``, as documented), so that

1. the estimate equals the mean of the S per-network empirical kernels, to the round-off
   of summing S terms (|difference| <= 4 S u max_s |K_s|, u = 2^-53: each of the two
   summation orders is within gamma_S max|K_s| of the exact mean);
2. the mean is within Z standard errors of the analytic kernel, the standard error
   estimated from the spread of the S kernels, plus a bound on the finite-width bias:

       |mean_S(K_s) - K_inf| <= Z * std_S(K_s) / sqrt(S) + C_BIAS * (L - 1) / n * scale,

   with the constants and their justification from tests/test_monte_carlo.py: Z = 5
   (P(|t_{S-1}| > 5) ~ 1e-5 per entry for S >= 64; a few hundred entries here), the bias
   exactly 0 for one hidden layer (first-layer pre-activations are exactly Gaussian and
   the readout is linear with independent weights, at any width) and, for L hidden
   layers, at most C_BIAS = 1 times (L - 1) / n of the entry scale sqrt(K(x,x) K(y,y))
   (measured <= 0.5 per extra layer for ReLU and erf networks). Deeper networks are
   only tested with those two activations, where the constant was measured. A round-off
   floor (ROUNDOFF) covers entries that do not vary between networks.

With ``trace_axes=()`` the infinite-width kernel is K_inf (x) I: the diagonal blocks
o = o' approach K_inf and the off-diagonal ones 0 -- exactly 0 in expectation at any
width, since flipping the sign of the readout weights of output o flips f_o and its
gradient and leaves f_o' unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt

Z = 5.0
C_BIAS = 1.0
U = 2.0**-53
# Entries without sampling noise (e.g. Sign's diagonal, 1 for every network) still differ by
# round-off: the empirical side sums n <= 1024 products per layer, within gamma_n ~ 1.2e-13
# of the scale, and the analytic side is exact to ~1e-15. 1e-12 of the largest entry.
ROUNDOFF = 1e-12


def _inputs(rng, n=6, d=5):
    """Points with varied norms, a near-parallel pair (1, 4) and an anti-parallel one (0, 5)."""
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))
    x[4] = x[1] + 0.1 * rng.standard_normal(d)
    x[5] = -0.7 * x[0]
    return x


def _mlp(act, widths, n_out, W_std, b_std, parameterization="ntk"):
    return nt.mlp(act, len(widths), W_std=W_std, b_std=b_std, width=widths, n_out=n_out,
                  parameterization=parameterization)  # fmt: skip


def _per_network(net, x1, x2, S, seed, trace_axes):
    """{'nngp', 'ntk'}: (S, ...) empirical kernels of the S networks monte_carlo_kernel draws."""
    out = {"nngp": [], "ntk": []}
    for child in np.random.SeedSequence(seed).spawn(S):
        params = net.init(child, x1.shape[1])
        out["nngp"].append(net.empirical_nngp(params, x1, x2, trace_axes=trace_axes))
        out["ntk"].append(net.empirical_ntk(params, x1, x2, trace_axes=trace_axes))
    return {k: np.stack(v) for k, v in out.items()}


def _check_statistics(samples, expected, bias, what):
    S = samples.shape[0]
    mean = samples.mean(axis=0)
    tol = Z * samples.std(axis=0, ddof=1) / math.sqrt(S) + bias + ROUNDOFF * np.abs(expected).max()
    ratio = np.abs(mean - expected) / tol
    worst = np.unravel_index(np.argmax(ratio), ratio.shape)
    print(f"{what}: worst |MC - analytic| / tolerance = {ratio[worst]:.2f} at {worst}")
    assert np.all(ratio <= 1.0), (
        f"{what}: {int((ratio > 1).sum())} entries out of tolerance; worst at {worst}: MC {mean[worst]:.6g}, "
        f"analytic {expected[worst]:.6g}, tolerance {tol[worst]:.3g}"
    )


def _check(net, x1, x2, S, seed, n_hidden, width, trace_axes=(-1,)):
    """Both kernels of monte_carlo_kernel against the per-network mean and net.kernel."""
    mc = nt.monte_carlo_kernel(net, x1, x2, n_samples=S, seed=seed, trace_axes=trace_axes)
    analytic = net.kernel(x1, x2)
    d1 = net.kernel(x1)
    d2 = d1 if x2 is None else net.kernel(x2)
    per_network = _per_network(net, x1, x2, S, seed, trace_axes)
    for get in ("nngp", "ntk"):
        samples = per_network[get]
        estimate = getattr(mc, get)
        roundoff = 4 * S * U * np.abs(samples).max(axis=0)
        assert np.all(np.abs(estimate - samples.mean(axis=0)) <= roundoff), (
            f"{get}: not the mean of the networks"
        )
        k_inf = getattr(analytic, get)
        scale = np.sqrt(np.outer(np.diag(getattr(d1, get)), np.diag(getattr(d2, get))))
        bias = C_BIAS * (n_hidden - 1) / width * scale
        if trace_axes == ():
            m = samples.shape[-1]
            eye = np.eye(m, dtype=bool)
            expected = np.where(eye, k_inf[:, :, None, None], 0.0)
            bias = np.where(eye, bias[:, :, None, None], 0.0)
            _check_statistics(samples, expected, bias, f"{get} full")
        else:
            _check_statistics(samples, k_inf, bias, get)


def test_relu_two_hidden_layers(rng):
    x = _inputs(rng)
    net = _mlp(nt.Relu(), (512, 512), 4, 1.5, 0.1)
    _check(net, x, None, 256, 1, n_hidden=2, width=512)
    _check(net, x[:4], x[4:], 256, 2, n_hidden=2, width=512)


def test_erf_two_hidden_layers_standard_parameterization(rng):
    """Unequal widths: the standard parameterization's NTK uses each layer's own fan-in."""
    x = _inputs(rng)
    net = nt.serial(nt.Dense(384, 1.3, 0.2, "standard"), nt.Erf(0.7, 1.6, 0.3),
                    nt.Dense(768, 1.3, 0.2, "standard"), nt.Erf(0.7, 1.6, 0.3),
                    nt.Dense(3, 1.3, 0.2, "standard"))  # fmt: skip
    _check(net, x, None, 192, 3, n_hidden=2, width=384)


@pytest.mark.parametrize(
    "name, act",
    [("gelu", nt.Gelu()), ("abrelu", nt.ABRelu(-0.4, 1.3)), ("cos", nt.Cos(0.9, 1.1, -0.2)),
     ("gaussian", nt.Gaussian(1.1, -0.6)), ("rect_monomial2", nt.RectifiedMonomial(2)),
     ("sign", nt.Sign())],
)  # fmt: skip
def test_one_hidden_layer_is_unbiased(rng, name, act):
    """One hidden layer: no finite-width bias, so any activation is held to Z se alone."""
    x = _inputs(rng)
    net = _mlp(act, (1024,), 3, 1.2, 0.2)
    _check(net, x, None, 256, 4, n_hidden=1, width=1024)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_full_kernel_is_analytic_times_identity(rng, parameterization):
    x = _inputs(rng)
    net = _mlp(nt.Erf(), (1024,), 3, 1.3, 0.2, parameterization)
    _check(net, x, None, 256, 5, n_hidden=1, width=1024, trace_axes=())
    _check(net, x[:4], x[4:], 256, 6, n_hidden=1, width=1024, trace_axes=())


def test_one_sample_is_the_documented_network(rng):
    """n_samples=1 is exactly the empirical kernel of net.init(SeedSequence(seed).spawn(1)[0])."""
    x = _inputs(rng)
    net = _mlp(nt.Relu(), (16,), 2, 1.5, 0.1)
    mc = nt.monte_carlo_kernel(net, x, n_samples=1, seed=9, get=("ntk", "nngp"))
    assert mc._fields == ("ntk", "nngp")
    params = net.init(np.random.SeedSequence(9).spawn(1)[0], x.shape[1])
    np.testing.assert_array_equal(mc.ntk, net.empirical_ntk(params, x))
    np.testing.assert_array_equal(mc.nngp, net.empirical_nngp(params, x))
    # Both sides above run the same assembly; the documented network itself, in NumPy:
    (W1, b1), _, (W2, b2) = params
    h = np.maximum(1.5 * x @ W1 / np.sqrt(x.shape[1]) + 0.1 * b1, 0.0)
    f = 1.5 * h @ W2 / np.sqrt(16) + 0.1 * b2
    np.testing.assert_allclose(mc.nngp, f @ f.T / 2, rtol=1e-13, atol=1e-13 * np.abs(f).max() ** 2)
    seq = np.random.SeedSequence(9)
    single = nt.monte_carlo_kernel(net, x, n_samples=1, seed=seq, get="ntk")
    np.testing.assert_array_equal(single, mc.ntk)
    assert seq.n_children_spawned == 0  # a SeedSequence passed in is left as it was


@pytest.mark.parametrize("trace_axes", [(-1,), ()])
def test_batch_size_does_not_change_the_estimate(rng, trace_axes):
    """Blocks of points change only the grouping of the same sums: round-off, 1e-12 of the
    largest entry (the sums are over <= 40 products of O(1) numbers, and 8 samples)."""
    x = _inputs(rng, n=7)
    net = _mlp(nt.Gelu(), (40, 30), 3, 1.2, 0.1)
    whole = nt.monte_carlo_kernel(net, x, n_samples=8, seed=3, trace_axes=trace_axes)
    for batch in (1, 3):
        part = nt.monte_carlo_kernel(net, x, n_samples=8, seed=3, trace_axes=trace_axes, batch_size=batch)
        for a, b in zip(part, whole):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
