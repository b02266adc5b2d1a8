"""Finite networks with images and branches: parameters, outputs and empirical kernels.

:mod:`fastntk.empirical` sends here every network that holds a convolution, a pooling
layer, Flatten, LayerNorm or a branch combinator (FanOut, parallel, FanInSum,
FanInConcat), and every network called on images (inputs with more than two axes).
Fully connected networks on (N, d) inputs never come here.

Layout (Neural Tangents' NHWC): an input is (N, *spatial, C) with 0 to 3 spatial axes.

Parameters
----------
``params`` is a list with one entry per layer of ``net.layers``:

- Conv: ``(W, b)``, ``W`` float64 of shape ``filter_shape + (C_in, out_chan)`` (HWIO, as
  Neural Tangents), ``b`` float64 ``(out_chan,)`` or None when ``b_std=None``;
- Dense: ``(W, b)``, ``W`` ``(C_in, out_dim)`` acting on the channel axis (the last one);
- Parallel (``fastntk.parallel``): a list with one entry per branch, each a list with one
  entry per layer of that branch (the same layout, recursively);
- every other layer: ``()``.

Conv computes ``z = c_W * conv(h, W) + c_b * b`` with fan-in ``prod(filter_shape) * C_in``:
ntk parameterization ``c_W = W_std / sqrt(fan_in)``, ``c_b = b_std`` and W, b standard
normal; standard parameterization ``c_W = c_b = 1`` with ``W ~ N(0, W_std^2 / fan_in)``,
``b ~ N(0, b_std^2)`` -- the Dense layer's conventions with its fan-in.

Padding follows Neural Tangents (through ``jax.lax``): 'VALID' none; 'SAME' output size
``ceil(n / stride)``, total padding ``max((out - 1) * stride + k - n, 0)`` of which the lower
half (rounded down) goes before; 'CIRCULAR' the same sizes, filled by wrapping around.

How the empirical NTK is computed
---------------------------------
Layer by layer, never as a Jacobian of all the parameters. One forward pass keeps, per
trainable layer, its input windows; one backward pass carries the cotangents of all the
network's output entries at once, ``delta[n, o, ...] = d f_o(x_n) / d z`` at each trainable
layer's output. For a Conv layer (and Dense on images, a 1x1 convolution) the per-example
weight gradient is ``c_W * windows^T @ delta`` -- the size of that layer's parameters per
example and output -- and the layer's NTK term is one matrix product of these gradients
between the two batches. For Dense on flat vectors the gradient is an outer product and
its inner products factor: ``(c_W^2 <h(x), h(y)> + c_b^2) <delta(x), delta(y)>``.
The traced output axes are folded into the contraction (one GEMM gives the trace).
Points go through the network in batches, so memory is bounded by the batch's gradients.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _engine
from ._args import check_finite, real_array
from ._arrays import is_cupy
from ._finite import describe_sequence, multipliers
from .layers import (
    MAX_SPATIAL_DIMS,
    Activation,
    AvgPool,
    Conv,
    Dense,
    FanInConcat,
    FanInSum,
    FanOut,
    Flatten,
    GlobalAvgPool,
    GlobalSumPool,
    Identity,
    LayerNorm,
    Parallel,
    SumPool,
    has_spatial_layer,
)

# ---------------------------------------------------------------------------------------
# Which networks come here.


def is_spatial(net) -> bool:
    """True when net holds a layer only this module handles (images or branches)."""
    return has_spatial_layer(net.layers)


def _where(path: tuple, layer) -> str:
    """'layer 3 (Conv(...))' or 'layer 2, branch 1, layer 0 (Relu())' for error messages."""
    parts = []
    for i, step in enumerate(path):
        parts.append(f"layer {step}" if i % 2 == 0 else f"branch {step}")
    return ", ".join(parts) + f" ({layer!r})"


# ---------------------------------------------------------------------------------------
# Shapes (of one point: (*spatial, C)), checked before any work.


def _geometry(layer, where: str, spatial: tuple, window: tuple, strides: tuple, padding: str):
    """Per spatial axis (n_out, pad_lo, pad_hi), or ValueError naming the layer."""
    if len(window) != len(spatial):
        raise ValueError(
            f"{where}: its window {window} has {len(window)} spatial axes, but its input has "
            f"{len(spatial)} (input shape (N, {', '.join(map(str, spatial + ('C',)))}))"
        )
    out = []
    for n, k, s in zip(spatial, window, strides):
        if padding == "VALID":
            if k > n:
                raise ValueError(
                    f"{where}: the window {window} does not fit the input's spatial shape {spatial} with "
                    "VALID padding; use padding='SAME' or 'CIRCULAR', or a smaller window"
                )
            out.append(((n - k) // s + 1, 0, 0))
        else:
            n_out = -(-n // s)
            total = max((n_out - 1) * s + k - n, 0)
            out.append((n_out, total // 2, total - total // 2))
    return tuple(out)


def _needs_image(layer, where: str, shape: tuple) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"{where} needs images (N, *spatial, C) with 1 to {MAX_SPATIAL_DIMS} spatial axes, but its input "
            f"has shape (N, {shape[0]}) (flat vectors: no spatial layer can follow Flatten or a global pool)"
        )


def _point_axes(axes, n: int, who: str, what: str, doing: str) -> tuple:
    """``axes`` of arrays with ``n`` axes (the batch axis first) as sorted axes of one point
    (0-based, without the batch axis); the errors name ``who``, the arrays (``what``) and the
    operation (``doing`` the batch axis)."""
    out = []
    for a in axes:
        if not -n <= a < n:
            raise ValueError(f"{who}: axis {a} is out of range for {what} with {n} axes (batch first)")
        a %= n
        if a == 0:
            raise ValueError(f"{who}: {doing} the batch axis (axis 0) is not supported, got {axes!r}")
        out.append(a - 1)
    if len(set(out)) != len(out):
        raise ValueError(f"{who} repeats an axis: {axes!r}")
    return tuple(sorted(out))


def _concat_axis(layer, where: str, ndim: int) -> int:
    """FanInConcat's axis among the point's axes (0-based, without the batch axis)."""
    return _point_axes((layer.axis,), ndim + 1, where, "inputs", "concatenating along")[0]


def _norm_axes(layer, where: str, ndim: int) -> tuple:
    """LayerNorm's axes among the point's axes (0-based, without the batch axis)."""
    return _point_axes(layer.axis, ndim + 1, where, "inputs", "normalizing over")


def _out_shape(layer, path: tuple, shape):
    """The output shape of one point (a tuple, or a list of tuples for branches); path
    locates the layer (for error messages)."""
    where = _where(path, layer)
    if isinstance(shape, list) and not isinstance(layer, (Parallel, FanInSum, FanInConcat)):
        raise ValueError(
            f"{where} gets {len(shape)} branches: join them first with FanInSum() or FanInConcat(), or "
            "apply it per branch inside parallel(...)"
        )
    if isinstance(layer, (FanInSum, FanInConcat, Parallel)) and not isinstance(shape, list):
        raise ValueError(f"{where} needs branches: put FanOut(n) (or parallel(...)) before it")
    if isinstance(layer, Dense):
        return shape[:-1] + (_width(layer, where),)
    if isinstance(layer, (Activation, Identity)):
        return shape
    if isinstance(layer, Conv):
        _needs_image(layer, where, shape)
        geo = _geometry(layer, where, shape[:-1], layer.filter_shape, layer.strides, layer.padding)
        return tuple(g[0] for g in geo) + (_width(layer, where),)
    if isinstance(layer, AvgPool):  # SumPool too
        _needs_image(layer, where, shape)
        geo = _geometry(layer, where, shape[:-1], layer.window_shape, layer.strides, layer.padding)
        return tuple(g[0] for g in geo) + shape[-1:]
    if isinstance(layer, (GlobalAvgPool, GlobalSumPool)):
        _needs_image(layer, where, shape)
        return shape[-1:]
    if isinstance(layer, Flatten):
        return (math.prod(shape),)
    if isinstance(layer, LayerNorm):
        _norm_axes(layer, where, len(shape))
        return shape
    if isinstance(layer, FanOut):
        return [shape] * layer.num
    if isinstance(layer, Parallel):
        if len(shape) != len(layer.branches):
            raise ValueError(
                f"{where} has {len(layer.branches)} branches but gets {len(shape)} (FanOut({len(shape)}) or "
                "a parallel of that many branches before it)"
            )
        outs = []
        for i, (branch, s) in enumerate(zip(layer.branches, shape)):
            outs.append(_seq_shape(branch, s, path + (i,)))
        return outs
    if isinstance(layer, FanInSum):
        if any(s != shape[0] for s in shape):
            raise ValueError(f"{where}: FanInSum needs branches of one shape, got per point {shape}")
        return shape[0]
    if isinstance(layer, FanInConcat):
        ndim = len(shape[0])
        if any(len(s) != ndim for s in shape):
            raise ValueError(f"{where}: the branches have different numbers of axes: {shape}")
        axis = _concat_axis(layer, where, ndim)
        rest = {s[:axis] + s[axis + 1 :] for s in shape}
        if len(rest) != 1:
            raise ValueError(f"{where}: the branches differ outside the concatenation axis: {shape}")
        out = list(shape[0])
        out[axis] = sum(s[axis] for s in shape)
        return tuple(out)
    raise TypeError(f"{where} is not supported by finite networks")


def _width(layer, where: str) -> int:
    width = layer.out_chan if isinstance(layer, Conv) else layer.out_dim
    if width is None:
        arg = "out_chan" if isinstance(layer, Conv) else "out_dim"
        raise ValueError(
            f"{where} has no {arg}: a finite network needs the width of every layer; give it {arg}"
        )
    return width


def _seq_shape(layers, shape, prefix: tuple = ()):
    for k, layer in enumerate(layers):
        shape = _out_shape(layer, prefix + (k,), shape)
    return shape


def output_shape(net, input_shape: tuple):
    """The output shape of one point, checking every layer against its input shape."""
    shape = _seq_shape(net.layers, tuple(input_shape))
    if isinstance(shape, list):
        raise ValueError(
            f"the network ends with {len(shape)} branches: join them with FanInSum() or FanInConcat()"
        )
    return shape


# ---------------------------------------------------------------------------------------
# Inputs and parameters.


def parse_input_shape(input_shape) -> tuple:
    """The shape of one input point: an int d (flat vectors), or a tuple (*spatial, C);
    Neural Tangents' form with a leading batch entry -1 (or None) is taken too."""
    if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
        items = (input_shape,)
    elif isinstance(input_shape, (tuple, list)):
        items = tuple(input_shape)
        if items and (items[0] is None or (isinstance(items[0], numbers.Integral) and items[0] == -1)):
            items = items[1:]
    else:
        items = None
    if (
        items is None
        or not 1 <= len(items) <= MAX_SPATIAL_DIMS + 1
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in items)
    ):
        raise ValueError(
            f"input_dim must be an integer >= 1 (flat inputs) or the shape of one input (*spatial, channels) "
            f"with 1 to {MAX_SPATIAL_DIMS} spatial axes, all integers >= 1 (no batch axis; Neural Tangents' "
            f"leading -1 is taken), got {input_shape!r}"
        )
    return tuple(int(v) for v in items)


