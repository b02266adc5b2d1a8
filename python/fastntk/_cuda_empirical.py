"""Empirical NNGP and NTK of finite networks on CuPy arrays (the GPU path of
:meth:`fastntk.Network.empirical_ntk` and ``empirical_nngp``). Only :mod:`fastntk._engine`
calls it.

The same factorization as the CPU driver (see :mod:`fastntk.empirical`), as CuPy array code:
the forward pass and the backward pass of all outputs at once are GEMMs (cuBLAS), and per
Dense layer k the kernel gains

    (c_W^2 <h_{k-1}(x), h_{k-1}(y)> + c_b^2) * <delta_k^o(x), delta_k^o'(y)>,

two more GEMMs and a Hadamard product over the whole (N1, N2) (or (N1, N2, m, m)) block:
O(N * m * sum of widths) memory for the signals, never O(N * parameters). Computed in
float64 on the inputs' device and CuPy's current stream.
"""

from __future__ import annotations

import math

import numpy as np

from . import _cuda_backend as _gpu
from ._finite import check_params, forward, multipliers, output_dim
from .layers import Activation, Dense, Erf, Gelu


def _special(h):
    """scipy.special's namesake for h's kind: cupyx.scipy.special on CuPy arrays."""
    if isinstance(h, np.ndarray):  # NumPy (and NumPy-backed stand-ins in tests)
        import scipy.special as special  # noqa: PLC0415
    else:
        import cupyx.scipy.special as special  # noqa: PLC0415
    return special


def _fn(layer, h):
    """layer.fn on a device array (Erf and Gelu need CuPy's special functions)."""
    if isinstance(layer, Erf):
        return layer.a * _special(h).erf(layer.b * h) + layer.c
    if isinstance(layer, Gelu):
        return h * _special(h).ndtr(h)
    return layer.fn(h)  # NumPy functions dispatch to CuPy (__array_ufunc__ / __array_function__)


def _derivative(layer, h, cp):
    if isinstance(layer, Erf):
        return (layer.a * layer.b * 2.0 / math.sqrt(math.pi)) * cp.exp(-((layer.b * h) ** 2))
    if isinstance(layer, Gelu):
        return _special(h).ndtr(h) + h * cp.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
    return layer.derivative(h)


def _features(net, params, x, ntk: bool, cp):
    """(f, terms): outputs (n, m) and per Dense layer (last first) (A, B, c_W^2, c_b^2) with
    A (n, fan_in) its input and B (n, m, out) the signals d f_o / d z (None: identity)."""
    # the forward pass is the one of the finite networks (_finite.forward), which on CuPy
    # arrays computes the activations with this module's device functions
    f, inputs, derivs = forward(net, params, x, keep=ntk)
    terms = []
    if not ntk:
        return f, terms
    n, m = f.shape
    first_dense = min(inputs) if inputs else None
    delta = None
    for k in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[k]
        if isinstance(layer, Dense):
            W, b = params[k]
            c_w, c_b = multipliers(layer, W.shape[0])
            terms.append((inputs[k], delta, c_w**2, c_b**2 if b is not None else 0.0))
            if k == first_dense:
                break
            if delta is None:
                delta = cp.broadcast_to((W.T * c_w)[None], (n, m, W.shape[0]))
            else:
                delta = ((delta.reshape(n * m, -1) @ W.T) * c_w).reshape(n, m, W.shape[0])
        elif isinstance(layer, Activation) and k in derivs:
            slope = derivs.pop(k)
            if delta is None:
                delta = cp.eye(m)[None, :, :] * slope[:, None, :]
            else:
                delta = delta * slope[:, None, :]
    return f, terms


def kernels(net, params, a1, a2, names, trace: bool) -> dict:
    """{name: CuPy array}: the empirical kernels of one network on checked float64 CuPy
    inputs a1, a2 (None: x1 with itself), on a1's device. Shapes as the CPU path's."""
    cp = _gpu.cupy()
    host_params = [
        () if not p else tuple(None if v is None else (v.get() if hasattr(v, "get") else v) for v in p)
        for p in params
    ]
    checked, input_dim = check_params(net, host_params)
    if input_dim is not None and a1.shape[1] != input_dim:
        raise ValueError(
            f"x1 has {a1.shape[1]} features (shape {a1.shape}), but params are for input_dim={input_dim} "
            f"(the first Dense layer's W has shape ({input_dim}, ...))"
        )
    # An overflow is reported by the caller, with its layer (CuPy never warns; NumPy-backed
    # stand-ins would).
    with a1.device, np.errstate(over="ignore", invalid="ignore"):
        dev = [
            () if not p else (cp.asarray(p[0]), None if p[1] is None else cp.asarray(p[1])) for p in checked
        ]
        ntk = "ntk" in names
        f1, terms1 = _features(net, dev, a1, ntk, cp)
        f2, terms2 = (f1, terms1) if a2 is None else _features(net, dev, a2, ntk, cp)
        m = output_dim(checked, a1.shape[1])
        n1, n2 = f1.shape[0], f2.shape[0]
        outs = {}
        if "nngp" in names:
            outs["nngp"] = (f1 @ f2.T) / m if trace else cp.einsum("io,jp->ijop", f1, f2)
        if ntk:
            total = cp.zeros((n1, n2) if trace else (n1, n2, m, m))
            for (h1, d1, weight, bias), (h2, d2, _, _) in zip(terms1, terms2):
                a = (h1 @ h2.T) * weight + bias
                if trace:
                    g = 1.0 if d1 is None else (d1.reshape(n1, -1) @ d2.reshape(n2, -1).T) / m
                    total += a * g
                elif d1 is None:
                    total += a[:, :, None, None] * cp.eye(m)[None, None]
                else:
                    w = d1.shape[2]
                    g = (d1.reshape(n1 * m, w) @ d2.reshape(n2 * m, w).T).reshape(n1, m, n2, m)
                    total += a[:, :, None, None] * g.transpose(0, 2, 1, 3)
            outs["ntk"] = total
        return outs
