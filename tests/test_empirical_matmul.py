"""``_core.matmul``, the product the finite networks' forward and backward passes run on
fastntk's BLAS and thread team, against NumPy's ``@``; its errors and Ctrl-C.

Tolerance: every entry is a dot product of length k, within gamma_k |a_i| . |b_j| of the
exact value for either implementation (gamma_k = k u / (1 - k u), Higham 3.1), so the two
differ by at most 2 gamma_k |a| |b| entrywise; the test allows twice that.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import _core

from ctrl_c import seconds_to_stop, size_for

U = 2.0**-53


def _bound(a, b, alpha):
    k = a.shape[1]
    gamma = k * U / (1 - k * U)
    return 4 * gamma * abs(alpha) * (np.abs(a) @ np.abs(b)) + 1e-300


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(
    "m, n, k",
    [(1, 1, 1), (6, 5, 1024), (7, 3000, 13), (700, 300, 50), (33, 2100, 64), (3, 4, 0), (0, 4, 3), (4, 0, 3)],
)
def test_matches_numpy(rng, m, n, k, trans_b):
    a = rng.standard_normal((m, k))
    b = rng.standard_normal((k, n))
    out = np.full((m, n), np.nan)
    alpha = -0.7
    _core.matmul(a, np.ascontiguousarray(b.T) if trans_b else b, out, trans_b=trans_b, alpha=alpha)
    assert np.all(np.abs(out - alpha * (a @ b)) <= _bound(a, b, alpha))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_any_thread_count(rng, threads):
    a, b = rng.standard_normal((1000, 40)), rng.standard_normal((40, 1500))
    out = np.empty((1000, 1500))
    _core.matmul(a, b, out, n_threads=threads)
    assert np.all(np.abs(out - a @ b) <= _bound(a, b, 1.0))


@pytest.mark.parametrize(
    "a, b, out, trans_b, message",
    [
        ((3,), (3, 2), (3, 2), False, r"a must be 2-D, got shape \(3,\)"),
        ((3, 4), (5, 2), (3, 2), False, r"a of shape \(3, 4\) and b of shape \(5, 2\) do not chain"),
        (
            (3, 4),
            (2, 5),
            (3, 2),
            True,
            r"a of shape \(3, 4\) and b of shape \(2, 5\) \(transposed\) do not chain",
        ),
        ((3, 4), (4, 2), (2, 3), False, r"out must have shape \(3, 2\), got \(2, 3\)"),
    ],
)
def test_errors(a, b, out, trans_b, message):
    with pytest.raises(ValueError, match=message):
        _core.matmul(np.ones(a), np.ones(b), np.empty(out), trans_b=trans_b)


def test_refuses_other_dtypes_and_layouts():
    with pytest.raises(TypeError):
        _core.matmul(np.ones((3, 4), dtype=np.float32), np.ones((4, 2)), np.empty((3, 2)))
    with pytest.raises(TypeError):
        _core.matmul(np.ones((4, 3)).T, np.ones((4, 2)), np.empty((3, 2)))


def test_ctrl_c_stops_within_a_second():
    # A square product sized to take ~4 s here (time ~ s^3), run in tiles of ~2 GFLOP.
    def product(s):
        a = np.ones((s, s))
        _core.matmul(a, a, np.empty((s, s)))

    s = size_for(4.0, product, 1500, power=3)
    setup = f"""
    import numpy as np
    from fastntk import _core
    a, out = np.ones(({s}, {s})), np.empty(({s}, {s}))
    """
    seconds = seconds_to_stop(setup, "_core.matmul(a, a, out)")
    assert seconds < 1.0, f"took {seconds:.2f} s after Ctrl-C to stop"