def check_input(x, name: str) -> np.ndarray:
    """x as a finite float64 C-contiguous array (N, *spatial, C), 0 to 3 spatial axes."""
    if is_cupy(x):
        raise TypeError(
            f"{name} is a CuPy array, but finite networks with images or branches run on NumPy arrays only; "
            f"pass {name}.get()"
        )
    a = real_array(x, name)
    if not 2 <= a.ndim <= MAX_SPATIAL_DIMS + 2 or a.shape[-1] == 0:
        raise ValueError(
            f"{name} must have shape (N, *spatial, C) with 0 to {MAX_SPATIAL_DIMS} spatial axes and C >= 1, "
            f"got shape {a.shape}"
        )
    a = np.ascontiguousarray(a, dtype=np.float64)
    check_finite(a, name)
    return a


def _draw(layers, rng, shape, prefix: tuple = ()) -> list:
    params = []
    for k, layer in enumerate(layers):
        out = _out_shape(layer, prefix + (k,), shape)
        if isinstance(layer, (Dense, Conv)):
            c_in = shape[-1]
            window = layer.filter_shape if isinstance(layer, Conv) else ()
            fan_in = math.prod(window) * c_in
            W = rng.standard_normal(window + (c_in, out[-1]))
            b = None if layer.b_std is None else rng.standard_normal(out[-1])
            if layer.parameterization == "standard":
                W *= layer.W_std / math.sqrt(fan_in)
                if b is not None:
                    b *= layer.b_std
            params.append((W, b))
        elif isinstance(layer, Parallel):
            params.append(
                [
                    _draw(branch, rng, s, prefix + (k, i))
                    for i, (branch, s) in enumerate(zip(layer.branches, shape))
                ]
            )
        else:
            params.append(())
        shape = out
    return params


