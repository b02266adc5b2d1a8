"""Each activation's closed-form dual maps against quadrature of the activation itself.

The values under test come from the native core's test hooks: for op 1 (the activation)
of ``serial(Dense(), ACT)``, ``_core.dual_map`` gives F(qx, qy, s) = E[phi(u) phi(v)] and
S(qx, qy, s) = E[phi'(u) phi'(v)] for (u, v) ~ N(0, [[qx, s], [s, qy]]), and
``_core.dual_map_diag`` the diagonal forms F(q, q, q), S(q, q, q). The expected values are
computed here from phi and phi' alone (written below in NumPy, with Neural Tangents'
parameter conventions) by `tests/quadrature.py`: tensor Gauss-Hermite for the smooth
activations, composite Gauss-Legendre for the steep smooth ones (Erf, Gelu, Gaussian with
b < 0), and a polar rule split at the kinks for the positively homogeneous ones (ABRelu
family, Sign, RectifiedMonomial).

The grid: all ordered pairs of the variances (0.25, 1, 2.5, 4) with correlations
-0.9999, -0.9, -0.5, 0, 0.3, 0.8, 0.9999, and c = +-1 where both variances are powers of 4
(then sqrt(q) and 1/sqrt(q) are exact, so the core's c = s (1/sqrt(qx)) (1/sqrt(qy)) is
exactly +-1); the diagonal maps at those variances and 1/16; and zero-variance points.

Tolerance
---------
By Cauchy-Schwarz |E[g(u) g(v)]| <= sqrt(E[g(u)^2] E[g(v)^2]), so the natural scale of an
entry is scale = sqrt(F(qx, qx, qx) F(qy, qy, qy)) for F (and likewise with S for S); the
kernels the library returns are judged relative to the same scale. Against it:

- each closed form is a handful of libm calls and products of terms no larger than the
  scale (e.g. Sin's difference of two exponentials, the Wick sum of a Monomial, whose terms
  add up to the c = 1 value), so its round-off is a few tens of ulps, ~1e-14 (observed:
  below 1e-14 everywhere);
- the quadrature's own error is checked in every test to be below QUAD_TOL = 1e-13 of the
  scale, by comparing the rule with n and with 2n nodes (both converge geometrically or
  faster, so the finer rule is then accurate to round-off);
- the angle-based maps (ABRelu, Sign, RectifiedMonomial) are evaluated at c = s/sqrt(qx qy)
  computed in floating point; an ulp in c moves S by (a-b)^2/(2 pi) * 1e-16 / sin(theta),
  which is 1e-14 of the scale at c = +-0.9999, the nearest-to-parallel interior point.

RTOL = 1e-11 (conftest's TOL["quadrature"]) therefore leaves a margin of about 100 over
both error sources without hiding a wrong term, which would show at 1e-3 or worse.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

import fastntk as nt
from fastntk import _engine

from conftest import TOL
from quadrature import composite, gauss_hermite, polar

RTOL = TOL["quadrature"]
# The n-vs-2n difference allowed for the quadrature itself (relative to the scale): the
# expected values must be two orders more accurate than the tolerance they are held to.
QUAD_TOL = 1e-13

# ----------------------------------------------------------------------------------------
# The activations, written from their definitions (never from fastntk).


def _erf(x):
    # NumPy has no erf; math.erf (C99 libm) elementwise costs ~0.1 us a call, fine here.
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _normal_cdf(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _normal_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Act:
    """One activation under test.

    layer : () -> fastntk layer (the values under test).
    phi, dphi : the activation and its derivative (dphi=None: the map's S is 0 by convention).
    rule : "hermite" (smooth phi), "composite" (smooth but steep phi: Gauss-Hermite would
        need thousands of nodes), or "polar" (phi positively homogeneous of degree k).
    nodes : Gauss-Hermite nodes per dimension, Gauss-Legendre nodes per panel (composite,
        with 4 * nodes Gauss-Hermite nodes in its inner direction) or per arc (polar); each
        test also runs the rule with 2 * nodes and requires agreement to QUAD_TOL.
    k : homogeneity degree of phi (polar rule only); phi' then has degree k - 1.
    variances : the variances of the grid.
    extra : ABRelu's (a, b), for its zero-variance convention.
    """

    layer: object
    phi: object
    dphi: object
    rule: str
    nodes: int
    k: int = 0
    variances: tuple = (0.25, 1.0, 2.5, 4.0)
    extra: dict = field(default_factory=dict)


def abrelu(a, b, layer):
    return Act(
        layer,
        lambda x: a * np.minimum(x, 0.0) + b * np.maximum(x, 0.0),
        lambda x: np.where(x < 0.0, a, b),
        "polar",
        nodes=16,  # the arc integrands are trigonometric polynomials of degree <= 2
        k=1,
        extra=dict(a=a, b=b),
    )


def erf(a, b, c, layer):
    return Act(
        layer,
        lambda x: a * _erf(b * x) + c,
        lambda x: a * b * 2.0 / math.sqrt(math.pi) * np.exp(-b * b * x * x),
        "composite",  # erf(3.2 z) at b = 1.6, q = 4
        nodes=12,
    )


def sin(a, b, c, layer):
    return Act(
        layer, lambda x: a * np.sin(b * x + c), lambda x: a * b * np.cos(b * x + c), "hermite", nodes=48
    )


def cos(a, b, c, layer):
    return Act(
        layer, lambda x: a * np.cos(b * x + c), lambda x: -a * b * np.sin(b * x + c), "hermite", nodes=48
    )


def rbf(gamma, layer):
    w = math.sqrt(2.0 * gamma)
    return Act(
        layer,
        lambda x: math.sqrt(2.0) * np.sin(w * x + 0.25 * math.pi),
        lambda x: math.sqrt(2.0) * w * np.cos(w * x + 0.25 * math.pi),
        "hermite",
        nodes=48,
    )


def exp(a, b, layer):
    return Act(layer, lambda x: a * np.exp(b * x), lambda x: a * b * np.exp(b * x), "hermite", nodes=48)


def gaussian(a, b, layer, variances=(0.25, 1.0, 2.5, 4.0)):
    return Act(
        layer,
        lambda x: a * np.exp(b * x * x),
        lambda x: 2.0 * a * b * x * np.exp(b * x * x),
        # b < 0: exp(-8 z^2) at q = 4 is steep; b > 0: the integrand grows like
        # exp(b (qx + qy) z^2), so not the truncated composite rule but Gauss-Hermite.
        "composite" if b < 0 else "hermite",
        nodes=12 if b < 0 else 64,
        variances=variances,
    )


def monomial(n):
    # The integrands are polynomials of degree 2n <= 12 in each z: exact for nodes >= 7.
    return Act(lambda: nt.Monomial(n), lambda x: x**n, lambda x: n * x ** (n - 1), "hermite", nodes=8)


def rectified_monomial(n):
    return Act(
        lambda: nt.RectifiedMonomial(n),
        lambda x: np.where(x >= 0.0, x**n, 0.0),
        lambda x: np.where(x > 0.0, n * x ** (n - 1), 0.0),
        "polar",
        nodes=32,  # trigonometric polynomials of degree <= 2n = 12 on arcs of length <= pi
        k=n,
    )


ACTS = {
    "relu": abrelu(0.0, 1.0, lambda: nt.Relu()),
    "leaky_relu_0.1": abrelu(0.1, 1.0, lambda: nt.LeakyRelu(0.1)),
    "abs": abrelu(-1.0, 1.0, lambda: nt.Abs()),
    "abrelu_-0.4_1.3": abrelu(-0.4, 1.3, lambda: nt.ABRelu(-0.4, 1.3)),
    "abrelu_1.5_-0.5": abrelu(1.5, -0.5, lambda: nt.ABRelu(1.5, -0.5)),
    "sign": Act(lambda: nt.Sign(), np.sign, None, "polar", nodes=4, k=0),
    "erf": erf(1.0, 1.0, 0.0, lambda: nt.Erf()),
    "erf_0.7_1.6_0.3": erf(0.7, 1.6, 0.3, lambda: nt.Erf(0.7, 1.6, 0.3)),
    "gelu": Act(
        lambda: nt.Gelu(),
        lambda x: x * _normal_cdf(x),
        lambda x: _normal_cdf(x) + x * _normal_pdf(x),
        "composite",
        nodes=12,
    ),
    "sin": sin(1.0, 1.0, 0.0, lambda: nt.Sin()),
    "sin_1.2_0.8_0.3": sin(1.2, 0.8, 0.3, lambda: nt.Sin(1.2, 0.8, 0.3)),
    "cos": cos(1.0, 1.0, 0.0, lambda: nt.Cos()),
    "cos_0.9_1.1_-0.2": cos(0.9, 1.1, -0.2, lambda: nt.Cos(0.9, 1.1, -0.2)),
    "rbf": rbf(1.0, lambda: nt.Rbf()),
    "rbf_0.7": rbf(0.7, lambda: nt.Rbf(0.7)),
    "exp": exp(1.0, 1.0, lambda: nt.Exp()),
    "exp_0.8_0.5": exp(0.8, 0.5, lambda: nt.Exp(0.8, 0.5)),
    "gaussian": gaussian(1.0, -1.0, lambda: nt.Gaussian()),
    "gaussian_1.1_-0.6": gaussian(1.1, -0.6, lambda: nt.Gaussian(1.1, -0.6)),
    # b > 0: E[exp(b (u^2 + v^2))] needs b (qx + qy) < 1/2; the largest here is 0.25.
    "gaussian_0.9_0.05": gaussian(0.9, 0.05, lambda: nt.Gaussian(0.9, 0.05), variances=(0.25, 1.0, 2.5)),
    **{f"monomial{n}": monomial(n) for n in range(1, 7)},
    **{f"rectified_monomial{n}": rectified_monomial(n) for n in range(1, 7)},
}

# ----------------------------------------------------------------------------------------
# The grid.

# Interior correlations, including near-parallel and near-antiparallel pairs.
INTERIOR = (-0.9999, -0.9, -0.5, 0.0, 0.3, 0.8, 0.9999)


def _exact_root(q):
    """True if sqrt(q) and 1/sqrt(q) are exact in binary (q a power of 4), so that the core's
    c = s * (1/sqrt(qx)) * (1/sqrt(qy)) reproduces c = +-1 exactly from s = +-sqrt(qx) sqrt(qy)."""
    r = math.sqrt(q)
    return r * r == q and (1.0 / r) * (1.0 / r) == 1.0 / q and math.frexp(q)[1] % 2 == 1


def grid(variances):
    """(qx, qy, c, s) over all ordered variance pairs; c = +-1 only where both are powers of 4."""
    pts = []
    for qx in variances:
        for qy in variances:
            cs = INTERIOR + ((-1.0, 1.0) if _exact_root(qx) and _exact_root(qy) else ())
            pts += [(qx, qy, c) for c in cs]
    qx, qy, c = (np.array(a, dtype=np.float64) for a in zip(*pts))
    s = c * np.sqrt(qx) * np.sqrt(qy)
    return qx, qy, c, s


def core(act: Act):
    """(dual_map, dual_map_diag) of the activation, from the compiled program."""
    prog = _engine.program(nt.serial(nt.Dense(), act.layer()), 2)
    return (
        lambda qx, qy, s: nt._core.dual_map(prog, 1, qx, qy, s),
        lambda q: nt._core.dual_map_diag(prog, 1, q),
    )


def expect(act: Act, which: str, qx, qy, c, nodes=None):
    """E[g(u) g(v)] with g = phi ("F") or phi' ("S"), by the activation's rule."""
    g = act.phi if which == "F" else act.dphi
    n = act.nodes if nodes is None else nodes
    if act.rule == "hermite":
        return gauss_hermite(g, g, qx, qy, c, n)
    if act.rule == "composite":
        # 36 panels of width 1/2 on [-9, 9]. Measured: 10 nodes a panel leave 3e-12 on the
        # steepest integrand (Erf(b=1.6)' squared at q = 4, exp(-20 z^2)), 12 leave 5e-16.
        return composite(g, g, qx, qy, c, panels=36, m=n, inner=4 * n)
    k = act.k if which == "F" else act.k - 1
    return polar(g, g, 2 * k, qx, qy, c, n)


def converged(act: Act, which: str, qx, qy, c, scale=None):
    """The 2n-node value, after checking that it agrees with the n-node one to QUAD_TOL of
    `scale` (default: of the value itself, for the diagonal expectations E[g(u)^2] >= 0).

    All three rules converge geometrically or faster for these integrands (entire functions
    for Gauss-Hermite; analytic panels or arcs for Gauss-Legendre), so an n-node rule within
    QUAD_TOL of the 2n-node rule means the 2n-node rule is within round-off of the integral."""
    coarse = expect(act, which, qx, qy, c)
    fine = expect(act, which, qx, qy, c, 2 * act.nodes)
    scale = np.abs(fine) if scale is None else scale
    gap = np.abs(fine - coarse) / np.where(scale > 0, scale, 1.0)
    i = int(np.argmax(gap))
    assert gap[i] <= QUAD_TOL, (
        f"{which} quadrature not converged at (qx, qy, c) = ({qx[i]}, {qy[i]}, {c[i]}): "
        f"{act.nodes} vs {2 * act.nodes} nodes differ by {gap[i]:.2e} of the scale"
    )
    return fine


@functools.cache
def diagonal_expectation(name: str, which: str, variances: tuple):
    """{q: E[g(u)^2]} for u ~ N(0, q): the ingredients of the Cauchy-Schwarz scale."""
    q = np.array(variances, dtype=np.float64)
    return dict(zip(variances, converged(ACTS[name], which, q, q, np.ones_like(q))))


def scale_of(name: str, which: str, qx, qy):
    """sqrt(E[g(u)^2] E[g(v)^2]) at each point (see the module docstring)."""
    d = diagonal_expectation(name, which, tuple(sorted(set(qx.tolist()) | set(qy.tolist()))))
    return np.sqrt(np.array([d[a] * d[b] for a, b in zip(qx.tolist(), qy.tolist())]))


def assert_close(what, actual, expected, scale, qx, qy, c):
    """|actual - expected| <= RTOL * max(scale, |expected|) at every point, naming the worst.

    Returns the largest error relative to that reference (for reports)."""
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual[~np.isfinite(actual)]}"
    ref = np.maximum(scale, np.abs(expected))
    err = np.abs(actual - expected) / np.where(ref > 0, ref, 1.0)
    i = int(np.argmax(err))
    assert err[i] <= RTOL, (
        f"{what} at (qx, qy, c) = ({float(qx[i])!r}, {float(qy[i])!r}, {float(c[i])!r}): "
        f"core {float(actual[i])!r}, quadrature {float(expected[i])!r}, error {err[i]:.2e} of scale {ref[i]:.6g}"
    )
    return float(err[i])


def check_pairs(name: str, which: str):
    """Compare F or S of the pair map with quadrature over the activation's grid."""
    act = ACTS[name]
    qx, qy, c, s = grid(act.variances)
    actual = core(act)[0](qx, qy, s)[0 if which == "F" else 1]
    scale = scale_of(name, which, qx, qy)
    expected = converged(act, which, qx, qy, c, scale)
    return assert_close(f"{name} {which}", actual, expected, scale, qx, qy, c)


# ----------------------------------------------------------------------------------------
# The tests.


@pytest.mark.parametrize("name", list(ACTS))
def test_nngp_map(name):
    """F(qx, qy, s) = E[phi(u) phi(v)] over the grid, c = +-1 and 0 included."""
    check_pairs(name, "F")


@pytest.mark.parametrize("name", list(ACTS))
def test_ntk_factor(name):
    """S(qx, qy, s) = E[phi'(u) phi'(v)] over the grid; identically 0 for Sign (NT's
    convention: its derivative vanishes almost everywhere)."""
    if ACTS[name].dphi is None:
        qx, qy, _, s = grid(ACTS[name].variances)
        _, actual = core(ACTS[name])[0](qx, qy, s)
        np.testing.assert_array_equal(actual, 0.0)
    else:
        check_pairs(name, "S")


def check_diagonal(name: str):
    """Compare dual_map_diag(q), and the pair map at (q, q, q), with quadrature at c = 1."""
    act = ACTS[name]
    # The grid's variances and one more power of 4; c = 1 is exact for the powers of 4.
    q = np.array((0.0625,) + act.variances)
    ones = np.ones_like(q)
    exact = np.array([_exact_root(v) for v in q])
    diag = core(act)[1](q)
    pair = core(act)[0](q[exact], q[exact], q[exact])
    worst = 0.0
    for i, which in enumerate(("F", "S")):
        if which == "S" and act.dphi is None:
            np.testing.assert_array_equal(diag[1], 0.0)
            np.testing.assert_array_equal(pair[1], 0.0)
            continue
        expected = converged(act, which, q, q, ones)
        scale = np.abs(expected)
        worst = max(worst, assert_close(f"{name} {which} diag", diag[i], expected, scale, q, q, ones))
        e = exact
        what = f"{name} {which}(q, q, q)"
        worst = max(worst, assert_close(what, pair[i], expected[e], scale[e], q[e], q[e], ones[e]))
    return worst


@pytest.mark.parametrize("name", list(ACTS))
def test_diagonal_maps(name):
    """dual_map_diag(q) = (E[phi(u)^2], E[phi'(u)^2]) for u ~ N(0, q), and the pair map at
    s = qx = qy = q (correlation exactly 1) agrees with it."""
    check_diagonal(name)


@pytest.mark.parametrize("name", [n for n, a in ACTS.items() if a.rule == "polar"])
def test_homogeneity(name):
    """The polar rule's premise: phi(l x) = l^k phi(x), phi'(l x) = l^(k-1) phi'(x) for l > 0."""
    act = ACTS[name]
    x = np.array([-2.3, -1.0, -0.4, 0.4, 1.0, 2.3])
    for lam in (0.5, 3.0):
        np.testing.assert_allclose(act.phi(lam * x), lam**act.k * act.phi(x), rtol=1e-15)
        if act.dphi is not None:
            np.testing.assert_allclose(act.dphi(lam * x), lam ** (act.k - 1) * act.dphi(x), rtol=1e-15)


def check_zero_variance(name: str):
    """See test_zero_variance."""
    act = ACTS[name]
    q = np.array((0.0,) + act.variances)
    zero = np.zeros_like(q)
    worst = 0.0
    for qx, qy in ((zero, q), (q, zero)):  # the zero on either side
        f, d = core(act)[0](qx, qy, zero)
        assert np.all(np.isfinite(f)) and np.all(np.isfinite(d)), (f, d)
        if act.rule == "polar":
            # phi(0) = 0 for all of them, so F = 0; S by the conventions in the docstring. The
            # maps reach these values through theta = acos(0) = pi/2, so allow round-off of
            # the map's range: |F| <= 1 for Sign (ABRelu: F = 0 exactly, as Neural Tangents'
            # F = (a-b)^2 R/(2 pi) + S s has R = s = 0), |S| <= (a^2 + b^2)/2 for ABRelu.
            if act.dphi is None:  # Sign
                expected_s, scale_f, scale_s = 0.0, 1.0, 0.0
            elif "a" in act.extra:  # ABRelu: theta = pi/2
                a, b = act.extra["a"], act.extra["b"]
                scale_f, scale_s = 0.0, (a * a + b * b) / 2
                expected_s = (a * a + b * b) / 2 - (a - b) ** 2 / 4
            else:  # RectifiedMonomial: ReLU's 1/4 at degree 1, phi'(0) = 0 above
                expected_s, scale_f, scale_s = (0.25, 0.0, 0.5) if act.k == 1 else (0.0, 0.0, 0.0)
            worst = max(worst, assert_close(f"{name} F at q = 0", f, np.zeros_like(f), scale_f, qx, qy, zero))
            expected = np.full_like(d, expected_s)
            worst = max(worst, assert_close(f"{name} S at q = 0", d, expected, scale_s, qx, qy, zero))
            continue
        # u = 0 exactly on every node: the rules compute phi(0) E[phi(v)], phi'(0) E[phi'(v)].
        for which, actual, g in (("F", f, act.phi), ("S", d, act.dphi)):
            g0 = abs(float(g(np.zeros(1))[0]))
            diag = converged(act, which, q, q, np.ones_like(q))
            scale = g0 * np.sqrt(diag)  # Cauchy-Schwarz: sqrt(phi(0)^2 E[phi(v)^2])
            expected = converged(act, which, qx, qy, zero, scale)
            what = f"{name} {which} at q = 0"
            worst = max(worst, assert_close(what, actual, expected, scale, qx, qy, zero))
    return worst


@pytest.mark.parametrize("name", list(ACTS))
def test_zero_variance(name):
    """A zero input (qx = 0, hence s = 0) gives finite F and S, with NT's conventions.

    Then u = 0 almost surely: F = phi(0) E[phi(v)] and, where phi is differentiable at 0,
    S = phi'(0) E[phi'(v)], checked against the quadrature. At the kink of ABRelu, NT's
    angle convention (theta = pi/2 when the correlation is undefined) gives
    S = (a^2 + b^2)/2 - (a - b)^2/4 = ((a + b)/2)^2, i.e. phi'(0) taken as the mean slope
    (a + b)/2, times E[phi'(v)] = (a + b)/2. RectifiedMonomial(1) is ReLU (S = 1/4), and
    degree n >= 2 has phi'(0) = 0. Sign has F = sign(0) E[sign v] = 0 and S = 0.
    """
    check_zero_variance(name)


@pytest.mark.parametrize("name", list(ACTS))
def test_diagonal_map_at_zero_variance_follows_the_pair_convention(name):
    """At q = 0 a kinked activation's S is a convention (angle pi/2); the diagonal map,
    which fills the diagonal of symmetric Grams, must use the same one as the pair map."""
    pair, diag = core(ACTS[name])
    zero = np.zeros(1)
    f_pair, s_pair = pair(zero, zero, zero)
    f_diag, s_diag = diag(zero)
    # Equal up to the round-off of evaluating the maps (their values here are O(1)).
    np.testing.assert_allclose(f_diag, f_pair, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(s_diag, s_pair, rtol=1e-15, atol=1e-15)
