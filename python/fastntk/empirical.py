"""Finite networks: parameters, outputs, and their empirical NNGP and NTK.

A network built with :func:`fastntk.serial` whose Dense layers all have an ``out_dim``
is also a finite network:

- ``params = net.init(seed, input_dim)`` draws its parameters;
- ``net.apply(params, x)`` evaluates it;
- ``net.empirical_ntk(params, x1, x2)`` and ``net.empirical_nngp(params, x1, x2)`` give
  its empirical kernels, with Neural Tangents' conventions;
- :func:`monte_carlo_kernel` averages them over independent initializations, which
  approaches ``net.kernel`` as the widths grow.

Networks with convolutions, pooling, Flatten, LayerNorm or branches, and any network
called on images (N, *spatial, C), are handled by :mod:`fastntk._finite_spatial` (its
docstring gives their parameter layout: HWIO filters, a list per branch); what follows
describes fully connected networks on (N, d) inputs, whose path is unchanged.

Parameters
----------
``params`` is a list with one entry per layer of ``net.layers``: ``(W, b)`` for a Dense
layer, with ``W`` float64 ``(fan_in, out_dim)`` and ``b`` float64 ``(out_dim,)``, or
``b = None`` when the layer has no bias (``b_std=None``); ``()`` for every other layer.
As in Neural Tangents, a Dense layer computes ``z = h @ W * W_std / sqrt(fan_in) + b * b_std``
with ``W, b`` drawn standard normal in the ntk parameterization, and ``z = h @ W + b`` with
``W ~ N(0, W_std^2 / fan_in)``, ``b ~ N(0, b_std^2)`` in the standard one. The trained
parameters are ``W`` and ``b`` as stored.

How the empirical NTK is computed
---------------------------------
Without Jacobians. The gradient of output o at x through a Dense layer k is an outer
product, ``s_k * outer(h_{k-1}(x), delta_k^o(x))`` for ``W`` (``h_{k-1}`` its input,
``delta_k^o = d f_o / d z_k`` the back-propagated signal at its output, ``s_k`` the
weight multiplier), and ``beta_k * delta_k^o(x)`` for ``b``; inner products of outer
products factor, so

    Theta_oo'(x, y) = sum_k (s_k^2 <h_{k-1}(x), h_{k-1}(y)> + beta_k^2) <delta_k^o(x), delta_k^o'(y)>.

The forward pass (the ``h``) and the backward pass for all outputs at once (the
``delta``, one GEMM per layer) run in NumPy; the native driver
(``empirical_gram`` through :mod:`fastntk._engine`) assembles the sum tile by tile: two GEMMs per layer
and tile and a fused Hadamard accumulation, using the symmetry for ``x2=None``.
Memory is O(N * n_out * (sum of the widths)), never O(N * parameters).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _arrays, _engine, _finite_spatial
from ._args import all_finite, kernel_tuple, parse_get
from ._finite import (
    check_input,
    check_outputs,
    check_params,
    check_widths,
    device_context,
    forward,
    multipliers,
    namespace,
    non_finite_error,
    output_dim,
    tree_arrays,
)
from .layers import Activation, Dense

__all__ = ["monte_carlo_kernel"]


# ---------------------------------------------------------------------------------------
# Architecture and parameters.


def _rng(seed, name: str = "seed") -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(
        seed, (numbers.Integral, np.random.SeedSequence, np.random.Generator)
    ):
        raise TypeError(
            f"{name} must be a non-negative integer, a numpy.random.SeedSequence or a numpy.random.Generator, "
            f"got {seed!r}"
        )
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed}")
    return np.random.default_rng(seed)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _spatial(net, *inputs) -> bool:
    """Networks with images or branches, or called on images, go to fastntk._finite_spatial."""
    return _finite_spatial.is_spatial(net) or any(
        x is not None and not _arrays.is_cupy(x) and np.ndim(x) > 2 for x in inputs
    )


def init(net, seed, input_dim) -> list:
    """Draw the parameters of a finite network (see :meth:`fastntk.Network.init`).

    input_dim: an int (flat inputs), or the shape of one input (*spatial, C) for images
    (Neural Tangents' (-1, *spatial, C) is taken too)."""
    if _spatial(net) or isinstance(input_dim, (tuple, list)):
        shape = _finite_spatial.parse_input_shape(input_dim)
        return _finite_spatial.init(net, _rng(seed), shape)
    check_widths(net)
    input_dim = _positive_int(input_dim, "input_dim")
    rng = _rng(seed)
    params, width = [], input_dim
    for layer in net.layers:
        if not isinstance(layer, Dense):
            params.append(())
            continue
        W = rng.standard_normal((width, layer.out_dim))
        b = None if layer.b_std is None else rng.standard_normal(layer.out_dim)
        if layer.parameterization == "standard":
            W *= layer.W_std / math.sqrt(width)
            if b is not None:
                b *= layer.b_std
        params.append((W, b))
        width = layer.out_dim
    return params


# ---------------------------------------------------------------------------------------
# Forward and backward passes.


class _Features:
    """What the kernels need of a batch of n points.

    f : (n, m) outputs.
    terms : list of (A, B, weight, bias), one per Dense layer (last layer first):
        A (n, fan_in) its input, B (n, m, out_dim) the signals d f_o / d z at its output
        for every output o (None: the identity, for a readout layer), and the NTK
        coefficients weight = c_W^2, bias = c_b^2 (0 without a bias).
    """

    __slots__ = ("f", "terms")

    def __init__(self, f, terms):
        self.f = f
        self.terms = terms


def _features(net, params, x, ntk: bool) -> _Features:
    """Forward pass, and for the NTK the backward pass of all outputs at once."""
    f, inputs, derivs = forward(net, params, x, keep=ntk)
    terms = []
    if not ntk:
        return _Features(f, terms)
    n, m = f.shape
    first_dense = min(inputs) if inputs else None
    delta = None  # d f / d h at the current layer's output, (n, m, width); None: the identity
    for k in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[k]
        if isinstance(layer, Dense):
            W, b = params[k]
            fan_in, out = W.shape
            c_w, c_b = multipliers(layer, fan_in)
            bias = c_b**2 if b is not None else 0.0
            terms.append((inputs[k], None if delta is None else np.ascontiguousarray(delta), c_w**2, bias))
            if k == first_dense:
                break
            # Through z = c_W h @ W: d f / d h = c_W (d f / d z) @ W^T, one GEMM for all outputs.
            if delta is None:  # the same (m, fan_in) signal for every point, C order like the rest
                delta = np.broadcast_to(np.multiply(W.T, c_w, order="C"), (n, m, fan_in))
            else:
                delta = _engine.matmul(delta.reshape(n * m, out), W, c_w, trans_b=True).reshape(n, m, fan_in)
        elif isinstance(layer, Activation) and k in derivs:
            slope = derivs.pop(k)  # freed as soon as it is used
            if delta is None:  # an activation after the last Dense layer: a diagonal signal
                delta = np.eye(m)[None, :, :] * slope[:, None, :]
            elif delta.flags.writeable:  # a product's output, owned here: scale it in place
                delta *= slope[:, None, :]
            else:  # a broadcast view
                delta = np.multiply(delta, slope[:, None, :], order="C")
    return _Features(f, terms)


# ---------------------------------------------------------------------------------------
# Kernel assembly.


def parse_trace_axes(trace_axes) -> bool:
    """True for (-1,) (the output axis contracted and averaged), False for ()."""
    if isinstance(trace_axes, numbers.Integral) and not isinstance(trace_axes, bool):
        trace_axes = (trace_axes,)
    if not isinstance(trace_axes, (tuple, list)) or not all(
        isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in trace_axes
    ):
        raise ValueError(f"trace_axes must be () or (-1,), got {trace_axes!r}")
    axes = {int(a) % 2 if -2 <= a <= 1 else None for a in trace_axes}
    if axes == set():
        return False
    if axes == {1}:
        return True
    raise ValueError(
        f"trace_axes must be () or (-1,) (outputs have shape (N, n_out); the batch axis 0 cannot be traced), "
        f"got {trace_axes!r}"
    )


def _row_blocks(n: int, size: int):
    return [(i, min(i + size, n)) for i in range(0, n, size)] or [(0, 0)]


def _feature_bytes(net, params, m: int, input_dim: int, ntk: bool) -> int:
    """Bytes of _Features (plus the forward temporaries) per point."""
    total, width = m, input_dim
    for layer, p in zip(net.layers, params):
        if isinstance(layer, Dense):
            total += width + (m * p[0].shape[1] if ntk else 0)
            width = p[0].shape[1]
        elif isinstance(layer, Activation):
            total += 2 * width
    return 8 * total


def _batch_size(batch_size, n_total: int, per_point: int) -> int:
    if batch_size is not None:
        return _positive_int(batch_size, "batch_size")
    # Everything at once unless the features of all points would take more than half of the
    # free memory; then blocks whose features (two at a time) fit in a quarter of it.
    available = _arrays.available_memory()
    if available is None or n_total * per_point <= available // 2:
        return max(n_total, 1)
    return max(int(available // 4 // (2 * per_point)), 1)


def _fill(net, params, a1, a2, outs: dict, trace: bool, scale: float, accumulate: bool, batch_size):
    """outs[name] (= or +=) scale * the empirical kernel, for name in {'nngp', 'ntk'}.

    a2 None: symmetric (x2 = x1). Points go through the network in blocks of batch_size
    rows; for a block pair the native driver writes the block of the outputs in place.
    """
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # an overflow is reported by the caller, with its layer
        _fill_blocks(net, params, a1, a2, outs, trace, scale, accumulate, batch_size)


def _fill_blocks(net, params, a1, a2, outs: dict, trace: bool, scale: float, accumulate: bool, batch_size):
    ntk = "ntk" in outs
    symmetric = a2 is None
    n1 = a1.shape[0]
    n2 = n1 if symmetric else a2.shape[0]
    blocks1 = _row_blocks(n1, batch_size)
    blocks2 = blocks1 if symmetric else _row_blocks(n2, batch_size)

    def call(f1, f2, i0, j0, n_i, n_j):
        mm = f1.f.shape[1]
        common = dict(trace=trace, accumulate=accumulate, row0=i0, col0=j0)
        if "nngp" in outs:
            b1 = f1.f.reshape(n_i, mm, 1)
            b2 = None if f2 is None else f2.f.reshape(n_j, mm, 1)
            term = (None, None, b1, b2, 0.0, 1.0)
            _engine.empirical_gram([term], n_i, None if f2 is None else n_j, mm, outs["nngp"],
                                 scale=scale / mm if trace else scale, **common)  # fmt: skip
        if ntk:
            terms = []
            for t1, t2 in zip(f1.terms, f1.terms if f2 is None else f2.terms):
                terms.append(
                    (t1[0], None if f2 is None else t2[0], t1[1], None if f2 is None else t2[1], t1[2], t1[3])
                )
            _engine.empirical_gram(terms, n_i, None if f2 is None else n_j, mm, outs["ntk"],
                                 scale=scale / mm if trace else scale, **common)  # fmt: skip

    for bi, (i0, i1) in enumerate(blocks1):
        f1 = _features(net, params, a1[i0:i1], ntk)
        for bj, (j0, j1) in enumerate(blocks2):
            if symmetric and bj < bi:
                continue
            if symmetric and bj == bi:
                call(f1, None, i0, i0, i1 - i0, i1 - i0)
                continue
            f2 = _features(net, params, (a1 if symmetric else a2)[j0:j1], ntk)
            call(f1, f2, i0, j0, i1 - i0, j1 - j0)
            if symmetric:  # the mirror block, from the final (accumulated) values
                for out in outs.values():
                    block = out[i0:i1, j0:j1]
                    out[j0:j1, i0:i1] = block.T if trace else block.transpose(1, 0, 3, 2)
            del f2


def kernels(net, params, x1, x2, names: tuple, trace_axes, batch_size=None) -> dict:
    """The empirical kernels `names` of one network: {name: array}."""
    if _spatial(net, x1, x2):
        return _spatial_kernels(net, params, x1, x2, names, trace_axes, batch_size)
    trace = parse_trace_axes(trace_axes)
    checked, input_dim = check_params(net, params)
    a1 = check_input(x1, "x1", input_dim)
    a2 = None
    if x2 is not None and x2 is not x1:
        a2 = check_input(x2, "x2", a1.shape[1])
    m = output_dim(checked, a1.shape[1])
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    per_point = _feature_bytes(net, checked, m, a1.shape[1], "ntk" in names)
    size = _batch_size(batch_size, n1 + (0 if a2 is None else n2), per_point)
    outs = _arrays.empty_kernels(names, (n1, n2) if trace else (n1, n2, m, m))
    _fill(net, checked, a1, a2, outs, trace, 1.0, False, size)
    _check_kernels(net, checked, a1, a2, outs)
    return outs


def _check_kernels(net, params, a1, a2, outs: dict) -> None:
    """FloatingPointError naming the layer where the signal overflowed, unless every kernel
    in outs is finite (one summing pass each)."""
    for name, out in outs.items():
        if not all_finite(out):
            inputs = {"x1": a1, "x2": a2}
            raise non_finite_error(net, params, inputs, f"empirical {name.upper()}", squares=True)


def apply(net, params, x) -> np.ndarray:
    """The network's outputs (see :meth:`fastntk.Network.apply`)."""
    if _spatial(net, x):
        a = _finite_spatial.check_input(x, "x")
        checked = _finite_spatial.check_params(net, params, a.shape[1:])
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, with its layer
            f = _finite_spatial.forward(net, checked, a)
        if not all_finite(f):
            raise _spatial_non_finite(net, checked, {"x": a}, "network's output")
        return f
    xp = namespace({"x": x, **tree_arrays(params, "params")})  # CuPy in, CuPy out (see fastntk.training)
    with device_context(x):
        checked, input_dim = check_params(net, params, xp)
        a = check_input(x, "x", input_dim, xp)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, with its layer
            f = forward(net, checked, a, keep=False)[0]
        check_outputs(net, checked, a, f)
    return f


# ---------------------------------------------------------------------------------------
# Monte Carlo.


def monte_carlo_kernel(
    net, x1, x2=None, n_samples=1, seed=0, get=("nngp", "ntk"), trace_axes=(-1,), batch_size=None
):
    """Monte Carlo estimate of the NNGP and NTK: empirical kernels averaged over networks.

    Like Neural Tangents' ``monte_carlo_kernel_fn``: ``n_samples`` networks are drawn
    independently (``net.init`` with the children of ``numpy.random.SeedSequence(seed)``:
    sample s uses ``SeedSequence(seed).spawn(n_samples)[s]``, so the result does not depend
    on ``batch_size`` and the first samples of a larger run are the same networks), and
    their empirical kernels averaged. As the widths grow, the average approaches
    ``net.kernel(x1, x2)`` (with trace_axes=(-1,); with trace_axes=() its blocks approach
    ``net.kernel * I``).

    Networks with convolutions, pooling or branches (and any network on images) are
    supported too (:mod:`fastntk._finite_spatial`): there the result has Neural Tangents'
    shape, (N1, N2) for a flat output with trace_axes=(-1,), and for an image output
    (N1, N2, H, H, W, W) (each untraced output axis twice, side by side).

    Parameters
    ----------
    net : fastntk.Network
        A network whose Dense layers all have an out_dim (and Conv layers an out_chan).
    x1 : array_like, shape (N1, d) or (N1, *spatial, C)
        Inputs, any real dtype (computed in float64).
    x2 : array_like, shape (N2, d) or (N2, *spatial, C), optional
        Second inputs; None (or x1 itself) means x1, computed with the symmetry.
    n_samples : int
        Number of networks, >= 1.
    seed : int or numpy.random.SeedSequence
        Seed of the whole estimate.
    get : str or tuple of str
        'nngp', 'ntk' or a tuple of them (a single name returns that array).
    trace_axes : tuple
        (-1,): average over the outputs (shape (N1, N2)); (): the full (N1, N2, n_out, n_out)
        kernel. For networks with images or branches, any set of output axes but the batch
        axis (each traced axis contracted and divided by its size).
    batch_size : int, optional
        Points that go through a network at a time; None: all at once unless their
        features would take more than half of the free memory. Networks are drawn one at a
        time and their kernels added into the result, so memory does not grow with
        n_samples.

    Returns
    -------
    numpy.ndarray, float64, or a named tuple of them (fields in the order of get).
    """
    names, single = parse_get(get)
    if _spatial(net, x1, x2):
        outs = _spatial_monte_carlo(net, x1, x2, n_samples, seed, names, trace_axes, batch_size)
        if single:
            return outs[names[0]]
        return kernel_tuple(names)(*(outs[n] for n in names))
    n_samples = _positive_int(n_samples, "n_samples")
    if isinstance(seed, np.random.Generator):
        raise TypeError(
            "seed must be an integer or a numpy.random.SeedSequence (a Generator cannot be spawned)"
        )
    _rng(seed)  # validates
    trace = parse_trace_axes(trace_axes)
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    check_widths(net)
    a1 = check_input(x1, "x1", None)
    a2 = None
    if x2 is not None and x2 is not x1:
        a2 = check_input(x2, "x2", None)
        if a2.shape[1] != a1.shape[1]:
            raise ValueError(
                f"x1 and x2 must have the same number of features: x1 has shape {a1.shape}, x2 has shape {a2.shape}"
            )
    d = a1.shape[1]
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    base = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    outs = None
    for s in range(n_samples):
        # Exactly base.spawn(n_samples)[s], built without spawning, which would change the
        # state of a SeedSequence passed in.
        child = np.random.SeedSequence(
            base.entropy, spawn_key=base.spawn_key + (s,), pool_size=base.pool_size
        )
        params = init(net, child, d)
        if outs is None:
            m = output_dim(params, d)
            outs = _arrays.empty_kernels(names, (n1, n2) if trace else (n1, n2, m, m))
            per_point = _feature_bytes(net, params, m, d, "ntk" in names)
            size = _batch_size(batch_size, n1 + (0 if a2 is None else n2), per_point)
        _fill(net, params, a1, a2, outs, trace, 1.0 / n_samples, s > 0, size)
        _check_kernels(net, params, a1, a2, outs)
    if single:
        return outs[names[0]]
    return kernel_tuple(names)(*(outs[n] for n in names))


# ---------------------------------------------------------------------------------------
# Networks with images or branches (fastntk._finite_spatial).


def _spatial_non_finite(net, params, inputs: dict, what: str) -> FloatingPointError:
    advice = "scale the inputs or the parameters down (a smaller W_std, fewer layers)"
    for name, a in inputs.items():
        found = None if a is None else _finite_spatial.first_non_finite(net, params, a)
        if found is not None:
            where, row = found
            return FloatingPointError(
                f"fastntk: the {what} is not finite (NaN or Inf): for row {row} of {name} the signal overflows "
                f"float64 at {where}; {advice}"
            )
    return FloatingPointError(
        f"fastntk: the {what} is not finite (NaN or Inf): it overflows float64; {advice}"
    )


def _spatial_inputs(x1, x2):
    a1 = _finite_spatial.check_input(x1, "x1")
    a2 = None
    if x2 is not None and x2 is not x1:
        a2 = _finite_spatial.check_input(x2, "x2")
        if a2.shape[1:] != a1.shape[1:]:
            raise ValueError(
                f"x1 and x2 must have the same shape per point: x1 has shape {a1.shape}, x2 has shape {a2.shape}"
            )
    return a1, a2


def _spatial_fill(net, params, a1, a2, outs: dict, traced: tuple, out_shape: tuple, scale: float,
                  accumulate: bool, batch_size: int) -> None:  # fmt: skip
    """outs[name] (= or +=) scale * the empirical kernels, batch by batch (a2 None: x1
    with itself, the upper blocks computed and mirrored)."""
    names = tuple(outs)
    ntk = "ntk" in names
    symmetric = a2 is None
    n1 = a1.shape[0]
    blocks1 = _row_blocks(n1, batch_size)
    blocks2 = blocks1 if symmetric else _row_blocks(a2.shape[0], batch_size)

    def put(i0, i1, j0, j1, values):
        for name, v in values.items():
            v *= scale
            if accumulate:
                outs[name][i0:i1, j0:j1] += v
            else:
                outs[name][i0:i1, j0:j1] = v
            if symmetric and i0 != j0:
                outs[name][j0:j1, i0:i1] = _finite_spatial.mirror(outs[name][i0:i1, j0:j1])

    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by the caller
        for bi, (i0, i1) in enumerate(blocks1):
            f1 = _finite_spatial.features(net, params, a1[i0:i1], ntk)
            for bj, (j0, j1) in enumerate(blocks2):
                if symmetric and bj < bi:
                    continue
                if symmetric and bj == bi:
                    put(i0, i1, i0, i1, _finite_spatial.block(f1, None, out_shape, traced, names))
                    continue
                f2 = _finite_spatial.features(net, params, (a1 if symmetric else a2)[j0:j1], ntk)
                put(i0, i1, j0, j1, _finite_spatial.block(f1, f2, out_shape, traced, names))
                del f2


def _spatial_outs(names, n1, n2, out_shape, traced):
    kept = tuple(out_shape[a] for a in range(len(out_shape)) if a not in traced)
    return _arrays.empty_kernels(names, (n1, n2) + tuple(x for k in kept for x in (k, k)))


def _spatial_kernels(net, params, x1, x2, names, trace_axes, batch_size) -> dict:
    a1, a2 = _spatial_inputs(x1, x2)
    checked = _finite_spatial.check_params(net, params, a1.shape[1:])
    out_shape = _finite_spatial.output_shape(net, a1.shape[1:])
    traced = _finite_spatial.parse_trace_axes(trace_axes, len(out_shape))
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    per_point = _finite_spatial.feature_bytes(net, checked, a1.shape[1:], "ntk" in names)
    size = _batch_size(batch_size, n1 + (0 if a2 is None else n2), per_point)
    outs = _spatial_outs(names, n1, n2, out_shape, traced)
    _spatial_fill(net, checked, a1, a2, outs, traced, out_shape, 1.0, False, size)
    _spatial_check(net, checked, a1, a2, outs)
    return outs


def _spatial_check(net, params, a1, a2, outs: dict) -> None:
    for name, out in outs.items():
        if not all_finite(out):
            raise _spatial_non_finite(net, params, {"x1": a1, "x2": a2}, f"empirical {name.upper()}")


def _spatial_monte_carlo(net, x1, x2, n_samples, seed, names, trace_axes, batch_size) -> dict:
    """monte_carlo_kernel for networks with images or branches (same seeding)."""
    n_samples = _positive_int(n_samples, "n_samples")
    if isinstance(seed, np.random.Generator):
        raise TypeError(
            "seed must be an integer or a numpy.random.SeedSequence (a Generator cannot be spawned)"
        )
    _rng(seed)  # validates
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    a1, a2 = _spatial_inputs(x1, x2)
    shape = a1.shape[1:]
    out_shape = _finite_spatial.output_shape(net, shape)  # every layer checked before any work
    traced = _finite_spatial.parse_trace_axes(trace_axes, len(out_shape))
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    base = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    outs = _spatial_outs(names, n1, n2, out_shape, traced)
    size = None
    for s in range(n_samples):
        child = np.random.SeedSequence(
            base.entropy, spawn_key=base.spawn_key + (s,), pool_size=base.pool_size
        )
        params = _finite_spatial.init(net, np.random.default_rng(child), shape)
        if size is None:
            per_point = _finite_spatial.feature_bytes(net, params, shape, "ntk" in names)
            size = _batch_size(batch_size, n1 + (0 if a2 is None else n2), per_point)
        _spatial_fill(net, params, a1, a2, outs, traced, out_shape, 1.0 / n_samples, s > 0, size)
        _spatial_check(net, params, a1, a2, outs)
    return outs
