"""No silent non-finite results: a kernel or output that overflows float64 raises
FloatingPointError naming the layer where it first stopped being finite; and Neural Tangents'
parameter layout (biases of shape (1, n)) is taken by the finite-network entry points.

The expected layers come from the recursion itself, written out here in plain Python floats
(which overflow to inf without an exception), not from fastntk."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastntk as nt
from fastntk.sklearn import NTK

W_STD = 3.0


def _deep_relu(depth):
    layers = []
    for _ in range(depth):
        layers += [nt.Dense(W_std=W_STD), nt.Relu()]
    return nt.serial(*layers, nt.Dense())


def _first_overflow_layer(q0: float, n_layers: int) -> int:
    """The layer of _deep_relu after which the NNGP or NTK of a point with input variance q0
    is first not finite. Diagonal maps: Dense Sigma <- W^2 Sigma, Theta <- Sigma' + W^2 Theta;
    Relu at correlation 1: Sigma <- Sigma / 2, Theta <- Theta / 2 (E[relu'(u)^2] = 1/2)."""
    s, t = q0, 0.0
    for layer in range(n_layers):
        if layer % 2 == 0:
            s = W_STD**2 * s
            t = s + W_STD**2 * t
        else:
            s, t = s / 2, t / 2
        if not (np.isfinite(s) and np.isfinite(t)):
            return layer
    raise AssertionError("no overflow")


def _layer_in(message: str) -> int:
    found = re.search(r"at layer (\d+)", message)
    assert found, message
    return int(found.group(1))


@pytest.fixture
def x(rng):
    return rng.standard_normal((6, 4))


def test_deep_relu_kernel_overflow_names_the_layer(x):
    net = _deep_relu(700)  # the variance grows by W_std^2 / 2 = 4.5 per layer: 4.5^700 ~ 1e457
    first = [_first_overflow_layer(float(row @ row) / 4, len(net.layers)) for row in x]
    for call in (
        lambda: net.kernel(x),  # the symmetric path
        lambda: net.kernel(x, x.copy()),  # the cross path
        lambda: net.kernel(x, get="ntk", every_layer=True),
    ):
        with pytest.raises(FloatingPointError, match=r"not finite .*row \d+ of x1 .*W_std") as info:
            call()
        message = str(info.value)
        row = int(re.search(r"row (\d+) of x1", message).group(1))
        assert _layer_in(message) == first[row]
        assert "Dense(" in message
    # With every layer the earliest capture is found first: the row that overflows first.
    with pytest.raises(FloatingPointError) as info:
        net.kernel(x, every_layer=True)
    assert _layer_in(str(info.value)) == min(first)


def test_shallower_relu_kernel_is_finite(x):
    """No false alarm: 4.5^300 ~ 1e196 fits in float64."""
    k = _deep_relu(300).kernel(x)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()


def test_gp_kernel_diag_overflow_names_the_layer(x):
    with pytest.raises(FloatingPointError, match=r"kernel diagonal is not finite .* at layer \d+"):
        NTK(depth=700, W_std=W_STD).diag(x)
    with pytest.raises(FloatingPointError, match=r"ntk kernel is not finite"):
        NTK(depth=700, W_std=W_STD)(x)


def _abs_net(depth, width=8):
    layers = []
    for _ in range(depth):
        layers += [nt.Dense(width, W_std=W_STD), nt.Abs()]
    return nt.serial(*layers, nt.Dense(2))


def _numpy_first_overflow(net, params, x, squares):
    """The first layer after which some row's signal (or its squared norm) is not finite,
    by a plain NumPy forward pass of the documented network."""
    h = x
    with np.errstate(over="ignore", invalid="ignore"):
        for k, (layer, p) in enumerate(zip(net.layers, params)):
            if isinstance(layer, nt.Dense):
                h = layer.W_std / np.sqrt(p[0].shape[0]) * (h @ p[0]) + layer.b_std * p[1]
            else:
                h = np.abs(h)
            v = (h * h).sum(axis=1) if squares else h
            if not np.isfinite(v).all():
                return k
    return None


def test_empirical_kernel_overflow_names_the_layer(x):
    """Width-8 Abs network, W_std = 3: each layer multiplies the squared norms by ~9, so after
    400 layers the signals (~3^400 ~ 1e190) are finite but their products overflow."""
    net = _abs_net(400)
    params = net.init(0, x.shape[1])
    f = net.apply(params, x)  # finite: no error
    assert np.isfinite(f).all()
    expected = _numpy_first_overflow(net, params, x, squares=True)
    assert expected is not None
    for call in (lambda: net.empirical_ntk(params, x), lambda: net.empirical_nngp(params, x, x.copy())):
        with pytest.raises(
            FloatingPointError, match=r"empirical (NTK|NNGP) is not finite .*squared norm"
        ) as info:
            call()
        assert _layer_in(str(info.value)) == expected
    with pytest.raises(FloatingPointError, match=r"empirical NNGP is not finite .*at layer \d+ \(Dense"):
        nt.monte_carlo_kernel(net, x, get="nngp")  # other networks, the same growth


def test_apply_overflow_names_the_layer(x):
    net = _abs_net(700)
    params = net.init(0, x.shape[1])
    expected = _numpy_first_overflow(net, params, x, squares=False)
    with pytest.raises(FloatingPointError, match=r"network's output is not finite .* row \d+ of x") as info:
        net.apply(params, x)
    assert _layer_in(str(info.value)) == expected


# ---------------------------------------------------------------------------------------
# Neural Tangents' parameter layout


def _nt_layout(params):
    """Biases as Neural Tangents' init_fn returns them: shape (1, out_dim)."""
    out = []
    for p in params:
        out.append((p[0], None if p[1] is None else p[1].reshape(1, -1)) if p else ())
    return out


def test_neural_tangents_bias_shape_is_taken(x):
    net = nt.serial(nt.Dense(5, b_std=0.3), nt.Erf(), nt.Dense(3, b_std=0.2))
    params = net.init(1, x.shape[1])
    nt_params = _nt_layout(params)
    assert nt_params[0][1].shape == (1, 5)
    # The reference: the documented formula with the (n,) biases, in plain NumPy.
    from scipy.special import erf

    (W1, b1), _, (W2, b2) = params
    h = erf(x @ W1 / np.sqrt(4) + 0.3 * b1)
    f_ref = h @ W2 / np.sqrt(5) + 0.2 * b2
    np.testing.assert_allclose(net.apply(nt_params, x), f_ref, rtol=1e-13)
    y = x[:3].copy()  # a different array: the cross path on both sides
    np.testing.assert_array_equal(net.empirical_ntk(nt_params, x, y), net.empirical_ntk(params, x, y))
    np.testing.assert_array_equal(net.empirical_nngp(nt_params, x), net.empirical_nngp(params, x))
    np.testing.assert_allclose(net.empirical_nngp(nt_params, x, y), f_ref @ f_ref[:3].T / 3, rtol=1e-13)


def test_other_bias_shapes_are_refused_with_the_shapes_taken(x):
    net = nt.serial(nt.Dense(5, b_std=0.3), nt.Relu(), nt.Dense(1))
    params = net.init(1, x.shape[1])
    bad = [(params[0][0], np.ones((2, 5))), (), params[2]]
    with pytest.raises(
        ValueError, match=r"params\[0\] .*b must have shape \(5,\), got \(2, 5\) \(Neural Tangents' \(1, 5\)"
    ):
        net.apply(bad, x)
