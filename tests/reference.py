"""A slow, plain NumPy reference of the NNGP / NTK recursion, independent of fastntk.

It follows the formulas as Neural Tangents writes them (products q_x q_y, atan2 of
square roots, the published arc-cosine closed forms), computes whole matrices at
once, and shares no code with the package. Architectures are given as a list of
(name, params) pairs:

    ('dense', dict(W_std=, b_std=None|float, parameterization='ntk'|'standard', out_dim=None|int))
    ('identity', {}), ('abrelu', dict(a=, b=)), ('erf', dict(a=, b=, c=)), ('sign', {}), ('gelu', {}),
    ('sin', dict(a=, b=, c=)), ('cos', dict(a=, b=, c=)), ('rbf', dict(gamma=)), ('exp', dict(a=, b=)),
    ('gaussian', dict(a=, b=)), ('monomial', dict(degree=1..5)), ('rectified_monomial', dict(degree=1..3))
"""

from __future__ import annotations

import math

import numpy as np

PI = np.pi


def _sqrt0(x):
    return np.sqrt(np.maximum(x, 0.0))


def _angle(nngp, prod):
    """atan2(sqrt(prod - nngp^2), nngp), with pi/2 where both are zero."""
    r = _sqrt0(prod - nngp**2)
    out = np.arctan2(r, nngp)
    return np.where((r == 0) & (nngp == 0), PI / 2, out)


# Each activation: f(nngp, qx, qy, ntk) -> (nngp, ntk), with qx, qy broadcastable
# to nngp. The diagonal uses the same function with nngp = qx = qy.


def _abrelu(p):
    a, b = p["a"], p["b"]

    def f(nngp, qx, qy, ntk):
        prod = qx * qy
        angles = _angle(nngp, prod)
        factor = (a - b) ** 2 / (2 * PI)
        dot = (a**2 + b**2) / 2 - factor * angles
        return factor * _sqrt0(prod - nngp**2) + dot * nngp, ntk * dot

    return f


def _erf(p):
    a, b, c = p["a"], p["b"], p["c"]

    def f(nngp, qx, qy, ntk):
        nngp, qx, qy, ntk = b**2 * nngp, b**2 * qx, b**2 * qy, b**2 * ntk
        prod = (1 + 2 * qx) * (1 + 2 * qy)
        root = _sqrt0(prod - 4 * nngp**2)
        new = (2 / PI) * np.arctan2(2 * nngp, root)
        dot = (4 / PI) / root
        return a**2 * new + c**2, a**2 * ntk * dot

    return f


def _sign(p):
    def f(nngp, qx, qy, ntk):
        angles = _angle(nngp, qx * qy)
        new = 1 - 2 * angles / PI
        return new, np.zeros_like(ntk)

    return f


def _sign_diag(q):
    return np.where(q == 0, 0.0, 1.0)


def _gelu(p):
    def f(nngp, qx, qy, ntk):
        prod = qx * qy
        prod1 = (qx + 1) * (qy + 1)
        d2 = prod1 - nngp**2
        d = np.sqrt(d2)
        ang = np.arctan2(nngp, d)
        new = (nngp**2 + prod * d2) / (prod1 * d) + nngp * ang
        new = new / (2 * PI) + 0.25 * nngp
        first = (1 / d2 + (1 - prod) / prod1 + 1) * nngp / d / (2 * PI)
        dot = first + 0.25 + ang / (2 * PI)
        return new, ntk * dot

    return f


def _sin(p, shift=0.0):
    a, b, c = p["a"], p["b"], p["c"] + shift

    def f(nngp, qx, qy, ntk):
        sum_ = qx + qy
        s1 = np.exp(b**2 * (-0.5 * sum_ + nngp))
        s2 = np.exp(b**2 * (-0.5 * sum_ - nngp)) * np.cos(2 * c)
        return a**2 / 2 * (s1 - s2), ntk * a**2 / 2 * b**2 * (s1 + s2)

    return f


def _rbf(p):
    g = p["gamma"]

    def f(nngp, qx, qy, ntk):
        new = np.exp(g * (-(qx + qy) + 2 * nngp))
        return new, ntk * 2 * g * new

    return f


def _exp(p):
    a, b = p["a"], p["b"]

    def f(nngp, qx, qy, ntk):
        e = np.exp(b**2 * ((qx + qy) / 2 + nngp))
        return a**2 * e, ntk * a**2 * b**2 * e

    return f


def _gaussian(p):
    a, b = p["a"], p["b"]

    def f(nngp, qx, qy, ntk):
        prod = (1 - 2 * b * qx) * (1 - 2 * b * qy)
        det = np.sqrt(prod - 4 * b**2 * nngp**2)
        return a**2 / det, ntk * a**2 * 4 * b**2 * nngp / det**3

    return f