def init(net, rng: np.random.Generator, input_shape) -> list:
    """Draw the parameters (layer order, depth first through branches; W then b)."""
    shape = parse_input_shape(input_shape)
    output_shape(net, shape)  # every check before any draw
    return _draw(net.layers, rng, shape)


def _check_params(layers, params, shape, prefix: tuple = (), where: str = "params") -> list:
    if not isinstance(params, (list, tuple)) or len(params) != len(layers):
        raise ValueError(
            f"{where} must be a list with one entry per layer ({len(layers)} layers: (W, b) for Dense and "
            f"Conv, a list per branch for parallel, () otherwise), got {describe_sequence(params)}"
        )
    checked = []
    for k, (layer, p) in enumerate(zip(layers, params)):
        out = _out_shape(layer, prefix + (k,), shape)
        name = f"params of {_where(prefix + (k,), layer)}"
        if isinstance(layer, (Dense, Conv)):
            if not isinstance(p, (tuple, list)) or len(p) != 2:
                raise ValueError(f"{name}: expected a pair (W, b), got {p!r}")
            W, b = p
            window = layer.filter_shape if isinstance(layer, Conv) else ()
            W = _finite(W, f"{name} (its input has {shape[-1]} channels): W", window + (shape[-1], out[-1]))
            if layer.b_std is None:
                if b is not None:
                    raise ValueError(f"{name}: the layer has no bias (b_std=None), so b must be None")
            else:
                if b is None:
                    raise ValueError(f"{name}: b must have shape ({out[-1]},), got None")
                if np.ndim(b) >= 1 and np.shape(b)[:-1] == (1,) * (np.ndim(b) - 1):
                    b = np.reshape(b, np.shape(b)[-1:])  # Neural Tangents' (1, ..., 1, C)
                b = _finite(b, f"{name}: b", (out[-1],))
            checked.append((W, b))
        elif isinstance(layer, Parallel):
            if not isinstance(p, (tuple, list)) or len(p) != len(layer.branches):
                raise ValueError(
                    f"{name}: expected a list with one parameter list per branch ({len(layer.branches)}), got "
                    f"{describe_sequence(p)}"
                )
            checked.append(
                [
                    _check_params(br, pb, s, prefix + (k, i), f"{name}: branch {i}")
                    for i, (br, pb, s) in enumerate(zip(layer.branches, p, shape))
                ]
            )
        else:
            if p is not None and not (isinstance(p, (tuple, list)) and len(p) == 0):
                raise ValueError(f"{name}: this layer has no parameters, expected (), got {p!r}")
            checked.append(())
        shape = out
    return checked


