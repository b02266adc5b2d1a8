"""Kernels after every layer from one pass, and derivatives in the Dense parameters
carried through the recursion (forward-mode dual numbers)."""

from __future__ import annotations

import numpy as np
import pytest

import fastntk as nt
from fastntk import _engine

from specs import ACTIVATION_SPECS, RANDOM_ACTIVATIONS, random_spec, to_fastntk


def _mlp(act, depth, W_std, b_std, parameterization="ntk", widths=None):
    """depth x [Dense, act()], Dense; widths: the depth + 1 Dense layers' out_dims."""
    width, n_out = (None, None) if widths is None else (widths[:-1], widths[-1])
    return nt.mlp(
        act(), depth, W_std=W_std, b_std=b_std, width=width, n_out=n_out, parameterization=parameterization
    )


@pytest.mark.parametrize("seed", range(8))
def test_every_layer_equals_the_truncated_networks(seed):
    rng = np.random.default_rng(seed)
    net = to_fastntk(random_spec(rng))
    x1, x2 = rng.standard_normal((13, 5)), rng.standard_normal((7, 5))
    for b in (None, x2):
        k = net.kernel(x1, b, every_layer=True)
        assert k.nngp.shape == (len(net.layers), 13, 13 if b is None else 7)
        for layer in range(len(net.layers)):
            cut = nt.serial(*net.layers[: layer + 1])
            ref = cut.kernel(x1, b)
            np.testing.assert_allclose(k.nngp[layer], ref.nngp, rtol=1e-14, atol=0)
            np.testing.assert_allclose(k.ntk[layer], ref.ntk, rtol=1e-14, atol=0)


def test_every_layer_with_identity_layers_and_a_single_name(rng):
    net = nt.serial(nt.Identity(), nt.Dense(b_std=0.2), nt.Identity(), nt.Erf(), nt.Dense(W_std=1.4))
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    k = net.kernel(x1, x2, every_layer=True)
    np.testing.assert_allclose(k.nngp[0], x1 @ x2.T / 3, rtol=1e-14)  # before any Dense: the input kernel
    np.testing.assert_array_equal(k.ntk[0], 0.0)
    np.testing.assert_array_equal(k.nngp[2], k.nngp[1])  # Identity repeats
    np.testing.assert_array_equal(k.ntk[-1], net.kernel(x1, x2, get="ntk"))
    only = net.kernel(x1, x2, get="ntk", every_layer=True)
    np.testing.assert_array_equal(only, k.ntk)


def test_depth_sweep_of_an_mlp(rng):
    """Entry 2l of an MLP whose Dense layers are alike is the MLP with l hidden layers."""
    x = rng.standard_normal((20, 6))
    deep = _mlp(nt.Relu, 6, 1.4, 0.1)
    sweep = deep.kernel(x, every_layer=True)
    for depth in range(7):
        np.testing.assert_allclose(
            sweep.ntk[2 * depth], _mlp(nt.Relu, depth, 1.4, 0.1).kernel(x).ntk, rtol=1e-14
        )


def _seeds(net, d, W_std, b_std):
    """Directions d/dW_std and d/db_std of an MLP whose Dense layers all share them."""
    program = _engine.program(net, d)
    seeds = np.zeros((program.n_ops, 2, 3))
    for k, dense in enumerate(program.dense_ops):
        if dense:
            seeds[k, 0, 0] = 2 * W_std  # d(W^2)/dW
            seeds[k, 1, 1] = 2 * b_std  # d(b^2)/db
    return seeds


