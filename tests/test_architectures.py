"""fastntk.mlp and the one table of activation names (fastntk.architectures), used by the
command line, the scikit-learn estimators and GP kernels: each name's network against the
reference kernels of an independently written spec (tests/reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt
from fastntk import architectures, cli
from fastntk.sklearn import NTK, NTKRegressor

from reference import ntk_gram_ref

# name -> (reference spec of the activation, default W_std), written out here, not read
# from the package: what each name is documented to mean.
DOCUMENTED = {
    "relu": (("abrelu", dict(a=0.0, b=1.0)), math.sqrt(2.0)),
    "leaky_relu": (("abrelu", dict(a=0.1, b=1.0)), math.sqrt(2.0 / 1.01)),
    "abs": (("abrelu", dict(a=-1.0, b=1.0)), 1.0),
    "erf": (("erf", dict(a=1.0, b=1.0, c=0.0)), 1.0),
    "gelu": (("gelu", {}), math.sqrt(2.0)),
    "sign": (("sign", {}), 1.0),
    "sin": (("sin", dict(a=1.0, b=1.0, c=0.0)), math.sqrt(2.0)),
    "cos": (("cos", dict(a=1.0, b=1.0, c=0.0)), 1.0),
    "rbf": (("rbf", dict(gamma=1.0)), 1.0),
    "identity": (("identity", {}), 1.0),
}
# Every name the command line (relu, leaky_relu, abs, erf, gelu) or the estimators (relu, erf,
# gelu, abs, sign, sin, cos, rbf, identity) accepted before the two tables became one.
BEFORE = {"relu", "leaky_relu", "abs", "erf", "gelu", "sign", "sin", "cos", "rbf", "identity"}


def _spec(act, depth, W_std, b_std, parameterization="ntk", width=None, n_out=None):
    dense = dict(W_std=W_std, b_std=b_std, parameterization=parameterization)
    spec = []
    for _ in range(depth):
        spec += [("dense", dict(dense, out_dim=width)), act]
    return spec + [("dense", dict(dense, out_dim=n_out))]


def test_the_table_is_the_documented_one():
    assert set(architectures.ACTIVATIONS) == set(DOCUMENTED) and BEFORE <= set(DOCUMENTED)
    for name, (_, W_std) in DOCUMENTED.items():
        assert architectures.default_W_std(name) == pytest.approx(W_std, rel=1e-15), name


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_mlp_by_name_has_the_reference_kernels(name, rng):
    act, W_std = DOCUMENTED[name]
    x1, x2 = rng.standard_normal((7, 4)), rng.standard_normal((5, 4))
    net = nt.mlp(name, 3)  # default W_std and b_std 0.05
    for a, b in ((x1, None), (x1, x2)):
        want = ntk_gram_ref(_spec(act, 3, W_std, 0.05), a, b)
        got = net.kernel(a, b)
        np.testing.assert_allclose(got.nngp, want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.ntk, want[1], rtol=1e-12, atol=1e-14)


def test_mlp_layers_widths_and_standard_parameterization(rng):
    net = nt.mlp("erf", 2, W_std=1.3, b_std=None, width=16, n_out=3, parameterization="standard")
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "Erf", "Dense", "Erf", "Dense"]
    assert [layer.out_dim for layer in net.layers[::2]] == [16, 16, 3]
    assert all(layer.parameterization == "standard" and layer.b_std is None for layer in net.layers[::2])
    x = rng.standard_normal((6, 3))
    want = ntk_gram_ref(_spec(DOCUMENTED["erf"][0], 2, 1.3, None, "standard", 16, 3), x)
    got = net.kernel(x)
    np.testing.assert_allclose(got.nngp, want[0], rtol=1e-12)
    np.testing.assert_allclose(got.ntk, want[1], rtol=1e-12)
    # One width per hidden layer (the standard parameterization's NTK depends on them).
    net = nt.mlp("relu", 3, width=(5, 4, 3), n_out=2, parameterization="standard")
    assert [layer.out_dim for layer in net.layers[::2]] == [5, 4, 3, 2]
    relu = DOCUMENTED["relu"][0]
    spec = []
    for w in (5, 4, 3):
        spec += [
            ("dense", dict(W_std=math.sqrt(2), b_std=0.05, parameterization="standard", out_dim=w)),
            relu,
        ]
    spec.append(("dense", dict(W_std=math.sqrt(2), b_std=0.05, parameterization="standard", out_dim=2)))
    want = ntk_gram_ref(spec, x)
    np.testing.assert_allclose(net.kernel(x).ntk, want[1], rtol=1e-12)
    # depth 0: one Dense layer; a layer instance with its W_std.
    assert [type(layer).__name__ for layer in nt.mlp("relu", 0).layers] == ["Dense"]
    leaky = nt.LeakyRelu(0.3)
    net = nt.mlp(leaky, 1, W_std=1.1)
    assert net.layers[1] is leaky and net.layers[0].W_std == 1.1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(activation="tanh"), ValueError, r"mlp: activation must be one of \[.*'relu'.*got 'tanh'"),
        (dict(activation=nt.Dense()), ValueError, "mlp: activation must be one of"),
        (dict(activation=nt.LeakyRelu(0.3)), ValueError, "mlp: give W_std for the activation layer"),
        (dict(depth=-1), ValueError, "mlp: depth must be an integer >= 0"),
        (dict(depth=2.0), ValueError, "mlp: depth must be an integer >= 0"),
        (dict(W_std=-1.0), ValueError, "W_std"),
        (dict(width=0), ValueError, "out_dim"),
        (dict(width=(4, 4, 4)), ValueError, "mlp: width has 3 entries for depth 2"),
        (dict(width="wide"), ValueError, "mlp: width must be None, an integer"),
        (dict(parameterization="nt"), ValueError, "parameterization"),
    ],
)
def test_mlp_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nt.mlp(**{"activation": "relu", "depth": 2, **kwargs})


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_name_is_taken_by_the_command_line_and_the_estimators(name, rng):
    """One table: the command line (--arch NAME:2) and the estimators (activation=NAME) build
    the same network as mlp(NAME, 2)."""
    x = rng.standard_normal((6, 8))  # more features than points: identity's kernel is full rank
    want = nt.mlp(name, 2, W_std=1.2, b_std=0.3).kernel(x).ntk
    arch = cli.parse_arch(f"{name.upper()}:2:1.2:0.3")  # case-insensitive, as the estimators
    np.testing.assert_array_equal(arch.network(8, 1).kernel(x).ntk, want)
    k = NTK(depth=2, activation=name.upper(), W_std=1.2, b_std=0.3)(x)
    np.testing.assert_allclose(k, want, rtol=1e-13)
    NTKRegressor(depth=2, activation=name).fit(x, x[:, 0])  # accepted