def _finite(a, name: str, shape: tuple) -> np.ndarray:
    a = real_array(a, name)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    check_finite(a, name)
    return a


def check_params(net, params, input_shape: tuple) -> list:
    """params checked against the architecture at this input shape, as float64 arrays."""
    output_shape(net, input_shape)
    return _check_params(net.layers, params, tuple(input_shape))


# ---------------------------------------------------------------------------------------
# Windows: padding, the windows of a convolution or a pool, and their transposes.
# Arrays are (B, *spatial, C): B the batch (points, or points x outputs for cotangents).


def _pad(h: np.ndarray, geo: tuple, circular: bool) -> np.ndarray:
    pads = [(0, 0)] + [(lo, hi) for _, lo, hi in geo] + [(0, 0)]
    if not any(lo or hi for _, lo, hi in geo):
        return h
    return np.pad(h, pads, mode="wrap" if circular else "constant")


def _unpad(g: np.ndarray, geo: tuple, spatial: tuple, circular: bool) -> np.ndarray:
    """The transpose of _pad: the padded cotangent g back onto the input's positions
    (zero padding: cropped; circular: every padded position added to the one it copies)."""
    for axis, ((_, lo, hi), n) in enumerate(zip(geo, spatial), start=1):
        if not lo and not hi:
            continue
        if not circular:
            g = g[(slice(None),) * axis + (slice(lo, lo + n),)]
            continue
        length = g.shape[axis]
        out = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1 :])
        lead = (slice(None),) * axis
        for t in range(length):  # lo + n + hi slabs, a few dozen at most
            out[lead + ((t - lo) % n,)] += g[lead + (t,)]
        g = out
    return g


def _window_views(hp: np.ndarray, window: tuple, strides: tuple, geo: tuple):
    """(offset index, view) for every offset u of the window: view[b, p, c] = hp[b, s * p + u, c]."""
    for index, u in enumerate(np.ndindex(*window)):
        sl = tuple(slice(ua, ua + s * (g[0] - 1) + 1, s) for ua, s, g in zip(u, strides, geo))
        yield index, hp[(slice(None),) + sl + (slice(None),)]


def _windows(h, window, strides, geo, circular) -> np.ndarray:
    """im2col: (B, *out_spatial, K, C) with K = prod(window), offsets in row-major order."""
    hp = _pad(h, geo, circular)
    return np.stack([v for _, v in _window_views(hp, window, strides, geo)], axis=-2)