def _monomial_value(n, nngp, prod):
    if n == 0:
        return np.ones_like(nngp)
    if n == 1:
        return nngp
    if n == 2:
        return 2 * nngp**2 + prod
    if n == 3:
        return 6 * nngp**3 + 9 * nngp * prod
    if n == 4:
        return 3 * (8 * nngp**4 + 3 * prod * (8 * nngp**2 + prod))
    if n == 5:
        return 15 * nngp * (8 * nngp**4 + 5 * prod * (8 * nngp**2 + 3 * prod))
    raise NotImplementedError(n)


def _monomial(p):
    n = p["degree"]

    def f(nngp, qx, qy, ntk):
        prod = qx * qy
        return _monomial_value(n, nngp, prod), ntk * n**2 * _monomial_value(n - 1, nngp, prod)

    return f


def _arccos_j(n, theta):
    """Cho & Saul's J_n(theta) for n = 0..3 (their published closed forms)."""
    s, c, rest = np.sin(theta), np.cos(theta), PI - theta
    if n == 0:
        return rest
    if n == 1:
        return s + rest * c
    if n == 2:
        return 3 * s * c + rest * (1 + 2 * c**2)
    if n == 3:
        return 15 * s - 11 * s**3 + rest * (9 * s**2 * c + 15 * c**3)
    raise NotImplementedError(n)


def _rectified_monomial(p):
    n = p["degree"]

    def f(nngp, qx, qy, ntk):
        prod = qx * qy
        theta = _angle(nngp, prod)
        root = _sqrt0(prod)
        new = root**n * _arccos_j(n, theta) / (2 * PI)
        dot = n**2 * root ** (n - 1) * _arccos_j(n - 1, theta) / (2 * PI)
        return new, ntk * dot

    return f


_ACTIVATIONS = {
    "abrelu": _abrelu,
    "erf": _erf,
    "sign": _sign,
    "gelu": _gelu,
    "sin": _sin,
    "cos": lambda p: _sin(p, shift=PI / 2),
    "rbf": _rbf,
    "exp": _exp,
    "gaussian": _gaussian,
    "monomial": _monomial,
    "rectified_monomial": _rectified_monomial,
}


def ntk_gram_ref(spec, x1, x2=None):
    """(nngp, ntk) of the architecture `spec` between the rows of x1 and x2 (x2=None: x1).

    For x2=None the point variances are the diagonal of the same Gram matrix, so the
    diagonal pairs stay exactly parallel through the layers.
    """
    x1 = np.asarray(x1, dtype=np.float64)
    d = x1.shape[1]
    if x2 is None:
        nngp = x1 @ x1.T / d
        q1 = np.diag(nngp).copy()
        q2 = q1
    else:
        x2 = np.asarray(x2, dtype=np.float64)
        nngp = x1 @ x2.T / d
        q1 = np.sum(x1 * x1, axis=1) / d
        q2 = np.sum(x2 * x2, axis=1) / d
    ntk = np.zeros_like(nngp)
    # The diagonal NTK entries of each side, tracked through the same formulas.
    t1, t2 = np.zeros_like(q1), np.zeros_like(q2)
    width = d
    for name, p in spec:
        if name == "identity":
            continue
        if name == "dense":
            w2 = p["W_std"] ** 2
            b2 = 0.0 if p["b_std"] is None else p["b_std"] ** 2
            if p["parameterization"] == "ntk":
                nngp, q1, q2 = (w2 * v + b2 for v in (nngp, q1, q2))
                ntk, t1, t2 = nngp + w2 * ntk, q1 + w2 * t1, q2 + w2 * t2
            else:
                one = 0.0 if p["b_std"] is None else 1.0
                ntk, t1, t2 = (width * s + w2 * t + one for s, t in ((nngp, ntk), (q1, t1), (q2, t2)))
                nngp, q1, q2 = (w2 * v + b2 for v in (nngp, q1, q2))
            if p.get("out_dim") is not None:
                width = p["out_dim"]
            continue
        f = _ACTIVATIONS[name](p)
        nngp, ntk = f(nngp, q1[:, None], q2[None, :], ntk)
        new_q1, t1 = f(q1, q1, q1, t1)
        new_q2, t2 = f(q2, q2, q2, t2)
        if name == "sign":
            new_q1, new_q2 = _sign_diag(q1), _sign_diag(q2)
        q1, q2 = new_q1, new_q2
    return nngp, ntk


def double_factorial_odd(k: int) -> int:
    """(2k-1)!! with (-1)!! = 1."""
    return math.prod(range(2 * k - 1, 0, -2)) if k > 0 else 1
