"""Finite networks, bad input: a clear exception naming the argument, the layer and the
expected and actual shapes, raised before any work."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastntk as nt


@pytest.fixture
def net():
    return nt.serial(nt.Dense(4, b_std=0.1), nt.Relu(), nt.Dense(3, b_std=None), nt.Erf(), nt.Dense(2))


@pytest.fixture
def params(net):
    return net.init(0, 5)


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((6, 5))


ALL_CALLS = {
    "apply": lambda net, p, x: net.apply(p, x),
    "empirical_ntk": lambda net, p, x: net.empirical_ntk(p, x),
    "empirical_nngp": lambda net, p, x: net.empirical_nngp(p, x, trace_axes=()),
}


@pytest.mark.parametrize("call", sorted(ALL_CALLS))
def test_weight_of_wrong_shape_names_layer_and_shapes(net, params, x, call):
    params[2] = (np.ones((4, 5)), None)
    message = r"params\[2\] \(layer 2, Dense\(out_dim=3.*\)\): W must have shape \(4, 3\), got \(4, 5\)"
    with pytest.raises(ValueError, match=message):
        ALL_CALLS[call](net, params, x)


def test_first_weight_fixes_input_dim_and_must_be_2d(net, params, x):
    params[0] = (np.ones(5), params[0][1])
    with pytest.raises(ValueError, match=r"params\[0\] .*W must have shape \(input_dim, 4\), got \(5,\)"):
        net.apply(params, x)
    params[0] = (np.ones((5, 7)), np.ones(4))
    with pytest.raises(ValueError, match=r"params\[0\] .*W must have shape \(5, 4\), got \(5, 7\)"):
        net.apply(params, x)


def test_bias_errors(net, params, x):
    p = list(params)
    p[0] = (p[0][0], np.ones(5))
    with pytest.raises(ValueError, match=r"params\[0\] .*b must have shape \(4,\), got \(5,\)"):
        net.apply(p, x)
    p = list(params)
    p[0] = (p[0][0], None)
    with pytest.raises(ValueError, match=r"params\[0\] .*b must have shape \(4,\), got None"):
        net.apply(p, x)
    p = list(params)
    p[2] = (p[2][0], np.ones(3))
    with pytest.raises(
        ValueError, match=r"params\[2\] .*no bias \(b_std=None\), so b must be None, got an array"
    ):
        net.apply(p, x)


def test_structure_errors(net, params, x):
    with pytest.raises(ValueError, match=r"one entry per layer \(5 layers.*got a list of length 4"):
        net.apply(params[:4], x)
    with pytest.raises(ValueError, match=r"one entry per layer"):
        net.apply({"W": 1}, x)
    p = list(params)
    p[1] = (np.ones(2),)
    with pytest.raises(
        ValueError, match=r"params\[1\] \(layer 1, Relu\(\)\): this layer has no parameters, expected \(\)"
    ):
        net.apply(p, x)
    p = list(params)
    p[0] = p[0][0]
    with pytest.raises(ValueError, match=r"params\[0\] .*expected a pair \(W, b\)"):
        net.apply(p, x)


def test_non_finite_or_non_numeric_params(net, params, x):
    p = list(params)
    W = p[4][0].copy()
    W[1, 1] = np.nan
    p[4] = (W, p[4][1])
    with pytest.raises(ValueError, match=r"params\[4\] .*W has a non-finite value"):
        net.empirical_ntk(p, x)
    p[4] = (W.astype(complex), p[4][1])
    with pytest.raises(
        TypeError, match=r"params\[4\] .*W must be a real numeric array, got dtype complex128"
    ):
        net.apply(p, x)


def test_input_dim_mismatch(net, params, x):
    message = re.escape("has 7 features (shape (6, 7)), but params are for input_dim=5")
    with pytest.raises(ValueError, match="x " + message):
        net.apply(params, np.ones((6, 7)))
    with pytest.raises(ValueError, match="x1 " + message):
        net.empirical_ntk(params, np.ones((6, 7)))
    with pytest.raises(ValueError, match="x2 " + message):
        net.empirical_nngp(params, x, np.ones((6, 7)))


def test_bad_inputs_reuse_the_kernel_checks(net, params):
    with pytest.raises(ValueError, match=re.escape("x1 must be a 2-D array of shape (N, d), got shape (5,)")):
        net.empirical_ntk(params, np.ones(5))
    bad = np.ones((3, 5))
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"x2 has a non-finite value \(NaN or Inf\) in row 2"):
        net.empirical_ntk(params, np.ones((2, 5)), bad)


def test_dense_without_out_dim():
    net = nt.serial(nt.Dense(8), nt.Relu(), nt.Dense())
    message = r"layer 2 \(Dense\(out_dim=None.*\)\) has no out_dim: a finite network needs the width"
    with pytest.raises(ValueError, match=message):
        net.init(0, 3)
    with pytest.raises(ValueError, match=message):
        net.apply([(), (), ()], np.ones((2, 3)))
    with pytest.raises(ValueError, match=message):
        nt.monte_carlo_kernel(net, np.ones((2, 3)))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_init_input_dim(net, bad):
    with pytest.raises(ValueError, match=r"input_dim must be an integer >= 1"):
        net.init(0, bad)


@pytest.mark.parametrize(
    "bad, error", [(-3, ValueError), (1.5, TypeError), (True, TypeError), ("a", TypeError)]
)
def test_init_seed(net, bad, error):
    with pytest.raises(error, match=r"seed must be a non-negative integer"):
        net.init(bad, 5)


@pytest.mark.parametrize("bad", [0, -2, 1.0, False])
def test_monte_carlo_n_samples(net, x, bad):
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 1, got"):
        nt.monte_carlo_kernel(net, x, n_samples=bad)


def test_monte_carlo_other_arguments(net, x):
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        nt.monte_carlo_kernel(net, x, batch_size=0)
    with pytest.raises(ValueError, match=r"get: unknown kernel 'nfgp'"):
        nt.monte_carlo_kernel(net, x, get="nfgp")
    with pytest.raises(TypeError, match=r"a Generator cannot be spawned"):
        nt.monte_carlo_kernel(net, x, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"same number of features|x2 has 4 features"):
        nt.monte_carlo_kernel(net, x, np.ones((2, 4)))


@pytest.mark.parametrize("axes", [(0,), (-2,), (0, 1), (2,), ("a",), None, (True,)])
def test_trace_axes(net, params, x, axes):
    with pytest.raises(ValueError, match=r"trace_axes must be \(\) or \(-1,\)"):
        net.empirical_ntk(params, x, trace_axes=axes)


def test_batch_size(net, params, x):
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got -1"):
        net.empirical_ntk(params, x, batch_size=-1)


def test_errors_come_before_any_work(net, params, x):
    """Validation does not depend on the size of the job: a bad argument on a huge input
    fails at once (the checks run before features or outputs are allocated)."""
    big = np.zeros((200_000, 5))
    with pytest.raises(ValueError, match=r"trace_axes"):
        net.empirical_ntk(params, big, trace_axes=(0,))
    with pytest.raises(ValueError, match=r"batch_size"):
        net.empirical_ntk(params, big, batch_size=0)
