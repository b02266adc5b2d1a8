"""Independent references for tests/test_predict*.py, in plain NumPy (no fastntk import).

- ``MLP``: a finite fully connected network in the NTK parameterization with hand-written
  backprop of the MSE loss, trained by full-batch gradient descent in parameter space;
- ``euler``: explicit small-step integration of an ODE ``ds/dtau = rhs(s)``, and
  ``euler_richardson``: the same with Richardson extrapolation and an error estimate;
- ``gd_loop``: discrete function-space gradient descent, step by step;
- ``linearized_ensemble``: many one-hidden-layer networks drawn at once, each trained in
  closed form in its own linearization (empirical NTK, exact at any width for the linear
  model), for Monte Carlo estimates of ensemble means and covariances.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf


def _phi(name, z):
    if name == "erf":
        return erf(z)
    return np.maximum(z, 0.0)


def _dphi(name, z):
    if name == "erf":
        return (2.0 / math.sqrt(math.pi)) * np.exp(-(z**2))
    return (z > 0).astype(z.dtype)


class MLP:
    """``f(x) = D_L(phi(D_{L-1}(... phi(D_1(x)))))`` with NTK-parameterized Dense layers
    ``D(h) = W_std * h @ W / sqrt(n_in) + b_std * b``, W and b standard normal.

    Parameters
    ----------
    widths : sequence of int
        Input dimension, hidden widths, output dimension.
    act : {'erf', 'relu'}
    """

    def __init__(self, widths, act: str, W_std: float, b_std: float):
        self.widths = tuple(int(w) for w in widths)
        self.act = act
        self.W_std = W_std
        self.b_std = b_std

    def init(self, rng: np.random.Generator):
        """Parameters [(W (n_in, n_out), b (n_out,)), ...], drawn layer by layer so that a
        narrower network of the same seed is a sub-network of a wider one (the row-major
        fill makes the first columns/entries of each draw coincide up to the width)."""
        params = []
        for n_in, n_out in zip(self.widths[:-1], self.widths[1:]):
            params.append((rng.standard_normal((n_in, n_out)), rng.standard_normal(n_out)))
        return params

    def forward(self, params, x):
        """Output (N, n_out) and, per layer, its input h and pre-activation z."""
        h, cache = x, []
        for i, (W, b) in enumerate(params):
            z = self.W_std * (h @ W) / math.sqrt(W.shape[0]) + self.b_std * b
            cache.append((h, z))
            h = z if i == len(params) - 1 else _phi(self.act, z)
        return h, cache

    def apply(self, params, x):
        return self.forward(params, x)[0]

    def mse_grad(self, params, x, y):
        """Gradient of ``||f(x) - y||^2 / (2 y.size)`` with respect to every parameter."""
        f, cache = self.forward(params, x)
        delta = (f - y) / y.size  # dL/dz of the output layer
        grads = [None] * len(params)
        for i in range(len(params) - 1, -1, -1):
            W, _ = params[i]
            h, _ = cache[i]
            c = self.W_std / math.sqrt(W.shape[0])
            grads[i] = (c * (h.T @ delta), self.b_std * delta.sum(axis=0))
            if i > 0:
                delta = (c * (delta @ W.T)) * _dphi(self.act, cache[i - 1][1])
        return grads

    def train(self, params, x_train, y_train, x_test, lr: float, checkpoints):
        """Full-batch gradient descent; outputs at the given (sorted) step counts.

        Returns
        -------
        f_train (C, N, n_out), f_test (C, M, n_out)
        """
        params = [(W.copy(), b.copy()) for W, b in params]
        out_train, out_test = [], []
        step = 0
        for target in checkpoints:
            while step < target:
                grads = self.mse_grad(params, x_train, y_train)
                params = [(W - lr * gW, b - lr * gb) for (W, b), (gW, gb) in zip(params, grads)]
                step += 1
            out_train.append(self.apply(params, x_train))
            out_test.append(self.apply(params, x_test))
        return np.stack(out_train), np.stack(out_test)


def euler(rhs, state0, taus, h: float):
    """Explicit Euler with step <= h, landing on every tau (sorted). Returns (T, *state.shape)."""
    out, s, now = [], np.array(state0, dtype=np.float64), 0.0
    for target in taus:
        count = math.ceil((target - now) / h) if target > now else 0
        if count:
            dt = (target - now) / count
            for _ in range(count):
                s = s + dt * rhs(s)
            now = target
        out.append(s.copy())
    return np.stack(out)


def euler_richardson(rhs, state0, taus, h: float):
    """Euler at steps h, h/2 and h/4, Richardson-extrapolated twice.

    ``R(h) = 2 E(h/2) - E(h)`` cancels Euler's first-order error, leaving C h^2; so
    ``R(h) - R(h/2) = (3/4) C h^2`` and the error of ``R(h/2)`` is ``|R(h) - R(h/2)| / 3``.
    Returns ``(R(h/2), |R(h) - R(h/2)|)``: the reference and three times its estimated error,
    both (T, *state.shape).
    """
    e1, e2, e4 = (euler(rhs, state0, taus, h / m) for m in (1, 2, 4))
    r1, r2 = 2 * e2 - e1, 2 * e4 - e2
    return r2, np.abs(r1 - r2)


def gd_loop(k_train_train, k_test_train, y, f0, ft0, lr: float, steps):
    """Function-space gradient descent on ||f - y||^2 / (2 n), one step at a time:
    ``r = (f - y) / n; f <- f - lr K r; f_test <- f_test - lr K_test r``."""
    n = y.size
    f, ft, out_f, out_t, k = f0.copy(), ft0.copy(), [], [], 0
    for target in steps:
        while k < target:
            r = (f - y) / n
            f, ft = f - lr * (k_train_train @ r), ft - lr * (k_test_train @ r)
            k += 1
        out_f.append(f.copy())
        out_t.append(ft.copy())
    return np.stack(out_f), np.stack(out_t)


def linearized_ensemble(x, n_train: int, y, width: int, count: int, taus, W_std, b_std, rng, mode="ntk"):
    """Outputs of ``count`` independent one-hidden-layer erf networks on the points x, each
    trained on the first ``n_train`` points by gradient flow on ||f - y||^2 / (2 n) in its
    own linearization around initialization (closed form with its empirical kernel):

        f_t = f_0 + Theta_emp(., X) Theta_emp(X, X)^{-1} (e^{-Theta_emp(X,X) tau / n} - I) (f_0(X) - y).

    mode 'ntk' trains all parameters (Theta_emp = empirical NTK); 'nngp' trains only the
    output layer, whose tangent kernel is the output layer's features' Gram matrix (the
    empirical NNGP, W_std^2 h h^T / width + b_std^2).

    Returns float64 (count, T, P) for one output (P = len(x)).
    """
    d = x.shape[1]
    n = y.size
    out = []
    block = 200  # networks per batch: (block, P, width) arrays stay around 10 MB
    for start in range(0, count, block):
        s = min(block, count - start)
        W1 = rng.standard_normal((s, d, width))
        b1 = rng.standard_normal((s, 1, width))
        W2 = rng.standard_normal((s, width))
        b2 = rng.standard_normal((s, 1))
        z = W_std * np.einsum("pd,sdw->spw", x, W1) / math.sqrt(d) + b_std * b1  # (s, P, w)
        h = erf(z)
        f0 = W_std * np.einsum("spw,sw->sp", h, W2) / math.sqrt(width) + b_std * b2  # (s, P)
        # Output layer: df/dW2 = W_std h / sqrt(w), df/db2 = b_std.
        theta = (W_std**2 / width) * np.einsum("spw,sqw->spq", h, h) + b_std**2
        if mode == "ntk":
            # Hidden layer: df/dW1_{dj} = W_std W2_j phi'(z_j) / sqrt(w) * W_std x_d / sqrt(d),
            # df/db1_j = W_std W2_j phi'(z_j) / sqrt(w) * b_std.
            g = (W_std / math.sqrt(width)) * W2[:, None, :] * (2 / math.sqrt(math.pi)) * np.exp(-(z**2))
            inputs = (W_std**2) * (x @ x.T) / d + b_std**2  # (P, P)
            theta = theta + np.einsum("spw,sqw->spq", g, g) * inputs[None]
        k_dd = theta[:, :n_train, :n_train]
        k_td = theta[:, :, :n_train]
        lam, vecs = np.linalg.eigh(k_dd)  # (s, N), (s, N, N)
        r = np.einsum("snm,sn->sm", vecs, f0[:, :n_train] - y[None, :])  # V^T (f0 - y)
        res = []
        for tau in taus:
            coef = np.expm1(-lam * tau / n) / lam  # K^{-1}(e^{-K tau/n} - I) in the eigenbasis
            delta = np.einsum("spn,snm,sm->sp", k_td, vecs, coef * r)
            res.append(f0 + delta)
        out.append(np.stack(res, axis=1))
    return np.concatenate(out)
