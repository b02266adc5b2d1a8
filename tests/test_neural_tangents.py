"""Agreement with Neural Tangents (optional: runs where neural_tangents 0.6.5 and JAX are
installed, e.g. the separate environment DESIGN.md describes; skipped otherwise).

DESIGN.md section 2: for the same architecture and inputs, fastntk's kernels agree with
``kernel_fn(x1, x2, ('nngp', 'ntk'))`` of Neural Tangents in float64 to about 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt

from conftest import assert_kernel_close, entry_scale

stax = pytest.importorskip("neural_tangents.stax")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

# Both sides of each pair: (fastntk layer, Neural Tangents layer).
ACTIVATIONS = {
    "relu": (nt.Relu(), stax.Relu()),
    "leaky_relu": (nt.LeakyRelu(0.1), stax.LeakyRelu(0.1)),
    "abrelu": (nt.ABRelu(-0.4, 1.3), stax.ABRelu(-0.4, 1.3)),
    "abs": (nt.Abs(), stax.Abs()),
    "erf": (nt.Erf(0.7, 1.6, 0.3), stax.Erf(0.7, 1.6, 0.3)),
    "sign": (nt.Sign(), stax.Sign()),
    "gelu": (nt.Gelu(), stax.Gelu()),
    "sin": (nt.Sin(1.2, 0.8, 0.3), stax.Sin(1.2, 0.8, 0.3)),
    "cos": (nt.Cos(0.9, 1.1, -0.2), stax.Cos(0.9, 1.1, -0.2)),
    "rbf": (nt.Rbf(0.7), stax.Rbf(0.7)),
    "exp": (nt.Exp(0.8, 0.5), stax.Exp(0.8, 0.5)),
    "gaussian": (nt.Gaussian(1.1, -0.6), stax.Gaussian(1.1, -0.6)),
    "monomial3": (nt.Monomial(3), stax.Monomial(3)),
    "rect_monomial2": (nt.RectifiedMonomial(2), stax.RectifiedMonomial(2)),
}


def _pair(name, parameterization, depth=3, W_std=1.2, b_std=0.3, width=7):
    ours, theirs = [], []
    for _ in range(depth):
        ours += [nt.Dense(width, W_std, b_std, parameterization), ACTIVATIONS[name][0]]
        theirs += [stax.Dense(width, W_std, b_std, parameterization=parameterization), ACTIVATIONS[name][1]]
    ours.append(nt.Dense(1, W_std, b_std, parameterization))
    theirs.append(stax.Dense(1, W_std, b_std, parameterization=parameterization))
    return nt.serial(*ours), stax.serial(*theirs)[2]


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_agrees_with_neural_tangents(name, parameterization, rng):
    ours, kernel_fn = _pair(name, parameterization)
    x1, x2 = rng.standard_normal((12, 5)), rng.standard_normal((9, 5))
    for b in (None, x2):
        k = ours.kernel(x1, b)
        ref = kernel_fn(x1, b, ("nngp", "ntk"))
        d1 = ours.kernel(x1)
        d2 = d1 if b is None else ours.kernel(b)
        for mine, theirs, dm1, dm2 in (
            (k.nngp, ref.nngp, d1.nngp, d2.nngp),
            (k.ntk, ref.ntk, d1.ntk, d2.ntk),
        ):
            theirs = np.asarray(theirs)
            # NT's diagonals of x2=None go through its pair formulas at a correlation
            # rounded to 1 - 1e-16 (about 1e-8 off after an arc-cosine); fastntk's are exact.
            # Off the diagonal both are round-off accurate.
            scale = entry_scale(theirs, np.diag(dm1), np.diag(dm2))
            mask = ~np.eye(*theirs.shape, dtype=bool) if b is None else np.ones(theirs.shape, bool)
            assert_kernel_close(mine[mask], theirs[mask], 1e-10, scale[mask])
