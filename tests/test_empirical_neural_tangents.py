"""Finite networks against Neural Tangents (optional: runs where neural_tangents 0.6.5 and
JAX are installed, e.g. the separate environment DESIGN.md describes; skipped otherwise).

With the same parameters (fastntk's layout, biases reshaped to Neural Tangents' (1, n)),
``apply``, ``empirical_ntk`` and ``empirical_nngp`` agree with ``apply_fn``,
``empirical_ntk_fn`` and ``empirical_nngp_fn`` in float64, traced and full, for every
activation and both parameterizations.

Tolerance: both sides sum the same P ~ 150 products per entry in different orders, so
they differ by ~gamma_P (~2e-14) of the entry's Cauchy-Schwarz scale, which for these
positive semi-definite kernels is at most their largest diagonal entry over x1 and x2,
i.e. max |K([x1; x2], [x1; x2])|. 1e-12 of that leaves a margin of 50.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt

stax = pytest.importorskip("neural_tangents.stax")
neural_tangents = pytest.importorskip("neural_tangents")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

from test_neural_tangents import ACTIVATIONS  # noqa: E402  (the same pairs of layers)

RTOL = 1e-12


def _pair(name, parameterization):
    ours, theirs = [], []
    for width, b_std in ((7, 0.2), (5, None)):
        ours += [nt.Dense(width, 1.2, b_std, parameterization), ACTIVATIONS[name][0]]
        theirs += [stax.Dense(width, 1.2, b_std, parameterization=parameterization), ACTIVATIONS[name][1]]
    ours.append(nt.Dense(3, 0.9, 0.1, parameterization))
    theirs.append(stax.Dense(3, 0.9, 0.1, parameterization=parameterization))
    return nt.serial(*ours), stax.serial(*theirs)[1]


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_agrees_with_neural_tangents(name, parameterization, rng):
    ours, apply_fn = _pair(name, parameterization)
    params = ours.init(int(rng.integers(2**31)), 4)
    theirs = [() if not p else (p[0], None if p[1] is None else p[1][None, :]) for p in params]
    x1, x2 = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    both = np.concatenate([x1, x2])
    f = np.asarray(apply_fn(theirs, x1))
    np.testing.assert_allclose(ours.apply(params, x1), f, rtol=0, atol=RTOL * np.abs(f).max())
    for axes in ((-1,), ()):
        ntk_fn = neural_tangents.empirical_ntk_fn(apply_fn, trace_axes=axes, implementation=1)
        nngp_fn = neural_tangents.empirical_nngp_fn(apply_fn, trace_axes=axes)
        scales = {
            "ntk": np.abs(ours.empirical_ntk(params, both, trace_axes=axes)).max(),
            "nngp": np.abs(ours.empirical_nngp(params, both, trace_axes=axes)).max(),
        }
        for b in (None, x2):
            for kind, mine, ref in (
                ("ntk", ours.empirical_ntk(params, x1, b, trace_axes=axes), ntk_fn(x1, b, theirs)),
                ("nngp", ours.empirical_nngp(params, x1, b, trace_axes=axes), nngp_fn(x1, b, theirs)),
            ):
                ref = np.asarray(ref)
                assert mine.shape == ref.shape
                np.testing.assert_allclose(mine, ref, rtol=0, atol=RTOL * scales[kind] + 1e-300)
