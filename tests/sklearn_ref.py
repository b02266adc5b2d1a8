"""Plain-NumPy references for the scikit-learn front end, independent of fastntk:

- ``skntk_ref``: scikit-ntk's NTK convention (raw inner products, ReLU with weight variance
  2, a bias that enters the NTK only) and its derivative in log(bias), written from the
  recursion with the atan2 angle (exact near correlation +-1) and a derivative recursion;
- ``flow_ref``: the mean prediction of gradient flow on MSE from zero outputs, by NumPy's
  eigendecomposition (finite t) or a linear solve (t = None);
- ``loo_ref``: leave-one-out residuals of kernel ridge regression by an explicit loop.
"""

from __future__ import annotations

import numpy as np


def _relu_maps(s, qx, qy):
    """2 E[relu(u) relu(v)] and 2 E[relu'(u) relu'(v)] for (u, v) with variances qx, qy and
    covariance s (Cho and Saul's arc-cosine kernel of order 1 and 0, times 2)."""
    prod = qx * qy
    r = np.sqrt(np.maximum(prod - s * s, 0.0))
    theta = np.where((r == 0) & (s == 0), np.pi / 2, np.arctan2(r, s))
    return (r + (np.pi - theta) * s) / np.pi, (np.pi - theta) / np.pi


def skntk_ref(x, z, depth: int, bias: float):
    """(K, dK/dlog bias) of scikit-ntk's NeuralTangentKernel(depth, bias) between rows of x, z.

    K0 = x.z + b^2, S_h = relu map of S_{h-1} (times 2), K_h = K_{h-1} S'_h + S_h + b^2,
    K = K_depth / ((depth + 1)(1 + b^2)). The derivative in c = b^2: dK0/dc = 1,
    dK_h/dc = dK_{h-1}/dc S'_h + 1 (S does not depend on b); d/dlog b = 2 b^2 d/dc.
    """
    x = np.asarray(x, dtype=np.float64)
    # Inner products and squared norms from ONE Gram matrix of the stacked points: a pair that
    # is parallel to working precision then has s^2 = qx qz to the last bit, as it should.
    # (Norms summed separately differ from the GEMM's by an ulp, and sqrt(qx qz - s^2) turns
    # that ulp into an angle of ~1e-8, i.e. an error of ~5e-9 in every ReLU derivative.)
    joint = x if z is None else np.concatenate([x, np.asarray(z, dtype=np.float64)])
    gram = joint @ joint.T
    q = np.diag(gram)
    n = x.shape[0]
    s = gram if z is None else gram[:n, n:]
    qx = q[:n, None]
    qz = (q if z is None else q[n:])[None, :]
    b2 = bias * bias
    k = s + b2
    dk = np.ones_like(s)
    for _ in range(depth):
        s, sdot = _relu_maps(s, qx, qz)  # the diagonal map of this layer keeps q: q' = q
        k = k * sdot + s + b2
        dk = dk * sdot + 1.0
    scale = 1.0 / ((depth + 1) * (1.0 + b2))
    dscale_dc = -scale / (1.0 + b2)
    return scale * k, 2.0 * b2 * (scale * dk + dscale_dc * k)


def flow_ref(k_train, k_test, y, t=None, ridge=0.0):
    """Test predictions of gradient flow on ||f - y||^2 / (2 y.size) from f = 0 with the
    kernel A = k_train + ridge trace(k_train)/N I (learning rate 1):
    f_t(x) = k_test A^-1 (I - exp(-A t / y.size)) y; t = None: k_test A^-1 y."""
    n = k_train.shape[0]
    a = k_train + ridge * np.trace(k_train) / n * np.eye(n)
    if t is None:
        return k_test @ np.linalg.solve(a, y)
    lam, v = np.linalg.eigh(a)
    factor = -np.expm1(-lam * t / y.size) / lam
    coef = v @ (factor[:, None] * (v.T @ (y if y.ndim == 2 else y[:, None])))
    out = k_test @ coef
    return out if y.ndim == 2 else out[:, 0]


def loo_ref(k, y, lam):
    """Residual y_i - f_{-i}(x_i) of kernel ridge regression (absolute ridge lam) refitted
    without point i, for every i, by N explicit solves. y: (N, n_out)."""
    n = k.shape[0]
    out = np.empty_like(y)
    for i in range(n):
        keep = np.arange(n) != i
        a = k[np.ix_(keep, keep)] + lam * np.eye(n - 1)
        out[i] = y[i] - k[i, keep] @ np.linalg.solve(a, y[keep])
    return out
