"""Ctrl-C one second into each long entry point, as a user would press it: the call stops
within a second with KeyboardInterrupt, and the process stays usable (a following call
gives the result it gives in an uninterrupted process, and the right one).

Each job is sized on the machine that runs the test (`size_for`) to take several seconds,
so that the interrupt lands in the middle of it; the setup is cheap, and the interrupted
work does not run to its end, so each test takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

import fastntk as nt
import fastntk.predict

from ctrl_c import seconds_to_stop, size_for

DELAY = 1.0  # seconds into the call
TARGET = 8.0  # seconds the whole job would take (well past the interrupt, even if timed on a busy machine)


def _stops(setup: str, call: str, after: str) -> None:
    seconds = seconds_to_stop(setup, call, delay=DELAY, after=after)
    assert seconds < 1.0, f"took {seconds:.2f} s after Ctrl-C to stop"


def test_empirical_ntk():
    def net_of(width):
        return nt.serial(nt.Dense(width), nt.Relu(), nt.Dense(width), nt.Relu(), nt.Dense(1))

    net = net_of(2048)
    params = net.init(0, 16)
    x = np.random.default_rng(0).standard_normal((4000, 16))
    n = size_for(TARGET, lambda n: net.empirical_ntk(params, x[:n]), 200, power=2)
    setup = f"""
    import numpy as np, fastntk as nt
    net = nt.serial(nt.Dense(2048), nt.Relu(), nt.Dense(2048), nt.Relu(), nt.Dense(1))
    params = net.init(0, 16)
    x = np.random.default_rng(0).standard_normal(({n}, 16))
    small = nt.serial(nt.Dense(64), nt.Relu(), nt.Dense(2))
    p_small = small.init(1, 16)
    expected = small.empirical_ntk(p_small, x[:30])
    """
    after = """
    np.testing.assert_allclose(small.empirical_ntk(p_small, x[:30]), expected, rtol=1e-13, atol=0)
    """
    _stops(setup, "net.empirical_ntk(params, x)", after)


def test_gradient_descent_mse():
    # The time is LAPACK's eigendecomposition: it runs in a worker thread while the caller
    # waits, so that Ctrl-C is seen at once (the abandoned call ends in the background).
    rng = np.random.default_rng(0)

    def job(n):
        a = rng.standard_normal((n, 40))
        fastntk.predict.gradient_descent_mse(a @ a.T / 40 + np.eye(n), np.ones(n))(t=1.0)

    # Timed at 512 (above 256, from which LAPACK runs in a worker), for twice the target: a
    # timing inflated by other threads still spinning (OpenMP's wait policy) must not
    # undersize it, and the work after the interrupt costs nothing (the process leaves).
    n = size_for(2 * TARGET, job, 512, power=3)
    setup = f"""
    import numpy as np, scipy.linalg, fastntk.predict
    rng = np.random.default_rng(0)
    a = rng.standard_normal(({n}, 40))
    k = a @ a.T / 40 + np.eye({n})
    y = rng.standard_normal({n})
    """
    # Afterwards: f_t = y - expm(-K t / n) y from zero outputs (n = y.size), by SciPy's expm.
    after = """
    ks, ys = k[:50, :50], y[:50]
    got = fastntk.predict.gradient_descent_mse(ks, ys)(t=3.0)
    np.testing.assert_allclose(got, ys - scipy.linalg.expm(-ks * 3.0 / 50) @ ys, rtol=1e-10, atol=1e-12)
    # Leave without waiting for the abandoned eigendecomposition (the exit would wait for it).
    print("AFTER_OK", flush=True)
    import os
    os._exit(0)
    """
    _stops(setup, "fastntk.predict.gradient_descent_mse(k, y)(t=1.0)", after)


def test_shallow_kernel_of_wide_inputs():
    # d = 3000: most of the time is in the per-tile products x1 . x2 / d.
    net = nt.serial(nt.Dense(), nt.Relu(), nt.Dense())
    x = np.random.default_rng(0).standard_normal((8000, 3000))
    n = size_for(TARGET, lambda n: net.kernel(x[:n]), 400, power=2)
    setup = f"""
    import numpy as np, fastntk as nt
    net = nt.serial(nt.Dense(), nt.Relu(), nt.Dense())
    x = np.random.default_rng(0).standard_normal(({n}, 3000))
    """
    # Afterwards: the ReLU NNGP of Dense-Relu-Dense (W_std = 1, no bias) in closed form:
    # q = |x|^2 / d, K = sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi), cos t = (x1.x2 / d) / sqrt(q1 q2).
    after = """
    xs = x[:20]
    g = xs @ xs.T / 3000
    s = np.sqrt(np.outer(np.diag(g), np.diag(g)))
    t = np.arccos(np.clip(g / s, -1, 1))
    ref = s * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    np.testing.assert_allclose(net.kernel(xs, get="nngp"), ref, rtol=1e-12, atol=1e-14)
    """
    _stops(setup, "net.kernel(x)", after)


def test_train_mse():
    net = nt.serial(nt.Dense(2048), nt.Relu(), nt.Dense(1))
    params = net.init(0, 16)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4000, 16)), rng.standard_normal((4000, 1))
    n = size_for(TARGET / 2000 * 20, lambda n: nt.train_mse(net, params, x[:n], y[:n], 20, discrete=True), 50)
    setup = f"""
    import numpy as np, fastntk as nt
    net = nt.serial(nt.Dense(2048), nt.Relu(), nt.Dense(1))
    params = net.init(0, 16)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(({n}, 16)), rng.standard_normal(({n}, 1))
    expected = nt.train_mse(net, params, x[:20], y[:20], [0, 5], discrete=True, learning_rate=0.5)
    """
    # Afterwards: the same short run gives the same outputs; at t = 0 they are the network's.
    after = """
    again = nt.train_mse(net, params, x[:20], y[:20], [0, 5], discrete=True, learning_rate=0.5)
    np.testing.assert_allclose(again.fx_train, expected.fx_train, rtol=1e-13, atol=0)
    np.testing.assert_allclose(again.fx_train[0], net.apply(params, x[:20]), rtol=1e-13, atol=0)
    """
    _stops(setup, "nt.train_mse(net, params, x, y, 2000, discrete=True, learning_rate=0.5)", after)


def test_monte_carlo_kernel():
    net = nt.serial(nt.Dense(2048), nt.Relu(), nt.Dense(1))
    x = np.random.default_rng(0).standard_normal((300, 16))
    samples = size_for(TARGET, lambda s: nt.monte_carlo_kernel(net, x, n_samples=s), 2)
    setup = """
    import numpy as np, fastntk as nt
    net = nt.serial(nt.Dense(2048), nt.Relu(), nt.Dense(1))
    x = np.random.default_rng(0).standard_normal((300, 16))
    expected = nt.monte_carlo_kernel(net, x[:20], n_samples=3, seed=7)
    """
    after = """
    again = nt.monte_carlo_kernel(net, x[:20], n_samples=3, seed=7)
    np.testing.assert_allclose(again.ntk, expected.ntk, rtol=1e-13, atol=0)
    np.testing.assert_allclose(again.nngp, expected.nngp, rtol=1e-13, atol=0)
    """
    _stops(setup, f"nt.monte_carlo_kernel(net, x, n_samples={samples})", after)


def test_reference_formulas_of_the_after_checks():
    # The closed forms the checks above rely on, against an independent route: the ReLU
    # NNGP by Monte Carlo over a wide layer, the MSE flow by an eigendecomposition.
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((5, 30))
    g = xs @ xs.T / 30
    s = np.sqrt(np.outer(np.diag(g), np.diag(g)))
    t = np.arccos(np.clip(g / s, -1, 1))
    ref = s * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    w = rng.standard_normal((30, 400_000)) / np.sqrt(30)
    h = np.maximum(xs @ w, 0)
    np.testing.assert_allclose(h @ h.T / w.shape[1], ref, atol=0.01)
    k = g + np.eye(5)
    lam, v = np.linalg.eigh(k)
    y = rng.standard_normal(5)
    np.testing.assert_allclose(
        y - scipy.linalg.expm(-k * 3.0 / 5) @ y, v @ ((1 - np.exp(-lam * 3.0 / 5)) * (v.T @ y)), rtol=1e-12
    )
