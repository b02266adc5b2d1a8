"""fastntk's infinite-width kernels against ensembles of real finite networks.

The reference is tests/finite_nets.py: plain-NumPy MLPs with hand-written backprop that
share no code with fastntk. Its gradient is first checked against central finite
differences, so the Monte Carlo reference itself is trustworthy; then

- NNGP: the second moment of the outputs, averaged over independent output units and
  independent networks, must approach ``net.kernel(x).nngp``;
- NTK: the parameter-gradient Gram matrix of a scalar output, averaged over independent
  networks, must approach ``net.kernel(x).ntk``;

both for the NTK and the standard parameterization, and for symmetric (x2=None) and cross
(x1, x2) calls.

Tolerances (per entry (i, j); every check uses the same rule, none is tuned by hand):

    |mean_S(K_s) - K_inf| <= Z * se + bias,   se = std_S(K_s) / sqrt(S),
    bias = C_BIAS * (L - 1) / n * sqrt(K_inf(x_i, x_i) K_inf(x_j, x_j)).

*Statistical part.* The S per-network estimates K_s are i.i.d., so their mean has standard
error std/sqrt(S), estimated from the spread itself. With S >= 64 the studentized error is
close to Student-t with >= 63 degrees of freedom, P(|t| > 5) ~ 5e-6; over the ~230
distinct entries checked in this file the union bound gives a false-alarm probability
~1e-3 for a fresh seed (the seed is fixed, so the outcome is deterministic).

*Finite-width bias.* K_s is unbiased only in the limit; at width n, E[K_s] = K_inf +
O(1/n) (Yaida 2020, "Non-Gaussian processes and neural networks at finite widths";
Hanin & Nica 2019 for the NTK). With ONE hidden layer the bias is exactly zero: the first
pre-activations are exactly Gaussian with covariance Sigma^1 at any width, the output layer
is linear in the hidden units with independent weights, so E[f f] and E[grad f . grad f]
are sums of width-independent expectations. Each further hidden layer sees a fluctuating
(not fixed) input covariance and the nonlinear dual map turns that O(1/n) variance into an
O(1/n) shift of the mean. We bound it by C_BIAS * (L - 1) / n relative to the entry scale
(n the narrowest hidden width), with C_BIAS = 1.0: measured with 2-6e4 networks at
n = 32 and 64, the coefficient n * |bias| / scale was at most 0.49 +- 0.13 (ReLU NNGP, 2
hidden layers), 0.98 +- 0.13 (ReLU NNGP, 3 hidden), 0.51 +- 0.08 (ReLU NTK, 3 hidden) and
<= 0.27 for the erf networks, in both parameterizations -- i.e. <= 0.5 per extra hidden
layer; C_BIAS takes twice that. At the widths used here the bias term is < 0.1 % of the
scale, an order of magnitude below Z * se, so the checks are limited by sampling noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt

from finite_nets import Dense, Erf, FiniteMLP, Relu

# z-value of the statistical tolerance (see the module docstring).
Z = 5.0
# Leading-order finite-width bias coefficient per hidden layer beyond the first (module docstring).
C_BIAS = 1.0

# Architectures as (kind, *args): ("dense", W_std, b_std) or an activation. The widths are
# supplied per test. Parameters follow the example for ReLU; the erf case uses a
# non-trivial (a, b, c) so that all three enter, and W_std/b_std differ from ReLU's.
RELU = ("relu",)
ERF = ("erf", 0.7, 1.6, 0.3)


def _arch(act, hidden, W_std, b_std):
    """``hidden`` (Dense, act) blocks and a readout Dense."""
    return [("dense", W_std, b_std), act] * hidden + [("dense", W_std, b_std)]


def _build(arch, widths, n_out, d, parameterization="ntk"):
    """The same architecture as a fastntk network and as a finite NumPy MLP.

    Parameters
    ----------
    arch : list of tuples
        From :func:`_arch`.
    widths : sequence of int
        Width of each hidden Dense layer.
    n_out : int
        Outputs of the readout Dense layer.
    d : int
        Input dimension.
    """
    layers, finite = [], []
    dims = iter(list(widths) + [n_out])
    for kind, *args in arch:
        if kind == "dense":
            out = next(dims)
            W_std, b_std = args
            # out_dim matters to fastntk only for the standard parameterization (n_in of the
            # next Dense); passing it always keeps both networks literally the same.
            layers.append(nt.Dense(out_dim=out, W_std=W_std, b_std=b_std, parameterization=parameterization))
            finite.append(Dense(out, W_std, b_std, parameterization))
        elif kind == "relu":
            layers.append(nt.Relu())
            finite.append(Relu())
        elif kind == "erf":
            layers.append(nt.Erf(*args))
            finite.append(Erf(*args))
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return nt.serial(*layers), FiniteMLP(finite, d)


def _inputs(rng, n=6, d=5):
    """(n, d) float64 points with varied norms, a near-parallel pair (1, 4) and an
    anti-parallel pair (0, 5), so that the arc-cosine angles span (0, pi]."""
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))
    x[4] = x[1] + 0.1 * rng.standard_normal(d)
    x[5] = -0.7 * x[0]
    return x


# The cross-kernel checks split the points into x1 = x[:SPLIT], x2 = x[SPLIT:], so that
# both special pairs (1, 4) and (0, 5) are cross pairs.
SPLIT = 4


def _compare(samples, expected, scale, bias_rel, what):
    """Entrywise |mean - expected| <= Z * se + bias_rel * scale (module docstring).

    Parameters
    ----------
    samples : ndarray, float64, (S, N1, N2)
        One estimate per independent network.
    expected : ndarray, float64, (N1, N2)
        The infinite-width kernel.
    scale : ndarray, float64, (N1, N2)
        sqrt(K(x, x) K(y, y)) of each entry.

    Returns
    -------
    float
        The worst ratio error / tolerance (< 1 passes).
    """
    S = samples.shape[0]
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(S)
    tol = Z * se + bias_rel * scale
    err = np.abs(mean - expected)
    ratio = err / tol
    i = tuple(int(k) for k in np.unravel_index(np.argmax(ratio), ratio.shape))
    msg = (
        f"{what}: worst entry {i}: |MC - analytic| = {err[i]:.3g} vs tolerance {tol[i]:.3g} "
        f"(ratio {ratio[i]:.2f}; Z*se = {Z * se[i]:.3g}, bias bound = {bias_rel * scale[i]:.3g}; "
        f"MC {mean[i]:.6g}, analytic {expected[i]:.6g}, S = {S})"
    )
    print(msg)
    if not np.all(err <= tol):
        raise AssertionError(f"{int((err > tol).sum())} entries out of tolerance; {msg}")
    return float(ratio.max())


def _check_kernel(samples, net, x, get, bias_rel, what):
    """Compare Monte Carlo estimates on all of x with net.kernel(x) and with the cross
    kernel net.kernel(x[:SPLIT], x[SPLIT:]).

    Parameters
    ----------
    samples : ndarray, float64, (S, N, N)
    get : {'nngp', 'ntk'}
    """
    full = getattr(net.kernel(x), get)
    cross = getattr(net.kernel(x[:SPLIT], x[SPLIT:]), get)
    diag = np.sqrt(np.abs(np.diag(full)))
    scale = np.outer(diag, diag)
    _compare(samples, full, scale, bias_rel, f"{what} {get} (x2=None)")
    _compare(samples[:, :SPLIT, SPLIT:], cross, scale[:SPLIT, SPLIT:], bias_rel, f"{what} {get} (x1, x2)")


def _nngp_samples(mlp, x, S, rng):
    """(S, N, N): per network, the output second moment f f^T / n_out over its output units.

    The output mean is exactly zero (W and b are symmetric about 0), so the raw second
    moment is the unbiased covariance estimate; subtracting a sample mean would bias it by
    (n_out - 1) / n_out.
    """
    out = np.empty((S, x.shape[0], x.shape[0]))
    for s in range(S):
        f = mlp.apply(mlp.init(rng), x)
        out[s] = f @ f.T / f.shape[1]
    return out


def _ntk_samples(mlp, x, S, rng):
    """(S, N, N): per network, the empirical NTK of output 0 (the exact gradient Gram)."""
    out = np.empty((S, x.shape[0], x.shape[0]))
    for s in range(S):
        out[s] = mlp.ntk(mlp.init(rng), x, output=0)
    return out


# ---------------------------------------------------------------------------------------
# The reference itself: backprop against finite differences.


FD_CASES = {
    "relu_ntk": (_arch(RELU, 2, 1.5, 0.1), "ntk"),
    "erf_ntk": (_arch(ERF, 2, 1.3, 0.2), "ntk"),
    "relu_standard": (_arch(RELU, 2, 1.5, 0.1), "standard"),
    "erf_no_bias": (_arch(ERF, 2, 1.3, None), "ntk"),
}


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_finite_net_gradient_matches_finite_differences(rng, case):
    """The hand-written backprop of tests/finite_nets.py equals central differences of its
    own forward pass, for every parameter of a tiny network."""
    arch, param = FD_CASES[case]
    _, mlp = _build(arch, widths=(4, 5), n_out=2, d=3, parameterization=param)
    x = rng.standard_normal((3, 3))
    params = mlp.init(rng)
    output = 1  # not output 0, so the seed vector e_output is exercised
    g = mlp.flat_grads(params, x, output)  # (N, P)
    theta0 = mlp.flatten(params)

    # ReLU is not differentiable at 0: require every pre-activation to be far (1e-3) from
    # the kink compared with how far a step h moves it (|dz/dtheta| h ~ 1e-5 for O(1)
    # activations and weights), so the difference quotient never straddles a kink.
    _, _, preacts = mlp._forward(params, x)
    assert min(np.abs(z).min() for z in preacts) > 1e-3

    # h = 1e-5: central-difference truncation h^2/6 |f'''| ~ 1e-11 (f is smooth in each
    # parameter away from kinks, |f'''| = O(1) at these scales) and round-off
    # eps |f| / h ~ 1e-11 for |f| = O(1). Tolerance 1e-7 * max(1, |g|) leaves four
    # decades above that, while a backprop bug (a missing phi', a wrong 1/sqrt(n_in), a
    # transposed W) is an O(1) relative error.
    h = 1e-5
    fd = np.empty_like(g)
    for p in range(theta0.size):
        tp, tm = theta0.copy(), theta0.copy()
        tp[p] += h
        tm[p] -= h
        fp = mlp.apply(mlp.unflatten(tp), x)[:, output]
        fm = mlp.apply(mlp.unflatten(tm), x)[:, output]
        fd[:, p] = (fp - fm) / (2 * h)
    err = np.abs(g - fd).max()
    tol = 1e-7 * max(1.0, np.abs(g).max())
    print(f"{case}: max |backprop - FD| = {err:.2e} (tolerance {tol:.1e}, P = {theta0.size})")
    assert err <= tol


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_finite_net_ntk_is_gradient_gram(rng, case):
    """FiniteMLP.ntk (layer-factored) equals the Gram matrix of the explicit gradients."""
    arch, param = FD_CASES[case]
    _, mlp = _build(arch, widths=(16, 24), n_out=3, d=5, parameterization=param)
    x = rng.standard_normal((4, 5))
    params = mlp.init(rng)
    g = mlp.flat_grads(params, x, output=2)
    gram = g @ g.T
    fact = mlp.ntk(params, x, output=2)
    # The two sum the same ~800 products in a different order; float64 round-off of such
    # sums of non-negative-dominated terms is ~1e-15 relative per term, << 1e-12.
    diag = np.sqrt(np.diag(gram))
    err = (np.abs(fact - gram) / np.outer(diag, diag)).max()
    print(f"{case}: max relative |factored - Gram| = {err:.1e}")
    assert err <= 1e-12


# ---------------------------------------------------------------------------------------
# Monte Carlo: NNGP.

# name: (architecture, hidden widths, outputs, networks S). Widths ~1-2k units; S chosen
# so each case runs in a few seconds on one core. One hidden layer is exactly unbiased and
# cheap (its first weight matrix is d x n), so it uses the widest net.
NNGP_CASES = {
    "relu_1hidden": (_arch(RELU, 1, 1.5, 0.1), (2048,), 256, 256),
    "erf_2hidden": (_arch(ERF, 2, 1.3, 0.2), (1024, 1024), 256, 160),
    "relu_3hidden": (_arch(RELU, 3, 1.5, 0.1), (1024, 1024, 1024), 256, 128),
}


@pytest.mark.parametrize("case", sorted(NNGP_CASES))
def test_nngp_monte_carlo(rng, case):
    """The output covariance of random finite networks approaches the analytic NNGP."""
    arch, widths, n_out, S = NNGP_CASES[case]
    x = _inputs(rng)
    net, mlp = _build(arch, widths, n_out, x.shape[1])
    samples = _nngp_samples(mlp, x, S, rng)
    bias_rel = C_BIAS * (len(widths) - 1) / min(widths)
    _check_kernel(samples, net, x, "nngp", bias_rel, case)


# ---------------------------------------------------------------------------------------
# Monte Carlo: NTK (scalar output).

NTK_CASES = {
    "erf_1hidden": (_arch(ERF, 1, 1.3, 0.2), (4096,), 128),
    "relu_2hidden": (_arch(RELU, 2, 1.5, 0.1), (2048, 1536), 64),
    "relu_3hidden": (_arch(RELU, 3, 1.5, 0.1), (1024, 1024, 1024), 96),
}


@pytest.mark.parametrize("case", sorted(NTK_CASES))
def test_ntk_monte_carlo(rng, case):
    """The parameter-gradient Gram of random finite networks approaches the analytic NTK."""
    arch, widths, S = NTK_CASES[case]
    x = _inputs(rng)
    net, mlp = _build(arch, widths, 1, x.shape[1])
    samples = _ntk_samples(mlp, x, S, rng)
    bias_rel = C_BIAS * (len(widths) - 1) / min(widths)
    _check_kernel(samples, net, x, "ntk", bias_rel, case)


# ---------------------------------------------------------------------------------------
# Monte Carlo: standard parameterization.


def test_standard_parameterization_monte_carlo(rng):
    """Standard parameterization, unequal hidden widths: NNGP and NTK of the same networks.

    The NTK here grows with the widths (Theta' = n_in Sigma + W_std^2 Theta + 1), so
    unequal widths check that each layer uses its own n_in.
    """
    arch = _arch(RELU, 2, 1.5, 0.1)
    widths, n_out, S = (768, 1536), 256, 96
    x = _inputs(rng)
    net, mlp = _build(arch, widths, n_out, x.shape[1], parameterization="standard")
    N = x.shape[0]
    nngp = np.empty((S, N, N))
    ntk = np.empty((S, N, N))
    for s in range(S):
        params = mlp.init(rng)
        f = mlp.apply(params, x)
        nngp[s] = f @ f.T / n_out
        ntk[s] = mlp.ntk(params, x, output=0)
    bias_rel = C_BIAS * (len(widths) - 1) / min(widths)
    _check_kernel(nngp, net, x, "nngp", bias_rel, "relu_2hidden_standard")
    _check_kernel(ntk, net, x, "ntk", bias_rel, "relu_2hidden_standard")
