"""The native op behind the empirical kernels, ``_core.empirical_gram``, against an einsum
reference (tests/empirical_ref.py): every kind of term, traced and full, symmetric and
cross, any tile size, threads, blocks of a larger output, accumulation; Ctrl-C and the GIL.

Tolerance: an entry is a sum over terms of (weight <a_i, a_j> + bias) <b_i, b_j>. Each
inner product of length K computed in float64, by BLAS or by einsum, is within
gamma_K ||x|| ||y|| of the exact value (gamma_K = K u / (1 - K u), u = 2^-53; Higham,
Accuracy and Stability, 3.1), and the products and the sum over terms add a few
roundings more. With K <= 200 here, gamma_K < 2.3e-14, so the two results differ by well
under RTOL = 1e-12 times the entry's Cauchy-Schwarz scale
sum_terms (|weight| ||a_i|| ||a_j|| + |bias|) ||b_i|| ||b_j|| (in the traced case summed
over o), while an indexing error (a wrong output, a transposed block, a missed term) is
of the order of the scale itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import _core

from ctrl_c import python_ticks_during, seconds_to_stop, size_for
from empirical_ref import empirical_gram_ref

RTOL = 1e-12


def _terms(rng, n1, n2, m, kinds, symmetric):
    """Random terms (a1, a2, b1, b2, weight, bias) of the given kinds:
    'full' (A and B), 'const' (no A: the constant bias), 'identity' (B = e_o)."""
    out = []
    for k, kind in enumerate(kinds):
        p, q = 3 + 2 * k, 4 + k
        a1 = None if kind == "const" else rng.standard_normal((n1, p))
        a2 = None if a1 is None else (a1 if symmetric else rng.standard_normal((n2, p)))
        b1 = None if kind == "identity" else rng.standard_normal((n1, m, q))
        b2 = None if b1 is None else (b1 if symmetric else rng.standard_normal((n2, m, q)))
        out.append((a1, a2, b1, b2, rng.uniform(0.2, 2.0), rng.uniform(0.0, 0.5)))
    return out


def _native_terms(terms, symmetric):
    """The terms as the binding takes them (no a2, b2 in symmetric calls)."""
    return [
        (a1, None, b1, None, w, c) if symmetric else (a1, a2, b1, b2, w, c) for a1, a2, b1, b2, w, c in terms
    ]


def _scale(terms, n1, n2, m, trace):
    """The Cauchy-Schwarz scale of each entry (module docstring)."""
    total = np.zeros((n1, n2, m, m))
    for a1, a2, b1, b2, w, c in terms:
        na = np.full((n1, n2), abs(c)) if a1 is None else abs(w) * np.outer(*map(_norms, (a1, a2))) + abs(c)
        nb1 = np.ones((n1, m)) if b1 is None else np.linalg.norm(b1, axis=2)
        nb2 = np.ones((n2, m)) if b2 is None else np.linalg.norm(b2, axis=2)
        total += na[:, :, None, None] * nb1[:, None, :, None] * nb2[None, :, None, :]
    return np.einsum("ijoo->ij", total) if trace else total


def _norms(a):
    return np.linalg.norm(a, axis=1)


def _check(actual, expected, scale):
    err = np.abs(actual - expected)
    worst = float((err / scale).max())
    assert worst <= RTOL, f"max error {worst:.2e} of the entry scale (tolerance {RTOL:g})"


KINDS = {
    "one": ("full",),
    "three": ("full", "full", "full"),
    "mixed": ("full", "const", "identity", "full"),
    "identity_only": ("identity",),
}


@pytest.mark.parametrize("tile", [1, 3, 0, 64])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "cross"])
@pytest.mark.parametrize("trace", [True, False], ids=["traced", "full"])
@pytest.mark.parametrize("kinds", sorted(KINDS))
def test_matches_reference(rng, kinds, trace, symmetric, tile):
    n1, n2, m = 11, 11 if symmetric else 7, 3
    terms = _terms(rng, n1, n2, m, KINDS[kinds], symmetric)
    out = np.full((n1, n2) if trace else (n1, n2, m, m), np.nan)
    _core.empirical_gram(_native_terms(terms, symmetric), n1, None if symmetric else n2, m, out,
                         trace=trace, tile=tile)  # fmt: skip
    _check(out, empirical_gram_ref(terms, n1, n2, m, trace), _scale(terms, n1, n2, m, trace))
    if symmetric:  # mirrored exactly, not recomputed
        np.testing.assert_array_equal(out, out.T if trace else out.transpose(1, 0, 3, 2))


@pytest.mark.parametrize("trace", [True, False], ids=["traced", "full"])
def test_block_of_larger_output_scale_and_accumulate(rng, trace):
    """Writes exactly the block out[row0:, col0:] (scaled, added when accumulating) and
    nothing else: the layout the batched Python driver relies on."""
    n1, n2, m = 5, 4, 2
    terms = _terms(rng, n1, n2, m, ("full", "identity"), False)
    shape = (9, 8) if trace else (9, 8, m, m)
    before = rng.standard_normal(shape)
    row0, col0, scale = 3, 2, 0.37
    expected_block = scale * empirical_gram_ref(terms, n1, n2, m, trace)
    err_scale = scale * _scale(terms, n1, n2, m, trace)
    for accumulate in (False, True):
        out = before.copy()
        _core.empirical_gram(_native_terms(terms, False), n1, n2, m, out, trace=trace, scale=scale,
                             accumulate=accumulate, row0=row0, col0=col0)  # fmt: skip
        block = (slice(row0, row0 + n1), slice(col0, col0 + n2))
        outside = np.ones(shape, bool)
        outside[block] = False
        np.testing.assert_array_equal(out[outside], before[outside])
        base = before[block] if accumulate else 0.0
        _check(out[block], base + expected_block, err_scale + np.abs(base))


def test_symmetric_accumulate_stays_symmetric(rng):
    n, m = 9, 2
    terms = _terms(rng, n, n, m, ("full", "full"), True)
    out = np.zeros((n, n, m, m))
    for _ in range(3):
        _core.empirical_gram(_native_terms(terms, True), n, None, m, out, trace=False, scale=0.5, accumulate=True,
                             tile=2)  # fmt: skip
    np.testing.assert_array_equal(out, out.transpose(1, 0, 3, 2))
    _check(out, 1.5 * empirical_gram_ref(terms, n, n, m, False), 1.5 * _scale(terms, n, n, m, False))


@pytest.mark.parametrize("trace", [True, False], ids=["traced", "full"])
def test_threads_do_not_change_the_result(rng, trace):
    """With a fixed tile, blocks and their arithmetic do not depend on the thread count
    (BLAS runs single-threaded inside each), so the results are bitwise equal."""
    n, m = 40, 3
    terms = _terms(rng, n, n, m, ("full", "const", "full"), False)
    outs = []
    for threads in (1, 2):
        out = np.empty((n, n) if trace else (n, n, m, m))
        _core.empirical_gram(
            _native_terms(terms, False), n, n, m, out, trace=trace, tile=8, n_threads=threads
        )
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_no_terms_and_no_points(rng):
    out = np.full((3, 4), 7.0)
    _core.empirical_gram([], 3, 4, 2, out)
    np.testing.assert_array_equal(out, 0.0)
    out = np.full((3, 4), 7.0)
    _core.empirical_gram([], 3, 4, 2, out, accumulate=True)
    np.testing.assert_array_equal(out, 7.0)
    empty = np.empty((0, 4))
    _core.empirical_gram(
        [(np.empty((0, 2)), rng.standard_normal((4, 2)), None, None, 1.0, 0.0)], 0, 4, 2, empty
    )


def test_default_tile_gives_every_thread_work():
    # 4 blocks per thread at least, unless the blocks would get smaller than 32 rows.
    assert _core.empirical_default_tile(256, 256, 10, True, True, 2) in (64, 128)
    assert _core.empirical_default_tile(4000, 4000, 10, True, False, 2) == 256
    # full kernels: a block of side t has t*m rows of (point, output) pairs
    assert _core.empirical_default_tile(4000, 4000, 10, False, True, 2) == 25
    assert _core.empirical_default_tile(50, 50, 1000, False, True, 2) == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(a1=np.ones((4, 3))), r"term 0 a1 must have shape \(5, 3\), got \(4, 3\)"),
        (dict(b1=np.ones((5, 3, 2))), r"term 0 b1 must have shape \(5, 2, 2\), got \(5, 3, 2\)"),
        (dict(b2=np.ones((6, 2, 5))), r"term 0 b2 must have shape \(6, 2, 4\), got \(6, 2, 5\)"),
        (dict(a1=np.ones((5, 3), dtype=np.float32)), r"term 0 a1 must be a C-contiguous float64 array"),
        (dict(a1=np.ones((3, 5)).T), r"term 0 a1 must be a C-contiguous float64 array"),
        (dict(out=np.ones((5, 5))), r"block out\[0:5, 0:6\] does not fit in out of shape \(5, 5\)"),
        (dict(out=np.ones((5, 6, 2, 2))), r"out must be 2-D, got shape \(5, 6, 2, 2\)"),
    ],
)
def test_binding_refuses_bad_buffers(bad, message):
    args = dict(a1=np.ones((5, 3)), a2=np.ones((6, 3)), b1=np.ones((5, 2, 4)), b2=np.ones((6, 2, 4)),
                out=np.ones((5, 6)))  # fmt: skip
    args.update(bad)
    term = (args["a1"], args["a2"], args["b1"], args["b2"], 1.0, 0.0)
    with pytest.raises(ValueError, match=message):
        _core.empirical_gram([term], 5, 6, 2, args["out"])


# Jobs on small buffers (the same arrays stand for every term), as many terms of 2 GFLOP
# per block pair of 256 points as take the wanted seconds here (time ~ number of terms).
def _terms_for(seconds, n):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, 64)), rng.standard_normal((n, 4, 256))
    out = np.empty((n, n))
    return size_for(
        seconds, lambda k: _core.empirical_gram([(a, None, b, None, 1.0, 0.1)] * k, n, None, 4, out), 4
    )


def test_ctrl_c_stops_within_a_second():
    n = 3000
    setup = f"""
    import numpy as np
    from fastntk import _core
    rng = np.random.default_rng(0)
    n, m, q = {n}, 4, 256
    a, b = rng.standard_normal((n, 64)), rng.standard_normal((n, m, q))
    terms = [(a, None, b, None, 1.0, 0.1)] * {_terms_for(4.0, n)}
    out = np.empty((n, n))
    """
    seconds = seconds_to_stop(setup, "_core.empirical_gram(terms, n, None, m, out)")
    assert seconds < 1.0, f"took {seconds:.2f} s after Ctrl-C to stop"


def test_gil_is_released_during_native_work(rng):
    n, m = 1500, 4
    a, b = rng.standard_normal((n, 64)), rng.standard_normal((n, m, 256))
    out = np.empty((n, n))
    terms = [(a, None, b, None, 1.0, 0.1)] * _terms_for(0.5, n)
    ticks = python_ticks_during(lambda: _core.empirical_gram(terms, n, None, m, out))
    assert ticks > 20, f"the main thread ran only {ticks} times during the native call"
