"""Numerical Gaussian expectations E[g(u) h(v)] for the activation tests, in plain NumPy.

For (u, v) ~ N(0, [[qx, s], [s, qy]]) with correlation c = s / sqrt(qx qy) we write
u = sqrt(qx) z1, v = sqrt(qy) (c z1 + sqrt(1 - c^2) z2) with z1, z2 independent standard
normals, and integrate over (z1, z2) with one of two rules:

- `gauss_hermite`: the tensor Gauss-Hermite rule, for smooth (entire) g and h, where it
  converges faster than any power of the node count;
- `polar`: for positively homogeneous g and h with a kink or jump at 0 (ReLU-like and
  step functions), where Gauss-Hermite converges only algebraically.

Nothing here comes from fastntk: these are the independent values the closed forms are
checked against. Every function takes the activation itself (a vectorised callable), never
a closed form of its expectation.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss


def _sine(c: np.ndarray) -> np.ndarray:
    """sqrt(1 - c^2) as sqrt((1 - c)(1 + c)) (accurate near |c| = 1), clamped at 0."""
    return np.sqrt(np.maximum((1.0 - c) * (1.0 + c), 0.0))


def gauss_hermite(g, h, qx, qy, c, n: int) -> np.ndarray:
    """E[g(u) h(v)] by the n x n tensor Gauss-Hermite rule.

    Parameters
    ----------
    g, h : callable
        Vectorised functions of a float64 array (any shape).
    qx, qy, c : array_like, shape (P,)
        Variances (>= 0) and correlations (in [-1, 1]) of the P points.
    n : int
        Nodes per dimension. The rule with weight exp(-z^2/2) (`hermegauss`) integrates
        polynomials of degree <= 2n - 1 in each of z1, z2 exactly; for entire integrands
        the error falls faster than geometrically in n.

    Returns
    -------
    ndarray, shape (P,), float64
    """
    qx, qy, c = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (qx, qy, c))
    z, w = hermegauss(n)
    w = w / math.sqrt(2.0 * math.pi)  # weights of the standard normal density: sum(w) = 1
    rx, ry = np.sqrt(qx)[:, None, None], np.sqrt(qy)[:, None, None]
    cc, ss = c[:, None, None], _sine(c)[:, None, None]
    z1, z2 = z[None, :, None], z[None, None, :]
    gu = g(rx[:, :, 0] * z[None, :])  # [P, n]: depends on z1 only
    hv = h(ry * (cc * z1 + ss * z2))  # [P, n(z1), n(z2)]
    return np.einsum("i,pi,pij,j->p", w, gu, hv, w)


def radial_moment(k: float) -> float:
    """Integral over rho in (0, inf) of rho^(k+1) exp(-rho^2/2) = 2^(k/2) Gamma(k/2 + 1) (exact)."""
    return 2.0 ** (k / 2.0) * math.gamma(k / 2.0 + 1.0)


def polar(g, h, k: float, qx, qy, c, m: int) -> np.ndarray:
    """E[g(u) h(v)] for positively homogeneous g, h, by polar coordinates in (z1, z2).

    With (z1, z2) = rho (cos t, sin t), u = sqrt(qx) rho cos t and
    v = sqrt(qy) rho (c cos t + sqrt(1 - c^2) sin t) = sqrt(qy) rho cos(t - t0), where
    t0 = arccos(c). If g(l x) = l^k1 g(x) and h(l x) = l^k2 h(x) for l > 0, with k = k1 + k2,
    the standard normal density (1/2pi) exp(-rho^2/2) rho drho dt separates:

        E[g(u) h(v)] = radial_moment(k) / (2 pi)
                       * integral over t in (0, 2pi) of g(sqrt(qx) cos t) h(sqrt(qy) cos(t - t0)) dt.

    The radial factor is exact. The angular integrand is smooth (a trigonometric polynomial
    for the activations tested) except where u = 0 or v = 0, i.e. at t = pi/2, 3pi/2 and
    t0 +- pi/2, so we split (0, 2pi) at those points and use m-point Gauss-Legendre on each
    arc, which converges geometrically for an analytic integrand. Nodes are interior to the
    arcs, so g and h are never evaluated at their kink.

    Parameters
    ----------
    g, h : callable
        Vectorised, positively homogeneous of degrees k1 and k2 (the caller's claim; the
        tests check it separately).
    k : float
        k1 + k2.
    qx, qy, c : array_like, shape (P,)
        Variances (>= 0) and correlations (in [-1, 1]).
    m : int
        Gauss-Legendre nodes per arc.

    Returns
    -------
    ndarray, shape (P,), float64
    """
    qx, qy, c = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (qx, qy, c))
    two_pi = 2.0 * math.pi
    t0 = np.arctan2(_sine(c), c)  # [P], in [0, pi]
    breaks = np.stack(
        [
            np.zeros_like(c),
            np.full_like(c, 0.5 * math.pi),
            np.full_like(c, 1.5 * math.pi),
            np.mod(t0 + 0.5 * math.pi, two_pi),
            np.mod(t0 - 0.5 * math.pi, two_pi),
            np.full_like(c, two_pi),
        ],
        axis=1,
    )
    breaks.sort(axis=1)  # [P, 6]: 5 arcs per point, some possibly of length 0 (weight 0)
    lo, hi = breaks[:, :-1, None], breaks[:, 1:, None]  # [P, 5, 1]
    x, wx = leggauss(m)
    t = 0.5 * (hi + lo) + 0.5 * (hi - lo) * x  # [P, 5, m]
    wt = 0.5 * (hi - lo) * wx  # [P, 5, m]
    cc, ss = c[:, None, None], _sine(c)[:, None, None]
    gu = g(np.sqrt(qx)[:, None, None] * np.cos(t))
    hv = h(np.sqrt(qy)[:, None, None] * (cc * np.cos(t) + ss * np.sin(t)))
    angular = np.sum(wt * gu * hv, axis=(1, 2))
    return radial_moment(k) / two_pi * angular


# Half-width of the truncated domain of the composite rule: a standard normal leaves it
# with probability erfc(9/sqrt(2)) = 2e-19, far below the accuracy sought, for integrands
# bounded by a polynomial (or decaying), as those given to `composite` are.
_HALF_WIDTH = 9.0
# Below this sqrt(1 - c^2) the oblique frame's conditional density is too narrow for the
# panels, and the inner direction of the orthogonal frame is smooth enough for Gauss-Hermite.
_OBLIQUE_MIN_SINE = 0.3


def _composite_legendre(panels: int, m: int):
    """Nodes and weights of m-point Gauss-Legendre on `panels` equal panels of [-9, 9]."""
    edges = np.linspace(-_HALF_WIDTH, _HALF_WIDTH, panels + 1)
    x, w = leggauss(m)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    return (mid + half * x).ravel(), (half * w).ravel()


def _density(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def composite(g, h, qx, qy, c, panels: int, m: int = 10, inner: int = 48) -> np.ndarray:
    """E[g(u) h(v)] for smooth but steep g, h (e.g. erf(3.2 x), exp(-8 x^2)).

    Gauss-Hermite resolves a feature of width w near the origin only with ~ 1/w^2 nodes
    (its node spacing there is ~ pi / sqrt(n)), so for steep integrands we use composite
    Gauss-Legendre on [-9, 9] (`panels` panels of m nodes; geometric convergence on each
    panel for an analytic integrand), in one of two frames:

    - |c| below sqrt(1 - 0.3^2): the oblique frame (z1, w) with u = sqrt(qx) z1 and
      v = sqrt(qy) w, whose joint density is phi(z1) phi((w - c z1)/s)/s with
      s = sqrt(1 - c^2) >= 0.3. The features of g and h both lie on the axes, and g and h
      are evaluated on the 1-D grids only: the 2-D work is in the (smooth) density.
    - otherwise: the orthogonal frame u = sqrt(qx) z1, v = sqrt(qy) (c z1 + s z2) with the
      composite rule in z1 and `inner`-node Gauss-Hermite in z2: a feature of h of width d
      has width d / (sqrt(qy) s) in z2, over 3 times wider for s < 0.3, where Gauss-Hermite
      converges fast. At c = +-1 (s = 0) this is the exact 1-D reduction.

    Parameters
    ----------
    g, h : callable
        Vectorised functions, bounded by a polynomial.
    qx, qy, c : array_like, shape (P,)
    panels, m, inner : int
        Panels on [-9, 9], Gauss-Legendre nodes per panel, Gauss-Hermite nodes in z2.

    Returns
    -------
    ndarray, shape (P,), float64
    """
    qx, qy, c = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (qx, qy, c))
    z, w = _composite_legendre(panels, m)
    wz = w * _density(z)  # the composite rule for the standard normal density
    zh, wh = hermegauss(inner)
    wh = wh / math.sqrt(2.0 * math.pi)
    out = np.empty_like(c)
    for cv in np.unique(c):  # the oblique frame's density depends on c only: share it
        at = np.flatnonzero(c == cv)
        sv = float(_sine(np.array(cv)))
        if sv >= _OBLIQUE_MIN_SINE:
            cond = _density((z[None, :] - cv * z[:, None]) / sv) / sv  # [N(z1), N(w)]
        for p in at:
            rx, ry = math.sqrt(qx[p]), math.sqrt(qy[p])
            gu = g(rx * z)  # [N]
            if sv >= _OBLIQUE_MIN_SINE:
                out[p] = (wz * gu) @ cond @ (w * h(ry * z))  # v on the same grid as u
            else:
                hv = h(ry * (cv * z[:, None] + sv * zh[None, :]))  # [N, inner]
                out[p] = (wz * gu) @ (hv @ wh)
    return out
