"""Argument checks shared by the public functions: the requested kernel names, and the one
checker of real, finite numbers and arrays that every module uses (layers, networks, finite
networks, training, predict, the estimators)."""

from __future__ import annotations

import collections
import functools
import math
import numbers

import numpy as np

KERNEL_NAMES = ("nngp", "ntk")


def parse_get(get, allowed=KERNEL_NAMES, *, what="kernel"):
    """(names, single): the requested names in order, and whether one string was given.

    ``get`` is one of ``allowed`` (case-insensitive), a non-empty tuple or list of them,
    or None for all of ``KERNEL_NAMES``; anything else raises ValueError naming ``get``.
    """
    if get is None:
        return KERNEL_NAMES, False
    if isinstance(get, str):
        names, single = (get.lower(),), True
    elif isinstance(get, (tuple, list)) and len(get) > 0 and all(isinstance(g, str) for g in get):
        names, single = tuple(g.lower() for g in get), False
    else:
        raise ValueError(f"get must be one of {allowed} or a non-empty tuple of them, got {get!r}")
    for g in names:
        if g not in allowed:
            raise ValueError(f"get: unknown {what} {g!r}; expected one of {allowed}")
    if len(set(names)) != len(names):
        raise ValueError(f"get names a {what} twice: {get!r}")
    return names, single


@functools.cache
def kernel_tuple(names: tuple):
    """The named tuple type ``Kernel`` with these fields, what a tuple ``get`` returns."""
    return collections.namedtuple("Kernel", names)


# ---------------------------------------------------------------------------------------
# Real, finite numbers and arrays


def real_number(value, name: str, *, owner: str | None = None, low=None, low_open: bool = False,
                allow_inf: bool = False) -> float:  # fmt: skip
    """value as a float, checked: a real number (not a bool), not NaN, finite unless
    ``allow_inf``, and ``>= low`` (``> low`` with ``low_open``) when ``low`` is given.

    Raises TypeError (not a real number) or ValueError (out of range) whose message starts
    with ``"{owner}: {name}"`` (just ``name`` without an owner).
    """
    what = f"{owner}: {name}" if owner else name
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    value = float(value)
    bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{what} must be a finite number{bound}, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{what} must be{bound}, got {value!r}")
    return value


def real_array(a, name: str, xp=np):
    """``xp.asarray(a)``, or TypeError naming ``name`` unless it has a real numeric dtype
    (bool, integer or floating point). ``xp`` is NumPy or CuPy."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    if xp is np and type(a).__module__.split(".")[0] == "cupy":
        raise TypeError(f"{name} is a CuPy array but the other inputs are NumPy arrays")
    a = xp.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a


def all_finite(a, xp=np) -> bool:
    """True if every entry of the real array ``a`` is finite.

    One summing pass and no temporary array: a sum is finite unless an entry is NaN or Inf
    or the sum overflows, and only then are the entries checked one by one."""
    if a.dtype.kind != "f" or a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if bool(xp.isfinite(a.sum())):
            return True
    return bool(xp.isfinite(a).all())


def check_finite(a, name: str, xp=np) -> None:
    """ValueError naming ``name`` and where, unless every entry of the real array ``a`` is
    finite: ``"x1 has a non-finite value (NaN or Inf) in row 6 (first at index (6, 2))"``."""
    if all_finite(a, xp):
        return
    first = int(xp.argmax(~xp.isfinite(a).ravel()))  # one mask, not a list of every bad index
    index = tuple(int(i) for i in np.unravel_index(first, a.shape))
    if len(index) >= 2:
        where = f" in row {index[0]} (first at index {index})"
    else:
        where = f" at index {index[0]}" if index else ""
    raise ValueError(f"{name} has a non-finite value (NaN or Inf){where}")


def finite_array(a, name: str, xp=np, *, shape: tuple | None = None):
    """``a`` as a float64 array, real and finite (and of ``shape`` when given), or
    TypeError/ValueError naming ``name``. A C-contiguous NumPy array is returned as it is
    when it already is float64; otherwise it is a converted copy."""
    a = real_array(a, name, xp)
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    a = xp.ascontiguousarray(a, dtype=xp.float64)
    check_finite(a, name, xp)
    return a
