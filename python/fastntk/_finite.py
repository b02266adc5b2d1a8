"""The finite network's pieces shared by :mod:`fastntk.empirical` and :mod:`fastntk.training`:
its parameters checked against the architecture, the inputs checked against them, and the
forward pass (outputs, and what the backward passes need of it).

The parameter layout and the Dense layer's formula are described in :mod:`fastntk.empirical`.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from . import _engine
from ._args import all_finite, finite_array
from ._arrays import is_cupy
from .layers import Activation, Dense, Identity


def check_widths(net) -> None:
    """ValueError unless every Dense layer of net has an out_dim (a finite network)."""
    for k, layer in enumerate(net.layers):
        if isinstance(layer, Dense) and layer.out_dim is None:
            raise ValueError(
                f"layer {k} ({layer!r}) has no out_dim: a finite network needs the width of every Dense "
                "layer; give it out_dim"
            )
        if not isinstance(layer, (Dense, Activation, Identity)):
            # Networks with images or branches have their own finite path
            # (fastntk._finite_spatial), which the functions reaching here do not take yet.
            raise TypeError(
                f"layer {k} ({layer!r}): fastntk.training (linearize, train_mse, jvp, vjp) takes networks of "
                "Dense layers and activations only; for networks with convolutions, pooling or branches use "
                "net.init, net.apply, net.empirical_ntk / empirical_nngp and fastntk.monte_carlo_kernel"
            )


def multipliers(layer: Dense, fan_in: int) -> tuple[float, float]:
    """(c_W, c_b): the layer computes z = c_W * (h @ W) + c_b * b from its stored W, b."""
    if layer.parameterization == "ntk":
        return layer.W_std / math.sqrt(fan_in), (0.0 if layer.b_std is None else layer.b_std)
    return 1.0, 1.0  # standard: the scales are in the initial distribution


def describe_sequence(obj) -> str:
    """For error messages: 'a list of length 3', or the repr of what is not a list or tuple."""
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return repr(obj)


def bias(b, where: str, out_dim: int, xp=np):
    """A Dense layer's bias as float64 (out_dim,) in the namespace ``xp`` (NumPy or CuPy).
    Neural Tangents' init_fn returns biases of shape (1, out_dim) (broadcast over the
    batch): those are taken as they are, flattened."""
    if np.shape(b) == (1, out_dim):
        b = np.reshape(b, (out_dim,))
    if np.shape(b) != (out_dim,):
        raise ValueError(
            f"{where}: b must have shape ({out_dim},), got {np.shape(b)} (Neural Tangents' (1, {out_dim}) "
            "is taken too)"
        )
    return finite_array(b, f"{where}: b", xp)


def check_params(net, params, xp=np) -> tuple[list, int | None]:
    """The parameters as float64 arrays of the namespace ``xp`` (NumPy, or CuPy: see
    :func:`namespace`), checked against the architecture.

    Returns
    -------
    (list, int or None)
        One entry per layer ((W, b) or ()), and the input dimension the parameters are
        for (None for a network without Dense layers, which takes any).
    """
    check_widths(net)
    layers = net.layers
    if not isinstance(params, (list, tuple)) or len(params) != len(layers):
        raise ValueError(
            f"params must be a list with one entry per layer ({len(layers)} layers: (W, b) for Dense, () "
            f"otherwise), got {describe_sequence(params)}"
        )
    checked, width, input_dim = [], None, None
    for k, (layer, p) in enumerate(zip(layers, params)):
        where = f"params[{k}] (layer {k}, {layer!r})"
        if not isinstance(layer, Dense):
            if p is not None and not (isinstance(p, (tuple, list)) and len(p) == 0):
                raise ValueError(f"{where}: this layer has no parameters, expected (), got {p!r}")
            checked.append(())
            continue
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise ValueError(f"{where}: expected a pair (W, b), got {p!r}")
        W, b = p
        if width is None:  # the first Dense layer fixes the input dimension
            shape = np.shape(W)
            width = input_dim = shape[0] if len(shape) == 2 and shape[0] >= 1 else -1
            if width < 1:
                raise ValueError(f"{where}: W must have shape (input_dim, {layer.out_dim}), got {shape}")
        W = finite_array(W, f"{where}: W", xp, shape=(width, layer.out_dim))
        if layer.b_std is None:
            if b is not None:
                raise ValueError(
                    f"{where}: the layer has no bias (b_std=None), so b must be None, got an array of shape "
                    f"{np.shape(b)}"
                )
        else:
            if b is None:
                raise ValueError(f"{where}: b must have shape ({layer.out_dim},), got None")
            b = bias(b, where, layer.out_dim, xp)
        checked.append((W, b))
        width = layer.out_dim
    return checked, input_dim


def check_input(x, name: str, input_dim: int | None, xp=np):
    """x as a checked float64 (N, input_dim) array of the namespace ``xp`` (any width when
    input_dim is None). CuPy arrays stay on their device."""
    if xp is np:
        a = _engine.as_input(x, name)
    else:
        from . import _cuda_backend  # noqa: PLC0415

        a = _cuda_backend.device_input(x, name, xp)
        with a.device:
            a = a.astype(xp.float64, copy=False)
    if input_dim is not None and a.shape[1] != input_dim:
        raise ValueError(
            f"{name} has {a.shape[1]} features (shape {a.shape}), but params are for input_dim={input_dim} "
            f"(the first Dense layer's W has shape ({input_dim}, ...))"
        )
    return a


def output_dim(params, input_dim: int) -> int:
    """The width of the network's outputs (the last Dense layer's, else input_dim)."""
    width = input_dim
    for p in params:
        if p:
            width = p[0].shape[1]
    return width


def tree_arrays(tree, name: str) -> dict:
    """{'name[k]: W': W, 'name[k]: b': b}: the arrays of a parameter tree (params' layout),
    named for error messages; entries that are not (W, b) pairs are skipped (checked later)."""
    out = {}
    if isinstance(tree, (list, tuple)):
        for k, p in enumerate(tree):
            if isinstance(p, (list, tuple)) and len(p) == 2:
                out[f"{name}[{k}]: W"] = p[0]
                if p[1] is not None:
                    out[f"{name}[{k}]: b"] = p[1]
    return out


def namespace(arrays: dict):
    """NumPy or CuPy for a finite network's computation on ``arrays`` ({argument name: array
    or None}; parameters through :func:`tree_arrays`), chosen as :mod:`fastntk.predict`
    chooses it (:func:`fastntk._predict_linalg.namespace`: CuPy when any is a CuPy array).

    With CuPy every array must be a CuPy array, all on one device: TypeError naming the
    argument that is not (mixed NumPy and CuPy), ValueError naming two arrays on different
    devices, before any work.
    """
    from ._predict_linalg import namespace as pick  # noqa: PLC0415

    named = [(n, a) for n, a in arrays.items() if a is not None]
    xp = pick(*(a for _, a in named))
    if xp is np:
        return xp
    device = [(n, a) for n, a in named if is_cupy(a)]
    host = [n for n, a in named if not is_cupy(a)]
    if host:
        raise TypeError(
            f"{host[0]} is not a CuPy array but {device[0][0]} is: pass the parameters and the arrays "
            f"all on the GPU (cupy.asarray({host[0]})) or all on the host (.get() each CuPy array)"
        )
    first, a0 = device[0]
    for n, a in device[1:]:
        if int(a.device.id) != int(a0.device.id):
            raise ValueError(
                f"{n} is on CUDA device {int(a.device.id)} but {first} on device {int(a0.device.id)}: put the "
                f"parameters and the inputs on one device (e.g. with cupy.cuda.Device({int(a0.device.id)}): "
                "cupy.asarray(...))"
            )
    return xp


def device_context(*arrays):
    """The device of the first CuPy array among ``arrays`` (a context manager making it
    current, so that CuPy works where the data lives), or a no-op context for NumPy."""
    for a in arrays:
        if a is not None and is_cupy(a):
            return a.device
    return contextlib.nullcontext()


def matmul(a, b, alpha: float, trans_b: bool = False):
    """alpha * a @ b (b.T if trans_b): on fastntk's BLAS for NumPy arrays
    (:func:`fastntk._engine.matmul`), on cuBLAS through CuPy for CuPy arrays."""
    if is_cupy(a):
        out = a @ (b.T if trans_b else b)
        out *= alpha
        return out
    return _engine.matmul(a, b, alpha, trans_b=trans_b)


def forward(net, params, x, keep: bool):
    """Outputs (n, m); with keep, also each Dense layer's input and each activation's
    derivative at its pre-activation (for the backward passes), indexed by layer.

    On CuPy inputs (and parameters) everything is computed with CuPy on their device."""
    if is_cupy(x):
        # the activations on device arrays as the GPU's empirical kernels compute them (Erf
        # and Gelu through cupyx.scipy.special)
        from . import _cuda_backend, _cuda_empirical  # noqa: PLC0415

        xp = _cuda_backend.cupy()
        fn, derivative = _cuda_empirical._fn, (lambda layer, h: _cuda_empirical._derivative(layer, h, xp))
    else:
        xp, fn, derivative = np, (lambda layer, h: layer.fn(h)), (lambda layer, h: layer.derivative(h))
    h = x
    inputs, derivs = {}, {}
    seen_dense = False
    for k, layer in enumerate(net.layers):
        if isinstance(layer, Dense):
            W, b = params[k]
            c_w, c_b = multipliers(layer, W.shape[0])
            if keep:
                inputs[k] = h
            z = matmul(h, W, c_w)
            if b is not None and c_b != 0.0:
                z += c_b * b
            h, seen_dense = z, True
        elif isinstance(layer, Activation):
            # The derivative is needed only where a Dense layer lies before (gradients
            # never flow into the inputs).
            if keep and seen_dense:
                derivs[k] = derivative(layer, h)
            h = fn(layer, h)
    return xp.ascontiguousarray(h), inputs, derivs


def first_non_finite_layer(net, params, x, squares: bool = False) -> tuple[int, int] | None:
    """(layer, row) of the first layer whose outputs are not finite for one of the rows of
    x (run again layer by layer), or None. With ``squares``, a layer whose outputs are
    finite but whose squared norms (what the kernels sum) overflow counts too."""
    h = x
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for k, layer in enumerate(net.layers):
            if isinstance(layer, Dense):
                W, b = params[k]
                c_w, c_b = multipliers(layer, W.shape[0])
                h = c_w * (h @ W)
                if b is not None and c_b != 0.0:
                    h = h + c_b * b
            elif isinstance(layer, Activation):
                h = layer.fn(h)
            bad = ~np.isfinite(np.einsum("ij,ij->i", h, h)) if squares else ~np.isfinite(h).all(axis=1)
            if bad.any():
                return k, int(np.argmax(bad))
    return None


def non_finite_error(net, params, inputs: dict, what: str, squares: bool = False) -> FloatingPointError:
    """The error for a finite network whose ``what`` is not finite on ``inputs`` ({name:
    (N, d) array}; ``squares``: ``what`` is a kernel, which sums products of the signals)."""
    found = None
    for name, a in inputs.items():
        if a is not None and found is None:
            found = first_non_finite_layer(net, params, a, squares)
            where = name
    advice = "scale the inputs or the parameters down (a smaller W_std, fewer layers)"
    if found is None:
        return FloatingPointError(
            f"fastntk: the {what} is not finite (NaN or Inf): it overflows float64; {advice}"
        )
    layer, row = found
    signal = "the squared norm of the signal" if squares else "the signal"
    return FloatingPointError(
        f"fastntk: the {what} is not finite (NaN or Inf): for row {row} of {where} {signal} overflows "
        f"float64 at layer {layer} ({net.layers[layer]!r}); {advice}"
    )


def check_outputs(net, params, x, f) -> None:
    """FloatingPointError naming the layer unless every entry of the outputs f (of the
    inputs x) is finite."""
    if not is_cupy(f):
        if not all_finite(f):
            raise non_finite_error(net, params, {"x": x}, "network's output")
        return
    from ._predict_linalg import to_host  # noqa: PLC0415

    if not all_finite(f, namespace({"f": f})):  # the layer is found on the host (an error path only)
        host = [() if not p else tuple(None if v is None else to_host(v) for v in p) for p in params]
        raise non_finite_error(net, host, {"x": to_host(x)}, "network's output")