def _windows_transpose(
    slab, batch: int, channels: int, window, strides, geo, spatial, circular
) -> np.ndarray:
    """The transpose of the window gather: the sum over offsets u of ``slab(u)`` (B,
    *out_spatial, C), the cotangent of the window's offset u (row-major index), put back
    where that offset read from; returns (B, *spatial, C). One offset at a time, so no
    temporary is K times the activation."""
    padded = tuple(n + lo + hi for n, (_, lo, hi) in zip(spatial, geo))
    gp = np.zeros((batch,) + padded + (channels,))
    for index, view in _window_views(gp, window, strides, geo):
        view += slab(index)
    return _unpad(gp, geo, spatial, circular)


# ---------------------------------------------------------------------------------------
# Layers, forward and backward. A backward takes the cotangents g (n, M, *shape) of the
# layer's output for M output entries and returns those of its input.


class _Ctx:
    """What one forward pass keeps for the backward pass and the kernels."""

    __slots__ = ("keep", "terms")

    def __init__(self, keep: bool):
        self.keep = keep
        self.terms = []  # filled by the backward pass: per trainable layer, see Features


def _flat(g):
    """(n, M, *shape) -> (n * M, *shape) and a function undoing it."""
    n, m = g.shape[:2]
    return g.reshape((n * m,) + g.shape[2:]), (lambda r: r.reshape((n, m) + r.shape[1:]))


def _affine_forward(layer, W, b, h, ctx: _Ctx, grad_in: bool):
    """Conv, or Dense on the channel axis (a 1x1 convolution). Returns (z, backward)."""
    n = h.shape[0]
    spatial = h.shape[1:-1]
    c_in = h.shape[-1]
    if isinstance(layer, Conv):
        window, strides, circular = layer.filter_shape, layer.strides, layer.padding == "CIRCULAR"
        geo = _geometry(layer, "", spatial, window, strides, layer.padding)
    else:
        window, strides, circular, geo = (
            (1,) * len(spatial),
            (1,) * len(spatial),
            False,
            tuple((s, 0, 0) for s in spatial),
        )
    k = math.prod(window)
    c_w, c_b = multipliers(layer, k * c_in)
    out_spatial = tuple(g[0] for g in geo)
    c_out = W.shape[-1]
    W2 = W.reshape(k * c_in, c_out)
    if ctx.keep or k == 1:
        cols = h if k == 1 else _windows(h, window, strides, geo, circular)
        cols = cols.reshape((n,) + out_spatial + (k * c_in,))
        z = _matmul(cols, W2, c_w)
    else:  # no im2col copy: one product per offset
        z = np.zeros((n,) + out_spatial + (c_out,))
        W3 = W.reshape(k, c_in, c_out)
        for index, view in _window_views(_pad(h, geo, circular), window, strides, geo):
            z += _matmul(view, W3[index], c_w)
    if b is not None and c_b != 0.0:
        z += c_b * b
    if not ctx.keep:
        return z, None
    flat_input = not spatial

    def backward(g):
        # g: (n, M, *out_spatial, c_out)
        m = g.shape[1]
        if flat_input:  # Dense on vectors: the factored form (the outer product's inner products)
            ctx.terms.append(("factored", cols, g, c_w * c_w, c_b * c_b if b is not None else 0.0))
        else:
            s = math.prod(out_spatial)
            d = g.reshape(n, m, s, c_out)
            # Per-example gradients, one product per point: row (o, c_out) of
            # c_W * delta^T @ windows is d f_o / d W[:, c_out] (W flattened as (c_out, k c_in):
            # any fixed order of the parameters gives the same inner products).
            width = k * c_in * c_out + (c_out if b is not None else 0)
            grads = np.empty((n, m, width))
            cols3 = cols.reshape(n, s, k * c_in)
            for i in range(n):
                dt = d[i].transpose(0, 2, 1).reshape(m * c_out, s)
                grads[i, :, : k * c_in * c_out] = _engine.matmul(dt, cols3[i], c_w).reshape(m, -1)
            if b is not None:
                grads[:, :, k * c_in * c_out :] = c_b * d.sum(axis=2)
            ctx.terms.append(("grad", grads))
        if not grad_in:
            return None
        gf, back = _flat(g)
        if k == 1:
            return back(_matmul(gf, W2, c_w, trans_b=True))
        # offset u read h[s p + u] with weights W[u]: its cotangent is c_W * g @ W[u]^T
        W3 = W.reshape(k, c_in, c_out)
        return back(
            _windows_transpose(
                lambda u: _matmul(gf, W3[u], c_w, trans_b=True),
                gf.shape[0],
                c_in,
                window,
                strides,
                geo,
                spatial,
                circular,
            )  # fmt: skip
        )

    return z, backward


