"""Plain-NumPy/SciPy references for tests/test_training.py; shares no code with fastntk (it
must not import it).

Everything goes through the explicit Jacobian of tests/empirical_ref.py (written out entry
by entry from backprop, one output at a time, and checked against finite differences in
tests/test_empirical.py):

- ``full_jacobian``: J of all outputs, (N * n_out, P), rows in (point, output) order;
- ``gd_ref``: full-batch gradient descent on ||f - y||^2 / (2 n) in parameter space,
  ``theta <- theta - lr J^T (f - y) / n``, one step at a time;
- ``linearized_gd_ref``: the same for ``f_lin = f_0 + J_0 (theta - theta_0)``;
- ``linearized_flow_ref``: the linearized network's gradient flow in closed form,
  with SciPy's matrix exponential;
- ``flow_ref``: the network's gradient flow integrated by SciPy's ``solve_ivp``.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.linalg

from empirical_ref import flatten, forward_ref, jacobian_ref, unflatten


def full_jacobian(spec, params, x) -> np.ndarray:
    """d f_o(x_i) / d theta for every point i and output o: (N * n_out, P), row i * n_out + o."""
    m = forward_ref(spec, params, x[:1]).shape[1]
    js = [jacobian_ref(spec, params, x, o) for o in range(m)]  # each (N, P)
    return np.stack(js, axis=1).reshape(x.shape[0] * m, -1)


def _loss(f, y):
    r = f - y
    return 0.5 * float(np.sum(r * r)) / y.size


def gd_ref(spec, params, x, y, xt, lr, steps):
    """Gradient descent, recording at the sorted step counts `steps`.

    Returns (f_train (C, N, m), f_test (C, M, m), loss (C,), params at the last step).
    """
    theta = flatten(params)
    out_f, out_t, out_l = [], [], []
    k = 0
    for target in steps:
        while k < target:
            p = unflatten(theta, params)
            f = forward_ref(spec, p, x)
            grad = full_jacobian(spec, p, x).T @ (f - y).ravel() / y.size
            theta = theta - lr * grad
            k += 1
        p = unflatten(theta, params)
        f = forward_ref(spec, p, x)
        out_f.append(f)
        out_t.append(forward_ref(spec, p, xt))
        out_l.append(_loss(f, y))
    return np.stack(out_f), np.stack(out_t), np.array(out_l), unflatten(theta, params)


def linearized_gd_ref(spec, params, x, y, xt, lr, steps):
    """Gradient descent on the linearized network; returns as gd_ref."""
    f0, ft0 = forward_ref(spec, params, x), forward_ref(spec, params, xt)
    j0, jt0 = full_jacobian(spec, params, x), full_jacobian(spec, params, xt)
    theta0 = flatten(params)
    delta = np.zeros_like(theta0)
    out_f, out_t, out_l = [], [], []
    k = 0
    for target in steps:
        while k < target:
            f = f0 + (j0 @ delta).reshape(f0.shape)
            delta = delta - lr * (j0.T @ (f - y).ravel()) / y.size
            k += 1
        f = f0 + (j0 @ delta).reshape(f0.shape)
        out_f.append(f)
        out_t.append(ft0 + (jt0 @ delta).reshape(ft0.shape))
        out_l.append(_loss(f, y))
    return np.stack(out_f), np.stack(out_t), np.array(out_l), unflatten(theta0 + delta, params)


def linearized_flow_ref(spec, params, x, y, xt, taus):
    """Gradient flow of the linearized network at the times tau = lr t, in closed form.

    With Theta = J_0 J_0^T (N m x N m, invertible when P >= N m and J_0 has full rank) and
    r_0 = f_0 - y: the residual is exp(-Theta tau / n) r_0, and integrating
    d delta / d tau = -J_0^T r / n gives delta(tau) = -J_0^T Theta^{-1} (I - exp(-Theta tau / n)) r_0.
    Returns (f_train (C, N, m), f_test (C, M, m)).
    """
    f0, ft0 = forward_ref(spec, params, x), forward_ref(spec, params, xt)
    j0, jt0 = full_jacobian(spec, params, x), full_jacobian(spec, params, xt)
    theta = j0 @ j0.T
    r0 = (f0 - y).ravel()
    n = y.size
    out_f, out_t = [], []
    for tau in taus:
        decay = scipy.linalg.expm(-theta * tau / n)
        delta = -j0.T @ np.linalg.solve(theta, r0 - decay @ r0)
        out_f.append(f0 + (j0 @ delta).reshape(f0.shape))
        out_t.append(ft0 + (jt0 @ delta).reshape(ft0.shape))
    return np.stack(out_f), np.stack(out_t)


def flow_ref(spec, params, x, y, xt, taus, rtol, atol):
    """Gradient flow d theta / d tau = -J^T (f - y) / n by solve_ivp (DOP853) at the sorted taus.
    Returns (f_train (C, N, m), f_test (C, M, m))."""

    def rhs(_tau, theta):
        p = unflatten(theta, params)
        f = forward_ref(spec, p, x)
        return -full_jacobian(spec, p, x).T @ (f - y).ravel() / y.size

    sol = scipy.integrate.solve_ivp(
        rhs, (0.0, taus[-1]), flatten(params), method="DOP853", t_eval=taus, rtol=rtol, atol=atol
    )
    assert sol.success, sol.message
    ps = [unflatten(sol.y[:, c], params) for c in range(len(taus))]
    return np.stack([forward_ref(spec, p, x) for p in ps]), np.stack([forward_ref(spec, p, xt) for p in ps])
