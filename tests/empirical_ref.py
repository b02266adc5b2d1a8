"""Plain-NumPy references for finite networks and their empirical kernels.

Slow and obviously correct; shares no code with fastntk (it must not import it):

- ``forward_ref``: the network's outputs, from the layer descriptions of tests/specs.py
  (``("dense", {...})`` and activation specs), with activations written out here;
- ``jacobian_ref``: the explicit Jacobian, one output at a time: for output o, backprop of
  e_o gives d f_o / d z at every Dense output, from which the gradient of every
  parameter is written out entry by entry into a (N, P) matrix;
- ``empirical_ntk_ref``: J(x1) J(x2)^T from those Jacobians, traced (the mean over
  outputs of J_o J_o^T) or full ([i, j, o, o'] = J_o(x1_i) . J_o'(x2_j));
- ``empirical_gram_ref``: what the native op ``_core.empirical_gram`` computes, by einsum;
- ``flatten`` / ``unflatten``: all parameters as one vector, for finite differences.

Parameters use fastntk's layout: one entry per layer, ``(W, b)`` with W ``(fan_in,
out_dim)`` and b ``(out_dim,)`` or None for Dense layers, ``()`` otherwise. A Dense
layer computes z = c_W * h @ W + c_b * b with (c_W, c_b) = (W_std / sqrt(fan_in), b_std)
in the ntk parameterization and (1, 1) in the standard one.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _phi_dphi(name: str, p: dict, z: np.ndarray):
    """(phi(z), phi'(z)) of an activation spec. Kinks take JAX's values (Neural Tangents'
    empirical kernels): min/max split the gradient evenly at 0, where(z >= 0) picks the
    first branch at 0."""
    if name == "abrelu":
        a, b = p["a"], p["b"]
        phi = np.where(z > 0, b * z, a * z)
        return phi, np.where(z > 0, b, np.where(z < 0, a, (a + b) / 2))
    if name == "erf":
        a, b, c = p["a"], p["b"], p["c"]
        return a * _erf(b * z) + c, a * b * 2 / math.sqrt(math.pi) * np.exp(-((b * z) ** 2))
    if name == "sign":
        return np.sign(z), np.zeros_like(z)
    if name == "gelu":
        cdf = 0.5 * (1 + _erf(z / math.sqrt(2)))
        return z * cdf, cdf + z * np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    if name in ("sin", "cos"):
        a, b, c = p["a"], p["b"], p["c"]
        # cos(u) = sin(u + pi/2)
        u = b * z + c + (math.pi / 2 if name == "cos" else 0.0)
        return a * np.sin(u), a * b * np.cos(u)
    if name == "rbf":
        w = math.sqrt(2 * p["gamma"])
        return math.sqrt(2) * np.sin(w * z + math.pi / 4), math.sqrt(2) * w * np.cos(w * z + math.pi / 4)
    if name == "exp":
        e = p["a"] * np.exp(p["b"] * z)
        return e, p["b"] * e
    if name == "gaussian":
        g = p["a"] * np.exp(p["b"] * z**2)
        return g, 2 * p["b"] * z * g
    if name == "monomial":
        n = p["degree"]
        return z**n, n * z ** (n - 1)
    if name == "rectified_monomial":
        n = p["degree"]
        pos = z >= 0
        return np.where(pos, z**n, 0.0), np.where(pos, n * z ** (n - 1), 0.0)
    if name == "identity":
        return z, np.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")


def _coefficients(p: dict, fan_in: int):
    if p["parameterization"] == "ntk":
        return p["W_std"] / math.sqrt(fan_in), (0.0 if p["b_std"] is None else p["b_std"])
    return 1.0, 1.0


def _run(spec, params, x):
    """Forward pass: outputs, each Dense input and each activation's phi' (by layer index)."""
    h = np.asarray(x, dtype=np.float64)
    inputs, slopes = {}, {}
    for k, (name, p) in enumerate(spec):
        if name == "dense":
            W, b = params[k]
            c_w, c_b = _coefficients(p, W.shape[0])
            inputs[k] = h
            h = c_w * (h @ W) + (0.0 if b is None else c_b * b)
        else:
            h, slopes[k] = _phi_dphi(name, p, h)
    return h, inputs, slopes


def forward_ref(spec, params, x) -> np.ndarray:
    """Outputs (N, n_out) of the finite network."""
    return _run(spec, params, x)[0]


def jacobian_ref(spec, params, x, output: int) -> np.ndarray:
    """The explicit Jacobian of f[:, output]: float64 (N, P), columns in flatten() order."""
    f, inputs, slopes = _run(spec, params, x)
    n = f.shape[0]
    g = np.zeros_like(f)
    g[:, output] = 1.0  # d f_output / d h at the output
    blocks = {}
    for k in range(len(spec) - 1, -1, -1):
        name, p = spec[k]
        if name == "dense":
            W, b = params[k]
            c_w, c_b = _coefficients(p, W.shape[0])
            # dz/dW[a, u] = c_W h[a] e_u, dz/db[u] = c_b e_u
            dW = c_w * inputs[k][:, :, None] * g[:, None, :]
            blocks[k] = [dW.reshape(n, -1)] + ([] if b is None else [c_b * g])
            g = c_w * (g @ W.T)
        else:
            g = g * slopes[k]
    return np.concatenate([blk for k in sorted(blocks) for blk in blocks[k]], axis=1)


def empirical_ntk_ref(spec, params, x1, x2=None, trace=True) -> np.ndarray:
    """J(x1) J(x2)^T: (N1, N2) mean over outputs if trace, else (N1, N2, n_out, n_out)."""
    x2 = x1 if x2 is None else x2
    m = forward_ref(spec, params, x1[:1]).shape[1]
    j1 = [jacobian_ref(spec, params, x1, o) for o in range(m)]
    j2 = [jacobian_ref(spec, params, x2, o) for o in range(m)]
    if trace:
        return sum(a @ b.T for a, b in zip(j1, j2)) / m
    out = np.empty((x1.shape[0], x2.shape[0], m, m))
    for o in range(m):
        for o2 in range(m):
            out[:, :, o, o2] = j1[o] @ j2[o2].T
    return out


def empirical_nngp_ref(spec, params, x1, x2=None, trace=True) -> np.ndarray:
    f1 = forward_ref(spec, params, x1)
    f2 = f1 if x2 is None else forward_ref(spec, params, x2)
    if trace:
        return f1 @ f2.T / f1.shape[1]
    return f1[:, None, :, None] * f2[None, :, None, :]


def flatten(params) -> np.ndarray:
    """All parameters as one vector: W then b of each Dense layer, in layer order."""
    parts = []
    for p in params:
        if p:
            parts += [p[0].ravel()] + ([] if p[1] is None else [p[1]])
    return np.concatenate(parts)


def unflatten(theta: np.ndarray, like) -> list:
    """Inverse of flatten, with the structure of `like`."""
    out, i = [], 0
    for p in like:
        if not p:
            out.append(())
            continue
        W, b = p
        W2 = theta[i : i + W.size].reshape(W.shape)
        i += W.size
        b2 = None
        if b is not None:
            b2 = theta[i : i + b.size].copy()
            i += b.size
        out.append((W2.copy(), b2))
    return out


def empirical_gram_ref(terms, n1: int, n2: int, m: int, trace: bool) -> np.ndarray:
    """sum over (a1, a2, b1, b2, weight, bias) of (weight a1 a2^T + bias) (.) <b1^o, b2^o'>,
    with a None for a constant and b None for the identity (b^o = e_o): (n1, n2) summed
    over o = o' if trace, else (n1, n2, m, m)."""
    total = np.zeros((n1, n2, m, m))
    for a1, a2, b1, b2, weight, bias in terms:
        ga = np.full((n1, n2), float(bias)) if a1 is None else weight * (a1 @ a2.T) + bias
        gb = np.broadcast_to(np.eye(m), (n1, n2, m, m)) if b1 is None else np.einsum("ioq,jpq->ijop", b1, b2)
        total += ga[:, :, None, None] * gb
    return np.einsum("ijoo->ij", total) if trace else total