def _matmul(a, b, alpha: float = 1.0, trans_b: bool = False):
    """alpha * a (..., p) @ b (p, q) (b (q, p) transposed with trans_b) as one 2-D product,
    on fastntk's BLAS and thread team (:func:`fastntk._engine.matmul`: NumPy's BLAS threads
    would alternate with it and, on a busy machine, slow small products twentyfold)."""
    out = _engine.matmul(a.reshape(-1, a.shape[-1]), np.ascontiguousarray(b), alpha, trans_b=trans_b)
    return out.reshape(a.shape[:-1] + (out.shape[-1],))


def _pool_forward(layer, h, ctx: _Ctx, grad_in: bool):
    spatial = h.shape[1:-1]
    window, strides = layer.window_shape, layer.strides
    circular = layer.padding == "CIRCULAR"
    geo = _geometry(layer, "", spatial, window, strides, layer.padding)
    hp = _pad(h, geo, circular)
    z = None
    for _, view in _window_views(hp, window, strides, geo):
        z = view.copy() if z is None else z + view
    scale = None  # SumPool: the plain window sum
    if isinstance(layer, SumPool):
        pass
    elif layer.normalize_edges and not circular:
        # divide by the number of window positions inside the image (padding excluded)
        ones = np.ones((1,) + spatial + (1,))
        count = None
        for _, view in _window_views(_pad(ones, geo, False), window, strides, geo):
            count = view.copy() if count is None else count + view
        scale = 1.0 / count
    else:
        scale = 1.0 / math.prod(window)
    if scale is not None:
        z *= scale
    if not (ctx.keep and grad_in):
        return z, None

    def backward(g):
        gf, back = _flat(g)
        if scale is not None:
            gf = gf * scale
        return back(
            _windows_transpose(
                lambda u: gf, gf.shape[0], gf.shape[-1], window, strides, geo, spatial, circular
            )
        )

    return z, backward


def _layernorm_forward(layer, h, ctx: _Ctx, grad_in: bool):
    axes = tuple(a + 1 for a in _norm_axes(layer, "", h.ndim - 1))
    mean = h.mean(axis=axes, keepdims=True)
    centered = h - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    sigma = np.sqrt(var + layer.eps)
    xhat = centered / sigma
    if not (ctx.keep and grad_in):
        return xhat, None

    def backward(g):
        # d xhat: (g - mean(g) - xhat * mean(g * xhat)) / sigma over the normalized axes
        ax = tuple(a + 1 for a in axes)
        xh, sg = xhat[:, None], sigma[:, None]
        return (g - g.mean(axis=ax, keepdims=True) - xh * (g * xh).mean(axis=ax, keepdims=True)) / sg

    return xhat, backward


def _run(layers, params, h, ctx: _Ctx, dep, check=None, prefix: tuple = ()):
    """Forward through a layer sequence. h: an array (n, *shape) or a list of them
    (branches); dep: whether h (or each branch) depends on parameters (else no cotangent
    is carried into it). Returns (output, dep, backwards) with backwards in forward order."""
    backwards = []
    for k, (layer, p) in enumerate(zip(layers, params)):
        h, dep, back = _layer(layer, p, h, ctx, dep, check, prefix + (k,))
        backwards.append(back)
        if check is not None:
            check(h, prefix + (k,), layer)
    return h, dep, backwards


def _back_seq(backwards, g):
    for back in reversed(backwards):
        if g is None:
            return None
        g = back(g)
    return g


