"""Calls from several Python threads at once give the results of the same calls made one at a
time: different networks' kernels, every-layer kernels, empirical kernels and GP kernel
gradients, all running together (each native call releases the GIL, so they overlap)."""

from __future__ import annotations

import threading

import numpy as np

import fastntk as nt
from fastntk.sklearn import NTK

from conftest import TOL


def _calls(rng):
    x = rng.standard_normal((120, 7))
    y = rng.standard_normal((50, 7))
    relu = nt.serial(
        nt.Dense(64, W_std=1.4, b_std=0.1), nt.Relu(), nt.Dense(64, W_std=1.4), nt.Relu(), nt.Dense(3)
    )
    erf = nt.serial(nt.Dense(b_std=0.2), nt.Erf(), nt.Dense(W_std=1.3), nt.Gelu(), nt.Dense())
    params = relu.init(3, 7)
    gp = NTK(depth=3)
    return {
        "relu kernel": lambda: relu.kernel(x, y),
        "erf kernel": lambda: erf.kernel(x),
        "every layer": lambda: erf.kernel(x, y, every_layer=True),
        "empirical ntk": lambda: relu.empirical_ntk(params, x),
        "empirical nngp, full": lambda: relu.empirical_nngp(params, x, y, trace_axes=()),
        "gp gradient": lambda: gp(x, eval_gradient=True),
    }


def _flat(result):
    if isinstance(result, tuple):
        return [np.asarray(r) for r in result]
    return [np.asarray(result)]


def test_threads_at_once_equal_one_at_a_time(rng):
    calls = _calls(rng)
    expected = {name: _flat(call()) for name, call in calls.items()}
    rounds = 3
    results, errors = {}, []
    start = threading.Barrier(len(calls))

    def worker(name, call):
        try:
            start.wait()
            results[name] = [_flat(call()) for _ in range(rounds)]
        except BaseException as exc:  # reported below, in the main thread
            errors.append((name, exc))

    threads = [threading.Thread(target=worker, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert not errors, errors
    for name, runs in results.items():
        for run in runs:
            for got, want in zip(run, expected[name]):
                # The tiles and their order do not depend on what else runs; only the BLAS
                # could round differently (conftest's "threads" tolerance).
                np.testing.assert_allclose(got, want, rtol=TOL["threads"], atol=0, err_msg=name)
