"""The multilayer perceptron by name: the table of hidden activations that the command line
(``--arch relu:3``), the scikit-learn estimators and GP kernels (``activation='relu'``) and
:func:`mlp` accept, and the one builder of ``Dense, act, Dense, act, ..., Dense``.
"""

from __future__ import annotations

import math
import numbers

from .layers import Abs, Activation, Cos, Dense, Erf, Gelu, Identity, LeakyRelu, Rbf, Relu, Sign, Sin
from .network import Network, serial

__all__ = ["ACTIVATIONS", "DEFAULT_B_STD", "activation_layer", "default_W_std", "mlp"]

# Hidden activations by name: name -> (a fresh layer, the default W_std). The default W_std
# keeps the pre-activation variance of order one through the layers for standardized inputs,
# so deep kernels neither vanish nor explode:
# - relu halves the second moment and sqrt(2) restores it (He's initialization); gelu is
#   ReLU-like; leaky_relu (slope 0.1 below zero) keeps (1 + 0.01) / 2 of it;
# - abs, sign, cos and rbf (sqrt(2) sin(sqrt(2) x + pi/4), second moment exactly 1) keep it
#   of order one with W_std = 1, and so does identity (a deep linear network);
# - erf (slope 2 / sqrt(pi) at 0, saturating) settles at a fixed point of order 0.1 with 1;
# - sin has E[sin(u)^2] = (1 - exp(-2 q)) / 2 < q for u ~ N(0, q): sqrt(2) keeps a fixed
#   point near 0.8 where W_std = 1 would shrink it towards zero.
ACTIVATIONS = {
    "relu": (Relu, math.sqrt(2.0)),
    "leaky_relu": (lambda: LeakyRelu(0.1), math.sqrt(2.0 / 1.01)),
    "abs": (Abs, 1.0),
    "erf": (Erf, 1.0),
    "gelu": (Gelu, math.sqrt(2.0)),
    "sign": (Sign, 1.0),
    "sin": (Sin, math.sqrt(2.0)),
    "cos": (Cos, 1.0),
    "rbf": (Rbf, 1.0),
    "identity": (Identity, 1.0),
}

# The bias standard deviation of mlp() and of the command line: small, so that the kernel is
# mostly that of the inputs' inner products, and non-zero, so that it is not a function of
# the inputs' angles alone.
DEFAULT_B_STD = 0.05


def activation_layer(activation, what: str = "activation"):
    """The layer for ``activation``: a fresh one for a name in :data:`ACTIVATIONS`
    (case-insensitive), or ``activation`` itself if it is a fastntk activation layer.

    Raises
    ------
    ValueError
        Naming ``what`` and the names accepted.
    """
    if isinstance(activation, (Activation, Identity)):
        return activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.lower()][0]()
    raise ValueError(
        f"{what} must be one of {sorted(ACTIVATIONS)} or a fastntk activation layer "
        f"(e.g. fastntk.LeakyRelu(0.3)), got {activation!r}"
    )


def default_W_std(activation) -> float:
    """The default W_std of a name in :data:`ACTIVATIONS` (see its comment)."""
    return ACTIVATIONS[activation.lower()][1]


def mlp(
    activation="relu",
    depth: int = 3,
    *,
    W_std=None,
    b_std=DEFAULT_B_STD,
    width=None,
    n_out=None,
    parameterization: str = "ntk",
) -> Network:
    """A multilayer perceptron: ``depth`` hidden layers ``[Dense(width), activation]``,
    then ``Dense(n_out)``, every Dense with the same ``W_std``, ``b_std`` and
    parameterization.

    Parameters
    ----------
    activation : str or fastntk activation layer
        One of ``'relu'``, ``'leaky_relu'`` (slope 0.1), ``'abs'``, ``'erf'``, ``'gelu'``,
        ``'sign'``, ``'sin'``, ``'cos'``, ``'rbf'``, ``'identity'`` (case-insensitive), or a
        layer such as ``fastntk.LeakyRelu(0.3)`` (then ``W_std`` must be given).
    depth : int >= 0
        Number of hidden layers (activations); 0 is one Dense layer.
    W_std : float > 0, optional
        Weight standard deviation; default the activation's: ``sqrt(2)`` for relu and gelu,
        ``sqrt(2 / 1.01)`` for leaky_relu, ``sqrt(2)`` for sin, 1 for the others (each keeps
        the pre-activation variance of order one through deep networks).
    b_std : float >= 0 or None
        Bias standard deviation (None: no bias). Default 0.05.
    width : int >= 1 or sequence of ``depth`` of them, optional
        Width of the hidden layers (one for all, or one per hidden layer). The infinite-width
        kernels in the ntk parameterization do not depend on it; finite networks (``init``,
        ``apply``, ``empirical_ntk``, ``train_mse``) and the standard parameterization need it.
    n_out : int >= 1, optional
        Number of outputs (the last Dense layer's out_dim); finite networks need it.
    parameterization : {'ntk', 'standard'}

    Returns
    -------
    Network

    Examples
    --------
    >>> import fastntk as nt
    >>> net = nt.mlp("relu", 3, width=512, n_out=1)  # the same as:
    >>> net = nt.serial(nt.Dense(512, 2**0.5, 0.05), nt.Relu(), nt.Dense(512, 2**0.5, 0.05),
    ...                 nt.Relu(), nt.Dense(512, 2**0.5, 0.05), nt.Relu(), nt.Dense(1, 2**0.5, 0.05))
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"mlp: depth must be an integer >= 0 (hidden layers), got {depth!r}")
    layer = activation_layer(activation, "mlp: activation")
    if W_std is None:
        if not isinstance(activation, str):
            raise ValueError(f"mlp: give W_std for the activation layer {activation!r} (no default for it)")
        W_std = default_W_std(activation)
    widths = _widths(width, depth)
    # Dense checks W_std, b_std, the widths, n_out and parameterization, naming each.
    layers = []
    for w in widths:
        layers += [Dense(w, W_std, b_std, parameterization), layer]
    return serial(*layers, Dense(n_out, W_std, b_std, parameterization))


def _widths(width, depth: int) -> list:
    """The hidden layers' widths: ``width`` repeated, or its ``depth`` entries."""
    if width is None or isinstance(width, numbers.Integral):
        return [width] * depth
    if isinstance(width, (str, bytes)) or not hasattr(width, "__len__"):
        raise ValueError(
            f"mlp: width must be None, an integer >= 1 or a sequence of {depth} of them, got {width!r}"
        )
    if len(width) != depth:
        raise ValueError(f"mlp: width has {len(width)} entries for depth {depth}; give one per hidden layer")
    return list(width)