def _layer(layer, p, h, ctx: _Ctx, dep, check, path):
    """One layer forward: (output, dep, backward or an identity-like function)."""
    if isinstance(layer, (Dense, Conv)):
        W, b = p
        z, back = _affine_forward(layer, W, b, h, ctx, dep)
        return z, True, back
    if isinstance(layer, Identity):
        return h, dep, lambda g: g
    if isinstance(layer, Activation):
        out = layer.fn(h)
        if not (ctx.keep and dep):
            return out, dep, None
        slope = layer.derivative(h)
        return out, dep, lambda g: g * slope[:, None]
    if isinstance(layer, AvgPool):
        z, back = _pool_forward(layer, h, ctx, dep)
        return z, dep, back
    if isinstance(layer, (GlobalAvgPool, GlobalSumPool)):
        axes = tuple(range(1, h.ndim - 1))
        size = math.prod(h.shape[1:-1])
        spatial = h.shape[1:-1]
        mean = isinstance(layer, GlobalAvgPool)
        z = h.mean(axis=axes) if mean else h.sum(axis=axes)

        def back(g):  # (n, M, C) -> (n, M, *spatial, C)
            g = g[(slice(None), slice(None)) + (None,) * len(spatial)]
            g = np.broadcast_to(g, g.shape[:2] + spatial + g.shape[-1:])
            return g / size if mean else g.copy()

        return z, dep, back
    if isinstance(layer, Flatten):
        shape = h.shape[1:]
        return h.reshape(h.shape[0], -1), dep, lambda g: g.reshape(g.shape[:2] + shape)
    if isinstance(layer, LayerNorm):
        z, back = _layernorm_forward(layer, h, ctx, dep)
        return z, dep, back
    if isinstance(layer, FanOut):
        num = layer.num

        def back(gs):
            live = [g for g in gs if g is not None]
            return sum(live[1:], live[0].copy()) if live else None

        return [h] * num, [dep] * num, back
    if isinstance(layer, Parallel):
        outs, deps, backs = [], [], []
        for i, (branch, pb, hi, di) in enumerate(zip(layer.branches, p, h, dep)):
            o, d, b = _run(branch, pb, hi, ctx, di, check, path + (i,))
            outs.append(o)
            deps.append(d)
            backs.append((b, di))
        return (
            outs,
            deps,
            lambda gs: [_back_seq(b, g) if (di and g is not None) else None for (b, di), g in zip(backs, gs)],
        )
    if isinstance(layer, FanInSum):
        out = h[0].copy()
        for x in h[1:]:
            out += x
        deps = list(dep)
        return out, any(deps), lambda g: [g if d else None for d in deps]
    if isinstance(layer, FanInConcat):
        axis = _concat_axis(layer, "", h[0].ndim - 1) + 1
        sizes = [x.shape[axis] for x in h]
        deps = list(dep)

        def back(g):  # the cotangent has the extra output axis at 1
            parts = np.split(g, np.cumsum(sizes)[:-1], axis=axis + 1)
            return [np.ascontiguousarray(part) if d else None for part, d in zip(parts, deps)]

        return np.concatenate(h, axis=axis), any(deps), back
    raise TypeError(f"{layer!r} is not supported by finite networks")  # pragma: no cover - checked before


def _forward(net, params, x, keep: bool, check=None):
    ctx = _Ctx(keep)
    f, _, backwards = _run(net.layers, params, x, ctx, False, check)
    return f, ctx, backwards


def forward(net, params, x) -> np.ndarray:
    """The outputs (N, *out_shape) of checked params and inputs."""
    return _forward(net, params, x, keep=False)[0]


def first_non_finite(net, params, x):
    """(where, row) of the first layer whose output is not finite, or None."""
    found = []

    def check(h, path, layer):
        if found:
            return
        arrays = h if isinstance(h, list) else [h]
        for a in arrays:
            bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
            if bad.any():
                found.append((_where(path, layer), int(np.argmax(bad))))
                return

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _forward(net, params, x, keep=False, check=check)
    return found[0] if found else None


# ---------------------------------------------------------------------------------------
# Empirical kernels.


class Features:
    """A batch's outputs f (n, *out_shape) and, for the NTK, one term per trainable layer:
    ('grad', J (n, M, P)) per-example parameter gradients of the M = prod(out_shape) output
    entries, or ('factored', H (n, C_in), delta (n, M, C_out), c_W^2, c_b^2) for Dense on
    vectors."""

    __slots__ = ("f", "terms")

    def __init__(self, f, terms):
        self.f = f
        self.terms = terms


def features(net, params, x, ntk: bool) -> Features:
    f, ctx, backwards = _forward(net, params, x, keep=ntk)
    if ntk:
        n = f.shape[0]
        m = math.prod(f.shape[1:])
        seed = np.broadcast_to(np.eye(m).reshape((1, m) + f.shape[1:]), (n, m) + f.shape[1:])
        _back_seq(backwards, np.ascontiguousarray(seed))
    return Features(f, ctx.terms)


def feature_bytes(net, params, input_shape: tuple, ntk: bool) -> int:
    """Bytes per point of what a batch holds at its peak, for choosing batch sizes: the
    outputs; what the forward pass keeps for the backward one (every activation's slope,
    every convolution's windows); every trainable layer's per-example gradients (M outputs
    times its parameters); and the cotangents of the largest layer (input and output, M
    of each, plus one as many again for the products' temporaries)."""
    m = math.prod(output_shape(net, input_shape))
    kept, grads, widest = 0, 0, 0

    def visit(layers, ps, shape):
        nonlocal kept, grads, widest
        for k, (layer, p) in enumerate(zip(layers, ps)):
            new = _out_shape(layer, (k,), shape)
            if isinstance(layer, Parallel):
                for br, pb, s in zip(layer.branches, p, shape):
                    visit(br, pb, s)
            elif isinstance(new, tuple) and isinstance(shape, tuple):
                size = math.prod(shape) + math.prod(new)
                widest = max(widest, size)
                kept += size  # the forward pass's arrays (an upper bound on what it keeps)
                if isinstance(layer, (Dense, Conv)):
                    grads += p[0].size + new[-1]
                    kept += math.prod(new[:-1]) * p[0].size // new[-1]  # the windows
            shape = new

    visit(net.layers, params, tuple(input_shape))
    return 8 * (m + kept + (m * grads + 3 * m * widest if ntk else 0))


