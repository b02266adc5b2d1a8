"""Private helpers of :mod:`fastntk.sklearn`: parameter checks, and the MLP the estimators
and GP kernels describe. Its kernels for a depth sweep and the leave-one-out choice of depth
are in :mod:`fastntk._depth_selection`.

The public classes store their constructor arguments untouched (scikit-learn's rule); these
functions check them when they are used, with messages that name the class and the argument.
"""

from __future__ import annotations

import numbers

from . import architectures
from ._args import real_number
from .architectures import activation_layer
from .network import Network

# Activation names the estimators and GP kernels take as strings: the one table of
# fastntk.architectures (any fastntk Activation instance, e.g. LeakyRelu(0.3), is accepted too).
# 'identity' gives a deep linear network.


# ---------------------------------------------------------------------------------------
# Parameter checks


def check_real(owner: str, name: str, value, *, low=None, low_open=False, allow_inf=False) -> float:
    """value as a float, or TypeError/ValueError naming ``owner`` and ``name``."""
    return real_number(value, name, owner=owner, low=low, low_open=low_open, allow_inf=allow_inf)


def check_int(owner: str, name: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_depths(owner: str, depth, *, allow_sequence: bool) -> list:
    """The candidate depths (hidden layers), ascending: [depth] for an int; the sorted
    entries of a sequence (allow_sequence) with none repeated."""
    if isinstance(depth, numbers.Integral) and not isinstance(depth, bool):
        return [check_int(owner, "depth", depth, low=0)]
    if not allow_sequence:
        raise TypeError(f"{owner}: depth must be an integer >= 0 (hidden layers), got {depth!r}")
    if isinstance(depth, (str, bytes)) or not hasattr(depth, "__iter__"):
        raise TypeError(
            f"{owner}: depth must be an integer >= 0 or a non-empty sequence of them, got {depth!r}"
        )
    items = list(depth)
    if not items:
        raise ValueError(f"{owner}: depth is an empty sequence; give at least one depth")
    depths = [check_int(owner, "depth", d, low=0) for d in items]
    if len(set(depths)) != len(depths):
        raise ValueError(f"{owner}: depth repeats a value: {items!r}")
    return sorted(depths)


def check_activation(owner: str, activation):
    """A fresh fastntk layer for ``activation`` (a name in ACTIVATIONS or an Activation)."""
    return activation_layer(activation, f"{owner}: activation")


def check_architecture(owner: str, *, depth, activation, W_std, b_std, parameterization="ntk", width=None,
                       allow_sequence=True) -> dict:  # fmt: skip
    """The checked architecture: depths (ascending), the activation layer, W_std, b_std,
    parameterization and width (None unless the standard parameterization uses it)."""
    depths = check_depths(owner, depth, allow_sequence=allow_sequence)
    act = check_activation(owner, activation)
    W_std = check_real(owner, "W_std", W_std, low=0.0, low_open=True)
    if b_std is not None:
        b_std = check_real(owner, "b_std", b_std, low=0.0)
    if not isinstance(parameterization, str) or parameterization.lower() not in ("ntk", "standard"):
        raise ValueError(f"{owner}: parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    parameterization = parameterization.lower()
    if parameterization == "standard":
        width = check_int(owner, "width", width, low=1)
    else:
        width = None
    return dict(
        depths=depths, act=act, W_std=W_std, b_std=b_std, parameterization=parameterization, width=width
    )


# ---------------------------------------------------------------------------------------
# The network


def mlp(arch: dict, depth: int) -> Network:
    """``Dense, act, Dense, act, ..., Dense`` with ``depth`` activations, every Dense alike.

    In the standard parameterization the hidden Dense layers have out_dim = width (the NTK
    of the next layer needs it); the last one's out_dim does not enter the kernels. Layer
    ``2 l`` of the network of depth L is the last layer of the network of depth l <= L, so
    one pass of the deepest network gives every shallower one (see kernels_by_depth).
    """
    return architectures.mlp(arch["act"], depth, W_std=arch["W_std"], b_std=arch["b_std"], width=arch["width"],
                             parameterization=arch["parameterization"])  # fmt: skip
