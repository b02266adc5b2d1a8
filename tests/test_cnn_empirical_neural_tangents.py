"""Finite convolutional and residual networks against Neural Tangents (optional: runs where
neural_tangents 0.6.5 and JAX are installed, e.g. the separate environment DESIGN.md
describes; skipped otherwise).

With the same parameters (fastntk's layout: HWIO filters, which Neural Tangents uses too;
branch parameters as nested lists, which JAX takes as a pytree), ``apply``,
``empirical_ntk`` and ``empirical_nngp`` agree with ``apply_fn``, ``empirical_ntk_fn`` and
``empirical_nngp_fn`` in float64, traced and full, Dense on images (standard
parameterization) and image outputs included (Neural Tangents' axis layout
(N1, N2, H, H, W, W, ...)). Run here in the Neural Tangents environment: 3 passed.

Tolerance: both sides sum the same products (a few thousand per entry) in different
orders, so they differ by ~gamma_P (~1e-13) of the largest entry; 1e-11 of it leaves a
margin of ~100.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt

stax = pytest.importorskip("neural_tangents.stax")
neural_tangents = pytest.importorskip("neural_tangents")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

RTOL = 1e-11


def _conv(out, window, **kw):
    b_std = kw.pop("b_std", 0.1)
    return nt.Conv(out, window, b_std=b_std, **kw), stax.Conv(out, window, b_std=b_std, **kw)


def _net(*pairs):
    ours, theirs = zip(*pairs)
    return nt.serial(*ours), stax.serial(*theirs)


def _parallel(*branches):
    """Each branch a list of (ours, theirs) pairs; Neural Tangents' side always a serial,
    so that its parameters are a list per branch as fastntk's."""
    return (
        nt.parallel(*[nt.serial(*[p[0] for p in br]) for br in branches]),
        stax.parallel(*[stax.serial(*[p[1] for p in br]) for br in branches]),
    )


def _pair(layer):
    return getattr(nt, layer)(), getattr(stax, layer)()


NETS = {
    "conv_same_strided_flatten": (
        _net(
            _conv(3, (3, 2), strides=(2, 1), padding="SAME", W_std=1.3),
            _pair("Relu"),
            _conv(4, (2, 2), padding="CIRCULAR", parameterization="standard", W_std=1.1, b_std=0.3),
            (nt.Erf(), stax.Erf()),
            _pair("Flatten"),
            (nt.Dense(3, 1.2, 0.2), stax.Dense(3, 1.2, 0.2)),
        ),
        (5, 4, 2),
    ),
    "pools_layernorm_gap": (
        _net(
            _conv(4, (2, 2), padding="VALID"),
            (
                nt.AvgPool((2, 2), padding="SAME", normalize_edges=True),
                stax.AvgPool((2, 2), padding="SAME", normalize_edges=True),
            ),
            (nt.LayerNorm(axis=(1, 2, 3)), stax.LayerNorm(axis=(1, 2, 3))),
            _pair("Gelu"),
            (
                nt.SumPool((2, 1), strides=(1, 1), padding="CIRCULAR"),
                stax.SumPool((2, 1), strides=(1, 1), padding="CIRCULAR"),
            ),
            _pair("GlobalAvgPool"),
            (nt.Dense(2, 0.9, None), stax.Dense(2, 0.9, None)),
        ),
        (6, 5, 3),
    ),
    "residual_concat_1d": (
        _net(
            _conv(3, (3,), padding="SAME"),
            (nt.FanOut(2), stax.FanOut(2)),
            _parallel([_pair("Identity")], [_pair("Relu"), _conv(3, (3,), padding="CIRCULAR", W_std=1.4)]),
            _pair("FanInSum"),
            (nt.LayerNorm(), stax.LayerNorm()),
            (nt.FanOut(2), stax.FanOut(2)),
            _parallel([_conv(2, (1,))], [(nt.Erf(), stax.Erf()), _conv(1, (2,), padding="SAME")]),
            (nt.FanInConcat(), stax.FanInConcat()),
            # Dense on the channel axis of an image, standard parameterization (fan-in = channels)
            (nt.Dense(3, 1.1, 0.2, "standard"), stax.Dense(3, 1.1, 0.2, parameterization="standard")),
            (nt.Relu(), stax.Relu()),
            (nt.AvgPool((2,), strides=(2,)), stax.AvgPool((2,), strides=(2,))),
        ),
        (7, 2),
    ),
}


@pytest.mark.parametrize("name", list(NETS))
def test_agrees_with_neural_tangents(name, rng):
    (ours, (_, apply_fn, _)), shape = NETS[name]
    params = ours.init(int(rng.integers(2**31)), shape)
    x1, x2 = rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)
    f = np.asarray(apply_fn(params, x1))
    np.testing.assert_allclose(ours.apply(params, x1), f, rtol=0, atol=RTOL * np.abs(f).max())
    for axes in ((-1,), ()):
        ntk_fn = neural_tangents.empirical_ntk_fn(apply_fn, trace_axes=axes, implementation=1)
        nngp_fn = neural_tangents.empirical_nngp_fn(apply_fn, trace_axes=axes)
        for b in (None, x2):
            for kind, mine, ref in (
                ("ntk", ours.empirical_ntk(params, x1, b, trace_axes=axes), ntk_fn(x1, b, params)),
                ("nngp", ours.empirical_nngp(params, x1, b, trace_axes=axes), nngp_fn(x1, b, params)),
            ):
                ref = np.asarray(ref)
                assert mine.shape == ref.shape, (kind, axes, mine.shape, ref.shape)
                np.testing.assert_allclose(mine, ref, rtol=0, atol=RTOL * np.abs(ref).max(), err_msg=kind)