def parse_trace_axes(trace_axes, out_ndim: int) -> tuple:
    """The traced axes among the output axes (0-based, the batch axis excluded)."""
    if isinstance(trace_axes, numbers.Integral) and not isinstance(trace_axes, bool):
        trace_axes = (trace_axes,)
    ndim = out_ndim + 1
    if not isinstance(trace_axes, (tuple, list)) or not all(
        isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in trace_axes
    ):
        raise ValueError(f"trace_axes must be a tuple of output axes, e.g. (-1,) or (), got {trace_axes!r}")
    return _point_axes(trace_axes, ndim, "trace_axes", "outputs", "tracing")


def _fold(x, out_shape: tuple, traced: tuple):
    """x (n, M, P) with M = prod(out_shape) -> (n * kept, traced * P), the traced axes next
    to P (so one GEMM contracts them); and the kept shape."""
    n, p = x.shape[0], x.shape[-1]
    kept = tuple(a for a in range(len(out_shape)) if a not in traced)
    x = x.reshape((n,) + out_shape + (p,))
    if traced and kept:
        x = x.transpose(
            (0,) + tuple(1 + a for a in kept) + tuple(1 + a for a in traced) + (len(out_shape) + 1,)
        )
    kept_shape = tuple(out_shape[a] for a in kept)
    return x.reshape(n * math.prod(kept_shape), -1), kept_shape


def _gram(x1, x2, out_shape, traced):
    """(n1, n2, k1, k1', k2, k2', ...) = sum over traced axes and P of x1 x2 / traced size."""
    a, kept = _fold(x1, out_shape, traced)
    b = a if x2 is None else _fold(x2, out_shape, traced)[0]
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    g = _matmul(a, b, trans_b=True).reshape((n1,) + kept + (n2,) + kept)
    r = len(kept)
    # zip the two points' kept axes: (n1, n2, k1, k1', ...), Neural Tangents' order
    order = (0, r + 1) + tuple(x for i in range(r) for x in (1 + i, r + 2 + i))
    size = math.prod(out_shape[a] for a in traced)
    return g.transpose(order) / size


def block(f1: Features, f2, out_shape: tuple, traced: tuple, names) -> dict:
    """The kernels between two batches (f2 None: the first with itself)."""
    out = {}
    if "nngp" in names:
        n1 = f1.f.shape[0]
        x1 = f1.f.reshape(n1, -1, 1)
        x2 = None if f2 is None else f2.f.reshape(f2.f.shape[0], -1, 1)
        out["nngp"] = _gram(x1, x2, out_shape, traced)
    if "ntk" in names:
        total = None
        terms2 = f1.terms if f2 is None else f2.terms
        for t1, t2 in zip(f1.terms, terms2):
            if t1[0] == "grad":
                term = _gram(t1[1], None if f2 is None else t2[1], out_shape, traced)
            else:
                _, h1, d1, w2, b2 = t1
                h2, d2 = (h1, None) if f2 is None else (t2[1], t2[2])
                n1 = d1.shape[0]
                term = _gram(
                    d1.reshape(n1, d1.shape[1], -1),
                    None if d2 is None else d2.reshape(d2.shape[0], d2.shape[1], -1),
                    out_shape,
                    traced,
                )
                scale = w2 * _matmul(h1, h1 if f2 is None else h2, trans_b=True) + b2
                term *= scale.reshape(scale.shape + (1,) * (term.ndim - 2))
            total = term if total is None else total + term
        if total is None:  # no trainable layer
            n1 = f1.f.shape[0]
            n2 = n1 if f2 is None else f2.f.shape[0]
            kept = tuple(out_shape[a] for a in range(len(out_shape)) if a not in traced)
            total = np.zeros((n1, n2) + tuple(x for k in kept for x in (k, k)))
        out["ntk"] = total
    return out


def mirror(a: np.ndarray) -> np.ndarray:
    """The block (j, i) from the block (i, j): swap the points and each zipped axis pair."""
    order = (1, 0) + tuple(x for i in range(2, a.ndim, 2) for x in (i + 1, i))
    return a.transpose(order)