def _richardson(kernel_at, p0, h):
    """dK/dp at p0 from central differences at steps h and h/2, combined by Richardson
    extrapolation: D = (4 D(h/2) - D(h)) / 3, whose error is h^4/480 max|K^(5)| + O(eps |K| / h)."""

    def central(step):
        return (kernel_at(p0 + step) - kernel_at(p0 - step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


# At h = 1e-4 p0 the extrapolated difference is accurate to ~1e-13 of the entry scale even
# for the steepest case here, a depth-3 RectifiedMonomial(2) network whose diagonal grows
# like W^30 (K^(5)/K ~ 30^5 / W^5; checked against a 40-digit evaluation of that diagonal),
# and round-off stays ~eps / h ~ 1e-12: 1e-9 is well above both and far below any wrong
# derivative.
FD_STEP, FD_TOL = 1e-4, 1e-9


@pytest.mark.parametrize(
    "act", ["relu", "erf_abc", "gelu", "sin", "rect_monomial2", "abrelu", "gaussian", "rbf", "sign"]
)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_gradients_match_finite_differences(act, parameterization, rng):
    layer = ACTIVATION_SPECS[act][1]
    W, b = 1.3, 0.3
    widths = [5, 4, 3, 1] if parameterization == "standard" else None
    net = _mlp(layer, 3, W, b, parameterization, widths)
    x1, x2 = rng.standard_normal((9, 4)), rng.standard_normal((6, 4))
    x1[3] = -x1[1]  # an antipodal pair
    x1[5] = x1[2]  # a duplicated pair
    for x2_ in (None, x2):
        a1, a2 = _engine.inputs(x1, x2_)
        out = _engine.gram(
            _engine.program(net, a1.shape[1]), a1, a2, ("nngp", "ntk"), seeds=_seeds(net, 4, W, b)
        )
        for p in range(2):
            for name in ("nngp", "ntk"):

                def kernel_at(value, p=p, name=name, x2_=x2_):
                    Wv, bv = (value, b) if p == 0 else (W, value)
                    return _mlp(layer, 3, Wv, bv, parameterization, widths).kernel(x1, x2_, get=name)

                p0 = (W, b)[p]
                fd = _richardson(kernel_at, p0, p0 * FD_STEP)
                analytic = out[name][0, 1 + p]
                assert np.all(np.isfinite(analytic))
                scale = np.max(np.abs(fd)) + np.max(np.abs(out[name][0, 0])) / p0
                np.testing.assert_allclose(
                    analytic, fd, rtol=0, atol=FD_TOL * scale, err_msg=f"{name} d/d{'Wb'[p]}"
                )
        # The values are the plain kernels: the same formulas, but the derivative path's
        # transcendentals are evaluated in other loops (other libmvec widths, scalar libm in
        # loop remainders; each <= 4 ulp), so they agree to a few ulps of the kernel's scale
        # per layer.
        plain = net.kernel(x1, x2_)
        for name, ref in (("nngp", plain.nngp), ("ntk", plain.ntk)):
            np.testing.assert_allclose(out[name][0, 0], ref, rtol=0, atol=1e-13 * np.max(np.abs(ref)))


def test_gradients_are_finite_for_antipodal_inputs_without_bias(rng):
    """Without biases an antipodal pair stays at correlation -1 whatever W_std, where
    d acos(c)/dc is infinite: the derivative must be the limit 0 * inf -> 0 of a
    pair whose correlation does not move, not NaN; and it must match finite differences."""
    x = rng.standard_normal((4, 3))
    x[1] = -2.5 * x[0]
    W = 1.2
    net = _mlp(nt.Relu, 3, W, None)
    program = _engine.program(net, 3)
    seeds = np.zeros((program.n_ops, 1, 3))
    seeds[np.array(program.dense_ops), 0, 0] = 2 * W
    a1, _ = _engine.inputs(x, None)
    out = _engine.gram(_engine.program(net, a1.shape[1]), a1, None, ("nngp", "ntk"), seeds=seeds)
    for name in ("nngp", "ntk"):
        fd = _richardson(lambda w, name=name: _mlp(nt.Relu, 3, w, None).kernel(x, get=name), W, W * FD_STEP)
        analytic = out[name][0, 1]
        assert np.all(np.isfinite(analytic))
        np.testing.assert_allclose(analytic, fd, rtol=0, atol=FD_TOL * np.max(np.abs(analytic)))


def test_captures_with_gradients(rng):
    """Captures and directions together: each capture's derivative is the derivative of
    the truncated network's kernel."""
    W, b = 1.1, 0.4
    net = _mlp(nt.Erf, 2, W, b)
    x = rng.standard_normal((8, 3))
    program = _engine.program(net, 3)
    dense_ops = [k for k, dense in enumerate(program.dense_ops) if dense]
    a1, _ = _engine.inputs(x, None)
    both = _engine.gram(
        _engine.program(net, a1.shape[1]),
        a1,
        None,
        ("ntk",),
        capture_after=dense_ops,
        seeds=_seeds(net, 3, W, b),
    )["ntk"]
    assert both.shape == (3, 3, 8, 8)
    for c, depth in enumerate(range(3)):
        cut = _mlp(nt.Erf, depth, W, b)
        a, _ = _engine.inputs(x, None)
        ref = _engine.gram(_engine.program(cut, a.shape[1]), a, None, ("ntk",), seeds=_seeds(cut, 3, W, b))[
            "ntk"
        ][0]
        np.testing.assert_allclose(both[c], ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("act", RANDOM_ACTIVATIONS[:4])
def test_one_and_three_directions(act, rng):
    """P = 1 and P = 3 instantiations agree with P = 2 on the shared directions."""
    layer = ACTIVATION_SPECS[act][1]
    W, b = 1.2, 0.2
    net = _mlp(layer, 2, W, b)
    x = rng.standard_normal((10, 3))
    a1, _ = _engine.inputs(x, None)
    two = _seeds(net, 3, W, b)
    ref = _engine.gram(_engine.program(net, a1.shape[1]), a1, None, ("ntk",), seeds=two)["ntk"]
    one = _engine.gram(_engine.program(net, a1.shape[1]), a1, None, ("ntk",), seeds=two[:, 1:2])["ntk"]
    three = _engine.gram(
        _engine.program(net, a1.shape[1]), a1, None, ("ntk",), seeds=np.concatenate([two, two[:, :1]], axis=1)
    )["ntk"]
    np.testing.assert_allclose(one[0, 1], ref[0, 2], rtol=1e-14, atol=0)
    np.testing.assert_allclose(three[0, :3], ref[0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(three[0, 3], ref[0, 1], rtol=1e-14, atol=0)


def test_bad_requests(rng):
    net = _mlp(nt.Relu, 1, 1.0, 0.1)
    program = _engine.program(net, 3)
    x = rng.standard_normal((4, 3))
    with pytest.raises(
        ValueError, match=r"seeds must have shape \(n_ops=3, directions, 3\), got \(2, 1, 3\)"
    ):
        nt._core.ntk_gram(program, x, None, np.empty((1, 2, 4, 4)), None, seeds=np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match=r"n_directions must be in \[0, 3\], got 4"):
        nt._core.ntk_gram(program, x, None, np.empty((1, 5, 4, 4)), None, seeds=np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="capture_after must be increasing op indices in \\[0, 3\\)"):
        nt._core.ntk_gram(program, x, None, np.empty((2, 1, 4, 4)), None, capture_after=[2, 1])
    with pytest.raises(ValueError, match=r"nngp must have shape \(2, 1, 4, 4\), got \(4, 4\)"):
        nt._core.ntk_gram(program, x, None, np.empty((4, 4)), None, capture_after=[0, 2])
