"""From PyTorch to fastntk: :func:`from_torch` turns a ``torch.nn.Sequential`` of ``Linear``
layers and activations into a fastntk network and its parameters, computing the same function.

PyTorch is an optional dependency (``pip install 'fastntk[torch]'``), imported only when
:func:`from_torch` is called.

What the network's kernels mean
-------------------------------
PyTorch's ``Linear`` computes ``z = h @ weight.T + bias``: the standard parameterization, so
every Dense layer of the result has ``parameterization='standard'`` and the parameters are
``W = weight.T`` and ``b = bias`` as they are. Its default initialization draws ``weight`` and
``bias`` uniformly from ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (``kaiming_uniform_(a=sqrt(5))``
and the bias rule of ``Linear.reset_parameters``), of variance ``1 / (3 fan_in)``. The Dense
layers get the scales with the same variances:

    W_std = 1 / sqrt(3)               (W_std^2 / fan_in = 1 / (3 fan_in))
    b_std = 1 / sqrt(3 fan_in)        (None for a Linear layer without bias)

so ``net.init`` draws Gaussian parameters with PyTorch's variances, and:

- ``net.kernel(x1, x2, get='nngp')`` is the infinite-width limit of the output covariance
  ``E[f(x1) f(x2)]`` of Gaussian-initialized networks. For PyTorch's uniform initialization it
  is exact for networks without activations (covariances propagate through the variances
  alone, whatever the distribution). With activations, the hidden pre-activations after the
  first layer become Gaussian as the widths grow (central limit theorem over the fan-in), but
  the first layer's are sums of d + 1 uniform terms (d the input dimension), not Gaussian:
  the first activation's expectation differs from the Gaussian one by O(1/d) for inputs
  spread over their coordinates (the fourth cumulant of that sum relative to its variance
  squared); so the NNGP is that of PyTorch's initialization up to O(1/d).
- ``net.kernel(..., get='ntk')`` is the standard-parameterization NTK recursion with the
  actual widths (``Theta' = n_in Sigma + W_std^2 Theta (+ 1 with a bias)``; DESIGN.md 2.1):
  in this parameterization the NTK grows with the widths and has no finite infinite-width
  limit, and this is the leading order in large widths of the mean empirical NTK of
  Gaussian-initialized networks (the same O(1/d) caveat for PyTorch's uniform one). It is
  the kernel that governs training in PyTorch's parameterization: use it with
  :mod:`fastntk.predict` and learning rates of PyTorch's scale.
"""

from __future__ import annotations

import math

import numpy as np

from .layers import Dense, Gelu, Identity, LeakyRelu, Relu
from .network import serial

__all__ = ["from_torch"]

_SUPPORTED = "Linear, ReLU, LeakyReLU, GELU(approximate='none'), Identity and nested Sequential"


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "fastntk.from_torch needs PyTorch, an optional dependency: pip install 'fastntk[torch]' "
            "(or any torch build)"
        ) from exc
    return torch


def _leaves(module, prefix: str):
    """(position, module) for every non-Sequential module, depth first ('2', '3.1', ...)."""
    import torch.nn as nn

    for name, child in module.named_children():
        position = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, position + ".")
        else:
            yield position, child


def _array(tensor, what: str) -> np.ndarray:
    torch = _torch()
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {tensor.dtype}")
    # float16/bfloat16/float32/float64 all convert to float64 exactly.
    a = tensor.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has a non-finite value (NaN or Inf)")
    return a


def from_torch(module):
    """The fastntk network and parameters of a PyTorch ``Sequential`` network.

    Parameters
    ----------
    module : torch.nn.Sequential
        Made of ``torch.nn.Linear`` (with or without bias), ``ReLU``, ``LeakyReLU``
        (any ``negative_slope``), ``GELU(approximate='none')`` and ``Identity`` modules,
        possibly in nested ``Sequential`` containers; a single such module is accepted too.
        Parameters of any floating dtype and device (they are copied to float64 NumPy
        arrays, exactly).

    Returns
    -------
    (net, params)
        ``net``: a :class:`fastntk.Network` with one layer per module (``Linear`` ->
        ``Dense(out_features, W_std=1/sqrt(3), b_std=1/sqrt(3 in_features) or None,
        parameterization='standard')``, ``ReLU`` -> ``Relu``, ``LeakyReLU(s)`` ->
        ``LeakyRelu(s)``, ``GELU`` -> ``Gelu``, ``Identity`` -> ``Identity``); ``params``: the
        module's parameters in fastntk's layout, ``(weight.T, bias)`` float64 for each
        Linear layer (``bias`` None without one), ``()`` otherwise. ``net.apply(params, x)``
        equals ``module(x)`` to round-off. The scales reproduce PyTorch's initialization
        variances; what ``net.kernel`` then means is in the module docstring of
        :mod:`fastntk.interop`.

    Raises
    ------
    TypeError
        ``module`` is not a torch module, or contains a module fastntk does not have (the
        message names it and its position, e.g. ``'2'`` or ``'1.0'`` inside nested containers).
    ValueError
        A ``GELU`` with ``approximate='tanh'``, Linear layers whose sizes do not chain, an
        activation first or two activations in a row (fastntk needs a Gaussian input to every
        activation), or non-finite parameters.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module (a Sequential), got {type(module).__name__}")
    leaves = list(_leaves(module, "")) if isinstance(module, nn.Sequential) else [("0", module)]

    layers, params, positions = [], [], []
    width = None  # out_features of the last Linear layer
    for position, child in leaves:
        where = f"module {position} ({child!r})"
        if isinstance(child, nn.Linear):
            fan_in, out = child.in_features, child.out_features
            if width is not None and fan_in != width:
                raise ValueError(
                    f"{where} takes {fan_in} features, but the Linear layer before it gives {width}"
                )
            W = _array(child.weight, f"{where}: weight").T.copy()  # (out, in) -> (in, out)
            b = None if child.bias is None else _array(child.bias, f"{where}: bias")
            b_std = None if b is None else 1.0 / math.sqrt(3.0 * fan_in)
            layers.append(Dense(out, W_std=1.0 / math.sqrt(3.0), b_std=b_std, parameterization="standard"))
            params.append((W, b))
            width = out
        elif isinstance(child, nn.ReLU):
            layers.append(Relu())
            params.append(())
        elif isinstance(child, nn.LeakyReLU):
            layers.append(LeakyRelu(float(child.negative_slope)))
            params.append(())
        elif isinstance(child, nn.GELU):
            if child.approximate != "none":
                raise ValueError(
                    f"{where}: only the exact GELU (approximate='none') is supported, got "
                    f"approximate={child.approximate!r}"
                )
            layers.append(Gelu())
            params.append(())
        elif isinstance(child, nn.Identity):
            layers.append(Identity())
            params.append(())
        else:
            raise TypeError(
                f"{where} is a {type(child).__module__}.{type(child).__name__}, which fastntk does not "
                f"have; supported: {_SUPPORTED}"
            )
        positions.append(position)

    try:
        net = serial(*layers)
    except ValueError as exc:
        mapping = ", ".join(f"fastntk layer {k} = module {p}" for k, p in enumerate(positions))
        raise ValueError(f"from_torch: {exc} ({mapping})") from None
    return net, params
